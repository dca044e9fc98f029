"""``seeddelta`` command line: toy, tiny (train/export), build, imatrix, eval, scan, baselines, quantize, bench.

Every command's flags are the fields of its config dataclasses (``toy.ToyConfig``,
``train.TrainConfig`` and ``model.ModelConfig``, ``builder.BuildConfig``, ``scan.ScanConfig``,
and ``seeddelta.options`` for the rest), made by :mod:`lm_shared.config_cli`: the help is each
field's comment, the default is the field's, ``--config FILE.yaml`` loads settings (a run's saved
``config.yaml`` among them). The tables below only say where a flag departs from its field
(another name, choices, a compact spelling).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from lm_shared.config_cli import (
    Command,
    ConfigParser,
    Flag,
    add_dataclass_flags,
    config_fields,
    config_parser,
    dump_config,
    instantiate,
    program_parser,
    run_command,
    take_saved_settings,
)
from seeddelta.errors import SeedDeltaError
from seeddelta.options import (
    BASES,
    DEVICES,
    VAL_TYPES,
    BaselinesOptions,
    BenchOptions,
    BuildOptions,
    EvalOptions,
    ExportOptions,
    ImatrixOptions,
    QuantizeOptions,
    ScanOptions,
    TinyTrainOptions,
    ToyOptions,
)


def _print_json(obj: Any, path: str | None = None) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
    else:
        print(text)


def _ffn_kinds(value: str) -> tuple[str, ...]:
    """``gate,up`` -> ``("ffn_gate", "ffn_up")`` (the config's tensor kinds)."""
    return tuple(f"ffn_{k}" for k in value.split(","))


def _fractions(value: str) -> tuple[float, ...]:
    """``0.0625,0.125`` -> ``(0.0625, 0.125)``."""
    try:
        return tuple(float(x) for x in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated fractions like 0.125,0.25, got {value!r}"
        ) from None


def _write_command_config(parser: ConfigParser, cfg: Any, out_dir: str, exclude: tuple[str, ...]) -> None:
    """Save the settings a run used as ``out_dir/config.yaml`` (``--config`` loads it back)."""
    from lm_shared.runs import atomic_write_text

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out_dir) / "config.yaml", dump_config(parser, cfg, exclude=exclude))


def _config_parser(name: str) -> ConfigParser:
    """``seeddelta NAME``'s parser (with ``--config``), described by its line in ``seeddelta --help``."""
    return config_parser(f"seeddelta {name}", COMMANDS[name].help + ".")


def _options_parser(
    name: str, options: type, flags: Mapping[str, Flag] | None = None
) -> Callable[[], ConfigParser]:
    """The parser factory of a command whose flags are one options dataclass's fields."""

    def make() -> ConfigParser:
        parser = _config_parser(name)
        add_dataclass_flags(parser, options, flags=flags)
        return parser

    return make


TENSORS = Flag(
    name="--tensors", parse=_ffn_kinds, metavar="LIST", help="FFN tensors to encode, any of gate,up,down"
)


# --------------------------------------------------------------------------------------------- toy
def _toy_parser() -> ConfigParser:
    from seeddelta.toy import PATTERNS, ToyConfig

    parser = _config_parser("toy")
    add_dataclass_flags(
        parser,
        ToyConfig,
        flags={
            "pattern": Flag(choices=PATTERNS),
            "base": Flag(choices=BASES),
            "scheme": Flag(choices=("coo", "block")),
            "val_type": Flag(choices=VAL_TYPES),
        },
        title="toy case",
    )
    add_dataclass_flags(parser, ToyOptions)
    return parser


def cmd_toy(parser: ConfigParser, args: Any, given: set[str]) -> int:
    from seeddelta.toy import ToyConfig, run_toy

    cfg = instantiate(parser, args, ToyConfig)
    report = run_toy(cfg)
    if instantiate(parser, args, ToyOptions).json:
        _print_json(report)
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"SeedΔ toy: {cfg.pattern}, base={cfg.base}, K={cfg.K}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key in (
            "rel_l2_mean",
            "cos_mean",
            "rel_l2_mean_x",
            "cos_mean_x",
            "predicted_rel_l2_mean",
            "base_energy_fraction",
            "bits_per_weight",
            "ops_ratio",
        ):
            if key in report:
                table.add_row(key, f"{report[key]:.6g}")
        Console().print(table)
    return 0


# -------------------------------------------------------------------------------------------- tiny
# Not part of a run's saved settings: where it goes and what happens to a run already there.
RUN_KEYS = ("out", "resume", "force", "quiet")
MIX = ("COPY", "SUM", "BRACKETS")


def _tiny_train_parser() -> ConfigParser:
    from seeddelta.model import ModelConfig
    from seeddelta.train import TrainConfig

    parser = _config_parser("tiny train")
    add_dataclass_flags(parser, TinyTrainOptions, title="run folder")
    add_dataclass_flags(
        parser,
        TrainConfig,
        flags={
            "precision": Flag(choices=("auto", "32-true", "bf16-mixed")),
            "compile": Flag(choices=("auto", "on", "off"), const="on"),  # --compile alone: on
            "task_weights": Flag(nargs=3, metavar=MIX),
            "phase1_weights": Flag(nargs=3, metavar=MIX),
            "clip_norm": Flag(aliases=("--grad-clip",)),  # the house's other spelling (issue 17)
        },
        title="training",
    )
    # vocab_size is the tokenizer's (--vocab-size above sets it)
    add_dataclass_flags(parser, ModelConfig, exclude=("vocab_size",), title="model")
    return parser


def _model_shape(parser: ConfigParser, args: Any) -> dict[str, Any]:
    """The ModelConfig flags' values; ``train`` checks them (a bad shape is a one-line error)."""
    from seeddelta.model import ModelConfig

    return {f.name: args[f.dest] for f in config_fields(parser) if f.cls is ModelConfig}


def cmd_tiny_train(parser: ConfigParser, args: Any, given: set[str]) -> int:
    from seeddelta.model import ModelConfig
    from seeddelta.train import TrainConfig, train

    run = instantiate(parser, args, TinyTrainOptions)
    saved_path = Path(run.out) / "config.json"
    if run.resume and saved_path.is_file():  # every option not typed is the run's own
        from lm_shared.runtime import load_config

        try:
            saved = load_config(saved_path)
        except ValueError as exc:
            raise SeedDeltaError(str(exc)) from None
        sections = {TrainConfig: "train", ModelConfig: "model"}
        take_saved_settings(parser, args, given, {cls: saved.get(key) or {} for cls, key in sections.items()})
    cfg = instantiate(parser, args, TrainConfig)
    if run.quick and "steps" not in given:
        cfg = replace(cfg, steps=cfg.steps // 2)
    report = train(
        Path(run.out),
        cfg,
        model_shape=_model_shape(parser, args),
        progress=not run.quiet,
        resume=run.resume,
        force=run.force,
        command_config=dump_config(parser, args, exclude=RUN_KEYS),
    )
    em = report["exact_match"]
    print(
        f"exact_match copy={em.get('copy', 0):.3f} sum={em.get('sum', 0):.3f} brackets={em.get('brackets', 0):.3f} "
        f"answer_nll={report['answer_nll']:.4f} ppl={report['ppl']:.3f} "
        f"train_seconds={report['train_seconds']:.0f} threads={report['threads']} ({report['threads_reason']}) "
        f"compiled={report['compiled']} ({report['compile_reason']}) "
        f"-> {Path(run.out) / 'eval.json'}"
    )
    return 0


def _refuse_existing(path: str | Path, force: bool) -> None:
    if Path(path).exists() and not force:
        raise SeedDeltaError(f"{path} exists; pass --force to overwrite it")


def cmd_tiny_export(parser: ConfigParser, args: Any, given: set[str]) -> int:
    from lm_shared.runs import atomic_path
    from seeddelta.gguf_io import export_checkpoint

    opts = instantiate(parser, args, ExportOptions)
    _refuse_existing(opts.out, opts.force)
    with atomic_path(Path(opts.out)) as tmp:
        export_checkpoint(Path(opts.checkpoint), tmp, opts.dtype)
    print(f"wrote {opts.out}")
    return 0


# ------------------------------------------------------------------------------------------- build
def _build_parser() -> ConfigParser:
    from seeddelta.builder import BuildConfig

    parser = _config_parser("build")
    add_dataclass_flags(
        parser,
        BuildConfig,
        flags={
            "input": Flag(aliases=("-i",)),
            "output": Flag(aliases=("-o",)),
            "layers": Flag(help='layers "A-B" or "1,3,5-6" (default: all)'),
            "kinds": TENSORS,
            "scheme": Flag(choices=("coo", "block")),
            "idx_type": Flag(choices=("i16", "i32")),
            "val_type": Flag(choices=VAL_TYPES),
            "base_kind": Flag(choices=("xor", "cyclic")),
        },
        exclude=("activations",),  # captured by the command for --refit / --act-metrics
        title="builder",
    )
    add_dataclass_flags(parser, BuildOptions, title="calibration and output")
    return parser


def cmd_build(parser: ConfigParser, args: Any, given: set[str]) -> int:
    from seeddelta.builder import BuildConfig, build

    opts = instantiate(parser, args, BuildOptions)
    cfg = instantiate(parser, args, BuildConfig)
    if Path(cfg.output).resolve() != Path(cfg.input).resolve():  # that case has its own error
        _refuse_existing(cfg.output, opts.force)
    if cfg.refit or opts.act_metrics:
        from seeddelta.calibrate import capture_ffn_inputs
        from seeddelta.gguf_io import load_gguf_model
        from seeddelta.tasks import make_split

        model, tok, _ = load_gguf_model(cfg.input)
        samples = make_split(cfg.seed + 7, opts.calib_samples)
        cfg = replace(cfg, activations=capture_ffn_inputs(model, tok, samples))
    report = build(cfg, progress=not opts.quiet)
    print(
        f"wrote {cfg.output}: {report['n_emitted']}/{len(report['weights'])} tensors emitted"
        + (f", report {cfg.report_json}" if cfg.report_json else "")
    )
    return 0


def cmd_imatrix(parser: ConfigParser, args: Any, given: set[str]) -> int:
    from seeddelta.calibrate import capture_ffn_inputs, write_imatrix
    from seeddelta.gguf_io import load_gguf_model
    from seeddelta.tasks import make_split

    opts = instantiate(parser, args, ImatrixOptions)
    model, tok, _ = load_gguf_model(opts.model)
    acts = capture_ffn_inputs(model, tok, make_split(opts.seed, opts.samples), max_rows=1 << 30)
    print(f"wrote {write_imatrix(Path(opts.out), acts)}")
    return 0


# -------------------------------------------------------------------------------------------- eval


def cmd_eval(parser: ConfigParser, args: Any, given: set[str]) -> int:
    import torch

    from seeddelta.evaluate import evaluate_model
    from seeddelta.gguf_io import load_gguf_model
    from seeddelta.tasks import validation_set

    opts = instantiate(parser, args, EvalOptions)
    torch.set_num_threads(opts.threads)
    samples = validation_set(opts.seed, opts.samples)
    if opts.text:
        from seeddelta.text_eval import text_exact_match

        em, records = text_exact_match(opts.model, samples, n_threads=opts.threads)
        report: dict[str, Any] = {
            "exact_match": em,
            "exact_match_mean": float(sum(em.values()) / len(em)),
            "path": "text",
        }
        report.update({"model": opts.model, "n_samples": len(samples)})
        if opts.records:
            report["records"] = records
        _print_json(report, opts.json)
        print("text exact_match " + " ".join(f"{k}={v:.3f}" for k, v in em.items()), file=sys.stderr)
        return 0
    model, tok, info = load_gguf_model(opts.model)
    reference = load_gguf_model(opts.reference)[0] if opts.reference else None
    report = evaluate_model(model, tok, samples, reference, with_records=opts.records)
    report.update(
        {"model": opts.model, "reference": opts.reference, "seeddelta_tensors": len(info["seeddelta"])}
    )
    _print_json(report, opts.json)
    em = report["exact_match"]
    print(
        "exact_match "
        + " ".join(f"{k}={v:.3f}" for k, v in em.items())
        + f" answer_nll={report['answer_nll']:.4f} ppl={report['ppl']:.3f} greedy_pack={report['greedy_pack']}"
        + (f" kl={report['kl_to_reference']:.5f}" if reference is not None else ""),
        file=sys.stderr,
    )
    return 0


# -------------------------------------------------------------------------------------------- scan
def _scan_parser() -> ConfigParser:
    from seeddelta.scan import ScanConfig

    parser = _config_parser("scan")
    add_dataclass_flags(parser, ScanOptions)
    add_dataclass_flags(
        parser,
        ScanConfig,
        flags={
            "kinds": TENSORS,
            "base": Flag(choices=BASES),
            "val_type": Flag(choices=VAL_TYPES),
        },
        title="scan",
    )
    return parser


def cmd_scan(parser: ConfigParser, args: Any, given: set[str]) -> int:
    import torch

    from seeddelta.gguf_io import load_gguf_model
    from seeddelta.scan import ScanConfig, scan

    opts = instantiate(parser, args, ScanOptions)
    cfg = instantiate(parser, args, ScanConfig)
    torch.set_num_threads(opts.threads)
    model, tok, _ = load_gguf_model(opts.model)
    _write_command_config(parser, args, opts.out, exclude=("out", "quiet"))
    report = scan(model, tok, cfg, Path(opts.out), progress=not opts.quiet)
    cl = report["first_cliff"]
    print(
        f"base EM {report['base']['em_mean']:.3f}; first cliff: growing={cl['growing'] and cl['growing']['set']} "
        f"interleaved={cl['interleaved'] and cl['interleaved']['set']}; safe layers {report['safe_layers']}; "
        f"wrote {opts.out}/scan.json, fragile_layers.md, scan.png, policy.recommended.json"
    )
    return 0


def cmd_baselines(parser: ConfigParser, args: Any, given: set[str]) -> int:
    import torch

    from seeddelta.baselines import run_baselines
    from seeddelta.gguf_io import load_gguf_model

    opts = instantiate(parser, args, BaselinesOptions)
    torch.set_num_threads(opts.threads)
    model, tok, _ = load_gguf_model(opts.model)
    _write_command_config(parser, args, opts.out, exclude=("out", "quiet"))
    report = run_baselines(
        model,
        tok,
        Path(opts.out),
        densities=opts.densities,
        samples=opts.samples,
        calib_samples=opts.calib_samples,
        llamacpp_samples=opts.llamacpp_samples,
        seed=opts.seed,
        progress=not opts.quiet,
    )
    print((Path(opts.out) / "baselines.md").read_text())
    return 0 if report["rows"] else 1


def cmd_quantize(parser: ConfigParser, args: Any, given: set[str]) -> int:
    from seeddelta.baselines import llamacpp_quantize

    opts = instantiate(parser, args, QuantizeOptions)
    print(f"wrote {llamacpp_quantize(Path(opts.model), Path(opts.out), opts.type, opts.threads)}")
    return 0


def cmd_bench(parser: ConfigParser, args: Any, given: set[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    from lm_shared.profiling import split_table
    from seeddelta.bench import run_bench

    opts = instantiate(parser, args, BenchOptions)
    report = run_bench(**{k: v for k, v in asdict(opts).items() if k != "out"})  # the other fields
    _print_json(report, opts.out)
    table = Table(title=f"SeedΔ bench {opts.n_out}x{opts.n_in}, {opts.threads} threads (fp32)")
    table.add_column("key")
    table.add_column("value", justify="right")
    for key, value in report.items():
        if key.startswith(("build_weights", "forward_ratio_k")) and key.count("_t") == 0:
            table.add_row(key, f"{value:.4g}")
    Console().print(table)
    Console().print(
        split_table(
            "one default `tiny train` step, fp32 (ms, torch.profiler; MFU vs the fp32 matmul peak)",
            {"ms (share)": report["tiny_train_profile"]},
            mfu={"ms (share)": report["tiny_train_mfu_fp32"]},
        )
    )
    return 0


# --------------------------------------------------------------------------------------------- main
COMMANDS: dict[str, Command] = {
    "toy": Command(_toy_parser, cmd_toy, "harness A: SeedΔ on synthetic matrices with known error"),
    "tiny train": Command(
        _tiny_train_parser,
        cmd_tiny_train,
        "train the tiny LLaMA on copy/sum/brackets and write DIR/eval.json",
    ),
    "tiny export": Command(
        _options_parser(
            "tiny export",
            ExportOptions,
            {"dtype": Flag(choices=VAL_TYPES), "checkpoint": Flag(aliases=("--run",))},  # issue 17: --run DIR
        ),
        cmd_tiny_export,
        "write a llama-arch GGUF of a trained checkpoint",
    ),
    "build": Command(
        _build_parser, cmd_build, "encode a llama GGUF's FFN tensors with SeedΔ (the fork's builder)"
    ),
    "imatrix": Command(
        _options_parser("imatrix", ImatrixOptions),
        cmd_imatrix,
        "importance matrix (llama.cpp GGUF layout) from calibration activations",
    ),
    "eval": Command(
        _options_parser("eval", EvalOptions),
        cmd_eval,
        "the fixed evaluation protocol on a base, SeedΔ or quantized GGUF",
    ),
    "scan": Command(
        _scan_parser, cmd_scan, "per-layer and layer-set sensitivity, first cliff, fragile-layer table"
    ),
    "baselines": Command(
        _options_parser("baselines", BaselinesOptions, {"densities": Flag(parse=_fractions, metavar="LIST")}),
        cmd_baselines,
        "quality vs bytes: SeedΔ, refit SeedΔ, magnitude pruning, Q8_0, Q4_0",
    ),
    "quantize": Command(
        _options_parser("quantize", QuantizeOptions, {"type": Flag(choices=("q8_0", "q4_0"))}),
        cmd_quantize,
        "llama.cpp Q8_0/Q4_0 quantization of a GGUF (for `eval`)",
    ),
    "bench": Command(
        _options_parser("bench", BenchOptions, {"device": Flag(choices=DEVICES)}),
        cmd_bench,
        "builder throughput and SeedDeltaLinear forward time vs dense",
    ),
}


GROUPS = {"tiny": "harness B: the tiny trained model (train, export)"}


def build_parser() -> argparse.ArgumentParser:
    """``seeddelta``'s own parser: the list of commands (each command parses its own flags)."""
    return program_parser("seeddelta", __doc__.splitlines()[0], COMMANDS, GROUPS)


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user error is one ``error: ...`` line (exit 2), Ctrl-C one line (exit 130)."""
    return run_command("seeddelta", __doc__.splitlines()[0], COMMANDS, argv, groups=GROUPS)


def train_main(argv: list[str] | None = None) -> int:
    """``train`` = ``seeddelta tiny train`` with a default ``--out``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--out" not in argv and not any(a.startswith("--out=") for a in argv):
        argv += ["--out", "runs/seeddelta-tiny"]
    return main(["tiny", "train", *argv])


if __name__ == "__main__":
    raise SystemExit(main())
