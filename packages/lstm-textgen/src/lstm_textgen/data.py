"""From a corpus to tf.data pipelines: clean, split contiguously, tokenise, window, batch.

The split happens on the cleaned text, before tokenisation and windowing: the tokeniser is fitted
on the training part only, and each part is windowed on its own, so no window (and, with 50%
overlap, no half-window) of validation or test text is ever seen in training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lstm_textgen.errors import TextgenError
from lstm_textgen.text import CleaningOptions, clean_text, read_corpus
from lstm_textgen.tokenization import END_ID, START_ID, TOKENIZER_KINDS, TextTokenizer, fit_tokenizer

SPLIT_NAMES = ("train", "validation", "test")


@dataclass(frozen=True)
class DataConfig:
    """Where the text comes from and how it becomes batches of windows."""

    data: str | None = None  # UTF-8 file or folder of files; None = the embedded sonnets
    tokenizer: str = "char"  # word | bpe | char; char suits the small embedded corpus best
    vocab_size: int = 10_004  # cap including the 4 specials: the original's 10,000 words + 4
    lowercase: bool = False  # fold case before tokenising
    keep_punctuation: bool = True  # False turns punctuation into spaces
    seq_len: int = 100  # tokens of context per training window (the original's 100)
    stride: int | None = (
        None  # start-to-start distance of training windows; None = seq_len // 2 (50% overlap)
    )
    split: tuple[float, ...] = (0.8, 0.1, 0.1)  # contiguous train/validation[/test] fractions
    batch_size: int = 32  # the original's batch (fits an 8 GB card with a 10k vocabulary)
    shuffle_buffer: int = 10_000  # windows held by the shuffle buffer (all of them for small corpora)

    def __post_init__(self) -> None:
        object.__setattr__(self, "split", tuple(float(f) for f in self.split))
        if self.tokenizer not in TOKENIZER_KINDS:
            raise TextgenError(
                f"tokenizer must be one of {', '.join(TOKENIZER_KINDS)}, got {self.tokenizer!r}"
            )
        if self.seq_len < 1:
            raise TextgenError(f"seq_len must be >= 1, got {self.seq_len}")
        stride = max(1, self.seq_len // 2) if self.stride is None else self.stride
        object.__setattr__(self, "stride", stride)
        if not 1 <= stride <= self.seq_len:
            raise TextgenError(f"stride must be in [1, seq_len={self.seq_len}], got {stride}")
        if self.batch_size < 1:
            raise TextgenError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.shuffle_buffer < 1:
            raise TextgenError(f"shuffle_buffer must be >= 1, got {self.shuffle_buffer}")
        if len(self.split) not in (2, 3) or any(f <= 0 for f in self.split):
            raise TextgenError(f"split must be 2 or 3 positive fractions, got {self.split}")
        if not math.isclose(sum(self.split), 1.0, abs_tol=1e-6):
            raise TextgenError(f"split fractions must sum to 1, got {self.split} (sum {sum(self.split)})")

    @property
    def cleaning(self) -> CleaningOptions:
        return CleaningOptions(lowercase=self.lowercase, keep_punctuation=self.keep_punctuation)


@dataclass
class Split:
    """One contiguous part of the corpus as a token stream ``<START> text <END>``."""

    name: str
    text: str
    ids: np.ndarray  # int32 token ids
    byte_lengths: np.ndarray = field(repr=False)  # int64 UTF-8 bytes each token stands for

    @property
    def n_tokens(self) -> int:
        return int(self.ids.size)


def split_text(text: str, fractions: tuple[float, ...]) -> list[str]:
    """Cut ``text`` into contiguous parts by character fractions, each cut moved to a line break.

    Cutting at line breaks keeps words whole; when there is no line break after a cut point the
    cut stays where the fraction puts it.
    """
    cuts = [0]
    total = 0.0
    for fraction in fractions[:-1]:
        total += fraction
        position = max(int(round(total * len(text))), cuts[-1])
        newline = text.find("\n", position)
        cuts.append(newline + 1 if newline != -1 else position)
    cuts.append(len(text))
    return [text[a:b].strip("\n") for a, b in zip(cuts, cuts[1:])]


def encode_split(name: str, text: str, tokenizer: TextTokenizer) -> Split:
    ids, lengths = tokenizer.encode_with_byte_lengths(text)
    ids = np.concatenate([[START_ID], ids, [END_ID]]).astype(np.int32)
    lengths = np.concatenate([[0], lengths, [0]]).astype(np.int64)
    return Split(name, text, ids, lengths)


def load_text(config: DataConfig) -> tuple[str, str]:
    """Read and clean the configured corpus; returns ``(clean_text, source_description)``."""
    raw, source = read_corpus(config.data)
    text = clean_text(raw, config.cleaning)
    if not text.strip():
        raise TextgenError(f"{source}: no text left after cleaning")
    return text, source


def prepare_splits(
    config: DataConfig, tokenizer_dir: Path, tokenizer: TextTokenizer | None = None
) -> tuple[TextTokenizer, dict[str, Split], str]:
    """Read, clean and split the corpus; fit (or reuse) the tokeniser on train; encode each split.

    With two split fractions (e.g. nanoGPT's 90/10) the held-out part is both validation and test.
    Returns ``(tokenizer, {"train", "validation", "test"} -> Split, source_description)``.
    """
    text, source = load_text(config)
    parts = split_text(text, config.split)
    for name, part in zip(SPLIT_NAMES, parts):
        if not part.strip():
            raise TextgenError(
                f"{source}: the {name} split ({len(part)} characters) is empty; "
                f"the corpus ({len(text)} characters) is too small for split {config.split}"
            )
    if tokenizer is None:
        tokenizer = fit_tokenizer(config.tokenizer, parts[0], config.vocab_size, tokenizer_dir)
    splits = {name: encode_split(name, part, tokenizer) for name, part in zip(SPLIT_NAMES, parts)}
    if "test" not in splits:
        splits["test"] = splits["validation"]
    return tokenizer, splits, source


def window_starts(n_tokens: int, seq_len: int, stride: int) -> np.ndarray:
    """Start offsets of every full window of ``seq_len + 1`` tokens (inputs plus shifted targets)."""
    last = n_tokens - (seq_len + 1)
    return np.arange(0, last + 1, stride, dtype=np.int64) if last >= 0 else np.zeros(0, np.int64)


def make_dataset(
    ids: np.ndarray,
    *,
    seq_len: int,
    stride: int,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    shuffle_buffer: int = 10_000,
    name: str = "split",
):
    """A ``tf.data`` pipeline of ``(inputs[B, seq_len], targets[B, seq_len])`` windows of one split.

    window -> (x, y) -> cache -> shuffle -> batch -> prefetch(AUTOTUNE). Only the windows are
    cached (a few MB even for a million tokens), and the shuffle reshuffles every epoch from the
    given seed, so the same seed gives the same batches.
    """
    import tensorflow as tf

    n_windows = window_starts(len(ids), seq_len, stride).size
    if n_windows == 0:
        raise TextgenError(
            f"the {name} split has {len(ids)} tokens, fewer than one window of seq_len+1={seq_len + 1}; "
            "use more text, a smaller --seq-len, or different --split fractions"
        )
    dataset = (
        tf.data.Dataset.from_tensor_slices(np.asarray(ids, dtype=np.int32))
        .window(seq_len + 1, shift=stride, drop_remainder=True)
        .flat_map(lambda window: window.batch(seq_len + 1))
        .apply(tf.data.experimental.assert_cardinality(n_windows))  # flat_map hides the count
        .map(lambda w: (w[:-1], w[1:]), num_parallel_calls=tf.data.AUTOTUNE)
        .cache()
    )
    if shuffle:
        dataset = dataset.shuffle(min(shuffle_buffer, n_windows), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def train_and_eval_datasets(config: DataConfig, splits: dict[str, Split], seed: int):
    """Training windows overlap by ``stride``; validation windows never overlap, so every
    validation token is scored exactly once and validation perplexity is an honest number."""
    assert config.stride is not None  # DataConfig.__post_init__ resolves None to seq_len // 2
    train = make_dataset(
        splits["train"].ids,
        seq_len=config.seq_len,
        stride=config.stride,
        batch_size=config.batch_size,
        shuffle=True,
        seed=seed,
        shuffle_buffer=config.shuffle_buffer,
        name="train",
    )
    validation = make_dataset(
        splits["validation"].ids,
        seq_len=config.seq_len,
        stride=config.seq_len,
        batch_size=config.batch_size,
        name="validation",
    )
    return train, validation
