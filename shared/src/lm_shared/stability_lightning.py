"""The gradient-health policy of :mod:`lm_shared.stability` as a Lightning callback, with exact skips.

Lightning calls ``on_before_optimizer_step`` after backward (and after the AMP scaler's
``unscale_``) and before ``optimizer.step()``; it cannot veto that call. A skip must leave the whole
training state as it was, and dropping the gradients is not enough (schedule-free AdamW advances
``k``, ``weight_sum``, ``lr_max`` and ``scheduled_lr`` even for parameters without a gradient, a
step-interval LR scheduler would still advance, and ``global_step`` would count the skip). So the
callback installs an :class:`OptimizerStepGate` on each optimizer when fitting starts:

- the gate runs the closure (forward, backward, this callback's check) and then calls the
  optimizer's real ``step()`` only when the check did not veto it; it counts applied updates;
- step-interval LR schedulers step only after an applied update;
- a skipped step is taken back from Lightning's optimizer-step counter, so ``global_step``,
  ``max_steps`` and step-based checkpoints count parameter updates (a skip also re-uses nothing:
  the next batch is a new one).

Lightning cannot re-run a batch, so "retry with a halved LR" becomes "the next batches run with a
halved LR" (a persistent factor the LR schedule keeps, see :func:`lm_shared.stability.scale_lr`);
after ``max_retries`` halvings the callback saves a checkpoint and asks the trainer to stop.

A LightningModule that updates something once per optimizer step (an EMA of the weights) asks
:func:`optimizer_updates` before and after ``super().optimizer_step(...)``::

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure):
        before = optimizer_updates(optimizer)
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if optimizer_updates(optimizer) != before:
            self.ema.update_parameters(self.model)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch

from lm_shared.stability import HealthConfig, grad_health, scale_lr

# The gate patches attributes that torch.optim.Optimizer does not declare onto the optimizer
# instance, so they are set and read by name: our gate, and the flag that torch's LR schedulers'
# own step wrapper sets (they warn "lr_scheduler.step() before optimizer.step()" without it).
_GATE_ATTR = "_lm_step_gate"
_STEP_CALLED_ATTR = "_opt_called"


def _raw_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer behind a ``LightningOptimizer`` (or the optimizer itself)."""
    return getattr(optimizer, "_optimizer", optimizer)


class OptimizerStepGate:
    """Lets a gradient check veto the next ``optimizer.step()`` and counts the applied updates.

    Installed on the optimizer instance (``optimizer.step`` is replaced by a function that runs
    the closure, then the original ``step`` unless :attr:`skip_next` is set). Under AMP, Lightning
    calls ``scaler.step(optimizer)``, which calls the gated ``step()`` only for finite gradients;
    a vetoed step then leaves the optimizer untouched and ``scaler.update()`` still runs.
    Create one with :meth:`install`, not directly.

    Args:
        optimizer: the torch optimizer whose ``step`` is kept as :attr:`original_step`.

    Attributes:
        original_step: the optimizer's own bound ``step``.
        skip_next: set by the health check, consumed by the next ``step()``.
        updates: optimizer steps actually applied.
        skipped: optimizer steps vetoed.
        scheduler_seen: ``id(scheduler)`` -> :attr:`updates` at that scheduler's last step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.original_step = optimizer.step
        self.skip_next = False
        self.updates = 0
        self.skipped = 0
        self.scheduler_seen: dict[int, int] = {}

    @staticmethod
    def install(optimizer: Any) -> OptimizerStepGate:
        """Install a gate on ``optimizer`` (idempotent) and return it.

        Args:
            optimizer: a torch optimizer or Lightning's ``LightningOptimizer`` wrapping one (the
                gate goes on the torch optimizer).

        Returns:
            The optimizer's gate, the existing one when already installed.
        """
        opt = _raw_optimizer(optimizer)
        gate = opt.__dict__.get(_GATE_ATTR)
        if gate is None:
            gate = OptimizerStepGate(opt)
            setattr(opt, _GATE_ATTR, gate)

            def step(closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
                return _gated_step(opt, closure, **kwargs)

            # torch's LR schedulers wrap optimizer.step once to track that it was called; this
            # wrapper sets the same flag (``_opt_called``) itself.
            step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
            # An instance attribute shadowing the class's method: only this optimizer is gated.
            setattr(opt, "step", step)  # noqa: B010 - a deliberate patch of a method
        return gate

    @staticmethod
    def of(optimizer: Any) -> OptimizerStepGate | None:
        """The gate installed on ``optimizer`` (or on the torch optimizer it wraps), else None."""
        return _raw_optimizer(optimizer).__dict__.get(_GATE_ATTR)


def _gated_step(
    optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None, **kwargs: Any
) -> Any:
    gate: OptimizerStepGate = getattr(optimizer, _GATE_ATTR)
    loss = None
    if closure is not None:
        with torch.enable_grad():
            loss = closure()
    if gate.skip_next:
        gate.skip_next = False
        gate.skipped += 1
        return loss
    gate.original_step(**kwargs)
    gate.updates += 1
    setattr(optimizer, _STEP_CALLED_ATTR, True)
    return loss


def optimizer_updates(optimizer: Any) -> int | None:
    """Count the optimizer steps applied so far, vetoed ones excluded.

    Args:
        optimizer: a torch optimizer or a ``LightningOptimizer`` (as ``optimizer_step`` gets it).

    Returns:
        The count, or ``None`` when no gate is installed (no :class:`GradientHealthCallback`).
    """
    gate = OptimizerStepGate.of(optimizer)
    return None if gate is None else gate.updates


def _shards_gradients(trainer: L.Trainer) -> bool:
    """Whether each rank holds only a shard of the gradients (FSDP with more than one process)."""
    from lightning.pytorch.strategies import FSDPStrategy

    return isinstance(trainer.strategy, FSDPStrategy) and trainer.world_size > 1


def _uncount_optimizer_step(trainer: L.Trainer) -> None:
    """Take the optimizer step in progress back from Lightning's counter (``global_step``).

    Called inside the ``optimizer_step`` hook, between Lightning's ``increment_ready`` and
    ``increment_completed``, so after the hook both counters are where they were before the batch.
    """
    progress = trainer.fit_loop.epoch_loop.automatic_optimization.optim_progress.optimizer.step
    for tracker in (progress.total, progress.current):
        tracker.ready -= 1
        tracker.completed -= 1


if TYPE_CHECKING:
    # What the mixin is combined with (see _gate_scheduler): its step() and optimizer.
    _SchedulerBase = torch.optim.lr_scheduler.LRScheduler
else:
    _SchedulerBase = object


class _UpdateGatedStep(_SchedulerBase):
    """Mixin for an LR scheduler: ``step()`` is a no-op unless its optimizer applied an update since."""

    def step(self, *args: Any, **kwargs: Any) -> Any:
        gate = OptimizerStepGate.of(self.optimizer)
        if gate is not None:
            if gate.scheduler_seen.get(id(self)) == gate.updates:
                return None
            gate.scheduler_seen[id(self)] = gate.updates
        return super().step(*args, **kwargs)


_GATED_CLASSES: dict[type, type] = {}


def _gate_scheduler(scheduler: Any, gate: OptimizerStepGate) -> None:
    """Make a step-interval scheduler step once per applied optimizer update.

    A class swap, so its ``state_dict()`` stays what it was.
    """
    cls = type(scheduler)
    if issubclass(cls, _UpdateGatedStep):
        return
    if cls not in _GATED_CLASSES:
        _GATED_CLASSES[cls] = type(f"UpdateGated{cls.__name__}", (_UpdateGatedStep, cls), {})
    scheduler.__class__ = _GATED_CLASSES[cls]
    gate.scheduler_seen[id(scheduler)] = gate.updates


class GradientHealthCallback(L.Callback):
    """Logs grad_norm, has_nan, has_inf, n_zero and repair_action every optimizer step.

    Args:
        config: thresholds and the repair policy (:class:`lm_shared.stability.HealthConfig`).
        checkpoint_path: where to save a checkpoint before stopping on repeated non-finite steps.
        monitor: the validation metric the plateau / early-stop checks read.
        count_skipped_steps: when False (default) a skipped step is taken back from
            ``global_step``, so step counts and ``max_steps`` count parameter updates; when True
            every attempted step keeps its number (a member whose logs and schedules number
            attempts, e.g. infinito-iit's ``grad_health.jsonl``).

    Attributes:
        history: one dict per optimizer step (``step``, ``grad_norm``, ``has_nan``, ``has_inf``,
            ``n_zero``, ``repair_action``).
        last_action: the latest ``repair_action``.
        stop_reason: why the callback asked the trainer to stop ("" while it has not).
    """

    def __init__(
        self,
        config: HealthConfig | None = None,
        *,
        checkpoint_path: str | os.PathLike[str] | None = None,
        monitor: str = "val_loss",
        count_skipped_steps: bool = False,
    ) -> None:
        self.count_skipped_steps = count_skipped_steps
        self.config = config or HealthConfig()
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.monitor = monitor
        self.consecutive_nonfinite = 0
        self.vanishing_since_validation = True
        self.best_val = float("inf")
        self.evals_without_improvement = 0
        self.last_action = "none"
        self.stop_reason = ""
        self.history: list[dict[str, Any]] = []

    @staticmethod
    def _uses_scaler(trainer: L.Trainer) -> bool:
        return getattr(trainer.strategy.precision_plugin, "scaler", None) is not None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Gate every optimizer, and every step-interval scheduler (not plateau) on its optimizer."""
        for opt in trainer.optimizers:
            OptimizerStepGate.install(opt)
        for config in trainer.lr_scheduler_configs:
            if config.interval == "step" and not config.reduce_on_plateau:
                scheduler_opt = getattr(config.scheduler, "optimizer", None)
                gate = OptimizerStepGate.of(scheduler_opt) if scheduler_opt is not None else None
                if gate is not None:
                    _gate_scheduler(config.scheduler, gate)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Check the (unscaled) gradients, clip or veto the coming step, apply the LR policy, log.

        A vetoed step's gradients are dropped and, under automatic optimisation and unless
        ``count_skipped_steps``, the step is taken back from ``global_step``. Without an AMP
        scaler (which owns fp16 overflows) repeated non-finite steps halve the LR, then save
        ``checkpoint_path`` and set ``trainer.should_stop``. Logs ``health/grad_norm`` (-1 when
        non-finite), ``health/has_nan``, ``health/has_inf``, ``health/n_zero`` and
        ``health/skipped``.
        """
        gate = OptimizerStepGate.install(optimizer)
        params = [p for p in pl_module.parameters() if p.requires_grad]
        sharded = _shards_gradients(trainer)
        health = grad_health(params, all_reduce=sharded)
        action = "none"
        if health.finite and health.grad_norm > self.config.clip_norm:
            action = "clip"
            if sharded:  # clip every shard by the whole model's norm, as FSDP's clip_grad_norm_ does
                if math.isfinite(health.grad_norm):
                    torch.nn.utils.clip_grads_with_norm_(
                        params, self.config.clip_norm, torch.tensor(health.grad_norm)
                    )
                else:
                    action = "skip"
            else:
                post = torch.nn.utils.clip_grad_norm_(params, self.config.clip_norm)
                if not bool(torch.isfinite(post)):
                    action = "skip"
        elif not health.finite:
            action = "skip"
        gate.skip_next = action == "skip"
        step = trainer.global_step
        if action == "skip":
            for p in params:
                p.grad = None
            if pl_module.automatic_optimization and not self.count_skipped_steps:
                _uncount_optimizer_step(trainer)
            if not self._uses_scaler(trainer):
                self.consecutive_nonfinite += 1
                if self.consecutive_nonfinite > self.config.max_retries + 1:
                    action = "stop"
                    self.stop_reason = (
                        f"gradients non-finite on {self.consecutive_nonfinite} consecutive steps after "
                        f"{self.config.max_retries} LR halvings; checkpoint saved, training stopped"
                    )
                    if self.checkpoint_path is not None:
                        trainer.save_checkpoint(self.checkpoint_path, weights_only=False)
                    trainer.should_stop = True
                elif self.consecutive_nonfinite > 1:
                    schedulers = [c.scheduler for c in trainer.lr_scheduler_configs]
                    scale_lr(_raw_optimizer(optimizer), self.config.lr_factor_on_retry, schedulers)
                    action = "lr_halved"
        else:
            self.consecutive_nonfinite = 0
        vanishing = health.finite and health.grad_norm < self.config.vanish_threshold
        self.vanishing_since_validation = self.vanishing_since_validation and vanishing
        self.last_action = action
        entry = {
            "step": step,
            "grad_norm": health.grad_norm,
            "has_nan": health.has_nan,
            "has_inf": health.has_inf,
            "n_zero": health.n_zero,
            "repair_action": action,
        }
        self.history.append(entry)
        finite_norm = health.grad_norm if health.finite else -1.0
        pl_module.log_dict(
            {
                "health/grad_norm": finite_norm,
                "health/has_nan": float(health.has_nan),
                "health/has_inf": float(health.has_inf),
                "health/n_zero": float(health.n_zero),
                "health/skipped": float(action in {"skip", "lr_halved", "stop"}),
            },
            on_step=True,
            on_epoch=False,
        )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Stop early when gradients vanished since the last validation and ``monitor`` plateaued.

        Plateaued: no improvement by ``config.min_delta`` for ``config.patience`` validations.
        Sanity-check runs and validations without the metric are ignored.
        """
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        val = float(value)
        if val < self.best_val - self.config.min_delta:
            self.best_val = val
            self.evals_without_improvement = 0
        else:
            self.evals_without_improvement += 1
        vanishing = self.vanishing_since_validation and bool(self.history)
        self.vanishing_since_validation = True
        if vanishing and self.evals_without_improvement >= self.config.patience:
            self.stop_reason = "gradients vanished while validation loss plateaued"
            trainer.should_stop = True
