"""``lstm-textgen`` command line: train | eda | sample | evaluate | bench.

Every command's flags are the fields of its config dataclasses (``lstm_textgen.configs``,
``data.DataConfig``, ``text.CleaningOptions``), made by :mod:`lm_shared.config_cli`: the help is
each field's comment, the default is the field's, ``--config FILE.yaml`` loads settings (a run's
saved ``config.yaml`` among them). The tables below only say where a flag keeps the name earlier
releases documented (the field's own spelling works too).

TensorFlow is imported only inside the subcommands, so ``--help`` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from lm_shared.config_cli import (
    Command,
    ConfigParser,
    Flag,
    add_dataclass_flags,
    config_parser,
    dump_config,
    instantiate,
    program_parser,
    run_command,
    take_saved_settings,
)
from lm_shared.errors import UserError
from lstm_textgen.configs import (
    ARCHITECTURES,
    JIT_COMPILE_MODES,
    STRATEGIES,
    BenchOptions,
    EdaOptions,
    EvaluateOptions,
    ModelConfig,
    RunOptions,
    SampleOptions,
    SamplingConfig,
    TrainConfig,
)
from lstm_textgen.data import DataConfig
from lstm_textgen.runtime import PRECISIONS
from lstm_textgen.text import CleaningOptions
from lstm_textgen.tokenization import TOKENIZER_KINDS


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


NO_PUNCTUATION = Flag(name="--no-punctuation", help="replace punctuation by spaces")
DATA_FLAGS = {
    "data": Flag(help="UTF-8 text file or folder (default: embedded sonnets)"),
    "tokenizer": Flag(choices=TOKENIZER_KINDS),
    "split": Flag(parse=_split, help="contiguous fractions, e.g. 0.8,0.1,0.1 or 90/10"),
    "keep_punctuation": NO_PUNCTUATION,
}
MODEL_FLAGS = {
    "architecture": Flag(name="--model", choices=ARCHITECTURES),
    "lstm_units": Flag(aliases=("--hidden-size",)),  # the other members' name for the width
}
TRAIN_FLAGS = {
    "learning_rate": Flag(name="--lr"),
    "grad_accum_steps": Flag(name="--grad-accum", aliases=("--accumulate-grad-batches",)),
    "early_stopping_patience": Flag(name="--patience"),
    "precision": Flag(choices=PRECISIONS),
    "jit_compile": Flag(choices=JIT_COMPILE_MODES),
}
# A trained run is --run DIR in every member (issue 17); --model DIR, this command's earlier name, stays.
RUN_INPUT_FLAGS = {"model": Flag(aliases=("--run",))}
# ModelConfig fields the run decides: the tokenizer's size, and the window length as context.
MODEL_DERIVED = ("vocab_size", "max_len")
# Not part of a run's saved settings: where it goes and what happens to a run already there.
RUN_KEYS = ("out", "overwrite", "resume")


def _train_parser(prog: str = "lstm-textgen train") -> ConfigParser:
    parser = config_parser(
        prog,
        "Train an LSTM or Transformer language model. With no options: a 2-layer LSTM "
        "on the embedded sonnets, character level, on the CPU in a few minutes.",
    )
    add_dataclass_flags(parser, DataConfig, flags=DATA_FLAGS, title="data")
    add_dataclass_flags(parser, ModelConfig, flags=MODEL_FLAGS, exclude=MODEL_DERIVED, title="model")
    add_dataclass_flags(parser, TrainConfig, flags=TRAIN_FLAGS, title="training")
    add_dataclass_flags(parser, RunOptions, title="run folder")
    return parser


def _sample_parser(prog: str = "lstm-textgen sample") -> ConfigParser:
    parser = config_parser(prog, "Generate text from a trained model.")
    add_dataclass_flags(parser, SampleOptions, flags=RUN_INPUT_FLAGS)
    add_dataclass_flags(
        parser, SamplingConfig, flags={"strategy": Flag(choices=STRATEGIES)}, title="sampling"
    )
    return parser


def _evaluate_parser(prog: str = "lstm-textgen evaluate") -> ConfigParser:
    parser = config_parser(prog, "Test perplexity, bits per byte, BLEU, diversity and samples of a run.")
    add_dataclass_flags(parser, EvaluateOptions, flags=RUN_INPUT_FLAGS)
    return parser


def _eda_parser(prog: str = "lstm-textgen eda") -> ConfigParser:
    parser = config_parser(prog, "Corpus statistics as Markdown and PNG plots.")
    add_dataclass_flags(parser, EdaOptions)
    add_dataclass_flags(parser, CleaningOptions, flags={"keep_punctuation": NO_PUNCTUATION}, title="cleaning")
    return parser


def _bench_parser(prog: str = "lstm-textgen bench") -> ConfigParser:
    parser = config_parser(prog, "Input pipeline, training and sampling throughput.")
    add_dataclass_flags(
        parser,
        BenchOptions,
        flags={
            "tokenizer": Flag(choices=TOKENIZER_KINDS),
            "jit_compile": Flag(choices=JIT_COMPILE_MODES),
            "bf16": Flag(help="skip the CPU mixed_bfloat16 comparison"),
        },
    )
    return parser


# name -> (parser, help line in `lstm-textgen --help`)


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``train`` (``uv run --package lstm-textgen train``) and ``lstm-textgen train``."""
    return main(["train", *(sys.argv[1:] if argv is None else argv)])


def _run_train(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from lm_shared.runs import read_run_state

    run = instantiate(parser, cfg, RunOptions)
    if run.resume and run.out is not None and run.out.is_dir():
        state = read_run_state(run.out)
        if state is not None:  # continue with the run's own data and settings
            saved = state.get("config") or {}
            sections = {DataConfig: "data", ModelConfig: "model", TrainConfig: "train"}
            take_saved_settings(
                parser, cfg, given, {cls: saved.get(name) or {} for cls, name in sections.items()}
            )
    data_config = instantiate(parser, cfg, DataConfig)
    model_config = instantiate(parser, cfg, ModelConfig, max_len=data_config.seq_len)
    train_config = instantiate(parser, cfg, TrainConfig)  # checked before TensorFlow starts
    from lstm_textgen.train import train_command

    return train_command(
        data_config,
        model_config,
        train_config,
        run,
        command_config=dump_config(parser, cfg, exclude=RUN_KEYS),
    )


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


def _sample(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from lstm_textgen.evaluate import sample_command

    return sample_command(cfg)


def _evaluate(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from lstm_textgen.evaluate import evaluate_command

    return evaluate_command(cfg)


def _eda(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from lstm_textgen.eda import eda_command

    return eda_command(cfg)


def _bench(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from lstm_textgen.bench import bench_command

    return bench_command(cfg)


COMMANDS: dict[str, Command] = {
    "train": Command(_train_parser, _run_train, "train a model (see `lstm-textgen train --help`)"),
    "eda": Command(_eda_parser, _eda, "corpus statistics as Markdown and PNG plots"),
    "sample": Command(_sample_parser, _sample, "generate text from a trained model"),
    "evaluate": Command(
        _evaluate_parser, _evaluate, "test perplexity, bits per byte, BLEU, diversity, samples"
    ),
    "bench": Command(_bench_parser, _bench, "input pipeline, training and sampling throughput"),
}


def build_parser() -> argparse.ArgumentParser:
    """``lstm-textgen``'s own parser: the list of commands (each command parses its own flags)."""
    return program_parser("lstm-textgen", __doc__.splitlines()[0], COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; a user error is one ``error: ...`` line (exit 2), Ctrl-C one line (exit 130)."""
    return run_command("lstm-textgen", __doc__.splitlines()[0], COMMANDS, argv, guard=_guard)


if __name__ == "__main__":
    sys.exit(main())
