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
    """``() -> (epoch, batches processed in it)`` for the trainer of ``owner`` (a LightningModule or
    LightningDataModule), read when a checkpoint is written; ``(0, 0)`` before fitting."""

    def progress() -> tuple[int, int]:
        trainer = getattr(owner, "trainer", None)
        if trainer is None:
            return 0, 0
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return int(trainer.current_epoch), int(batches)

    return progress


class ResumableBatchSampler(Sampler[list[int]]):
    """Wraps a deterministic batch sampler; after :meth:`resume_at` the next pass over that epoch
    starts at the given batch. ``len()`` stays the full epoch (Lightning counts batches from it)."""

    def __init__(self, batch_sampler: Any) -> None:
        self.batch_sampler = batch_sampler
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)

    def resume_at(self, epoch: int, batch: int) -> None:
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
    """A DataLoader Lightning treats as stateful: checkpoints store ``{"epoch", "batches"}`` and a
    resume continues the epoch at the next untrained batch. Needs ``batch_sampler`` to be a
    :class:`ResumableBatchSampler` and ``progress`` a callable such as :func:`lightning_progress`."""

    def __init__(self, *args: Any, progress: Callable[[], tuple[int, int]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.batch_sampler, ResumableBatchSampler):
            raise TypeError("ResumableDataLoader needs batch_sampler=ResumableBatchSampler(...)")
        self.progress = progress

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self.progress()
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        # __init__ checked the type, and a DataLoader refuses a new batch_sampler after __init__.
        sampler = cast(ResumableBatchSampler, self.batch_sampler)
        sampler.resume_at(int(state["epoch"]), int(state["batches"]))


class LastCheckpoint(ModelCheckpoint):
    """Writes ``dirpath/last.ckpt`` every ``every_n_train_steps`` optimizer steps and at every
    epoch's end (after its validation), and nothing else.

    It never saves from the epoch's final batch: Lightning 2.6 restores a checkpoint written in
    ``on_train_batch_end`` of the last batch one epoch too far when ``max_steps`` is set (the
    restored run's ``current_epoch`` skips one, so a seeded sampler reshuffles differently); the
    end-of-epoch save right after covers that step.
    """

    def __init__(self, dirpath: Any, every_n_train_steps: int | None = None) -> None:
        super().__init__(
            dirpath=dirpath,
            save_top_k=0,
            save_last=True,
            every_n_train_steps=every_n_train_steps,
            save_on_train_epoch_end=True,
        )

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
