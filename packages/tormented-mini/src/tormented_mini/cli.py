"""``tormented-mini`` command line: train | bench | ablate | fill-mask | info.

``uv run --package tormented-mini train`` runs :func:`train_main` (the same as ``tormented-mini train``).
User errors print ``error: ...`` on stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from lm_shared.cli_help import DefaultsHelpFormatter, add_bench_device_arguments
from tormented_mini.errors import USER_ERRORS, TormentedError


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected on/off, got {text!r}")


# ==================================================================================== train
def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from tormented_mini.train import TrainConfig

    d = TrainConfig()
    parser.add_argument(
        "--model", choices=("mini", "frankenstein"), default=d.model, help="architecture family"
    )
    parser.add_argument(
        "--size",
        choices=("auto", "cpu", "full"),
        default=d.size,
        help="cpu preset, the original's full size, or auto (full on a GPU)",
    )
    parser.add_argument(
        "--out", default=d.out, help="run folder; becomes a Hugging Face model folder (default: %(default)s)"
    )
    parser.add_argument(
        "--data", default=None, help="UTF-8 text file or folder of .txt files (default: the embedded corpus)"
    )
    parser.add_argument(
        "--hf-dataset",
        default=None,
        help="Hugging Face dataset name, e.g. erickfmm/red_pajama_es_hq_35 (default: none, --data or the embedded corpus)",
    )
    parser.add_argument(
        "--hf-config", default=None, help="dataset configuration name (default: the dataset's)"
    )
    parser.add_argument("--hf-split", default=d.hf_split, help="dataset split")
    parser.add_argument("--text-field", default=d.text_field, help="dataset column holding the text")
    parser.add_argument("--max-docs", type=int, default=d.max_docs, help="documents read from --hf-dataset")
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=d.vocab_size,
        help="BPE vocabulary cap (a small corpus stops earlier)",
    )
    parser.add_argument(
        "--seq-len", type=int, default=d.seq_len, help="tokens per packed row, [CLS] and [SEP] included"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help="rows per optimizer step over all devices (default: %(default)s)",
    )
    parser.add_argument(
        "--accumulate-grad-batches",
        type=int,
        default=d.accumulate_grad_batches,
        help="micro-batches per optimizer step; each is batch-size / this many rows (default: %(default)s)",
    )
    parser.add_argument("--max-steps", type=int, default=d.max_steps, help="optimizer steps")
    parser.add_argument("--lr", type=float, default=d.lr, help="peak AdamW learning rate")
    parser.add_argument(
        "--ode-lr-scale",
        type=float,
        default=d.ode_lr_scale,
        help="learning-rate multiplier of the ODE layers",
    )
    parser.add_argument(
        "--warmup-steps", type=int, default=d.warmup_steps, help="linear warmup steps, then cosine decay"
    )
    parser.add_argument("--clip-norm", type=float, default=d.clip_norm, help="gradient clipping threshold")
    parser.add_argument(
        "--max-retries",
        type=int,
        default=d.max_retries,
        help="LR-halving retries of a non-finite batch before checkpoint-and-stop",
    )
    parser.add_argument(
        "--eval-every", type=int, default=d.eval_every, help="steps between evaluations and checkpoints"
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "32-true", "bf16-mixed", "16-mixed"),
        default=d.precision,
        help="auto: bf16-mixed or 16-mixed on GPUs that run them fast, 32-true elsewhere",
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="one seed for data order, masking and init")
    parser.add_argument(
        "--devices",
        default=d.devices,
        help="Lightning devices: auto, a count or a list like 0,1 (default: %(default)s)",
    )
    parser.add_argument("--num-nodes", type=int, default=d.num_nodes, help="machines (default: %(default)s)")
    parser.add_argument(
        "--strategy",
        choices=("auto", "ddp", "fsdp"),
        default=d.strategy,
        help="Lightning strategy; ddp for several GPUs or nodes (default: %(default)s)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the forward pass (checkpoints do not depend on it)",
    )
    parser.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (0: torch default)")
    parser.add_argument(
        "--norm",
        dest="norm_type",
        choices=("layernorm", "dyt", "dynamic_tanh", "derf"),
        default=None,
        help="normalisation layer (default: the preset's)",
    )
    parser.add_argument(
        "--hope",
        dest="use_hope",
        type=_bool,
        default=None,
        metavar="on|off",
        help="HoPE position encoding (default: the preset's)",
    )
    parser.add_argument(
        "--bitnet",
        dest="use_bitnet",
        type=_bool,
        default=None,
        metavar="on|off",
        help="BitLinear 1.58-bit layers (default: the preset's)",
    )
    parser.add_argument(
        "--moe",
        dest="use_moe",
        type=_bool,
        default=None,
        metavar="on|off",
        help="mixture-of-experts feed-forward (default: the preset's)",
    )
    parser.add_argument(
        "--titan-memory",
        dest="use_titan_memory",
        type=_bool,
        default=None,
        metavar="on|off",
        help="Titans memory branch (default: the preset's)",
    )
    parser.add_argument(
        "--model-config",
        default=None,
        help="JSON file of UltraConfig fields overriding the preset (layer_pattern, ...; default: none)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from checkpoints/last.ckpt, with its own data and settings",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace a finished or interrupted run in --out (swapped in when done)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace):  # noqa: ANN201 - TrainConfig
    from tormented_mini.train import TrainConfig

    overrides: dict = {}
    if args.model_config:
        path = Path(args.model_config)
        try:
            overrides = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TormentedError(f"{path}: model config file not found") from None
        except json.JSONDecodeError as exc:
            raise TormentedError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(overrides, dict):
            raise TormentedError(f"{path}: expected a JSON object of UltraConfig fields")
    names = {f for f in TrainConfig.__dataclass_fields__} - {"model_overrides"}
    values = {k: v for k, v in vars(args).items() if k in names}
    return TrainConfig(**values, model_overrides=overrides)


def run_train(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tormented_mini.modeling_tormented import UltraConfig
    from tormented_mini.train import MLMTrainer, resume_config

    cfg = config_from_args(args)
    if args.resume:
        cfg = resume_config(cfg.out, cfg)
    if cfg.model_overrides:
        UltraConfig.frankenstein_cpu(**cfg.model_overrides)  # validates field names and values early
    console = Console(stderr=True)
    trainer = MLMTrainer(cfg, resume=args.resume, force=args.force, progress=not args.no_progress)
    mc = trainer.model_config
    n_params = sum(p.numel() for p in trainer.model.parameters())
    console.print(
        f"[bold]{cfg.model}[/] ({cfg.preset_name(trainer.device)}): hidden {mc.hidden_size}, {mc.num_layers} layers x "
        f"{mc.num_loops} loops, {n_params / 1e6:.2f}M params, norm {mc.norm_type}, bitnet {mc.use_bitnet}, "
        f"vocab {mc.vocab_size}, device {trainer.device}, precision {trainer.precision}, "
        f"{trainer.corpus.train.shape[0]} train / {trainer.corpus.val.shape[0]} held-out rows"
    )
    result = trainer.run()
    console.print(
        f"step {result.steps}: held-out MLM loss {result.val_mlm_loss:.4f}, masked-token accuracy "
        f"{result.val_masked_acc:.4f}, {result.seconds_per_step:.3f} s/step, saved to {result.out}"
    )
    if result.stopped:
        console.print(f"[red]training stopped:[/] {result.stop_reason}")
        return 1
    return 0


def train_main(argv: list[str] | None = None) -> int:
    """Entry point of ``uv run --package tormented-mini train`` and ``tormented-mini train``."""
    parser = argparse.ArgumentParser(
        prog="tormented-mini train",
        description="Pre-train a Tormented-BERT masked LM.",
        formatter_class=DefaultsHelpFormatter,
    )
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    return _guarded(run_train, args)


# ==================================================================================== others
def run_fill_mask(args: argparse.Namespace) -> int:
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    from lm_shared.runs import require_run_of

    folder = Path(args.model_dir)
    require_run_of(folder, "tormented-mini")  # another member's run folder is named as such
    if not (folder / "config.json").is_file():
        raise TormentedError(
            f"{folder}: not a model folder (no config.json); train one with `tormented-mini train`"
        )
    weights = folder / "model.safetensors"
    if weights.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(weights), framework="pt") as handle:
                handle.keys()
        except Exception as exc:
            raise TormentedError(
                f"{weights}: damaged or not a safetensors file ({type(exc).__name__}); train it again with --force"
            ) from None
    try:
        model = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as exc:  # a truncated or foreign file: name it in one line
        name = next(
            (n for n in ("model.safetensors", "tokenizer.json", "config.json") if n in str(exc)), None
        )
        what = f"{folder / name}: damaged" if name else f"{folder}: cannot load the model"
        raise TormentedError(f"{what} ({type(exc).__name__}); train it again with --force") from None
    if tokenizer.mask_token not in args.text:
        raise TormentedError(f"the text must contain {tokenizer.mask_token}")
    fill = pipeline("fill-mask", model=model, tokenizer=tokenizer, top_k=args.top_k)
    results = fill(args.text)
    if results and isinstance(results[0], list):
        results = [r for group in results for r in group]
    for r in results:
        print(f"{r['score']:.4f}  {r['token_str'].strip()!r:20}  {r['sequence']}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    from tormented_mini.modeling_tormented import PRESETS, TormentedBertConfig, TormentedBertForMaskedLM

    table = Table(title="Tormented-BERT presets")
    for column in ("preset", "hidden", "layers x loops", "pattern", "norm", "bitnet", "params (M)"):
        table.add_column(column)
    for name, make in PRESETS.items():
        config = make()
        with torch.device("meta"):
            model = TormentedBertForMaskedLM(TormentedBertConfig.from_ultra(config))
        n = sum(p.numel() for p in model.parameters())
        table.add_row(
            name,
            str(config.hidden_size),
            f"{config.num_layers} x {config.num_loops}",
            ",".join(config.layer_pattern),
            config.norm_type,
            str(config.use_bitnet),
            f"{n / 1e6:.2f}",
        )
    Console().print(table)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from tormented_mini import bench

    return bench.run(args)


def run_ablate(args: argparse.Namespace) -> int:
    from tormented_mini import ablate

    return ablate.run(args)


def _guarded(fn, args: argparse.Namespace) -> int:  # noqa: ANN001
    """One line and exit 2 for user errors, one line and exit 130 after Ctrl-C/SIGTERM."""
    from lm_shared.runs import run_guarded

    def action() -> int:
        try:
            return fn(args)
        except USER_ERRORS as exc:
            raise TormentedError(str(exc)) from None

    return run_guarded(action)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tormented-mini", description="Hybrid masked-LM encoder: train, benchmark, ablate."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p_train = sub.add_parser(
        "train",
        help="pre-train a masked LM (same as `uv run --package tormented-mini train`)",
        formatter_class=DefaultsHelpFormatter,
    )
    add_train_arguments(p_train)
    p_train.set_defaults(fn=run_train)

    p_bench = sub.add_parser(
        "bench", help="step time and peak memory of Mini vs Frankenstein, and per-block fwd+bwd time"
    )
    p_bench.add_argument("--out", required=True, help="JSON file to write")
    p_bench.add_argument("--size", choices=("auto", "cpu", "full"), default="auto")
    p_bench.add_argument("--batch-size", type=int, default=8)
    p_bench.add_argument("--seq-len", type=int, default=128)
    p_bench.add_argument("--steps", type=int, default=5, help="timed steps per model (after one warm-up)")
    p_bench.add_argument("--threads", type=int, default=2)
    p_bench.add_argument("--no-bf16", action="store_true", help="skip the bf16-autocast measurement")
    add_bench_device_arguments(p_bench, compile_help="torch.compile each model before timing it")
    p_bench.set_defaults(fn=run_bench)

    p_ablate = sub.add_parser(
        "ablate", help="dynamic_tanh vs DyT vs Derf, and HoPE on/off, same steps and data"
    )
    p_ablate.add_argument("--out", required=True, help="JSON file to write")
    p_ablate.add_argument("--model", choices=("mini", "frankenstein"), default="mini")
    p_ablate.add_argument("--data", default=None, help="text file or folder (default: the embedded corpus)")
    p_ablate.add_argument("--max-steps", type=int, default=200)
    p_ablate.add_argument("--batch-size", type=int, default=16)
    p_ablate.add_argument("--seq-len", type=int, default=64)
    p_ablate.add_argument("--lr", type=float, default=1e-3)
    p_ablate.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed per variant")
    p_ablate.add_argument("--eval-batches", type=int, default=0, help="held-out batches scored (0: all)")
    p_ablate.add_argument("--threads", type=int, default=1)
    p_ablate.add_argument(
        "--runs-dir", default=None, help="where the runs' folders go (default: a temporary folder)"
    )
    p_ablate.set_defaults(fn=run_ablate)

    p_fill = sub.add_parser(
        "fill-mask", help="fill [MASK] with a trained model folder (transformers pipeline)"
    )
    p_fill.add_argument("model_dir")
    p_fill.add_argument("text", help='e.g. "El caballero [MASK] el camino."')
    p_fill.add_argument("--top-k", type=int, default=5)
    p_fill.set_defaults(fn=run_fill_mask)

    p_info = sub.add_parser("info", help="parameter counts of the presets")
    p_info.set_defaults(fn=run_info)

    args = parser.parse_args(list(argv) if argv is not None else None)
    return _guarded(args.fn, args)


if __name__ == "__main__":
    raise SystemExit(main())
