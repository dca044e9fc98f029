"""Masked-LM pre-training with the lm_shared gradient-health monitor, checkpoints and resume.

The run folder ``out`` ends up as a Hugging Face folder (config.json with auto_map, the modeling
file, model.safetensors, tokenizer files) plus ``train_config.json``, ``checkpoint.pt`` (model,
optimizer, scheduler, scaler and step, for ``--resume``), ``stability.jsonl`` (one gradient-health
record per step), ``metrics.jsonl`` (evaluations) and ``tb/`` (TensorBoard).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lm_shared.runtime import autocast_dtype, detect_device, detect_precision, save_config, seed_everything
from lm_shared.stability import GradientHealthMonitor, HealthConfig, TrainingStopped
from lm_shared.tokenization import BPETokenizer, TokenizerError
from tormented_mini.data import (
    EncodedCorpus,
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

PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``train_config.json`` next to the outputs."""

    model: str = "mini"  # "mini" | "frankenstein"
    size: str = "auto"  # "cpu" | "full" (the seed's size) | "auto": full on a GPU, cpu otherwise
    out: str = "runs/tormented-mini"  # run folder (becomes a Hugging Face model folder)
    data: str | None = None  # UTF-8 text file or folder of .txt; None: the embedded corpus
    hf_dataset: str | None = None  # Hugging Face dataset name (e.g. erickfmm/red_pajama_es_hq_35)
    hf_config: str | None = None  # dataset configuration name
    hf_split: str = "train"  # dataset split
    text_field: str = "text"  # dataset column holding the text
    max_docs: int = 20_000  # documents read from a Hugging Face dataset
    vocab_size: int = 8192  # BPE vocabulary cap (a small corpus stops earlier)
    seq_len: int = 64  # tokens per packed row, [CLS] and [SEP] included
    batch_size: int = 16  # rows per step
    max_steps: int = 300  # optimizer steps
    lr: float = 1e-3  # peak AdamW learning rate (small models; the original used 1e-4 at 1024 wide)
    ode_lr_scale: float = 0.5  # ODE-layer LR multiplier (the original: 5e-5 vs 1e-4)
    weight_decay: float = 0.01  # AdamW decay on matrices only (not on norms, biases, gains)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas (the original's)
    warmup_steps: int = 30  # linear warmup, then cosine to min_lr_ratio * lr
    min_lr_ratio: float = 0.1  # floor of the cosine schedule
    clip_norm: float = 1.0  # gradient clipping threshold (the seed's 1.0)
    max_retries: int = 3  # LR-halving retries of a non-finite batch before checkpoint-and-stop
    patience: int = 5  # evaluations of plateau with vanishing gradients before early stop
    mask_prob: float = 0.15  # MLM masking rate (80/10/10 inside)
    val_fraction: float = 0.1  # held-out share of the documents (the last ones)
    eval_every: int = 100  # steps between evaluations (and checkpoints)
    eval_batches: int = 8  # held-out batches per evaluation (0 = all)
    precision: str = "auto"  # "auto" (lm_shared.detect_precision) | "32-true" | "bf16-mixed" | "16-mixed"
    seed: int = 0  # one seed for data order, masking and init
    threads: int = 0  # torch CPU threads (0: auto, 1 for the CPU presets, torch default otherwise)
    norm_type: str | None = None  # override the preset's norm ("layernorm", "dyt", "dynamic_tanh", "derf")
    use_hope: bool | None = None  # override HoPE on/off
    use_bitnet: bool | None = None  # override BitLinear on/off
    use_moe: bool | None = None  # override MoE on/off
    use_titan_memory: bool | None = None  # override the Titans memory branch
    model_overrides: dict[str, Any] = field(default_factory=dict)  # any other UltraConfig fields

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        if self.model not in ("mini", "frankenstein"):
            raise TormentedError(f"--model must be 'mini' or 'frankenstein', got {self.model!r}")
        if self.size not in ("auto", "cpu", "full"):
            raise TormentedError(f"--size must be auto, cpu or full, got {self.size!r}")
        if self.precision not in PRECISIONS:
            raise TormentedError(
                f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.data is not None and self.hf_dataset is not None:
            raise TormentedError("give either --data or --hf-dataset, not both")
        for name in ("seq_len", "batch_size", "max_steps", "eval_every", "vocab_size"):
            if getattr(self, name) < 1:
                raise TormentedError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.seq_len < 8:
            raise TormentedError(f"--seq-len must be >= 8, got {self.seq_len}")
        if not self.lr > 0:
            raise TormentedError(f"--lr must be > 0, got {self.lr}")
        if not 0 < self.mask_prob < 1:
            raise TormentedError(f"--mask-prob must be in (0, 1), got {self.mask_prob}")

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


@dataclass
class TrainResult:
    out: Path
    steps: int
    stopped: bool  # True when the health monitor stopped training
    stop_reason: str
    val_mlm_loss: float
    val_masked_acc: float
    train_seconds: float
    seconds_per_step: float
    n_params: int
    precision: str
    history: list[dict[str, float]]


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


# ==================================================================================== trainer
class MLMTrainer:
    """Owns model, optimizer, schedule, health monitor and checkpoints of one run."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        corpus: EncodedCorpus | None = None,
        tokenizer: BPETokenizer | None = None,
        resume: bool = False,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.progress = progress
        self.device = detect_device()
        self.precision = detect_precision(self.device) if cfg.precision == "auto" else cfg.precision
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        elif self.device == "cpu" and cfg.preset_name(self.device).endswith("-cpu"):
            # CPU-size ops are too small to gain from a second thread, and OpenMP spin-waiting
            # makes them up to 100x slower when the cores are shared (measured; see README).
            torch.set_num_threads(1)
        checkpoint_path = self.out / CHECKPOINT_NAME
        state: dict[str, Any] | None = None
        if resume:
            state = self._read_checkpoint(checkpoint_path)
        elif checkpoint_path.exists():
            raise CheckpointError(
                f"{self.out} already holds a run ({CHECKPOINT_NAME}); pass --resume to continue it or "
                "choose a new --out (saved work is never overwritten)"
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

        if state is not None:
            self.model_config = UltraConfig(**state["model_config"])
        else:
            self.model_config = cfg.model_config(tokenizer.vocab_size, self.device)
        hf_config = TormentedBertConfig.from_ultra(
            self.model_config,
            pad_token_id=self.ids.pad,
            mask_token_id=self.ids.mask,
            bos_token_id=self.ids.cls,
            eos_token_id=self.ids.sep,
        )
        self.model = TormentedBertForMaskedLM(hf_config).to(self.device)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg), lr=cfg.lr, betas=cfg.betas)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(cfg))
        self.autocast = autocast_dtype(self.precision)
        self.scaler = torch.amp.GradScaler(self.device, enabled=self.precision.startswith("16"))
        self.monitor = GradientHealthMonitor(
            self.model,
            self.optimizer,
            HealthConfig(clip_norm=cfg.clip_norm, max_retries=cfg.max_retries, patience=cfg.patience),
            scaler=self.scaler,
            on_unrecoverable=self.save_checkpoint,
            log_path=self.out / "stability.jsonl",
            schedulers=[self.scheduler],
        )
        self.step = 0
        self.history: list[dict[str, float]] = []
        if state is not None:
            self._restore(state)

    # ------------------------------------------------------------------ checkpoints
    def _read_checkpoint(self, path: Path) -> dict[str, Any]:
        if not path.is_file():
            raise CheckpointError(f"{path}: no checkpoint to resume from")
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from None
        if not isinstance(state, dict) or "model_config" not in state or "model" not in state:
            raise CheckpointError(f"{path}: not a tormented-mini checkpoint (missing model_config/model)")
        family = state["model_config"].get("model_family")
        if family != self.cfg.model:
            raise CheckpointError(
                f"{path}: checkpoint is of model {family!r} but --model is {self.cfg.model!r}; "
                f"resume with --model {family} or choose a new --out"
            )
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.monitor.step = self.step
        self.history = list(state.get("history", []))

    def save_checkpoint(self) -> Path:
        """Atomic write of everything needed to resume, plus the tokenizer it depends on."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(self.out / "tokenizer.json")
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "step": self.step,
            "model_config": self.model_config.to_dict(),
            "train_config": dataclasses.asdict(self.cfg),
            "history": self.history,
        }
        path = self.out / CHECKPOINT_NAME
        tmp = path.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        return path

    def save_pretrained(self) -> None:
        """Write the Hugging Face folder: AutoModelForMaskedLM / AutoTokenizer / fill-mask ready."""
        self.model.save_pretrained(self.out)
        to_transformers_tokenizer(self.tokenizer, self.model_config.max_position_embeddings).save_pretrained(
            self.out
        )
        save_config(self.cfg, self.out / "train_config.json")
        save_config(self.model_config, self.out / "model_config.json")

    # ------------------------------------------------------------------ steps
    def autocast_context(self) -> Any:
        if self.autocast is None:
            return torch.autocast(self.device, enabled=False)
        return torch.autocast(self.device, dtype=self.autocast)

    def batch_loss(self, step: int) -> torch.Tensor:
        rows = batch_for_step(self.corpus.train, self.cfg.batch_size, step, self.cfg.seed)
        generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        inputs, labels = mask_tokens(
            rows, self.ids, self.model_config.vocab_size, self.cfg.mask_prob, generator
        )
        inputs, labels = inputs.to(self.device), labels.to(self.device)
        attention_mask = (rows != self.ids.pad).long().to(self.device)
        with self.autocast_context():
            out = self.model(inputs, attention_mask=attention_mask, labels=labels)
        self._last_mlm_loss = float(out.mlm_loss.detach())
        return out.loss

    def train_one_step(self) -> Any:
        """One optimizer step through the health monitor (retries the batch at a halved LR)."""
        self.model.train()
        step = self.step
        record = self.monitor.train_step(lambda: self.batch_loss(step))
        self.step += 1
        return record

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out MLM loss (nats per masked token) and masked-token accuracy, fixed masks."""
        self.model.eval()
        rows = self.corpus.val
        generator = torch.Generator().manual_seed(12_345)
        total_loss, total_correct, total_masked = 0.0, 0, 0
        batches = range(0, rows.shape[0], self.cfg.batch_size)
        if self.cfg.eval_batches:
            batches = batches[: self.cfg.eval_batches]
        for start in batches:
            chunk = rows[start : start + self.cfg.batch_size]
            inputs, labels = mask_tokens(
                chunk, self.ids, self.model_config.vocab_size, self.cfg.mask_prob, generator
            )
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            with self.autocast_context():
                logits = self.model(
                    inputs, attention_mask=(chunk != self.ids.pad).long().to(self.device)
                ).logits
            picked = labels != -100
            total_loss += float(
                torch.nn.functional.cross_entropy(logits[picked].float(), labels[picked], reduction="sum")
            )
            total_correct += int((logits[picked].argmax(-1) == labels[picked]).sum())
            total_masked += int(picked.sum())
        self.model.train()
        return {
            "val_mlm_loss": total_loss / max(1, total_masked),
            "val_masked_acc": total_correct / max(1, total_masked),
        }

    # ------------------------------------------------------------------ loop
    def run(self) -> TrainResult:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from torch.utils.tensorboard import SummaryWriter

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.out / "train_config.json")
        save_config(self.model_config, self.out / "model_config.json")
        writer = SummaryWriter(str(self.out / "tb"))
        n_params = sum(p.numel() for p in self.model.parameters())
        stopped, reason = False, ""
        metrics = {"val_mlm_loss": float("nan"), "val_masked_acc": float("nan")}
        start_step, start_time = self.step, time.perf_counter()
        columns = (
            TextColumn("[bold]train"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} {task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, disable=not self.progress, transient=False) as bar:
            task = bar.add_task("train", total=cfg.max_steps, completed=self.step, info="")
            try:
                while self.step < cfg.max_steps:
                    record = self.train_one_step()
                    writer.add_scalar("train/loss", record.loss or float("nan"), self.step)
                    writer.add_scalar("train/mlm_loss", self._last_mlm_loss, self.step)
                    writer.add_scalar("train/grad_norm", record.grad_norm, self.step)
                    writer.add_scalar("train/lr", record.lr, self.step)
                    bar.update(
                        task,
                        completed=self.step,
                        info=f"mlm {self._last_mlm_loss:.3f} |g| {record.grad_norm:.2f} {record.repair_action}",
                    )
                    if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps:
                        metrics = self.evaluate()
                        entry = {"step": self.step, **metrics, "train_mlm_loss": self._last_mlm_loss}
                        self.history.append(entry)
                        with (self.out / "metrics.jsonl").open("a", encoding="utf-8") as fh:
                            fh.write(json.dumps(entry) + "\n")
                        for key, value in metrics.items():
                            writer.add_scalar(f"val/{key}", value, self.step)
                        self.save_checkpoint()
                        if self.monitor.observe_validation(metrics["val_mlm_loss"]):
                            stopped, reason = True, self.monitor.stop_reason
                            break
            except TrainingStopped as exc:
                # The monitor already saved the checkpoint through on_unrecoverable.
                stopped, reason = True, str(exc)
        writer.close()
        elapsed = time.perf_counter() - start_time
        if not stopped:
            self.save_checkpoint()
        self.save_pretrained()
        done = self.step - start_step
        return TrainResult(
            out=self.out,
            steps=self.step,
            stopped=stopped,
            stop_reason=reason,
            val_mlm_loss=metrics["val_mlm_loss"],
            val_masked_acc=metrics["val_masked_acc"],
            train_seconds=elapsed,
            seconds_per_step=elapsed / max(1, done),
            n_params=n_params,
            precision=self.precision,
            history=self.history,
        )


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    return MLMTrainer(cfg, resume=resume, progress=progress).run()
