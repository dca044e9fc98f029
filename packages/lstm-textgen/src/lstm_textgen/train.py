"""Training with ``model.fit`` and the stock Keras callbacks.

A run folder holds everything needed to sample, evaluate or resume::

    config.json        data, model, training and runtime settings (read back by sample/evaluate)
    config.yaml        the command's settings (``lstm-textgen train --config`` loads it again)
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
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from lm_shared.runs import StopSignal, atomic_path, atomic_write_json, atomic_write_text
from lstm_textgen import runtime
from lstm_textgen.configs import RunOptions, TrainConfig
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
COMMAND_CONFIG_FILE = "config.yaml"  # the command's settings, for `train --config`
MODEL_FILE = "model.keras"


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
    command_config: str | None = None,
) -> dict[str, Any]:
    """Train a model and write the run folder described in the module docstring.

    ``model_config.vocab_size`` is replaced by the fitted tokenizer's size and ``max_len`` by
    ``data_config.seq_len``. Returns the contents of ``metrics.json``.

    ``out_dir`` follows :func:`lm_shared.runs.open_run_dir`: locked while training; a finished
    run is replaced only with ``overwrite``, and then the new run is built in a hidden sibling
    folder and swapped in when it finishes (a kill leaves the old run whole); an interrupted run
    is continued from ``backup/`` with ``resume`` (same settings) or refused with that advice.
    ``command_config`` (the command's settings as YAML) is written as ``config.yaml``.
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
        if command_config is not None:
            atomic_write_text(run.path / COMMAND_CONFIG_FILE, command_config)
        metrics = _train_in(
            run, data_config, model_config, train_config, config, environment, console, extra_callbacks
        )
        run.finish()
    return metrics


def _train_in(run, data_config, model_config, train_config, config, environment, console, extra_callbacks):
    out_dir = run.path
    resume = run.resumed and (out_dir / "backup").exists()
    tokenizer, splits, source, model_config = _prepare_run(
        run, data_config, model_config, config, environment, console, resume
    )
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
    callbacks = _callbacks(out_dir, train_config, console, steps, extra_callbacks)
    val_ppl, seconds = _fit(model, train_ds, val_ds, train_config, callbacks, out_dir)
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


def _prepare_run(run, data_config, model_config, config, environment, console, resume):
    """Tokenise the corpus (a resumed run keeps its tokenizer), clear a fresh run's leftovers and
    write ``config.json``; returns the tokenizer, the splits, the corpus's name and the model
    config sized to the tokenizer and the window."""
    out_dir = run.path
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
    return tokenizer, splits, source, model_config


def _callbacks(
    out_dir: Path,
    train_config: TrainConfig,
    console: Console,
    steps: int,
    extra_callbacks: Sequence[keras.callbacks.Callback],
) -> list[keras.callbacks.Callback]:
    """The stock Keras callbacks that write the run folder, then the progress bar and the extras."""
    monitor = {"monitor": "val_perplexity", "mode": "min"}
    return [
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


def _fit(model, train_ds, val_ds, train_config, callbacks, out_dir: Path) -> tuple[list[float], float]:
    """``model.fit`` under a stop signal; returns this session's validation perplexities and the
    seconds it took, or raises ``TextgenError`` when training diverged."""
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
    return val_ppl, seconds


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


def train_command(
    data_config: DataConfig,
    model_config: ModelConfig,
    train_config: TrainConfig,
    run: RunOptions,
    *,
    command_config: str | None = None,
) -> int:
    """``lstm-textgen train``: train the checked configs, say where the model went.

    ``command_config`` is the YAML of the command's settings (``lm_shared.config_cli``), saved
    as the run's ``config.yaml`` for ``--config`` to load again.
    """
    from lm_shared.runtime import make_run_dir

    out_dir = run.out if run.out is not None else make_run_dir(runtime.DEFAULT_RUNS_ROOT)
    console = Console(stderr=True)
    metrics = train(
        data_config,
        model_config,
        train_config,
        Path(out_dir),
        overwrite=run.overwrite,
        resume=run.resume,
        console=console,
        command_config=command_config,
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
