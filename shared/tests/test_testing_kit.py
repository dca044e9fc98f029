"""The fault-injection kit run against a minimal reference trainer (also an adapter example)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

L = pytest.importorskip("lightning")

from lm_shared import testing as kit  # noqa: E402
from lm_shared.resumable import (  # noqa: E402
    LastCheckpoint,
    ResumableBatchSampler,
    ResumableDataLoader,
    lightning_progress,
)
from lm_shared.stability import HealthConfig  # noqa: E402
from lm_shared.stability_lightning import GradientHealthCallback, optimizer_updates  # noqa: E402

ADAPTER = (__file__, "make_adapter")


class TinyModule(L.LightningModule):
    def __init__(self, scheduler: str = "lambda", ema_decay: float = 0.0, steps: int = 20) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        self.scheduler, self.steps = scheduler, steps
        self.ema = None
        if ema_decay:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(ema_decay))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(batch[0]), batch[1]))

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure):
        before = optimizer_updates(optimizer)
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.ema is not None and optimizer_updates(optimizer) != before:
            self.ema.update_parameters(self.net)

    def _sf(self):
        return list(self.trainer.optimizers) if self.scheduler == "schedulefree" else []

    def on_train_epoch_start(self):
        for o in self._sf():
            o.train()

    def configure_optimizers(self):
        if self.scheduler == "schedulefree":
            import schedulefree

            return schedulefree.AdamWScheduleFree(self.parameters(), lr=0.01, warmup_steps=3)
        opt = torch.optim.AdamW(self.parameters(), lr=0.01)
        if self.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}
        if self.scheduler == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.steps)
        else:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 3))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class TinyAdapter:
    """Reference adapter: 32 examples, batches of 4 (8 steps an epoch)."""

    def fit(self, run_dir, *, max_steps, callbacks=(), resume=False, **options):
        from lm_shared.runs_lightning import AtomicCheckpointIO

        if options.pop("compile", False):
            raise kit.Unsupported("the reference trainer has no --compile")
        run_dir = Path(run_dir)
        ckpt_dir = run_dir / "checkpoints"
        if resume and (run_dir / "done").exists():
            raise RuntimeError(f"{run_dir}: this run already finished")
        L.seed_everything(0, verbose=False)
        module = TinyModule(options.pop("scheduler", "lambda"), options.pop("ema_decay", 0.0), max_steps)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(32, 4, generator=g)
        data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
        devices = options.pop("devices", 1)
        per_device = 4 // devices
        batches = torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(data), 4, drop_last=False)
        if devices > 1:  # each rank takes its slice of the same global batch
            rank = int(os.environ.get("RANK", 0))
            batches = [b[rank * per_device : (rank + 1) * per_device] for b in batches]
        loader = ResumableDataLoader(
            data, batch_sampler=ResumableBatchSampler(batches), progress=lightning_progress(module)
        )
        val_loader = torch.utils.data.DataLoader(data, batch_size=8)
        every = options.pop("checkpoint_every_n_steps", None)
        trainer = L.Trainer(
            max_steps=max_steps,
            accelerator="cpu",
            devices=devices,
            strategy=options.pop("strategy", "auto"),
            use_distributed_sampler=False,
            callbacks=[
                *callbacks,
                GradientHealthCallback(HealthConfig(clip_norm=100.0)),
                LastCheckpoint(ckpt_dir, every_n_train_steps=every),
            ],
            plugins=[AtomicCheckpointIO(), *options.pop("plugins", [])],
            accumulate_grad_batches=options.pop("accumulate_grad_batches", 1),
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=run_dir,
        )
        assert not options, options
        last = ckpt_dir / "last.ckpt"
        trainer.fit(module, loader, val_loader, ckpt_path=last if resume else None)
        if trainer.global_rank == 0:
            (run_dir / "done").write_text("1")
        return trainer


def make_adapter():
    return TinyAdapter()


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_a_nonfinite_gradient_skipped_exactly(tmp_path, kind):
    kit.check_nonfinite_skip(make_adapter(), tmp_path, kind=kind)


def test_a_schedulefree_counters_untouched(tmp_path):
    kit.check_nonfinite_skip(make_adapter(), tmp_path, scheduler="schedulefree")


def test_b_overflowing_norm_under_fp16(tmp_path):
    out = kit.check_overflow_skip(make_adapter(), tmp_path)
    assert out["scale"] > 0


@pytest.mark.parametrize("scheduler", ["lambda", "cosine", "plateau", "schedulefree"])
def test_c_lr_repair_lasts(tmp_path, scheduler):
    kit.check_lr_repair_persists(make_adapter(), tmp_path, scheduler=scheduler)


def test_d_ema_and_scheduler_once_per_optimizer_step(tmp_path):
    out = kit.check_once_per_optimizer_step(make_adapter(), tmp_path)
    assert out == {"counters": {"ema.n_averaged": 4}, "n_averaged": 4, "micro_batches": 10}


@pytest.mark.slow  # several training processes (kill -9 / resume, torchrun)
def test_e_kill_and_resume_mid_and_end_of_epoch(tmp_path):
    kit.check_kill_resume(ADAPTER, tmp_path, kill_at_steps=[3, 8], total_steps=11)


@pytest.mark.slow  # several training processes (kill -9 / resume, torchrun)
def test_g_kill_during_checkpoint_write(tmp_path):
    kit.check_atomic_last_checkpoint(ADAPTER, tmp_path)


@pytest.mark.slow  # several training processes (kill -9 / resume, torchrun)
def test_ddp_two_processes_match_one(tmp_path):
    out = kit.check_ddp_matches_single_process(ADAPTER, tmp_path, steps=3)
    assert out["max_weight_diff_vs_single"] < 1e-5


def test_state_differences_names_the_key():
    a = {"module": {"w": torch.zeros(2)}, "optimizers": [{"param_groups": [{"k": 1}]}]}
    b = {"module": {"w": torch.ones(2)}, "optimizers": [{"param_groups": [{"k": 2}]}]}
    diffs = kit.state_differences(a, b)
    assert any("state.module.w" in d for d in diffs) and any("param_groups[0].k: 1 vs 2" in d for d in diffs)
    assert kit.state_differences({"x": math.nan}, {"x": math.nan}) == []
    # ReduceLROnPlateau starts with best = mode_worse = inf: equal infinities are no difference
    assert kit.state_differences({"best": math.inf}, {"best": math.inf}) == []
    assert kit.state_differences({"best": math.inf}, {"best": -math.inf}) != []
    assert kit.state_differences({"best": math.inf}, {"best": 1e30}, atol=1e-6) != []


def test_kit_catches_a_step_that_is_not_skipped(tmp_path):
    class Leaky(TinyAdapter):
        def fit(self, run_dir, *, callbacks=(), **kw):
            # no gradient-health callback: the NaN step is applied and the check must fail
            import lm_shared.stability_lightning as sl

            real = sl.GradientHealthCallback.on_before_optimizer_step
            sl.GradientHealthCallback.on_before_optimizer_step = lambda *a, **k: None
            try:
                return super().fit(run_dir, callbacks=callbacks, **kw)
            finally:
                sl.GradientHealthCallback.on_before_optimizer_step = real

    with pytest.raises(AssertionError, match="training state changed"):
        kit.check_nonfinite_skip(Leaky(), tmp_path)
