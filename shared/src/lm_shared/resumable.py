"""Mid-epoch resumable data loading for Lightning.

Lightning restores a mid-epoch checkpoint's batch index but, with a plain ``DataLoader``, restarts
the epoch's data from its first batch: the first batches are trained twice and the epoch's last
ones never (with a curriculum, the hardest examples). Lightning saves ``state_dict()`` of any
training DataLoader that has one and calls ``load_state_dict()`` on resume (its "stateful
dataloader" support); :class:`ResumableDataLoader` uses that.

The position is taken from Lightning's own loop (epoch, batches processed in it), never from
counting what the sampler yielded, which runs ahead of training by the prefetched batches. The
batch sampler must be deterministic given ``set_epoch(epoch)`` (seeded shuffling), which
:class:`ResumableBatchSampler` wraps to skip the batches already trained::

    sampler = ResumableBatchSampler(MyBucketSampler(lengths, batch_size, seed))
    return ResumableDataLoader(dataset, batch_sampler=sampler, progress=lightning_progress(self))
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any, cast

from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Sampler


def lightning_progress(owner: Any) -> Callable[[], tuple[int, int]]:
    """Build the position reader a :class:`ResumableDataLoader` saves in checkpoints.

    Args:
        owner: a LightningModule or LightningDataModule; its ``trainer`` is looked up at each
            call, so the reader can be made before the trainer exists.

    Returns:
        ``() -> (epoch, batches processed in it)`` from Lightning's fit loop, read when a
        checkpoint is written; ``(0, 0)`` while ``owner`` has no trainer.
    """

    def progress() -> tuple[int, int]:
        trainer = getattr(owner, "trainer", None)
        if trainer is None:
            return 0, 0
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return int(trainer.current_epoch), int(batches)

    return progress


class ResumableBatchSampler(Sampler[list[int]]):
    """Wraps a deterministic batch sampler so that a resumed epoch starts at a given batch.

    After :meth:`resume_at` the next pass over that epoch skips the batches already trained.
    ``len()`` stays the full epoch (Lightning counts batches from it).

    Args:
        batch_sampler: yields lists of dataset indices, the same ones for the same
            ``set_epoch(epoch)`` (seeded shuffling); ``set_epoch`` is forwarded when it has one.
    """

    def __init__(self, batch_sampler: Any) -> None:
        self.batch_sampler = batch_sampler
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (its shuffle) for the next pass; Lightning calls it at each epoch start."""
        self.epoch = epoch
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)

    def resume_at(self, epoch: int, batch: int) -> None:
        """Make the next pass, if it is over ``epoch``, start at batch index ``batch``.

        Args:
            epoch: the epoch the checkpoint was written in.
            batch: batches of that epoch already trained (skipped once).
        """
        self._resume = (epoch, batch)
        self.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        skip = 0
        if self._resume is not None:
            epoch, batch = self._resume
            self._resume = None
            if epoch == self.epoch:
                skip = batch
        return itertools.islice(iter(self.batch_sampler), skip, None)

    def __len__(self) -> int:
        return len(self.batch_sampler)


class ResumableDataLoader(DataLoader):
    """A DataLoader Lightning treats as stateful, so that a resume continues a part-trained epoch.

    Checkpoints store ``{"epoch", "batches"}`` and a resume continues the epoch at the next
    untrained batch.

    Args:
        *args: ``DataLoader``'s arguments; ``batch_sampler`` must be a
            :class:`ResumableBatchSampler`.
        progress: ``() -> (epoch, batches trained in it)``, e.g. :func:`lightning_progress`.
        **kwargs: ``DataLoader``'s keyword arguments.

    Raises:
        TypeError: ``batch_sampler`` is not a :class:`ResumableBatchSampler`.
    """

    def __init__(self, *args: Any, progress: Callable[[], tuple[int, int]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.batch_sampler, ResumableBatchSampler):
            raise TypeError("ResumableDataLoader needs batch_sampler=ResumableBatchSampler(...)")
        self.progress = progress

    def state_dict(self) -> dict[str, int]:
        """The training position, ``{"epoch", "batches"}``, that Lightning saves in a checkpoint."""
        epoch, batches = self.progress()
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next pass over the saved epoch skip its trained batches (Lightning calls it on resume)."""
        # __init__ checked the type, and a DataLoader refuses a new batch_sampler after __init__.
        sampler = cast(ResumableBatchSampler, self.batch_sampler)
        sampler.resume_at(int(state["epoch"]), int(state["batches"]))


class SignalSafeCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` whose "last" is the newest validation's, the final step's or a signal's.

    Lightning's final "last" save is made only when none was made before: with ``save_last``
    beside a monitored top-k, "last" stayed at the best step (infinito's ``--checkpoint last``
    gave step 250's weights after 300 steps). Here it is made whenever the last step is unsaved.
    :class:`lm_shared.runs_lightning.StopOnSignal` writes the resumable state mid-epoch; at the
    end of ``fit`` Lightning has counted that epoch done, and a save then (e.g. after a Ctrl-C
    before the first validation) wrote that state over the signal's file: a resume skipped the
    rest of the epoch (after a Ctrl-C in a run's last epoch, it trained nothing). Other stops (a
    time limit, early stopping) end the run and get the final save. Arguments are
    ``ModelCheckpoint``'s.
    """

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """Lightning's validation save, then "last" at this step if that wrote none.

        Lightning 2.6 writes "last" beside a top-k save only, so between two improvements "last"
        stayed at the best step and a crash replayed every step since (infinito-iit).
        """
        super().on_validation_end(trainer, pl_module)
        if (
            self.save_last is True  # "link" would point "last" back at the best checkpoint
            and not self._should_skip_saving_checkpoint(trainer)
            and not self._should_save_on_train_epoch_end(trainer)
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Save "last" at the final step unless it is saved, or a signal's stop saved it already."""
        from lm_shared.runs_lightning import StopOnSignal

        if any(
            isinstance(c, StopOnSignal) and c.saved_step == trainer.global_step for c in trainer.callbacks
        ):
            return
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class LastCheckpoint(SignalSafeCheckpoint):
    """Writes ``dirpath/last.ckpt`` every ``every_n_train_steps`` optimizer steps and at each epoch's end.

    The end-of-epoch save comes after the epoch's validation; nothing else is saved. It never
    saves from the epoch's final batch: Lightning 2.6 restores a checkpoint written in
    ``on_train_batch_end`` of the last batch one epoch too far when ``max_steps`` is set (the
    restored run's ``current_epoch`` skips one, so a seeded sampler reshuffles differently); the
    end-of-epoch save right after covers that step.

    The file is always ``last.ckpt``, overwritten, and an epoch cut short by a stop request (a
    signal, whose handler saves ``last.ckpt`` mid-epoch, or a time limit) gets no end-of-epoch
    save, which would mark the unfinished epoch done; nor, after a signal, the end-of-training
    save (:class:`SignalSafeCheckpoint`). Lightning's default had been to write
    ``last-v1.ckpt`` beside a ``last.ckpt`` this callback did not write: after a Ctrl-C and a
    resume every later save went to a new ``last-vN.ckpt`` while ``last.ckpt``, the one a resume
    reads, stayed at the Ctrl-C (a later crash then resumed from there, losing the work since).

    Args:
        dirpath: the checkpoint folder.
        every_n_train_steps: save every this many optimizer steps; ``None``: only at epoch ends.
    """

    def __init__(self, dirpath: Any, every_n_train_steps: int | None = None) -> None:
        super().__init__(
            dirpath=dirpath,
            save_top_k=0,
            save_last=True,
            every_n_train_steps=every_n_train_steps,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        )

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Save as ``ModelCheckpoint`` does, unless a stop request cut the epoch short (see the class)."""
        if trainer.should_stop and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        # ModelCheckpoint writes "last" at an epoch's end only beside a top-k save, and this
        # callback keeps none (save_top_k=0): without this call no epoch end was ever saved.
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Save as ``ModelCheckpoint`` does, except after the epoch's last batch (see the class)."""
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
