"""The settings of every ``nanologic`` command, without torch: the CLI is made from these dataclasses.

:class:`TrainConfig` (the trainer's hyperparameters, saved as ``train_config.json``),
:class:`TrainInputs` (the preset, the data, the tokenizer, the machine: :func:`nanologic.runner.train_run`'s
arguments) and :class:`TrainOutput` (the run folder) give ``nanologic train`` its flags through
:mod:`lm_shared.config_cli`: each field's comment is its ``--help``, each default exists only here.
Defaults that depend on the model preset (epochs, learning rate) are in :data:`PRESET_TRAINING`;
``TrainConfig`` leaves them at None and :meth:`TrainConfig.for_preset` fills them in, for the CLI
and the Python API alike.

The data stages' settings (:class:`GenerateConfig`, :class:`CleanConfig`, :class:`AugmentConfig`,
:class:`PreprocessConfig`, gathered in :class:`DatasetConfig`) are both the stage subcommands'
flags and what ``train`` builds its embedded dataset with, through the one driver in
:mod:`nanologic.stages`. The other commands' options follow (:class:`EvaluateOptions` …).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from lm_shared.runtime import COMPILE_MODES, compile_mode
from nanologic.errors import NanologicError

# The embedded default dataset: what `nanologic train` generates when no --data is given.
DEFAULT_N_GENERATE = 40_000  # raw generated sentences
DEFAULT_MAX_PER_COMPLEXITY = 8_000  # source sentences kept per complexity level
DEFAULT_VOCAB_SIZE = 8000  # BPE vocabulary (an upper bound)
# share of the generated sentences with an opening condition written without its comma
DEFAULT_COMMA_LESS_SHARE = 0.3

# Training defaults that depend on the model preset: what TrainConfig's None fields become.
PRESET_TRAINING: dict[str, dict[str, Any]] = {
    # 6e-3 beat 3e-3 on both seeds measured (2026-12-05, docs/measurements.md: validation loss
    # 0.180 vs 0.198 and 0.190 vs 0.215); 1.5e-3 and 1e-2 were worse at seed 0.
    "cpu": {"max_epochs": 2, "lr": 6e-3},
    "cpu-export": {"max_epochs": 2, "lr": 3e-3},
    "tiny": {"max_epochs": 1, "lr": 3e-3},
    "base": {"max_epochs": 20, "lr": 1e-3},
    "base-export": {"max_epochs": 20, "lr": 1e-3},
    "base-full": {"max_epochs": 20, "lr": 1e-3},
}
PRESET_NAMES = tuple(PRESET_TRAINING)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32  # examples per batch and device (dynamic padding), or rows (packing)
    lr: float | None = None  # peak learning rate (None: the preset's, PRESET_TRAINING)
    weight_decay: float = 0.1  # decoupled weight decay, on 2-D weights only (not embeddings, norms, scalars)
    warmup_steps: int = 100  # linear learning-rate warmup steps (schedule-free and cosine alike)
    max_epochs: int | None = None  # passes over the training set (None: the preset's, PRESET_TRAINING)
    max_steps: int = -1  # stop after this many optimizer steps (-1: the epochs decide)
    optimizer: str = "schedulefree"  # schedulefree (AdamWScheduleFree) or adamw (with a cosine schedule)
    betas: tuple[float, float] = (0.9, 0.98)  # Adam betas
    label_smoothing: float = 0.0  # label smoothing of the loss, in [0, 1)
    grad_clip: float = 1.0  # gradient-norm clipping threshold (done by the gradient-health callback)
    grad_noise: float = 0.0  # η of annealed gradient noise N(0, η/(1+t)^γ) (0 = off)
    grad_noise_gamma: float = 0.55  # γ of the gradient-noise schedule
    ema_decay: float = 0.0  # EMA decay of the evaluation weights (0 = off; redundant with schedule-free)
    accumulate_grad_batches: int = 1  # gradient accumulation steps
    loss_on: str = "output"  # tokens the loss is taken on: output (after <|output|>) or all
    packing: bool = False  # pack sequences into rows with document masks instead of padding
    pack_len: int = 256  # row length when packing
    curriculum: bool = True  # first epoch easy-to-hard (simple -> advanced), then shuffled
    cot_epochs: int = 0  # chain-of-thought phase-1 epochs (with the thought) before phase 2
    # validate every this fraction of an epoch (or, above 1, every this many steps)
    val_check_interval: float = 1.0
    precision: str = "auto"  # auto, 32-true, bf16-mixed, 16-mixed (Lightning precision strings)
    num_workers: int = 0  # DataLoader workers
    seed: int = 0  # random seed (data, initialisation, order)
    # torch.compile the model: auto = where Inductor finds a C++ compiler (Triton on CUDA) and the run
    # has >= 1,000 steps | on (--compile alone) | off; checkpoints are the same either way
    compile: str = "auto"
    # also write checkpoints/<phase>/last.ckpt every N optimizer steps (0 = at validation)
    checkpoint_every_n_steps: int = 0
    # devices per node: a count, 'auto', or a list like 0,1 (the batch size is per device)
    devices: int | str = 1
    num_nodes: int = 1  # machines taking part (with torchrun or SLURM)
    strategy: str = "auto"  # Lightning multi-device strategy: auto, ddp or fsdp
    grad_ckpt: bool = False  # gradient checkpointing per block (less memory, slower steps)
    debug: bool = False  # autograd anomaly detection

    def __post_init__(self) -> None:
        """Check every field before any work starts; raises :class:`TrainConfigError` naming it."""
        object.__setattr__(self, "compile", compile_mode(self.compile))
        problem = _train_config_problem(self)
        if problem is not None:
            raise TrainConfigError(problem)

    def for_preset(self, preset: str) -> TrainConfig:
        """This config with the preset's values (:data:`PRESET_TRAINING`) for the fields left at None.

        Args:
            preset: the model preset the run trains.

        Returns:
            A config with every field set (the same config when none was None).

        Raises:
            NanologicError: an unknown preset.
        """
        if preset not in PRESET_TRAINING:
            raise NanologicError(f"unknown preset {preset!r}; choose from {', '.join(PRESET_NAMES)}")
        values = dict(PRESET_TRAINING[preset])
        missing = {name: value for name, value in values.items() if getattr(self, name) is None}
        return dataclasses.replace(self, **missing) if missing else self


class ConfigError(NanologicError, ValueError):
    """A setting out of range; the message starts with the field's name (``"seed: expected ..."``),
    which the CLI replaces by the flag's."""


def options_from_flags(parser: Any, cfg: Any, cls: type) -> Any:
    """``cls`` built from a command's parsed flags (:func:`lm_shared.config_cli.instantiate`).

    Args:
        parser: the command's :class:`lm_shared.config_cli.ConfigParser`.
        cfg: its parsed namespace.
        cls: one of the dataclasses its flags were made from.

    Returns:
        The instance.

    Raises:
        NanologicError: a value out of range, the message naming the flag (``--limit: expected
            ...``), not the field.
    """
    from lm_shared.config_cli import config_fields, instantiate

    try:
        return instantiate(parser, cfg, cls)
    except ConfigError as exc:
        field, _, rest = str(exc).partition(":")
        flags = {
            f.name: f.option_strings[0] for f in config_fields(parser) if f.cls is cls and f.option_strings
        }
        raise NanologicError(f"{flags.get(field, field)}:{rest}") from None


class TrainConfigError(ConfigError):
    """A training hyperparameter out of range; the message names the field and what was expected."""


# Lightning precision strings this trainer accepts ("auto" picks one for the device).
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "64")


def _train_config_problem(tc: TrainConfig) -> str | None:
    def finite(name: str) -> bool:
        value = getattr(tc, name)
        return isinstance(value, int | float) and math.isfinite(value)

    for name in ("lr", "weight_decay", "label_smoothing", "grad_clip", "grad_noise", "grad_noise_gamma"):
        if not (name == "lr" and tc.lr is None) and not finite(name):
            return f"{name}: expected a finite number, got {getattr(tc, name)}"
    checks = [
        (tc.optimizer in ("schedulefree", "adamw"), "optimizer", "'schedulefree' or 'adamw'"),
        (tc.loss_on in ("output", "all"), "loss_on", "'output' or 'all'"),
        (tc.lr is None or tc.lr > 0, "lr", "> 0"),
        (tc.batch_size >= 1, "batch_size", "an integer >= 1"),
        (tc.accumulate_grad_batches >= 1, "accumulate_grad_batches", "an integer >= 1"),
        (tc.max_epochs is None or tc.max_epochs >= 1, "max_epochs", "an integer >= 1"),
        (tc.max_steps == -1 or tc.max_steps >= 1, "max_steps", "-1 (epochs decide) or an integer >= 1"),
        (tc.warmup_steps >= 0, "warmup_steps", ">= 0"),
        (tc.weight_decay >= 0, "weight_decay", ">= 0"),
        (0.0 <= tc.label_smoothing < 1.0, "label_smoothing", "in [0, 1)"),
        (tc.grad_clip > 0, "grad_clip", "> 0"),
        (tc.grad_noise >= 0, "grad_noise", ">= 0"),
        (0.0 <= tc.ema_decay < 1.0, "ema_decay", "in [0, 1)"),
        (all(0.0 <= b < 1.0 for b in tc.betas), "betas", "two numbers in [0, 1)"),
        (tc.pack_len >= 2, "pack_len", ">= 2"),
        (tc.cot_epochs >= 0, "cot_epochs", ">= 0"),
        (tc.val_check_interval > 0, "val_check_interval", "> 0 (a fraction of an epoch, or a step count)"),
        (tc.precision in PRECISIONS, "precision", "one of " + ", ".join(PRECISIONS)),
        (tc.num_workers >= 0, "num_workers", ">= 0"),
        (0 <= tc.seed < 2**32, "seed", "in [0, 2**32)"),
        (tc.strategy in ("auto", "ddp", "fsdp"), "strategy", "'auto', 'ddp' or 'fsdp'"),
        (tc.compile in COMPILE_MODES, "compile", "'auto', 'on' or 'off'"),
        (tc.num_nodes >= 1, "num_nodes", "an integer >= 1"),
        (tc.checkpoint_every_n_steps >= 0, "checkpoint_every_n_steps", ">= 0"),
    ]
    for ok, name, expected in checks:
        if not ok:
            return f"{name}: expected {expected}, got {getattr(tc, name)!r}"
    return None


@dataclass(frozen=True)
class TrainInputs:
    """``nanologic train``: the model preset, the data, the tokenizer, the evaluation and the machine.

    :func:`nanologic.runner.train_run`'s arguments besides the TrainConfig (``data`` is its
    ``data_dir``, ``model_config`` its ``model_overrides``), with the same defaults.
    """

    preset: str = "cpu"  # model size (cpu: the one for CPUs)
    data: Path | None = None  # directory with train/val/test.jsonl (default: generate the embedded dataset)
    n_generate: int = DEFAULT_N_GENERATE  # raw examples to generate when --data is absent
    # at most this many generated sentences per complexity level, spread over its patterns
    max_per_complexity: int = DEFAULT_MAX_PER_COMPLEXITY
    # share of the generated mathematics clauses written in symbols ("x + y = 3"), as
    # `nanologic generate --symbolic-share` (default 0: README, "Clauses in symbols")
    symbolic_share: float = 0.0
    # share of the generated sentences whose opening condition goes without its comma ("Si llueve
    # me mojo"), as `nanologic generate --comma-less-share` (0 writes every comma: README, "Data")
    comma_less_share: float = DEFAULT_COMMA_LESS_SHARE
    vocab_size: int = DEFAULT_VOCAB_SIZE  # BPE vocabulary (upper bound)
    # JSON object of model fields overriding the preset, e.g. '{"num_layers": 4}' (default: none)
    model_config: dict[str, Any] | None = None
    # half the sentences per complexity level (4,000 of 8,000) unless --max-per-complexity is
    # given, same epochs: for 2-core CPUs with slow fp32 where the default takes over 15 minutes
    # (README: time and accuracy of both; half the epochs instead left one curriculum-ordered
    # epoch and near-zero accuracy)
    quick: bool = False
    # stop training after this many minutes (a wall-clock cap: the result then depends on the machine)
    max_minutes: float | None = None
    # CPU threads (0 = auto: up to 2, leaving alone the cores other processes keep busy, where a
    # second thread would make every step several times slower)
    threads: int = 0
    # evaluate on the first N examples of the test split and of the real-sentence set (default: all)
    eval_limit: int | None = None


@dataclass(frozen=True)
class TrainOutput:
    """``nanologic train``: where the run goes and what happens to a run already there."""

    out: Path | None = None  # run directory (default: a new one under ./runs)
    # continue the interrupted run in --out (alone or `last`: from its last checkpoint; or from PATH)
    resume: str | None = None
    force: bool = False  # replace a finished run in --out (kept until the new one finishes)


# ---------------------------------------------------------------------------------------------
# the data stages (nanologic.stages runs them, for `train` and for the stage subcommands)
# ---------------------------------------------------------------------------------------------

# The augmentations nanologic.pipeline.augment knows: its four AST rewrites, then composition.
AUGMENTATION_KINDS = ("implication", "de_morgan", "double_negation", "commutativity", "composition")


def _check(ok: bool, name: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{name}: expected {expected}, got {value!r}")


@dataclass(frozen=True)
class GenerateConfig:
    """``generate``: raw Spanish examples in the original's JSON schema."""

    n: int = 8000  # raw examples to generate
    seed: int = 0  # random seed (same seed, same output)
    # share of the mathematics clauses written in symbols ("x + y = 3", "x ≠ 2"); 0.4 was measured
    # (README, "Clauses in symbols"); 0 by default, as it did not win on dev_real over two seeds
    symbolic_share: float = 0.0
    # share of the sentences with an opening condition ("Si A, B", "Aunque A, B") written without
    # the comma that ends it ("Si llueve me mojo"); 0 writes every comma (README, "Data": 0.3 won
    # on dev_real over two seeds against 0)
    comma_less_share: float = DEFAULT_COMMA_LESS_SHARE

    def __post_init__(self) -> None:
        _check(self.n >= 1, "n", "an integer >= 1", self.n)
        _check(0.0 <= self.symbolic_share <= 1.0, "symbolic_share", "a number in [0, 1]", self.symbolic_share)
        _check(
            0.0 <= self.comma_less_share <= 1.0,
            "comma_less_share",
            "a number in [0, 1]",
            self.comma_less_share,
        )


@dataclass(frozen=True)
class CleanConfig:
    """``clean``: parse, check atoms, deduplicate, subsample trivial formulas, normalise."""

    seed: int = 0  # random seed (same seed, same output)
    max_trivial_fraction: float = 0.05  # largest share of trivial formulas kept
    min_chars: int = 5  # shortest sentence kept, in characters

    def __post_init__(self) -> None:
        _check(
            0.0 <= self.max_trivial_fraction <= 1.0,
            "max_trivial_fraction",
            "a number in [0, 1]",
            self.max_trivial_fraction,
        )
        _check(self.min_chars >= 0, "min_chars", "an integer >= 0", self.min_chars)


@dataclass(frozen=True)
class VerifyConfig:
    """``verify``: the deterministic consistency check, and optionally an LLM's opinion."""

    llm: bool = False  # also ask an OpenAI-compatible chat API
    base_url: str | None = None  # API base URL (or NANOLOGIC_API_BASE)
    model: str | None = None  # model name (or NANOLOGIC_MODEL)
    api_key: str | None = None  # API key (or NANOLOGIC_API_KEY)
    cache: Path = Path("data/verify_cache.jsonl")  # JSONL cache of LLM answers (reruns cost nothing)
    retries: int = 4  # retries of a failed API request
    rpm: float = 60.0  # requests per minute
    price_in: float = 0.0  # USD per 1M prompt tokens
    price_out: float = 0.0  # USD per 1M completion tokens

    def __post_init__(self) -> None:
        _check(self.retries >= 0, "retries", "an integer >= 0", self.retries)
        _check(self.rpm > 0, "rpm", "a number > 0", self.rpm)


@dataclass(frozen=True)
class AugmentConfig:
    """``augment``: AST rewrites proven by truth table, and compositions of two examples."""

    kinds: tuple[str, ...] = AUGMENTATION_KINDS  # comma-separated rewrites to apply
    per_example: int = 1  # rewrites per example and kind
    seed: int = 0  # random seed (same seed, same output)

    def __post_init__(self) -> None:
        _check(bool(self.kinds), "kinds", "at least one of " + ",".join(AUGMENTATION_KINDS), "")
        unknown = sorted(set(self.kinds) - set(AUGMENTATION_KINDS))
        _check(not unknown, "kinds", "some of " + ",".join(AUGMENTATION_KINDS), ",".join(unknown))
        _check(self.per_example >= 1, "per_example", "an integer >= 1", self.per_example)


@dataclass(frozen=True)
class PreprocessConfig:
    """``preprocess``: balance, grouped pattern split 80/10/10, curriculum order."""

    seed: int = 0  # random seed (same seed, same output)
    # at most this many source sentences per complexity level (as `train` uses)
    max_per_complexity: int | None = DEFAULT_MAX_PER_COMPLEXITY

    def __post_init__(self) -> None:
        value = self.max_per_complexity
        _check(value is None or value >= 1, "max_per_complexity", "an integer >= 1", value)


@dataclass(frozen=True)
class DatasetConfig:
    """Every stage's settings: the embedded dataset ``train`` builds when no ``--data`` is given."""

    generate: GenerateConfig = GenerateConfig(n=DEFAULT_N_GENERATE)
    clean: CleanConfig = CleanConfig()
    verify: VerifyConfig = VerifyConfig()
    # Compositions only: the rewrites give a sentence a second, equivalent formula, and one
    # canonical target per sentence trains better than a mixture (README, "what changed").
    augment: AugmentConfig = AugmentConfig(kinds=("composition",))
    preprocess: PreprocessConfig = PreprocessConfig()

    @classmethod
    def for_training(
        cls,
        n_generate: int,
        max_per_complexity: int | None,
        seed: int,
        symbolic_share: float = 0.0,
        comma_less_share: float = DEFAULT_COMMA_LESS_SHARE,
    ) -> DatasetConfig:
        """The dataset of ``nanologic train``: ``n_generate`` sentences, one seed for every stage.

        Args:
            n_generate: raw sentences to generate.
            max_per_complexity: source sentences kept per complexity level (None: no cap).
            seed: the training seed, which every stage's random choices also use.
            symbolic_share: share of the mathematics clauses written in symbols (0 to 1).
            comma_less_share: share of the sentences with an opening condition written without
                the comma that ends it (0 to 1).

        Returns:
            The stages' settings.

        Raises:
            NanologicError: an out-of-range value, naming its field.
        """
        base = cls()
        return cls(
            generate=GenerateConfig(
                n=n_generate, seed=seed, symbolic_share=symbolic_share, comma_less_share=comma_less_share
            ),
            clean=dataclasses.replace(base.clean, seed=seed),
            verify=base.verify,
            augment=dataclasses.replace(base.augment, seed=seed),
            preprocess=PreprocessConfig(seed=seed, max_per_complexity=max_per_complexity),
        )


@dataclass(frozen=True)
class StageFiles:
    """A file stage's input and output (``nanologic clean IN --out OUT``)."""

    input: Path  # input file (JSON or JSONL in the original's schema) from the previous stage
    out: Path  # output JSON file
    force: bool = False  # overwrite an existing output


@dataclass(frozen=True)
class GenerateFiles:
    """``generate``: where the raw examples go."""

    out: Path = Path("data/raw.json")  # output JSON file
    force: bool = False  # overwrite an existing output


@dataclass(frozen=True)
class TokenizerOptions:
    """``train-tokenizer``: BPE over a processed training split."""

    data: Path  # directory with train.jsonl
    out: Path  # output directory
    vocab_size: int = DEFAULT_VOCAB_SIZE  # BPE vocabulary size (upper bound)
    force: bool = False  # overwrite an existing output


# ---------------------------------------------------------------------------------------------
# evaluation and use
# ---------------------------------------------------------------------------------------------


Decoding = Literal["grounded", "grounded-unbounded", "format", "free"]
# Decoding that reads the sentence (issue 13, part 3) is the default of every command and of
# Formalizer: on the default model it lifted dev_real grounded accuracy from 0.370 to 0.471.
DEFAULT_CONSTRAINT: Final = "grounded"
# Beams of the model's decoding (1: greedy); see nanologic.model.NanoLogic.beam_search.
DEFAULT_BEAM_SIZE: Final = 1


def decoding_constraint(decoding: Decoding, constrained: bool = False, grounded: bool = False) -> str | None:
    """The :class:`nanologic.inference.Formalizer` constraint of ``--decoding`` or its old flags
    ``--grounded`` and ``--constrained``/``--grammar`` (see :func:`check_decoding_flags`)."""
    if grounded:
        return "grounded"
    if constrained:
        return "format"
    return None if decoding == "free" else decoding


def check_decoding_flags(decoding: Decoding | None, constrained: bool, grounded: bool) -> None:
    """Raises :class:`ConfigError` when ``--decoding`` and the old flags ask for different things."""
    if grounded and constrained:
        raise ConfigError("grounded: --grounded and --constrained ask for two decodings; give --decoding")
    for flag, value, meaning in (("grounded", grounded, "grounded"), ("constrained", constrained, "format")):
        if value and decoding not in (None, meaning):
            raise ConfigError(
                f"{flag}: --{flag} means --decoding {meaning}, but --decoding {decoding} was given"
            )


@dataclass(frozen=True)
class DecodingOptions:
    """How sentences are formalised: a trained model in PyTorch (``--run``) or llama.cpp
    (``--gguf``) with its constraint, or the rule baseline (``--baseline rules``)."""

    run: Path | None = None  # a trained run directory (PyTorch)
    gguf: Path | None = None  # an exported GGUF, run in llama.cpp (llama-cpp-python)
    baseline: Literal["rules"] | None = None  # the rule-based formaliser instead of a model
    # grounded: the answer grammar, atom definitions read from the sentence, as many atoms as the
    # rule baseline reads clauses (grounded-unbounded: without that count); format: the grammar
    # only (atoms in order, formula over declared letters, parses); free: plain greedy decoding
    # (default: grounded with --run; free with --gguf, as llama.cpp's grammar sampler takes ~25 s
    # a sentence under the grounded grammar)
    decoding: Decoding | None = None
    constrained: bool = False  # same as --decoding format (earlier spelling)
    grounded: bool = False  # same as --decoding grounded (earlier spelling)
    # beam search over this many beams, keeping the best answer that breaks none of the format's
    # rules (1: greedy; PyTorch only)
    beam_size: int = DEFAULT_BEAM_SIZE

    def __post_init__(self) -> None:
        check_decoding_flags(self.decoding, self.constrained, self.grounded)
        _check(self.beam_size >= 1, "beam_size", "an integer >= 1", self.beam_size)

    @property
    def constraint(self) -> str | None:
        """``"grounded"``, ``"format"`` or None (see :class:`nanologic.inference.Formalizer`)."""
        if self.decoding is None and self.gguf is not None:
            return decoding_constraint("free", self.constrained, self.grounded)
        return decoding_constraint(self.decoding or DEFAULT_CONSTRAINT, self.constrained, self.grounded)


@dataclass(frozen=True)
class EvaluateOptions:
    """``evaluate``: a run (or the rule baseline) on a split or a real-sentence set."""

    run: Path | None = None  # trained run directory
    # JSONL split, or a real-sentence set such as data/dev_real.jsonl (default: the run's test split)
    data: Path | None = None
    baseline: Literal["rules"] | None = None  # evaluate the rule-based baseline instead of a run
    # report directory (default: DIR/eval for the run's test split, DIR/eval-<stem> otherwise,
    # then -free/-format for a non-default decoding, -as-written, and -first<N> with --limit)
    out: Path | None = None
    limit: int | None = None  # evaluate only the first N examples
    # rewrite definitions into the format's indicative with elided subjects written out
    # (--no-normalize-definitions scores the model's definitions as written)
    normalize_definitions: bool = True
    # re-decodes of an output that breaks the format's rules: two atoms defined by the same clause
    # and, under a grammar, a formula like p ∧ p, a declared letter unused, connectives other than
    # the declared ones, no end (0 = plain greedy)
    repair_tries: int = 2
    # grounded: the answer grammar, atom definitions read from the sentence; format: the grammar
    # only; free: plain greedy decoding with the repair (reports of format and free decoding go to
    # DIR/eval[-<stem>]-format or -free)
    decoding: Decoding | None = None  # (default: grounded)
    constrained: bool = False  # same as --decoding format (earlier spelling)
    grounded: bool = False  # same as --decoding grounded (earlier spelling)
    # beam search over this many beams, keeping the best answer that breaks none of the format's
    # rules (1: greedy)
    beam_size: int = DEFAULT_BEAM_SIZE

    def __post_init__(self) -> None:
        _check(self.limit is None or self.limit >= 1, "limit", "an integer >= 1", self.limit)
        _check(self.repair_tries >= 0, "repair_tries", "an integer >= 0", self.repair_tries)
        _check(self.beam_size >= 1, "beam_size", "an integer >= 1", self.beam_size)
        check_decoding_flags(self.decoding, self.constrained, self.grounded)

    @property
    def constraint(self) -> str | None:
        """``"grounded"``, ``"format"`` or None, as :attr:`DecodingOptions.constraint`."""
        return decoding_constraint(self.decoding or DEFAULT_CONSTRAINT, self.constrained, self.grounded)


@dataclass(frozen=True)
class BaselineOptions:
    """``baseline``: the rule-based formaliser, on sentences or over a file."""

    sentence: list[str] = dataclasses.field(default_factory=list)  # sentences to formalise
    data: Path | None = None  # evaluate on this JSONL (a split or data/dev_real.jsonl)
    out: Path | None = None  # report directory (default: runs/baseline-rules/eval-<stem>)
    limit: int | None = None  # evaluate only the first N examples
    # rewrite definitions as the model's are (indicative, elided subjects written out)
    normalize_definitions: bool = True

    def __post_init__(self) -> None:
        _check(self.limit is None or self.limit >= 1, "limit", "an integer >= 1", self.limit)


@dataclass(frozen=True)
class FormalizeOptions:
    """``formalize``: sentences, or a JSONL file of them, to atoms, formula and truth table."""

    sentence: list[str] = dataclasses.field(default_factory=list)  # Spanish sentence(s) to formalise
    input: Path | None = None  # JSONL with a string field 'input' per line
    output: Path | None = None  # output JSONL (with --input)
    force: bool = False  # overwrite an existing output


@dataclass(frozen=True)
class CheckOptions:
    """``check``: the validity of an argument, from its text (with a model) or from formulas."""

    text: str | None = None  # argument text: premise sentences, the last sentence is the conclusion
    premise: list[str] = dataclasses.field(default_factory=list)  # a premise formula (repeatable)
    conclusion: str | None = None  # the conclusion formula
    json: bool = False  # also print the result as JSON
    exit_code: bool = False  # exit 1 when the argument is invalid


@dataclass(frozen=True)
class ExportOptions:
    """``export-gguf``: a trained run as a llama.cpp GGUF (llama architecture) and its grammar."""

    run: Path  # trained run directory
    out: Path  # output .gguf file
    dtype: Literal["f32", "f16"] = "f32"  # weight type in the GGUF
    allow_final_softcap: bool = False  # drop the final soft-cap (greedy unchanged)
    force: bool = False  # overwrite an existing output


@dataclass(frozen=True)
class BenchOptions:
    """``bench``: throughput, padding/packing efficiency, KV-cache and llama.cpp speed."""

    out: Path = Path("bench.json")  # output JSON report
    quick: bool = False  # smaller sizes (for tests)
    threads: int = 2  # CPU threads
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where to measure (auto: CUDA when visible)
    compile: bool = False  # torch.compile both models before timing them

    def __post_init__(self) -> None:
        _check(self.threads >= 1, "threads", "an integer >= 1", self.threads)


@dataclass(frozen=True)
class TextReportOptions:
    """``text-report``: what a llama.cpp user gets from an exported model, measured on a split."""

    run: Path  # trained run directory
    gguf: Path  # the run's exported GGUF
    data: Path | None = None  # JSONL split (default: the run's test split)
    limit: int = 200  # examples of the split to measure on
    out: Path | None = None  # JSON report (default: print it)

    def __post_init__(self) -> None:
        _check(self.limit >= 1, "limit", "an integer >= 1", self.limit)


@dataclass(frozen=True)
class ServeOptions:
    """``serve``: the web app (formalise, truth tables, arguments, JSONL batches)."""

    run: Path | None = None  # trained run directory (default: the newest under --runs-dir)
    gguf: Path | None = None  # a GGUF exported with export-gguf (llama.cpp backend)
    port: int = 7860  # port to listen on
    host: str = "127.0.0.1"  # address to bind (default: this machine only; see the README)
    auth_file: Path | None = None  # file of 'user:password' lines: the page asks to log in
    runs_dir: Path = Path("runs")  # where to look for the newest run
