"""Training, evaluation, checkpoints and resume, on PyTorch Lightning.

:class:`InfinitoModule` (a ``LightningModule`` around :class:`~infinito_iit.model.InfinitoLM`) and
:class:`InfinitoDataModule` (the chunks of :mod:`infinito_iit.data` behind a resumable sampler)
run under a ``lightning.Trainer`` that owns precision (autocast, a GradScaler for fp16), gradient
accumulation, checkpoints (``checkpoints/last.ckpt`` and ``best.ckpt``, written atomically) and
exact resume (mid-epoch too), TensorBoard, the progress bar, early stopping, the
ReduceLROnPlateau schedule and multi-device strategies (``--devices``, ``--num-nodes``,
``--strategy ddp|fsdp``; ``torchrun`` and SLURM launches work unchanged). Clipping and skipped
steps go through the ``lm_shared`` gradient-health callback; the run folder follows
``lm_shared.runs`` (lock, finished runs never overwritten without ``--force``, interrupted runs
continued with ``--resume``, SIGINT/SIGTERM save a resumable checkpoint, NaN stops training).

AdamW (no decay on norms, biases and phi logits). The IIT memory's writes are committed once per
optimizer step that was taken (never on a skipped step) and, under DDP, from the proposals of
every rank, so all ranks hold the memory a single process would.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lm_shared.metrics import NLLAccumulator
from lm_shared.resumable import SignalSafeCheckpoint
from lm_shared.runs import (
    NonFiniteError,
    RunFolder,
    StopSignal,
    atomic_path,
    atomic_write_text,
    check_finite_parameters,
    open_run_dir,
)
from lm_shared.runs_lightning import AtomicCheckpointIO, StepsProgressBar, StopOnSignal, require_gpus_for_fsdp
from lm_shared.runtime import (
    COMPILE_MODES,
    CompileChoice,
    autocast_dtype,
    compile_choice,
    compile_mode,
    compile_module,
    detect_device,
    detect_precision,
    save_config,
    seed_everything,
)
from lm_shared.stability import HealthConfig
from lm_shared.stability_lightning import GradientHealthCallback

from .data import PreparedData, leakage_warning, load_corpus, load_tokenizer, prepare_data
from .errors import InfinitoError
from .model import InfinitoConfig, InfinitoLM, InfinitoOutput, SequenceTooLongError
from .phi_proxy import model_phi_proxy

if TYPE_CHECKING:
    from lightning.fabric.connector import _PRECISION_INPUT
    from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

PACKAGE = "infinito-iit"
COMMAND_CONFIG_FILE = "config.yaml"  # the command's settings, for `infinito train --config`
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")
STRATEGIES = ("auto", "ddp", "fsdp")
RESUME_MAY_CHANGE = tuple(
    f"train.{name}"
    for name in (
        "max_steps",
        "patience",
        "eval_every",
        "eval_batches",
        "precision",
        "devices",
        "num_nodes",
        "strategy",
        "compile",
    )
)
"""Settings a ``--resume`` may change (to extend a run or move it to other hardware)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a run except the architecture (saved as ``config.json`` with it)."""

    data: str | None = None  # text file, WikiText folder, wikitext-2-raw-v1, default; None = embedded
    tokenizer: str = "bpe"  # "bpe" (lm_shared, trained on the train split) or "gpt2"
    vocab_size: int = 1024  # BPE size; small corpora need small vocabularies
    seq_len: int = 128  # tokens per chunk (<= the model's max_seq_len)
    batch_size: int = 16  # sequences per micro-batch and device (global batch = x devices x nodes)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3  # AdamW peak learning rate
    weight_decay: float = 0.01  # the original's value; not applied to norms, biases, phi logits
    max_steps: int = 300  # optimizer steps
    eval_every: int = 50  # optimizer steps between validations (and checkpoints)
    eval_batches: int = 0  # validation batches per periodic eval; 0 = all (the final eval is always all)
    patience: int = 4  # early stopping: evaluations without improvement
    plateau_patience: int = 1  # ReduceLROnPlateau patience (evaluations)
    plateau_factor: float = 0.5  # ReduceLROnPlateau factor
    clip_norm: float = 1.0  # gradient clipping (lm_shared HealthConfig)
    precision: str = "auto"  # auto | 32-true | bf16-mixed | 16-mixed
    seed: int = 0  # one seed for data order, init and noise
    proxy_k: int = 8  # Φ-proxy components tracked at each evaluation; 0 = off
    proxy_sequences: int = 32  # validation chunks used for the tracked proxy
    valid_fraction: float = 0.1  # held-out tail of a single-file corpus
    devices: str = "auto"  # Lightning devices: "auto", a count ("2") or a list ("0,1")
    num_nodes: int = 1  # machines (each with `devices` devices)
    strategy: str = "auto"  # auto | ddp | fsdp
    # torch.compile the model: auto = where Inductor finds a C++ compiler (Triton on CUDA) and the run
    # has >= 1,000 steps | on (--compile alone) | off; checkpoints are the same either way
    compile: str = "auto"

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> None:
            raise InfinitoError(f"train config {name}={getattr(self, name)!r}: expected {expected}")

        object.__setattr__(self, "compile", compile_mode(self.compile))
        if self.compile not in COMPILE_MODES:
            bad("compile", " | ".join(COMPILE_MODES))
        for name in (
            "seq_len",
            "batch_size",
            "grad_accum",
            "max_steps",
            "eval_every",
            "num_nodes",
            "patience",
            "plateau_patience",
            "proxy_sequences",
        ):
            if getattr(self, name) < 1:
                bad(name, "a positive integer")
        if self.eval_batches < 0:
            bad("eval_batches", "0 (all) or a positive integer")
        if self.tokenizer not in ("bpe", "gpt2"):
            bad("tokenizer", "'bpe' or 'gpt2'")
        if self.tokenizer == "bpe" and self.vocab_size < 260:
            bad("vocab_size", "at least 260 (256 bytes, the end-of-text token and merges)")
        if self.precision not in PRECISIONS:
            bad("precision", " | ".join(PRECISIONS))
        if self.strategy not in STRATEGIES:
            bad("strategy", " | ".join(STRATEGIES))
        if not (math.isfinite(self.lr) and self.lr > 0):
            bad("lr", "a finite positive number")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            bad("weight_decay", "a finite number >= 0")
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            bad("clip_norm", "a finite positive number")
        if not 0 < self.plateau_factor < 1:
            bad("plateau_factor", "a value in (0, 1)")
        if not 0 < self.valid_fraction < 1:
            bad("valid_fraction", "a value in (0, 1)")
        if self.proxy_k == 1 or self.proxy_k < 0:
            bad("proxy_k", "0 (off) or at least 2")
        if not 0 <= self.seed < 2**32:
            bad("seed", "an integer in [0, 2**32)")
        parse_devices(self.devices)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InfinitoError(f"unknown train config field(s): {', '.join(unknown)}")
        return cls(**data)


def parse_devices(devices: str) -> int | str | list[int]:
    """``"auto"``, a positive count (``"2"``) or a comma list of device indices (``"0,1"``)."""
    text = str(devices).strip()
    if text == "auto":
        return "auto"
    try:
        if "," in text:
            return [int(d) for d in text.split(",") if d.strip()]
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise InfinitoError(f"--devices {devices!r}: expected 'auto', a positive count or a list like 0,1")
    return count


@dataclass
class TrainResult:
    run_dir: Path
    model: InfinitoLM
    data: PreparedData
    final: dict[str, Any]
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    stopped_early: str = ""
    seconds: float = 0.0


def _device_and_precision(precision: str) -> tuple[str, str]:
    device = detect_device()
    if precision == "auto":
        precision = detect_precision(device)
    if precision == "16-mixed" and device == "cpu":
        raise InfinitoError("--precision 16-mixed needs a GPU; use bf16-mixed or 32-true on the CPU")
    return device, precision


def _autocast(device: str, precision: str):
    dtype = autocast_dtype(precision)
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None)


@torch.no_grad()
def evaluate(
    model: InfinitoLM,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    byte_lengths: np.ndarray,
    n_words_total: int,
    n_bytes_total: int,
    *,
    batch_size: int = 32,
    max_batches: int = 0,
    device: str = "cpu",
    precision: str = "32-true",
) -> dict[str, float]:
    """Loss from the total NLL over all predicted tokens, with bits per byte and word perplexity.

    With ``max_batches`` only a prefix is scored; words are then prorated by bytes (an estimate).
    """
    was_training = model.training
    model.eval()
    acc = NLLAccumulator()
    lengths = torch.as_tensor(byte_lengths)
    try:
        for i, start in enumerate(range(0, inputs.shape[0], batch_size)):
            if max_batches and i >= max_batches:
                break
            x = inputs[start : start + batch_size].to(device)
            y = labels[start : start + batch_size].to(device)
            with _autocast(device, precision):
                logits = model(x).logits
            nll = torch.nn.functional.cross_entropy(
                logits.float().flatten(0, 1), y.flatten(), ignore_index=-100, reduction="sum"
            )
            mask = y >= 0
            acc.add(float(nll), int(mask.sum()), n_bytes=int(lengths[y[mask].cpu()].sum()))
    finally:
        model.train(was_training)
    return _metrics(acc.total_nll, acc.n_tokens, acc.n_bytes, n_words_total, n_bytes_total)


def _metrics(
    nll: float, tokens: int, n_bytes: int, n_words_total: int, n_bytes_total: int
) -> dict[str, float]:
    words = n_words_total * n_bytes / max(n_bytes_total, 1) if n_bytes != n_bytes_total else n_words_total
    loss = nll / max(tokens, 1)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bits_per_byte": nll / (max(n_bytes, 1) * math.log(2)),
        "word_perplexity": math.exp(min(nll / max(words, 1), 700.0)),
        "tokens": tokens,
        "bytes": n_bytes,
    }


def tensorboard_logger(run_dir: Path) -> Any:
    """Lightning's TensorBoard logger without importing TensorFlow when another package installed it.

    tensorboard loads TensorFlow (~15 s) unless ``tensorboard.compat.notf`` is importable, which is
    how its TensorFlow-free build selects the bundled stub; event files are identical.
    """
    import sys
    import types

    if "tensorflow" not in sys.modules:
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(str(run_dir), name="tensorboard", version="", default_hp_metric=False)


def param_groups(model: InfinitoLM, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "phi_weights" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def config_differences(saved: dict[str, Any], requested: dict[str, Any]) -> list[str]:
    """Human-readable field differences between two config dicts (lists and tuples compare equal)."""
    out = []
    for key in sorted(set(saved) | set(requested)):
        a, b = saved.get(key, "<missing>"), requested.get(key, "<missing>")
        if isinstance(a, list | tuple) and isinstance(b, list | tuple):
            a, b = list(a), list(b)
        if a != b:
            out.append(f"{key}: checkpoint has {a!r}, requested {b!r}")
    return out


# --------------------------------------------------------------------------------------------
# Checkpoints and weights
# --------------------------------------------------------------------------------------------

WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_DIR = "checkpoints"


def _model_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's state dict from a Lightning checkpoint (``model.`` prefix) or a legacy ``.pt``."""
    if "state_dict" in ckpt:
        return {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    return ckpt["model"]


def _checkpoint_model_config(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    if "model_config" in ckpt:
        return ckpt["model_config"]
    return (ckpt.get("hyper_parameters") or {}).get("model_config")


def load_checkpoint(path: Path, expected: InfinitoConfig | None = None) -> dict[str, Any]:
    """Read a Lightning ``.ckpt`` (or a legacy ``.pt``); with ``expected``, refuse a config mismatch.

    Returns ``{"model_config": dict, "model": state_dict, "global_step": int or None}`` (the
    optimizer step it was saved at; None in a legacy file). Raises :class:`InfinitoError` for a
    missing, unreadable or foreign file.
    """
    if not path.is_file():
        raise InfinitoError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise InfinitoError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    config = _checkpoint_model_config(ckpt) if isinstance(ckpt, dict) else None
    if config is None or not ("model" in ckpt or "state_dict" in ckpt):
        raise InfinitoError(f"{path}: not an infinito checkpoint (no model config and weights)")
    if expected is not None:
        diffs = config_differences(config, expected.to_dict())
        if diffs:
            raise InfinitoError(f"{path}: model config does not match the checkpoint: " + "; ".join(diffs))
    return {"model_config": config, "model": _model_state(ckpt), "global_step": ckpt.get("global_step")}


def model_from_checkpoint(ckpt: dict[str, Any], path: Path) -> InfinitoLM:
    try:
        config = InfinitoConfig.from_dict(ckpt["model_config"])
        model = InfinitoLM(config)
        model.load_state_dict(ckpt["model"], strict=True)
    except (ValueError, RuntimeError) as exc:
        raise InfinitoError(f"{path}: checkpoint does not load strictly: {exc}") from None
    return model


def save_weights(model: InfinitoLM, path: Path) -> None:
    """Write the model's weights and buffers (memory slots included) as safetensors, atomically.

    Raises :class:`~lm_shared.runs.NonFiniteError` (nothing written) when a tensor holds NaN/Inf.
    """
    from safetensors.torch import save_model

    check_finite_parameters(model.named_parameters(), what="the model")
    with atomic_path(path) as tmp:
        save_model(model, str(tmp))


def load_weights(config: InfinitoConfig, path: Path) -> InfinitoLM:
    from safetensors.torch import load_model

    model = InfinitoLM(config)
    try:
        load_model(model, str(path), strict=True)
    except Exception as exc:
        raise InfinitoError(f"{path}: weights do not load ({type(exc).__name__}: {exc})") from None
    return model


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


class _Chunks(Dataset):
    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[i], self.labels[i]


class EpochBatchSampler(Sampler[list[int]]):
    """Shuffled batches, a fresh seeded permutation per epoch, sharded by rank, resumable.

    Epoch ``e`` uses ``randperm(n)`` from a generator seeded with ``(seed, e)``; each global batch
    of ``batch_size * world_size`` indices is split into contiguous per-rank slices, so N devices
    see exactly the global batches one device with an N-times larger batch sees. The epoch is cut
    to a whole number of optimizer steps. ``start`` skips the batches a resumed run already
    trained on (see :class:`_ResumableLoader`).
    """

    def __init__(
        self, n: int, batch_size: int, seed: int, *, rank: int = 0, world_size: int = 1, grad_accum: int = 1
    ) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        per_step = batch_size * world_size * grad_accum
        self.n_batches = (n // per_step) * grad_accum
        if self.n_batches == 0:
            raise InfinitoError(
                f"train split: {n} chunks, fewer than one optimizer step of {per_step} "
                "(batch size x devices x grad accum); use more text or a smaller --batch-size"
            )
        self.epoch = 0
        self.start = 0
        self._pass_complete = False

    def __iter__(self) -> Iterator[list[int]]:
        # The sampler counts its own epochs (a pass that handed out its last batch is complete), so
        # the order never depends on when, or whether, a trainer announces a new epoch.
        if self._pass_complete:
            self.epoch, self._pass_complete = self.epoch + 1, False
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.n, generator=generator)
        global_batch = self.batch_size * self.world_size
        start, self.start = self.start, 0
        for b in range(start, self.n_batches):
            first = b * global_batch + self.rank * self.batch_size
            self._pass_complete = b == self.n_batches - 1
            yield perm[first : first + self.batch_size].tolist()

    def __len__(self) -> int:
        return self.n_batches


class _ResumableLoader(DataLoader):
    """A DataLoader Lightning saves and restores (it has ``state_dict``): mid-epoch resume is exact.

    The state is the trainer's epoch and the number of its batches the trainer has taken
    (Lightning's own progress counters: the sampler runs a batch ahead because of prefetching).
    """

    def __init__(
        self, dataset: Dataset, sampler: EpochBatchSampler, progress: Callable[[], tuple[int, int]]
    ) -> None:
        super().__init__(dataset, batch_sampler=sampler)
        self._progress = progress

    def state_dict(self) -> dict[str, int]:
        epoch, taken = self._progress()
        return {"epoch": int(epoch), "batches_taken": int(taken)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self.batch_sampler
        assert isinstance(sampler, EpochBatchSampler)  # the one __init__ was given
        sampler._pass_complete = False
        if state["batches_taken"] >= len(sampler):  # saved at the very end of an epoch
            sampler.epoch, sampler.start = state["epoch"] + 1, 0
        else:
            sampler.epoch, sampler.start = state["epoch"], state["batches_taken"]


class _ValidationShard(Sampler[list[int]]):
    """Validation batches ``rank, rank + world, ...`` so ranks split the work and sum the NLL."""

    def __init__(self, n: int, batch_size: int, rank: int, world_size: int) -> None:
        self.batches = [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)][
            rank::world_size
        ]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class InfinitoDataModule(L.LightningDataModule):
    """Training chunks behind :class:`EpochBatchSampler`, validation chunks sharded by rank."""

    def __init__(self, data: PreparedData, train_config: TrainConfig) -> None:
        super().__init__()
        self.data = data
        self.tc = train_config

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        assert trainer is not None  # Lightning attaches the trainer before it asks for loaders
        sampler = EpochBatchSampler(
            len(self.data.train),
            self.tc.batch_size,
            self.tc.seed,
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            grad_accum=self.tc.grad_accum,
        )

        def progress() -> tuple[int, int]:
            return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.ready

        return _ResumableLoader(_Chunks(self.data.train.inputs, self.data.train.labels), sampler, progress)

    def val_dataloader(self) -> DataLoader:
        trainer = self.trainer
        assert trainer is not None  # Lightning attaches the trainer before it asks for loaders
        valid = self.data.valid
        shard = _ValidationShard(len(valid), self.tc.batch_size, trainer.global_rank, trainer.world_size)
        return DataLoader(_Chunks(valid.inputs, valid.labels), batch_sampler=shard)


# --------------------------------------------------------------------------------------------
# LightningModule
# --------------------------------------------------------------------------------------------


class InfinitoModule(L.LightningModule):
    """One :class:`InfinitoLM` trained with AdamW; logs every optimizer step and evaluation.

    Rank 0 appends each step's record to ``metrics.jsonl`` (and its gradient health to
    ``grad_health.jsonl``) and to TensorBoard; :attr:`history` holds the same records.
    """

    byte_lengths: torch.Tensor  # int64 [V]: UTF-8 bytes of each token (0 for special tokens)
    _forward: Callable[..., InfinitoOutput]  # the model, or its torch.compile wrapper

    def __init__(
        self,
        model_config: InfinitoConfig,
        train_config: TrainConfig,
        byte_lengths: np.ndarray | None = None,
        valid_totals: tuple[int, int] = (0, 0),
        proxy_ids: torch.Tensor | None = None,
        run_dir: Path | None = None,
        compiled: bool = False,
    ) -> None:
        super().__init__()
        self.model_config, self.train_config = model_config, train_config
        self.compiled = compiled  # torch.compile the model at fit start (compile_choice decided)
        self.model = InfinitoLM(model_config)
        if self.model.memory is not None:
            self.model.memory.defer_writes = True
        # The compiled wrapper (made in on_fit_start, once the device is known) is kept out of the
        # module tree (not a registered submodule), so the checkpoint keys are the same with and
        # without --compile.
        self.__dict__["_forward"] = self.model
        lengths = torch.as_tensor(byte_lengths if byte_lengths is not None else np.zeros(1), dtype=torch.long)
        self.register_buffer("byte_lengths", lengths, persistent=False)
        self.valid_words, self.valid_bytes = valid_totals
        self.proxy_ids = proxy_ids
        self.run_dir = run_dir
        self.history: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}
        self._pending: dict[str, list[torch.Tensor]] = {}
        self._val_sums: torch.Tensor | None = None
        self._new_validation = False
        self._files: dict[str, Any] = {}
        self._health: GradientHealthCallback | None = None

    # -- training ---------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        try:
            out = self._forward(x, labels=y)
        except SequenceTooLongError as exc:
            raise InfinitoError(str(exc)) from None
        values = {"loss": out.loss, "ce": out.ce_loss, "phi": out.phi, "phi_loss": out.phi_loss}
        values.update({f"component/{k}": v for k, v in out.components.items()})
        for name, value in values.items():
            if value is not None:
                self._pending.setdefault(name, []).append(value.detach().float())
        assert out.loss is not None  # labels were given
        self.log("train_loss", out.loss.detach(), prog_bar=True, on_step=True, on_epoch=False, logger=False)
        return out.loss

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
    ) -> None:
        # The step this batch attempts; a skipped attempt is not counted, so the next batch
        # attempts the same step number again.
        step = self.global_step + 1
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        health = self._health.history[-1] if self._health is not None and self._health.history else {}
        stepped = health.get("repair_action", "none") in ("none", "clip")
        memory = self.model.memory
        if memory is not None:
            if stepped:
                memory.commit_writes()
            else:
                memory.discard_writes()
        self._record_step(step, health, optimizer)

    def _record_step(self, step: int, health: dict[str, Any], optimizer: Any) -> None:
        names = list(self._pending)
        if not names:
            return
        means = torch.stack([torch.stack(self._pending[n]).mean() for n in names])
        self._pending = {}
        means = self.trainer.strategy.reduce(means, reduce_op="mean")
        entry: dict[str, Any] = {"step": step}
        entry.update(zip(names, means.tolist()))
        entry["lr"] = float(optimizer.param_groups[0]["lr"])
        entry["grad_norm"] = float(health.get("grad_norm", float("nan")))
        entry["repair"] = health.get("repair_action", "none")
        if self.model.phi_weights is not None:
            entry.update({f"phi_weight/{k}": v for k, v in self.model.phi_weights.as_dict().items()})
        if self.model.memory is not None:
            entry["memory_writes"] = int(self.model.memory.n_writes)
        if not self.trainer.is_global_zero:
            return
        self.history["train"].append(entry)
        self._append("metrics.jsonl", {"split": "train", **entry})
        if health:
            record = {k: health[k] for k in ("grad_norm", "has_nan", "has_inf", "n_zero", "repair_action")}
            self._append(
                "grad_health.jsonl",
                {"step": entry["step"], **record, "lr": entry["lr"], "loss": entry["loss"]},
            )
        if self.logger is not None:
            scalars = {
                f"train/{k}": v for k, v in entry.items() if isinstance(v, int | float) and k != "step"
            }
            self.logger.log_metrics(scalars, step=entry["step"])

    def _append(self, name: str, record: dict[str, Any]) -> None:
        if self.run_dir is None:
            return
        handle = self._files.get(name)
        if handle is None:
            handle = self._files[name] = (self.run_dir / name).open("a", encoding="utf-8")
        handle.write(json.dumps(record) + "\n")
        handle.flush()

    def on_fit_start(self) -> None:
        if self.compiled:
            self.__dict__["_forward"] = compile_module(self.model, self.device.type)
        # Lightning's callback connector sets Trainer.callbacks; the class does not declare it.
        callbacks = self.trainer.callbacks  # type: ignore[attr-defined]
        self._health = next((c for c in callbacks if isinstance(c, GradientHealthCallback)), None)

    def on_fit_end(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files = {}

    # -- validation -------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(3, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x).logits
        nll = torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), y.flatten(), ignore_index=-100, reduction="sum"
        )
        mask = y >= 0
        n_bytes = self.byte_lengths[y[mask]].sum()
        assert self._val_sums is not None  # set by on_validation_epoch_start
        self._val_sums += torch.stack([nll.double(), mask.sum().double(), n_bytes.double()])

    def on_validation_epoch_end(self) -> None:
        sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        nll, tokens, n_bytes = sums.tolist()
        metrics: dict[str, Any] = _metrics(nll, int(tokens), int(n_bytes), self.valid_words, self.valid_bytes)
        self.log("val_loss", metrics["loss"], prog_bar=True, logger=False)
        self.log("val_bpb", metrics["bits_per_byte"], prog_bar=True, logger=False)
        if self.trainer.sanity_checking:
            return
        self._new_validation = True
        if not self.trainer.is_global_zero:
            return
        tc = self.train_config
        if tc.proxy_k and self.proxy_ids is not None and self.proxy_ids.shape[0] >= 2:
            report = model_phi_proxy(self.model, self.proxy_ids.to(self.device), k=tc.proxy_k)
            metrics["phi_proxy"], metrics["phi_proxy_total_mi"] = report.phi, report.total_mi
        metrics["step"] = self.global_step
        self.history["eval"].append(metrics)
        self._append("metrics.jsonl", {"split": "eval", **metrics})
        if self.logger is not None:
            scalars = {f"valid/{k}": v for k, v in metrics.items() if k != "step"}
            self.logger.log_metrics(scalars, step=self.global_step)

    # -- optimizer and the plateau schedule --------------------------------------------------
    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        tc = self.train_config
        optimizer = torch.optim.AdamW(param_groups(self.model, tc.weight_decay), lr=tc.lr, betas=(0.9, 0.95))
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=tc.plateau_factor, patience=tc.plateau_patience
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": plateau,
                "monitor": "val_loss",
                "interval": "step",
                "strict": False,
            },
        }

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        # Lightning offers a plateau scheduler a step after every batch; it learns from each
        # validation exactly once.
        if self._new_validation and metric is not None:
            scheduler.step(metric)
            self._new_validation = False

    # -- checkpoints -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_finite_parameters(self.model.named_parameters(), what="the model")
        checkpoint["model_config"] = self.model_config.to_dict()
        checkpoint["rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["new_validation"] = self._new_validation

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._restore_rng = checkpoint.get("rng")
        self._new_validation = checkpoint.get("new_validation", False)

    def on_train_start(self) -> None:
        rng = getattr(self, "_restore_rng", None)
        if rng:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            self._restore_rng = None


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _truncate_jsonl(path: Path, last_step: int) -> list[dict[str, Any]]:
    """Keep the records of ``path`` up to ``last_step`` (a resumed run rewrites what came after)."""
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if record.get("step", 0) <= last_step:
            kept.append(record)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def _proxy_ids(data: PreparedData, n: int) -> torch.Tensor:
    ids = data.valid.inputs[:n]
    if ids.shape[0] and (data.valid.labels[ids.shape[0] - 1] < 0).any():
        ids = ids[:-1]  # the padded tail chunk would add artificial repeats
    return ids


def _weights_agree(module: InfinitoModule, trainer: L.Trainer) -> bool:
    """Under several processes: do all ranks hold the same weights and buffers? (one all-gather)"""
    with torch.no_grad():
        checksum = torch.stack([t.double().sum() for t in module.model.state_dict().values()])
    gathered = trainer.strategy.all_gather(checksum.to(module.device))
    return bool((gathered == gathered[0]).all()) if gathered.dim() > 1 else True


def _check_settings(
    model_config: InfinitoConfig, train_config: TrainConfig
) -> tuple[str, str, CompileChoice]:
    """Refuse settings this machine or model cannot run, before any work.

    Returns:
        ``(device, precision, compiled)``: the precision resolved from ``auto``, and whether the
        model is ``torch.compile``d (:func:`lm_shared.runtime.compile_choice` over ``max_steps``).
    """
    require_gpus_for_fsdp(train_config.strategy)
    if train_config.seq_len > model_config.max_seq_len:
        raise InfinitoError(
            f"--seq-len {train_config.seq_len} is above the model's max_seq_len {model_config.max_seq_len}"
        )
    device, precision = _device_and_precision(train_config.precision)
    try:
        compiled = compile_choice(train_config.compile, device, train_config.max_steps)
    except ValueError as err:
        raise InfinitoError(str(err)) from None
    return device, precision, compiled


def _open_run(
    model_config: InfinitoConfig, train_config: TrainConfig, run_dir: Path, *, resume: bool, force: bool
) -> RunFolder:
    """Open ``run_dir`` under the run-folder policy; a resume must keep the saved architecture."""
    requested = {"model": model_config.to_dict(), "train": asdict(train_config)}
    if resume and (run_dir / "config.json").is_file():
        saved = json.loads((run_dir / "config.json").read_text())
        diffs = config_differences(saved["model"], model_config.to_dict())
        if diffs:
            raise InfinitoError(f"{run_dir}: model config does not match the checkpoint: " + "; ".join(diffs))
    return open_run_dir(
        run_dir,
        package=PACKAGE,
        resume=resume,
        force=force,
        config=requested,
        resume_may_change=RESUME_MAY_CHANGE,
        run_files=("config.json", WEIGHTS_FILE),
    )


def _load_data(train_config: TrainConfig, out_dir: Path, *, resume: bool) -> PreparedData:
    """Read and tokenize the corpus; a resumed run reuses the tokenizer saved in its folder."""
    corpus = load_corpus(train_config.data, valid_fraction=train_config.valid_fraction)
    tokenizer = load_tokenizer(out_dir) if resume else None
    return prepare_data(
        corpus,
        train_config.seq_len,
        tokenizer=tokenizer,
        kind=train_config.tokenizer,
        vocab_size=train_config.vocab_size,
    )


def _resumed_history(run: RunFolder, last_ckpt: Path) -> dict[str, list[dict[str, Any]]] | None:
    """Cut the logs of a resumed run back to the step of ``last_ckpt`` and return what they keep.

    Returns:
        The kept ``metrics.jsonl`` records by split (``train``, ``eval``), or None on a rank that
        does not write the run folder.
    """
    try:
        resumed_step = int(torch.load(last_ckpt, map_location="cpu", weights_only=False)["global_step"])
    except Exception as exc:  # truncated, not a checkpoint, or not Lightning's
        raise InfinitoError(
            f"{last_ckpt}: damaged checkpoint, cannot resume ({type(exc).__name__}); start over with --force"
        ) from None
    if not run.is_writer:
        return None
    _truncate_jsonl(run.path / "grad_health.jsonl", resumed_step)
    records = _truncate_jsonl(run.path / "metrics.jsonl", resumed_step)
    return {
        split: [{k: v for k, v in r.items() if k != "split"} for r in records if r.get("split") == split]
        for split in ("train", "eval")
    }


def _write_run_config(
    run: RunFolder,
    model_config: InfinitoConfig,
    train_config: TrainConfig,
    data: PreparedData,
    device: str,
    precision: str,
) -> None:
    """Save a new run's tokenizer and ``config.json`` (model, training, data, device, precision)."""
    data.tokenizer.save(run.path)
    final_config = {"model": model_config.to_dict(), "train": asdict(train_config)}
    run.update(config=final_config)
    save_config(
        {**final_config, "data": data.summary(), "device": device, "precision": precision},
        run.path / "config.json",
    )


def _build_module(
    model_config: InfinitoConfig,
    train_config: TrainConfig,
    data: PreparedData,
    run: RunFolder,
    history: dict[str, list[dict[str, Any]]] | None,
    compiled: bool,
) -> InfinitoModule:
    """The LightningModule, freshly seeded; only the writing rank gets the run folder for its logs."""
    # Seeded again so the initial weights do not depend on whether the data was prepared here or
    # passed in.
    seed_everything(train_config.seed)
    module = InfinitoModule(
        model_config,
        train_config,
        data.tokenizer.byte_lengths(),
        (data.valid.n_words, data.valid.n_bytes),
        _proxy_ids(data, train_config.proxy_sequences),
        run.path if run.is_writer else None,
        compiled=compiled,
    )
    if history is not None:
        module.history = history
    return module


@dataclass(frozen=True)
class _StopMonitors:
    """The callbacks whose state says why a fit ended."""

    health: GradientHealthCallback
    early: L.pytorch.callbacks.EarlyStopping
    signal: StopSignal


def _infinito_callbacks(
    train_config: TrainConfig, out_dir: Path, last_ckpt: Path, *, progress: bool
) -> tuple[list[L.Callback], _StopMonitors]:
    """Gradient health, best/last checkpoints, early stopping, SIGINT/SIGTERM and the progress bar."""
    # A skipped step is no optimizer step: global_step, max_steps and the logs count updates.
    health = GradientHealthCallback(HealthConfig(clip_norm=train_config.clip_norm))
    # SignalSafeCheckpoint: a Ctrl-C's mid-epoch last.ckpt is not overwritten at the end of fit
    checkpoints = SignalSafeCheckpoint(
        dirpath=out_dir / CHECKPOINT_DIR,
        filename="best",
        monitor="val_loss",
        mode="min",
        save_top_k=1,
        save_last=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    early = L.pytorch.callbacks.EarlyStopping(
        monitor="val_loss",
        patience=train_config.patience,
        min_delta=1e-4,
        mode="min",
        check_on_train_epoch_end=False,
    )
    stop = StopSignal()
    own: list[L.Callback] = [health, checkpoints, early, StopOnSignal(stop, last_ckpt)]
    if progress:
        own.append(StepsProgressBar(leave=True))
    return own, _StopMonitors(health, early, stop)


def _build_trainer(
    train_config: TrainConfig,
    device: str,
    precision: str,
    run: RunFolder,
    callbacks: list[L.Callback],
    *,
    progress: bool,
    precision_plugins: Sequence[Any],
) -> L.Trainer:
    """The Lightning trainer for ``train_config``; TensorBoard only on the writing rank."""
    out_dir = run.path
    return L.Trainer(
        accelerator="cuda" if device == "cuda" else "mps" if device == "mps" else "cpu",
        devices=parse_devices(train_config.devices),
        num_nodes=train_config.num_nodes,
        strategy=train_config.strategy,
        # a Lightning precision name (_device_and_precision resolved "auto")
        precision=None if precision_plugins else cast("_PRECISION_INPUT", precision),
        max_steps=train_config.max_steps,
        max_epochs=-1,
        accumulate_grad_batches=train_config.grad_accum,
        val_check_interval=train_config.eval_every * train_config.grad_accum,
        check_val_every_n_epoch=None,
        limit_val_batches=train_config.eval_batches or 1.0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # EpochBatchSampler and _ValidationShard shard by rank
        logger=tensorboard_logger(out_dir) if run.is_writer else False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO(), *precision_plugins],
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=1,
        default_root_dir=str(out_dir),
        deterministic=False,
    )


def _fit(
    trainer: L.Trainer,
    module: InfinitoModule,
    datamodule: InfinitoDataModule,
    stop: StopSignal,
    ckpt_path: Path | None,
) -> None:
    """``trainer.fit`` with SIGINT/SIGTERM turned into a stop request and Lightning's known warnings off."""
    with stop, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ReduceLROnPlateau conditioned on metric.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*`training_step` returned `None`.*")
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)


def _raise_if_interrupted(stop: StopSignal, run: RunFolder, trainer: L.Trainer, last_ckpt: Path) -> None:
    """After SIGINT/SIGTERM: mark the run interrupted and raise with the command that resumes it."""
    if not stop.requested:
        return
    if run.is_writer:
        run.mark_interrupted(step=trainer.global_step, checkpoint=str(last_ckpt))
    raise stop.interrupted(
        f"at step {trainer.global_step}, checkpoint {last_ckpt}",
        f"infinito train --resume {run.final_path}",
    )


def _stop_reason(monitors: _StopMonitors, trainer: L.Trainer, train_config: TrainConfig) -> str:
    """Why training ended before ``max_steps`` ("" when it did not).

    Raises :class:`~lm_shared.runs.NonFiniteError` when the gradient-health check stopped it.
    """
    if monitors.health.stop_reason:
        raise NonFiniteError(f"training stopped at step {trainer.global_step}: {monitors.health.stop_reason}")
    early = monitors.early
    if early.stopped_epoch or (
        early.wait_count >= early.patience and trainer.global_step < train_config.max_steps
    ):
        return f"early stopping: no validation improvement in {train_config.patience} evaluations"
    return ""


def _save_best_model(
    module: InfinitoModule, out_dir: Path, model_config: InfinitoConfig, last_step: int
) -> tuple[InfinitoLM, int]:
    """The trained model on the CPU with the best validation weights, saved as ``model.safetensors``,
    and the step those weights are from (``last_step`` when no validation saved a best)."""
    model = module.model.cpu()
    best = out_dir / CHECKPOINT_DIR / "best.ckpt"
    step = last_step
    if best.is_file():
        saved = load_checkpoint(best, model_config)
        model.load_state_dict(saved["model"], strict=True)
        step = int(saved["global_step"]) if saved["global_step"] is not None else last_step
    save_weights(model, out_dir / WEIGHTS_FILE)
    return model, step


def _final_metrics(
    model: InfinitoLM, data: PreparedData, train_config: TrainConfig, log: Callable[[str], None]
) -> dict[str, Any]:
    """Score the whole validation split: loss, bpb, Φ proxy, leakage warning, phi weights, size."""
    final: dict[str, Any] = evaluate(
        model,
        data.valid.inputs,
        data.valid.labels,
        data.tokenizer.byte_lengths(),
        data.valid.n_words,
        data.valid.n_bytes,
        batch_size=train_config.batch_size,
    )
    if train_config.proxy_k:
        proxy_ids = _proxy_ids(data, train_config.proxy_sequences)
        if proxy_ids.shape[0] >= 2:
            report = model_phi_proxy(model, proxy_ids, k=train_config.proxy_k)
            final["phi_proxy"], final["phi_proxy_total_mi"] = report.phi, report.total_mi
    warning = leakage_warning(data.corpus, final)
    if warning:
        log(warning)
        final["leakage_warning"] = warning
    if model.phi_weights is not None:
        final["phi_weights"] = model.phi_weights.as_dict()
    final["parameters"] = model.num_parameters()
    return final


def _finish_run(
    run: RunFolder,
    history: dict[str, list[dict[str, Any]]],
    final: dict[str, Any],
    stopped: str,
    step: int,
    log: Callable[[str], None],
) -> Path:
    """Write ``history.json`` and ``metrics.json`` and mark the run finished.

    Returns:
        The run's final folder.
    """
    save_config(history, run.path / "history.json")
    save_config(final, run.path / "metrics.json")
    if stopped:
        log(stopped)
    final_dir = run.finish(step=step)
    log(f"run finished: {final_dir} (step {step})")
    return final_dir


def train(
    model_config: InfinitoConfig,
    train_config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    force: bool = False,
    data: PreparedData | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
    callbacks: list[L.Callback] | None = None,
    precision_plugins: Sequence[Any] = (),
    command_config: str | None = None,
) -> TrainResult:
    """Train one model into ``run_dir`` under the run-folder policy (new, ``resume`` or ``force``).

    ``callbacks`` run before infinito's own (gradient health, checkpoints, early stopping), so a
    callback sees each hook first (the fault-injection kit's gradient faults rely on it).
    ``precision_plugins`` replace ``train_config.precision`` with Lightning precision plugins (the
    kit's fp16 ``MixedPrecision`` with a CPU GradScaler). ``command_config`` (the command's
    settings as YAML, :mod:`lm_shared.config_cli`) is saved as the run's ``config.yaml``, which
    ``infinito train --config`` loads again.

    Raises :class:`InfinitoError` for bad settings or folders (before any work),
    :class:`~lm_shared.runs.NonFiniteError` when training diverges (nothing non-finite saved) and
    :class:`~lm_shared.runs.TrainingInterrupted` after SIGINT/SIGTERM (a resumable checkpoint saved).
    """
    start_time = time.perf_counter()
    device, precision, compiled = _check_settings(model_config, train_config)
    run_dir = Path(run_dir)
    run = _open_run(model_config, train_config, run_dir, resume=resume, force=force)
    with run:
        last_ckpt = run.final_path / CHECKPOINT_DIR / "last.ckpt"
        if resume and not last_ckpt.is_file():
            raise InfinitoError(f"{run_dir}: nothing to resume (no {CHECKPOINT_DIR}/last.ckpt)")
        seed_everything(train_config.seed)
        if data is None:
            data = _load_data(train_config, run.path, resume=resume)
        if model_config.vocab_size != data.tokenizer.vocab_size:
            model_config = replace(model_config, vocab_size=data.tokenizer.vocab_size)
        if command_config is not None and run.is_writer:
            atomic_write_text(run.path / COMMAND_CONFIG_FILE, command_config)
        history = None
        if resume:
            history = _resumed_history(run, last_ckpt)
        elif run.is_writer:
            _write_run_config(run, model_config, train_config, data, device, precision)
        if run.is_writer:
            log(f"torch.compile: {compiled.reason}")
        module = _build_module(model_config, train_config, data, run, history, compiled.enabled)
        own_callbacks, monitors = _infinito_callbacks(train_config, run.path, last_ckpt, progress=progress)
        trainer = _build_trainer(
            train_config,
            device,
            precision,
            run,
            [*(callbacks or []), *own_callbacks],
            progress=progress,
            precision_plugins=precision_plugins,
        )
        datamodule = InfinitoDataModule(data, train_config)
        _fit(trainer, module, datamodule, monitors.signal, last_ckpt if resume else None)
        _raise_if_interrupted(monitors.signal, run, trainer, last_ckpt)
        agree = _weights_agree(module, trainer) if trainer.world_size > 1 else True
        if not trainer.is_global_zero:
            return TrainResult(run.final_path, module.model, data, {}, module.history, "", 0.0)

        stopped = _stop_reason(monitors, trainer, train_config)
        model, best_step = _save_best_model(module, run.path, model_config, trainer.global_step)
        final = _final_metrics(model, data, train_config, log)
        seconds = time.perf_counter() - start_time
        final.update(
            train_seconds=seconds,
            steps=trainer.global_step,
            best_step=best_step,  # the step of the weights scored here (model.safetensors)
            stopped=stopped,
            world_size=trainer.world_size,
            ranks_agree=agree,
            compiled=compiled.enabled,
            compile_reason=compiled.reason,
        )
        final_dir = _finish_run(run, module.history, final, stopped, trainer.global_step, log)
        return TrainResult(final_dir, model, data, final, module.history, stopped, seconds)
