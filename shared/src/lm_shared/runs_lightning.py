"""The run-folder policy's Lightning pieces: atomic checkpoints, stop on a signal, stop on NaN.

- :class:`AtomicCheckpointIO`: every Lightning checkpoint is written to a temporary name, fsynced
  and renamed, so a kill during a write never leaves an unreadable ``last.ckpt``.
- :class:`StopOnSignal`: with :class:`lm_shared.runs.StopSignal`, the first SIGINT/SIGTERM saves a
  resumable checkpoint after the current optimizer step and stops ``fit``; the caller then raises
  ``stop.interrupted(...)`` (exit 130).
- :class:`NonFiniteGuard`: a non-finite parameter, or a loss that stays non-finite for
  ``patience`` steps (single bad steps are the gradient-health callback's to skip), raises
  :class:`lm_shared.runs.NonFiniteError`; parameters are checked before every checkpoint, so no
  non-finite model is written.
- :class:`StepsProgressBar`: Lightning's rich progress bar for a run bounded by steps
  (``max_epochs=-1``), which Lightning 2.6 labels "Epoch 0/-2"; it reads "Epoch 0".
- :func:`drop_lightning_tips`: Lightning's advertising line ("💡 Tip: ... try installing
  litlogger ...") and its ``LeafSpec`` deprecation warning are dropped from every trainer's output;
  importing this module applies it, since every Lightning trainer of the workspace imports it.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lm_shared.runs import StopSignal, atomic_path, check_finite_parameters

_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


class _NoFitStoppedLine(logging.Filter):
    # After a signal's stop Lightning still says "`Trainer.fit` stopped: `max_epochs=2` reached."
    def filter(self, record: logging.LogRecord) -> bool:
        return "`Trainer.fit` stopped:" not in str(record.msg)


def require_gpus_for_fsdp(strategy: str, cuda_available: bool | None = None) -> None:
    """Refuse ``--strategy fsdp`` without CUDA before any work starts.

    Lightning's ``FSDPStrategy`` runs on GPUs only (on the CPU it raises from inside the Trainer,
    after data and tokenizer were built); DDP covers the CPU.

    Args:
        strategy: the ``--strategy`` value.
        cuda_available: whether CUDA is usable; default ``torch.cuda.is_available()``.

    Raises:
        UserError: ``strategy`` is ``"fsdp"`` and no CUDA device is visible.
    """
    from lm_shared.errors import UserError

    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if strategy == "fsdp" and not cuda_available:
        raise UserError(
            "--strategy fsdp needs CUDA GPUs (Lightning's FSDP runs on GPUs only); on the CPU use --strategy ddp"
        )


def drop_lightning_tips() -> None:
    """Drop Lightning's "💡 Tip: ..." advertisements and a deprecation warning no user can act on.

    The tips link to a cloud logger; the warning is the one Lightning 2.6's own ``_pytree.py``
    triggers in torch at every fit (``isinstance(treespec, LeafSpec)``). Only those lines: "GPU
    available", other warnings and errors stay. Idempotent.
    """
    for name in _RANK_ZERO_LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, _NoTips) for f in log.filters):
            log.addFilter(_NoTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


drop_lightning_tips()


class StepsProgressBar(RichProgressBar):
    """Lightning's rich progress bar, without an epoch total when the trainer has none.

    A run bounded by ``max_steps`` has ``max_epochs=-1``.
    Lightning 2.6.6 writes ``max_epochs - 1`` after the epoch whatever its sign ("Epoch 0/-2";
    Lightning-AI/pytorch-lightning#21925, fixed upstream by #21924 after the last release this
    workspace resolves); drop this class once a release with the fix is the lowest allowed.
    """

    def _get_train_description(self, current_epoch: int) -> str:
        description = super()._get_train_description(current_epoch)
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs < 0:
            description = description.replace(
                f"Epoch {current_epoch}/{max_epochs - 1}", f"Epoch {current_epoch}"
            )
        return description


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic saves: a kill mid-write leaves the old file intact.

    Pass it as ``Trainer(plugins=[AtomicCheckpointIO()])``; loading is ``TorchCheckpointIO``'s.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        """``torch.save`` the checkpoint to a temporary file beside ``path``, fsync, rename onto it.

        Args:
            checkpoint: the state Lightning collected.
            path: the target file; its folder is created.
            storage_options: not supported (must be ``None``).

        Raises:
            TypeError: ``storage_options`` was given.
        """
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        with atomic_path(Path(path)) as tmp:
            torch.save(checkpoint, tmp)


def _optimizer_stepped(trainer: L.Trainer, batch_idx: int) -> bool:
    # True when the batch just finished ended an accumulation window (an optimizer step ran).
    accumulate = max(1, trainer.accumulate_grad_batches)
    n_batches = trainer.num_training_batches
    last = isinstance(n_batches, int) and batch_idx + 1 == n_batches
    return (batch_idx + 1) % accumulate == 0 or last


class StopOnSignal(L.Callback):
    """Save ``checkpoint_path`` and stop ``fit`` at the first step boundary after a stop request.

    Under several processes the request is agreed at each step boundary (a sum over the ranks), so
    a signal that reached one rank stops them all at the same step. No validation pass follows
    (Lightning otherwise validates before an early stop), and no "`Trainer.fit` stopped:
    `max_epochs=N` reached" line (see :meth:`stopped`).

    Args:
        stop: the :class:`~lm_shared.runs.StopSignal` the training runs under.
        checkpoint_path: where the resumable checkpoint goes (usually the run's ``last.ckpt``);
            :attr:`saved_step` records the ``global_step`` it holds.
    """

    def __init__(self, stop: StopSignal, checkpoint_path: str | Path) -> None:
        self.stop = stop
        self.checkpoint_path = Path(checkpoint_path)
        self.saved_step: int | None = None
        self._quiet = _NoFitStoppedLine()

    def stopped(self, trainer: L.Trainer) -> None:
        """Stop ``fit`` after the signal's checkpoint, quietly.

        No validation pass first (Lightning validates before an early stop), and no "`Trainer.fit`
        stopped: `max_epochs=N` reached" line, which would name the wrong cause (until
        :meth:`teardown`).
        """
        trainer.should_stop = True
        trainer.limit_val_batches = 0
        for name in _RANK_ZERO_LOGGERS:
            logging.getLogger(name).addFilter(self._quiet)

    def _requested(self, trainer: L.Trainer) -> bool:
        # every rank reaches this at the same step boundaries, so the collective is matched
        if trainer.world_size == 1:
            return self.stop.requested
        flag = torch.tensor(float(self.stop.requested), device=trainer.strategy.root_device)
        return float(trainer.strategy.reduce(flag, reduce_op="sum")) > 0

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Let Lightning's "`Trainer.fit` stopped" lines through again."""
        for name in _RANK_ZERO_LOGGERS:
            logging.getLogger(name).removeFilter(self._quiet)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        """After an optimizer step, save and stop once any rank was asked to stop."""
        if self.saved_step is None and _optimizer_stepped(trainer, batch_idx) and self._requested(trainer):
            # a full, resumable checkpoint; said so that Lightning does not log its default
            trainer.save_checkpoint(self.checkpoint_path, weights_only=False)
            self.saved_step = trainer.global_step
            self.stopped(trainer)


class NonFiniteGuard(L.Callback):
    """Stop training with :class:`~lm_shared.runs.NonFiniteError` when it has diverged.

    Checks the parameters whenever the loss is non-finite, every ``every`` steps and before each
    checkpoint save; raises once a parameter is non-finite or the loss was non-finite for
    ``patience`` consecutive batches.

    Args:
        patience: consecutive batches with a NaN/Inf loss that end training (single bad steps
            are the gradient-health callback's to skip).
        every: check the parameters every this many optimizer steps even when the loss is finite.
        hint: the advice appended to the error message.

    Raises:
        ValueError: ``patience`` or ``every`` is below 1.
    """

    def __init__(
        self, patience: int = 3, every: int = 50, hint: str = "lower --lr or check the data"
    ) -> None:
        if patience < 1 or every < 1:
            raise ValueError("patience and every must be >= 1")
        self.patience = patience
        self.every = every
        self.hint = hint
        self.bad_losses = 0

    def _check_parameters(self, pl_module: L.LightningModule) -> None:
        check_finite_parameters(pl_module.named_parameters(), what=type(pl_module).__name__)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        """Count a non-finite batch loss and check the parameters when it is one (or every ``every`` steps).

        Raises:
            lm_shared.runs.NonFiniteError: a parameter holds NaN/Inf, or the loss was NaN/Inf
                for ``patience`` batches in a row.
        """
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        finite = loss is None or math.isfinite(float(loss.detach() if hasattr(loss, "detach") else loss))
        self.bad_losses = 0 if finite else self.bad_losses + 1
        if not finite or trainer.global_step % self.every == 0:
            self._check_parameters(pl_module)
        if self.bad_losses >= self.patience:
            from lm_shared.runs import NonFiniteError

            raise NonFiniteError(
                f"training diverged: the loss was NaN/Inf for {self.bad_losses} steps in a row "
                f"(step {trainer.global_step}; {self.hint})"
            )

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        """Refuse to write a checkpoint of a non-finite model (:class:`~lm_shared.runs.NonFiniteError`)."""
        self._check_parameters(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Check the final parameters, before the caller saves the model (raises on NaN/Inf)."""
        self._check_parameters(pl_module)
