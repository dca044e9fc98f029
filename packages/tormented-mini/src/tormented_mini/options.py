"""The options of the ``tormented-mini`` commands that are not training settings.

The CLI is made from dataclasses (:mod:`lm_shared.config_cli`): ``train.TrainConfig`` gives the
training settings, the small dataclasses here the rest of each command's options. Each field's
comment is its ``--help`` and each default exists only here (or in ``TrainConfig``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class RunOptions:
    """``tormented-mini train``: what happens to a run already in --out, extra model settings, the screen."""

    resume: bool = (
        False  # continue the run in --out from checkpoints/last.ckpt, with its own data and settings
    )
    force: bool = False  # replace a finished or interrupted run in --out (swapped in when done)
    # JSON file of UltraConfig fields overriding the preset (layer_pattern, ...; default: none)
    model_config: str | None = None
    progress: bool = True  # show a progress bar


@dataclass(frozen=True)
class BenchOptions:
    """``tormented-mini bench``: what to time and where the JSON goes."""

    out: Path  # JSON file to write
    size: str = "auto"  # cpu presets, the original's full sizes, or auto (full on a GPU)
    batch_size: int = 8  # rows per timed step
    seq_len: int = 128  # tokens per row
    steps: int = 5  # timed steps per model (after one warm-up)
    threads: int = 2  # torch CPU threads
    bf16: bool = True  # also time Mini under bf16 autocast on the CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where to measure (auto: CUDA when visible)
    compile: bool = False  # torch.compile each model before timing it


@dataclass(frozen=True)
class AblateOptions:
    """``tormented-mini ablate``: the variants' shared training settings and where the JSON goes."""

    out: Path  # JSON file to write (its settings also go to FILE.config.yaml)
    model: str = "mini"  # architecture family: mini | frankenstein
    data: str | None = None  # text file or folder (default: the embedded corpus)
    max_steps: int = 200  # optimizer steps per run
    batch_size: int = 16  # rows per optimizer step
    seq_len: int = 64  # tokens per packed row
    lr: float = 1e-3  # peak AdamW learning rate
    seeds: tuple[int, ...] = (0,)  # one run per seed per variant
    eval_batches: int = 0  # held-out batches scored (0: all)
    threads: int = 1  # torch CPU threads
    runs_dir: Path | None = None  # where the runs' folders go (default: a temporary folder)


@dataclass(frozen=True, kw_only=True)
class FillMaskOptions:
    """``tormented-mini fill-mask``: the trained run and the text."""

    run: Path | None = None  # trained run folder, a Hugging Face model folder (required)
    text: str  # text with [MASK], e.g. "El caballero [MASK] el camino."
    top_k: int = 5  # predictions listed per mask
