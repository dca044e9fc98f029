"""The options of each ``seeddelta`` command that are not part of a config it computes with.

The computing configs live beside their code (``toy.ToyConfig``, ``train.TrainConfig``,
``model.ModelConfig``, ``builder.BuildConfig``, ``scan.ScanConfig``); these dataclasses hold the
rest: inputs, outputs, threads and switches. ``seeddelta.cli`` makes every command's flags from
both (:mod:`lm_shared.config_cli`): each field's comment is its flag's ``--help`` and each default
exists here only.
"""

from __future__ import annotations

from dataclasses import dataclass

BASES = ("none", "xor", "cyclic")
VAL_TYPES = ("f16", "f32")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ToyOptions:
    json: bool = False  # print the JSON report instead of a table


@dataclass(frozen=True)
class TinyTrainOptions:
    out: str  # run directory (model.pt, tokenizer.json, config.json, config.yaml, eval.json)
    quiet: bool = False  # no progress bar
    # half the steps (1,500 of 3,000) unless --steps is given: a first look in half the time, at
    # much lower accuracy on sum (README: time and accuracy of both)
    quick: bool = False
    # continue the interrupted run in --out from checkpoint.pt, with the run's own settings
    # (options typed again must match them)
    resume: bool = False
    force: bool = False  # replace a finished run in --out


@dataclass(frozen=True)
class ExportOptions:
    checkpoint: str  # a `tiny train` run directory
    out: str  # output .gguf
    dtype: str = "f16"  # weight type in the GGUF (f16 | f32)
    force: bool = False  # overwrite an existing --out


@dataclass(frozen=True)
class BuildOptions:
    act_metrics: bool = False  # also report metrics on captured activations
    calib_samples: int = 256  # task samples used for calibration activations (--refit, --act-metrics)
    quiet: bool = False  # no progress bar
    force: bool = False  # overwrite an existing --output


@dataclass(frozen=True)
class ImatrixOptions:
    model: str  # a llama GGUF the tiny model can load
    out: str  # the imatrix GGUF to write
    samples: int = 256  # task samples whose FFN inputs are accumulated
    seed: int = 7  # dataset seed of those samples


@dataclass(frozen=True)
class EvalOptions:
    model: str  # the GGUF to evaluate (base, SeedΔ or quantized)
    reference: str | None = None  # base GGUF for kl_to_reference
    json: str | None = None  # write the report here (None: stdout)
    samples: int = 400  # held-out samples (the fork's 400)
    seed: int = 1  # dataset seed (the training seed)
    threads: int = 2  # torch CPU threads (and llama.cpp's with --text)
    records: bool = False  # include per-sample predictions
    text: bool = False  # exact match through llama.cpp text prompts (as llama-cli runs them), not PyTorch


@dataclass(frozen=True)
class ScanOptions:
    model: str  # base llama GGUF (the tiny model)
    out: str  # output directory (scan.json, fragile_layers.md, scan.png, policy.recommended.json)
    threads: int = 2  # torch CPU threads
    quiet: bool = False  # no progress bar


@dataclass(frozen=True)
class BaselinesOptions:
    model: str  # base llama GGUF (the tiny model)
    out: str  # output directory (baselines.json/.md, quality_vs_bytes.png)
    densities: tuple[float, ...] = (0.0625, 0.125, 0.25)  # kept fraction of each row's inputs
    samples: int = 200  # held-out samples per method
    calib_samples: int = 200  # task samples for the refit's calibration activations
    llamacpp_samples: int = 40  # prompts checked in llama.cpp (0 = skip)
    seed: int = 1  # dataset seed
    threads: int = 2  # torch CPU threads
    quiet: bool = False  # no progress bar


@dataclass(frozen=True)
class QuantizeOptions:
    model: str  # the GGUF to quantize
    out: str  # the quantized GGUF to write
    type: str = "q8_0"  # llama.cpp quantization (q8_0 | q4_0)
    threads: int = 2  # llama.cpp threads


@dataclass(frozen=True)
class BenchOptions:
    out: str  # JSON output
    n_in: int = 2048  # columns of the benchmarked matrix
    n_out: int = 5632  # rows of the benchmarked matrix
    repeats: int = 20  # timed repeats (medians are reported)
    threads: int = 2  # torch CPU threads
    device: str = (
        "auto"  # where the tiny model's training step is measured (the SeedΔ matrices stay on the CPU)
    )
    compile: bool = False  # torch.compile the tiny model before timing its step
