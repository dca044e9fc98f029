"""The settings of every ``lstm-textgen`` command, one dataclass per group; the CLI is made from them.

Each field's comment is its flag's ``--help`` and each default exists here only
(:mod:`lm_shared.config_cli` turns the fields into flags; ``lstm_textgen.cli`` says where a flag
keeps an older name). No TensorFlow here: ``--help`` and a bad flag are answered at once, and the
configs are checked before TensorFlow starts. ``ModelConfig``, ``TrainConfig`` and
``SamplingConfig`` are also importable from ``model``, ``train`` and ``generate``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from lstm_textgen import runtime
from lstm_textgen.data import DataConfig
from lstm_textgen.errors import TextgenError
from lstm_textgen.tokenization import SPECIAL_TOKENS

JIT_COMPILE_MODES = ("auto", "on", "off")


ARCHITECTURES = ("lstm", "transformer")


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of both architectures; the defaults are the original's."""

    architecture: str = "lstm"  # lstm | transformer
    vocab_size: int = 0  # specials included; 0 = take it from the tokenizer when training
    embedding_dim: int = 128  # LSTM token embedding width
    lstm_units: int = 256  # units per LSTM layer
    lstm_layers: int = 2  # stacked LSTM layers, each followed by Dropout
    dropout: float = 0.3  # Dropout after each LSTM layer
    num_heads: int = 4  # Transformer attention heads
    head_dim: int = 32  # width per head; model width = num_heads * head_dim = 128
    ffn_dim: int = 512  # Transformer feed-forward width
    transformer_layers: int = 1  # decoder blocks (the original sketches one)
    transformer_dropout: float = 0.1  # dropout inside the decoder blocks
    max_len: int = 100  # Transformer context (position table); generation slides a window of it

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise TextgenError(f"model must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}")
        if self.vocab_size != 0 and self.vocab_size <= len(SPECIAL_TOKENS):
            raise TextgenError(
                f"vocab_size={self.vocab_size} must exceed the {len(SPECIAL_TOKENS)} special tokens"
            )
        for name in (
            "embedding_dim",
            "lstm_units",
            "lstm_layers",
            "num_heads",
            "head_dim",
            "ffn_dim",
            "transformer_layers",
            "max_len",
        ):
            if getattr(self, name) < 1:
                raise TextgenError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("dropout", "transformer_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise TextgenError(f"{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the defaults are the original's."""

    epochs: int = 10  # maximum epochs (EarlyStopping usually ends sooner on small corpora)
    learning_rate: float = 1e-3  # Adam learning rate
    clipnorm: float = 1.0  # per-variable gradient norm clip, against exploding LSTM gradients
    label_smoothing: float = 0.1  # target smoothing of the loss (perplexity stays unsmoothed)
    grad_accum_steps: int = 1  # >1 accumulates gradients over this many batches (small GPUs)
    early_stopping_patience: int = 3  # epochs without a better validation perplexity
    reduce_lr_patience: int = 1  # epochs on a plateau before the learning rate is halved
    reduce_lr_factor: float = 0.5  # learning-rate multiplier on a plateau
    min_learning_rate: float = 1e-5  # floor for ReduceLROnPlateau
    steps_per_epoch: int | None = None  # cap batches per epoch (quick runs); None = whole split
    seed: int = 0  # one seed for data order, initialisation and dropout
    precision: str = "auto"  # auto (mixed_float16 on fast-fp16 GPUs, else float32) or a Keras policy
    jit_compile: str = "auto"  # auto | on | off; auto lets Keras decide (XLA is off for cuDNN LSTMs)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise TextgenError(f"epochs must be >= 1, got {self.epochs}")
        # `not x > 0` (not `x <= 0`): a NaN compares False both ways and must be refused too.
        for flag, value in (
            ("--lr (learning_rate)", self.learning_rate),
            ("clipnorm", self.clipnorm),
            ("reduce_lr_factor", self.reduce_lr_factor),
            ("min_learning_rate", self.min_learning_rate),
        ):
            if not (math.isfinite(value) and value > 0):
                raise TextgenError(f"{flag} must be a finite number > 0, got {value}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise TextgenError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.grad_accum_steps < 1:
            raise TextgenError(f"grad_accum_steps must be >= 1, got {self.grad_accum_steps}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise TextgenError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        if self.jit_compile not in JIT_COMPILE_MODES:
            raise TextgenError(f"jit_compile must be auto, on or off, got {self.jit_compile!r}")
        if self.precision not in runtime.PRECISIONS:
            raise TextgenError(
                f"precision must be one of {', '.join(runtime.PRECISIONS)}, got {self.precision!r}"
            )


STRATEGIES = ("greedy", "temperature", "top_k", "top_p")


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is chosen."""

    strategy: str = "top_k"  # greedy | temperature (plain sampling) | top_k | top_p
    temperature: float = 1.0  # divides the logits before softmax; ignored by greedy
    top_k: int = 40  # keep the k most likely tokens (top_k); optional cap for top_p (0 = none)
    top_p: float = 0.9  # keep the smallest set with this much probability mass (top_p)
    seed: int | None = 0  # sampling seed; same seed, same text

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise TextgenError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.temperature <= 0:
            raise TextgenError(
                f"temperature must be > 0 (use --strategy greedy for argmax), got {self.temperature}"
            )
        if self.top_k < 0:
            raise TextgenError(f"top_k must be >= 0, got {self.top_k}")
        if self.strategy == "top_k" and self.top_k < 1:
            raise TextgenError("top_k sampling needs top_k >= 1")
        if not 0.0 < self.top_p <= 1.0:
            raise TextgenError(f"top_p must be in (0, 1], got {self.top_p}")


# ------------------------------------------------------------------ the commands' other options


@dataclass(frozen=True)
class RunOptions:
    """``train``: where the run goes and what happens to a run already there."""

    out: Path | None = None  # run folder (default: runs/lstm-textgen/<UTC time>)
    overwrite: bool = False  # replace a finished run in --out (the old one stays until the new one ends)
    resume: bool = False  # continue the interrupted run in --out from its backup/


@dataclass(frozen=True)
class SampleOptions:
    """``sample``: which model, which prompt, how much text."""

    model: Path  # run folder written by `train` (or one of its checkpoints/epoch_NNN.keras)
    prompt: str = ""  # text to continue (empty: start of a text)
    max_new_tokens: int = 200  # length limit in tokens
    stop: list[str] | None = None  # stop at this token (repeatable, one token each; default: <END>)
    num_samples: int = 1  # continuations of the same prompt


@dataclass(frozen=True)
class EvaluateOptions:
    """``evaluate``: the run to score and the report to write."""

    model: Path  # run folder written by `train`
    out: Path  # JSON file to write
    data: str | None = None  # evaluate on this corpus's test split instead of the training one
    prompts: int = 16  # test-text prompts for BLEU and samples
    prompt_tokens: int | None = None  # prompt length (default: seq_len/2)
    new_tokens: int | None = None  # continuation length (default: by tokenizer)
    seed: int = 0  # sampling seed


@dataclass(frozen=True)
class EdaOptions:
    """``eda``: the corpus to describe and where the report goes (cleaning: ``text.CleaningOptions``)."""

    data: str | None = None  # UTF-8 text file or folder (default: embedded sonnets)
    out: Path = Path("eda")  # output folder
    top: int = 20  # n-grams listed per order


@dataclass(frozen=True)
class BenchOptions:
    """``bench``: what to time; the data and compile settings default to training's."""

    out: Path  # JSON file to write
    data: str | None = None  # corpus (default: embedded sonnets)
    tokenizer: str = DataConfig.tokenizer  # word | bpe | char
    steps: int = 20  # timed training steps per model
    new_tokens: int = 200  # tokens generated per sampling timing
    bf16: bool = True  # the CPU mixed_bfloat16 comparison
    seq_len: int = DataConfig.seq_len  # tokens per window
    batch_size: int = DataConfig.batch_size  # windows per batch
    jit_compile: str = TrainConfig.jit_compile  # XLA: auto | on | off
    rounds: int = 2  # timed runs per measure; the fastest is kept
    seed: int = 0  # one seed for data, initialisation and sampling
