"""Loading a run, scoring held-out text, and the ``sample`` and ``evaluate`` commands.

Perplexity and bits per byte are computed once over the whole test split, from summed NLL (never
averaged per batch), on non-overlapping windows of ``seq_len`` so every scored token counts once.
Each window starts from an empty context (zero LSTM state, no earlier tokens for the
Transformer), exactly as in training. Bits per byte divide by the UTF-8 bytes those scored tokens
stand for, so the three tokenisers compare on the same footing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lm_shared.runs import atomic_write_json
from lstm_textgen import runtime
from lstm_textgen.data import DataConfig, Split, prepare_splits, window_starts
from lstm_textgen.errors import TextgenError
from lstm_textgen.text import clean_prompt
from lstm_textgen.tokenization import END_ID, PAD_ID, UNK_ID, TextTokenizer, load_tokenizer

runtime.configure_keras()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402

from lm_shared.metrics import NLLAccumulator, corpus_bleu, repetition_report  # noqa: E402
from lstm_textgen.generate import SamplingConfig, encode_prompt, generate_ids, unknown_fraction  # noqa: E402
from lstm_textgen.train import CONFIG_FILE, MODEL_FILE, config_from_dict  # noqa: E402

SAMPLE_TEMPERATURES = (0.5, 1.0, 1.5)
DEFAULT_NEW_TOKENS = {"char": 200, "bpe": 60, "word": 40}  # about 40 words of continuation each


def load_run(path: str | Path) -> tuple[keras.Model, TextTokenizer, dict[str, Any], Path]:
    """Load a run: ``model.keras``, the tokenizer and ``config.json``.

    ``path`` is a run folder, its ``model.keras``, or one of its ``checkpoints/epoch_NNN.keras``
    (to sample from or evaluate an earlier epoch, or an interrupted run).
    """
    path = Path(path)
    run_dir = path.parent if path.suffix == ".keras" else path
    if path.suffix == ".keras" and run_dir.name == "checkpoints":
        run_dir = run_dir.parent
    model_path = path if path.suffix == ".keras" else path / MODEL_FILE
    if not run_dir.is_dir():
        raise TextgenError(f"{run_dir}: no such run folder")
    from lm_shared.runs import require_run_of

    require_run_of(run_dir, "lstm-textgen", finished=False)  # another member's run is named as such
    if not model_path.is_file():
        raise TextgenError(
            f"{model_path}: not found; train a model first "
            f"(uv run --package lstm-textgen train --out {run_dir})"
        )
    config_path = run_dir / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TextgenError(
            f"{config_path}: not found; is {run_dir} a run folder written by `train`?"
        ) from None
    except json.JSONDecodeError as exc:
        raise TextgenError(f"{config_path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:  # not UTF-8, or nested too deeply
        raise TextgenError(f"{config_path}: not a run config ({type(exc).__name__})") from None
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    import lstm_textgen.model  # noqa: F401  (registers the custom classes for deserialisation)

    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as exc:  # keras raises ValueError/OSError/zipfile errors for damaged files
        raise TextgenError(f"{model_path}: cannot load the model ({type(exc).__name__}: {exc})") from None
    return model, tokenizer, config, run_dir


def score_split(model: keras.Model, split: Split, seq_len: int, batch_size: int = 32) -> NLLAccumulator:
    """Summed NLL, token and byte counts over non-overlapping windows of one split."""
    starts = window_starts(split.n_tokens, seq_len, seq_len)
    if starts.size == 0:
        raise TextgenError(
            f"the {split.name} split has {split.n_tokens} tokens, fewer than seq_len+1={seq_len + 1}"
        )
    offsets = starts[:, None] + np.arange(seq_len + 1)[None, :]
    windows = split.ids[offsets]
    target_bytes = split.byte_lengths[offsets[:, 1:]]

    @tf.function(reduce_retracing=True)
    def nll_sum(inputs, targets):
        logits = tf.cast(model(inputs, training=False), tf.float32)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
        valid = tf.cast(targets != PAD_ID, tf.float32)
        return tf.reduce_sum(tf.cast(nll * valid, tf.float64)), tf.reduce_sum(tf.cast(valid, tf.int64))

    accumulator = NLLAccumulator()
    for i in range(0, len(windows), batch_size):
        batch = windows[i : i + batch_size]
        total, count = nll_sum(tf.constant(batch[:, :-1]), tf.constant(batch[:, 1:]))
        valid_bytes = int(target_bytes[i : i + batch_size][batch[:, 1:] != PAD_ID].sum())
        accumulator.add(float(total), int(count), n_bytes=valid_bytes)
    return accumulator


def _continuation_pairs(split: Split, n_prompts: int, prompt_tokens: int, new_tokens: int):
    span = prompt_tokens + new_tokens
    if split.n_tokens < span + 1:
        raise TextgenError(
            f"the {split.name} split has {split.n_tokens} tokens; prompts of {prompt_tokens} plus "
            f"continuations of {new_tokens} need at least {span + 1} (lower --prompt-tokens/--new-tokens)"
        )
    # Skip the leading <START> so prompts are ordinary text; spread prompts over the whole split.
    positions = np.unique(np.linspace(1, split.n_tokens - span - 1, n_prompts).astype(int))
    prompts = [split.ids[p : p + prompt_tokens].tolist() for p in positions]
    references = [split.ids[p + prompt_tokens : p + span].tolist() for p in positions]
    return prompts, references


def _generate_continuations(
    model: keras.Model,
    tokenizer: TextTokenizer,
    prompts: list[list[int]],
    new_tokens: int,
    seed: int,
    console: Console,
) -> dict[str, list[str]]:
    """Decoded continuations of every prompt, greedy and at each of ``SAMPLE_TEMPERATURES``."""
    runs = [("greedy", SamplingConfig(strategy="greedy", seed=seed))] + [
        (str(t), SamplingConfig(strategy="temperature", temperature=t, seed=seed))
        for t in SAMPLE_TEMPERATURES
    ]
    generated: dict[str, list[str]] = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("generating continuations", total=len(runs))
        for name, sampling in runs:
            ids = generate_ids(model, prompts, new_tokens, sampling, stop_token_ids=(END_ID,))
            generated[name] = [tokenizer.decode(g) for g in ids]
            progress.advance(task)
    return generated


def evaluate_run(
    model_dir: str | Path,
    *,
    data: str | None = None,
    n_prompts: int = 16,
    prompt_tokens: int | None = None,
    new_tokens: int | None = None,
    seed: int = 0,
    console: Console | None = None,
) -> dict[str, Any]:
    """Everything ``lstm-textgen evaluate`` reports, as a dict (see the README for the keys)."""
    console = console or Console(stderr=True)
    started = time.perf_counter()
    runtime.seed_all(seed)
    model, tokenizer, config, run_dir = load_run(model_dir)
    data_config: DataConfig = config_from_dict(DataConfig, config["data"])
    if data is not None:
        data_config = config_from_dict(DataConfig, {**config["data"], "data": data})
    with console.status("reading the corpus and encoding its splits"):
        _, splits, source = prepare_splits(data_config, run_dir / "tokenizer", tokenizer)
    test = splits["test"]
    with console.status(f"scoring {test.n_tokens:,} test tokens"):
        nll = score_split(model, test, data_config.seq_len, data_config.batch_size)

    prompt_tokens = prompt_tokens or max(1, data_config.seq_len // 2)
    new_tokens = new_tokens or DEFAULT_NEW_TOKENS[tokenizer.kind]
    prompts, references = _continuation_pairs(test, n_prompts, prompt_tokens, new_tokens)
    generated = _generate_continuations(model, tokenizer, prompts, new_tokens, seed, console)
    result: dict[str, Any] = {
        "model": str(run_dir),
        "architecture": config["model"]["architecture"],
        "tokenizer": tokenizer.kind,
        "vocab_size": tokenizer.vocab_size,
        "corpus": source,
        "split": "test",
        "perplexity": nll.perplexity,
        "bits_per_byte": nll.bits_per_byte,
        "nats_per_token": nll.nats_per_token,
        "scored_tokens": nll.n_tokens,
        "scored_bytes": nll.n_bytes,
        "test_tokens": test.n_tokens,
        # Share of test tokens that are <UNK>: the model is not charged for spelling those words
        # out, so with a lossy (word) vocabulary perplexity and bits per byte are optimistic.
        "unk_rate": float(np.mean(test.ids == UNK_ID)),
        **_continuation_report(tokenizer, prompts, references, generated, prompt_tokens, new_tokens),
        "seconds": time.perf_counter() - started,
    }
    return result


def _continuation_report(
    tokenizer: TextTokenizer,
    prompts: list[list[int]],
    references: list[list[int]],
    generated: dict[str, list[str]],
    prompt_tokens: int,
    new_tokens: int,
) -> dict[str, Any]:
    """The report's continuation keys: greedy BLEU against the held-out text, diversity and
    repetition per decoding (headline numbers at temperature 1.0) and three samples of each."""
    decode = tokenizer.decode
    bleu = corpus_bleu(generated["greedy"], [decode(r) for r in references])
    by_temperature = {name: repetition_report(texts) for name, texts in generated.items()}
    diversity = by_temperature["1.0"]
    return {
        "bleu": bleu,
        "bleu_setup": {
            "decoding": "greedy",
            "prompts": len(prompts),
            "prompt_tokens": prompt_tokens,
            "new_tokens": new_tokens,
            "reference": "the held-out text that follows each prompt",
        },
        "diversity_temperature": 1.0,
        "distinct_1": diversity["distinct_1"],
        "distinct_2": diversity["distinct_2"],
        "distinct_3": diversity["distinct_3"],
        "repetition_rate": diversity["seq_rep_4"],
        "longest_repeated_run": diversity["longest_run"],
        "repeat": diversity["repeat"],
        "self_bleu": diversity.get("self_bleu"),
        "by_decoding": by_temperature,
        "samples": {
            name: [
                {"prompt": decode(p), "continuation": text}
                for p, text in list(zip(prompts, generated[name]))[:3]
            ]
            for name in generated
        },
    }


def evaluate_command(args: Any) -> int:
    from rich.table import Table

    console = Console(stderr=True)
    result = evaluate_run(
        args.model,
        data=args.data,
        n_prompts=args.prompts,
        prompt_tokens=args.prompt_tokens,
        new_tokens=args.new_tokens,
        seed=args.seed,
        console=console,
    )
    atomic_write_json(args.out, result)
    table = Table(
        title=f"{result['architecture']} / {result['tokenizer']} on the test split of {result['corpus']}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in (
        "perplexity",
        "bits_per_byte",
        "bleu",
        "distinct_1",
        "distinct_2",
        "distinct_3",
        "repetition_rate",
        "longest_repeated_run",
    ):
        value = result[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    for name in ("0.5", "1.0", "1.5"):
        sample = result["samples"][name][0]
        console.print(f"[bold]T={name}[/] {sample['prompt']}[cyan]{sample['continuation']}[/]")
    print(f"wrote {args.out}")
    return 0


def _stop_ids(tokenizer: TextTokenizer, stops: list[str] | None) -> tuple[int, ...]:
    if not stops:
        return (END_ID,)
    ids = []
    for stop in stops:
        stop = "\n" if stop == "\\n" else stop  # a shell passes a typed \n as two characters
        if stop == "<END>":
            ids.append(END_ID)
            continue
        encoded = tokenizer.encode(stop)
        if len(encoded) != 1:
            raise TextgenError(
                f"--stop {stop!r} is {len(encoded)} tokens for the {tokenizer.kind} tokenizer; "
                "each stop must be exactly one token (e.g. '.' or '\\n' for char)"
            )
        ids.append(encoded[0])
    return tuple(ids)


def sample_command(args: Any) -> int:
    """``lstm-textgen sample``: print ``--num-samples`` continuations of ``--prompt``.

    Args:
        args: the parsed ``sample`` flags (``model``, ``prompt``, ``num_samples``,
            ``max_new_tokens``, ``strategy``, ``temperature``, ``top_k``, ``top_p``, ``stop``, ``seed``).

    Returns:
        The exit status, 0; each sample (prompt + continuation) goes to stdout.

    Raises:
        TextgenError: the run cannot be loaded, the prompt is all ``<UNK>``, a stop is not one
            token, or ``--num-samples < 1``.
    """
    runtime.seed_all(args.seed)
    model, tokenizer, config, _ = load_run(args.model)
    prompt = clean_prompt(args.prompt, config_from_dict(DataConfig, config["data"]).cleaning)
    prompt_ids = encode_prompt(tokenizer, prompt)
    unknown = unknown_fraction(prompt_ids)
    if unknown > 0:
        print(
            f"warning: {unknown:.0%} of the prompt's tokens are not in the vocabulary and read as <UNK>",
            file=sys.stderr,
        )
    if args.num_samples < 1:
        raise TextgenError(f"--num-samples must be >= 1, got {args.num_samples}")
    sampling = SamplingConfig(
        strategy=args.strategy,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    outputs = generate_ids(
        model, [prompt_ids] * args.num_samples, args.max_new_tokens, sampling, _stop_ids(tokenizer, args.stop)
    )
    for i, new_ids in enumerate(outputs):
        if args.num_samples > 1:
            print(f"--- sample {i + 1}")
        continuation = tokenizer.decode(new_ids)
        joiner = " " if tokenizer.kind == "word" and prompt and not prompt[-1].isspace() else ""
        print(prompt + joiner + continuation)
    return 0
