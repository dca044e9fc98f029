"""``lstm-textgen bench``: is the input pipeline fast enough, and how fast do the models run?

Measured in one process, on the same data and batch shape, so the ratios hold even on a loaded
machine:

* ``data_batches_per_s``: the tf.data pipeline alone (windows cached, shuffled, batched,
  prefetched), against ``model_steps_per_s``: LSTM training steps (``model.fit``) on one batch
  repeated from memory. ``input_headroom`` = their ratio; above 1 the input can never starve
  the model.
* ``train_tokens_per_s``: training throughput of both architectures on that in-memory batch,
  and ``fed_train_tokens_per_s`` with ``model.fit`` reading the real pipeline (about equal when
  the input keeps up). Each is the best of two timed runs after a warm-up.
* ``sampling_tokens_per_s``: new tokens per second of a batch-1 top-k generation, timed on a
  second run of the traced sampling loop so tracing is not counted.
* ``bf16``: on a CPU, the LSTM under ``mixed_bfloat16`` against float32 (CPUs with AVX512-BF16
  or AMX can gain; others usually lose).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from lm_shared.runs import atomic_write_json
from lstm_textgen import runtime
from lstm_textgen.data import DataConfig, prepare_splits, train_and_eval_datasets

runtime.configure_keras()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from lstm_textgen.generate import SamplingConfig, prepare_generation  # noqa: E402
from lstm_textgen.model import ModelConfig, build_model, count_params  # noqa: E402
from lstm_textgen.train import TrainConfig, compile_model  # noqa: E402


def _best_seconds_per_step(model: keras.Model, dataset, steps: int, rounds: int = 2) -> float:
    """Fastest of ``rounds`` timed ``model.fit`` runs of ``steps`` steps (after a warm-up run)."""
    model.fit(dataset, steps_per_epoch=3, epochs=1, shuffle=False, verbose=0)
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        model.fit(dataset, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)
        best = min(best, (time.perf_counter() - started) / steps)
    return best


def _time_pipeline(dataset, batches: int) -> float:
    iterator = iter(dataset.repeat())
    for _ in range(5):
        next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches / (time.perf_counter() - started)


def _time_sampling(model: keras.Model, new_tokens: int) -> float:
    """New tokens per second of a batch-1 top-k generation (second run of the traced loop)."""
    run, _ = prepare_generation(model, [[2, 5, 6, 7, 8]], new_tokens, SamplingConfig(strategy="top_k"), ())
    run()  # traces the loop
    started = time.perf_counter()
    run()
    return new_tokens / (time.perf_counter() - started)


def run_bench(
    *,
    data: str | None = None,
    tokenizer: str = "char",
    steps: int = 20,
    new_tokens: int = 200,
    bf16: bool = True,
    seed: int = 0,
    seq_len: int = 100,
    batch_size: int = 32,
    jit_compile: str = "auto",
    rounds: int = 2,
    console: Console | None = None,
) -> dict[str, Any]:
    """Time the pipeline, training and sampling of both architectures at their default sizes."""
    console = console or Console(stderr=True)
    runtime.seed_all(seed)
    environment = runtime.configure_accelerator("auto")
    data_config = DataConfig(data=data, tokenizer=tokenizer, seq_len=seq_len, batch_size=batch_size)
    with tempfile.TemporaryDirectory() as tmp, console.status("preparing data"):
        tok, splits, source = prepare_splits(data_config, Path(tmp) / "tokenizer")
    train_ds, _ = train_and_eval_datasets(data_config, splits, seed)
    n_batches = int(train_ds.cardinality())
    for _ in train_ds:  # one pass fills the cache, as after a training run's first epoch
        pass
    x, y = (t.numpy() for t in next(iter(train_ds)))
    tokens_per_step = x.shape[0] * x.shape[1]
    in_memory = tf.data.Dataset.from_tensors((x, y)).repeat()  # the same batch, no input work
    pipeline = train_ds.repeat()

    with console.status("timing the tf.data pipeline"):
        data_batches_per_s = _time_pipeline(train_ds, max(50, 5 * steps))
    train_config = TrainConfig(seed=seed, jit_compile=jit_compile)
    results: dict[str, Any] = {
        "device": environment["device"],
        "precision": environment["precision"],
        "jit_compile": jit_compile,
        "corpus": source,
        "tokenizer": tok.kind,
        "vocab_size": tok.vocab_size,
        "batch_size": int(x.shape[0]),
        "seq_len": int(x.shape[1]),
        "train_batches_per_epoch": n_batches,
        "timed_steps": steps,
        "data_batches_per_s": data_batches_per_s,
        "parameters": {},
        "train_tokens_per_s": {},
        "fed_train_tokens_per_s": {},
        "sampling_tokens_per_s": {},
    }
    for architecture in ("lstm", "transformer"):
        config = ModelConfig(
            architecture=architecture, vocab_size=tok.vocab_size, max_len=data_config.seq_len
        )
        with console.status(f"timing {architecture} training and sampling"):
            model = compile_model(build_model(config), train_config)
            steps_per_s = 1.0 / _best_seconds_per_step(model, in_memory, steps, rounds)
            fed_seconds = _best_seconds_per_step(model, pipeline, steps, rounds)
            results["parameters"][architecture] = count_params(model)
            results["train_tokens_per_s"][architecture] = steps_per_s * tokens_per_step
            results["fed_train_tokens_per_s"][architecture] = tokens_per_step / fed_seconds
            results["sampling_tokens_per_s"][architecture] = _time_sampling(model, new_tokens)
            if architecture == "lstm":
                results["model_steps_per_s"] = steps_per_s
    results["input_headroom"] = data_batches_per_s / results["model_steps_per_s"]

    if bf16 and environment["device"] == "cpu":
        with console.status("timing the LSTM under mixed_bfloat16"):
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
            try:
                config = ModelConfig(vocab_size=tok.vocab_size, max_len=data_config.seq_len)
                model = compile_model(build_model(config), train_config)
                bf16_tokens = tokens_per_step / _best_seconds_per_step(model, in_memory, steps, rounds)
            finally:
                keras.mixed_precision.set_global_policy(environment["precision"])
        results["bf16"] = {
            "lstm_train_tokens_per_s": bf16_tokens,
            "speedup_vs_float32": bf16_tokens / results["train_tokens_per_s"]["lstm"],
        }
    return results


def bench_command(args: Any) -> int:
    console = Console(stderr=True)
    results = run_bench(
        data=args.data,
        tokenizer=args.tokenizer,
        steps=args.steps,
        new_tokens=args.new_tokens,
        bf16=args.bf16,
        seed=args.seed,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        jit_compile=args.jit_compile,
        rounds=args.rounds,
        console=console,
    )
    atomic_write_json(args.out, results)
    table = Table(
        title=f"lstm-textgen bench: {results['device']} {results['precision']}, batch {results['batch_size']} "
        f"x {results['seq_len']} tokens, {results['tokenizer']} vocab {results['vocab_size']}"
    )
    for column in ("measure", "lstm", "transformer"):
        table.add_column(column, justify="right" if column != "measure" else "left")
    table.add_row("parameters", *(f"{results['parameters'][a]:,}" for a in ("lstm", "transformer")))
    for key, label in (
        ("train_tokens_per_s", "train tokens/s (in-memory batch)"),
        ("fed_train_tokens_per_s", "train tokens/s (fit on tf.data)"),
        ("sampling_tokens_per_s", "sampling tokens/s (batch 1, top-k)"),
    ):
        table.add_row(label, *(f"{results[key][a]:,.0f}" for a in ("lstm", "transformer")))
    table.add_row("tf.data batches/s", f"{results['data_batches_per_s']:,.1f}", "")
    table.add_row("LSTM train steps/s", f"{results['model_steps_per_s']:,.2f}", "")
    table.add_row("input headroom (data/model)", f"{results['input_headroom']:,.1f}x", "")
    if "bf16" in results:
        table.add_row("bf16/fp32 LSTM train speed", f"{results['bf16']['speedup_vs_float32']:.2f}x", "")
    console.print(table)
    print(f"wrote {args.out}")
    return 0
