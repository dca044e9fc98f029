"""``lstm-textgen`` command line: train | eda | sample | evaluate | bench.

TensorFlow is imported only inside the subcommands, so ``--help`` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lm_shared.cli_help import DefaultsHelpFormatter
from lm_shared.errors import UserError
from lstm_textgen.errors import TextgenError
from lstm_textgen.runtime import DEFAULT_RUNS_ROOT


def _split(value: str) -> tuple[float, ...]:
    try:
        parts = tuple(float(v) for v in value.replace("/", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated fractions like 0.8,0.1,0.1, got {value!r}"
        ) from None
    if any(p > 1 for p in parts):  # 80,10,10 and 90/10 read as percentages
        parts = tuple(p / 100 for p in parts)
    return parts


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data", type=str, default=None, help="UTF-8 text file or folder (default: embedded sonnets)"
    )
    group.add_argument(
        "--tokenizer", choices=("word", "bpe", "char"), default="char", help="tokenization level"
    )
    group.add_argument(
        "--vocab-size",
        type=int,
        default=10_004,
        help="vocabulary cap including the 4 specials (default 10004)",
    )
    group.add_argument("--seq-len", type=int, default=100, help="tokens per window (default 100)")
    group.add_argument("--stride", type=int, default=None, help="training window stride (default seq-len/2)")
    group.add_argument(
        "--split",
        type=_split,
        default=(0.8, 0.1, 0.1),
        help="contiguous fractions, e.g. 0.8,0.1,0.1 or 90/10",
    )
    group.add_argument("--batch-size", type=int, default=32, help="windows per batch")
    group.add_argument("--lowercase", action="store_true", help="lowercase the text")
    group.add_argument("--no-punctuation", action="store_true", help="replace punctuation by spaces")


def _train_parser(prog: str = "lstm-textgen train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        formatter_class=DefaultsHelpFormatter,
        description="Train an LSTM or Transformer language model. With no options: a 2-layer LSTM "
        "on the embedded sonnets, character level, on the CPU in a few minutes.",
    )
    _add_data_options(parser)
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=("lstm", "transformer"), default="lstm", help="architecture")
    model.add_argument("--embedding-dim", type=int, default=128, help="token embedding width")
    model.add_argument("--lstm-units", type=int, default=256, help="units per LSTM layer")
    model.add_argument("--lstm-layers", type=int, default=2, help="stacked LSTM layers")
    model.add_argument("--dropout", type=float, default=0.3, help="dropout after each LSTM layer")
    model.add_argument(
        "--transformer-layers", type=int, default=1, help="decoder blocks (--model transformer)"
    )
    opt = parser.add_argument_group("training")
    opt.add_argument("--epochs", type=int, default=10, help="maximum epochs (early stopping may end sooner)")
    opt.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    opt.add_argument(
        "--label-smoothing", type=float, default=0.1, help="label smoothing of the loss, in [0, 1)"
    )
    opt.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    opt.add_argument("--steps-per-epoch", type=int, default=None, help="cap batches per epoch")
    opt.add_argument("--patience", type=int, default=3, help="EarlyStopping patience (epochs)")
    opt.add_argument(
        "--seed", type=int, default=0, help="one seed for data order, initialisation and dropout"
    )
    opt.add_argument(
        "--precision",
        choices=("auto", "float32", "mixed_float16", "mixed_bfloat16"),
        default="auto",
        help="auto: mixed_float16 on GPUs with fast fp16, float32 elsewhere",
    )
    opt.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto", help="XLA")
    opt.add_argument(
        "--out", type=Path, default=None, help=f"run folder (default {DEFAULT_RUNS_ROOT}/<UTC time>)"
    )
    opt.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished run in --out (the old one is kept until the new one finishes)",
    )
    opt.add_argument(
        "--resume", action="store_true", help="continue the interrupted run in --out from its backup/"
    )
    return parser


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``train`` (``uv run --package lstm-textgen train``) and ``lstm-textgen train``."""
    parser = _train_parser()
    args = parser.parse_args(argv)
    args.given = _given_options(parser, argv)
    return _guard(lambda: _run_train(args))


def _given_options(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
    """The ``dest`` of every option the user typed (a parse with every default suppressed)."""
    import copy

    quiet = copy.deepcopy(parser)
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    return set(vars(quiet.parse_args(argv)))


def _run_train(args: argparse.Namespace) -> int:
    from lstm_textgen.train import train_command

    return train_command(args)


def _sample_parser(sub) -> None:
    p = sub.add_parser("sample", help="generate text from a trained model")
    p.add_argument("--model", type=Path, required=True, help="run folder written by `train`")
    p.add_argument("--prompt", default="", help="text to continue (empty: start of a text)")
    p.add_argument("--strategy", choices=("greedy", "temperature", "top_k", "top_p"), default="top_k")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--max-new-tokens", type=int, default=200, help="length limit in tokens")
    p.add_argument(
        "--stop",
        action="append",
        default=None,
        help="stop when this token is generated (repeatable; default <END>; each must be one token)",
    )
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)


def _evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="test perplexity, bits per byte, BLEU, diversity, samples")
    p.add_argument("--model", type=Path, required=True, help="run folder written by `train`")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument(
        "--data", default=None, help="evaluate on this corpus's test split instead of the training one"
    )
    p.add_argument("--prompts", type=int, default=16, help="test-text prompts for BLEU and samples")
    p.add_argument("--prompt-tokens", type=int, default=None, help="prompt length (default seq_len/2)")
    p.add_argument("--new-tokens", type=int, default=None, help="continuation length (default by tokenizer)")
    p.add_argument("--seed", type=int, default=0)


def _eda_parser(sub) -> None:
    p = sub.add_parser("eda", help="corpus statistics as Markdown and PNG plots")
    p.add_argument("--data", default=None, help="UTF-8 text file or folder (default: embedded sonnets)")
    p.add_argument("--out", type=Path, default=Path("eda"), help="output folder (default ./eda)")
    p.add_argument("--lowercase", action="store_true")
    p.add_argument("--no-punctuation", action="store_true")
    p.add_argument("--top", type=int, default=20, help="n-grams listed per order")


def _bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="input pipeline, training and sampling throughput")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--data", default=None, help="corpus (default: embedded sonnets)")
    p.add_argument("--tokenizer", choices=("word", "bpe", "char"), default="char")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per model")
    p.add_argument("--new-tokens", type=int, default=200, help="tokens generated per sampling timing")
    p.add_argument("--no-bf16", action="store_true", help="skip the CPU mixed_bfloat16 comparison")
    p.add_argument("--seq-len", type=int, default=100, help="tokens per window (default 100)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto", help="XLA")
    p.add_argument("--rounds", type=int, default=2, help="timed runs per measure; the fastest is kept")
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lstm-textgen", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train a model (see `lstm-textgen train --help`)", add_help=False)
    _eda_parser(sub)
    _sample_parser(sub)
    _evaluate_parser(sub)
    _bench_parser(sub)
    return parser


def _guard(action: Callable[[], int]) -> int:
    try:
        return action()
    except UserError as exc:
        print(f"error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; add --resume to the same command to continue from the run's backup/",
            file=sys.stderr,
        )
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        return train_main(argv[1:])
    args = build_parser().parse_args(argv)
    return _guard(lambda: _dispatch(args))


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "sample":
        from lstm_textgen.evaluate import sample_command

        return sample_command(args)
    if args.command == "evaluate":
        from lstm_textgen.evaluate import evaluate_command

        return evaluate_command(args)
    if args.command == "eda":
        from lstm_textgen.eda import eda_command

        return eda_command(args)
    if args.command == "bench":
        from lstm_textgen.bench import bench_command

        return bench_command(args)
    raise TextgenError(f"unknown command {args.command!r}")  # argparse prevents this


if __name__ == "__main__":
    sys.exit(main())
