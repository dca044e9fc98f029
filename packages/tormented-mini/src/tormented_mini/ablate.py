"""``tormented-mini ablate``: dynamic_tanh vs DyT vs Derf (vs LayerNorm), and HoPE on/off.

Every variant trains the same number of steps on the same tokenizer, rows, batches and masks
(one seed per run), and is scored on the whole held-out split with fixed masks.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lm_shared.runs import atomic_write_text
from tormented_mini.errors import TormentedError
from tormented_mini.options import AblateOptions

if TYPE_CHECKING:
    from rich.console import Console

    from lm_shared.tokenization import BPETokenizer
    from tormented_mini.data import EncodedCorpus
    from tormented_mini.train import TrainConfig

# (name, norm_type, use_hope)
VARIANTS = (
    ("dynamic_tanh", "dynamic_tanh", True),
    ("dyt", "dyt", True),
    ("derf", "derf", True),
    ("layernorm", "layernorm", True),
    ("derf_no_hope", "derf", False),
)


def run(args: AblateOptions, command_config: str | None = None) -> int:
    """Train every variant for every seed and write the JSON report.

    ``command_config`` (the command's settings as YAML) is saved as ``FILE.config.yaml`` next to
    the report ``FILE.json``; ``tormented-mini ablate --config`` loads it again.
    """
    from rich.console import Console

    from tormented_mini.data import build_tokenizer, default_corpus, encode_corpus, load_texts

    out = Path(args.out)
    if out.suffix != ".json":
        raise TormentedError(f"--out must be a .json file, got {out}")
    if args.max_steps < 1 or not args.seeds:
        raise TormentedError("--max-steps must be >= 1 and --seeds must name at least one seed")
    texts = load_texts(args.data) if args.data else default_corpus()
    base = _base_config(args)
    tokenizer = build_tokenizer(texts, base.vocab_size)
    corpus = encode_corpus(texts, tokenizer, base.seq_len, base.val_fraction)
    console = Console()
    console.print(
        f"ablation: {len(VARIANTS)} variants x {len(args.seeds)} seeds, {args.max_steps} steps, "
        f"{corpus.train.shape[0]} train / {corpus.val.shape[0]} held-out rows of {args.seq_len} tokens"
    )
    runs = _train_variants(args, base, corpus, tokenizer, console)
    summary = _summarise(runs)
    report = {
        "model": args.model,
        "preset": base.preset_name("cpu"),
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "lr": args.lr,
        "seeds": list(args.seeds),
        "data": args.data or "embedded default corpus",
        "summary": summary,
        "runs": runs,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if command_config is not None:
        atomic_write_text(out.with_suffix(".config.yaml"), command_config)
    _print_summary(args, summary, console)
    console.print(f"wrote {out}")
    return 0


def _base_config(args: AblateOptions) -> TrainConfig:
    """The training settings every variant shares (the CPU preset, one evaluation at the end)."""
    from tormented_mini.train import TrainConfig

    return TrainConfig(
        model=args.model,
        size="cpu",
        max_steps=args.max_steps,
        eval_every=args.max_steps,
        eval_batches=args.eval_batches,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        lr=args.lr,
        warmup_steps=max(1, args.max_steps // 10),
        threads=args.threads,
    )


def _train_variants(
    args: AblateOptions, base: TrainConfig, corpus: EncodedCorpus, tokenizer: BPETokenizer, console: Console
) -> list[dict[str, Any]]:
    """Train each variant once per seed (runs under ``--runs-dir``, else a scratch folder); one
    record of held-out results per run, seeds outermost."""
    from tormented_mini.train import MLMTrainer, TrainConfig

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.runs_dir) if args.runs_dir else Path(scratch)
        for seed in args.seeds:
            for name, norm, hope in VARIANTS:
                cfg = TrainConfig(
                    **{
                        **base.__dict__,
                        "seed": seed,
                        "norm_type": norm,
                        "use_hope": hope,
                        "out": str(root / f"{name}-s{seed}"),
                    }
                )
                console.print(f"[bold]{name}[/] seed {seed}")
                result = MLMTrainer(cfg, corpus=corpus, tokenizer=tokenizer).run()
                runs.append(
                    {
                        "variant": name,
                        "norm_type": norm,
                        "use_hope": hope,
                        "seed": seed,
                        "val_mlm_loss": result.val_mlm_loss,
                        "val_masked_acc": result.val_masked_acc,
                        "stopped": result.stopped,
                        "train_seconds": result.train_seconds,
                        "n_params": result.n_params,
                    }
                )
    return runs


def _summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant: mean and standard deviation over seeds of the held-out loss and accuracy."""
    summary = {}
    for name, norm, hope in VARIANTS:
        mine = [r for r in runs if r["variant"] == name]
        losses = [r["val_mlm_loss"] for r in mine]
        accs = [r["val_masked_acc"] for r in mine]
        summary[name] = {
            "norm_type": norm,
            "use_hope": hope,
            "val_mlm_loss": statistics.mean(losses),
            "val_mlm_loss_std": statistics.stdev(losses) if len(losses) > 1 else 0.0,
            "val_masked_acc": statistics.mean(accs),
            "val_masked_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "n_runs": len(mine),
        }
    return summary


def _print_summary(args: AblateOptions, summary: dict[str, dict[str, Any]], console: Console) -> None:
    from rich.table import Table

    table = Table(title=f"ablation ({args.model}, {args.max_steps} steps, seeds {list(args.seeds)})")
    for column in ("variant", "norm", "HoPE", "held-out MLM loss", "masked acc"):
        table.add_column(column)
    for name, s in summary.items():
        spread = f" ± {s['val_mlm_loss_std']:.3f}" if s["n_runs"] > 1 else ""
        table.add_row(
            name,
            s["norm_type"],
            "on" if s["use_hope"] else "off",
            f"{s['val_mlm_loss']:.4f}{spread}",
            f"{s['val_masked_acc']:.4f}",
        )
    console.print(table)
