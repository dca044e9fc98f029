"""Data loading and Lightning training.

Pre-tokenised cache, dynamic padding with a length-bucketing sampler or packing with document
masks, curriculum by epoch, loss on the output part (or all tokens), schedule-free AdamW with its
train/eval modes switched wherever the model's are (mid-epoch validation and checkpoints
included), AdamW + cosine fallback, gradient noise, EMA, label smoothing, selective weight decay,
gradient accumulation, automatic precision, ModelCheckpoint (top 3 + last) and resume.
"""

from __future__ import annotations

import hashlib
import math
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lm_shared.runs import RunFolder, atomic_path
from lm_shared.stability_lightning import optimizer_updates
from nanologic.configs import PRECISIONS, TrainConfig, TrainConfigError  # noqa: F401 - re-exported
from nanologic.data import (
    PAD,
    SEQUENCE_FORMAT_VERSION,
    prompt_text,
    read_jsonl,
    target_text,
)
from nanologic.errors import NanologicError
from nanologic.model import NanoLogic, NanoLogicConfig

if TYPE_CHECKING:
    from lightning.fabric.connector import _PRECISION_INPUT
    from lightning.pytorch.core.optimizer import LightningOptimizer
    from torch.optim.swa_utils import AveragedModel

# ---------------------------------------------------------------------------------------------
# Tokenised dataset
# ---------------------------------------------------------------------------------------------


@dataclass
class Example:
    ids: list[int]  # prompt + target
    n_prompt: int  # tokens up to and including <|output|>
    complexity: str


def encode_records(tokenizer, records: Sequence[dict], with_thought: bool, max_len: int) -> list[Example]:
    prompts = tokenizer.encode_batch([prompt_text(r["natural_language_input"]) for r in records])
    targets = tokenizer.encode_batch([target_text(r, with_thought) for r in records])
    out = []
    for p, t, r in zip(prompts, targets, records):
        ids = p + t
        if len(ids) > max_len:
            continue  # too long for the model's context: skipped (counted by the caller)
        out.append(Example(ids, len(p), r["complexity"]))
    return out


def cached_examples(
    tokenizer, path: Path, cache_dir: Path, with_thought: bool, max_len: int, write: bool = True
) -> list[Example]:
    """Tokenise a split once and reuse it (keyed by file content, tokenizer and phase).

    ``write=False`` (every process but the first under multi-device training) never writes the
    cache; it reads it when present and tokenises in memory otherwise."""
    digest = hashlib.sha1(path.read_bytes())
    digest.update(tokenizer.hf.to_str().encode())
    digest.update(f"{with_thought}-{max_len}-{SEQUENCE_FORMAT_VERSION}".encode())
    cache = cache_dir / f"{path.stem}-{digest.hexdigest()[:16]}.pt"
    if cache.exists():
        try:
            return [Example(*row) for row in torch.load(cache)]
        except Exception as exc:  # a damaged cache (truncated, garbled): rebuild it
            print(f"{cache}: damaged token cache ({type(exc).__name__}); rebuilding it", file=sys.stderr)
    examples = encode_records(tokenizer, read_jsonl(path), with_thought, max_len)
    if write:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            torch.save([(e.ids, e.n_prompt, e.complexity) for e in examples], tmp)
    return examples


class SequenceDataset(Dataset):
    def __init__(self, examples: list[Example]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar length: sort within windows of 50 batches, then shuffle the batches.

    With ``curriculum`` the first epoch keeps the file's order (simple -> advanced). Under
    multi-device training (``num_replicas`` > 1) the sampler builds the same global batches of
    ``batch_size * num_replicas`` examples on every process and gives process ``rank`` its slice,
    so a run on N devices sees exactly the batches of a one-device run with an N times larger
    batch. The order depends only on ``seed`` and the epoch given to :meth:`set_epoch`, which is
    what lets :class:`lm_shared.resumable.ResumableBatchSampler` resume it mid-epoch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int,
        curriculum_epochs: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.curriculum_epochs = curriculum_epochs
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self, epoch: int) -> list[list[int]]:
        """The epoch's batches of ``batch_size * num_replicas`` indices (all processes)."""
        size = self.batch_size * self.num_replicas
        indices = list(range(len(self.lengths)))
        if epoch < self.curriculum_epochs:
            batches = [indices[i : i + size] for i in range(0, len(indices), size)]
        else:
            rng = random.Random(self.seed + epoch)
            rng.shuffle(indices)
            window = size * 50
            batches = []
            for start in range(0, len(indices), window):
                chunk = sorted(indices[start : start + window], key=lambda i: self.lengths[i])
                batches += [chunk[i : i + size] for i in range(0, len(chunk), size)]
            rng.shuffle(batches)
        # every process needs at least one example in each batch
        return [b for b in batches if len(b) >= self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_batches(self.epoch)
        self.epoch += 1
        for batch in batches:
            # near-equal contiguous slices; the loss is normalised by the global target count
            bounds = [len(batch) * r // self.num_replicas for r in range(self.num_replicas + 1)]
            yield batch[bounds[self.rank] : bounds[self.rank + 1]]

    def __len__(self) -> int:
        size = self.batch_size * self.num_replicas
        n, last = divmod(len(self.lengths), size)
        return n + (1 if last >= self.num_replicas else 0)


def _labels_for(ex: Example, loss_on: str) -> list[int]:
    """labels[t] = ids[t+1] where trained, else -100 (inputs are ids[:-1])."""
    first = ex.n_prompt - 1 if loss_on == "output" else 0
    return [-100 if t < first else ex.ids[t + 1] for t in range(len(ex.ids) - 1)]


def pad_collate(batch: list[Example], pad_id: int, loss_on: str) -> dict:
    """Dynamic padding to the longest sequence in the batch (right padding, causal mask)."""
    T = max(len(e.ids) for e in batch) - 1
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), T), -100, dtype=torch.long)
    for i, e in enumerate(batch):
        ids[i, : len(e.ids) - 1] = torch.tensor(e.ids[:-1])
        labels[i, : len(e.ids) - 1] = torch.tensor(_labels_for(e, loss_on))
    return {"input_ids": ids, "labels": labels, "n_real": sum(len(e.ids) - 1 for e in batch)}


def pack_collate(batch: list[Example], pad_id: int, loss_on: str, pack_len: int) -> dict:
    """Pack whole sequences into rows of ``pack_len`` with a block-diagonal causal mask."""
    from lm_shared.data import document_causal_mask, pack_documents

    docs = [e.ids[:-1] for e in batch]
    packed = pack_documents(docs, pack_len, pad_id)
    labels = torch.full_like(packed.input_ids, -100)
    doc_labels = [_labels_for(e, loss_on) for e in batch]
    real = packed.doc_ids >= 0
    for r, c in real.nonzero().tolist():
        labels[r, c] = doc_labels[int(packed.doc_ids[r, c])][int(packed.position_ids[r, c])]
    return {
        "input_ids": packed.input_ids,
        "labels": labels,
        "position_ids": packed.position_ids,
        "attention_mask": document_causal_mask(packed.doc_ids),
        "n_real": int(real.sum()),
    }


# ---------------------------------------------------------------------------------------------
# LightningModule
# ---------------------------------------------------------------------------------------------


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay 2-D projection weights only; embeddings (tied head), norms and scalars are exempt."""
    from lm_shared.optim import param_groups_with_weight_decay

    return param_groups_with_weight_decay(model, weight_decay, no_decay_names=("embed_tokens",))


class NanoLogicModule(L.LightningModule):
    def __init__(self, model_config: dict, train_config: dict) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model_config = NanoLogicConfig(**model_config)
        tc = dict(train_config)
        tc["betas"] = tuple(tc["betas"])
        self.train_config = TrainConfig(**tc)
        self.model = NanoLogic(self.model_config)
        self.ema: AveragedModel | None = None
        if self.train_config.ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(
                self.model, multi_avg_fn=get_ema_multi_avg_fn(self.train_config.ema_decay)
            )

    def forward(self, **batch):
        return self.model(**batch)

    def _step(self, batch: dict) -> dict:
        kwargs = {
            k: batch[k] for k in ("input_ids", "labels", "position_ids", "attention_mask") if k in batch
        }
        return self.model(
            **kwargs, label_smoothing=self.train_config.label_smoothing if self.training else 0.0
        )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self._step(batch)
        loss, ce = out["loss"], out["ce_loss"]
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1:
            # DDP averages gradients over processes; weighting each process's mean loss by its
            # share of the global target count makes that the gradient of the global mean, the
            # same as one process with the whole batch (the processes' batches differ in length).
            n = torch.tensor(float(out["n_targets"]), device=loss.device)
            gathered = self.all_gather(torch.stack([n, ce.float() * n]))
            assert isinstance(gathered, torch.Tensor)  # a tensor in, a tensor out
            stats = gathered.reshape(-1, 2).sum(0)
            loss = loss * (n * world / stats[0])
            ce = stats[1] / stats[0]
        self.log("train_loss", ce, prog_bar=True, batch_size=out["n_targets"])
        self.log("train_z_loss", out["z_loss"], batch_size=out["n_targets"])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        model = self.ema.module if self.ema is not None else self.model
        kwargs = {
            k: batch[k] for k in ("input_ids", "labels", "position_ids", "attention_mask") if k in batch
        }
        out = model(**kwargs)
        self.log("val_loss", out["ce_loss"], prog_bar=True, batch_size=out["n_targets"], sync_dist=True)

    # -- schedule-free modes: the optimizer follows the model (doc §3.4) ------------------------
    def _sf_optimizers(self) -> list:
        if self.train_config.optimizer != "schedulefree" or self._trainer is None:
            return []
        opts = self.trainer.optimizers
        return [o.optimizer if hasattr(o, "optimizer") and hasattr(o.optimizer, "train") else o for o in opts]

    def on_fit_start(self) -> None:
        for opt in self._sf_optimizers():
            opt.train()

    def on_train_epoch_start(self) -> None:
        for opt in self._sf_optimizers():
            opt.train()

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # A resumed run loads the optimizer state saved in eval mode after the hooks above ran
        # (mid-epoch resume): back to train mode before the forward pass, not just before step().
        for opt in self._sf_optimizers():
            if not opt.param_groups[0].get("train_mode", True):
                opt.train()

    def on_validation_model_eval(self) -> None:
        super().on_validation_model_eval()
        for opt in self._sf_optimizers():
            opt.eval()

    def on_validation_model_train(self) -> None:
        super().on_validation_model_train()
        for opt in self._sf_optimizers():
            opt.train()

    def on_train_end(self) -> None:
        # Leave the averaged (x) weights in the model for evaluation and export.
        for opt in self._sf_optimizers():
            opt.eval()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # dropout and gradient noise draw from torch's RNG: a resumed run continues the same stream
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        # A checkpoint must hold the evaluation weights; if one is written while the optimizer is
        # in train mode (e.g. on a step-based trigger), re-dump the model and optimizer in eval mode.
        for i, opt in enumerate(self._sf_optimizers()):
            if opt.param_groups[0].get("train_mode", False):
                opt.eval()
                checkpoint["state_dict"] = {k: v.detach().clone() for k, v in self.state_dict().items()}
                checkpoint["optimizer_states"][i] = opt.state_dict()
                opt.train()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        tc = self.train_config
        if tc.grad_noise > 0:
            std = math.sqrt(tc.grad_noise / (1 + self.global_step) ** tc.grad_noise_gamma)
            for p in self.model.parameters():
                if p.grad is not None:
                    p.grad.add_(torch.randn_like(p.grad) * std)

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: torch.optim.Optimizer | LightningOptimizer,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        # The EMA moves once per applied optimizer step: not per micro-batch under accumulation,
        # not on a step the gradient-health callback skipped.
        before = optimizer_updates(optimizer)
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.ema is not None and optimizer_updates(optimizer) != before:
            self.ema.update_parameters(self.model)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Checkpoints of runs that replaced the model by torch.compile's wrapper carry
        # "model._orig_mod." keys; the model is compiled in place now, so its keys never change.
        checkpoint["state_dict"] = {
            k.replace("_orig_mod.", ""): v for k, v in checkpoint["state_dict"].items()
        }
        rng = checkpoint.get("rng_states")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            if torch.cuda.is_available() and rng.get("cuda"):
                torch.cuda.set_rng_state_all(rng["cuda"])

    def configure_optimizers(self):
        tc = self.train_config
        groups = param_groups(self.model, tc.weight_decay)
        if tc.optimizer == "schedulefree":
            import schedulefree

            return schedulefree.AdamWScheduleFree(
                groups, lr=tc.lr, betas=tc.betas, warmup_steps=tc.warmup_steps
            )
        optimizer = torch.optim.AdamW(groups, lr=tc.lr, betas=tc.betas)
        total = max(1, self.trainer.estimated_stepping_batches)

        def schedule(step: int) -> float:
            if step < tc.warmup_steps:
                return (step + 1) / tc.warmup_steps
            progress = (step - tc.warmup_steps) / max(1, total - tc.warmup_steps)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def eval_model(self) -> NanoLogic:
        """The weights to evaluate: EMA when enabled, else the (schedule-free x) model weights."""
        if self.ema is not None:
            return cast(NanoLogic, self.ema.module)  # AveragedModel's deepcopy of self.model
        return self.model


class NanoLogicDataModule(L.LightningDataModule):
    def __init__(
        self,
        tokenizer,
        data_dir: Path,
        cache_dir: Path,
        train_config: TrainConfig,
        max_len: int,
        with_thought: bool = False,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.data_dir = Path(data_dir)
        self.cache_dir = Path(cache_dir)
        self.tc = train_config
        self.max_len = max_len
        self.with_thought = with_thought
        self.pad_id = tokenizer.token_to_id(PAD)
        self.splits: dict[str, list[Example]] = {}

    def _load(self, write: bool) -> None:
        for split in ("train", "val"):
            path = self.data_dir / f"{split}.jsonl"
            if not path.exists():
                raise NanologicError(f"{path}: missing; run `nanologic preprocess` first")
            self.splits[split] = cached_examples(
                self.tokenizer, path, self.cache_dir, self.with_thought, self.max_len, write=write
            )
            if not self.splits[split]:
                raise NanologicError(f"{path}: no usable examples")

    def prepare_data(self) -> None:
        # Lightning runs this on one process per node before setup(): the only one writing the cache.
        self._load(write=True)

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self._load(write=False)

    def _collate(self, batch: list[Example]) -> dict:
        if self.tc.packing:
            return pack_collate(batch, self.pad_id, self.tc.loss_on, max(self.tc.pack_len, self.max_len))
        return pad_collate(batch, self.pad_id, self.tc.loss_on)

    def train_dataloader(self) -> DataLoader:
        from lm_shared.resumable import ResumableBatchSampler, ResumableDataLoader, lightning_progress

        examples = self.splits["train"]
        trainer = self.trainer
        sampler = ResumableBatchSampler(
            LengthBucketSampler(
                [len(e.ids) for e in examples],
                self.tc.batch_size,
                self.tc.seed,
                curriculum_epochs=1 if self.tc.curriculum else 0,
                num_replicas=trainer.world_size if trainer is not None else 1,
                rank=trainer.global_rank if trainer is not None else 0,
            )
        )
        sampler.set_epoch(trainer.current_epoch if trainer is not None else 0)
        # Resumable mid-epoch: Lightning stores the loader's position in every checkpoint.
        return ResumableDataLoader(
            SequenceDataset(examples),
            batch_sampler=sampler,
            collate_fn=self._collate,
            num_workers=self.tc.num_workers,
            progress=lightning_progress(self),
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            SequenceDataset(self.splits["val"]),
            batch_size=64,
            collate_fn=self._collate,
            num_workers=self.tc.num_workers,
        )


class ProgressLog(L.Callback):
    """One plain line every ``every`` steps (the rich bar is invisible when output is a file)."""

    def __init__(self, every: int = 25) -> None:
        self.every = every
        self.t0 = 0.0
        self.tokens = 0

    def on_train_start(self, trainer, pl_module) -> None:
        import time

        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        import sys
        import time

        self.tokens += int(batch["n_real"])
        if not trainer.is_global_zero:
            return
        if trainer.global_step % self.every == 0 and batch_idx % trainer.accumulate_grad_batches == 0:
            elapsed = time.perf_counter() - self.t0
            loss = trainer.callback_metrics.get("train_loss")
            print(
                f"epoch {trainer.current_epoch} step {trainer.global_step} "
                f"loss {float(loss) if loss is not None else float('nan'):.4f} "
                f"{self.tokens / max(elapsed, 1e-9):.0f} tok/s {elapsed:.0f}s",
                file=sys.stderr,
                flush=True,
            )

    def on_validation_end(self, trainer, pl_module) -> None:
        import sys

        val = trainer.callback_metrics.get("val_loss")
        if val is not None and not trainer.sanity_checking and trainer.is_global_zero:
            print(
                f"epoch {trainer.current_epoch} step {trainer.global_step} val_loss {float(val):.4f}",
                file=sys.stderr,
                flush=True,
            )


def train_config_dict(tc: TrainConfig) -> dict:
    return asdict(tc)


# ---------------------------------------------------------------------------------------------
# The Lightning Trainer: phases, callbacks, resume and interruption
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """One ``trainer.fit``: chain-of-thought distillation (with the thought) or the output phase."""

    name: str  # also the folder under checkpoints/ and the TensorBoard run name
    with_thought: bool
    epochs: int


def training_phases(tc: TrainConfig) -> list[Phase]:
    """``phase1`` (``cot_epochs`` with the thought) when asked for, then ``phase2`` (output only).

    ``tc`` must have its preset-dependent fields set (:meth:`TrainConfig.for_preset`)."""
    if tc.max_epochs is None or tc.lr is None:
        raise NanologicError(
            "TrainConfig.max_epochs/lr are None: fill them in with TrainConfig.for_preset(preset)"
        )
    phases = [Phase("phase1", True, tc.cot_epochs)] if tc.cot_epochs > 0 else []
    phases.append(Phase("phase2", False, tc.max_epochs))
    return phases


def build_module(
    model_config: NanoLogicConfig, tc: TrainConfig, compile: bool | None = None
) -> NanoLogicModule:
    """The LightningModule, with activation checkpointing and ``torch.compile`` as asked.

    ``compile``: compile the model (None: when ``tc.compile`` is ``"on"``; the trainer resolves
    ``"auto"`` with :func:`lm_shared.runtime.compile_choice` and passes the answer).
    """
    module = NanoLogicModule(model_config.to_dict(), train_config_dict(tc))
    if tc.grad_ckpt:
        module.model.gradient_checkpointing = True
    if compile is None:
        compile = tc.compile == "on"
    if compile:
        # In place: parameter names (and so checkpoint keys) stay those of the plain model.
        # dynamic=True: length-bucketed batches change the sequence length every few steps, and
        # compiling per shape hit Dynamo's recompile limit and fell back to eager (no speed-up
        # after 270 s of compiling); one shape-generic compile takes ~35 s, then 1.29x eager (README).
        module.model.compile(dynamic=True)
    return module


def resumable_checkpoint(path: Path) -> Path:
    """A Lightning checkpoint to resume from, checked to be a whole file (zip central directory).

    Raises:
        NanologicError: the file is missing, truncated or not a PyTorch checkpoint.
    """
    import zipfile

    if not path.is_file():
        raise NanologicError(f"cannot resume: {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise NanologicError(
            f"{path}: damaged checkpoint (truncated or not a PyTorch checkpoint); "
            "resume from another one with --resume PATH, or start over with --force"
        )
    return path


@dataclass(frozen=True)
class FitSettings:
    """How a run's phases are fitted: everything but the module and the data."""

    train_config: TrainConfig
    precision: str  # the Lightning precision string (``train_config.precision`` resolved)
    max_minutes: float | None = None  # wall-clock cap per phase
    resume: str | None = None  # ``"last"`` or a checkpoint path (for the last phase)
    callbacks: Sequence = ()  # run before nanologic's own
    precision_plugins: Sequence = ()  # replace ``precision``


def fit_phases(
    run: RunFolder, module: NanoLogicModule, tokenizer, data_dir: Path, max_len: int, settings: FitSettings
) -> L.Trainer | None:
    """Fit every phase of ``run`` (open, see :func:`lm_shared.runs.open_run_dir`); returns the last Trainer.

    A phase the run's state lists as done (a resumed run) only loads its last weights; when every
    phase was done (a run stopped during its evaluation) no Trainer runs and None is returned. SIGINT or
    SIGTERM save ``checkpoints/<phase>/last.ckpt``, mark the run interrupted and raise
    ``TrainingInterrupted`` with the command that resumes it.
    """
    phases = training_phases(settings.train_config)
    phases_done = list(run.state.get("phases_done", [])) if run.resumed else []
    trainer = None
    for phase in phases:
        if phase.name in phases_done:  # finished before the interruption: its weights, then move on
            last = resumable_checkpoint(run.path / "checkpoints" / phase.name / "last.ckpt")
            module.load_state_dict(torch.load(last, map_location="cpu", weights_only=False)["state_dict"])
            continue
        datamodule = NanoLogicDataModule(
            tokenizer,
            data_dir,
            run.path / "cache",
            settings.train_config,
            max_len,
            with_thought=phase.with_thought,
        )
        trainer = _fit_phase(run, phase, module, datamodule, settings, is_last=phase == phases[-1])
        phases_done.append(phase.name)
        run.update(phases_done=phases_done, step=trainer.global_step)
    return trainer


def _fit_phase(
    run: RunFolder, phase: Phase, module: NanoLogicModule, datamodule, settings: FitSettings, is_last: bool
) -> L.Trainer:
    """One phase's ``trainer.fit``, resumed where the run left it; an interruption raises."""
    from lm_shared.runs import StopSignal
    from lm_shared.runs_lightning import StopOnSignal

    phase_dir = run.path / "checkpoints" / phase.name
    stop = StopSignal()
    stop_callback = StopOnSignal(stop, phase_dir / "last.ckpt")
    trainer = _phase_trainer(
        run.path, phase, settings, [*_phase_callbacks(run.path, phase, settings), stop_callback]
    )
    ckpt_path = None
    if run.resumed:
        if settings.resume not in (None, "last") and is_last:
            ckpt_path = str(resumable_checkpoint(Path(settings.resume)))
        elif (phase_dir / "last.ckpt").exists():
            ckpt_path = str(resumable_checkpoint(phase_dir / "last.ckpt"))
    with stop:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if stop.requested:
        if stop_callback.saved_step is None:  # stopped before a step finished: keep the last epoch's
            trainer.save_checkpoint(phase_dir / "last.ckpt", weights_only=False)
        run.mark_interrupted(phase=phase.name, step=trainer.global_step)
        raise stop.interrupted(
            f"at step {trainer.global_step} ({phase.name}); checkpoint {phase_dir / 'last.ckpt'}",
            f"nanologic train --out {run.final_path} --resume",
        )
    return trainer


def _phase_callbacks(out: Path, phase: Phase, settings: FitSettings) -> list[L.Callback]:
    """The caller's callbacks, then checkpoints (top 3 by val_loss, last), progress and health."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lm_shared.resumable import LastCheckpoint
    from lm_shared.runs_lightning import NonFiniteGuard
    from lm_shared.stability import HealthConfig
    from lm_shared.stability_lightning import GradientHealthCallback

    tc = settings.train_config
    ckpt_dir = out / "checkpoints"
    return [
        *settings.callbacks,
        ModelCheckpoint(
            dirpath=ckpt_dir / phase.name,
            filename="{epoch}-{step}-{val_loss:.4f}",
            monitor="val_loss",
            mode="min",
            save_top_k=3,
            # after each validation only: at an epoch's end after a Ctrl-C (no validation then,
            # lm_shared.StopOnSignal) it would file the last validation's loss under a new step
            save_on_train_epoch_end=False,
        ),
        # last.ckpt: at every epoch's end and every --checkpoint-every steps, always resumable
        LastCheckpoint(ckpt_dir / phase.name, every_n_train_steps=tc.checkpoint_every_n_steps or None),
        ProgressLog(),
        GradientHealthCallback(
            HealthConfig(clip_norm=tc.grad_clip), checkpoint_path=ckpt_dir / "unhealthy.ckpt"
        ),
        NonFiniteGuard(),
    ]


def _phase_trainer(out: Path, phase: Phase, settings: FitSettings, callbacks: list) -> L.Trainer:
    from lm_shared.runs_lightning import AtomicCheckpointIO
    from lm_shared.summary import tensorboard_logger

    tc = settings.train_config
    return L.Trainer(
        max_epochs=phase.epochs,
        max_steps=tc.max_steps,
        max_time=timedelta(minutes=settings.max_minutes) if settings.max_minutes else None,
        accelerator="auto",
        devices=tc.devices,
        num_nodes=tc.num_nodes,
        strategy=tc.strategy,
        # the bucketing sampler shards its global batches itself (see LengthBucketSampler)
        use_distributed_sampler=False,
        # a Lightning precision string (configs.PRECISIONS checks it; runner resolves "auto")
        precision=None if settings.precision_plugins else cast("_PRECISION_INPUT", settings.precision),
        plugins=[AtomicCheckpointIO(), *settings.precision_plugins],
        accumulate_grad_batches=tc.accumulate_grad_batches,
        val_check_interval=tc.val_check_interval,
        logger=tensorboard_logger(out / "tensorboard", name=phase.name),
        callbacks=callbacks,
        detect_anomaly=tc.debug,
        enable_model_summary=False,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
        deterministic=False,
    )


def plain_model(module: NanoLogicModule) -> NanoLogic:
    """The weights to save, in an uncompiled :class:`NanoLogic` (EMA ones when enabled)."""
    model: torch.nn.Module = module.eval_model()
    original = getattr(model, "_orig_mod", None)  # set on torch.compile's wrapper
    if isinstance(original, torch.nn.Module):
        model = original
    plain = NanoLogic(module.model_config)
    plain.load_state_dict(model.state_dict())
    return plain
