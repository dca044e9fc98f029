"""Training, evaluation, checkpoints and resume.

AdamW (no decay on norms, biases and phi logits), ReduceLROnPlateau on the validation loss,
optional autocast (bf16/fp16 with a GradScaler for fp16), gradient accumulation, early stopping,
``lm_shared`` gradient health (clip, skip non-finite steps, halve the LR, checkpoint and stop),
TensorBoard, and checkpoints that resume strictly: the saved model config must equal the
requested one field by field, and ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lm_shared.metrics import NLLAccumulator
from lm_shared.runtime import autocast_dtype, detect_device, detect_precision, save_config, seed_everything
from lm_shared.stability import GradientHealthMonitor, HealthConfig, TrainingStopped

from .data import PreparedData, leakage_warning, load_corpus, load_tokenizer, prepare_data
from .errors import InfinitoError
from .model import InfinitoConfig, InfinitoLM, SequenceTooLongError
from .phi_proxy import model_phi_proxy

PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a run except the architecture (saved as ``config.json`` with it)."""

    data: str | None = None  # corpus spec (see data.load_corpus); None = embedded default
    tokenizer: str = "bpe"  # "bpe" (lm_shared, trained on the train split) or "gpt2"
    vocab_size: int = 1024  # BPE size; small corpora need small vocabularies
    seq_len: int = 128  # tokens per chunk (<= the model's max_seq_len)
    batch_size: int = 16  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3  # AdamW peak learning rate
    weight_decay: float = 0.01  # the seed's value; not applied to norms, biases, phi logits
    max_steps: int = 300  # optimizer steps
    eval_every: int = 50  # steps between validations (and checkpoints)
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

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> None:
            raise InfinitoError(f"train config {name}={getattr(self, name)!r}: expected {expected}")

        for name in ("seq_len", "batch_size", "grad_accum", "max_steps", "eval_every"):
            if getattr(self, name) < 1:
                bad(name, "a positive integer")
        if self.tokenizer not in ("bpe", "gpt2"):
            bad("tokenizer", "'bpe' or 'gpt2'")
        if self.precision not in PRECISIONS:
            bad("precision", " | ".join(PRECISIONS))
        if self.lr <= 0:
            bad("lr", "a positive number")
        if not 0 < self.valid_fraction < 1:
            bad("valid_fraction", "a value in (0, 1)")
        if self.proxy_k == 1 or self.proxy_k < 0:
            bad("proxy_k", "0 (off) or at least 2")


@dataclass
class TrainResult:
    run_dir: Path
    model: InfinitoLM
    data: PreparedData
    final: dict[str, float]
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
            n_bytes = int(lengths[y[mask].cpu()].sum())
            acc.add(float(nll), int(mask.sum()), n_bytes=n_bytes)
    finally:
        model.train(was_training)
    words = (
        n_words_total * acc.n_bytes / max(n_bytes_total, 1) if acc.n_bytes != n_bytes_total else n_words_total
    )
    return {
        "loss": acc.nats_per_token,
        "perplexity": acc.perplexity,
        "bits_per_byte": acc.bits_per_byte,
        "word_perplexity": math.exp(acc.total_nll / max(words, 1)),
        "tokens": acc.n_tokens,
        "bytes": acc.n_bytes,
    }


def summary_writer(path: Path) -> Any:
    """A TensorBoard writer that does not import TensorFlow when another package installed it.

    tensorboard loads TensorFlow (~15 s) unless ``tensorboard.compat.notf`` is importable, which is
    how its TensorFlow-free build selects the bundled stub; event files are identical.
    """
    import sys
    import types

    if "tensorflow" not in sys.modules:
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(path))


def _param_groups(model: InfinitoLM, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "phi_weights" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled index batches, a new permutation per epoch (deterministic under a seed)."""
    while True:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            yield perm[i : i + batch_size]


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


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, expected: InfinitoConfig | None = None) -> dict[str, Any]:
    """Read a checkpoint; with ``expected``, refuse (clearly) when its model config differs."""
    if not path.is_file():
        raise InfinitoError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise InfinitoError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or "model_config" not in ckpt or "model" not in ckpt:
        raise InfinitoError(f"{path}: not an infinito checkpoint (missing model_config/model)")
    if expected is not None:
        diffs = config_differences(ckpt["model_config"], expected.to_dict())
        if diffs:
            raise InfinitoError(f"{path}: model config does not match the checkpoint: " + "; ".join(diffs))
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], path: Path) -> InfinitoLM:
    try:
        config = InfinitoConfig.from_dict(ckpt["model_config"])
        model = InfinitoLM(config)
        model.load_state_dict(ckpt["model"], strict=True)
    except (ValueError, RuntimeError) as exc:
        raise InfinitoError(f"{path}: checkpoint does not load strictly: {exc}") from None
    return model


def train(
    model_config: InfinitoConfig,
    train_config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    data: PreparedData | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> TrainResult:
    """Train one model into ``run_dir`` (a fresh folder, or an existing run with ``resume``)."""
    start_time = time.perf_counter()
    ckpt_path = run_dir / "checkpoint.pt"
    if resume:
        saved = (
            json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else None
        )
        if saved is None or not ckpt_path.is_file():
            raise InfinitoError(f"{run_dir}: nothing to resume (needs config.json and checkpoint.pt)")
        diffs = config_differences(saved["model"], model_config.to_dict())
        if diffs:
            raise InfinitoError(
                f"{ckpt_path}: model config does not match the checkpoint: " + "; ".join(diffs)
            )
        train_diffs = [
            d
            for d in config_differences(saved["train"], asdict(train_config))
            if d.split(":")[0] not in ("max_steps", "patience", "eval_every", "eval_batches", "precision")
        ]
        if train_diffs:
            raise InfinitoError(
                f"{run_dir}: training config differs from the saved run: " + "; ".join(train_diffs)
            )
    elif (run_dir / "checkpoint.pt").exists():
        raise InfinitoError(f"{run_dir}: already holds a checkpoint; use --resume or another --run-name")

    if train_config.seq_len > model_config.max_seq_len:
        raise InfinitoError(
            f"--seq-len {train_config.seq_len} is above the model's max_seq_len {model_config.max_seq_len}"
        )
    seed_everything(train_config.seed)
    device, precision = _device_and_precision(train_config.precision)
    if data is None:
        corpus = load_corpus(train_config.data, valid_fraction=train_config.valid_fraction)
        tokenizer = load_tokenizer(run_dir) if resume else None
        data = prepare_data(
            corpus,
            train_config.seq_len,
            tokenizer=tokenizer,
            kind=train_config.tokenizer,
            vocab_size=train_config.vocab_size,
        )
    if model_config.vocab_size != data.tokenizer.vocab_size:
        model_config = replace(model_config, vocab_size=data.tokenizer.vocab_size)

    seed_everything(train_config.seed)
    model = InfinitoLM(model_config).to(device)
    optimizer = torch.optim.AdamW(
        _param_groups(model, train_config.weight_decay), lr=train_config.lr, betas=(0.9, 0.95)
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=train_config.plateau_factor, patience=train_config.plateau_patience
    )
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=precision == "16-mixed")
    generator = torch.Generator().manual_seed(train_config.seed)
    history: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}
    step, best_val, evals_without_improvement = 0, math.inf, 0

    def save(path: Path) -> None:
        _atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "step": step,
                "best_val": best_val,
                "evals_without_improvement": evals_without_improvement,
                "history": history,
                "model_config": model_config.to_dict(),
                "train_config": asdict(train_config),
            },
            path,
        )

    if resume:
        ckpt = load_checkpoint(ckpt_path, model_config)
        try:
            model.load_state_dict(ckpt["model"], strict=True)
        except RuntimeError as exc:
            raise InfinitoError(f"{ckpt_path}: checkpoint does not load strictly: {exc}") from None
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["torch_rng"])
        step, best_val = ckpt["step"], ckpt["best_val"]
        evals_without_improvement, history = ckpt["evals_without_improvement"], ckpt["history"]
        log(f"resumed {run_dir} at step {step}")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        data.tokenizer.save(run_dir)
        save_config(
            {
                "model": model_config,
                "train": train_config,
                "data": data.summary(),
                "device": device,
                "precision": precision,
            },
            run_dir / "config.json",
        )

    writer = summary_writer(run_dir / "tensorboard")
    monitor = GradientHealthMonitor(
        model,
        optimizer,
        HealthConfig(clip_norm=train_config.clip_norm),
        scaler=scaler,
        on_unrecoverable=lambda: save(ckpt_path),
        log_path=run_dir / "grad_health.jsonl",
    )
    byte_lengths = data.tokenizer.byte_lengths()
    proxy_ids = data.valid.inputs[: train_config.proxy_sequences]
    if proxy_ids.shape[0] and (data.valid.labels[proxy_ids.shape[0] - 1] < 0).any():
        proxy_ids = proxy_ids[:-1]  # the padded tail chunk would add artificial repeats
    batches = _batches(len(data.train), train_config.batch_size, generator)
    for _ in range(step * train_config.grad_accum):
        next(batches)  # replay the seeded data order up to the resumed step

    def run_eval(full: bool) -> dict[str, Any]:
        metrics = evaluate(
            model,
            data.valid.inputs,
            data.valid.labels,
            byte_lengths,
            data.valid.n_words,
            data.valid.n_bytes,
            batch_size=train_config.batch_size,
            max_batches=0 if full else train_config.eval_batches,
            device=device,
            precision=precision,
        )
        if train_config.proxy_k and proxy_ids.shape[0] >= 2:
            report = model_phi_proxy(model, proxy_ids.to(device), k=train_config.proxy_k)
            metrics["phi_proxy"] = report.phi
            metrics["phi_proxy_total_mi"] = report.total_mi
        return metrics

    stopped = ""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        disable=not progress,
        transient=False,
    )
    with bar:
        task = bar.add_task(run_dir.name, total=train_config.max_steps, completed=step, info="")
        model.train()
        while step < train_config.max_steps:
            totals: dict[str, float] = {}
            loss_sum = torch.zeros(())
            for _ in range(train_config.grad_accum):
                idx = next(batches)
                x, y = data.train.inputs[idx].to(device), data.train.labels[idx].to(device)
                with _autocast(device, precision):
                    try:
                        out = model(x, labels=y)
                    except SequenceTooLongError as exc:
                        raise InfinitoError(str(exc)) from None
                loss = out.loss / train_config.grad_accum
                scaler.scale(loss).backward()
                loss_sum = loss_sum + loss.detach().float().cpu()
                for name, value in (("ce", out.ce_loss), ("phi", out.phi), ("phi_loss", out.phi_loss)):
                    if value is not None:
                        totals[name] = totals.get(name, 0.0) + float(value.detach()) / train_config.grad_accum
                for name, value in out.components.items():
                    totals[f"component/{name}"] = (
                        totals.get(f"component/{name}", 0.0) + float(value) / train_config.grad_accum
                    )
            try:
                record = monitor.after_backward(loss_sum)
            except TrainingStopped as exc:
                stopped = f"gradient health: {exc}"
                break
            step += 1
            entry = {
                "step": step,
                "loss": float(loss_sum),
                "lr": record.lr,
                "grad_norm": record.grad_norm,
                **totals,
            }
            entry["repair"] = record.repair_action
            if model.phi_weights is not None:
                entry.update({f"phi_weight/{k}": v for k, v in model.phi_weights.as_dict().items()})
            if model.memory is not None:
                entry["memory_writes"] = int(model.memory.n_writes)
            history["train"].append(entry)
            for key, value in entry.items():
                if isinstance(value, int | float) and key != "step":
                    writer.add_scalar(f"train/{key}", value, step)
            bar.update(task, completed=step, info=f"loss {entry['loss']:.3f}")

            if step % train_config.eval_every == 0 or step == train_config.max_steps:
                metrics = run_eval(full=False)
                scheduler.step(metrics["loss"])
                metrics["step"] = step
                history["eval"].append(metrics)
                for key, value in metrics.items():
                    if key != "step":
                        writer.add_scalar(f"valid/{key}", value, step)
                improved = metrics["loss"] < best_val - 1e-4
                if improved:
                    best_val, evals_without_improvement = metrics["loss"], 0
                    save(run_dir / "best.pt")
                else:
                    evals_without_improvement += 1
                save(ckpt_path)
                bar.update(task, info=f"val bpb {metrics['bits_per_byte']:.3f}")
                if monitor.observe_validation(metrics["loss"]):
                    stopped = f"gradient health: {monitor.stop_reason or 'vanishing gradients on a plateau'}"
                elif evals_without_improvement >= train_config.patience:
                    stopped = (
                        f"early stopping: no validation improvement in {train_config.patience} evaluations"
                    )
                if stopped:
                    break
    writer.close()
    if (run_dir / "best.pt").is_file():
        model.load_state_dict(load_checkpoint(run_dir / "best.pt", model_config)["model"], strict=True)
    final = run_eval(full=True)
    warning = leakage_warning(data.corpus, final)
    if warning:
        log(warning)
        final["leakage_warning"] = warning
    if model.phi_weights is not None:
        final["phi_weights"] = model.phi_weights.as_dict()
    final["parameters"] = model.num_parameters()
    seconds = time.perf_counter() - start_time
    final["train_seconds"] = seconds
    final["stopped"] = stopped
    (run_dir / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    save_config(final, run_dir / "metrics.json")
    if stopped:
        log(stopped)
    return TrainResult(run_dir, model, data, final, history, stopped, seconds)


def train_config_fields() -> list[str]:
    return [f.name for f in fields(TrainConfig)]
