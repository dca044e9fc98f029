"""Lightning pieces of the run-folder policy: atomic checkpoints, stop on a signal, stop on NaN."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

L = pytest.importorskip("lightning")

from lm_shared.runs import NonFiniteError, StopSignal  # noqa: E402
from lm_shared.runs_lightning import AtomicCheckpointIO, NonFiniteGuard, StopOnSignal  # noqa: E402


class Tiny(L.LightningModule):
    def __init__(self, lr: float = 0.05, signal_at_step: int | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.lr = lr
        self.signal_at_step = signal_at_step

    def training_step(self, batch, batch_idx):
        if self.signal_at_step is not None and self.global_step == self.signal_at_step:
            os.kill(os.getpid(), signal.SIGINT)
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _loader() -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, generator=g)
    y = x.sum(1, keepdim=True)
    # One batch per epoch: every step ends an epoch, so resuming is exact without a stateful sampler.
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


def _trainer(tmp_path: Path, max_steps: int = -1, callbacks=(), **options) -> L.Trainer:
    """A quiet CPU trainer with atomic checkpoints; ``options`` go to ``L.Trainer``."""
    settings = dict(
        max_steps=max_steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        plugins=[AtomicCheckpointIO()],
        accelerator="cpu",
    )
    return L.Trainer(**{**settings, **options}, callbacks=list(callbacks))


def test_sigint_saves_a_resumable_checkpoint_and_resume_reaches_the_same_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = Tiny()
    _trainer(tmp_path / "ref", 8).fit(reference, _loader())

    torch.manual_seed(0)
    model = Tiny(signal_at_step=3)
    ckpt = tmp_path / "run" / "last.ckpt"
    with StopSignal(quiet=True) as stop:
        callback = StopOnSignal(stop, ckpt)
        trainer = _trainer(tmp_path / "run", 8, [callback])
        trainer.fit(model, _loader())
    assert stop.requested and callback.saved_step == trainer.global_step == 4
    assert ckpt.exists() and not [p for p in ckpt.parent.iterdir() if ".tmp" in p.name]

    torch.manual_seed(1)  # resuming must not depend on the fresh model's initialisation
    resumed = Tiny()
    _trainer(tmp_path / "run", 8).fit(resumed, _loader(), ckpt_path=ckpt)
    for a, b in zip(reference.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b)


def test_last_checkpoint_stays_the_newest_across_stops_and_resumes(tmp_path: Path) -> None:
    """A Ctrl-C, a resume, another Ctrl-C: ``last.ckpt`` is always the newest state and the only
    file. Lightning's version counter had sent every save after the first resume to a new
    ``last-vN.ckpt`` while ``last.ckpt``, the one a resume reads, stayed at the first stop."""
    from lm_shared.resumable import LastCheckpoint

    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, generator=g)
    data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    last = tmp_path / "last.ckpt"
    for signal_at_step, stops_at in ((1, 2), (6, 7), (None, 12)):  # 4 batches an epoch, mid-epoch stops
        with StopSignal(quiet=True) as stop:
            trainer = _trainer(
                tmp_path,
                callbacks=[LastCheckpoint(tmp_path), StopOnSignal(stop, last)],
                max_steps=12,
                enable_checkpointing=True,
            )
            loader = torch.utils.data.DataLoader(data, batch_size=2)
            trainer.fit(
                Tiny(signal_at_step=signal_at_step), loader, ckpt_path=last if last.exists() else None
            )
        assert trainer.global_step == stops_at and stop.requested == (signal_at_step is not None)
        assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".ckpt") == ["last.ckpt"]
        assert torch.load(last, weights_only=False)["global_step"] == stops_at


def test_a_stop_in_the_last_epoch_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    """A run bounded by epochs, stopped by a signal in its last epoch: Lightning's end-of-fit save
    had overwritten ``last.ckpt`` with that epoch counted done, so the resume trained nothing."""
    from lm_shared.resumable import (
        LastCheckpoint,
        ResumableBatchSampler,
        ResumableDataLoader,
        lightning_progress,
    )

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    last = tmp_path / "run" / "last.ckpt"

    def fit(folder: Path, signal_at_step: int | None = None, resume: bool = False) -> tuple[Tiny, L.Trainer]:
        torch.manual_seed(0)
        model = Tiny(signal_at_step=signal_at_step)
        batches = torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(data), 2, False)
        loader = ResumableDataLoader(
            data, batch_sampler=ResumableBatchSampler(batches), progress=lightning_progress(model)
        )
        with StopSignal(quiet=True) as stop:
            trainer = _trainer(  # max_epochs=2: 8 batches an epoch, no max_steps
                folder,
                callbacks=[LastCheckpoint(folder), StopOnSignal(stop, last)],
                max_epochs=2,
                enable_checkpointing=True,
            )
            trainer.fit(model, loader, ckpt_path=last if resume else None)
        return model, trainer

    reference, _ = fit(tmp_path / "ref")
    _, stopped = fit(tmp_path / "run", signal_at_step=10)
    assert stopped.global_step == 11
    assert torch.load(last, weights_only=False)["global_step"] == 11
    resumed, trainer = fit(tmp_path / "run", resume=True)
    assert trainer.global_step == 16
    for a, b in zip(reference.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b)


def test_a_signal_before_the_first_validation_keeps_its_mid_epoch_checkpoint(tmp_path: Path) -> None:
    """``ModelCheckpoint(save_last=True)`` (infinito's best and last) makes a final "last" save
    when it made none before; after a Ctrl-C ahead of the first validation that save wrote the
    epoch as done over the signal's mid-epoch file. ``SignalSafeCheckpoint`` leaves it."""
    from lm_shared.resumable import SignalSafeCheckpoint

    class Validated(Tiny):
        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=2
    )
    last = tmp_path / "last.ckpt"
    checkpoints = SignalSafeCheckpoint(
        dirpath=tmp_path, filename="best", monitor="val_loss", save_last=True, enable_version_counter=False
    )
    with StopSignal(quiet=True) as stop:
        trainer = _trainer(
            tmp_path,
            40,
            [checkpoints, StopOnSignal(stop, last)],
            val_check_interval=20,
            check_val_every_n_epoch=None,
            num_sanity_val_steps=0,
            enable_checkpointing=True,
        )
        trainer.fit(Validated(signal_at_step=10), loader, loader)
    saved = torch.load(last, weights_only=False)
    progress = saved["loops"]["fit_loop"]["epoch_progress"]["current"]
    assert saved["global_step"] == 11 and (progress["started"], progress["completed"]) == (2, 1)


class BestAt20(Tiny):
    """Validation loss best at step 20, worse at 40 and after."""

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", float(abs(self.global_step - 20)))


def _fit_beside_a_monitored_best(tmp_path: Path, model: L.LightningModule, max_steps: int) -> None:
    """Fit ``model`` for ``max_steps`` under a ``SignalSafeCheckpoint`` keeping the best
    validation loss (validated every 20 steps) and "last"."""
    from lm_shared.resumable import SignalSafeCheckpoint

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=2
    )
    checkpoints = SignalSafeCheckpoint(
        dirpath=tmp_path, filename="best", monitor="val_loss", save_last=True, enable_version_counter=False
    )
    trainer = _trainer(
        tmp_path,
        max_steps,
        [checkpoints],
        val_check_interval=20,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        enable_checkpointing=True,
    )
    trainer.fit(model, loader, loader)


def test_last_holds_the_last_step_beside_a_monitored_best(tmp_path: Path) -> None:
    """With save_last beside a monitored top-k, Lightning's "last" stayed at the best step (its
    end-of-fit save is made only when none was before): infinito's ``--checkpoint last`` gave
    step 20's weights after 50 steps."""
    _fit_beside_a_monitored_best(tmp_path, BestAt20(), 50)
    assert torch.load(tmp_path / "best.ckpt", weights_only=False)["global_step"] == 20
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"] == 50


def test_last_follows_every_validation_beside_a_monitored_best(tmp_path: Path) -> None:
    """Lightning writes "last" beside a top-k save only: after a crash at step 45 "last" was step
    20 (the best), and a resume replayed 20 steps. Now it is the newest validation's, step 40."""

    class CrashAt45(BestAt20):
        def training_step(self, batch, batch_idx):
            if self.global_step == 45:
                raise RuntimeError("crash")
            return super().training_step(batch, batch_idx)

    with pytest.raises(RuntimeError, match="crash"):
        _fit_beside_a_monitored_best(tmp_path, CrashAt45(), 60)
    assert torch.load(tmp_path / "best.ckpt", weights_only=False)["global_step"] == 20
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"] == 40


def test_last_checkpoint_is_written_at_each_epoch_end(tmp_path: Path) -> None:
    """A crash in the second epoch resumes from the first epoch's end to the uninterrupted weights.
    ``LastCheckpoint`` had never written an epoch end (Lightning writes "last" only beside a top-k
    save), so a run without ``--checkpoint-every`` had no ``last.ckpt`` after a crash."""
    from lm_shared.resumable import LastCheckpoint

    class CrashAt12(Tiny):
        def training_step(self, batch, batch_idx):
            if self.global_step == 12:
                raise RuntimeError("simulated crash")
            return super().training_step(batch, batch_idx)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=2
    )

    def fit(folder: Path, model: Tiny, resume: bool = False) -> L.Trainer:
        trainer = _trainer(  # max_epochs=3: 8 batches an epoch
            folder, callbacks=[LastCheckpoint(folder)], max_epochs=3, enable_checkpointing=True
        )
        trainer.fit(model, loader, ckpt_path=folder / "last.ckpt" if resume else None)
        return trainer

    torch.manual_seed(0)
    reference = Tiny()
    fit(tmp_path / "ref", reference)
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(tmp_path / "run", CrashAt12())
    assert torch.load(tmp_path / "run" / "last.ckpt", weights_only=False)["global_step"] == 8
    torch.manual_seed(1)
    resumed = Tiny()
    assert fit(tmp_path / "run", resumed, resume=True).global_step == 24
    for a, b in zip(reference.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b)


def test_a_signal_stop_does_not_say_max_epochs_was_reached(tmp_path: Path, caplog) -> None:
    """Lightning ended a Ctrl-C'd fit with "`Trainer.fit` stopped: `max_epochs=2` reached."."""
    import logging

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=2
    )
    with (
        caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"),
        StopSignal(quiet=True) as stop,
    ):
        _trainer(tmp_path, callbacks=[StopOnSignal(stop, tmp_path / "last.ckpt")], max_epochs=2).fit(
            Tiny(signal_at_step=10), loader
        )
    assert stop.requested and not any("Trainer.fit` stopped" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        _trainer(tmp_path / "plain", max_epochs=1).fit(Tiny(), loader)  # the filter is gone after the fit
    assert any("`max_epochs=1` reached" in r.getMessage() for r in caplog.records)


def test_a_signal_stops_without_a_validation_pass(tmp_path: Path) -> None:
    """Lightning validates before an early stop; after Ctrl-C that pass only delayed the exit (and
    could write a top-k checkpoint). Validation here is due only at an epoch's end (step 8)."""

    class Validated(Tiny):
        validations = 0

        def validation_step(self, batch, batch_idx):
            Validated.validations += 1

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=2
    )
    with StopSignal(quiet=True) as stop:
        callback = StopOnSignal(stop, tmp_path / "last.ckpt")
        trainer = _trainer(
            tmp_path, callbacks=[callback], max_steps=16, enable_checkpointing=False, num_sanity_val_steps=0
        )
        trainer.fit(Validated(signal_at_step=2), loader, loader)
    assert callback.saved_step == trainer.global_step == 3
    assert Validated.validations == 0


def test_nan_learning_rate_stops_training_before_a_checkpoint_is_saved(tmp_path: Path) -> None:
    model = Tiny(lr=float("nan"))
    guard = NonFiniteGuard(patience=3, every=50)
    trainer = _trainer(tmp_path, 20, [guard])
    with pytest.raises(NonFiniteError, match="'layer.weight'"):
        trainer.fit(model, _loader())
    assert trainer.global_step <= 2
    with pytest.raises(NonFiniteError):
        trainer.save_checkpoint(tmp_path / "nan.ckpt")
    assert not (tmp_path / "nan.ckpt").exists()


def test_lightning_tips_are_dropped_and_other_info_kept(caplog):
    # Every CPU training printed "💡 Tip: ... try installing litlogger (a registry link) ..." at
    # Trainer start (issue 19's user trials); importing runs_lightning drops those lines only.
    import logging

    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing [litlogger](https://example)")
        rank_zero_info("GPU available: False, used: False")
    messages = [r.getMessage() for r in caplog.records]
    assert not any("Tip:" in m for m in messages)
    assert any("GPU available" in m for m in messages)


def test_lightnings_leafspec_deprecation_is_dropped_and_other_warnings_kept(recwarn) -> None:
    # Every fit printed ".../lightning/pytorch/utilities/_pytree.py:21: `isinstance(treespec,
    # LeafSpec)` is deprecated ..." (Lightning's own code, nothing a user can change).
    import warnings

    from lightning.pytorch.utilities._pytree import _tree_flatten

    from lm_shared.runs_lightning import drop_lightning_tips

    drop_lightning_tips()  # as importing the module did; pytest resets the filters per test
    _tree_flatten({"loss": 1.0})
    warnings.warn("a warning of our own", UserWarning, stacklevel=1)
    assert [str(w.message) for w in recwarn] == ["a warning of our own"]


@pytest.mark.parametrize(("max_epochs", "expected"), [(-1, "Epoch 2"), (5, "Epoch 2/4")])
def test_steps_progress_bar_gives_no_negative_epoch_total(
    tmp_path: Path, max_epochs: int, expected: str
) -> None:
    pytest.importorskip("rich")
    from lm_shared.runs_lightning import StepsProgressBar

    bar = StepsProgressBar()
    trainer = _trainer(
        tmp_path, callbacks=[bar], max_steps=3, max_epochs=max_epochs, enable_progress_bar=True
    )
    trainer.fit(Tiny(), _loader())
    assert bar._get_train_description(2).strip() == expected
