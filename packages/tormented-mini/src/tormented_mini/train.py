"""Masked-LM pre-training on Lightning, with the lm_shared gradient-health monitor.

The Lightning ``Trainer`` owns devices and strategy (``--devices``, ``--num-nodes``, ``--strategy``),
precision (autocast and, for fp16, the grad scaler), checkpoints and resume, TensorBoard, the
progress bar and early stopping. The optimizer step is manual (``automatic_optimization = False``)
because the original's repair policy re-runs a batch: :class:`lm_shared.stability.GradientHealthMonitor`
runs forward and backward, calls Lightning's ``on_before_optimizer_step`` hooks (after the fp16
scaler's ``unscale_``), checks the gradients once per attempt, clips, skips a non-finite attempt
without touching parameters, optimizer state, schedule or step counter, and runs the batch again:
at half the LR (up to ``max_retries`` times, then checkpoint and stop), or after the fp16 scaler's
own overflow at its lowered scale with the LR unchanged. Every training batch thus ends with one
applied optimizer update, counted in ``global_step``, and the LR schedule steps once per update.

Data is indexed by the global step (:func:`tormented_mini.data.batch_for_step`): the rows and masks
of step ``k`` depend only on the seed and ``k``, so a run resumed at any step, mid-epoch included,
sees exactly the batches of the uninterrupted run, whatever the number of devices. ``batch_size``
is the global batch per optimizer step; each of ``world_size`` ranks takes its slice, and the MLM
loss is normalised by the global count of masked tokens, so the averaged gradient equals the
one-process gradient.

The run folder ``out`` ends up as a Hugging Face folder (config.json with auto_map, the modeling
file, model.safetensors, tokenizer files) plus ``train_config.json``, ``model_config.json``,
``config.yaml`` (the command's settings; ``train --config`` loads it again),
``checkpoints/last.ckpt`` (Lightning, for ``--resume``), ``stability.jsonl`` (one gradient-health
record per optimizer-step attempt), ``metrics.jsonl`` (evaluations) and ``tb/`` (TensorBoard).
Only global rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lm_shared.resumable import LastCheckpoint
from lm_shared.runs import (
    RunFolder,
    StopSignal,
    atomic_path,
    atomic_write_text,
    check_finite_parameters,
    open_run_dir,
)
from lm_shared.runs_lightning import AtomicCheckpointIO, StepsProgressBar, StopOnSignal
from lm_shared.runtime import (
    COMPILE_MODES,
    compile_choice,
    compile_mode,
    compile_module,
    detect_device,
    detect_precision,
    save_config,
    seed_everything,
)
from lm_shared.stability import GradientHealthMonitor, HealthConfig, TrainingStopped
from lm_shared.tokenization import BPETokenizer, TokenizerError
from tormented_mini.data import (
    EncodedCorpus,
    SpecialIds,
    batch_for_step,
    build_tokenizer,
    default_corpus,
    encode_corpus,
    load_hf_texts,
    load_texts,
    mask_tokens,
    to_transformers_tokenizer,
)
from tormented_mini.errors import CheckpointError, DataError, TormentedError
from tormented_mini.modeling_tormented import (
    PRESETS,
    ODEBlock,
    TormentedBertConfig,
    TormentedBertForMaskedLM,
    UltraConfig,
)

if TYPE_CHECKING:
    from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")
STRATEGIES = ("auto", "ddp", "fsdp")
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
COMMAND_CONFIG_FILE = "config.yaml"  # the command's settings, for `tormented-mini train --config`
# Settings a resumed run may change; every other field must match the run's own train_config.json.
# The global batch stays the same whatever the devices, micro-batches or compilation.
RESUMABLE_CHANGES = frozenset(
    {
        "out",
        "max_steps",
        "eval_every",
        "eval_batches",
        "threads",
        "devices",
        "num_nodes",
        "strategy",
        "accumulate_grad_batches",
        "compile",
    }
)


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``train_config.json`` next to the outputs."""

    model: str = "mini"  # architecture family: "mini" | "frankenstein"
    size: str = "auto"  # cpu preset, the original's full size, or auto (full on a GPU, cpu otherwise)
    out: str = "runs/tormented-mini"  # run folder (becomes a Hugging Face model folder)
    data: str | None = None  # UTF-8 text file or folder of .txt files (default: the embedded corpus)
    # Hugging Face dataset name, e.g. erickfmm/red_pajama_es_hq_35 (default: none, --data or the embedded corpus)
    hf_dataset: str | None = None
    hf_config: str | None = None  # dataset configuration name (default: the dataset's)
    hf_split: str = "train"  # dataset split
    text_field: str = "text"  # dataset column holding the text
    max_docs: int = 20_000  # documents read from --hf-dataset
    vocab_size: int = 8192  # BPE vocabulary cap (a small corpus stops earlier)
    seq_len: int = 64  # tokens per packed row, [CLS] and [SEP] included
    batch_size: int = 16  # rows per optimizer step, over all devices and micro-batches
    accumulate_grad_batches: int = 1  # micro-batches per optimizer step; each is batch-size / this many rows
    max_steps: int = 300  # optimizer steps
    lr: float = 1e-3  # peak AdamW learning rate (small models; the original used 1e-4 at 1024 wide)
    ode_lr_scale: float = 0.5  # ODE-layer LR multiplier (the original: 5e-5 vs 1e-4)
    weight_decay: float = 0.01  # AdamW decay on matrices only (not on norms, biases, gains)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas (the original's)
    warmup_steps: int = 30  # linear warmup, then cosine to min_lr_ratio * lr
    min_lr_ratio: float = 0.1  # floor of the cosine schedule
    clip_norm: float = 1.0  # global gradient-norm clipping threshold (the original's 1.0)
    max_retries: int = 3  # LR-halving retries of a non-finite batch before checkpoint-and-stop
    patience: int = 5  # evaluations of plateau with vanishing gradients before early stop
    mask_prob: float = 0.15  # MLM masking rate (80/10/10 inside)
    val_fraction: float = 0.1  # held-out share of the documents (the last ones)
    eval_every: int = 100  # steps between evaluations and checkpoints
    eval_batches: int = 8  # held-out batches per evaluation (0 = all)
    # auto: bf16-mixed or 16-mixed on GPUs that run them fast, 32-true elsewhere (lm_shared.detect_precision)
    precision: str = "auto"
    seed: int = 0  # one seed for data order, masking and init
    threads: int = 0  # torch CPU threads (0: auto, 1 for the CPU presets, torch default otherwise)
    devices: str = "auto"  # Lightning devices: auto, a count or a list like 0,1
    num_nodes: int = 1  # machines (torchrun / SLURM provide the rendezvous)
    strategy: str = "auto"  # Lightning strategy; ddp for several GPUs or nodes
    # torch.compile the forward pass: auto = where Inductor finds a C++ compiler (Triton on CUDA) and
    # the run has >= 1,000 steps | on (--compile alone) | off; checkpoints do not depend on it
    compile: str = "auto"
    norm_type: str | None = None  # normalisation layer (default: the preset's)
    use_hope: bool | None = None  # HoPE position encoding (default: the preset's)
    use_bitnet: bool | None = None  # BitLinear 1.58-bit layers (default: the preset's)
    use_moe: bool | None = None  # mixture-of-experts feed-forward (default: the preset's)
    use_titan_memory: bool | None = None  # Titans memory branch (default: the preset's)
    # other UltraConfig fields over the preset, a JSON object such as '{"layer_pattern": ["retnet"]}'
    # (--model-config FILE adds a file's; default: none)
    model_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        self.devices = str(self.devices)
        self.compile = compile_mode(self.compile)  # type: ignore[assignment]
        if self.compile not in COMPILE_MODES:
            raise TormentedError(f"--compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        if self.model not in ("mini", "frankenstein"):
            raise TormentedError(f"--model must be 'mini' or 'frankenstein', got {self.model!r}")
        if self.size not in ("auto", "cpu", "full"):
            raise TormentedError(f"--size must be auto, cpu or full, got {self.size!r}")
        if self.precision not in PRECISIONS:
            raise TormentedError(
                f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.strategy not in STRATEGIES:
            raise TormentedError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.data is not None and self.hf_dataset is not None:
            raise TormentedError("give either --data or --hf-dataset, not both")
        for name in (
            "seq_len",
            "batch_size",
            "max_steps",
            "eval_every",
            "vocab_size",
            "num_nodes",
            "accumulate_grad_batches",
            "patience",
            "max_docs",
        ):
            if getattr(self, name) < 1:
                raise TormentedError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_batches", "threads", "warmup_steps", "max_retries"):
            if getattr(self, name) < 0:
                raise TormentedError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.seq_len < 8:
            raise TormentedError(f"--seq-len must be >= 8, got {self.seq_len}")
        if self.vocab_size < 64:
            raise TormentedError(
                f"--vocab-size must be >= 64 (specials plus the byte alphabet), got {self.vocab_size}"
            )
        for name in ("lr", "clip_norm", "ode_lr_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise TormentedError(f"--{name.replace('_', '-')} must be a finite number > 0, got {value}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise TormentedError(f"--weight-decay must be a finite number >= 0, got {self.weight_decay}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise TormentedError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not all(0 <= b < 1 for b in self.betas):
            raise TormentedError(f"betas must be in [0, 1), got {self.betas}")
        if not 0 < self.mask_prob < 1:
            raise TormentedError(f"--mask-prob must be in (0, 1), got {self.mask_prob}")
        if not 0 < self.val_fraction < 1:
            raise TormentedError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.batch_size % self.accumulate_grad_batches:
            raise TormentedError(
                f"--batch-size {self.batch_size} must be a multiple of --accumulate-grad-batches "
                f"{self.accumulate_grad_batches}"
            )
        devices = self.devices.replace(",", "").replace("-", "")
        if self.devices != "auto" and not devices.isdigit():
            raise TormentedError(
                f"--devices must be 'auto', a count or a comma-separated list, got {self.devices!r}"
            )

    def preset_name(self, device: str) -> str:
        size = self.size if self.size != "auto" else ("full" if device == "cuda" else "cpu")
        return self.model if size == "full" else f"{self.model}-cpu"

    def model_config(self, vocab_size: int, device: str) -> UltraConfig:
        overrides: dict[str, Any] = dict(self.model_overrides)
        for name in ("norm_type", "use_hope", "use_bitnet", "use_moe", "use_titan_memory"):
            value = getattr(self, name)
            if value is not None:
                overrides[name] = value
        preset = PRESETS[self.preset_name(device)]()
        overrides["vocab_size"] = vocab_size
        overrides["max_position_embeddings"] = max(preset.max_position_embeddings, self.seq_len)
        return preset.replace(**overrides)

    def lightning_devices(self) -> int | str | list[int]:
        if self.devices == "auto" or self.devices == "-1":
            return self.devices if self.devices == "auto" else -1
        if "," in self.devices:
            return [int(d) for d in self.devices.split(",") if d]
        return int(self.devices)


@dataclass
class TrainResult:
    out: Path
    steps: int
    stopped: bool  # True when the health monitor stopped training
    stop_reason: str
    val_mlm_loss: float
    val_masked_acc: float
    train_seconds: float
    seconds_per_step: float  # after the first step (which compiles, when compiled), validation included
    n_params: int
    precision: str
    history: list[dict[str, float]]
    compiled: bool = False  # the forward was torch.compiled (see compile_reason)
    compile_reason: str = ""  # why, as lm_shared.runtime.compile_choice says
    first_step_seconds: float = 0.0  # the first step of this fit (torch.compile's work included)


# ==================================================================================== helpers
def load_corpus_texts(cfg: TrainConfig) -> list[str]:
    if cfg.hf_dataset:
        return load_hf_texts(cfg.hf_dataset, cfg.hf_split, cfg.text_field, cfg.max_docs, cfg.hf_config)
    if cfg.data:
        return load_texts(cfg.data)
    return default_corpus()


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Four groups: {ODE, other} x {decayed matrices, undecayed vectors}; ODE at ode_lr_scale * lr."""
    ode_ids = {id(p) for m in model.modules() if isinstance(m, ODEBlock) for p in m.parameters()}
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    seen: set[int] = set()
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        key = (id(p) in ode_ids, p.ndim >= 2)
        groups.setdefault(key, []).append(p)
    return [
        {
            "params": params,
            "lr": cfg.lr * (cfg.ode_lr_scale if is_ode else 1.0),
            "weight_decay": cfg.weight_decay if is_matrix else 0.0,
            "name": f"{'ode' if is_ode else 'main'}_{'decay' if is_matrix else 'no_decay'}",
        }
        for (is_ode, is_matrix), params in sorted(groups.items())
    ]


def warmup_cosine(cfg: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _append_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    if not records:
        return
    with path.open("a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in records))
        fh.flush()


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Drop records after ``last_step`` (written by a run killed after its last checkpoint), so a
    resumed run continues the log with true step numbers and no duplicates."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if isinstance(record, dict) and int(record.get("step", 0)) <= last_step:
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))


# ==================================================================================== data
class StepBatches(Dataset):
    """Item ``k`` is this rank's slice of training step ``k``'s masked global batch.

    Rows come from :func:`batch_for_step` and masks from a generator seeded by ``(seed, k)``, both
    for the whole global batch, so every rank and every resume sees the one-process batch.
    """

    def __init__(self, rows: torch.Tensor, cfg: TrainConfig, ids: SpecialIds, vocab_size: int) -> None:
        self.rows, self.cfg, self.ids, self.vocab_size = rows, cfg, ids, vocab_size
        self.rank, self.world_size = 0, 1

    def __len__(self) -> int:
        return self.cfg.max_steps

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        rows = batch_for_step(self.rows, cfg.batch_size, step, cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        inputs, labels = mask_tokens(rows, self.ids, self.vocab_size, cfg.mask_prob, generator)
        n_masked = (labels != -100).sum()
        per_rank = rows.shape[0] // self.world_size
        part = slice(self.rank * per_rank, (self.rank + 1) * per_rank)
        return {
            "input_ids": inputs[part],
            "labels": labels[part],
            "attention_mask": (rows[part] != self.ids.pad).long(),
            "n_masked_global": n_masked,
            "step": torch.tensor(step),
        }


class StepSampler(Sampler[int]):
    """Yields the global step indices of one epoch, from the trainer's current step on.

    An epoch is ``steps_per_epoch`` steps (one pass over the rows). The first step comes from the
    trainer's ``global_step`` when the epoch's iterator is created, so a run restored from a
    mid-epoch checkpoint continues exactly where it stopped. ``state_dict`` records the next step
    for Lightning's resumable-loader support.
    """

    def __init__(self, steps_per_epoch: int, max_steps: int, current_step: Callable[[], int]) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.max_steps = max_steps
        self.current_step = current_step

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[int]:
        start = self.current_step()
        end = min(self.max_steps, (start // self.steps_per_epoch + 1) * self.steps_per_epoch)
        return iter(range(start, end))


class StepLoader(DataLoader):
    """A DataLoader whose position is the trainer's step (Lightning's ``_Stateful`` protocol)."""

    def __init__(self, dataset: StepBatches, sampler: StepSampler) -> None:
        super().__init__(dataset, sampler=sampler, batch_size=None)
        self.step_sampler = sampler

    def state_dict(self) -> dict[str, int]:
        return {"next_step": self.step_sampler.current_step()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        restored = self.step_sampler.current_step()
        if int(state.get("next_step", restored)) != restored:
            raise CheckpointError(
                f"checkpoint's data position (step {state['next_step']}) differs from its step counter ({restored})"
            )


class HeldOutBatches(Dataset):
    """The held-out rows in ``batch_size`` chunks with fixed masks (generator seed 12345); under
    several processes each rank takes its share of every chunk's rows (like a training batch), so
    every rank has every batch, even with ``--eval-batches 1``; metrics are summed over ranks.
    A rank's share of a short last chunk may be empty (``validation_step`` skips it)."""

    def __init__(self, rows: torch.Tensor, cfg: TrainConfig, ids: SpecialIds, vocab_size: int) -> None:
        generator = torch.Generator().manual_seed(12_345)
        starts = range(0, rows.shape[0], cfg.batch_size)
        if cfg.eval_batches:
            starts = starts[: cfg.eval_batches]
        self.batches = []
        for start in starts:
            chunk = rows[start : start + cfg.batch_size]
            inputs, labels = mask_tokens(chunk, ids, vocab_size, cfg.mask_prob, generator)
            self.batches.append(
                {"input_ids": inputs, "labels": labels, "attention_mask": (chunk != ids.pad).long()}
            )
        self.mine = self.batches

    def shard(self, rank: int, world_size: int) -> None:
        self.mine = [{k: v[rank::world_size] for k, v in batch.items()} for batch in self.batches]

    def __len__(self) -> int:
        return len(self.mine)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.mine[i]


class TormentedDataModule(L.LightningDataModule):
    """Training batches indexed by step (exact resume, any device count) and fixed held-out masks."""

    def __init__(self, corpus: EncodedCorpus, cfg: TrainConfig, vocab_size: int) -> None:
        super().__init__()
        self.corpus, self.cfg, self.vocab_size = corpus, cfg, vocab_size
        self.train_set = StepBatches(corpus.train, cfg, corpus.ids, vocab_size)
        self.val_set = HeldOutBatches(corpus.val, cfg, corpus.ids, vocab_size)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.corpus.train.shape[0] // self.cfg.batch_size)

    def setup(self, stage: str | None = None) -> None:
        trainer = self.trainer
        world = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        per_step = self.cfg.batch_size // self.cfg.accumulate_grad_batches
        if per_step % world:
            raise TormentedError(
                f"--batch-size {self.cfg.batch_size} / --accumulate-grad-batches "
                f"{self.cfg.accumulate_grad_batches} must be a multiple of the {world} processes"
            )
        self.train_set.rank, self.train_set.world_size = rank, world
        self.val_set.shard(rank, world)

    def train_dataloader(self) -> StepLoader:
        sampler = StepSampler(
            self.steps_per_epoch, self.cfg.max_steps, lambda: self.trainer.global_step if self.trainer else 0
        )
        return StepLoader(self.train_set, sampler)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=None)


# ==================================================================================== module
class TormentedMLMModule(L.LightningModule):
    """The masked LM with manual optimisation through :class:`GradientHealthMonitor`."""

    # The model, or its torch.compile wrapper; returns a TormentedMaskedLMOutput.
    _forward: Callable[..., Any]

    def __init__(
        self,
        cfg: TrainConfig,
        model_config: UltraConfig,
        ids: SpecialIds,
        out: Path,
        compile_for: str | None = None,
    ) -> None:
        """``compile_for``: the device type to ``torch.compile`` the forward for, None = eager."""
        super().__init__()
        self.automatic_optimization = False
        self.cfg, self.model_config, self.ids, self.out = cfg, model_config, ids, out
        hf_config = TormentedBertConfig.from_ultra(
            model_config,
            pad_token_id=ids.pad,
            mask_token_id=ids.mask,
            bos_token_id=ids.cls,
            eos_token_id=ids.sep,
        )
        self.model = TormentedBertForMaskedLM(hf_config)
        # The compiled forward is not registered as a submodule, so state_dict keys never carry
        # ``_orig_mod.``: checkpoints load with or without --compile.
        forward = compile_module(self.model, compile_for) if compile_for else self.model
        object.__setattr__(self, "_forward", forward)
        self.monitor: GradientHealthMonitor | None = None
        self.monitor_state: dict[str, Any] = {"step": 0}
        self.history: list[dict[str, float]] = []
        self.pending_records: list[dict[str, Any]] = []
        self.last_mlm_loss = self.last_loss = float("nan")
        self.stop_reason = ""
        self._val_sums = torch.zeros(3, dtype=torch.float64)
        self.train_seconds = 0.0
        self.first_step_seconds: float | None = None

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        optimizer = torch.optim.AdamW(
            param_groups(self.model, self.cfg), lr=self.cfg.lr, betas=self.cfg.betas
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(self.cfg))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_start(self) -> None:
        optimizer = self.optimizers(use_pl_optimizer=False)
        scheduler = self.lr_schedulers()
        # configure_optimizers returns one of each
        assert isinstance(optimizer, torch.optim.Optimizer)
        assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        cfg = self.cfg
        self.monitor = GradientHealthMonitor(
            self.model,
            optimizer,
            HealthConfig(clip_norm=cfg.clip_norm, max_retries=cfg.max_retries, patience=cfg.patience),
            scaler=scaler,
            schedulers=[scheduler],
            backward=self.manual_backward,
            before_check=lambda: self._on_before_optimizer_step(optimizer),
        )
        for key, value in self.monitor_state.items():
            setattr(self.monitor, key, value)
        self._train_start = time.perf_counter()

    def on_train_end(self) -> None:
        self.train_seconds = time.perf_counter() - self._train_start

    def _on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # The monitor steps the raw optimizer, so Lightning never reaches this hook itself: call
        # it where Lightning would (after the scaler's unscale_, before the step), for callbacks
        # that read or change the gradients, then the module's own.
        trainer = self.trainer
        # Lightning's callback connector sets Trainer.callbacks; the class does not declare it.
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            callback.on_before_optimizer_step(trainer, self, optimizer)
        self.on_before_optimizer_step(optimizer)

    def _micro_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss to backpropagate, summed MLM loss of this rank's masked tokens)."""
        out = self._forward(batch["input_ids"], attention_mask=batch["attention_mask"])
        labels = batch["labels"]
        mlm_sum = torch.nn.functional.cross_entropy(
            out.logits.float().reshape(-1, out.logits.shape[-1]),
            labels.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )
        # DDP averages gradients over ranks: scaling by world_size / global count makes the mean
        # the gradient of the one-process loss (mean over every masked token of the global batch).
        n_global = batch["n_masked_global"].clamp(min=1).to(mlm_sum.dtype)
        scale = self.trainer.world_size / n_global
        aux = out.aux_loss / self.cfg.accumulate_grad_batches
        return mlm_sum * scale + aux, torch.stack([mlm_sum.detach(), aux.detach().float()])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        """One optimizer step on the global batch (its micro-batches, and its retries when an
        attempt is skipped); returns the global batch's loss (MLM + MoE auxiliary), ``None`` when
        the health monitor stopped training."""
        assert self.monitor is not None
        accumulate = self.cfg.accumulate_grad_batches
        micro = [
            {k: (v.chunk(accumulate) if v.dim() else [v] * accumulate)[i] for k, v in batch.items()}
            for i in range(accumulate)
        ]
        mlm_sums: list[torch.Tensor] = []

        def loss_fn() -> torch.Tensor:
            mlm_sums.clear()
            for part in micro[:-1]:
                loss, mlm_sum = self._micro_loss(part)
                self.manual_backward(loss)
                mlm_sums.append(mlm_sum)
            loss, mlm_sum = self._micro_loss(micro[-1])
            mlm_sums.append(mlm_sum)
            return loss

        try:
            record = self.monitor.train_step(loss_fn)
        except TrainingStopped as exc:
            self._finish_records()
            self.stop_reason = str(exc)
            self.trainer.should_stop = True
            self._count_step()
            return None
        # The global batch's MLM loss (summed over ranks) plus the ranks' mean MoE auxiliary loss.
        total = self.trainer.strategy.reduce(torch.stack(mlm_sums).sum(0), reduce_op="sum")
        self.last_mlm_loss = float(total[0] / batch["n_masked_global"].clamp(min=1))
        self.last_loss = self.last_mlm_loss + float(total[1]) / self.trainer.world_size
        self._finish_records()
        self._count_step()
        grad_norm = record.grad_norm if math.isfinite(record.grad_norm) else -1.0
        self.log_dict(
            {
                "train/mlm_loss": self.last_mlm_loss,
                "train/grad_norm": grad_norm,
                "train/lr": record.lr,
            },
            on_step=True,
            prog_bar=True,
            batch_size=int(batch["n_masked_global"]),
            rank_zero_only=True,
        )
        return torch.tensor(self.last_loss)

    def _finish_records(self) -> None:
        """Queue the monitor's new records for stability.jsonl, with the global-batch MLM loss."""
        assert self.monitor is not None
        for record in self.monitor.records:
            entry = dataclasses.asdict(record)
            if record.repair_action not in ("skip", "stop") and math.isfinite(self.last_loss):
                entry["loss"], entry["mlm_loss"] = self.last_loss, self.last_mlm_loss
            self.pending_records.append(entry)
        self.monitor.records.clear()

    def _count_step(self) -> None:
        # The monitor steps the raw optimizer (its retries and skips need the scaler's and the
        # schedule's exact bookkeeping), so the batch is counted as Lightning's optimizer step
        # here: global_step (max_steps, checkpoints, logging) counts training batches.
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        progress.increment_ready()
        progress.increment_completed()
        if self.first_step_seconds is None:
            self.first_step_seconds = time.perf_counter() - self._train_start

    # ------------------------------------------------------------------ evaluation
    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(3, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if batch["input_ids"].shape[0] == 0:  # this rank's share of a short last chunk
            return
        logits = self._forward(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"]
        picked = labels != -100
        loss = torch.nn.functional.cross_entropy(logits[picked].float(), labels[picked], reduction="sum")
        correct = (logits[picked].argmax(-1) == labels[picked]).sum()
        self._val_sums += torch.stack([loss.double(), correct.double(), picked.sum().double()])

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        metrics = {
            "val_mlm_loss": float(sums[0] / sums[2].clamp(min=1)),
            "val_masked_acc": float(sums[1] / sums[2].clamp(min=1)),
        }
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, rank_zero_only=True)
        self.log("val_mlm_loss", metrics["val_mlm_loss"], prog_bar=True, rank_zero_only=True)
        entry = {"step": self.trainer.global_step, **metrics, "train_mlm_loss": self.last_mlm_loss}
        self.history.append(entry)
        if self.trainer.is_global_zero:
            _append_jsonl(self.out / "metrics.jsonl", [entry])
        if self.monitor is not None and self.monitor.observe_validation(metrics["val_mlm_loss"]):
            self.stop_reason = self.monitor.stop_reason
            self.trainer.should_stop = True

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Raised before Lightning writes anything: the last checkpoint stays the last finite one.
        check_finite_parameters(self.model.named_parameters(), what="the tormented-mini model")
        monitor = self.monitor
        if monitor is not None:
            self.monitor_state = {
                "step": monitor.step,
                "consecutive_nonfinite": monitor.consecutive_nonfinite,
                "vanishing_since_validation": monitor.vanishing_since_validation,
                "_steps_since_validation": monitor._steps_since_validation,
                "_best_val": monitor._best_val,
                "_evals_without_improvement": monitor._evals_without_improvement,
            }
        checkpoint["tormented"] = {
            "monitor": self.monitor_state,
            "history": self.history,
            "last_mlm_loss": self.last_mlm_loss,
            "model_config": self.model_config.to_dict(),
            "train_config": dataclasses.asdict(self.cfg),
            "finished": self.trainer.global_step >= self.cfg.max_steps,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("tormented", {})
        self.monitor_state = dict(state.get("monitor", {"step": 0}))
        self.history = list(state.get("history", []))
        self.last_mlm_loss = float(state.get("last_mlm_loss", float("nan")))


class RunFiles(StopOnSignal):
    """Rank 0 appends the step records to stability.jsonl; a stop request (SIGINT/SIGTERM on any
    rank) saves a resumable checkpoint after the step and stops ``fit``, as its base
    :class:`~lm_shared.runs_lightning.StopOnSignal` does (every batch is a step boundary here:
    the optimization is manual)."""

    def __init__(
        self, module: TormentedMLMModule, checkpoint_path: Path, stop: StopSignal, run_folder: RunFolder
    ) -> None:
        super().__init__(stop, checkpoint_path)
        self.module = module
        self.run_folder = run_folder

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        module = self.module
        if trainer.is_global_zero:
            _append_jsonl(module.out / "stability.jsonl", module.pending_records)
        module.pending_records.clear()
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # run.json names the step an interrupted run continues from.
        self.run_folder.update(step=trainer.global_step)


# ==================================================================================== trainer
class MLMTrainer:
    """One run: the run folder, data, tokenizer, the Lightning module and Trainer, the HF folder.

    The run folder follows :func:`lm_shared.runs.open_run_dir`: a lock (a second training into
    ``out`` is refused with the holder's pid), a finished run is never overwritten without
    ``force`` (a forced re-run is built beside it and swapped in when it finishes), an unfinished
    one is continued with ``resume`` or refused with that advice.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        corpus: EncodedCorpus | None = None,
        tokenizer: BPETokenizer | None = None,
        resume: bool = False,
        force: bool = False,
        progress: bool = True,
        precision_plugins: list[Any] | None = None,
        command_config: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.progress = progress
        # The command's settings as YAML (lm_shared.config_cli), saved as config.yaml for --config.
        self.command_config = command_config
        # Lightning precision plugins in place of ``cfg.precision`` (the fault-injection kit's fp16
        # MixedPrecision with a CPU GradScaler).
        self.precision_plugins = list(precision_plugins or [])
        self.device = detect_device()
        self.precision = detect_precision(self.device) if cfg.precision == "auto" else cfg.precision
        if self.precision == "16-mixed" and self.device != "cuda":
            raise TormentedError("--precision 16-mixed needs a CUDA GPU; on CPU use 32-true or bf16-mixed")
        try:
            self.compiled = compile_choice(cfg.compile, self.device, cfg.max_steps)
        except ValueError as exc:
            raise TormentedError(str(exc)) from None
        if cfg.strategy == "fsdp":
            raise TormentedError(
                "--strategy fsdp is not supported by tormented-mini: its gradient-health check and "
                "LR-halving retry need whole gradients on every rank; use --strategy ddp (the full "
                "Mini preset is 43 M parameters and fits one GPU)"
            )
        created = not Path(cfg.out).exists()
        self.run_folder = open_run_dir(
            cfg.out,
            package="tormented-mini",
            resume=resume,
            force=force,
            config=dataclasses.asdict(cfg),
            resume_may_change=RESUMABLE_CHANGES,
            run_files=(CHECKPOINT_DIR, "train_config.json", "stability.jsonl"),
        )
        try:
            self._setup(corpus, tokenizer, resume)
        except BaseException:
            self.run_folder.release()
            if created and self.run_folder.is_writer:
                # Bad input found before any training leaves no run folder behind.
                shutil.rmtree(cfg.out, ignore_errors=True)
            raise

    def _setup(self, corpus: EncodedCorpus | None, tokenizer: BPETokenizer | None, resume: bool) -> None:
        cfg = self.cfg
        self.out = self.run_folder.path
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        elif self.device == "cpu" and cfg.preset_name(self.device).endswith("-cpu"):
            # CPU-size ops are too small to gain from a second thread, and OpenMP spin-waiting
            # makes them up to 100x slower when the cores are shared (measured; see README).
            torch.set_num_threads(1)
        self.checkpoint_path = self.out / CHECKPOINT_DIR / LAST_CHECKPOINT
        self.resume_state: dict[str, Any] | None = None
        if resume:
            self.resume_state = read_checkpoint(self.checkpoint_path, cfg.model)
            done = int(self.resume_state.get("global_step", 0))
            if done >= cfg.max_steps:
                raise CheckpointError(
                    f"{self.out}: the run finished ({done} of --max-steps {cfg.max_steps} steps); nothing to "
                    "resume. Pass a larger --max-steps to train further, or choose a new --out"
                )
        seed_everything(cfg.seed)

        # Data and tokenizer come first: bad input fails before any model is built.
        if tokenizer is None:
            if resume:
                try:
                    tokenizer = BPETokenizer.load(self.out / "tokenizer.json")
                except TokenizerError as exc:
                    raise CheckpointError(f"cannot resume: {exc}") from None
            else:
                texts = load_corpus_texts(cfg)
                tokenizer = build_tokenizer(texts, cfg.vocab_size)
                corpus = encode_corpus(texts, tokenizer, cfg.seq_len, cfg.val_fraction)
        if corpus is None:
            corpus = encode_corpus(load_corpus_texts(cfg), tokenizer, cfg.seq_len, cfg.val_fraction)
        if corpus.train.shape[0] < 1 or corpus.val.shape[0] < 1:
            raise DataError("the corpus is too small for a train/held-out split")
        self.tokenizer = tokenizer
        self.corpus = corpus
        self.ids = corpus.ids
        if self.resume_state is not None:
            self.model_config = UltraConfig(**self.resume_state["tormented"]["model_config"])
        else:
            self.model_config = cfg.model_config(tokenizer.vocab_size, self.device)
        compile_for = self.device if self.compiled.enabled else None
        self.module = TormentedMLMModule(cfg, self.model_config, self.ids, self.out, compile_for)
        self.datamodule = TormentedDataModule(corpus, cfg, self.model_config.vocab_size)

    @property
    def model(self) -> TormentedBertForMaskedLM:
        return self.module.model

    def close(self) -> None:
        """Release the run folder's lock (``run`` does it itself)."""
        self.run_folder.release()

    def build_trainer(
        self, stop: StopSignal, extra_callbacks: list[L.Callback] | None = None
    ) -> tuple[L.Trainer, RunFiles]:
        from lightning.pytorch.loggers import TensorBoardLogger
        from lightning.pytorch.strategies import DDPStrategy

        _quiet_lightning()
        cfg = self.cfg
        run_files = RunFiles(self.module, self.checkpoint_path, stop, self.run_folder)
        # Extra callbacks come first: they see each hook before tormented's own.
        callbacks: list[L.Callback] = [
            *(extra_callbacks or []),
            run_files,
            # last.ckpt every --eval-every steps and at epoch ends, always that one file (a plain
            # ModelCheckpoint wrote last-v1.ckpt, last-v2.ckpt, ... after a Ctrl-C and a resume)
            LastCheckpoint(self.out / CHECKPOINT_DIR, every_n_train_steps=cfg.eval_every),
        ]
        if self.progress:
            callbacks.append(StepsProgressBar(leave=True))
        # Unrouted experts get no gradient on a step: DDP must not wait for them.
        strategy: Any = DDPStrategy(find_unused_parameters=True) if cfg.strategy == "ddp" else cfg.strategy
        trainer = L.Trainer(
            accelerator="auto",
            devices=cfg.lightning_devices(),
            num_nodes=cfg.num_nodes,
            strategy=strategy,
            precision=None if self.precision_plugins else self.precision,  # type: ignore[arg-type]
            plugins=[AtomicCheckpointIO(), *self.precision_plugins],
            max_steps=cfg.max_steps,
            max_epochs=-1,
            val_check_interval=cfg.eval_every,
            check_val_every_n_epoch=None,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
            logger=TensorBoardLogger(str(self.out), name="tb", version=""),
            log_every_n_steps=1,
            callbacks=callbacks,
            enable_progress_bar=self.progress,
            enable_model_summary=False,
        )
        return trainer, run_files

    def save_pretrained(self) -> None:
        """Write the Hugging Face folder (AutoModelForMaskedLM / AutoTokenizer / fill-mask ready):
        every file is written in a temporary folder, then copied into ``out`` atomically."""
        import tempfile

        hf_tokenizer = to_transformers_tokenizer(self.tokenizer, self.model_config.max_position_embeddings)
        with tempfile.TemporaryDirectory(dir=self.out, prefix=".hf-") as tmp:
            self.model.save_pretrained(tmp)
            hf_tokenizer.save_pretrained(tmp)
            for path in Path(tmp).iterdir():
                if path.is_file():
                    # through atomic_path, whose file keeps the umask's mode: safetensors writes
                    # model.safetensors 0600 (safetensors#782), unreadable to other users
                    with atomic_path(self.out / path.name) as target:
                        shutil.copyfile(path, target)
        save_config(self.cfg, self.out / "train_config.json")
        save_config(self.model_config, self.out / "model_config.json")

    def run(self, extra_callbacks: list[L.Callback] | None = None) -> TrainResult:
        """Train to ``max_steps``; write the HF folder and mark the run finished.

        Raises :class:`lm_shared.runs.TrainingInterrupted` after SIGINT/SIGTERM (a resumable
        checkpoint was saved) and :class:`lm_shared.runs.NonFiniteError` when the parameters are
        no longer finite (nothing non-finite is saved). A gradient-health stop (non-finite
        gradients after every LR-halving retry) returns ``stopped=True`` with the finite model saved.
        """
        with self.run_folder, StopSignal() as stop:
            return self._run(stop, extra_callbacks)

    def _run(self, stop: StopSignal, extra_callbacks: list[L.Callback] | None) -> TrainResult:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        cfg = self.cfg
        trainer, run_files = self.build_trainer(stop, extra_callbacks)
        resuming = self.resume_state is not None
        if trainer.is_global_zero:
            with atomic_path(self.out / "tokenizer.json") as tmp:
                self.tokenizer.save(tmp)
            save_config(cfg, self.out / "train_config.json")
            save_config(self.model_config, self.out / "model_config.json")
            if self.command_config is not None:
                atomic_write_text(self.out / COMMAND_CONFIG_FILE, self.command_config)
            if resuming:
                done = int(self.resume_state["tormented"]["monitor"].get("step", 0))  # type: ignore[index]
                truncate_jsonl(self.out / "stability.jsonl", done)
                truncate_jsonl(self.out / "metrics.jsonl", int(self.resume_state["global_step"]))  # type: ignore[index]
        n_params = sum(p.numel() for p in self.model.parameters())
        start_step = int(self.resume_state["global_step"]) if resuming else 0  # type: ignore[index]
        # Lightning raises SIGTERMException on SIGTERM, after RunFiles saved the checkpoint.
        with contextlib.suppress(SIGTERMException):
            trainer.fit(
                self.module,
                datamodule=self.datamodule,
                ckpt_path=str(self.checkpoint_path) if resuming else None,
            )
        module = self.module
        if trainer.is_global_zero:
            _append_jsonl(self.out / "stability.jsonl", module.pending_records)
            module.pending_records.clear()
        if run_files.saved_step is not None:
            self.run_folder.mark_interrupted(step=run_files.saved_step, checkpoint=str(self.checkpoint_path))
            raise stop.interrupted(
                f"at step {run_files.saved_step}, checkpoint saved",
                f"tormented-mini train --out {self.run_folder.final_path} --resume",  # as the other members print it
            )
        check_finite_parameters(self.model.named_parameters(), what="the tormented-mini model")
        stopped = bool(module.stop_reason)
        last = module.history[-1]["step"] if module.history else -1
        if last != trainer.global_step and not stopped:
            trainer.validate(module, datamodule=self.datamodule, verbose=False)
        trainer.save_checkpoint(self.checkpoint_path, weights_only=False)
        if trainer.is_global_zero:
            self.save_pretrained()
        if stopped:
            self.run_folder.mark_interrupted(step=trainer.global_step, stop_reason=module.stop_reason)
            out = self.out
        metrics = module.history[-1] if module.history else {}
        done = trainer.global_step - start_step
        first = module.first_step_seconds or 0.0
        # the first step compiles the model (tens of seconds) when compiled: leave it out
        per_step = (
            (module.train_seconds - first) / (done - 1) if done > 1 else module.train_seconds / max(1, done)
        )
        timing = {
            "seconds_per_step": per_step,
            "first_step_seconds": first,
            "compiled": self.compiled.enabled,
            "compile_reason": self.compiled.reason,
        }
        if not stopped:
            out = self.run_folder.finish(step=trainer.global_step, **timing)
        return TrainResult(
            out=out,
            steps=trainer.global_step,
            stopped=stopped,
            stop_reason=module.stop_reason,
            val_mlm_loss=float(metrics.get("val_mlm_loss", float("nan"))),
            val_masked_acc=float(metrics.get("val_masked_acc", float("nan"))),
            train_seconds=module.train_seconds,
            seconds_per_step=per_step,
            n_params=n_params,
            precision=self.precision,
            history=module.history,
            compiled=self.compiled.enabled,
            compile_reason=self.compiled.reason,
            first_step_seconds=first,
        )


def _quiet_lightning() -> None:
    """No TensorFlow, no tips, no "GPU available: False" lines in a training run."""
    import logging
    import sys
    import types
    import warnings

    # TensorBoard loads TensorFlow for file I/O when it is installed (lstm-textgen brings it into
    # the shared environment); its "notf" marker module makes it use its own TF-free stub.
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*ModelCheckpoint with manual optimization.*")
    warnings.filterwarnings("ignore", message=".*`weights_only` was not set.*")


def read_checkpoint(path: Path, model: str) -> dict[str, Any]:
    """Load a tormented-mini Lightning checkpoint; one-line errors for missing, damaged or foreign files."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or "tormented" not in state or "state_dict" not in state:
        raise CheckpointError(f"{path}: not a tormented-mini checkpoint (no 'tormented' section)")
    family = state["tormented"]["model_config"].get("model_family")
    if family != model:
        raise CheckpointError(
            f"{path}: checkpoint is of model {family!r} but --model is {model!r}; "
            f"resume with --model {family} or choose a new --out"
        )
    return state


def resume_config(out: str | Path, requested: TrainConfig) -> TrainConfig:
    """The run's own settings (data included) with the changes a resume may make.

    A field the user set (it differs from the default) that disagrees with the saved run is
    refused: resuming never silently trains on other data or with other hyperparameters.
    """
    path = Path(out) / "train_config.json"
    try:
        saved_dict = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; cannot resume a run without its settings") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        saved = TrainConfig(**{k: v for k, v in saved_dict.items() if k in known})
    except TypeError as exc:
        raise CheckpointError(f"{path}: not a tormented-mini train_config ({exc})") from None
    default = TrainConfig()
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        mine, theirs, base = getattr(requested, f.name), getattr(saved, f.name), getattr(default, f.name)
        if f.name in RESUMABLE_CHANGES:
            changes[f.name] = mine if mine != base or f.name == "out" else theirs
        elif mine != base and mine != theirs:
            raise CheckpointError(
                f"--resume: {f.name} is {mine!r} but the run in {out} used {theirs!r}; "
                "drop the flag to continue the run as it was, or start a new --out"
            )
    return dataclasses.replace(saved, **changes)


def train(
    cfg: TrainConfig, *, resume: bool = False, force: bool = False, progress: bool = True
) -> TrainResult:
    if resume:
        cfg = resume_config(cfg.out, cfg)
    return MLMTrainer(cfg, resume=resume, force=force, progress=progress).run()
