"""``seeddelta`` command line: toy, tiny (train/export), build, imatrix, eval, scan, baselines, quantize, bench."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lm_shared.cli_help import DefaultsHelpFormatter, add_bench_device_arguments
from seeddelta.errors import SeedDeltaError


def _print_json(obj: Any, path: str | None = None) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
    else:
        print(text)


# --------------------------------------------------------------------------------------------- toy
def cmd_toy(args: argparse.Namespace) -> int:
    from seeddelta.toy import ToyConfig, run_toy

    cfg = ToyConfig(
        pattern=args.pattern,
        base=args.base,
        K=args.K,
        n_in=args.n_in,
        n_out=args.n_out,
        rank=args.rank,
        block=args.block,
        seed=args.seed,
        perm_trials=args.perm_trials,
        eval_x=args.eval_x,
        val_type=args.val_type,
        scheme=args.scheme,
        row_scale=args.row_scale,
    )
    report = run_toy(cfg)
    if args.json:
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


def _add_toy(sub: argparse._SubParsersAction) -> None:
    from seeddelta.toy import PATTERNS

    p = sub.add_parser("toy", help="harness A: SeedΔ on synthetic matrices with known error")
    p.add_argument("--pattern", choices=PATTERNS, default="identity")
    p.add_argument("--base", choices=("none", "xor", "cyclic"), default="none")
    p.add_argument("--K", type=int, default=1, help="kept residuals per output row")
    p.add_argument("--n-in", type=int, default=64)
    p.add_argument("--n-out", type=int, default=64)
    p.add_argument("--rank", type=int, default=4, help="rank of the lowrank pattern")
    p.add_argument("--block", type=int, default=8, help="block size (block pattern and block scheme)")
    p.add_argument("--scheme", choices=("coo", "block"), default="coo")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--perm-trials", type=int, default=4)
    p.add_argument("--eval-x", type=int, default=32)
    p.add_argument("--val-type", choices=("f16", "f32"), default="f16")
    p.add_argument("--row-scale", action="store_true")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of a table")
    p.set_defaults(func=cmd_toy)


# -------------------------------------------------------------------------------------------- tiny
# `tiny train` options that set the run's configuration: dest -> (section of config.json, field).
_TINY_CONFIG_OPTIONS = {
    "seed": ("train", "seed"),
    "steps": ("train", "steps"),
    "docs_per_step": ("train", "docs_per_step"),
    "lr": ("train", "lr"),
    "precision": ("train", "precision"),
    "threads": ("train", "threads"),
    "max_minutes": ("train", "max_minutes"),
    "val_samples": ("train", "val_samples"),
    "init_from": ("train", "init_from"),
    "task_weights": ("train", "task_weights"),
    "phase1_fraction": ("train", "phase1_fraction"),
    "phase1_weights": ("train", "phase1_weights"),
    "hidden_size": ("model", "hidden_size"),
    "intermediate_size": ("model", "intermediate_size"),
    "num_layers": ("model", "num_layers"),
    "num_heads": ("model", "num_heads"),
}


class _Typed(argparse.Action):
    """Store the value and remember that the user typed the option (``--resume`` takes every
    option not typed from the run's own ``config.json``, not from the parser's defaults)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        setattr(namespace, self.dest, values)
        namespace.typed_options = {*getattr(namespace, "typed_options", ()), self.dest}


def _tiny_settings(args: argparse.Namespace) -> dict[str, object]:
    """The options' values; with ``--resume``, those not typed come from ``--out``'s config.json."""
    values = {dest: getattr(args, dest) for dest in _TINY_CONFIG_OPTIONS}
    saved_path = Path(args.out) / "config.json"
    if not (args.resume and saved_path.is_file()):
        return values
    from lm_shared.runtime import load_config

    try:
        saved = load_config(saved_path)
    except ValueError as exc:
        raise SeedDeltaError(str(exc)) from None
    typed = getattr(args, "typed_options", set())
    for dest, (section, field) in _TINY_CONFIG_OPTIONS.items():
        if dest not in typed and field in saved.get(section, {}):
            values[dest] = saved[section][field]
    return values


def cmd_tiny_train(args: argparse.Namespace) -> int:
    from seeddelta.train import TrainConfig, train

    v = _tiny_settings(args)
    cfg = TrainConfig(
        seed=v["seed"],
        steps=v["steps"],
        docs_per_step=v["docs_per_step"],
        lr=v["lr"],
        precision=v["precision"],
        threads=v["threads"],
        max_minutes=v["max_minutes"],
        val_samples=v["val_samples"],
        init_from=v["init_from"],
        task_weights=tuple(v["task_weights"]),
        phase1_fraction=v["phase1_fraction"],
        phase1_weights=tuple(v["phase1_weights"]),
    )
    shape = {key: v[key] for key in ("hidden_size", "intermediate_size", "num_layers", "num_heads")}
    report = train(
        Path(args.out), cfg, model_shape=shape, progress=not args.quiet, resume=args.resume, force=args.force
    )
    em = report["exact_match"]
    print(
        f"exact_match copy={em.get('copy', 0):.3f} sum={em.get('sum', 0):.3f} brackets={em.get('brackets', 0):.3f} "
        f"answer_nll={report['answer_nll']:.4f} ppl={report['ppl']:.3f} "
        f"train_seconds={report['train_seconds']:.0f} -> {Path(args.out) / 'eval.json'}"
    )
    return 0


def _refuse_existing(path: str | Path, force: bool) -> None:
    if Path(path).exists() and not force:
        raise SeedDeltaError(f"{path} exists; pass --force to overwrite it")


def cmd_tiny_export(args: argparse.Namespace) -> int:
    from lm_shared.runs import atomic_path
    from seeddelta.gguf_io import export_checkpoint

    _refuse_existing(args.out, args.force)
    with atomic_path(Path(args.out)) as tmp:
        export_checkpoint(Path(args.checkpoint), tmp, args.dtype)
    print(f"wrote {args.out}")
    return 0


def _add_tiny(sub: argparse._SubParsersAction) -> None:
    from seeddelta.train import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("tiny", help="harness B: the tiny trained model (train, export)")
    tsub = p.add_subparsers(dest="tiny_command", required=True)
    t = tsub.add_parser(
        "train",
        help="train the tiny LLaMA on copy/sum/brackets and write DIR/eval.json",
        formatter_class=DefaultsHelpFormatter,
    )
    t.add_argument(
        "--out", required=True, help="run directory (model.pt, tokenizer.json, config.json, eval.json)"
    )
    t.add_argument(
        "--seed", action=_Typed, type=int, default=d.seed, help="one seed for data, initialisation and order"
    )
    t.add_argument("--steps", action=_Typed, type=int, default=d.steps, help="optimizer steps")
    t.add_argument(
        "--docs-per-step",
        action=_Typed,
        type=int,
        default=d.docs_per_step,
        help="task samples per optimizer step",
    )
    t.add_argument("--lr", action=_Typed, type=float, default=d.lr, help="peak AdamW learning rate")
    t.add_argument(
        "--precision",
        action=_Typed,
        choices=("auto", "32-true", "bf16-mixed"),
        default=d.precision,
        help="auto: bf16 autocast where supported",
    )
    t.add_argument("--threads", action=_Typed, type=int, default=d.threads, help="torch CPU threads")
    t.add_argument(
        "--task-weights",
        action=_Typed,
        type=int,
        nargs=3,
        metavar=("COPY", "SUM", "BRACKETS"),
        default=list(d.task_weights),
        help="training mix of the three tasks after phase 1 (the held-out split stays equal)",
    )
    t.add_argument(
        "--phase1-fraction",
        action=_Typed,
        type=float,
        default=d.phase1_fraction,
        help="fraction of --steps trained on --phase1-weights first (0 = one phase); "
        "each phase has its own warmup and cosine",
    )
    t.add_argument(
        "--phase1-weights",
        action=_Typed,
        type=int,
        nargs=3,
        metavar=("COPY", "SUM", "BRACKETS"),
        default=list(d.phase1_weights),
        help="training mix of phase 1 (default: copy and brackets, no sum)",
    )
    t.add_argument(
        "--val-samples",
        action=_Typed,
        type=int,
        default=d.val_samples,
        help="held-out samples per task for eval.json",
    )
    t.add_argument(
        "--max-minutes",
        action=_Typed,
        type=float,
        default=None,
        help="stop training after this wall time (default: no limit)",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --out from checkpoint.pt, with the run's own settings "
        "(options typed again must match them)",
    )
    t.add_argument("--force", action="store_true", help="replace a finished run in --out")
    t.add_argument(
        "--init-from",
        action=_Typed,
        default=None,
        help="start from this run directory's weights (default: a new model)",
    )
    t.add_argument(
        "--num-layers", action=_Typed, type=int, default=8, help="model depth (the original proposal v1's)"
    )
    t.add_argument("--hidden-size", action=_Typed, type=int, default=192, help="model width")
    t.add_argument("--intermediate-size", action=_Typed, type=int, default=768, help="SwiGLU width")
    t.add_argument("--num-heads", action=_Typed, type=int, default=6, help="attention heads")
    t.set_defaults(func=cmd_tiny_train)
    e = tsub.add_parser(
        "export",
        help="write a llama-arch GGUF of a trained checkpoint",
        formatter_class=DefaultsHelpFormatter,
    )
    e.add_argument("--checkpoint", required=True, help="a `tiny train` run directory")
    e.add_argument("--out", required=True, help="output .gguf")
    e.add_argument("--dtype", choices=("f16", "f32"), default="f16", help="weight type in the GGUF")
    e.add_argument("--force", action="store_true", help="overwrite an existing --out")
    e.set_defaults(func=cmd_tiny_export)


# ------------------------------------------------------------------------------------------- build
def cmd_build(args: argparse.Namespace) -> int:
    from seeddelta.builder import BuildConfig, build

    if Path(args.output).resolve() != Path(args.input).resolve():  # that case has its own error
        _refuse_existing(args.output, args.force)

    activations = None
    if args.refit or args.act_metrics:
        from seeddelta.calibrate import capture_ffn_inputs
        from seeddelta.gguf_io import load_gguf_model
        from seeddelta.tasks import make_split

        model, tok, _ = load_gguf_model(args.input)
        activations = capture_ffn_inputs(model, tok, make_split(args.seed + 7, args.calib_samples))
    cfg = BuildConfig(
        input=args.input,
        output=args.output,
        layers=args.layers,
        K=args.K,
        K_gate=args.K_gate,
        K_up=args.K_up,
        K_down=args.K_down,
        kinds=tuple(f"ffn_{k}" for k in args.tensors.split(",")),
        scheme=args.scheme,
        block=args.block,
        idx_type=args.idx_type,
        val_type=args.val_type,
        row_scale=args.row_scale,
        base=args.base,
        base_kind=args.base_kind,
        base_max_samples=args.base_max_samples,
        base_perm_trials=args.base_perm_trials,
        imatrix=args.imatrix,
        imatrix_eps=args.imatrix_eps,
        imatrix_power=args.imatrix_power,
        eval_cols=args.eval_cols,
        eval_x=args.eval_x,
        policy=args.policy,
        policy_strict=args.policy_strict,
        policy_export=args.policy_export,
        strip_dense=args.strip_dense,
        report_json=args.report_json,
        seed=args.seed,
        stack_cost_cap=args.stack_cost_cap,
        delta_norm_clamp_down=args.delta_norm_clamp_down,
        refit=args.refit,
        activations=activations,
    )
    report = build(cfg, progress=not args.quiet)
    print(
        f"wrote {args.output}: {report['n_emitted']}/{len(report['weights'])} tensors emitted"
        + (f", report {args.report_json}" if args.report_json else "")
    )
    return 0


def _add_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="encode a llama GGUF's FFN tensors with SeedΔ (the fork's builder)")
    p.add_argument("-i", "--input", required=True, help="source GGUF (read only)")
    p.add_argument("-o", "--output", required=True, help="SeedΔ GGUF to write")
    p.add_argument("--layers", default=None, help='layers "A-B" or "1,3,5-6" (default: all)')
    p.add_argument("--tensors", default="gate,up,down", help="FFN tensors to encode: any of gate,up,down")
    p.add_argument("--K", type=int, default=32)
    p.add_argument("--K-gate", type=int, default=None)
    p.add_argument("--K-up", type=int, default=None)
    p.add_argument("--K-down", type=int, default=None)
    p.add_argument("--scheme", choices=("coo", "block"), default="coo")
    p.add_argument("--block", type=int, default=32)
    p.add_argument("--idx-type", choices=("i16", "i32"), default="i16")
    p.add_argument("--val-type", choices=("f16", "f32"), default="f16")
    p.add_argument("--row-scale", action="store_true")
    p.add_argument("--base", action="store_true", help="fit the structured base W0")
    p.add_argument("--base-kind", choices=("xor", "cyclic"), default="xor")
    p.add_argument("--base-max-samples", type=int, default=2048)
    p.add_argument("--base-perm-trials", type=int, default=1)
    p.add_argument("--imatrix", default=None, help="llama.cpp GGUF imatrix (see `seeddelta imatrix`)")
    p.add_argument("--imatrix-eps", type=float, default=1e-8)
    p.add_argument("--imatrix-power", type=float, default=1.0)
    p.add_argument("--eval-cols", type=int, default=0)
    p.add_argument("--eval-x", type=int, default=0)
    p.add_argument("--policy", default=None)
    p.add_argument("--policy-strict", action="store_true")
    p.add_argument("--policy-export", default=None)
    p.add_argument("--strip-dense", action="store_true")
    p.add_argument("--report-json", default=None)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--stack-cost-cap", type=float, default=float("inf"))
    p.add_argument("--delta-norm-clamp-down", type=float, default=None)
    p.add_argument(
        "--refit", action="store_true", help="activation-aware refit of Δ values (tiny llama inputs)"
    )
    p.add_argument("--act-metrics", action="store_true", help="also report metrics on captured activations")
    p.add_argument(
        "--calib-samples", type=int, default=256, help="task samples used for calibration activations"
    )
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--force", action="store_true", help="overwrite an existing --output")
    p.set_defaults(func=cmd_build)


def cmd_imatrix(args: argparse.Namespace) -> int:
    from seeddelta.calibrate import capture_ffn_inputs, write_imatrix
    from seeddelta.gguf_io import load_gguf_model
    from seeddelta.tasks import make_split

    model, tok, _ = load_gguf_model(args.model)
    acts = capture_ffn_inputs(model, tok, make_split(args.seed, args.samples), max_rows=1 << 30)
    print(f"wrote {write_imatrix(Path(args.out), acts)}")
    return 0


def _add_imatrix(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "imatrix", help="importance matrix (llama.cpp GGUF layout) from calibration activations"
    )
    p.add_argument("--model", required=True, help="a llama GGUF the tiny model can load")
    p.add_argument("--out", required=True)
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=cmd_imatrix)


# -------------------------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from seeddelta.evaluate import evaluate_model
    from seeddelta.gguf_io import load_gguf_model
    from seeddelta.tasks import validation_set

    torch.set_num_threads(args.threads)
    samples = validation_set(args.seed, args.samples)
    if args.text:
        from seeddelta.text_eval import text_exact_match

        em, records = text_exact_match(args.model, samples, n_threads=args.threads)
        report = {"exact_match": em, "exact_match_mean": float(sum(em.values()) / len(em)), "path": "text"}
        report.update({"model": args.model, "n_samples": len(samples)})
        if args.records:
            report["records"] = records
        _print_json(report, args.json)
        print("text exact_match " + " ".join(f"{k}={v:.3f}" for k, v in em.items()), file=sys.stderr)
        return 0
    model, tok, info = load_gguf_model(args.model)
    reference = load_gguf_model(args.reference)[0] if args.reference else None
    report = evaluate_model(model, tok, samples, reference, with_records=args.records)
    report.update(
        {"model": args.model, "reference": args.reference, "seeddelta_tensors": len(info["seeddelta"])}
    )
    _print_json(report, args.json)
    em = report["exact_match"]
    print(
        "exact_match "
        + " ".join(f"{k}={v:.3f}" for k, v in em.items())
        + f" answer_nll={report['answer_nll']:.4f} ppl={report['ppl']:.3f} greedy_pack={report['greedy_pack']}"
        + (f" kl={report['kl_to_reference']:.5f}" if reference is not None else ""),
        file=sys.stderr,
    )
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="the fixed evaluation protocol on a base, SeedΔ or quantized GGUF")
    p.add_argument("--model", required=True)
    p.add_argument("--reference", default=None, help="base GGUF for kl_to_reference")
    p.add_argument("--json", default=None, help="write the report here (default: stdout)")
    p.add_argument("--samples", type=int, default=400, help="held-out samples (the fork's 400)")
    p.add_argument("--seed", type=int, default=1, help="dataset seed (the training seed)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--records", action="store_true", help="include per-sample predictions")
    p.add_argument(
        "--text",
        action="store_true",
        help="exact match through llama.cpp text prompts (as llama-cli runs them), not PyTorch",
    )
    p.set_defaults(func=cmd_eval)


# -------------------------------------------------------------------------------------------- scan
def cmd_scan(args: argparse.Namespace) -> int:
    import torch

    from seeddelta.gguf_io import load_gguf_model
    from seeddelta.scan import ScanConfig, scan

    torch.set_num_threads(args.threads)
    model, tok, _ = load_gguf_model(args.model)
    cfg = ScanConfig(
        K=args.K,
        K_down=args.K_down or args.K,
        kinds=tuple(f"ffn_{k}" for k in args.tensors.split(",")),
        base=args.base,
        row_scale=not args.no_row_scale,
        samples=args.samples,
        cliff_drop=args.cliff_drop,
        tolerance=args.tolerance,
        seed=args.seed,
    )
    report = scan(model, tok, cfg, Path(args.out), progress=not args.quiet)
    cl = report["first_cliff"]
    print(
        f"base EM {report['base']['em_mean']:.3f}; first cliff: growing={cl['growing'] and cl['growing']['set']} "
        f"interleaved={cl['interleaved'] and cl['interleaved']['set']}; safe layers {report['safe_layers']}; "
        f"wrote {args.out}/scan.json, fragile_layers.md, scan.png, policy.recommended.json"
    )
    return 0


def _add_scan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scan", help="per-layer and layer-set sensitivity, first cliff, fragile-layer table")
    p.add_argument("--model", required=True, help="base llama GGUF (the tiny model)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--K", type=int, default=32)
    p.add_argument("--K-down", type=int, default=None)
    p.add_argument(
        "--tensors", default="gate,up", help="FFN tensors to encode (the fork's tiny scans: gate,up)"
    )
    p.add_argument("--base", choices=("none", "xor", "cyclic"), default="xor")
    p.add_argument("--no-row-scale", action="store_true")
    p.add_argument("--samples", type=int, default=150)
    p.add_argument("--cliff-drop", type=float, default=0.10)
    p.add_argument("--tolerance", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_scan)


def cmd_baselines(args: argparse.Namespace) -> int:
    import torch

    from seeddelta.baselines import run_baselines
    from seeddelta.gguf_io import load_gguf_model

    torch.set_num_threads(args.threads)
    model, tok, _ = load_gguf_model(args.model)
    densities = tuple(float(x) for x in args.densities.split(","))
    report = run_baselines(
        model,
        tok,
        Path(args.out),
        densities=densities,
        samples=args.samples,
        calib_samples=args.calib_samples,
        llamacpp_samples=args.llamacpp_samples,
        seed=args.seed,
        progress=not args.quiet,
    )
    print((Path(args.out) / "baselines.md").read_text())
    return 0 if report["rows"] else 1


def _add_baselines(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "baselines", help="quality vs bytes: SeedΔ, refit SeedΔ, magnitude pruning, Q8_0, Q4_0"
    )
    p.add_argument("--model", required=True, help="base llama GGUF (the tiny model)")
    p.add_argument("--out", required=True, help="output directory (baselines.json/.md, quality_vs_bytes.png)")
    p.add_argument("--densities", default="0.0625,0.125,0.25", help="kept fraction of each row's inputs")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--calib-samples", type=int, default=200)
    p.add_argument("--llamacpp-samples", type=int, default=40, help="prompts checked in llama.cpp (0 = skip)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_baselines)


def cmd_quantize(args: argparse.Namespace) -> int:
    from seeddelta.baselines import llamacpp_quantize

    print(f"wrote {llamacpp_quantize(Path(args.model), Path(args.out), args.type, args.threads)}")
    return 0


def _add_quantize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="llama.cpp Q8_0/Q4_0 quantization of a GGUF (for `eval`)")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--type", choices=("q8_0", "q4_0"), default="q8_0")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_quantize)


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from lm_shared.profiling import split_table
    from seeddelta.bench import run_bench

    report = run_bench(
        n_in=args.n_in,
        n_out=args.n_out,
        repeats=args.repeats,
        threads=args.threads,
        device=args.device,
        compile=args.compile,
    )
    _print_json(report, args.out)
    table = Table(title=f"SeedΔ bench {args.n_out}x{args.n_in}, {args.threads} threads (fp32)")
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


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="builder throughput and SeedDeltaLinear forward time vs dense")
    p.add_argument("--out", required=True, help="JSON output")
    p.add_argument("--n-in", type=int, default=2048)
    p.add_argument("--n-out", type=int, default=5632)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    add_bench_device_arguments(
        p,
        device_help="where the tiny model's training step is measured (the SeedΔ matrices stay on the CPU)",
        compile_help="torch.compile the tiny model before timing its step",
    )
    p.set_defaults(func=cmd_bench)


# --------------------------------------------------------------------------------------------- main
_ADDERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_toy,
    _add_tiny,
    _add_build,
    _add_imatrix,
    _add_eval,
    _add_scan,
    _add_baselines,
    _add_quantize,
    _add_bench,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seeddelta", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _ADDERS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from lm_shared.runs import run_guarded

    return run_guarded(lambda: args.func(args))


def train_main(argv: list[str] | None = None) -> int:
    """``train`` = ``seeddelta tiny train`` with a default ``--out``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--out" not in argv and not any(a.startswith("--out=") for a in argv):
        argv += ["--out", "runs/seeddelta-tiny"]
    return main(["tiny", "train", *argv])
