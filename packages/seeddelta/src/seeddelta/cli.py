"""``seeddelta`` command line: toy, tiny (train/export), build, eval, scan, baselines, bench."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


# --------------------------------------------------------------------------------------------- main
_ADDERS: list[Callable[[argparse._SubParsersAction], None]] = [_add_toy]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seeddelta", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _ADDERS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except SeedDeltaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def train_main(argv: list[str] | None = None) -> int:
    """``train`` = ``seeddelta tiny train`` with a default ``--out``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--out" not in argv and not any(a.startswith("--out=") for a in argv):
        argv += ["--out", "runs/seeddelta-tiny"]
    return main(["tiny", "train", *argv])
