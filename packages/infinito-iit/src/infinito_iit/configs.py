"""The options of the ``infinito`` commands that are not model, training or decoding settings.

The CLI is made from dataclasses (:mod:`lm_shared.config_cli`): ``model.InfinitoConfig``,
``train.TrainConfig`` and ``generate.DecodingConfig`` give the settings, the small dataclasses
here the rest of each command's options. Each field's comment is its ``--help`` and each
default exists only here (or in those three dataclasses).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Threads:
    """CPU threads; every command takes it."""

    threads: int = 1  # torch CPU threads (small models gain little from more)


@dataclass(frozen=True)
class ModelChoice:
    """Where the model settings start: a size preset, then the model flags typed."""

    preset: str = "cpu"  # size preset: cpu (128/2/4) | small (384/3/6) | seed (512/4/8)
    baseline: bool = False  # the same transformer with every IIT feature off


@dataclass(frozen=True)
class RunOptions:
    """``infinito train``: where the run goes and what happens to a run already there."""

    out: Path = Path("runs")  # root folder of run directories
    run_name: str | None = None  # run folder name (default: a UTC timestamp)
    # continue the interrupted run in RUN_DIR with its own settings (default: start a new run)
    resume: Path | None = None
    force: bool = False  # replace a finished or interrupted run in that folder


@dataclass(frozen=True)
class CompareOptions:
    """``infinito compare``: the comparison's own options."""

    out: Path  # output folder (compare.json, config.yaml, plots, runs)
    seeds: int = 3  # seeds per variant
    dropout_study: bool = True  # also train the dropout 0.15 vs 0.25 variants
    param_match: bool = True  # widen the baseline MLP so both models have the same parameter count
    proxy_bootstrap: int = 50  # bootstrap replicates of the final Φ proxy


@dataclass(frozen=True)
class BenchOptions:
    """``infinito bench``: what to time."""

    out: Path = Path("bench.json")  # where the JSON report goes
    seq_len: int = 128  # tokens per sequence
    batch_size: int = 16  # sequences per step
    steps: int = 10  # timed optimizer steps per variant
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where to measure (auto: CUDA when visible)
    compile: bool = False  # torch.compile every variant before timing it


@dataclass(frozen=True)
class RunInput:
    """``evaluate``, ``phi`` and ``generate``: which run, which weights, which text."""

    run: Path | None = None  # run directory (required: RUN or --run RUN)
    # best (model.safetensors), last (checkpoints/last.ckpt) or a .ckpt/.safetensors path
    checkpoint: str = "best"
    data: str | None = None  # corpus: validation text and prompts (default: the run's)


@dataclass(frozen=True)
class PhiOptions:
    """``infinito phi``: the Gaussian Φ_AR proxy's settings."""

    k: int = 8  # leading components (exhaustive up to 12)
    layer: int | None = None  # residual stream after this block (default: the last)
    sequences: int = 64  # validation chunks measured
    bootstrap: int = 200  # bootstrap replicates of the confidence intervals
    seed: int = 0  # seed of the bootstrap, the shuffles and the random-init null model
    out: Path | None = None  # also write the JSON here


@dataclass(frozen=True)
class GenerateOptions:
    """``infinito generate``: prompts and where the report goes."""

    prompt: list[str] | None = None  # repeatable; default: validation prompts
    num_samples: int = 8  # samples to generate (and validation prompts to take)
    out: Path | None = None  # write samples and report as JSON
