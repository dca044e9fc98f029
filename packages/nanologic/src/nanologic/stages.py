"""The data pipeline's one driver: ``nanologic train`` and the stage subcommands run these steps
and write the same files.

::

    generate -> raw.json -> clean -> cleaned.json -> verify -> verified.json -> augment
    -> augmented.json -> preprocess -> train.jsonl, val.jsonl, test.jsonl, stats.json

``train`` without ``--data`` calls :func:`build_dataset`, which runs every stage into the run's
``data/`` folder with :class:`nanologic.configs.DatasetConfig`; each subcommand (``nanologic clean
IN --out OUT`` …) reads its input with :func:`read_stage_input` and runs one step. Each step prints
its :class:`~nanologic.pipeline.StageReport` and refuses to write an empty output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lm_shared.runs import atomic_write_json
from nanologic.configs import (
    AugmentConfig,
    CleanConfig,
    DatasetConfig,
    GenerateConfig,
    PreprocessConfig,
    VerifyConfig,
)
from nanologic.data import read_raw, schema_problem, write_jsonl, write_raw
from nanologic.errors import NanologicError
from nanologic.logic import FormulaError, parsed
from nanologic.pipeline import StageReport

console = Console(stderr=True)

# The file each stage writes in a dataset folder (preprocess writes the splits and stats.json).
STAGE_FILES = {
    "generate": "raw.json",
    "clean": "cleaned.json",
    "verify": "verified.json",
    "augment": "augmented.json",
}
SPLITS = ("train", "val", "test")


def print_report(report: StageReport) -> None:
    """Print a stage's counts, its rejection reasons and its notes (on stderr)."""
    table = Table(title=f"{report.stage}: {report.n_in} in, {report.n_out} out", show_header=True)
    table.add_column("rejection reason")
    table.add_column("count", justify="right")
    for reason, count in report.rejected.most_common():
        table.add_row(reason, str(count))
    console.print(table)
    for key, value in report.notes.items():
        console.print(f"  {key}: {json.dumps(value, ensure_ascii=False)}")


def read_stage_input(path: Path, cleaned: bool = True) -> list[dict]:
    """A stage's input examples (JSON or JSONL in the original's schema).

    Args:
        path: the previous stage's output.
        cleaned: the input must be ``clean`` output (every stage after ``clean``): each example
            has the schema's fields and a formula that parses.

    Returns:
        The examples.

    Raises:
        NanologicError: the file is missing, unreadable or empty, or (``cleaned``) an example is
            not a cleaned one, naming the file, the example and the field (a skipped stage shows
            up here).
    """
    examples = read_raw(path)
    if not examples:
        raise NanologicError(f"{path}: no examples")
    if cleaned:
        for i, ex in enumerate(examples):
            problem = schema_problem(ex)
            if problem is None:
                try:
                    parsed(ex["output"]["formula"])
                except FormulaError:
                    problem = "output.formula: not a parsable formula"
            if problem is not None:
                raise NanologicError(
                    f"{path}: example {i}: {problem} (expected `nanologic clean` output; was a stage skipped?)"
                )
    return examples


def _write_examples(out: Path, examples: list[dict], report: StageReport, source: Path | str) -> None:
    if not examples:
        reasons = ", ".join(f"{r} ({n})" for r, n in report.rejected.most_common(3))
        raise NanologicError(f"{source}: no example survived {report.stage}: {reasons or 'none kept'}")
    write_raw(out, examples)


def generate_step(config: GenerateConfig, out: Path) -> list[dict]:
    """Generate ``config.n`` raw examples into ``out`` (JSON); returns them."""
    from nanologic.generator import generate

    examples = generate(
        config.n,
        seed=config.seed,
        symbolic_share=config.symbolic_share,
        comma_less_share=config.comma_less_share,
    )
    write_raw(out, examples)
    return examples


def clean_step(examples: list[dict], config: CleanConfig, out: Path, source: Path | str) -> list[dict]:
    """Clean ``examples`` (from ``source``) into ``out``; returns the kept ones.

    Raises:
        NanologicError: no example survived, naming ``source`` and the main reasons.
    """
    from nanologic.pipeline import clean

    kept, report = clean(
        examples,
        seed=config.seed,
        max_trivial_fraction=config.max_trivial_fraction,
        min_chars=config.min_chars,
    )
    print_report(report)
    _write_examples(out, kept, report, source)
    return kept


def verify_step(examples: list[dict], config: VerifyConfig, out: Path, source: Path | str) -> list[dict]:
    """The deterministic consistency check (and, with ``config.llm``, the LLM's) into ``out``.

    Raises:
        NanologicError: no example survived, or the LLM settings are incomplete.
    """
    from nanologic.pipeline import consistency_check

    kept, report = consistency_check(examples)
    print_report(report)
    if config.llm:
        from nanologic.llm_verify import LLMVerifier, verify_with_llm

        verifier = LLMVerifier(
            base_url=config.base_url or os.environ.get("NANOLOGIC_API_BASE", ""),
            model=config.model or os.environ.get("NANOLOGIC_MODEL", ""),
            api_key=config.api_key or os.environ.get("NANOLOGIC_API_KEY", ""),
            cache_path=config.cache,
            max_retries=config.retries,
            requests_per_minute=config.rpm,
            price_in=config.price_in,
            price_out=config.price_out,
        )
        kept, llm_report = verify_with_llm(kept, verifier)
        print_report(llm_report)
    _write_examples(out, kept, report, source)
    return kept


def augment_step(examples: list[dict], config: AugmentConfig, out: Path, source: Path | str) -> list[dict]:
    """Originals plus rewrites and compositions into ``out``; returns them all."""
    from nanologic.pipeline import augment

    augmented, report = augment(
        examples, kinds=config.kinds, per_example=config.per_example, seed=config.seed
    )
    print_report(report)
    _write_examples(out, augmented, report, source)
    return augmented


def preprocess_step(
    examples: list[dict], config: PreprocessConfig, out_dir: Path, source: Path | str
) -> StageReport:
    """Balance and split into ``out_dir``: ``<split>.jsonl`` per split, then ``stats.json`` (last:
    its presence marks a whole dataset). Returns the stage's report (``stats.json``'s content).

    Raises:
        NanologicError: a split would be empty (nothing is written then).
    """
    from nanologic.pipeline import preprocess

    splits, report = preprocess(examples, max_per_complexity=config.max_per_complexity, seed=config.seed)
    print_report(report)
    for name, rows in splits.items():
        if not rows:
            raise NanologicError(
                f"{source}: too few examples for a {name} split ({len(examples)} in); nothing written"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        write_jsonl(out_dir / f"{name}.jsonl", rows)
    atomic_write_json(out_dir / "stats.json", report.to_dict())
    return report


def build_dataset(data_dir: Path, config: DatasetConfig | None = None) -> dict:
    """Run every stage into ``data_dir``, the files named in :data:`STAGE_FILES` and the splits.

    Args:
        data_dir: the dataset folder (created).
        config: each stage's settings (default: ``train``'s embedded dataset).

    Returns:
        The preprocess report (``stats.json``'s content).

    Raises:
        NanologicError: a stage left nothing (too few examples for the settings).
    """
    config = config or DatasetConfig()
    data_dir.mkdir(parents=True, exist_ok=True)
    files = {stage: data_dir / name for stage, name in STAGE_FILES.items()}
    examples = generate_step(config.generate, files["generate"])
    examples = clean_step(examples, config.clean, files["clean"], files["generate"])
    examples = verify_step(examples, config.verify, files["verify"], files["clean"])
    examples = augment_step(examples, config.augment, files["augment"], files["verify"])
    return preprocess_step(examples, config.preprocess, data_dir, files["augment"]).to_dict()
