"""Harness B training: tokenizer, packed answer-loss training of the tiny LLaMA, eval.json.

Every sample is ``BOS + prompt + answer + EOS``; samples are packed whole into rows with
per-document causal masks and positions restarting at 0 (so training sees exactly the positions
inference uses), and the loss covers only the answer tokens (answer + EOS), as the issue asks.
The fork trained on padded single samples with the padding in the loss.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lm_shared.data import document_causal_mask, pack_documents
from lm_shared.runs import (
    NonFiniteError,
    RunFolder,
    StopSignal,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    check_finite_parameters,
    open_run_dir,
)
from lm_shared.runtime import (
    COMPILE_MODES,
    CompileChoice,
    ThreadChoice,
    autocast_dtype,
    compile_choice,
    cpu_threads,
    detect_device,
    detect_precision,
    save_config,
    seed_everything,
)
from lm_shared.stability import GradientHealthMonitor, HealthConfig, StepRecord, TrainingStopped
from lm_shared.tokenization import BPETokenizer, train_bpe
from seeddelta.errors import SeedDeltaError
from seeddelta.evaluate import BOS_ID, EOS_ID, PAD_ID, SPECIALS, encode_sample, evaluate_model
from seeddelta.model import ModelConfig, TinyLlama
from seeddelta.tasks import TASKS, Sample, make_split, task_cycle, training_stream, validation_set


@dataclass(frozen=True)
class TrainConfig:
    """Defaults sized for about 15 minutes on 2 free CPU cores in fp32 (no native bf16 needed).

    32 samples a step (48 before, sized for bf16 autocast): the sum task's carries need about as
    many sum samples as the 3,000 steps give at this size (24 a step never learnt them), and a
    third less compute a step is what fits fp32 into the budget (README: *Harness B*).
    """

    seed: int = 1  # one seed for data, initialisation and order (the fork's dataset seed)
    steps: int = 3000  # optimizer steps
    docs_per_step: int = 32  # samples per step, packed into rows of seq_len
    seq_len: int = 128  # packed row length (samples are 25-70 tokens)
    lr: float = 5e-4  # peak AdamW learning rate (sum's carries are not learnt at 2e-3)
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 60  # linear warmup
    weight_decay: float = 0.1  # AdamW decoupled decay on matrices
    clip_norm: float = 1.0  # gradient clipping
    val_samples: int = 400  # held-out split size (the fork's 400)
    tokenizer_samples: int = 3000  # samples the BPE is trained on
    vocab_size: int = 512  # BPE vocabulary (4 specials + 256 bytes + merges)
    precision: str = "auto"  # auto (bf16-mixed on CPUs with native bf16) | 32-true | bf16-mixed
    threads: int = (
        0  # torch CPU threads (0 = auto: up to 2, leaving busy cores alone; lm_shared.runtime.cpu_threads)
    )
    max_minutes: float | None = None  # optional wall-clock stop (the run records when it fired)
    log_every: int = 50  # steps between log lines
    init_from: str | None = None  # continue from this run directory's weights and tokenizer
    task_weights: tuple[int, int, int] = (1, 4, 1)  # phase-2 mix of copy, sum, brackets (held-out: equal)
    phase1_fraction: float = 0.3  # first fraction of the steps trained on phase1_weights (0 = one phase)
    phase1_weights: tuple[int, int, int] = (1, 0, 1)  # phase-1 mix: copy and brackets first, then mostly sum
    checkpoint_every: int = 250  # steps between resumable checkpoints (checkpoint.pt)
    # torch.compile the model: auto = when Inductor finds a C++ compiler (or Triton on CUDA) and the
    # run has >= 1,000 steps (a minute of compiling, then steps ~1.27x faster on 2 cores) | on
    # (--compile alone) | off
    compile: str = "auto"

    def __post_init__(self) -> None:
        for name in ("lr", "min_lr_ratio", "weight_decay", "clip_norm"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise SeedDeltaError(f"{name}: expected a finite number >= 0, got {value}")
        if not self.lr > 0 or not self.clip_norm > 0:
            raise SeedDeltaError(f"lr and clip_norm must be > 0, got {self.lr} and {self.clip_norm}")
        if self.warmup_steps < 0 or self.val_samples < 1 or self.threads < 0 or self.log_every < 1:
            raise SeedDeltaError("warmup_steps and threads must be >= 0; val_samples and log_every >= 1")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise SeedDeltaError(f"max_minutes must be > 0, got {self.max_minutes}")
        if self.checkpoint_every < 1:
            raise SeedDeltaError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.steps < 1 or self.docs_per_step < 1 or self.seq_len < 80:
            raise SeedDeltaError("steps and docs_per_step must be >= 1 and seq_len >= 80")
        if self.compile not in COMPILE_MODES:
            raise SeedDeltaError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        if self.precision not in ("auto", "32-true", "bf16-mixed"):
            raise SeedDeltaError(f"precision must be auto, 32-true or bf16-mixed, got {self.precision!r}")
        if not 0.0 <= self.phase1_fraction < 1.0:
            raise SeedDeltaError(f"phase1_fraction must be in [0, 1), got {self.phase1_fraction}")
        for name in ("task_weights", "phase1_weights"):
            try:
                task_cycle(dict(zip(TASKS, getattr(self, name))))
            except ValueError as exc:
                raise SeedDeltaError(f"{name}: {exc}") from None

    @property
    def phase1_steps(self) -> int:
        """Steps of phase 1: ``round(phase1_fraction * steps)`` (0 = one phase)."""
        return round(self.phase1_fraction * self.steps)

    def task_cycle(self, step: int | None = None) -> tuple[str, ...]:
        """The order of tasks in one cycle of the training stream.

        Args:
            step: The 0-based optimizer step whose phase's mix is wanted; None = phase 2.

        Returns:
            Task names (``copy``, ``sum``, ``brackets``), each repeated by its weight.
        """
        weights = self.phase1_weights if step is not None and step < self.phase1_steps else self.task_weights
        return task_cycle(dict(zip(TASKS, weights)))


def train_tokenizer(seed: int, n: int, vocab_size: int) -> BPETokenizer:
    """BPE trained with digits removed from its corpus, so no merge ever contains a digit.

    Numbers are then tokenised one digit per token, as LLaMA's tokenizer does, which keeps sum
    learnable by a small model; every byte still round-trips (byte-level BPE).

    Args:
        seed: Seed of the task samples the corpus is made of.
        n: Number of samples in the corpus.
        vocab_size: Vocabulary size, the 4 specials and 256 bytes included.

    Returns:
        The trained byte-level BPE tokenizer.
    """
    texts = [re.sub(r"[0-9]", "", s.text) for s in make_split(seed, n)]
    return train_bpe(texts, vocab_size, SPECIALS, min_frequency=2)


def _batch(tok: BPETokenizer, stream: Any, n_docs: int, seq_len: int) -> tuple[torch.Tensor, ...]:
    docs, is_answer = [], []
    for _ in range(n_docs):
        e = encode_sample(tok, next(stream))
        docs.append(e.prompt + e.answer)
        is_answer.append([False] * len(e.prompt) + [True] * len(e.answer))
    packed = pack_documents(docs, seq_len, PAD_ID)
    target_mask = torch.zeros_like(packed.input_ids, dtype=torch.bool)
    for r in range(packed.input_ids.shape[0]):
        row_docs = packed.doc_ids[r]
        for d in row_docs.unique().tolist():
            if d < 0:
                continue
            where = (row_docs == d).nonzero()[:, 0]
            target_mask[r, where] = torch.tensor(is_answer[d])
    return packed.input_ids, packed.position_ids, document_causal_mask(packed.doc_ids), target_mask


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine to ``lr * min_lr_ratio``; each phase has its own (a warm restart),
    so phase 2 starts at the peak rate that its new tasks need, not at phase 1's decayed one.

    Args:
        step: 0-based count of applied updates.
        cfg: Gives ``lr``, ``min_lr_ratio``, ``warmup_steps``, ``steps`` and the phase split.

    Returns:
        The learning rate of that update (same unit as ``cfg.lr``).
    """
    start, length = 0, cfg.steps
    if cfg.phase1_steps > 0:
        if step < cfg.phase1_steps:
            length = cfg.phase1_steps
        else:
            start, length = cfg.phase1_steps, cfg.steps - cfg.phase1_steps
    step -= start
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, length - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# Settings that change how a run is executed, not what it computes: a resume may change them.
RESUMABLE_CHANGES = (
    "train.threads",
    "train.max_minutes",
    "train.log_every",
    "train.checkpoint_every",
    "train.compile",
)
CHECKPOINT = "checkpoint.pt"  # resumable state: model, optimizer, step, RNG, stream positions
COMMAND_CONFIG_FILE = "config.yaml"  # the command's settings, for `tiny train --config`


@dataclass
class TrainingSession:
    """Everything the setup builds and the step loop, the checkpoints and the export share."""

    run: RunFolder  # the locked run folder (lm_shared.runs)
    cfg: TrainConfig
    tok: BPETokenizer
    model: TinyLlama
    opt: torch.optim.AdamW
    scheduler: torch.optim.lr_scheduler.LambdaLR  # warmup-cosine, advanced per applied update
    monitor: GradientHealthMonitor  # clip, skip non-finite steps, halve the LR, stop
    device: str  # "cpu" | "cuda" | "mps"
    precision: str  # "32-true" | "bf16-mixed"
    amp: torch.dtype | None  # autocast dtype (None = fp32)
    val: list[Sample]  # the held-out split
    streams: dict[int, Iterator[Sample]]  # phase (1, 2) -> its endless training stream
    drawn: dict[int, int]  # samples taken from each stream (a resume fast-forwards to them)
    threads: ThreadChoice  # torch's CPU threads and why
    compile: CompileChoice = CompileChoice(False, "not chosen yet")  # set after the resume point is known
    forward: Callable[..., Any] | None = None  # the torch.compile'd model (shares its parameters), or None
    start_step: int = 0  # first step this process runs (> 0 after a resume)
    elapsed_before: float = 0.0  # training seconds of the earlier processes of this run
    t0: float = 0.0  # perf_counter() when this process's first step started

    @property
    def out_dir(self) -> Path:
        return self.run.path

    def elapsed(self) -> float:
        """Training seconds of the whole run so far (earlier processes included)."""
        return self.elapsed_before + time.perf_counter() - self.t0


def _checked_shape(cfg: TrainConfig, model_shape: dict[str, int] | None) -> dict[str, int]:
    shape = dict(model_shape or {})
    try:
        ModelConfig(vocab_size=cfg.vocab_size, **shape)
    except (TypeError, ValueError) as exc:
        raise SeedDeltaError(f"model shape: {exc}") from None
    return shape


def _tokenizer_and_init(
    run: RunFolder, cfg: TrainConfig, shape: dict[str, int]
) -> tuple[BPETokenizer, TinyLlama | None, dict[str, int]]:
    """The run's tokenizer (a resumed run's own, --init-from's, or a new one), the weights to start
    from (--init-from) and the model shape (--init-from's)."""
    if run.resumed and (run.path / "tokenizer.json").is_file():
        return BPETokenizer.load(run.path), None, shape
    if cfg.init_from:
        init_model, tok, init_cfg = load_checkpoint(Path(cfg.init_from))
        return tok, init_model, {k: v for k, v in asdict(init_cfg).items() if k != "vocab_size"}
    return train_tokenizer(cfg.seed, cfg.tokenizer_samples, cfg.vocab_size), None, shape


def _optimizer(
    model: TinyLlama, cfg: TrainConfig
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR, GradientHealthMonitor]:
    """AdamW (decay on matrices only), the warmup-cosine schedule and the gradient monitor."""
    decay = [p for n, p in model.named_parameters() if p.ndim == 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        # One fused kernel over all parameters: 3 ms a step on 2 CPU cores against 16 ms for the
        # default multi-tensor loop (5 % of a default fp32 step; README, *Harness B*).
        fused=next(model.parameters()).device.type in ("cpu", "cuda"),
    )
    # Advances once per applied update; the monitor's LR repair scales its base rates, so a
    # halving lasts (writing param_groups would be overwritten by the next step).
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda applied: lr_at(applied, cfg) / cfg.lr)
    # max_retries=1: the second non-finite step in a row halves the LR, the third stops.
    monitor = GradientHealthMonitor(
        model, opt, HealthConfig(clip_norm=cfg.clip_norm, max_retries=1), schedulers=[scheduler]
    )
    return opt, scheduler, monitor


def _setup(run: RunFolder, cfg: TrainConfig, shape: dict[str, int]) -> TrainingSession:
    """Tokenizer, config.json, model, AdamW, schedule, gradient monitor and the sample streams."""
    out_dir = run.path
    threads = cpu_threads(cfg.threads, preferred=2)
    torch.set_num_threads(threads.threads)
    seed_everything(cfg.seed)
    tok, init_model, shape = _tokenizer_and_init(run, cfg, shape)
    tok.save(out_dir)
    try:
        model_cfg = ModelConfig(vocab_size=tok.vocab_size, **shape)
    except ValueError as exc:
        raise SeedDeltaError(f"model shape: {exc}") from None
    save_config({"model": asdict(model_cfg), "train": asdict(cfg)}, out_dir / "config.json")
    device = detect_device()
    precision = cfg.precision if cfg.precision != "auto" else detect_precision(device, cpu_bf16=True)
    seed_everything(cfg.seed)
    model = TinyLlama(model_cfg)
    if init_model is not None:
        model.load_state_dict(init_model.state_dict())
    model = model.to(device)
    opt, scheduler, monitor = _optimizer(model, cfg)
    val = validation_set(cfg.seed, cfg.val_samples)
    # a continued run draws fresh samples (another stream) so it does not replay the first run's;
    # phase 2 has a stream of its own, so it does not replay phase 1's samples either
    stream_seed = cfg.seed + (7919 if cfg.init_from else 0)
    held_out = {s.prompt for s in val}
    streams = {
        1: training_stream(stream_seed, held_out, cfg.task_cycle(0)),
        2: training_stream(stream_seed + 1, held_out, cfg.task_cycle()),
    }
    return TrainingSession(
        run=run,
        cfg=cfg,
        tok=tok,
        model=model,
        opt=opt,
        scheduler=scheduler,
        monitor=monitor,
        device=device,
        precision=precision,
        amp=autocast_dtype(precision),
        val=val,
        streams=streams,
        drawn={1: 0, 2: 0},
        threads=threads,
    )


def _restore(s: TrainingSession) -> None:
    """Continue from ``checkpoint.pt`` when the run is resumed and has one: weights, AdamW, schedule,
    monitor, torch RNG, step and elapsed time, and the streams fast-forwarded past drawn samples."""
    path = s.out_dir / CHECKPOINT
    if not (s.run.resumed and path.is_file()):
        return
    state = _load_resumable(path)
    s.model.load_state_dict(state["model"])
    s.opt.load_state_dict(state["optimizer"])
    if "scheduler" in state:
        s.scheduler.load_state_dict(state["scheduler"])
    else:  # a checkpoint from before the LambdaLR: every earlier step was applied
        s.scheduler.last_epoch = state["step"]
        for group in s.opt.param_groups:
            group["lr"] = lr_at(state["step"], s.cfg)
    s.monitor.consecutive_nonfinite = state.get("consecutive_nonfinite", 0)
    torch.set_rng_state(state["torch_rng"])
    s.start_step, s.elapsed_before = state["step"], state["elapsed_s"]
    for phase, n in state["drawn"].items():
        for _ in range(n):
            next(s.streams[int(phase)])
        s.drawn[int(phase)] = n


def _start_log(s: TrainingSession) -> Path:
    """``train_log.jsonl`` keeps the records of the steps the checkpoint holds (none for a new run)."""
    log_path = s.out_dir / "train_log.jsonl"
    kept = []
    if s.start_step and log_path.is_file():
        for line in log_path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] < s.start_step:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                continue
    atomic_write_text(log_path, "".join(kept))
    return log_path


def _save_resumable(s: TrainingSession, step_done: int) -> None:
    """Write ``checkpoint.pt`` atomically (refused when a parameter is non-finite)."""
    check_finite_parameters(s.model.named_parameters(), what="the tiny model")
    state = {
        "model": s.model.state_dict(),
        "optimizer": s.opt.state_dict(),
        "scheduler": s.scheduler.state_dict(),
        "consecutive_nonfinite": s.monitor.consecutive_nonfinite,
        "torch_rng": torch.get_rng_state(),
        "step": step_done,
        "drawn": dict(s.drawn),
        "elapsed_s": s.elapsed(),
    }
    with atomic_path(s.out_dir / CHECKPOINT) as tmp:
        torch.save(state, tmp)
    s.run.update(step=step_done)


def _train_step(s: TrainingSession, step: int) -> tuple[torch.Tensor, float, StepRecord]:
    """One optimizer step on the next packed batch of the step's phase.

    Returns:
        The answer-token cross-entropy (0-d float32 tensor, nats per token), the learning rate the
        step used and the gradient monitor's record (``repair_action`` says what it did).

    Raises:
        NonFiniteError: The third non-finite step in a row.
    """
    cfg = s.cfg
    phase = 1 if step < cfg.phase1_steps else 2
    batch = tuple(t.to(s.device) for t in _batch(s.tok, s.streams[phase], cfg.docs_per_step, cfg.seq_len))
    s.drawn[phase] += cfg.docs_per_step
    lr_used = s.opt.param_groups[0]["lr"]
    if s.forward is None:
        loss = _loss_backward(s, s.model, batch)
    else:
        from torch._dynamo.exc import TorchDynamoException

        try:
            loss = _loss_backward(s, s.forward, batch)
        except TorchDynamoException as exc:  # Inductor could not build or run its kernels
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            if cfg.compile == "on":
                raise SeedDeltaError(
                    f"torch.compile failed at step {step} ({reason}); continue with --resume --compile off"
                ) from None
            print(f"torch.compile failed ({reason}); training on without it", file=sys.stderr)
            s.compile, s.forward = CompileChoice(False, f"auto: compiling failed ({reason}), eager"), None
            s.model.zero_grad(set_to_none=True)
            loss = _loss_backward(s, s.model, batch)
    try:
        record = s.monitor.after_backward(loss)
    except TrainingStopped:
        raise NonFiniteError(
            f"training diverged: non-finite gradients for {s.monitor.consecutive_nonfinite} steps in "
            f"a row at step {step} (lower --lr); the last good checkpoint is {s.out_dir / CHECKPOINT}"
        ) from None
    return loss, lr_used, record


def _loss_backward(
    s: TrainingSession, forward: Callable[..., Any], batch: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    """Answer-token cross-entropy of one packed batch through ``forward``, back-propagated."""
    ids, pos, mask, tmask = batch
    with torch.autocast(device_type=s.device, dtype=s.amp, enabled=s.amp is not None):
        logits, _ = forward(ids, pos, mask)
    loss = F.cross_entropy(logits[:, :-1][tmask[:, 1:]].float(), ids[:, 1:][tmask[:, 1:]])
    loss.backward()
    return loss


def _choose_compile(s: TrainingSession, progress: bool) -> None:
    """Decide on ``torch.compile`` for the steps left (``cfg.compile``) and wrap the model."""
    try:
        s.compile = compile_choice(s.cfg.compile, s.device, s.cfg.steps - s.start_step)
    except ValueError as exc:
        raise SeedDeltaError(str(exc)) from None
    if not s.compile.enabled:
        return
    # dynamic: the rows a packed batch fills vary from step to step; one graph serves them all
    s.forward = torch.compile(s.model, dynamic=True)
    if progress:
        print(
            f"torch.compile ({s.compile.reason}): the first step compiles the model, about a minute on "
            "2 cores; --compile off skips it",
            file=sys.stderr,
        )


def _log_line(s: TrainingSession, step: int, loss: torch.Tensor, lr: float, record: StepRecord) -> str:
    rec: dict[str, Any] = {
        "step": step,
        "loss": loss.item(),
        "lr": lr,
        "grad_norm": record.grad_norm,
        "elapsed_s": s.elapsed(),
    }
    if record.repair_action != "none":
        rec["repair_action"] = record.repair_action
    return json.dumps(rec) + "\n"


def _run_steps(
    s: TrainingSession,
    log_path: Path,
    progress: bool,
    on_step_end: Callable[[int, dict[str, Any]], object] | None,
) -> tuple[int, bool]:
    """The step loop from ``s.start_step``: log, checkpoint every ``checkpoint_every`` steps, stop
    on SIGINT/SIGTERM (checkpoint, then ``TrainingInterrupted``) or after ``max_minutes``.

    Returns:
        The last step run (``start_step - 1`` when none was left) and whether ``max_minutes``
        stopped the loop.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    cfg = s.cfg
    step = s.start_step - 1
    with (
        log_path.open("a") as log,
        StopSignal() as stop,
        Progress(
            TextColumn("train"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
            TimeElapsedColumn(),
            disable=not progress,
        ) as bar,
    ):
        s.t0 = time.perf_counter()
        task = bar.add_task("train", total=cfg.steps, completed=s.start_step, loss=float("nan"))
        s.model.train()
        for step in range(s.start_step, cfg.steps):
            loss, lr_used, record = _train_step(s, step)
            bar.update(task, advance=1, loss=loss.item())
            skipped = record.repair_action in ("skip", "lr_halved")
            if skipped or step % cfg.log_every == 0 or step == cfg.steps - 1:
                log.write(_log_line(s, step, loss, lr_used, record))
                log.flush()
            if on_step_end is not None:
                state = {"model": s.model, "optimizer": s.opt, "scheduler": s.scheduler, "record": record}
                on_step_end(step, state)
            if stop.requested:
                _save_resumable(s, step + 1)
                s.run.mark_interrupted(step=step + 1)
                raise stop.interrupted(
                    f"at step {step + 1}/{cfg.steps}; checkpoint {s.out_dir / CHECKPOINT}",
                    f"uv run --package seeddelta seeddelta tiny train --out {s.run.final_path} --resume",
                )
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                _save_resumable(s, step + 1)
            if cfg.max_minutes is not None and time.perf_counter() - s.t0 > 60 * cfg.max_minutes:
                return step, True
    return step, False


def _export(s: TrainingSession, steps_done: int, stopped_early: bool) -> dict[str, Any]:
    """``model.pt``, the held-out evaluation as ``eval.json``; drops the checkpoint, finishes the run."""
    train_seconds = s.elapsed()
    check_finite_parameters(s.model.named_parameters(), what="the tiny model")
    with atomic_path(s.out_dir / "model.pt") as tmp:
        torch.save(s.model.state_dict(), tmp)
    t1 = time.perf_counter()
    report = evaluate_model(s.model, s.tok, s.val)
    report.update(
        {
            "steps_done": steps_done,
            "stopped_by_max_minutes": stopped_early,
            "resumed_from_step": s.start_step or None,
            "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - t1,
            "device": s.device,
            "precision": s.precision,
            "threads": s.threads.threads,
            "threads_reason": s.threads.reason,
            "compiled": s.compile.enabled,
            "compile_reason": s.compile.reason,
            "n_params": sum(p.numel() for p in s.model.parameters()),
        }
    )
    atomic_write_json(s.out_dir / "eval.json", report)
    (s.out_dir / CHECKPOINT).unlink(missing_ok=True)  # model.pt holds the final weights
    s.run.finish(step=steps_done)
    return report


def train(
    out_dir: Path,
    cfg: TrainConfig,
    model_shape: dict[str, int] | None = None,
    progress: bool = True,
    *,
    resume: bool = False,
    force: bool = False,
    on_step_end: Callable[[int, dict[str, Any]], object] | None = None,
    command_config: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate on the held-out split and write the run directory. Returns eval.json.

    Each step's gradients go through ``lm_shared.stability.GradientHealthMonitor``: clipped to
    ``clip_norm``; a step with NaN/Inf gradients (or a norm that overflows) is skipped exactly
    (parameters, AdamW state and the LR schedule are left as they were, the skip is logged), the
    second non-finite step in a row halves the LR for good (the schedule keeps the factor) and the
    third raises ``NonFiniteError``. The warmup-cosine schedule is a ``LambdaLR`` that advances
    once per applied update.

    ``out_dir`` follows :func:`lm_shared.runs.open_run_dir`: locked while training, a finished
    run is replaced only with ``force``, an interrupted one is continued with ``resume`` (its
    saved settings must match). ``checkpoint.pt`` is written every ``checkpoint_every`` steps and
    on SIGINT/SIGTERM; a resumed run ends with the same weights as an uninterrupted one.

    Args:
        out_dir: The run directory: ``config.json``, ``tokenizer.json``, ``train_log.jsonl`` (one
            JSON line per logged step: ``step``, ``loss`` in nats per answer token, ``lr``,
            ``grad_norm``, ``elapsed_s`` in seconds, ``repair_action`` unless none),
            ``checkpoint.pt`` while unfinished, then ``model.pt`` and ``eval.json``.
        cfg: The training settings.
        model_shape: ModelConfig fields but ``vocab_size`` (``hidden_size``, ``num_layers``, ...;
            the defaults for those left out; ``cfg.init_from``'s when that is set).
        progress: Show a rich progress bar.
        resume: Continue the interrupted run in ``out_dir`` from its ``checkpoint.pt``.
        force: Replace a finished run in ``out_dir``.
        on_step_end: Called as ``on_step_end(step, state)`` after every step (tests), ``state``
            holding ``model``, ``optimizer``, ``scheduler`` and the monitor's ``record``.
        command_config: The command's settings as YAML (``lm_shared.config_cli``), written as
            ``config.yaml`` for ``tiny train --config`` to load again.

    Returns:
        The evaluation report written to ``eval.json`` (``exact_match`` per task, ``answer_nll``,
        ``ppl``, ...) with ``steps_done``, ``stopped_by_max_minutes``, ``resumed_from_step``,
        ``train_seconds`` and ``eval_seconds`` (wall seconds), ``device``, ``precision``,
        ``threads``, ``compiled`` (with ``compile_reason``) and ``n_params``.

    Raises:
        SeedDeltaError: The model shape is invalid, the checkpoint to resume from is damaged, or
            ``compile="on"`` where ``torch.compile`` has no backend or fails.
        RunFolderError: ``out_dir`` is locked by another training, or holds a finished run (without
            ``force``), an interrupted one (without ``resume``) or one with other settings.
        NonFiniteError: Three non-finite steps in a row, or a non-finite parameter; no ``model.pt``
            is saved.
        TrainingInterrupted: SIGINT or SIGTERM, after saving ``checkpoint.pt``.
    """
    shape = _checked_shape(cfg, model_shape)
    if cfg.compile == "on":  # refuse before the run folder is touched
        try:
            compile_choice("on", detect_device(), cfg.steps)
        except ValueError as exc:
            raise SeedDeltaError(str(exc)) from None
    run = open_run_dir(
        out_dir,
        package="seeddelta",
        resume=resume,
        force=force,
        config={"model": shape, "train": asdict(cfg)},
        resume_may_change=RESUMABLE_CHANGES,
        run_files=("model.pt", "config.json"),
    )
    with run:
        if command_config is not None:
            atomic_write_text(run.path / COMMAND_CONFIG_FILE, command_config)
        session = _setup(run, cfg, shape)
        _restore(session)
        _choose_compile(session, progress)
        log_path = _start_log(session)
        last_step, stopped_early = _run_steps(session, log_path, progress, on_step_end)
        return _export(session, last_step + 1, stopped_early)


def _load_resumable(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file: name it, never a traceback
        raise SeedDeltaError(
            f"{path}: damaged checkpoint ({type(exc).__name__}); start over with --force"
        ) from None


def load_checkpoint(run_dir: Path) -> tuple[TinyLlama, BPETokenizer, ModelConfig]:
    """Model (eval mode, CPU), tokenizer and config of a ``tiny train`` run directory.

    Args:
        run_dir: A finished ``tiny train`` run (``config.json``, ``model.pt``, ``tokenizer.json``).

    Returns:
        The model (fp32 weights on CPU, eval mode), its tokenizer and its ModelConfig.

    Raises:
        SeedDeltaError: The folder is missing, lacks one of the files, or its config or weights
            are damaged.
        RunFolderError: The folder is another member's run, or the run has not finished.
    """
    from lm_shared.runs import read_json_file, require_run_of

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SeedDeltaError(f"{run_dir}: no such run directory")
    require_run_of(run_dir, "seeddelta")
    for name in ("config.json", "model.pt", "tokenizer.json"):
        if not (run_dir / name).is_file():
            raise SeedDeltaError(f"{run_dir}: not a tiny-train run directory ({name} is missing)")
    cfg = read_json_file(run_dir / "config.json", "run config")
    try:
        model_cfg = ModelConfig(**cfg["model"])
    except (TypeError, KeyError, ValueError) as exc:
        raise SeedDeltaError(f"{run_dir / 'config.json'}: not a tiny-train model config ({exc})") from None
    model = TinyLlama(model_cfg)
    try:
        state = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # truncated, foreign or mismatched weights
        raise SeedDeltaError(
            f"{run_dir / 'model.pt'}: damaged or not this model's weights ({type(exc).__name__})"
        ) from None
    model.eval()
    return model, BPETokenizer.load(run_dir), model_cfg


__all__ = ["BOS_ID", "EOS_ID", "TrainConfig", "load_checkpoint", "train", "train_tokenizer"]
