"""``infinito`` command line: train, evaluate, phi, generate, compare, bench.

``infinito train`` and ``uv run --package infinito-iit train`` run the same trainer
(:func:`train_main`). User errors print ``error: ...`` and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from lm_shared.cli_help import DefaultsHelpFormatter, add_bench_device_arguments

from .errors import InfinitoError

MODEL_FLAGS = {
    # flag -> (config field, type, help)
    "--d-model": ("d_model", int, "residual width"),
    "--n-layers": ("n_layers", int, "transformer blocks"),
    "--n-heads": ("n_heads", int, "attention heads"),
    "--d-ff": ("d_ff", int, "MLP width (0 = 4 * d_model)"),
    "--max-seq-len": ("max_seq_len", int, "learned positions"),
    "--dropout": ("dropout", float, "dropout (the original: 0.15 Model A, 0.25 Model B)"),
    "--lambda-phi": ("lambda_phi", float, "weight of the phi loss (0 = off)"),
    "--phi-target": ("phi_target", float, "hinge target of the phi loss, in (0, 1]"),
    "--noise-std": ("noise_std", float, "exploration noise relative to the residual RMS (0 = off)"),
    "--memory-slots": ("memory_slots", int, "IIT-guided memory slots"),
    "--memory-writes": ("memory_writes", int, "memory slots written per training step"),
}


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (defaults come from --preset)")
    g.add_argument("--preset", default="cpu", help="cpu (default) | small (384/3/6) | seed (512/4/8)")
    for flag, (_, typ, help_) in MODEL_FLAGS.items():
        g.add_argument(flag, type=typ, default=None, help=f"{help_} (default: the preset's)")
    g.add_argument("--untied", action="store_true", default=None, help="separate output head (seed style)")
    g.add_argument("--baseline", action="store_true", help="the same transformer with every IIT feature off")
    g.add_argument("--no-memory", action="store_true", default=None, help="turn the IIT-guided memory off")
    g.add_argument(
        "--no-metrics",
        action="store_true",
        default=None,
        help="no IIT metrics (implies no phi loss, no memory)",
    )
    g.add_argument(
        "--fixed-phi-weights", action="store_true", default=None, help="phi weights stay at their init"
    )
    g.add_argument(
        "--phi-components",
        default=None,
        help="comma list from temporal,integration,complexity,attention (default: the preset's)",
    )


def build_model_config(args: argparse.Namespace, base: dict[str, Any] | None = None):
    """Preset (or a saved config) plus the flags the user actually gave."""
    from .model import InfinitoConfig, preset

    try:
        config = InfinitoConfig.from_dict(base) if base is not None else preset(args.preset)
        overrides: dict[str, Any] = {}
        for flag, (name, _, _) in MODEL_FLAGS.items():
            value = getattr(args, flag[2:].replace("-", "_"))
            if value is not None:
                overrides[name] = value
        if args.untied:
            overrides["tie_embeddings"] = False
        if args.no_memory:
            overrides["memory"] = False
        if args.no_metrics:
            overrides.update(iit_metrics=False, memory=False, lambda_phi=0.0)
        if args.fixed_phi_weights:
            overrides["learnable_phi_weights"] = False
        if args.phi_components is not None:
            overrides["phi_components"] = tuple(c for c in args.phi_components.split(",") if c)
        config = replace(config, **overrides)
        return config.baseline() if args.baseline else config
    except (ValueError, TypeError) as exc:
        raise InfinitoError(str(exc)) from None


TRAIN_FLAGS = {
    # flag -> (TrainConfig field, type, help); the defaults are TrainConfig's (or, with --resume, the run's)
    "--data": ("data", str, "text file, WikiText folder, wikitext-2-raw-v1, or default"),
    "--tokenizer": ("tokenizer", str, "bpe (trained on the train split) | gpt2"),
    "--vocab-size": ("vocab_size", int, "BPE vocabulary size"),
    "--seq-len": ("seq_len", int, "tokens per training chunk"),
    "--batch-size": ("batch_size", int, "sequences per micro-batch and device"),
    "--grad-accum": ("grad_accum", int, "micro-batches per optimizer step"),
    "--lr": ("lr", float, "AdamW learning rate"),
    "--weight-decay": ("weight_decay", float, "AdamW weight decay on matrices"),
    "--max-steps": ("max_steps", int, "optimizer steps"),
    "--eval-every": ("eval_every", int, "optimizer steps between validations and checkpoints"),
    "--eval-batches": ("eval_batches", int, "validation batches per periodic eval (0 = all)"),
    "--patience": ("patience", int, "early stopping patience (evaluations)"),
    "--precision": ("precision", str, "auto | 32-true | bf16-mixed | 16-mixed"),
    "--seed": ("seed", int, "one seed for data order, initialisation and noise"),
    "--proxy-k": ("proxy_k", int, "Φ-proxy components tracked per eval (0 = off)"),
    "--devices": ("devices", str, "Lightning devices: auto, a count, or a list like 0,1"),
    "--num-nodes": ("num_nodes", int, "machines, each with --devices devices"),
    "--strategy": ("strategy", str, "auto | ddp | fsdp"),
}


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from .train import TrainConfig

    defaults = TrainConfig()
    g = p.add_argument_group("data and training (with --resume, the run's own values by default)")
    for flag, (name, typ, help_) in TRAIN_FLAGS.items():
        g.add_argument(flag, type=typ, default=None, help=f"{help_} (default: {getattr(defaults, name)})")
    g.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the model (checkpoints are the same)",
    )
    g.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (small models gain little from more)"
    )


def _train_config(args: argparse.Namespace, saved: dict[str, Any] | None = None):
    """TrainConfig from ``saved`` (a resumed run's) or the defaults, plus the flags actually given."""
    from .train import TrainConfig

    values = dict(saved or {})
    for flag, (name, _, _) in TRAIN_FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            values[name] = value
    if args.compile:
        values["compile"] = True
    return TrainConfig.from_dict(values)


def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, n))


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


def _cmd_train(args: argparse.Namespace) -> int:
    from lm_shared.runs import read_json_file

    from .train import train

    _set_threads(args.threads)
    saved = None
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.json").is_file():
            raise InfinitoError(f"{run_dir}: not a run directory (no config.json)")
        saved = read_json_file(run_dir / "config.json", "run config")
    else:
        name = args.run_name or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        run_dir = Path(args.out) / name
    model_config = build_model_config(args, saved["model"] if saved else None)
    train_config = _train_config(args, saved["train"] if saved else None)
    result = train(model_config, train_config, run_dir, resume=bool(args.resume), force=args.force)
    if result.final:
        _print_metrics(f"validation ({result.data.corpus.name}, {result.run_dir})", result.final)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .generate import load_run
    from .train import evaluate

    _set_threads(args.threads)
    run = load_run(Path(args.run), args.checkpoint)
    from .data import leakage_warning, load_corpus, prepare_data

    train_cfg = run.config["train"]
    corpus = load_corpus(
        args.data or train_cfg.get("data"), valid_fraction=train_cfg.get("valid_fraction", 0.1)
    )
    data = prepare_data(corpus, train_cfg["seq_len"], tokenizer=run.tokenizer)
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


def _cmd_phi(args: argparse.Namespace) -> int:
    import torch

    from .data import load_corpus, prepare_data
    from .generate import load_run
    from .model import InfinitoLM
    from .phi_proxy import model_phi_proxy

    _set_threads(args.threads)
    run = load_run(Path(args.run), args.checkpoint)
    train_cfg = run.config["train"]
    corpus = load_corpus(
        args.data or train_cfg.get("data"), valid_fraction=train_cfg.get("valid_fraction", 0.1)
    )
    data = prepare_data(corpus, train_cfg["seq_len"], tokenizer=run.tokenizer)
    ids = data.valid.inputs[: args.sequences]
    torch.manual_seed(args.seed + 1)
    null = InfinitoLM(run.model.config).eval()
    report = model_phi_proxy(
        run.model,
        ids,
        k=args.k,
        layer=args.layer,
        n_bootstrap=args.bootstrap,
        null_model=null,
        seed=args.seed,
    )
    out = report.as_dict()
    print(json.dumps(out, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from .generate import DecodingConfig, generate_report, load_run

    _set_threads(args.threads)
    run = load_run(Path(args.run), args.checkpoint)
    decoding = DecodingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram,
        penalty_alpha=args.penalty_alpha,
        do_sample=not args.greedy,
        seed=args.seed,
    )
    report = generate_report(run, args.prompt, decoding, num_samples=args.num_samples, human_data=args.data)
    for i, text in enumerate(report["samples"]):
        print(f"--- sample {i} ---\n{text}\n")
    _print_metrics("mode-collapse report: generated", report["generated"])
    if report.get("human"):
        _print_metrics("same metrics on human text (validation continuations)", report["human"])
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import run_compare

    _set_threads(args.threads)
    model_config = build_model_config(args)
    if not model_config.uses_iit:
        raise InfinitoError(
            "compare needs the IIT model config (drop --baseline/--no-metrics); it trains the baseline itself"
        )
    train_config = _train_config(args)
    result = run_compare(
        model_config,
        train_config,
        Path(args.out),
        seeds=args.seeds,
        dropout_study=not args.no_dropout_study,
        match_parameters=not args.no_param_match,
        proxy_bootstrap=args.proxy_bootstrap,
    )
    summary = {
        k: {m: result[k][m] for m in ("bpb_mean", "bpb_std", "parameters")} for k in ("iit", "baseline")
    }
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    _set_threads(args.threads)
    model_config = build_model_config(args)
    run_bench(
        model_config,
        Path(args.out),
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        steps=args.steps,
        device=args.device,
        compile=args.compile,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infinito", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "train",
        help="train a model (IIT features on; --baseline for the plain transformer)",
        formatter_class=DefaultsHelpFormatter,
    )
    _add_model_args(p)
    _add_train_args(p)
    p.add_argument("--out", default="runs", help="root folder of run directories")
    p.add_argument("--run-name", default=None, help="run folder name (default: a UTC timestamp)")
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue the interrupted run in RUN_DIR with its own settings (default: start a new run)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace a finished or interrupted run in that folder"
    )
    p.set_defaults(func=_cmd_train)

    for name, help_ in (
        ("evaluate", "validation loss, perplexity, bits per byte, word perplexity"),
        ("phi", "Gaussian Φ_AR proxy with bootstrap CIs and nulls"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("run", help="run directory")
        p.add_argument(
            "--checkpoint",
            default="best",
            help="best (model.safetensors), last (checkpoints/last.ckpt) or a .ckpt/.safetensors path",
        )
        p.add_argument("--data", default=None, help="corpus (default: the run's)")
        p.add_argument("--threads", type=int, default=1)
        if name == "phi":
            p.add_argument("--k", type=int, default=8, help="leading components (exhaustive up to 12)")
            p.add_argument(
                "--layer", type=int, default=None, help="residual stream after this block (default: last)"
            )
            p.add_argument("--sequences", type=int, default=64)
            p.add_argument("--bootstrap", type=int, default=200)
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--out", default=None, help="also write the JSON here")
            p.set_defaults(func=_cmd_phi)
        else:
            p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("generate", help="sample text and report mode collapse next to human text")
    p.add_argument("run", help="run directory")
    p.add_argument(
        "--checkpoint",
        default="best",
        help="best (model.safetensors), last (checkpoints/last.ckpt) or a .ckpt/.safetensors path",
    )
    p.add_argument("--prompt", action="append", default=None, help="repeatable; default: validation prompts")
    p.add_argument("--num-samples", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--no-repeat-ngram", type=int, default=0)
    p.add_argument(
        "--penalty-alpha",
        type=float,
        default=0.0,
        help="> 0: contrastive search (with --top-k, e.g. 0.6 and 4)",
    )
    p.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="corpus for prompts and human text (default: the run's)")
    p.add_argument("--out", default=None, help="write samples and report as JSON")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("compare", help="IIT model vs baseline at equal parameters, steps and seeds")
    _add_model_args(p)
    _add_train_args(p)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", required=True, help="output folder (compare.json, plots, runs)")
    p.add_argument("--no-dropout-study", action="store_true", help="skip the dropout 0.15 vs 0.25 runs")
    p.add_argument(
        "--no-param-match", action="store_true", help="do not widen the baseline MLP to equal parameters"
    )
    p.add_argument(
        "--proxy-bootstrap", type=int, default=50, help="bootstrap replicates of the final Φ proxy"
    )
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("bench", help="training tokens/s with and without IIT features; Φ-proxy cost")
    _add_model_args(p)
    p.add_argument("--out", default="bench.json")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    add_bench_device_arguments(p, compile_help="torch.compile every variant before timing it")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a user error is one ``error: ...`` line (exit 2), Ctrl-C one line (exit 130)."""
    from lm_shared.runs import run_guarded

    args = build_parser().parse_args(argv)
    return run_guarded(lambda: args.func(args))


def train_main(argv: list[str] | None = None) -> int:
    """The workspace ``train`` entry point: same as ``infinito train``."""
    return main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
