"""The gradient-health policy of :mod:`lm_shared.stability` as a Lightning callback.

Lightning calls ``on_before_optimizer_step`` after backward (and after the AMP scaler's
``unscale_``) and before ``optimizer.step()``. A skipped step is implemented by dropping every
gradient (``grad = None``): PyTorch optimizers leave parameters without a gradient, and their
state, untouched. Lightning cannot re-run a batch, so "retry with a halved LR" becomes "the next
batches run with a halved LR"; after ``max_retries`` halvings the callback saves a checkpoint and
asks the trainer to stop.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lm_shared.stability import HealthConfig, grad_health, scale_lr


class GradientHealthCallback(L.Callback):
    """Logs grad_norm, has_nan, has_inf, n_zero and repair_action every optimizer step."""

    def __init__(
        self,
        config: HealthConfig | None = None,
        *,
        checkpoint_path: str | os.PathLike[str] | None = None,
        monitor: str = "val_loss",
    ) -> None:
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

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        params = [p for p in pl_module.parameters() if p.requires_grad]
        health = grad_health(params)
        action = "none"
        if health.finite and health.grad_norm > self.config.clip_norm:
            action = "clip"
            post = torch.nn.utils.clip_grad_norm_(params, self.config.clip_norm)
            if not bool(torch.isfinite(post)):
                action = "skip"
        elif not health.finite:
            action = "skip"
        if action == "skip":
            for p in params:
                p.grad = None
            if not self._uses_scaler(trainer):
                self.consecutive_nonfinite += 1
                if self.consecutive_nonfinite > self.config.max_retries + 1:
                    action = "stop"
                    self.stop_reason = (
                        f"gradients non-finite on {self.consecutive_nonfinite} consecutive steps after "
                        f"{self.config.max_retries} LR halvings; checkpoint saved, training stopped"
                    )
                    if self.checkpoint_path is not None:
                        trainer.save_checkpoint(self.checkpoint_path)
                    trainer.should_stop = True
                elif self.consecutive_nonfinite > 1:
                    scale_lr(optimizer, self.config.lr_factor_on_retry)
                    action = "lr_halved"
        else:
            self.consecutive_nonfinite = 0
        vanishing = health.finite and health.grad_norm < self.config.vanish_threshold
        self.vanishing_since_validation = self.vanishing_since_validation and vanishing
        self.last_action = action
        entry = {
            "step": trainer.global_step,
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
