"""Fault-injection kit: the exactness contract of a Lightning trainer as reusable test checks.

Every PyTorch member runs the same checks against its own trainer (issue 15, points a-g, plus the
multi-device test). The kit drives the trainer through a small **adapter**: any object with

    fit(run_dir, *, max_steps, callbacks=(), resume=False, **options) -> lightning.Trainer

which trains the member's model on a tiny built-in dataset for ``max_steps`` optimizer steps with
the member's real LightningModule, callbacks and Trainer settings, puts the kit's ``callbacks``
FIRST in the Trainer's callback list, writes its checkpoints (``last`` at least every step when
``options["checkpoint_every_n_steps"] == 1``) under ``run_dir``, resumes from ``run_dir``'s
``last`` checkpoint when ``resume`` is true, and returns the Trainer after ``fit``. Options the kit
passes (an adapter raises :class:`Unsupported` for one it cannot honour; the check is skipped):

- ``plugins``: a list of Lightning plugins (the kit's fp16 ``MixedPrecision`` with a CPU GradScaler);
  the adapter then leaves ``precision`` unset;
- ``accumulate_grad_batches`` (int), ``ema_decay`` (float), ``scheduler`` (``"lambda"``,
  ``"cosine"``, ``"plateau"`` or ``"schedulefree"``), ``compile`` (bool),
  ``checkpoint_every_n_steps`` (int), ``devices`` / ``strategy`` (multi-device test).

A resume of a run that already finished must raise an exception whose message says ``finished``.

How a member uses it (``packages/<pkg>/tests/test_fault_injection.py``)::

    from lm_shared import testing as kit

    ADAPTER = (__file__, "make_adapter")      # importable in a subprocess: file + factory name

    def make_adapter():
        return MyAdapter()

    def test_nonfinite_step_is_skipped_exactly(tmp_path):
        kit.check_nonfinite_skip(make_adapter(), tmp_path)

    def test_kill_and_resume(tmp_path):
        kit.check_kill_resume(ADAPTER, tmp_path, kill_at_step=3)

A member whose repair runs a batch again inside one ``training_step`` (manual optimisation,
tormented-mini) ends every batch with an applied update, so checks (a)-(d), which compare the
state around a skipped batch, do not apply as written; its tests check the skipped *attempt* with
:class:`AttemptRecorder` and the same state helpers (:func:`training_state`,
:func:`assert_same_state`).

Each ``check_*`` raises ``AssertionError`` with what differed (the state key and step) and
returns what it measured. pytest is not imported here; :class:`Unsupported` becomes a pytest skip
only when pytest is the runner.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import torch

KIT_DIR = "kit"  # the kit's own records inside a run directory (never a member's output)


class Unsupported(Exception):
    """Raised by an adapter for an option its trainer does not have; the check is skipped."""


class TrainerAdapter(Protocol):
    """What the kit needs of a member: one method that trains its real model (module docstring)."""

    def fit(
        self,
        run_dir: Path,
        *,
        max_steps: int,
        callbacks: Sequence[Any] = (),
        resume: bool = False,
        **options: Any,
    ) -> Any:
        """Train the member's model on its tiny dataset for ``max_steps`` optimizer steps.

        Args:
            run_dir: where the run's checkpoints go (``last`` every step when
                ``options["checkpoint_every_n_steps"] == 1``).
            max_steps: optimizer steps to train to.
            callbacks: the kit's callbacks, to put FIRST in the Trainer's callback list.
            resume: continue from ``run_dir``'s ``last`` checkpoint.
            **options: the kit's options (module docstring).

        Returns:
            The ``lightning.Trainer`` after ``fit``.

        Raises:
            Unsupported: an option the member's trainer cannot honour (the check is skipped).
            Exception: resuming a run that already finished; the message says ``finished``.
        """
        ...


def _skip(reason: str) -> None:
    if "pytest" in sys.modules:
        import pytest

        pytest.skip(reason)
    raise Unsupported(reason)


def _fit(adapter: TrainerAdapter, run_dir: Path, **kwargs: Any):
    try:
        return adapter.fit(run_dir, **kwargs)
    except Unsupported as exc:
        _skip(str(exc))


# ---------------------------------------------------------------------------------------------
# Training state: everything a skipped step must leave alone
# ---------------------------------------------------------------------------------------------


def _clone(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, Mapping):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_clone(v) for v in obj)
    return copy.deepcopy(obj)


def strip_compile_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Remove ``torch.compile``'s ``_orig_mod.`` from state-dict keys (``model._orig_mod.w`` -> ``model.w``).

    Args:
        state_dict: a module's state dict, compiled or not.

    Returns:
        A new dict with the same values under the uncompiled names.
    """
    return {k.replace("_orig_mod.", ""): v for k, v in state_dict.items()}


def training_state(trainer: Any, module: Any) -> dict[str, Any]:
    """A deep copy of the whole training state of a Lightning run.

    Args:
        trainer: the running ``lightning.Trainer``.
        module: its LightningModule.

    Returns:
        ``module`` (state dict without ``torch.compile``'s prefix: parameters, buffers, an EMA
        copy and its ``n_averaged``), ``optimizers`` (state dicts, param groups included: LR,
        schedule-free ``k``/``weight_sum``/``lr_max``/``scheduled_lr``), ``schedulers`` (state
        dicts), ``grad_scaler`` (state dict, ``None`` without one) and ``global_step``; tensors
        are detached clones.
    """
    scaler = getattr(trainer.strategy.precision_plugin, "scaler", None)
    return {
        "module": _clone(strip_compile_prefix(module.state_dict())),
        "optimizers": [_clone(opt.state_dict()) for opt in trainer.optimizers],
        "schedulers": [_clone(c.scheduler.state_dict()) for c in trainer.lr_scheduler_configs],
        "grad_scaler": None if scaler is None else _clone(scaler.state_dict()),
        "global_step": trainer.global_step,
    }


def state_differences(a: Any, b: Any, path: str = "state", *, atol: float = 0.0) -> list[str]:
    """List where two nested states differ.

    Tensors, mappings, lists/tuples and floats are compared recursively; NaN equals NaN and
    equal infinities are equal.

    Args:
        a: one state (e.g. from :func:`training_state`).
        b: the other.
        path: the name of the root in the messages.
        atol: absolute tolerance for floating tensors and floats; 0 compares exactly.

    Returns:
        One line per difference, e.g. ``"state.module.w: tensors differ (max |diff| 1.200e-03)"``;
        empty when the states are equal.
    """
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
            return [f"{path}: {type(a).__name__} vs {type(b).__name__}"]
        if atol == 0.0 or not a.is_floating_point():
            same = torch.equal(a, b) or (
                a.is_floating_point()
                and torch.equal(a.isnan(), b.isnan())
                and torch.equal(a.nan_to_num(), b.nan_to_num())
            )
        else:
            same = torch.allclose(a.float(), b.float(), atol=atol, rtol=0.0, equal_nan=True)
        return (
            [] if same else [f"{path}: tensors differ (max |diff| {(a.float() - b.float()).abs().max():.3e})"]
        )
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = [f"{path}.{k}: missing on one side" for k in sorted(set(a) ^ set(b), key=str)]
        for k in a:
            if k in b:
                out += state_differences(a[k], b[k], f"{path}.{k}", atol=atol)
        return out
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} vs {len(b)}"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b))
            for d in state_differences(x, y, f"{path}[{i}]", atol=atol)
        ]
    if isinstance(a, float) and isinstance(b, float):
        if a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= atol:  # a == b: inf vs inf
            return []
        return [f"{path}: {a!r} vs {b!r}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def assert_same_state(before: Any, after: Any, what: str, *, ignore: Sequence[str] = ()) -> None:
    """Assert two training states are exactly equal (see :func:`state_differences`).

    Args:
        before: the state before, e.g. a batch.
        after: the state after it.
        what: what happened in between, named in the message.
        ignore: top-level keys or dotted paths below ``state.`` to leave out (e.g.
            ``"grad_scaler"``).

    Raises:
        AssertionError: listing up to 20 differences.
    """
    diffs = [
        d for d in state_differences(before, after) if not any(d.startswith(f"state.{i}") for i in ignore)
    ]
    if diffs:
        raise AssertionError(f"{what}: the training state changed:\n  " + "\n  ".join(diffs[:20]))


# ---------------------------------------------------------------------------------------------
# Callbacks the kit puts in a member's Trainer
# ---------------------------------------------------------------------------------------------


class GradientFault(L.Callback):
    """Overwrite every gradient on the first ``times`` batches that perform optimizer step ``at_step``.

    ``kind``: ``"nan"``/``"inf"`` (right after backward, before an AMP scaler's ``unscale_``) or
    ``"overflow"``: every gradient set to ``1e38`` after ``unscale_``, finite values whose global
    norm overflows float32. A skipped step does not advance ``global_step``, so ``times=2`` gives
    two non-finite steps in a row. Micro-batches that only accumulate are left alone.

    Args:
        at_step: the ``global_step`` value during the batches that get the fault.
        kind: ``"nan"``, ``"inf"`` or ``"overflow"``.
        times: how many batches at that step get it.

    Attributes:
        fired_at_batches: indices (over the whole run, from 0) of the batches that got it.

    Raises:
        ValueError: an unknown ``kind``.
    """

    def __init__(self, at_step: int, kind: str = "nan", times: int = 1) -> None:
        if kind not in ("nan", "inf", "overflow"):
            raise ValueError(f"kind must be nan, inf or overflow, got {kind!r}")
        self.at_step = at_step
        self.kind = kind
        self.times = times
        self.fired_at_batches: list[int] = []
        self._batch = -1

    @property
    def fired_at_batch(self) -> int | None:
        """The index of the first batch that got the fault, ``None`` while none has."""
        return self.fired_at_batches[0] if self.fired_at_batches else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        """Count the batch (the index :attr:`fired_at_batches` records)."""
        self._batch += 1

    def _fire(self, trainer, pl_module, value: float) -> None:
        if len(self.fired_at_batches) >= self.times or trainer.global_step != self.at_step:
            return
        if trainer.fit_loop._should_accumulate():
            return
        for p in pl_module.parameters():
            if p.grad is not None:
                p.grad.fill_(value)
        self.fired_at_batches.append(self._batch)

    def on_after_backward(self, trainer, pl_module) -> None:
        """Fill every gradient with NaN or Inf (kinds ``nan``/``inf``), before any ``unscale_``."""
        if self.kind != "overflow":
            self._fire(trainer, pl_module, float(self.kind))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        """Set every gradient to ``1e38`` (kind ``overflow``), after the scaler's ``unscale_``."""
        if self.kind == "overflow":
            self._fire(trainer, pl_module, 1e38)


class StateRecorder(L.Callback):
    """Snapshots :func:`training_state` before and after every training batch, and at the start.

    Attributes:
        before: batch index (over the whole run, from 0) -> state when the batch starts.
        after: batch index -> state when the batch ends (after its optimizer step, if any).
        at_start: the state when training starts (after a resume's restore), ``None`` before.
    """

    def __init__(self) -> None:
        self.before: dict[int, dict] = {}
        self.after: dict[int, dict] = {}
        self.at_start: dict | None = None
        self._n = 0

    def on_train_start(self, trainer, pl_module) -> None:
        """Record :attr:`at_start`."""
        self.at_start = training_state(trainer, pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        """Record the state in :attr:`before`."""
        self.before[self._n] = training_state(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        """Record the state in :attr:`after` and move to the next batch index."""
        self.after[self._n] = training_state(trainer, pl_module)
        self._n += 1


class AttemptRecorder(L.Callback):
    """:func:`training_state` at every backward (``on_before_backward``), grouped by training batch.

    A member that runs a batch again inside one ``training_step`` after a skipped attempt (manual
    optimisation, the "retry at half the LR" policy) shows each attempt here: with one micro-batch
    per attempt, ``attempts[i][j]`` is the state when attempt ``j`` of batch ``i`` starts its
    backward, i.e. after attempt ``j - 1`` was checked and stepped or skipped.

    Attributes:
        attempts: batch index (over the whole run, from 0) -> one state per backward.
    """

    def __init__(self) -> None:
        self.attempts: dict[int, list[dict]] = {}
        self._n = -1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        """Open the batch's list of attempts."""
        self._n += 1
        self.attempts[self._n] = []

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        """Record the state as one more attempt of the current batch."""
        self.attempts[self._n].append(training_state(trainer, pl_module))


class LossRecorder(L.Callback):
    """Records each batch's loss and the final weights under ``run_dir/kit/``, one file set per rank.

    Read them back with :func:`read_losses` and :func:`read_final_state`.

    Args:
        run_dir: the run directory (the kit's files go in its ``kit`` subfolder).
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        """Append ``{"epoch", "batch", "global_step", "loss"}`` to ``kit/losses-rank{r}.jsonl``."""
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if loss is None:
            return
        row = {
            "epoch": trainer.current_epoch,
            "batch": batch_idx,
            "global_step": trainer.global_step,
            "loss": float(loss.detach().float()),
        }
        path = self.run_dir / KIT_DIR / f"losses-rank{trainer.global_rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")

    def on_train_end(self, trainer, pl_module) -> None:
        """Save the module's state dict (compile prefix stripped) to ``kit/final-rank{r}.pt``."""
        path = self.run_dir / KIT_DIR / f"final-rank{trainer.global_rank}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(strip_compile_prefix(pl_module.state_dict()), path)


class KillAtStep(L.Callback):
    """``SIGKILL`` this process at the start of the first batch with ``global_step >= step``.

    With a ``last`` checkpoint written every step, the kill lands right after the checkpoint of
    step ``step``: mid-epoch when ``step`` is not a multiple of the epoch's steps, else at an
    epoch boundary.

    Args:
        step: the ``global_step`` at which the process dies.
    """

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        """Kill the process (no cleanup, no exception) once ``global_step`` reached ``step``."""
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class SimulatedCrash(RuntimeError):
    """Raised by :class:`CrashAtStep`: an in-process stand-in for ``kill -9``."""


class CrashAtStep(L.Callback):
    """Raise :class:`SimulatedCrash` at the start of the first batch with ``global_step >= step``.

    Like :class:`KillAtStep`, right after the checkpoint of step ``step`` when ``last`` is written
    every step, but the test process lives on (the run is left unfinished, to be resumed).

    Args:
        step: the ``global_step`` at which training crashes.
    """

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        """Raise :class:`SimulatedCrash` once ``global_step`` reached ``step``."""
        if trainer.global_step >= self.step:
            raise SimulatedCrash(f"simulated crash at step {trainer.global_step}")


def read_losses(run_dir: str | os.PathLike[str], rank: int = 0) -> dict[tuple[int, int], float]:
    """Read the losses a :class:`LossRecorder` logged.

    Args:
        run_dir: the run directory the recorder was given.
        rank: whose file to read (global rank).

    Returns:
        ``(epoch, batch index in the epoch) -> loss``; a batch logged twice (trained again after a
        resume) keeps the last value.
    """
    out: dict[tuple[int, int], float] = {}
    path = Path(run_dir) / KIT_DIR / f"losses-rank{rank}.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        out[(row["epoch"], row["batch"])] = row["loss"]
    return out


def read_final_state(run_dir: str | os.PathLike[str], rank: int = 0) -> dict[str, torch.Tensor]:
    """Load the final state dict a :class:`LossRecorder` saved for ``rank`` (``weights_only``)."""
    return torch.load(Path(run_dir) / KIT_DIR / f"final-rank{rank}.pt", weights_only=True)


def _health_history(trainer: Any) -> list[dict]:
    from lm_shared.stability_lightning import GradientHealthCallback

    for cb in trainer.callbacks:
        if isinstance(cb, GradientHealthCallback):
            return cb.history
    raise AssertionError("the trainer has no lm_shared GradientHealthCallback: skips are not logged")


def fp16_cpu_amp_plugin():
    """Lightning's fp16 ``MixedPrecision`` with a CPU ``GradScaler``, for AMP checks on the CPU.

    ``precision="16-mixed"`` on the CPU silently becomes bf16, which has no scaler. Pass the
    plugin as ``plugins=[...]`` and leave ``precision`` unset.
    """
    from lightning.pytorch.plugins.precision import MixedPrecision

    return MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))


# ---------------------------------------------------------------------------------------------
# The checks (a)-(g)
# ---------------------------------------------------------------------------------------------


def check_nonfinite_skip(
    adapter: TrainerAdapter,
    tmp_path: Path,
    *,
    kind: str = "nan",
    at_step: int = 2,
    total_steps: int = 5,
    **options: Any,
) -> dict:
    """(a) A NaN/Inf gradient at optimizer step ``at_step`` is skipped exactly.

    The whole training state is equal before and after that batch (under fp16 except the
    scaler's own back-off), the skip is logged by the member's
    :class:`~lm_shared.stability_lightning.GradientHealthCallback`, ``global_step`` counts only
    applied updates, and later steps train again.

    Args:
        adapter: the member's :class:`TrainerAdapter`.
        tmp_path: a fresh folder for the runs.
        kind: ``"nan"`` or ``"inf"``.
        at_step: the optimizer step that gets the fault.
        total_steps: optimizer steps the run trains to.
        **options: passed to the adapter.

    Returns:
        ``skipped_batch`` (index of the faulty batch) and ``global_step`` (at the end).

    Raises:
        AssertionError: saying what differed (state key and step).
        Unsupported: the adapter cannot honour an option, outside pytest (under pytest the
            check is skipped).
    """
    fault, states = GradientFault(at_step, kind), StateRecorder()
    trainer = _fit(adapter, tmp_path / "run", max_steps=total_steps, callbacks=[fault, states], **options)
    assert fault.fired_at_batch is not None, f"the run never reached optimizer step {at_step}"
    n = max(states.after)
    i = fault.fired_at_batch
    # Under fp16 the scaler's back-off on an overflow is its own repair, the one allowed change.
    ignore = ("grad_scaler",) if states.before[i]["grad_scaler"] is not None else ()
    assert_same_state(states.before[i], states.after[i], f"{kind} gradient at step {at_step}", ignore=ignore)
    skips = [h for h in _health_history(trainer) if h["step"] == at_step and h["repair_action"] != "none"]
    assert skips and skips[0]["repair_action"] in ("skip", "lr_halved"), f"no logged skip at step {at_step}"
    assert skips[0]["has_nan" if kind == "nan" else "has_inf"], skips[0]
    assert trainer.global_step == total_steps, "a skipped step counted as an optimizer step"
    moved = state_differences(states.after[i]["module"], states.after[n]["module"])
    assert moved, "training did not continue after the skipped step"
    return {"skipped_batch": i, "global_step": trainer.global_step}


def check_overflow_skip(adapter: TrainerAdapter, tmp_path: Path, *, at_step: int = 2, **options: Any) -> dict:
    """(b) Under fp16 with a GradScaler, finite gradients whose norm overflows are skipped.

    The state is unchanged by that batch (the scaler's scale included; only its growth tracker
    may count the step), and the next step updates the parameters.

    Args:
        adapter: the member's :class:`TrainerAdapter`.
        tmp_path: a fresh folder for the runs.
        at_step: the optimizer step that gets the fault; the run trains to ``at_step + 2``.
        **options: passed to the adapter; ``plugins`` defaults to :func:`fp16_cpu_amp_plugin`.

    Returns:
        ``skipped_batch`` and ``scale`` (the GradScaler's scale after the skip).

    Raises:
        AssertionError: saying what differed, or that the run had no GradScaler.
        Unsupported: the adapter cannot honour an option, outside pytest (under pytest the
            check is skipped).
    """
    fault, states = GradientFault(at_step, "overflow"), StateRecorder()
    options.setdefault("plugins", [fp16_cpu_amp_plugin()])
    _fit(adapter, tmp_path / "run", max_steps=at_step + 2, callbacks=[fault, states], **options)
    i = fault.fired_at_batch
    assert i is not None, f"the run never reached optimizer step {at_step}"
    before, after = states.before[i], states.after[i]
    assert after["grad_scaler"] is not None, "no GradScaler in this run"
    # The scaler saw no fp16 overflow (the gradients were finite), so it may count the step
    # towards its next growth; its scale must not change.
    assert_same_state(
        before, after, f"overflowing norm at step {at_step}", ignore=("grad_scaler._growth_tracker",)
    )
    nxt = states.after[i + 1]
    assert nxt["global_step"] == at_step + 1, "the step after the skip did not run"
    assert state_differences(after["module"], nxt["module"]), "the step after the skip changed nothing"
    return {"skipped_batch": i, "scale": after["grad_scaler"]["scale"]}


def _lrs(state: dict) -> list[float]:
    return [g["lr"] for opt in state["optimizers"] for g in opt["param_groups"]]


def check_lr_repair_persists(
    adapter: TrainerAdapter,
    tmp_path: Path,
    *,
    scheduler: str,
    at_step: int = 2,
    total_steps: int = 7,
    factor: float = 0.5,
    **options: Any,
) -> dict:
    """(c) After two non-finite steps in a row, the halved LR lasts, whatever the scheduler.

    The second non-finite step halves the LR; every later step's LR must then be ``factor`` times
    the LR of the same run without faults (relative tolerance 1e-5).

    Args:
        adapter: the member's :class:`TrainerAdapter`.
        tmp_path: a fresh folder for the runs.
        scheduler: the adapter's ``scheduler`` option (``"lambda"``, ``"cosine"``, ``"plateau"``
            or ``"schedulefree"``).
        at_step: the optimizer step that gets two faults in a row.
        total_steps: optimizer steps each run trains to.
        factor: the member's LR factor per halving (``HealthConfig.lr_factor_on_retry``).
        **options: passed to the adapter.

    Returns:
        ``steps_checked``: steps whose LRs were compared (at least 2).

    Raises:
        AssertionError: the log does not show ``skip`` then ``lr_halved``, or a later LR is not
            ``factor`` times the reference.
        Unsupported: the adapter cannot honour an option, outside pytest (under pytest the
            check is skipped).
    """
    ref = StateRecorder()
    _fit(adapter, tmp_path / "ref", max_steps=total_steps, callbacks=[ref], scheduler=scheduler, **options)
    rec = StateRecorder()
    trainer = _fit(
        adapter,
        tmp_path / "run",
        max_steps=total_steps,
        callbacks=[GradientFault(at_step, "nan", times=2), rec],
        scheduler=scheduler,
        **options,
    )
    history = _health_history(trainer)
    assert [h["repair_action"] for h in history if h["step"] == at_step][:2] == ["skip", "lr_halved"], history
    by_step_ref = {s["global_step"]: _lrs(s) for s in ref.after.values()}
    by_step = {s["global_step"]: _lrs(s) for s in rec.after.values()}
    checked = 0
    for step in range(at_step + 1, total_steps + 1):
        if step in by_step and step in by_step_ref:
            for got, want in zip(by_step[step], by_step_ref[step]):
                if not math.isclose(got, want * factor, rel_tol=1e-5, abs_tol=1e-12):
                    raise AssertionError(
                        f"{scheduler}: LR at step {step} is {got:.6g}, expected {factor} x {want:.6g} "
                        "(the repair did not last)"
                    )
            checked += 1
    assert checked >= 2, "too few steps after the repair to check"
    return {"steps_checked": checked}


def check_once_per_optimizer_step(
    adapter: TrainerAdapter,
    tmp_path: Path,
    *,
    accumulate: int = 2,
    total_steps: int = 4,
    skip_step: int = 1,
    step_counters: Sequence[str] = ("n_averaged",),
    **options: Any,
) -> dict:
    """(d) Once-per-update state advances once per applied optimizer step.

    With gradient accumulation and one skipped step: not per micro-batch, not on skips.
    Checked: every module-state entry whose key ends with one of ``step_counters`` and every
    step-interval LR scheduler's ``last_epoch``. A ``ReduceLROnPlateau`` steps on validation
    metrics, not on optimizer steps, and is left out.

    Args:
        adapter: the member's :class:`TrainerAdapter`.
        tmp_path: a fresh folder for the runs.
        accumulate: the adapter's ``accumulate_grad_batches``.
        total_steps: applied optimizer steps the run trains to.
        skip_step: the optimizer step that gets a NaN gradient.
        step_counters: key suffixes of the module's update counters (default: the EMA's
            ``n_averaged``, with ``ema_decay=0.9`` passed to the adapter; a member without an EMA
            names its own).
        **options: passed to the adapter.

    Returns:
        ``counters`` (key -> final value), ``micro_batches`` and, with an EMA, ``n_averaged``.

    Raises:
        AssertionError: a counter or scheduler advanced a different number of times than
            ``total_steps``, or the run had a different number of micro-batches.
        Unsupported: the adapter cannot honour an option, outside pytest (under pytest the
            check is skipped).
    """
    fault, rec = GradientFault(skip_step, "nan"), StateRecorder()
    if tuple(step_counters) == ("n_averaged",):
        options.setdefault("ema_decay", 0.9)
    trainer = _fit(
        adapter,
        tmp_path / "run",
        max_steps=total_steps,
        callbacks=[fault, rec],
        accumulate_grad_batches=accumulate,
        **options,
    )
    # The state when the last batch ended: after fit a member may load other weights (its best
    # checkpoint) into the module.
    final = rec.after[max(rec.after)]
    assert len(rec.after) == accumulate * (total_steps + 1), (
        f"{len(rec.after)} micro-batches for {total_steps} steps + 1 skip with accumulation {accumulate}"
    )
    counters = {
        k: int(v) for k, v in final["module"].items() if any(k.endswith(name) for name in step_counters)
    }
    assert counters, f"no {' / '.join(step_counters)} in the module state"
    assert rec.at_start is not None, "on_train_start never ran"
    for key, value in counters.items():
        assert value == total_steps, f"{key} advanced {value} times for {total_steps} steps"
    for i, (config, sched) in enumerate(zip(trainer.lr_scheduler_configs, final["schedulers"])):
        if config.reduce_on_plateau or config.interval != "step" or "last_epoch" not in sched:
            continue
        start = rec.at_start["schedulers"][i].get("last_epoch", 0)
        assert sched["last_epoch"] - start == total_steps, (
            f"scheduler {i} stepped {sched['last_epoch'] - start} times for {total_steps} steps"
        )
    out: dict[str, Any] = {"counters": counters, "micro_batches": len(rec.after)}
    averaged = [v for k, v in counters.items() if k.endswith("n_averaged")]
    if averaged:
        out["n_averaged"] = averaged[0]
    return out


# -- subprocess runs (kill -9, DDP) -----------------------------------------------------------------

_BOOTSTRAP = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("kit_adapter_module", sys.argv[1])
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
from lm_shared import testing as kit
adapter = getattr(mod, sys.argv[2])()
job = json.loads(sys.argv[3])
callbacks = [kit.LossRecorder(job["run_dir"])]
if job.get("kill_at_step") is not None:
    callbacks.insert(0, kit.KillAtStep(job["kill_at_step"]))
if job.get("kill_in_checkpoint_write") is not None:
    kit._arm_kill_in_checkpoint_write(job["kill_in_checkpoint_write"])
if job.get("audit_writes"):
    kit._audit_writes(job["run_dir"])
try:
    adapter.fit(job["run_dir"], max_steps=job["max_steps"], callbacks=callbacks, resume=job["resume"], **job["options"])
except Exception as exc:
    if "finish" in str(exc).lower():
        print("KIT-FINISHED:", exc, flush=True)
        sys.exit(3)
    raise
"""


def run_adapter_subprocess(
    adapter_ref: tuple[str, str],
    run_dir: Path,
    *,
    max_steps: int,
    resume: bool = False,
    kill_at_step: int | None = None,
    kill_in_checkpoint_write: int | None = None,
    options: Mapping | None = None,
    timeout: float = 600,
    launcher: Sequence[str] = (),
) -> subprocess.CompletedProcess:
    """Run ``adapter.fit`` in a fresh Python process.

    The kit's :class:`LossRecorder` is always in the callbacks. A bootstrap script is written
    beside ``run_dir``. A resume of a finished run exits with status 3 and prints
    ``KIT-FINISHED:``.

    Args:
        adapter_ref: ``(file, factory name)``: the factory is imported from that file in the
            child and called to build the adapter.
        run_dir: the run directory passed to ``fit``.
        max_steps: optimizer steps to train to.
        resume: passed to ``fit``.
        kill_at_step: SIGKILL the child at this ``global_step`` (:class:`KillAtStep`).
        kill_in_checkpoint_write: SIGKILL the child halfway through its nth checkpoint write
            (1-based).
        options: the adapter's options (JSON-able).
        timeout: seconds before ``subprocess.TimeoutExpired``.
        launcher: a command that runs the script instead of ``python`` (e.g. ``python -m
            torch.distributed.run ...``); it also turns on the audit of every rank's writes
            under ``run_dir``.

    Returns:
        The finished process, stdout and stderr captured as text (a negative ``returncode`` is
        the signal that killed it).
    """
    job = {
        "run_dir": str(run_dir),
        "max_steps": max_steps,
        "resume": resume,
        "kill_at_step": kill_at_step,
        "kill_in_checkpoint_write": kill_in_checkpoint_write,
        "options": dict(options or {}),
        "audit_writes": bool(launcher),
    }
    cmd = [*launcher] if launcher else [sys.executable]
    script = Path(run_dir).parent / f"kit_bootstrap_{Path(run_dir).name}.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(_BOOTSTRAP, encoding="utf-8")
    cmd += [str(script), str(adapter_ref[0]), adapter_ref[1], json.dumps(job)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _arm_kill_in_checkpoint_write(nth: int) -> None:
    """In this process, SIGKILL during the ``nth`` checkpoint ``torch.save`` to a file.

    Half of the bytes are on disk at the writer's destination (the final name for a plain writer,
    the temporary one for an atomic writer) when the process dies. A writer that serialises to
    memory first is not intercepted, and the check then fails with "was not killed" rather than
    passing silently.
    """
    calls = {"n": 0}
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        is_ckpt = isinstance(obj, dict) and "state_dict" in obj and "loops" in obj
        to_file = isinstance(f, str | os.PathLike) or hasattr(f, "fileno")
        if is_ckpt and to_file:
            calls["n"] += 1
            if calls["n"] == nth:
                buf = io.BytesIO()
                real_save(obj, buf, *args, **kwargs)
                data = buf.getvalue()
                if hasattr(f, "write"):
                    f.write(data[: len(data) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                else:
                    with open(f, "wb") as fh:
                        fh.write(data[: len(data) // 2])
                        fh.flush()
                        os.fsync(fh.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    torch.save = dying_save


def _audit_writes(run_dir: str) -> None:
    """Record every file this process opens for writing (or renames) under ``run_dir``."""
    rank = os.environ.get("RANK", "0")
    root = os.path.realpath(run_dir)
    log_path = os.path.join(os.path.dirname(root), f"kit-writes-{Path(root).name}-rank{rank}.txt")
    seen: set[str] = set()

    def hook(event: str, args: tuple) -> None:
        if event == "open" and args and isinstance(args[0], str | bytes | os.PathLike):
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            writing = any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            path = os.path.realpath(os.fsdecode(args[0]))
        elif event in ("os.rename", "os.replace") and len(args) >= 2:
            writing, path = True, os.path.realpath(os.fsdecode(args[1]))
        else:
            return
        if (
            writing
            and path.startswith(root)
            and f"{os.sep}{KIT_DIR}{os.sep}" not in path
            and path not in seen
        ):
            seen.add(path)
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(path + "\n")

    sys.addaudithook(hook)


def _require_ok(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        raise AssertionError(
            f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )


def _compare_runs(ref_dir: Path, run_dir: Path, what: str, *, atol: float) -> dict:
    ref_losses, losses = read_losses(ref_dir), read_losses(run_dir)
    missing = sorted(set(ref_losses) - set(losses))
    assert not missing, f"{what}: batches never trained after resume: {missing[:10]}"
    for key, value in ref_losses.items():
        assert math.isclose(losses[key], value, rel_tol=0, abs_tol=atol), (
            f"{what}: loss at epoch/batch {key} is {losses[key]!r}, uninterrupted {value!r}"
        )
    diffs = state_differences(read_final_state(ref_dir), read_final_state(run_dir), atol=atol)
    assert not diffs, f"{what}: final weights differ:\n  " + "\n  ".join(diffs[:10])
    return {"batches_compared": len(ref_losses)}


def check_kill_resume(
    adapter_ref: tuple[str, str],
    tmp_path: Path,
    *,
    kill_at_steps: Sequence[int],
    total_steps: int,
    atol: float = 1e-6,
    options: Mapping | None = None,
) -> dict:
    """(e) ``kill -9`` and resume gives the run an uninterrupted one would have.

    Each run is killed right after the checkpoint of a step in ``kill_at_steps`` (choose one
    mid-epoch and one at an epoch boundary) and resumed; every batch must have the same loss and
    the final weights must be the same as an uninterrupted run's. All runs are subprocesses
    (:func:`run_adapter_subprocess`), with a ``last`` checkpoint every step.

    Args:
        adapter_ref: ``(file, factory name)`` of the member's adapter.
        tmp_path: a fresh folder for the runs.
        kill_at_steps: the steps to kill at, one run each.
        total_steps: optimizer steps every run trains to.
        atol: absolute tolerance on losses and weights.
        options: the adapter's options.

    Returns:
        kill step -> ``{"batches_compared": n}``.

    Raises:
        AssertionError: a run failed or was not killed, a batch was never trained after the
            resume, or a loss or a final weight differs by more than ``atol``.
    """
    opts = {"checkpoint_every_n_steps": 1, **(options or {})}
    ref = tmp_path / "uninterrupted"
    _require_ok(
        run_adapter_subprocess(adapter_ref, ref, max_steps=total_steps, options=opts), "uninterrupted run"
    )
    result = {}
    for k in kill_at_steps:
        run = tmp_path / f"killed-at-{k}"
        proc = run_adapter_subprocess(adapter_ref, run, max_steps=total_steps, kill_at_step=k, options=opts)
        assert proc.returncode == -signal.SIGKILL, (
            f"the run was not killed at step {k}: {proc.stderr[-3000:]}"
        )
        _require_ok(
            run_adapter_subprocess(adapter_ref, run, max_steps=total_steps, resume=True, options=opts),
            f"resume after a kill at step {k}",
        )
        result[k] = _compare_runs(ref, run, f"kill at step {k}", atol=atol)
    return result


def check_compile_independent(
    adapter: TrainerAdapter, tmp_path: Path, *, steps: int = 2, **options: Any
) -> dict:
    """(f) A checkpoint saved with ``compile=True`` resumes with ``compile=False``, and the reverse.

    The resumed module starts from exactly the weights in the ``last`` checkpoint (compared when
    training starts, after the restore and before any hook of the member changes them) and trains
    on to the end. The first run is stopped by a :class:`SimulatedCrash` right after the
    checkpoint of step ``steps`` (a run that finished may not be resumed, check (g)).

    Args:
        adapter: the member's :class:`TrainerAdapter`.
        tmp_path: a fresh folder for the runs.
        steps: the step whose checkpoint is resumed; the runs train to ``steps + 1``.
        **options: passed to the adapter.

    Returns:
        ``{"True->False": "ok", "False->True": "ok"}``.

    Raises:
        AssertionError: the first run was not stopped, left no ``last`` checkpoint, or the
            resumed weights or final step differ.
        Unsupported: the adapter cannot honour an option, outside pytest (under pytest the
            check is skipped).
    """
    out = {}
    for first, second in ((True, False), (False, True)):
        run = tmp_path / f"compile-{first}-then-{second}"
        try:
            _fit(
                adapter,
                run,
                max_steps=steps + 1,
                callbacks=[CrashAtStep(steps)],
                compile=first,
                checkpoint_every_n_steps=1,
                **options,
            )
        except SimulatedCrash:
            pass
        else:
            raise AssertionError(f"the run with compile={first} was not stopped at step {steps}")
        lasts = sorted(run.rglob("last*.ckpt"))
        assert lasts, f"no last checkpoint under {run}"
        saved = torch.load(lasts[0], map_location="cpu", weights_only=False)
        resumed = StateRecorder()
        trainer = _fit(
            adapter,
            run,
            max_steps=steps + 1,
            callbacks=[resumed],
            compile=second,
            resume=True,
            checkpoint_every_n_steps=1,
            **options,
        )
        assert resumed.at_start is not None
        assert saved["global_step"] == steps and resumed.at_start["global_step"] == steps
        assert_same_state(
            _clone(strip_compile_prefix(saved["state_dict"])),
            resumed.at_start["module"],
            f"resume compile={first} -> {second}",
        )
        assert trainer.global_step == steps + 1, f"the resumed run ended at step {trainer.global_step}"
        out[f"{first}->{second}"] = "ok"
    return out


def check_atomic_last_checkpoint(
    adapter_ref: tuple[str, str],
    tmp_path: Path,
    *,
    total_steps: int = 4,
    kill_in_write: int = 3,
    find_last: Callable[[Path], Path] | None = None,
    options: Mapping | None = None,
) -> dict:
    """(g) A kill halfway through writing a checkpoint leaves a readable ``last`` checkpoint.

    The run then resumes from it to the end, and resuming the finished run fails with a message
    that says it finished. All runs are subprocesses, with a ``last`` checkpoint every step.

    Args:
        adapter_ref: ``(file, factory name)`` of the member's adapter.
        tmp_path: a fresh folder for the run.
        total_steps: optimizer steps the run trains to.
        kill_in_write: the checkpoint write (1-based) the process dies in.
        find_last: ``run_dir -> path`` of the member's ``last`` checkpoint; default every
            ``last*.ckpt`` under the run.
        options: the adapter's options.

    Returns:
        ``last_checkpoints``: the checked files, relative to the run.

    Raises:
        AssertionError: the process was not killed in the write, a ``last`` checkpoint is
            missing or unreadable, the resume failed, or resuming the finished run did not say
            it finished.
    """
    opts = {"checkpoint_every_n_steps": 1, **(options or {})}
    run = tmp_path / "run"
    proc = run_adapter_subprocess(
        adapter_ref, run, max_steps=total_steps, kill_in_checkpoint_write=kill_in_write, options=opts
    )
    assert proc.returncode == -signal.SIGKILL, (
        f"the run was not killed during a checkpoint write: {proc.stderr[-3000:]}"
    )
    lasts = [find_last(run)] if find_last else sorted(run.rglob("last*.ckpt"))
    assert lasts, f"no last checkpoint under {run}"
    for path in lasts:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any failure to read is the bug being tested
            raise AssertionError(
                f"{path} is unreadable after a kill during a checkpoint write: {exc}"
            ) from None
        assert "state_dict" in ckpt
    _require_ok(
        run_adapter_subprocess(adapter_ref, run, max_steps=total_steps, resume=True, options=opts),
        "resume after a kill during a checkpoint write",
    )
    again = run_adapter_subprocess(adapter_ref, run, max_steps=total_steps, resume=True, options=opts)
    assert again.returncode != 0 and "finish" in (again.stdout + again.stderr).lower(), (
        f"resuming a finished run did not say it finished (exit {again.returncode}):\n{again.stderr[-2000:]}"
    )
    return {"last_checkpoints": [str(p.relative_to(run)) for p in lasts]}


# -- multi-device ---------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for ``torchrun --master-port``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_ddp_matches_single_process(
    adapter_ref: tuple[str, str],
    tmp_path: Path,
    *,
    steps: int = 3,
    nprocs: int = 2,
    atol: float = 1e-4,
    options: Mapping | None = None,
    timeout: float = 900,
    strategy: str = "ddp",
) -> dict:
    """Multi-process training on the CPU matches one process with the same global batch.

    Runs ``nprocs``-process DDP (or FSDP) on the CPU (gloo) under ``torchrun``, and one process:
    ranks end with identical weights (FSDP: the gathered full state dict), only rank 0 writes
    files under the run directory, and the rank-averaged loss of each step matches the single
    process's to ``atol``. The adapter receives ``devices`` and ``strategy`` options and must
    keep the global batch (per-device batch = global batch / devices).

    Args:
        adapter_ref: ``(file, factory name)`` of the member's adapter.
        tmp_path: a fresh folder for the runs.
        steps: optimizer steps both runs train to.
        nprocs: processes of the distributed run.
        atol: absolute tolerance on the mean loss per batch.
        options: the adapter's other options.
        timeout: seconds allowed for each run.
        strategy: ``"ddp"`` or ``"fsdp"``.

    Returns:
        ``max_loss_diff``, ``max_weight_diff_vs_single`` (informative, not checked) and
        ``rank0_files`` (files rank 0 wrote under the run).

    Raises:
        AssertionError: a run failed, ranks' weights differ, another rank wrote files, or a
            loss differs by more than ``atol``.
    """
    opts = dict(options or {})
    single = tmp_path / "single"
    _require_ok(
        run_adapter_subprocess(
            adapter_ref, single, max_steps=steps, options={**opts, "devices": 1}, timeout=timeout
        ),
        "single-process run",
    )
    ddp = tmp_path / "ddp"
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        f"--nproc-per-node={nprocs}",
        f"--master-port={free_port()}",
        "--master-addr=127.0.0.1",
    ]
    proc = run_adapter_subprocess(
        adapter_ref,
        ddp,
        max_steps=steps,
        launcher=launcher,
        options={**opts, "devices": nprocs, "strategy": strategy},
        timeout=timeout,
    )
    _require_ok(proc, f"{nprocs}-process {strategy} run")
    states = [read_final_state(ddp, r) for r in range(nprocs)]
    for r in range(1, nprocs):
        diffs = state_differences(states[0], states[r])
        assert not diffs, f"rank {r} ended with different weights:\n  " + "\n  ".join(diffs[:10])
    writes = {}
    for r in range(nprocs):
        log = tmp_path / f"kit-writes-ddp-rank{r}.txt"
        writes[r] = log.read_text().split() if log.exists() else []
    for r in range(1, nprocs):
        assert not writes[r], f"rank {r} wrote files: {writes[r][:10]}"
    ref = read_losses(single)
    per_rank = [read_losses(ddp, r) for r in range(nprocs)]
    worst = 0.0
    for key, value in ref.items():
        mean = sum(p[key] for p in per_rank) / nprocs
        worst = max(worst, abs(mean - value))
    assert worst <= atol, f"{strategy} loss differs from the single process by up to {worst:.3e} (> {atol})"
    weight_gap = max(
        float((a.float() - b.float()).abs().max())
        for a, b in zip(states[0].values(), read_final_state(single).values())
        if a.is_floating_point()
    )
    return {"max_loss_diff": worst, "max_weight_diff_vs_single": weight_gap, "rank0_files": len(writes[0])}
