"""Gradient-health monitoring and repair for training loops.

Call order in a plain loop (what :meth:`GradientHealthMonitor.train_step` does for you)::

    loss = compute_loss()
    (scaler.scale(loss) if scaler else loss).backward()
    record = monitor.after_backward(loss)      # unscale_ -> check -> clip/skip -> step -> zero_grad

Policy:
- non-finite gradients: skip ``optimizer.step()`` and ``zero_grad(set_to_none=True)``, so
  parameters and optimizer state stay exactly as they were; repeated non-finite steps halve the LR
  and retry the batch (up to ``max_retries``), then save a checkpoint and stop with a message;
- exploding norm (> ``clip_norm``): clip to ``clip_norm``; still non-finite after clipping: skip;
- vanishing norm (< ``vanish_threshold``): alert; stop early when it persists while validation
  loss has not improved for ``patience`` evaluations;
- parameters whose gradient is all zero or absent are counted, never fatal (unrouted MoE experts).
With a ``GradScaler`` the scaler owns fp16 overflow: a step whose scaled gradients overflowed (the
scaler lowers its scale) is skipped without touching the LR; :meth:`GradientHealthMonitor.train_step`
runs the batch again at the lower scale (up to ``max_overflow_retries`` times). The LR policy reacts
when the unscaled loss is not finite, when the scale could not absorb the overflow, and when the
unscaled gradients are finite but their global norm overflows (the model's, not fp16's): that step
is skipped too and the scaler's ``update()`` still runs (scale unchanged), so the next ``unscale_``
works.

The "halve the LR" repair is persistent whatever the schedule: :func:`scale_lr` scales the groups'
``lr`` and every LR scheduler's bases (``base_lrs``, OneCycle's ``max_lr``/``min_lr``, CyclicLR's
``max_lrs``), so a ``LambdaLR`` or cosine schedule that recomputes ``lr`` from its bases on its next
``step()`` keeps the factor; ``ReduceLROnPlateau`` and schedule-free optimizers read the group's
``lr`` directly, so scaling it is enough there.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch


class TrainingStopped(RuntimeError):
    """Training cannot continue (unrecoverable non-finite gradients, or early stop)."""


@dataclass(frozen=True)
class HealthConfig:
    """Thresholds and the repair policy of :class:`GradientHealthMonitor` and its Lightning callback.

    Attributes:
        clip_norm: global L2 gradient norm above which gradients are clipped to it (exploding
            gradients; norm clipping as in Pascanu et al., 2013).
        vanish_threshold: global norm below which gradients count as vanished.
        max_retries: LR-halving retries of a batch with non-finite gradients before stopping.
        lr_factor_on_retry: LR multiplier applied before each retry, in (0, 1).
        max_overflow_retries: fp16 only: re-runs of a batch after the scaler's overflow (its
            scale halves each time) before the step counts as non-finite.
        patience: validations without improvement (while gradients vanish) before stopping.
        min_delta: smallest validation-loss decrease that counts as an improvement.

    Raises:
        ValueError: ``clip_norm <= 0``, a negative threshold or retry count,
            ``lr_factor_on_retry`` outside (0, 1), or ``patience < 1``.
    """

    clip_norm: float = 1.0
    vanish_threshold: float = 1e-10
    max_retries: int = 3
    lr_factor_on_retry: float = 0.5
    max_overflow_retries: int = 16
    patience: int = 5
    min_delta: float = 1e-4

    def __post_init__(self) -> None:
        if not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0, got {self.clip_norm}")
        if self.vanish_threshold < 0:
            raise ValueError(f"vanish_threshold must be >= 0, got {self.vanish_threshold}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.max_overflow_retries < 0:
            raise ValueError(f"max_overflow_retries must be >= 0, got {self.max_overflow_retries}")
        if not 0 < self.lr_factor_on_retry < 1:
            raise ValueError(f"lr_factor_on_retry must be in (0, 1), got {self.lr_factor_on_retry}")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")


@dataclass(frozen=True)
class GradHealth:
    """What :func:`grad_health` measured.

    Attributes:
        grad_norm: global L2 norm over all gradients (nan/inf when any entry is).
        has_nan: some gradient entry is NaN.
        has_inf: some gradient entry is +-Inf.
        n_zero: trainable parameters whose gradient is absent or all zero.
        n_params: trainable parameters inspected.
    """

    grad_norm: float
    has_nan: bool
    has_inf: bool
    n_zero: int
    n_params: int

    @property
    def finite(self) -> bool:
        """No gradient entry is NaN or Inf (the norm itself may still overflow to inf)."""
        return not (self.has_nan or self.has_inf)


@dataclass
class StepRecord:
    """One optimizer-step attempt, as :class:`GradientHealthMonitor` logs it (one JSON line).

    Attributes:
        step: attempts so far, this one included (1-based; skipped attempts count).
        grad_norm: global L2 gradient norm before clipping (unscaled under AMP).
        has_nan: some gradient entry was NaN.
        has_inf: some gradient entry was +-Inf.
        n_zero: trainable parameters whose gradient was absent or all zero.
        repair_action: ``"none"``, ``"clip"``, ``"skip"``, ``"lr_halved"`` (applied after the
            LR was halved) or ``"stop"``.
        lr: the first parameter group's learning rate after the repair.
        loss: the attempt's loss, when given.
        vanishing: the norm was finite and below ``vanish_threshold``.
    """

    step: int
    grad_norm: float
    has_nan: bool
    has_inf: bool
    n_zero: int
    repair_action: str
    lr: float
    loss: float | None = None
    vanishing: bool = False


def grad_health(parameters: Iterable[torch.nn.Parameter], *, all_reduce: bool = False) -> GradHealth:
    """Inspect all gradients with a single device-to-host transfer (no per-parameter ``.item()``).

    Args:
        parameters: the model's parameters; those without ``requires_grad`` are ignored.
        all_reduce: the gradients are shards of one model (FSDP): sum the squared norm and the
            NaN/Inf/zero counts over the default process group, so every rank gets the whole
            model's norm and the same verdict (``n_zero`` then counts shards).

    Returns:
        :class:`GradHealth` with the global L2 norm (nan/inf when any entry is).
    """
    params = [p for p in parameters if p.requires_grad]
    grads = [p.grad for p in params if p.grad is not None]
    n_missing = len(params) - len(grads)
    reduce = all_reduce and torch.distributed.is_available() and torch.distributed.is_initialized()
    if not grads and not reduce:
        return GradHealth(0.0, False, False, len(params), len(params))
    if grads:
        dense = [g.to_dense() if g.is_sparse else g for g in grads]
        norms = torch._foreach_norm(dense)
        device = norms[0].device
        total = torch.linalg.vector_norm(torch.stack([n.float().to(device) for n in norms]))
        nan = torch.stack([g.isnan().any().to(device) for g in dense]).any()
        inf = torch.stack([g.isinf().any().to(device) for g in dense]).any()
        zero = torch.stack([(g == 0).all().to(device) for g in dense]).sum()
        values = torch.stack([total, nan.float(), inf.float(), zero.float()])
    else:  # this rank holds no gradient shard; it still joins the reduction
        device = params[0].device if params else torch.device("cpu")
        values = torch.zeros(4, device=device)
    if reduce:
        # float64 so the sum of squares of a large but finite norm does not overflow.
        summed = torch.stack([values[0].double() ** 2, *values[1:].double()])
        torch.distributed.all_reduce(summed)
        values = torch.stack([summed[0].sqrt(), *summed[1:]])
        n_missing = 0
    total_norm, nan_count, inf_count, zero_count = values.tolist()
    return GradHealth(
        grad_norm=float(total_norm),
        has_nan=bool(nan_count),
        has_inf=bool(inf_count),
        n_zero=int(zero_count) + n_missing,
        n_params=len(params),
    )


def _current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0].get("lr", float("nan")))


_GROUP_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")  # min/max_lr: OneCycleLR's per-group bases


def _scale_scheduler(scheduler: object, factor: float) -> None:
    # max_lrs: CyclicLR's; _last_lr: what get_last_lr() reports until the next step().
    for attr in ("base_lrs", "max_lrs", "_last_lr"):
        values = getattr(scheduler, attr, None)
        if isinstance(values, list):
            setattr(scheduler, attr, [v * factor for v in values])
    for inner in getattr(scheduler, "_schedulers", ()):  # SequentialLR, ChainedScheduler
        _scale_scheduler(inner, factor)


def scale_lr(optimizer: torch.optim.Optimizer, factor: float, schedulers: Iterable[object] = ()) -> None:
    """Multiply the LR by ``factor`` now and for every later step of ``schedulers``.

    Scales each group's ``lr`` (and ``initial_lr``, OneCycleLR's ``max_lr``/``min_lr``) and each
    scheduler's ``base_lrs`` (recursing into SequentialLR/ChainedScheduler), so a schedule that
    recomputes the LR from its bases (LambdaLR, cosine) keeps the factor. Floors such as a cosine's
    ``eta_min`` or a plateau scheduler's ``min_lrs`` are left as they are.

    Args:
        optimizer: the optimizer whose parameter groups are scaled in place.
        factor: the multiplier (> 0; 0.5 halves the LR).
        schedulers: the LR schedulers driving ``optimizer`` (any objects; the attributes above
            are scaled where present).

    Raises:
        ValueError: ``factor <= 0``.
    """
    if not 0 < factor:
        raise ValueError(f"factor must be > 0, got {factor}")
    for group in optimizer.param_groups:
        for key in _GROUP_LR_KEYS:
            if isinstance(group.get(key), float | int) and not isinstance(group.get(key), bool):
                group[key] = group[key] * factor
    for scheduler in schedulers:
        _scale_scheduler(scheduler, factor)


class SteppableScheduler(Protocol):
    """What :class:`GradientHealthMonitor` needs of an LR scheduler: a no-argument ``step()``."""

    def step(self) -> object:
        """Advance the schedule by one applied optimizer step."""
        ...


class GradientHealthMonitor:
    """Checks gradients after backward, repairs what it can, and logs every step.

    The policy is the module docstring's. Use :meth:`train_step` where a batch can be run again,
    :meth:`after_backward` where it cannot; :attr:`records` holds every attempt.

    Args:
        model: the trained module; its parameters with ``requires_grad`` are checked and clipped.
        optimizer: stepped only for applied attempts; its ``zero_grad(set_to_none=True)`` runs
            after every attempt.
        config: thresholds and retries; default ``HealthConfig()``.
        scaler: an fp16 ``GradScaler``; ignored when disabled. The monitor calls its
            ``unscale_``/``step``/``update``.
        on_unrecoverable: called before :class:`TrainingStopped` is raised (save a checkpoint).
        log_path: a JSON-lines file that gets one :class:`StepRecord` per attempt.
        schedulers: LR schedulers stepped once after each applied update (never after a skip),
            and scaled with the LR on a halving.
        backward: a trainer's own backward (Lightning's ``manual_backward``: loss scaling and DDP
            hooks); it must scale the loss with ``scaler`` itself. Default:
            ``scaler.scale(loss).backward()``, or ``loss.backward()`` without a scaler.
        before_check: called after the scaler's ``unscale_`` and before the gradient check: where
            Lightning calls ``on_before_optimizer_step`` (a manual-optimisation trainer's
            callbacks see the true gradients there, and may change them).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        config: HealthConfig | None = None,
        *,
        scaler: torch.amp.GradScaler | None = None,
        on_unrecoverable: Callable[[], object] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        schedulers: Iterable[SteppableScheduler] = (),
        backward: Callable[[torch.Tensor], object] | None = None,
        before_check: Callable[[], object] | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.config = config or HealthConfig()
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self.on_unrecoverable = on_unrecoverable
        self.log_path = Path(log_path) if log_path is not None else None
        self.schedulers = list(schedulers)
        # A trainer's own backward (Lightning's ``manual_backward``: loss scaling and DDP hooks);
        # it must scale the loss with ``scaler`` itself. Default: ``scaler.scale(loss).backward()``.
        self.backward = backward
        self.before_check = before_check
        self.scaler_overflowed = False  # the last step was the scaler's fp16 overflow
        self.records: list[StepRecord] = []
        self.step = 0
        self.consecutive_nonfinite = 0
        self.vanishing_since_validation = True
        self._steps_since_validation = 0
        self._best_val = math.inf
        self._evals_without_improvement = 0
        self.should_stop = False
        self.stop_reason = ""

    # ------------------------------------------------------------------ core check
    def _check_and_step(self, loss: torch.Tensor | float | None) -> StepRecord:
        cfg = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.before_check is not None:
            self.before_check()
        health = grad_health(params)
        action = "none"
        stepped = False
        self.scaler_overflowed = False
        if health.finite:
            if health.grad_norm > cfg.clip_norm:
                action = "clip"
                post = torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
                if not bool(torch.isfinite(post)):
                    action = "skip"
            if action != "skip":
                if self.scaler is not None:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                stepped = True
            elif self.scaler is not None:
                # Finite gradients whose norm overflows: not an fp16 overflow, so the scale stays;
                # update() still has to run to close this step's unscale_() bookkeeping.
                self.scaler.update(new_scale=self.scaler.get_scale())
        else:
            action = "skip"
            if self.scaler is not None:
                # The scaler saw the same inf/nan in unscale_: its step() skips the update and
                # update() lowers the scale. Calling both keeps its bookkeeping consistent.
                scale = self.scaler.get_scale()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scaler_overflowed = self.scaler.get_scale() < scale
        self.optimizer.zero_grad(set_to_none=True)
        if stepped:
            for scheduler in self.schedulers:
                scheduler.step()

        self.step += 1
        vanishing = health.finite and health.grad_norm < cfg.vanish_threshold
        if vanishing and not (self.records and self.records[-1].vanishing):
            warnings.warn(
                f"step {self.step}: vanishing gradients (global norm {health.grad_norm:.3e} < "
                f"{cfg.vanish_threshold:.0e})",
                RuntimeWarning,
                stacklevel=3,
            )
        self._steps_since_validation += 1
        self.vanishing_since_validation = self.vanishing_since_validation and vanishing
        loss_value = None if loss is None else float(loss.detach() if torch.is_tensor(loss) else loss)
        record = StepRecord(
            step=self.step,
            grad_norm=health.grad_norm,
            has_nan=health.has_nan,
            has_inf=health.has_inf,
            n_zero=health.n_zero,
            repair_action=action,
            lr=_current_lr(self.optimizer),
            loss=loss_value,
            vanishing=vanishing,
        )
        self.records.append(record)
        return record

    def _log(self, record: StepRecord) -> None:
        if self.log_path is None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(record)) + "\n")

    def _stop(self, record: StepRecord, reason: str) -> TrainingStopped:
        record.repair_action = "stop"
        self.should_stop = True
        self.stop_reason = reason
        if self.on_unrecoverable is not None:
            self.on_unrecoverable()
        return TrainingStopped(reason)

    def _is_model_failure(self, record: StepRecord, loss: torch.Tensor | float | None) -> bool:
        """Whether a skip is one the LR policy should react to.

        That is any skip but the scaler's own fp16 overflow of a finite loss (a finite gradient
        norm that overflows is the model's).
        """
        if record.repair_action != "skip":
            return False
        if not self.scaler_overflowed:
            return True
        return loss is not None and not math.isfinite(record.loss if record.loss is not None else 0.0)

    # ------------------------------------------------------------------ public API
    def after_backward(self, loss: torch.Tensor | float | None = None) -> StepRecord:
        """Check, repair and step after ``backward()`` in a loop that cannot retry a batch.

        Repeated non-finite steps halve the LR for the next batches; after ``max_retries``
        halvings the checkpoint callback runs and :class:`TrainingStopped` is raised.

        Args:
            loss: this batch's loss (tensor or float), recorded in the log; None when unknown.

        Returns:
            The attempt's record (``repair_action`` ``"lr_halved"`` when the LR was halved after
            this skip).

        Raises:
            TrainingStopped: gradients were non-finite on more than ``max_retries + 1``
                consecutive steps (``on_unrecoverable`` ran first).
        """
        record = self._check_and_step(loss)
        if self._is_model_failure(record, loss):
            self.consecutive_nonfinite += 1
            if self.consecutive_nonfinite > self.config.max_retries + 1:
                self._log(record)
                raise self._stop(
                    record,
                    f"gradients were non-finite on {self.consecutive_nonfinite} consecutive steps "
                    f"(after {self.config.max_retries} LR halvings); checkpoint saved, training stopped",
                )
            if self.consecutive_nonfinite > 1:
                scale_lr(self.optimizer, self.config.lr_factor_on_retry, self.schedulers)
                record.repair_action = "lr_halved"
                record.lr = _current_lr(self.optimizer)
        elif record.repair_action != "skip":
            self.consecutive_nonfinite = 0
        self._log(record)
        return record

    def train_step(self, loss_fn: Callable[[], torch.Tensor]) -> StepRecord:
        """Run ``loss_fn`` and backward, check and step, until the batch is applied.

        A skipped attempt leaves parameters, optimizer and schedules as they were, and the batch
        runs again: after the scaler's fp16 overflow at its lowered scale, the LR unchanged (up to
        ``max_overflow_retries`` times, then it counts as non-finite); after non-finite gradients
        (or a finite norm that overflows) with the LR halved, up to ``max_retries`` times, then
        :class:`TrainingStopped` is raised (``on_unrecoverable`` runs first).

        Args:
            loss_fn: computes the batch's scalar loss (forward pass); called once per attempt.

        Returns:
            The applied attempt's record (``repair_action`` ``"lr_halved"`` when the LR was
            halved for it).

        Raises:
            TrainingStopped: the batch's gradients stayed non-finite through ``max_retries`` LR
                halvings.
        """
        halvings = overflows = 0
        while True:
            loss = loss_fn()
            if self.backward is not None:
                self.backward(loss)
            elif self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
            record = self._check_and_step(loss)
            if halvings and record.repair_action != "skip":
                record.repair_action = "lr_halved"
            if record.repair_action != "skip":
                self.consecutive_nonfinite = 0
                self._log(record)
                return record
            self._log(record)
            if not self._is_model_failure(record, loss) and overflows < self.config.max_overflow_retries:
                overflows += 1
                continue
            if halvings == self.config.max_retries:
                break
            halvings += 1
            scale_lr(self.optimizer, self.config.lr_factor_on_retry, self.schedulers)
        raise self._stop(
            record,
            f"step {self.step}: gradients stayed non-finite after {self.config.max_retries} retries "
            f"with the LR halved each time (lr now {_current_lr(self.optimizer):.3e}); "
            "checkpoint saved, training stopped",
        )

    def observe_validation(self, val_loss: float) -> bool:
        """Record a validation loss; True when training should stop early.

        Early stop needs both: gradients vanished on every step since the previous validation,
        and validation loss has not improved by ``min_delta`` for ``patience`` evaluations.

        Args:
            val_loss: this validation's loss.

        Returns:
            True when training should stop (:attr:`should_stop` and :attr:`stop_reason` are set).
        """
        if val_loss < self._best_val - self.config.min_delta:
            self._best_val = val_loss
            self._evals_without_improvement = 0
        else:
            self._evals_without_improvement += 1
        vanishing = self.vanishing_since_validation and self._steps_since_validation > 0
        self.vanishing_since_validation = True
        self._steps_since_validation = 0
        if vanishing and self._evals_without_improvement >= self.config.patience:
            self.should_stop = True
            self.stop_reason = (
                f"gradients vanished (< {self.config.vanish_threshold:.0e}) while validation loss did "
                f"not improve for {self._evals_without_improvement} evaluations"
            )
            return True
        return False
