"""``infinito`` command line: train, evaluate, phi, generate, compare, bench.

Every command's flags are the fields of its config dataclasses (``model.InfinitoConfig``,
``train.TrainConfig``, ``generate.DecodingConfig`` and the option dataclasses of
:mod:`infinito_iit.configs`), made by :mod:`lm_shared.config_cli`: the help is each field's
comment, the default is the field's, ``--config FILE.yaml`` loads settings (a run's saved
``config.yaml`` among them). The tables below only say where a flag keeps the name earlier
releases documented (the field's own spelling works too).

Model settings start from ``--preset`` (or, with ``--resume``, from the run); the model flags
typed (or loaded with ``--config``) replace its values. ``infinito train`` and
``uv run --package infinito-iit train`` run the same trainer (:func:`train_main`). User errors
print ``error: ...`` and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lm_shared.config_cli import (
    Command,
    ConfigParser,
    Flag,
    add_dataclass_flags,
    config_parser,
    dump_config,
    field_comments,
    flag_name,
    instantiate,
    program_parser,
    run_command,
    take_saved_settings,
)

from .configs import (
    BenchOptions,
    CompareOptions,
    GenerateOptions,
    ModelChoice,
    PhiOptions,
    RunInput,
    RunOptions,
    Threads,
)
from .errors import InfinitoError


def _names(value: str) -> tuple[str, ...]:
    return tuple(c for c in value.split(",") if c)


def _numbers(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers like 0.3,0.3,0.2,0.2, got {value!r}"
        ) from None


def _model_flags() -> dict[str, Flag]:
    """Where a model flag departs from its field: earlier names, comma lists, the preset's sizes."""
    from .model import FORMER_FIELD_NAMES, PHI_COMPONENTS, PRESETS, InfinitoConfig

    comments = field_comments(InfinitoConfig)
    flags = {
        name: Flag(help=f"{comments[name]} (default: the --preset's)")
        for name in sorted({key for sizes in PRESETS.values() for key in sizes})
    }
    for former, name in FORMER_FIELD_NAMES.items():  # the flags' spellings before issue 17
        flags[name] = dataclasses.replace(flags.get(name, Flag()), aliases=(flag_name(former),))
    flags.update(
        tie_embeddings=Flag(aliases=("--untied",), help="separate output head (seed style)"),
        iit_metrics=Flag(aliases=("--no-metrics",), help="no IIT metrics (implies no phi loss, no memory)"),
        learnable_phi_weights=Flag(aliases=("--fixed-phi-weights",), help="phi weights stay at their init"),
        memory=Flag(help="turn the IIT-guided memory off"),
        phi_components=Flag(
            parse=_names,
            metavar="NAMES",
            help=f"{comments['phi_components']}: a comma list from {','.join(PHI_COMPONENTS)} (default: all)",
        ),
        phi_weight_init=Flag(
            parse=_numbers,
            metavar="W,W,W,W",
            help=f"{comments['phi_weight_init']}, one per component (default: %(default)s)",
        ),
    )
    return flags


TRAIN_FLAGS = {
    "tokenizer": Flag(choices=("bpe", "gpt2")),
    "precision": Flag(choices=("auto", "32-true", "bf16-mixed", "16-mixed")),
    "strategy": Flag(choices=("auto", "ddp", "fsdp")),
    "grad_accum": Flag(aliases=("--accumulate-grad-batches",)),  # the other members' name
    "clip_norm": Flag(aliases=("--grad-clip",)),  # the house's other spelling
    "compile": Flag(choices=("auto", "on", "off"), const="on"),  # --compile alone: on, as before
}
RUN_INPUT_FLAGS = {"run": Flag(positional=True, aliases=("--run",), metavar="RUN")}
DECODING_FLAGS = {
    "no_repeat_ngram_size": Flag(aliases=("--no-repeat-ngram",)),
    "do_sample": Flag(aliases=("--greedy",), help="argmax decoding instead of sampling"),
    "penalty_alpha": Flag(help="> 0: contrastive search (with --top-k, e.g. 0.6 and 4)"),
}
# Not part of a run's saved settings: where it goes and what happens to a run already there.
RUN_KEYS = ("out", "run_name", "resume", "force")


def _add_model(parser: ConfigParser, title: str) -> None:
    from .model import PRESETS, InfinitoConfig

    add_dataclass_flags(parser, ModelChoice, flags={"preset": Flag(choices=tuple(PRESETS))}, title="model")
    # vocab_size is the tokenizer's (or, with --resume, the run's)
    add_dataclass_flags(
        parser, InfinitoConfig, "model", flags=_model_flags(), exclude=("vocab_size",), title=title
    )


def _add_train(parser: ConfigParser, title: str) -> None:
    from .train import TrainConfig

    add_dataclass_flags(parser, TrainConfig, "train", flags=TRAIN_FLAGS, title=title)


def _train_parser(prog: str = "infinito train") -> ConfigParser:
    parser = config_parser(
        prog,
        "Train a model (IIT features on; --baseline for the plain transformer). With no options: "
        "the cpu preset on the embedded corpus, on the CPU in a few minutes.",
    )
    _add_model(parser, "model settings (from --preset; with --resume, the run's own values by default)")
    _add_train(parser, "data and training (with --resume, the run's own values by default)")
    add_dataclass_flags(parser, RunOptions, flags={"resume": Flag(metavar="RUN_DIR")}, title="run folder")
    add_dataclass_flags(parser, Threads)
    return parser


def _evaluate_parser(prog: str = "infinito evaluate") -> ConfigParser:
    parser = config_parser(prog, "Validation loss, perplexity, bits per byte, word perplexity of a run.")
    add_dataclass_flags(parser, RunInput, flags=RUN_INPUT_FLAGS)
    add_dataclass_flags(parser, Threads)
    return parser


def _phi_parser(prog: str = "infinito phi") -> ConfigParser:
    parser = config_parser(prog, "Gaussian Φ_AR proxy of a run, with bootstrap CIs and nulls.")
    add_dataclass_flags(parser, RunInput, flags=RUN_INPUT_FLAGS)
    add_dataclass_flags(parser, PhiOptions, title="phi proxy")
    add_dataclass_flags(parser, Threads)
    return parser


def _generate_parser(prog: str = "infinito generate") -> ConfigParser:
    from .generate import DecodingConfig

    parser = config_parser(prog, "Sample text from a run and report mode collapse next to human text.")
    add_dataclass_flags(parser, RunInput, flags=RUN_INPUT_FLAGS)
    add_dataclass_flags(parser, GenerateOptions)
    add_dataclass_flags(parser, DecodingConfig, flags=DECODING_FLAGS, title="decoding")
    add_dataclass_flags(parser, Threads)
    return parser


def _compare_parser(prog: str = "infinito compare") -> ConfigParser:
    parser = config_parser(prog, "IIT model vs baseline at equal parameters, steps and seeds.")
    _add_model(parser, "model settings (from --preset)")
    _add_train(parser, "data and training")
    add_dataclass_flags(parser, CompareOptions, title="comparison")
    add_dataclass_flags(parser, Threads)
    return parser


def _bench_parser(prog: str = "infinito bench") -> ConfigParser:
    parser = config_parser(prog, "Training tokens/s with and without IIT features; Φ-proxy cost.")
    _add_model(parser, "model settings (from --preset)")
    add_dataclass_flags(parser, BenchOptions, title="benchmark")
    add_dataclass_flags(parser, Threads)
    return parser


def build_model_config(parser: ConfigParser, cfg: Any, given: set[str], saved: dict[str, Any] | None = None):
    """The preset's (or a saved run's) model config with the model settings given replaced.

    ``cfg``'s model values become the config's, so the saved ``config.yaml`` says what ran.
    """
    from .model import InfinitoConfig, preset

    choice = instantiate(parser, cfg, ModelChoice)
    try:
        base = saved if saved is not None else preset(choice.preset).to_dict()
        take_saved_settings(parser, cfg, given, {InfinitoConfig: base})
        if "model.iit_metrics" in given and not cfg["model.iit_metrics"]:
            cfg["model.memory"], cfg["model.lambda_phi"] = False, 0.0  # both need the metrics
        config = instantiate(parser, cfg, InfinitoConfig, vocab_size=base["vocab_size"])
        config = config.baseline() if choice.baseline else config
    except (ValueError, TypeError) as exc:
        raise InfinitoError(str(exc)) from None
    for name, value in config.to_dict().items():
        if f"model.{name}" in cfg:
            cfg[f"model.{name}"] = value
    return config


def _train_config(parser: ConfigParser, cfg: Any, given: set[str], saved: dict[str, Any] | None = None):
    """TrainConfig from the flags; with ``saved`` (a resumed run's), its values for those not given."""
    from .train import TrainConfig

    if saved is not None:
        take_saved_settings(parser, cfg, given, {TrainConfig: saved})
    return instantiate(parser, cfg, TrainConfig)


def _set_threads(parser: ConfigParser, cfg: Any) -> None:
    import torch

    torch.set_num_threads(max(1, instantiate(parser, cfg, Threads).threads))


def _print_metrics(title: str, metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.4f}")
        elif isinstance(value, int | str) and value != "":
            table.add_row(key, str(value))
        elif isinstance(value, dict):
            table.add_row(key, ", ".join(f"{k}={v:.3f}" for k, v in value.items()))
    Console().print(table)


# --------------------------------------------------------------------------------------------
# Subcommands
# --------------------------------------------------------------------------------------------


def _cmd_train(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from lm_shared.runs import read_json_file

    from .train import train

    _set_threads(parser, cfg)
    run = instantiate(parser, cfg, RunOptions)
    saved = None
    if run.resume is not None:
        run_dir = run.resume
        if not (run_dir / "config.json").is_file():
            raise InfinitoError(f"{run_dir}: not a run directory (no config.json)")
        saved = read_json_file(run_dir / "config.json", "run config")
    else:
        name = run.run_name or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        run_dir = run.out / name
    model_config = build_model_config(parser, cfg, given, saved["model"] if saved else None)
    train_config = _train_config(parser, cfg, given, saved["train"] if saved else None)
    result = train(
        model_config,
        train_config,
        run_dir,
        resume=run.resume is not None,
        force=run.force,
        command_config=dump_config(parser, cfg, exclude=RUN_KEYS),
    )
    if result.final:
        _print_metrics(f"validation ({result.data.corpus.name}, {result.run_dir})", result.final)
    return 0


def _load(parser: ConfigParser, cfg: Any):
    """The run ``evaluate``, ``phi`` and ``generate`` read, its validation data and its settings."""
    from .data import load_corpus, prepare_data
    from .generate import load_run

    _set_threads(parser, cfg)
    run_dir, given = _run_input(parser, cfg)
    run = load_run(run_dir, given.checkpoint)
    train_cfg = run.config["train"]
    corpus = load_corpus(
        given.data or train_cfg.get("data"), valid_fraction=train_cfg.get("valid_fraction", 0.1)
    )
    return run, corpus, prepare_data(corpus, train_cfg["seq_len"], tokenizer=run.tokenizer)


def _cmd_evaluate(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from .data import leakage_warning
    from .train import evaluate

    run, corpus, data = _load(parser, cfg)
    metrics = evaluate(
        run.model,
        data.valid.inputs,
        data.valid.labels,
        run.tokenizer.byte_lengths(),
        data.valid.n_words,
        data.valid.n_bytes,
    )
    warning = leakage_warning(corpus, metrics)
    if warning:
        print(warning, file=sys.stderr)
    _print_metrics(f"validation ({corpus.name})", metrics)
    return 0


def _cmd_phi(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    import torch

    from .model import InfinitoLM
    from .phi_proxy import model_phi_proxy

    run, _, data = _load(parser, cfg)
    options = instantiate(parser, cfg, PhiOptions)
    ids = data.valid.inputs[: options.sequences]
    torch.manual_seed(options.seed + 1)
    null = InfinitoLM(run.model.config).eval()
    report = model_phi_proxy(
        run.model,
        ids,
        k=options.k,
        layer=options.layer,
        n_bootstrap=options.bootstrap,
        null_model=null,
        seed=options.seed,
    )
    out = report.as_dict()
    print(json.dumps(out, indent=2))
    if options.out:
        options.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


def _run_input(parser: ConfigParser, cfg: Any) -> tuple[Path, RunInput]:
    """The trained run named positionally or with ``--run`` (issue 17's house name), and the
    other :class:`RunInput` fields."""
    source = instantiate(parser, cfg, RunInput)
    if source.run is None:
        raise InfinitoError(f"name the trained run: {parser.prog} RUN (or --run RUN)")
    return source.run, source


def _cmd_generate(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from .generate import DecodingConfig, generate_report, load_run

    _set_threads(parser, cfg)
    run_dir, source = _run_input(parser, cfg)
    options = instantiate(parser, cfg, GenerateOptions)
    decoding = instantiate(parser, cfg, DecodingConfig)
    run = load_run(run_dir, source.checkpoint)
    report = generate_report(
        run, options.prompt, decoding, num_samples=options.num_samples, human_data=source.data
    )
    for i, text in enumerate(report["samples"]):
        print(f"--- sample {i} ---\n{text}\n")
    _print_metrics("mode-collapse report: generated", report["generated"])
    if report.get("human"):
        _print_metrics("same metrics on human text (validation continuations)", report["human"])
    if options.out:
        options.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return 0


def _cmd_compare(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from .compare import run_compare

    _set_threads(parser, cfg)
    model_config = build_model_config(parser, cfg, given)
    if not model_config.uses_iit:
        raise InfinitoError(
            "compare needs the IIT model config (drop --baseline/--no-metrics); it trains the baseline itself"
        )
    train_config = _train_config(parser, cfg, given)
    options = instantiate(parser, cfg, CompareOptions)
    result = run_compare(
        model_config,
        train_config,
        options.out,
        seeds=options.seeds,
        dropout_study=options.dropout_study,
        match_parameters=options.param_match,
        proxy_bootstrap=options.proxy_bootstrap,
        command_config=dump_config(parser, cfg, exclude=("out",)),
    )
    summary = {
        k: {m: result[k][m] for m in ("bpb_mean", "bpb_std", "parameters")} for k in ("iit", "baseline")
    }
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_bench(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from .bench import run_bench

    _set_threads(parser, cfg)
    model_config = build_model_config(parser, cfg, given)
    options = instantiate(parser, cfg, BenchOptions)
    run_bench(
        model_config,
        options.out,
        seq_len=options.seq_len,
        batch_size=options.batch_size,
        steps=options.steps,
        device=options.device,
        compile=options.compile,
    )
    return 0


# name -> (parser, what it runs, help line in `infinito --help`)
COMMANDS: dict[str, Command] = {
    "train": Command(
        _train_parser,
        _cmd_train,
        "train a model (IIT features on; --baseline for the plain transformer)",
    ),
    "evaluate": Command(
        _evaluate_parser,
        _cmd_evaluate,
        "validation loss, perplexity, bits per byte, word perplexity",
    ),
    "phi": Command(_phi_parser, _cmd_phi, "Gaussian Φ_AR proxy with bootstrap CIs and nulls"),
    "generate": Command(
        _generate_parser, _cmd_generate, "sample text and report mode collapse next to human text"
    ),
    "compare": Command(
        _compare_parser, _cmd_compare, "IIT model vs baseline at equal parameters, steps and seeds"
    ),
    "bench": Command(
        _bench_parser, _cmd_bench, "training tokens/s with and without IIT features; Φ-proxy cost"
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """``infinito``'s own parser: the list of commands (each command parses its own flags)."""
    return program_parser("infinito", __doc__.splitlines()[0], COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; a user error is one ``error: ...`` line (exit 2), Ctrl-C one line (exit 130)."""
    return run_command("infinito", __doc__.splitlines()[0], COMMANDS, argv)


def train_main(argv: Sequence[str] | None = None) -> int:
    """The workspace ``train`` entry point: same as ``infinito train``."""
    return main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
