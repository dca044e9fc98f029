"""Training with ``model.fit`` and the stock Keras callbacks.

A run folder holds everything needed to sample, evaluate or resume::

    config.json        data, model, training and runtime settings (read back by sample/evaluate)
    tokenizer/         the fitted tokenizer
    model.keras        the best model (lowest validation perplexity), written when training ends
    checkpoints/       one full model per epoch (ModelCheckpoint)
    backup/            BackupAndRestore state while training runs; an interrupted run resumes here
    logs/              TensorBoard
    history.csv        per-epoch loss, perplexity and learning rate (CSVLogger)
    metrics.json       best validation perplexity, epochs run, training time and throughput
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from lm_shared.runs import StopSignal, atomic_path, atomic_write_json
from lstm_textgen import runtime
from lstm_textgen.data import DataConfig, prepare_splits, train_and_eval_datasets
from lstm_textgen.errors import TextgenError
from lstm_textgen.tokenization import load_tokenizer

runtime.configure_keras()

import keras  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn  # noqa: E402

from lstm_textgen.model import (  # noqa: E402
    ModelConfig,
    SparseCategoricalCrossentropyWithLabelSmoothing,
    build_model,
    count_params,
    perplexity_metric,
)

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the defaults are the original's."""

    epochs: int = 10  # maximum epochs (EarlyStopping usually ends sooner on small corpora)
    learning_rate: float = 1e-3  # Adam
    clipnorm: float = 1.0  # per-variable gradient norm clip, against exploding LSTM gradients
    label_smoothing: float = 0.1  # target smoothing of the loss (perplexity stays unsmoothed)
    grad_accum_steps: int = 1  # >1 accumulates gradients over this many batches (small GPUs)
    early_stopping_patience: int = 3  # epochs without a better validation perplexity
    reduce_lr_patience: int = 1  # epochs on a plateau before the learning rate is halved
    reduce_lr_factor: float = 0.5  # learning-rate multiplier on a plateau
    min_learning_rate: float = 1e-5  # floor for ReduceLROnPlateau
    steps_per_epoch: int | None = None  # cap batches per epoch (quick runs); None = whole split
    seed: int = 0  # one seed for data order, initialisation and dropout
    precision: str = "auto"  # auto (mixed_float16 on fast-fp16 GPUs, else float32) or a Keras policy
    jit_compile: str = "auto"  # auto | on | off; auto lets Keras decide (XLA is off for cuDNN LSTMs)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise TextgenError(f"epochs must be >= 1, got {self.epochs}")
        # `not x > 0` (not `x <= 0`): a NaN compares False both ways and must be refused too.
        for flag, value in (
            ("--lr (learning_rate)", self.learning_rate),
            ("clipnorm", self.clipnorm),
            ("reduce_lr_factor", self.reduce_lr_factor),
            ("min_learning_rate", self.min_learning_rate),
        ):
            if not (math.isfinite(value) and value > 0):
                raise TextgenError(f"{flag} must be a finite number > 0, got {value}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise TextgenError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.grad_accum_steps < 1:
            raise TextgenError(f"grad_accum_steps must be >= 1, got {self.grad_accum_steps}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise TextgenError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        if self.jit_compile not in ("auto", "on", "off"):
            raise TextgenError(f"jit_compile must be auto, on or off, got {self.jit_compile!r}")
        if self.precision not in runtime.PRECISIONS:
            raise TextgenError(
                f"precision must be one of {', '.join(runtime.PRECISIONS)}, got {self.precision!r}"
            )


def compile_model(model: keras.Model, config: TrainConfig) -> keras.Model:
    optimizer = keras.optimizers.Adam(
        learning_rate=config.learning_rate,
        clipnorm=config.clipnorm,
        gradient_accumulation_steps=config.grad_accum_steps if config.grad_accum_steps > 1 else None,
    )
    model.compile(
        optimizer=optimizer,
        loss=SparseCategoricalCrossentropyWithLabelSmoothing(config.label_smoothing),
        metrics=[perplexity_metric()],
        jit_compile={"auto": "auto", "on": True, "off": False}[config.jit_compile],
    )
    return model


class RichProgress(keras.callbacks.Callback):
    """One rich progress bar per epoch with the running loss and perplexity."""

    def __init__(self, console: Console, steps_per_epoch: int | None, epochs: int) -> None:
        super().__init__()
        self.console = console
        self.steps = steps_per_epoch
        self.epochs = epochs
        self.progress: Progress | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{self.epochs}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} batches"),
            TextColumn("{task.fields[metrics]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=self.steps, metrics="")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.progress is not None:
            logs = logs or {}
            text = f"loss {logs.get('loss', float('nan')):.3f} ppl {logs.get('perplexity', float('nan')):.2f}"
            self.progress.update(self.task, completed=batch + 1, metrics=text)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        logs = logs or {}
        lr = logs.get("learning_rate")
        self.console.print(
            f"epoch {epoch + 1}/{self.epochs}: loss {logs.get('loss', math.nan):.4f} "
            f"ppl {logs.get('perplexity', math.nan):.3f} | val_loss {logs.get('val_loss', math.nan):.4f} "
            f"val_ppl {logs.get('val_perplexity', math.nan):.3f}"
            + (f" | lr {float(lr):.2e}" if lr is not None else "")
        )


def _jsonable(config: Any) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(config)))


def train(
    data_config: DataConfig,
    model_config: ModelConfig,
    train_config: TrainConfig,
    out_dir: Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    console: Console | None = None,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict[str, Any]:
    """Train a model and write the run folder described in the module docstring.

    ``model_config.vocab_size`` is replaced by the fitted tokenizer's size and ``max_len`` by
    ``data_config.seq_len``. Returns the contents of ``metrics.json``.

    ``out_dir`` follows :func:`lm_shared.runs.open_run_dir`: locked while training; a finished
    run is replaced only with ``overwrite``, and then the new run is built in a hidden sibling
    folder and swapped in when it finishes (a kill leaves the old run whole); an interrupted run
    is continued from ``backup/`` with ``resume`` (same settings) or refused with that advice.
    """
    from lm_shared.runs import open_run_dir

    console = console or Console(stderr=True)
    runtime.seed_all(train_config.seed)
    environment = runtime.configure_accelerator(train_config.precision)

    config = {
        "data": _jsonable(data_config),
        "model": _jsonable(model_config),
        "train": _jsonable(train_config),
    }
    run = open_run_dir(
        out_dir,
        package="lstm-textgen",
        resume=resume,
        force=overwrite,
        config=config,
        force_hint="--overwrite",
        run_files=(MODEL_FILE, CONFIG_FILE),
    )
    with run:
        metrics = _train_in(
            run, data_config, model_config, train_config, config, environment, console, extra_callbacks
        )
        run.finish()
    return metrics


def _train_in(run, data_config, model_config, train_config, config, environment, console, extra_callbacks):
    out_dir = run.path
    resume = run.resumed and (out_dir / "backup").exists()
    tokenizer_dir = out_dir / "tokenizer"
    existing = None
    if resume and (tokenizer_dir / "tokenizer_config.json").exists():
        existing = load_tokenizer(tokenizer_dir)  # a resumed run must keep its token ids
    with console.status("reading, cleaning and tokenising the corpus"):
        tokenizer, splits, source = prepare_splits(data_config, tokenizer_dir, existing)
    model_config = replace(model_config, vocab_size=tokenizer.vocab_size, max_len=data_config.seq_len)
    config["model"] = _jsonable(model_config)
    if not run.resumed:  # a fresh run never appends to an earlier one's history
        shutil.rmtree(out_dir / "backup", ignore_errors=True)
        (out_dir / "history.csv").unlink(missing_ok=True)
    config["runtime"] = {**environment, "source": source, "tensorflow_keras": keras.__version__}
    config["splits"] = {name: {"tokens": s.n_tokens, "characters": len(s.text)} for name, s in splits.items()}
    atomic_write_json(out_dir / CONFIG_FILE, config)

    train_ds, val_ds = train_and_eval_datasets(data_config, splits, train_config.seed)
    model = compile_model(build_model(model_config), train_config)
    n_params = count_params(model)
    steps = train_config.steps_per_epoch or int(train_ds.cardinality())
    console.print(
        f"[bold]{model_config.architecture}[/] with {n_params:,} parameters | tokenizer "
        f"{tokenizer.kind} ({tokenizer.vocab_size} tokens) | corpus {source} | "
        f"train/val/test tokens {splits['train'].n_tokens:,}/{splits['validation'].n_tokens:,}/"
        f"{splits['test'].n_tokens:,} | {environment['device']} {environment['precision']}"
        + (" | resuming from backup/" if resume else "")
    )

    monitor = {"monitor": "val_perplexity", "mode": "min"}
    callbacks = [
        keras.callbacks.BackupAndRestore(backup_dir=str(out_dir / "backup")),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.EarlyStopping(
            patience=train_config.early_stopping_patience, restore_best_weights=True, **monitor
        ),
        keras.callbacks.ReduceLROnPlateau(
            factor=train_config.reduce_lr_factor,
            patience=train_config.reduce_lr_patience,
            min_lr=train_config.min_learning_rate,
            **monitor,
        ),
        keras.callbacks.ModelCheckpoint(str(out_dir / "checkpoints" / "epoch_{epoch:03d}.keras")),
        keras.callbacks.TensorBoard(log_dir=str(out_dir / "logs")),
        keras.callbacks.CSVLogger(str(out_dir / "history.csv"), append=True),
        RichProgress(console, steps, train_config.epochs),
        *extra_callbacks,
    ]
    started = time.perf_counter()
    # SIGINT/SIGTERM (also when the launcher left SIGINT ignored, as nohup and `&` do) stop at the
    # next batch as a KeyboardInterrupt: the backup of the last whole epoch stays, exit 130.
    with StopSignal(quiet=True) as stop:
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=train_config.epochs,
            steps_per_epoch=train_config.steps_per_epoch,
            callbacks=[*callbacks, _StopOnRequest(stop)],
            shuffle=False,  # the tf.data pipeline shuffles (seeded, every epoch)
            verbose=0,
        )
    seconds = time.perf_counter() - started
    val_ppl = history.history.get("val_perplexity", [])
    if not val_ppl or not all(math.isfinite(v) for v in val_ppl):
        raise TextgenError(
            f"{out_dir}: training diverged (non-finite loss); checkpoints so far are in {out_dir / 'checkpoints'}; "
            "try a lower --lr"
        )
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        model.save(tmp)
    epochs_session = len(val_ppl)
    tokens_seen = epochs_session * steps * data_config.batch_size * data_config.seq_len
    # Whole-run numbers: history.csv holds every epoch, those before a resume included.
    val_ppl = _history_column(out_dir / "history.csv", "val_perplexity") or val_ppl
    metrics = {
        "architecture": model_config.architecture,
        "parameters": n_params,
        "best_val_perplexity": float(min(val_ppl)),
        "best_epoch": int(val_ppl.index(min(val_ppl)) + 1),
        "epochs_run": len(val_ppl),
        "epochs_this_session": epochs_session,
        "train_seconds": seconds,
        "train_tokens_per_s": tokens_seen / seconds if seconds > 0 else None,
        "device": environment["device"],
        "precision": environment["precision"],
        "resumed": resume,
    }
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics


class _StopOnRequest(keras.callbacks.Callback):
    """Raise ``KeyboardInterrupt`` at the first batch boundary after a SIGINT/SIGTERM."""

    def __init__(self, stop: StopSignal) -> None:
        super().__init__()
        self.stop = stop

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.stop.requested:
            raise KeyboardInterrupt

    on_test_batch_end = on_train_batch_end


def _history_column(path: Path, column: str) -> list[float]:
    """One column of Keras' CSVLogger file (every epoch of the run), [] when absent."""
    import csv

    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [float(row[column]) for row in csv.DictReader(handle) if row.get(column) not in (None, "")]


def config_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Rebuild a config dataclass from saved JSON, ignoring keys it does not know."""
    known = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in values.items() if k in known}
    if "split" in kwargs:
        kwargs["split"] = tuple(kwargs["split"])
    return cls(**kwargs)


# `train` option -> (section, field) of the run's saved config (config.json / run.json "config").
RESUMED_SETTINGS = {
    "data": ("data", "data"),
    "tokenizer": ("data", "tokenizer"),
    "vocab_size": ("data", "vocab_size"),
    "seq_len": ("data", "seq_len"),
    "stride": ("data", "stride"),
    "split": ("data", "split"),
    "batch_size": ("data", "batch_size"),
    "lowercase": ("data", "lowercase"),
    "no_punctuation": ("data", "keep_punctuation"),
    "model": ("model", "architecture"),
    "embedding_dim": ("model", "embedding_dim"),
    "lstm_units": ("model", "lstm_units"),
    "lstm_layers": ("model", "lstm_layers"),
    "dropout": ("model", "dropout"),
    "transformer_layers": ("model", "transformer_layers"),
    "epochs": ("train", "epochs"),
    "lr": ("train", "learning_rate"),
    "label_smoothing": ("train", "label_smoothing"),
    "grad_accum": ("train", "grad_accum_steps"),
    "steps_per_epoch": ("train", "steps_per_epoch"),
    "patience": ("train", "early_stopping_patience"),
    "seed": ("train", "seed"),
    "precision": ("train", "precision"),
    "jit_compile": ("train", "jit_compile"),
}


def resumed_arguments(args: Any, saved: dict) -> Any:
    """``--resume``: the run's own settings (its data first of all) for every option not typed.

    A typed option that differs from the run's is then refused by the run-folder check, naming
    it; an option left out never falls back to a default such as the embedded corpus.
    """
    given = getattr(args, "given", set())
    for dest, (section, name) in RESUMED_SETTINGS.items():
        if dest in given or name not in (saved.get(section) or {}):
            continue
        value = saved[section][name]
        if dest == "no_punctuation":
            value = not value
        elif dest == "split":
            value = tuple(value)
        setattr(args, dest, value)
    return args


def data_config_from_args(args: Any) -> DataConfig:
    """The data section of ``train``'s parsed arguments."""
    return DataConfig(
        data=args.data,
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
        lowercase=args.lowercase,
        keep_punctuation=not args.no_punctuation,
        seq_len=args.seq_len,
        stride=args.stride,
        split=args.split,
        batch_size=args.batch_size,
    )


def train_command(args: Any) -> int:
    """``lstm-textgen train``: build the configs from parsed arguments, train, say where it went."""
    from lm_shared.runs import read_run_state
    from lm_shared.runtime import make_run_dir

    if args.resume and args.out is not None and Path(args.out).is_dir():
        state = read_run_state(args.out)
        if state is not None:  # continue with the run's own data and settings
            args = resumed_arguments(args, state.get("config") or {})
    data_config = data_config_from_args(args)
    model_config = ModelConfig(
        architecture=args.model,
        embedding_dim=args.embedding_dim,
        lstm_units=args.lstm_units,
        lstm_layers=args.lstm_layers,
        dropout=args.dropout,
        transformer_layers=args.transformer_layers,
        max_len=data_config.seq_len,
    )
    train_config = TrainConfig(
        epochs=args.epochs,
        learning_rate=args.lr,
        label_smoothing=args.label_smoothing,
        grad_accum_steps=args.grad_accum,
        steps_per_epoch=args.steps_per_epoch,
        early_stopping_patience=args.patience,
        seed=args.seed,
        precision=args.precision,
        jit_compile=args.jit_compile,
    )
    out_dir = args.out if args.out is not None else make_run_dir(runtime.DEFAULT_RUNS_ROOT)
    console = Console(stderr=True)
    metrics = train(
        data_config,
        model_config,
        train_config,
        Path(out_dir),
        overwrite=args.overwrite,
        resume=args.resume,
        console=console,
    )
    console.print(
        f"best validation perplexity {metrics['best_val_perplexity']:.3f} (epoch {metrics['best_epoch']}/"
        f"{metrics['epochs_run']}) in {metrics['train_seconds']:.1f} s"
    )
    print(f"model saved to {Path(out_dir) / MODEL_FILE}")
    cli = "uv run --package lstm-textgen lstm-textgen"
    print(
        f'next: {cli} sample --model {out_dir} --prompt "Shall I"   |   '
        f"{cli} evaluate --model {out_dir} --out {Path(out_dir) / 'eval.json'}"
    )
    return 0
