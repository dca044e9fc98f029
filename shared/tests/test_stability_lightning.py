from __future__ import annotations

import pytest
import torch

L = pytest.importorskip("lightning")

from lm_shared.stability import HealthConfig  # noqa: E402
from lm_shared.stability_lightning import GradientHealthCallback  # noqa: E402


class Tiny(L.LightningModule):
    def __init__(self, poison_steps: set[int]):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.poison_steps = poison_steps
        self.seen_weights = []

    def training_step(self, batch, batch_idx):
        self.seen_weights.append(self.layer.weight.detach().clone())
        loss = self.layer(batch[0]).pow(2).mean()
        if self.global_step in self.poison_steps:
            loss = loss * float("nan")
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(16, 4))
        return torch.utils.data.DataLoader(data, batch_size=2)


def trainer(cb, tmp_path, steps):
    return L.Trainer(
        max_steps=steps,
        callbacks=[cb],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )


def test_callback_skips_nonfinite_steps(tmp_path):
    torch.manual_seed(0)
    model = Tiny({1})
    cb = GradientHealthCallback()
    trainer(cb, tmp_path, 3).fit(model)
    actions = [h["repair_action"] for h in cb.history]
    assert actions[1] == "skip" and cb.history[1]["has_nan"]
    # the poisoned step left the weights unchanged
    assert torch.equal(model.seen_weights[1], model.seen_weights[2])
    assert not torch.equal(model.seen_weights[0], model.seen_weights[1])


def test_callback_checkpoints_and_stops_after_repeated_failures(tmp_path):
    model = Tiny(set(range(100)))
    ckpt = tmp_path / "stopped.ckpt"
    cb = GradientHealthCallback(HealthConfig(max_retries=2), checkpoint_path=ckpt)
    tr = trainer(cb, tmp_path, 50)
    tr.fit(model)
    assert ckpt.exists() and tr.should_stop
    assert [h["repair_action"] for h in cb.history] == ["skip", "lr_halved", "lr_halved", "stop"]
    assert "non-finite" in cb.stop_reason
