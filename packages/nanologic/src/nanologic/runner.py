"""``train``'s sequence (data, tokenizer, training, evaluation) and the evaluation helpers.

The data steps are :mod:`nanologic.stages`'; the Trainer's wiring is :mod:`nanologic.training`'s.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from nanologic.configs import (
    DEFAULT_BEAM_SIZE,
    DEFAULT_COMMA_LESS_SHARE,
    DEFAULT_CONSTRAINT,
    DEFAULT_MAX_PER_COMPLEXITY,
    DEFAULT_N_GENERATE,
    DEFAULT_VOCAB_SIZE,
    DatasetConfig,
    TrainConfig,
)
from nanologic.data import SPECIAL_TOKENS, read_jsonl, sequence_text
from nanologic.errors import NanologicError
from nanologic.stages import build_dataset

if TYPE_CHECKING:
    from lm_shared.runs import RunFolder
    from lm_shared.runtime import CompileChoice, ThreadChoice

console = Console(stderr=True)


# The real-sentence development set shipped with the package (issue 13); every run reports on it.
DEV_REAL = Path(__file__).resolve().parents[2] / "data" / "dev_real.jsonl"


_PREPARED = ".prepared"  # written by the first process once data, tokenizer and configs exist


def _launch_id() -> str:
    """Identifies one multi-process launch (torchrun, SLURM); empty for a single command."""
    for key in ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID"):
        if os.environ.get(key):
            return f"{key}={os.environ[key]}"
    return ""


def _is_first_process() -> bool:
    """Global rank 0, read from the launcher's environment before Lightning sets up processes."""
    for key in ("RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key]) == 0
    # processes Lightning launches itself get LOCAL_RANK/NODE_RANK
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def _mark_prepared(out: Path) -> None:
    from lm_shared.runs import atomic_write_text

    atomic_write_text(out / _PREPARED, _launch_id() + "\n")


def _wait_for_preparation(out: Path, timeout_s: float = 6 * 3600) -> None:
    """Processes other than the first wait until it has prepared ``out`` for this launch."""
    marker = out / _PREPARED
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if marker.exists() and marker.read_text().strip() == _launch_id():
            return
        time.sleep(1.0)
    raise NanologicError(f"{out}: the first process did not prepare the run within {timeout_s:.0f} s")


# Fields every processed record (``nanologic preprocess`` output) has, with their JSON types.
RECORD_FIELDS = {
    "natural_language_input": str,
    "atoms": dict,
    "connectors": list,
    "formula": str,
    "complexity": str,
}


def check_records(path: Path) -> int:
    """Check a processed split before training on it; returns its number of records.

    Raises NanologicError naming the file, line and field (e.g. a raw or cleaned file given
    where ``nanologic preprocess`` output is expected), or when the file has no records.
    """
    from nanologic.data import COMPLEXITIES

    rows = read_jsonl(path)
    if not rows:
        raise NanologicError(f"{path}: no examples (expected `nanologic preprocess` output)")
    for lineno, row in enumerate(rows, start=1):
        for key, kind in RECORD_FIELDS.items():
            if not isinstance(row.get(key), kind):
                raise NanologicError(
                    f"{path}: record {lineno}: field {key!r} missing or not a {kind.__name__} "
                    "(expected `nanologic preprocess` output; did a stage get skipped?)"
                )
        if row["complexity"] not in COMPLEXITIES:
            raise NanologicError(
                f"{path}: record {lineno}: complexity must be one of {', '.join(COMPLEXITIES)}"
            )
    return len(rows)


def train_tokenizer(data_dir: Path, out_dir: Path, vocab_size: int = DEFAULT_VOCAB_SIZE):
    """BPE over the training split's full sequences (thought included, so both phases are covered)."""
    from lm_shared.tokenization import train_bpe

    rows = read_jsonl(data_dir / "train.jsonl")
    if not rows:
        raise NanologicError(f"{data_dir / 'train.jsonl'}: empty")
    texts = [sequence_text(r, with_thought=True) for r in rows]
    tokenizer = train_bpe(texts, vocab_size, SPECIAL_TOKENS)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out_dir)
    return tokenizer


def evaluate_run(
    run_dir: Path,
    data_path: Path,
    limit: int | None = None,
    batch_size: int = 64,
    repair_tries: int = 2,
    out_dir: Path | None = None,
    constraint: str | None = DEFAULT_CONSTRAINT,
    normalize_definitions: bool = True,
    beam_size: int = DEFAULT_BEAM_SIZE,
) -> dict:
    """Decode ``data_path`` and write the report to ``out_dir``: by default ``run_dir/eval`` for
    the run's own test split and ``run_dir/eval-<file stem>`` for any other file (with ``-free``
    or ``-format`` appended when decoding is not the default), so evaluating another split or
    decoding never overwrites the run's test report. ``constraint``: ``"grounded"`` (default),
    ``"format"`` or ``None`` (free; see :class:`nanologic.inference.Formalizer`)."""
    from nanologic.evaluation import write_report

    report, rows = score_run(
        run_dir,
        data_path,
        limit=limit,
        batch_size=batch_size,
        repair_tries=repair_tries,
        constraint=constraint,
        normalize_definitions=normalize_definitions,
        beam_size=beam_size,
    )
    default_out = default_report_dir(run_dir, data_path, constraint, limit, normalize_definitions)
    write_report(report, rows, out_dir or default_out)
    return report


def score_run(
    run_dir: Path,
    data_path: Path,
    limit: int | None = None,
    batch_size: int = 64,
    repair_tries: int = 2,
    constraint: str | None = DEFAULT_CONSTRAINT,
    normalize_definitions: bool = True,
    beam_size: int = DEFAULT_BEAM_SIZE,
) -> tuple[dict, list[dict]]:
    """:func:`evaluate_run` without the writing: the report and the prediction rows."""
    from nanologic.inference import Formalizer

    formalizer = Formalizer.from_run(
        run_dir,
        repair_tries=repair_tries,
        constraint=constraint,
        normalize_definitions=normalize_definitions,
        beam_size=beam_size,
    )
    return score_formalizer(
        formalizer,
        data_path,
        limit=limit,
        batch_size=batch_size,
        extra={
            "repair_tries": formalizer.repair_tries,
            "beam_size": formalizer.beam_size,
            "constraint": constraint,
            "decoding": constraint or "free",
            "normalize_definitions": normalize_definitions,
        },
    )


def evaluate_formalizer(
    formalizer,
    data_path: Path,
    out_dir: Path,
    limit: int | None = None,
    batch_size: int = 64,
    extra: dict | None = None,
) -> dict:
    """Run any object with ``formalize(sentences, batch_size=...) -> list[dict]`` (the model, its
    GGUF twin, the rule baseline) over ``data_path`` (a split or a real-sentence set, see
    :func:`nanologic.evaluation.read_gold`) and write report.json/.md, predictions and charts."""
    from nanologic.evaluation import write_report

    report, rows = score_formalizer(formalizer, data_path, limit=limit, batch_size=batch_size, extra=extra)
    write_report(report, rows, out_dir)
    return report


def score_formalizer(
    formalizer,
    data_path: Path,
    limit: int | None = None,
    batch_size: int = 64,
    extra: dict | None = None,
) -> tuple[dict, list[dict]]:
    """:func:`evaluate_formalizer` without the writing: the report and the prediction rows."""
    from nanologic.evaluation import aggregate, read_gold, score_example

    golds = read_gold(data_path)[:limit]
    if not golds:
        raise NanologicError(f"{data_path}: no examples to evaluate")
    t0 = time.perf_counter()
    preds = formalizer.formalize([g["natural_language_input"] for g in golds], batch_size=batch_size)
    scores = [score_example(p, g) for p, g in zip(preds, golds)]
    report = aggregate(golds, scores)
    report["split"] = Path(data_path).stem
    report.update(extra or {})
    report["decode_seconds"] = round(time.perf_counter() - t0, 2)
    rows = [
        {
            "input": g["natural_language_input"],
            "gold": g["formula"],
            "gold_atoms": g["atoms"],
            "pred": p["formula"],
            "pred_atoms": p["atoms"],
            "pred_polarity": p.get("polarity", {}),
            "complexity": g["complexity"],
            "equivalent": s["equivalent"],
            "grounded": s["grounded"],
            "error_category": s["error_category"],
        }
        for g, p, s in zip(golds, preds, scores)
    ]
    return report, rows


def default_report_dir(
    run_dir: Path,
    data_path: Path,
    constraint: str | None = DEFAULT_CONSTRAINT,
    limit: int | None = None,
    normalize_definitions: bool = True,
) -> Path:
    """Where ``evaluate`` writes a run's report: ``eval`` (its own test split) or ``eval-<file stem>``,
    then ``-free``/``-format`` for a decoding other than the default, ``-as-written`` without the
    definitions' normalisation and ``-first<N>`` for a ``--limit``, so that a partial or differently
    decoded evaluation never replaces the full one."""
    own_test = Path(data_path).resolve() == (Path(run_dir) / "data" / "test.jsonl").resolve()
    name = "eval" if own_test else f"eval-{Path(data_path).stem}"
    if constraint != DEFAULT_CONSTRAINT:
        name += f"-{constraint or 'free'}"
    if not normalize_definitions:
        name += "-as-written"
    if limit is not None:
        name += f"-first{limit}"
    return Path(run_dir) / name


def print_eval(report: dict) -> None:
    table = Table(title=f"evaluation on {report.get('split', 'test')} (n={report['n_test']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in (
        "equivalence_accuracy",
        "exact_match",
        "normalized_match",
        "atom_f1",
        "connector_accuracy",
        "main_connector_accuracy",
        "partial_credit",
        "grounded_accuracy",
        "equivalence_any_mapping",
    ):
        table.add_row(key, f"{report[key]:.4f}")
    for category, count in report.get("error_categories", {}).items():
        table.add_row(f"error: {category}", str(count))
    for c, v in report["by_complexity"].items():
        table.add_row(f"equivalence ({c}, n={v['n']})", f"{v['equivalence_accuracy']:.4f}")
    console.print(table)


MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)  # the byte alphabet plus the special tokens


def check_model_request(preset: str, vocab_size: int, model_overrides: dict | None) -> None:
    """Validate ``--vocab-size`` and ``--model-config`` before any work (NanologicError names the field)."""
    import dataclasses

    from nanologic.model import NanoLogicConfig, build_config

    if vocab_size < MIN_VOCAB_SIZE:
        raise NanologicError(
            f"--vocab-size: expected at least {MIN_VOCAB_SIZE} (256 bytes + {len(SPECIAL_TOKENS)} "
            f"special tokens), got {vocab_size}"
        )
    overrides = dict(model_overrides or {})
    known = {f.name for f in dataclasses.fields(NanoLogicConfig)} - {"vocab_size"}
    for key in overrides:
        if key not in known:
            raise NanologicError(
                f"--model-config: unknown field {key!r}; expected some of {', '.join(sorted(known))}"
            )
    try:
        build_config(preset, vocab_size, **overrides)
    except (TypeError, ValueError) as exc:
        raise NanologicError(f"--model-config: {exc}") from None


# Settings a resume may change: extending a run, or changing how it is run (not what it learns).
_RESUME_MAY_CHANGE = (
    "train_config.max_epochs",
    "train_config.max_steps",
    "train_config.num_workers",
    "train_config.val_check_interval",
    "train_config.debug",
    "train_config.compile",
    "train_config.devices",
    "train_config.num_nodes",
    "train_config.strategy",
    "train_config.checkpoint_every_n_steps",
)


@dataclass(frozen=True)
class TrainRequest:
    """What :func:`train_run` was asked for (its arguments), carried through its steps."""

    preset: str
    train_config: TrainConfig
    data_dir: Path | None  # None: generate the embedded dataset into the run folder
    n_generate: int
    max_per_complexity: int | None
    vocab_size: int
    resume: str | None
    eval_limit: int | None
    model_overrides: dict
    max_minutes: float | None
    threads: int
    callbacks: Sequence
    precision_plugins: Sequence
    command_config: str | None = None  # the YAML of the command's settings, saved as config.yaml
    symbolic_share: float = 0.0
    comma_less_share: float = DEFAULT_COMMA_LESS_SHARE

    def run_config(self) -> dict:
        """The settings saved in ``run.json``, which a resumed run must repeat."""
        from nanologic.training import train_config_dict

        config: dict[str, Any] = {
            "preset": self.preset,
            "train_config": train_config_dict(self.train_config),
            "data": None if self.data_dir is None else str(Path(self.data_dir).resolve()),
            "n_generate": self.n_generate if self.data_dir is None else None,
            "max_per_complexity": self.max_per_complexity if self.data_dir is None else None,
            "vocab_size": self.vocab_size,
            "model_overrides": self.model_overrides,
        }
        if self.data_dir is None and self.symbolic_share:  # absent at 0, as in runs made before it existed
            config["symbolic_share"] = self.symbolic_share
        if self.data_dir is None and self.comma_less_share:  # absent at 0: runs before session 46
            config["comma_less_share"] = self.comma_less_share
        return config


def train_run(
    out: Path,
    *,
    preset: str = "cpu",
    train_config: TrainConfig | None = None,
    data_dir: Path | None = None,
    n_generate: int = DEFAULT_N_GENERATE,
    max_per_complexity: int | None = DEFAULT_MAX_PER_COMPLEXITY,
    symbolic_share: float = 0.0,
    comma_less_share: float = DEFAULT_COMMA_LESS_SHARE,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    resume: str | None = None,
    force: bool = False,
    eval_limit: int | None = None,
    model_overrides: dict | None = None,
    max_minutes: float | None = None,
    threads: int = 0,
    callbacks: Sequence = (),
    precision_plugins: Sequence = (),
    command_config: str | None = None,
) -> dict:
    """The whole default run; every artefact lands under ``out``.

    The defaults are ``nanologic train``'s (:class:`nanologic.configs.TrainInputs`); the fields of
    ``train_config`` left at None (epochs, learning rate) take ``preset``'s values
    (:meth:`~nanologic.configs.TrainConfig.for_preset`), as the command's do. ``command_config``
    (the command's settings as YAML) is saved as ``config.yaml`` in the run folder.

    ``out`` follows the run-folder policy of :mod:`lm_shared.runs`: locked while training, a
    finished run is replaced only with ``force``, an interrupted one is continued with ``resume``
    (``"last"`` or a checkpoint path; the run's saved settings must match). SIGINT/SIGTERM save
    ``checkpoints/<phase>/last.ckpt`` and raise ``TrainingInterrupted``; a diverged run raises
    ``NonFiniteError`` and saves no model.

    Multi-device: with ``train_config.devices``/``num_nodes``/``strategy`` Lightning launches the
    other processes itself, or the command runs unchanged under ``torchrun``/SLURM (Lightning
    detects them). The first process holds the run folder, prepares data, tokenizer and configs
    and writes every file; the others wait for it, train, and return ``{}``. ``callbacks`` run
    before nanologic's own (the fault-injection kit's); ``precision_plugins`` replace
    ``train_config.precision``.
    """
    from lm_shared.runs import open_run_dir
    from lm_shared.runs_lightning import require_gpus_for_fsdp

    train_config = (train_config or TrainConfig()).for_preset(preset)
    require_gpus_for_fsdp(train_config.strategy)
    check_model_request(preset, vocab_size, model_overrides)
    if resume is not None and data_dir is None:
        data_dir = _saved_data_dir(Path(out))
    if data_dir is not None:
        _require_splits(Path(data_dir))
    if train_config.compile == "on":  # refused before the run folder and its data are made
        from lm_shared.runtime import compile_choice, detect_device

        try:
            compile_choice("on", detect_device(), 0)
        except ValueError as exc:
            raise NanologicError(str(exc)) from None
    request = TrainRequest(
        preset=preset,
        train_config=train_config,
        data_dir=data_dir,
        n_generate=n_generate,
        max_per_complexity=max_per_complexity,
        vocab_size=vocab_size,
        resume=resume,
        eval_limit=eval_limit,
        model_overrides=dict(model_overrides or {}),
        max_minutes=max_minutes,
        threads=threads,
        callbacks=callbacks,
        precision_plugins=precision_plugins,
        command_config=command_config,
        symbolic_share=symbolic_share,
        comma_less_share=comma_less_share,
    )
    run = open_run_dir(
        out,
        package="nanologic",
        resume=resume is not None,
        force=force,
        config=request.run_config(),
        resume_may_change=_RESUME_MAY_CHANGE,
        resume_hint="--resume",
        run_files=("model.safetensors", "train_config.json"),
    )
    with run:
        report = _train_in(run, request)
        final = run.finish()
    console.print(f"[bold green]Run directory:[/] {final}  (use it as --run {final})")
    return report


def _saved_data_dir(out: Path) -> Path | None:
    """The ``--data`` an interrupted run in ``out`` was started with (never a generated dataset)."""
    from lm_shared.runs import read_run_state

    if not (out / "run.json").is_file():
        return None
    saved_data = ((read_run_state(out) or {}).get("config") or {}).get("data")
    return Path(saved_data) if saved_data else None


def _require_splits(data_dir: Path) -> None:
    for split in ("train", "val", "test"):
        if not (data_dir / f"{split}.jsonl").is_file():
            raise NanologicError(f"{data_dir / f'{split}.jsonl'}: missing (run `nanologic preprocess`)")


def _train_in(run: RunFolder, request: TrainRequest) -> dict:
    """Prepare, train and (first process) save and evaluate, in the open run folder."""
    import torch

    from lm_shared.runs import is_global_rank_zero
    from lm_shared.runtime import cpu_threads, detect_device, detect_precision, save_config, seed_everything
    from nanologic.inference import save_run_model
    from nanologic.model import build_config
    from nanologic.training import FitSettings, build_module, fit_phases, plain_model, train_config_dict

    out, tc = run.path, request.train_config
    seed_everything(tc.seed)
    threads = cpu_threads(request.threads, preferred=2)
    torch.set_num_threads(threads.threads)
    first = _is_first_process()
    data_dir = request.data_dir
    if not first:
        _wait_for_preparation(out)
        data_dir = data_dir or out / "data"
    t_start = time.perf_counter()
    data_dir = _checked_data(out, data_dir, request)
    tokenizer = _run_tokenizer(out, data_dir, request.vocab_size)
    model_cfg = build_config(request.preset, tokenizer.vocab_size, **request.model_overrides)
    if first:
        save_config(model_cfg.to_dict(), out / "model_config.json")
        save_config(train_config_dict(tc), out / "train_config.json")
        if request.command_config is not None:
            from lm_shared.runs import atomic_write_text

            atomic_write_text(out / "config.yaml", request.command_config)
        _mark_prepared(out)
    device = detect_device()
    # fp32 on every CPU, native bf16 included: with the copy head the default trained at 4,560
    # tokens/s in bf16 autocast against 5,800 in fp32 on the same AMX Xeon (its fp32 log-mixture
    # costs more than the small bf16 matmuls save).
    precision = detect_precision(device) if tc.precision == "auto" else tc.precision
    compiled = _compile_choice(tc, device, data_dir)
    module = build_module(model_cfg, tc, compile=compiled.enabled)
    n_params = sum(p.numel() for p in module.model.parameters())
    if first:
        console.print(
            _settings_table(out, request, model_cfg, n_params, device, precision, data_dir, threads, compiled)
        )
        if (note := curriculum_note(tc)) is not None:
            console.print(f"[yellow]note:[/] {note}")
    settings = FitSettings(
        tc,
        precision,
        max_minutes=request.max_minutes,
        resume=request.resume,
        callbacks=request.callbacks,
        precision_plugins=request.precision_plugins,
    )
    trainer = fit_phases(run, module, tokenizer, data_dir, model_cfg.max_seq_len, settings)
    train_seconds = time.perf_counter() - t_start
    if not (trainer.is_global_zero if trainer is not None else is_global_rank_zero()):
        return {}
    save_run_model(plain_model(module), out)
    facts = {
        "train_seconds": round(train_seconds, 1),
        "n_parameters": n_params,
        "preset": request.preset,
        "precision": precision,
        "device": device,
        "threads": threads.threads,
        "compiled": compiled.enabled,
        "compile_reason": compiled.reason,
    }
    return _evaluate_trained_run(out, data_dir, request.eval_limit, facts, t_start)


def _compile_choice(tc: TrainConfig, device: str, data_dir: Path) -> CompileChoice:
    """``tc.compile`` resolved for this run: ``auto`` weighs the optimizer steps the run will take
    (training examples / batch size / accumulation x epochs, or ``max_steps``) against the
    compilation (15-75 s on 2 cores; :func:`lm_shared.runtime.compile_choice`). ``--quick``'s
    ~700 steps therefore train eagerly: compiling cold (75 s) repays itself after ~750 steps."""
    from lm_shared.runtime import compile_choice

    with open(data_dir / "train.jsonl", "rb") as f:
        n_train = sum(1 for line in f if line.strip())
    per_epoch = math.ceil(n_train / tc.batch_size) // tc.accumulate_grad_batches
    steps = tc.max_steps if tc.max_steps > 0 else per_epoch * (tc.max_epochs or 1)
    try:
        return compile_choice(tc.compile, device, steps)
    except ValueError as exc:
        raise NanologicError(str(exc)) from None


def _checked_data(out: Path, data_dir: Path | None, request: TrainRequest) -> Path:
    """The run's data folder, with the embedded dataset generated into it when none was given."""
    if data_dir is None:
        data_dir = out / "data"
        if not (data_dir / "stats.json").exists():  # written last: a dataset cut short is rebuilt
            console.print(
                f"[bold]Generating the embedded dataset[/] ({request.n_generate} raw examples) in {data_dir}"
            )
            config = DatasetConfig.for_training(
                request.n_generate,
                request.max_per_complexity,
                request.train_config.seed,
                request.symbolic_share,
                request.comma_less_share,
            )
            build_dataset(data_dir, config)
    _require_splits(data_dir)
    for split in ("train", "val", "test"):
        check_records(data_dir / f"{split}.jsonl")
    return data_dir


def _run_tokenizer(out: Path, data_dir: Path, vocab_size: int):
    """The run's tokenizer: the saved one (a resumed run), else trained on ``data_dir``."""
    from lm_shared.tokenization import BPETokenizer

    tok_dir = out / "tokenizer"
    if (tok_dir / "tokenizer.json").exists():
        return BPETokenizer.load(tok_dir / "tokenizer.json")  # a damaged one: TokenizerError names it
    return train_tokenizer(data_dir, tok_dir, vocab_size)


def curriculum_note(tc: TrainConfig) -> str | None:
    """A warning for a run whose only epoch is the curriculum's (simple -> advanced): it ends on
    advanced sentences and forgets the simple ones (``dev_real`` 0.176 against 0.568 shuffled,
    docs/measurements.md, 2026-12-05); None otherwise."""
    if tc.curriculum and tc.max_epochs == 1 and tc.max_steps <= 0:
        return "one epoch with the curriculum trains simple -> advanced and ends on advanced sentences only; --no-curriculum shuffles it"
    return None


def _settings_table(
    out: Path,
    request: TrainRequest,
    model_cfg,
    n_params: int,
    device: str,
    precision: str,
    data_dir: Path,
    threads: ThreadChoice,
    compiled: CompileChoice,
) -> Table:
    tc = request.train_config
    table = Table(title=f"nanologic run {out}")
    table.add_column("setting")
    table.add_column("value")
    for k, v in {
        "preset": request.preset,
        "parameters": f"{n_params:,}",
        "vocab": model_cfg.vocab_size,
        "width x layers": f"{model_cfg.hidden_size} x {model_cfg.num_layers} (heads {model_cfg.num_heads}/{model_cfg.num_kv_heads})",
        "device / precision": f"{device} / {precision}",
        "optimizer": f"{tc.optimizer} lr={tc.lr} wd={tc.weight_decay}",
        "epochs / batch": f"{tc.max_epochs} / {tc.batch_size} x{tc.accumulate_grad_batches}",
        "data": str(data_dir),
        "threads": f"{threads.threads} ({threads.reason})",
        "torch.compile": f"{'yes' if compiled.enabled else 'no'} ({compiled.reason})",
    }.items():
        table.add_row(k, str(v))
    return table


def _evaluate_trained_run(
    out: Path, data_dir: Path, eval_limit: int | None, facts: dict, t_start: float
) -> dict:
    """Evaluate on the test split and the real-sentence set; ``eval/report.json`` is written once,
    with ``facts``, the clause overlap and the real-sentence figures in it."""
    from nanologic.evaluation import write_report
    from nanologic.pipeline import clause_overlap

    console.print(f"[bold]Evaluating[/] on {data_dir / 'test.jsonl'}")
    report, rows = score_run(out, data_dir / "test.jsonl", limit=eval_limit)
    report.update(facts)
    report["clause_overlap"] = clause_overlap(
        read_jsonl(data_dir / "train.jsonl"), read_jsonl(data_dir / "test.jsonl")
    )
    report["total_seconds"] = None  # its place in report.json, before dev_real; set once all is done
    if DEV_REAL.is_file():
        console.print(f"[bold]Evaluating[/] on the real-sentence development set {DEV_REAL}")
        dev = evaluate_run(out, DEV_REAL, limit=eval_limit, out_dir=out / "eval-dev_real")
        keys = ("n_test", "grounded_accuracy", "equivalence_accuracy", "equivalence_any_mapping")
        report["dev_real"] = {k: dev[k] for k in keys}
        report["dev_real"]["error_categories"] = dev.get("error_categories", {})
        print_eval(dev)
        # The same set decoded freely: what the grounded decoding adds (issue 13, part 3).
        free = evaluate_run(
            out, DEV_REAL, limit=eval_limit, out_dir=out / "eval-dev_real-free", constraint=None
        )
        report["dev_real_free"] = {k: free[k] for k in keys}
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    write_report(report, rows, out / "eval")
    print_eval(report)
    overlap = report["clause_overlap"]
    console.print(
        f"test clauses seen in train: {overlap['clauses_in_train']} of {overlap['clauses']}"
        f"; total {report['total_seconds']:.0f} s (training {report['train_seconds']:.0f} s)"
    )
    return report
