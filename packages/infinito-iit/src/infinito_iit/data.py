"""Corpora, tokenizers and non-overlapping next-token chunks.

Sources (``--data``):
* nothing / ``default``: the embedded corpus (``default_corpus.txt``), split contiguously 90/10;
* ``wikitext-2-raw-v1`` (or ``wikitext-103-raw-v1``): Hugging Face ``datasets`` (``Salesforce/wikitext``);
* a folder with the official WikiText file names (``wiki.{train,valid,test}.raw`` or ``.tokens``)
  or ``train.txt``/``valid.txt``[/``test.txt``];
* any UTF-8 text file (a BOM is stripped), split contiguously 90/10 before chunking.

Tokenizers: our own byte-level BPE trained on the train split (``lm_shared``, always available)
or GPT-2's BPE through ``transformers`` when it is cached or downloadable.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch

from lm_shared.data import contiguous_split, sliding_windows
from lm_shared.tokenization import BPETokenizer, TokenizerError, train_bpe

from .errors import InfinitoError

WIKITEXT_CONFIGS = ("wikitext-2-raw-v1", "wikitext-2-v1", "wikitext-103-raw-v1", "wikitext-103-v1")
OFFICIAL_NAMES = (
    ("wiki.train.raw", "wiki.valid.raw", "wiki.test.raw"),
    ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
    ("train.txt", "valid.txt", "test.txt"),
)
EOS = "<|endoftext|>"


@dataclass
class Corpus:
    name: str  # short name used in reports ("wikitext-2-raw-v1", "input.txt", "default")
    source: str  # where it came from, for the run's config
    train: str
    valid: str
    test: str | None = None

    @property
    def is_wikitext(self) -> bool:
        return "wikitext" in self.name.lower() or "wiki." in self.source


def _read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8-sig")  # Don Quijote ships with a BOM
    except UnicodeDecodeError as exc:
        raise InfinitoError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise InfinitoError(f"{path}: cannot read ({exc.strerror})") from None
    return text


def _require_text(text: str, where: str) -> str:
    if not text.strip():
        raise InfinitoError(f"{where}: corpus is empty (no non-whitespace text)")
    return text


def split_text(text: str, valid_fraction: float = 0.1) -> tuple[str, str]:
    """Contiguous split at a line boundary near ``1 - valid_fraction`` (no shuffling)."""
    train, _ = contiguous_split(text, (1 - valid_fraction, valid_fraction))
    cut = text.rfind("\n", 0, len(train))
    cut = cut + 1 if cut > len(train) // 2 else len(train)
    return text[:cut], text[cut:]


def default_corpus_text() -> str:
    return resources.files("infinito_iit").joinpath("default_corpus.txt").read_text(encoding="utf-8")


def load_wikitext(config: str = "wikitext-2-raw-v1") -> Corpus:
    """WikiText through Hugging Face ``datasets`` (needs the network once, then its cache)."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise InfinitoError(f"the `datasets` package is needed for {config}: {exc}") from None
    try:
        ds = datasets.load_dataset("Salesforce/wikitext", config)
    except Exception as exc:  # offline, hub down, cache missing: all the same to the user
        raise InfinitoError(
            f"could not load {config} through Hugging Face datasets ({type(exc).__name__}: {exc}). "
            "If you are offline, download it once with network access (it is cached afterwards), or "
            "pass --data DIR with wiki.train.raw, wiki.valid.raw and wiki.test.raw"
        ) from None
    parts = {split: "".join(ds[split]["text"]) for split in ("train", "validation", "test")}
    return Corpus(
        config, f"hf:Salesforce/wikitext/{config}", parts["train"], parts["validation"], parts["test"]
    )


def load_corpus(spec: str | os.PathLike[str] | None, *, valid_fraction: float = 0.1) -> Corpus:
    """Load a corpus from ``spec`` (see the module docstring); raises :class:`InfinitoError`."""
    if spec is None or str(spec) == "default":
        train, valid = split_text(
            _require_text(default_corpus_text(), "embedded default corpus"), valid_fraction
        )
        return Corpus("default", "embedded:default_corpus.txt", train, valid)
    if str(spec) in WIKITEXT_CONFIGS:
        return load_wikitext(str(spec))
    path = Path(spec)
    if path.is_dir():
        for names in OFFICIAL_NAMES:
            if (path / names[0]).is_file() and (path / names[1]).is_file():
                train = _require_text(_read_text(path / names[0]), str(path / names[0]))
                valid = _require_text(_read_text(path / names[1]), str(path / names[1]))
                test = _read_text(path / names[2]) if (path / names[2]).is_file() else None
                name = f"wikitext ({path.name})" if names[0].startswith("wiki.") else path.name
                return Corpus(name, str(path / names[0]), train, valid, test)
        expected = "; ".join(f"{a} + {b}" for a, b, _ in OFFICIAL_NAMES)
        raise InfinitoError(f"{path}: folder has no train/valid pair; expected one of: {expected}")
    if path.is_file():
        text = _require_text(_read_text(path), str(path))
        train, valid = split_text(text, valid_fraction)
        if not train.strip() or not valid.strip():
            raise InfinitoError(f"{path}: too short to split into train and validation text")
        return Corpus(path.name, str(path), train, valid)
    raise InfinitoError(
        f"{spec}: no such file or folder (expected a text file, a WikiText folder, "
        f"'default', or one of {', '.join(WIKITEXT_CONFIGS)})"
    )


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------


class TextTokenizer(Protocol):
    name: str
    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def byte_lengths(self) -> np.ndarray: ...
    def save(self, directory: Path) -> None: ...


def _chunks_of_lines(text: str, max_chars: int = 1 << 16) -> list[str]:
    """Cut text at line ends into pieces of about ``max_chars`` for batched encoding."""
    pieces, start = [], 0
    while start < len(text):
        end = text.find("\n", start + max_chars)
        end = len(text) if end < 0 else end + 1
        pieces.append(text[start:end])
        start = end
    return pieces


class OwnBPE:
    """``lm_shared`` byte-level BPE trained on the training split."""

    name = "bpe"

    def __init__(self, tokenizer: BPETokenizer) -> None:
        self.tok = tokenizer
        self.vocab_size = tokenizer.vocab_size
        eos = tokenizer.token_to_id(EOS)
        self.eos_id = 0 if eos is None else eos

    @classmethod
    def train(cls, text: str, vocab_size: int) -> OwnBPE:
        try:
            return cls(train_bpe(text.splitlines(keepends=True), vocab_size, special_tokens=[EOS]))
        except TokenizerError as exc:
            raise InfinitoError(f"tokenizer: {exc}") from None

    def encode(self, text: str) -> list[int]:
        return [i for piece in self.tok.encode_batch(_chunks_of_lines(text)) for i in piece]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def byte_lengths(self) -> np.ndarray:
        specials = set(self.tok.special_tokens)
        return np.array([0 if t in specials else len(t) for t in self.tok.tokens_in_id_order()])

    def save(self, directory: Path) -> None:
        self.tok.save(directory / "tokenizer.json")
        (directory / "tokenizer_kind.json").write_text(json.dumps({"kind": self.name}) + "\n")


class GPT2BPE:
    """GPT-2's byte-level BPE via ``transformers`` (the original's tokenizer)."""

    name = "gpt2"

    def __init__(self, source: str = "gpt2") -> None:
        try:
            from transformers import AutoTokenizer

            self.tok = AutoTokenizer.from_pretrained(source)
        except Exception as exc:
            raise InfinitoError(
                f"GPT-2 tokenizer {source!r} is not available ({type(exc).__name__}: {exc}); it needs "
                "network access once (then the Hugging Face cache), or use --tokenizer bpe"
            ) from None
        self.vocab_size = len(self.tok)
        self.eos_id = int(self.tok.eos_token_id)

    def encode(self, text: str) -> list[int]:
        return [i for piece in self.tok(_chunks_of_lines(text))["input_ids"] for i in piece]

    def decode(self, ids: list[int]) -> str:
        # transformers annotates decode as ``str | list[str]`` (batched input); flat ids give a str.
        return cast(str, self.tok.decode(ids, skip_special_tokens=True))

    def byte_lengths(self) -> np.ndarray:
        tokens = self.tok.convert_ids_to_tokens(list(range(self.vocab_size)))
        special = set(self.tok.all_special_tokens)
        return np.array([0 if t in special else len(t) for t in tokens])

    def save(self, directory: Path) -> None:
        self.tok.save_pretrained(directory / "gpt2_tokenizer")
        (directory / "tokenizer_kind.json").write_text(json.dumps({"kind": self.name}) + "\n")


def build_tokenizer(kind: str, train_text: str, vocab_size: int) -> TextTokenizer:
    if kind == "bpe":
        return OwnBPE.train(train_text, vocab_size)
    if kind == "gpt2":
        return GPT2BPE()
    raise InfinitoError(f"--tokenizer {kind!r}: expected 'bpe' or 'gpt2'")


def load_tokenizer(directory: Path) -> TextTokenizer:
    kind_file = directory / "tokenizer_kind.json"
    if not kind_file.is_file():
        raise InfinitoError(f"{directory}: no tokenizer_kind.json (not a run directory?)")
    kind = json.loads(kind_file.read_text())["kind"]
    if kind == "bpe":
        return OwnBPE(BPETokenizer.load(directory / "tokenizer.json"))
    return GPT2BPE(str(directory / "gpt2_tokenizer"))


# --------------------------------------------------------------------------------------------
# Chunks
# --------------------------------------------------------------------------------------------


@dataclass
class TokenSplit:
    """One split as non-overlapping chunks: each token (after the first) is predicted exactly once."""

    inputs: torch.Tensor  # [N, seq_len]
    labels: torch.Tensor  # [N, seq_len], -100 on padding
    n_bytes: int  # UTF-8 bytes of the predicted tokens
    n_words: int  # whitespace-separated words of the split's text
    n_tokens: int  # tokens in the split

    def __len__(self) -> int:
        return self.inputs.shape[0]


def make_split(
    ids: list[int], seq_len: int, byte_lengths: np.ndarray, text: str, *, keep_tail: bool, what: str
) -> TokenSplit:
    """Non-overlapping windows of ``seq_len + 1`` tokens, stride ``seq_len``, shifted into input/label.

    ``keep_tail`` pads the last partial window (labels -100) so evaluation covers every token.
    """
    if len(ids) < seq_len + 1 and not (keep_tail and len(ids) >= 2):
        raise InfinitoError(
            f"{what}: {len(ids)} tokens, fewer than one window of seq_len + 1 = {seq_len + 1}; "
            "use more text or a smaller --seq-len"
        )
    tensor = torch.tensor(ids, dtype=torch.long)
    n_full = (len(ids) - 1) // seq_len
    windows = sliding_windows(tensor, seq_len + 1, seq_len) if n_full else tensor.new_zeros(0, seq_len + 1)
    inputs, labels = windows[:, :-1], windows[:, 1:]
    covered = n_full * seq_len + 1
    if keep_tail and covered < len(ids):
        rest = tensor[covered - 1 :]
        pad_in = torch.zeros(seq_len, dtype=torch.long)
        pad_lab = torch.full((seq_len,), -100, dtype=torch.long)
        pad_in[: len(rest) - 1] = rest[:-1]
        pad_lab[: len(rest) - 1] = rest[1:]
        inputs = torch.cat([inputs, pad_in[None]])
        labels = torch.cat([labels, pad_lab[None]])
    predicted = labels[labels >= 0].numpy()
    return TokenSplit(
        inputs=inputs.contiguous(),
        labels=labels.contiguous(),
        n_bytes=int(byte_lengths[predicted].sum()),
        n_words=len(text.split()),
        n_tokens=len(ids),
    )


@dataclass
class PreparedData:
    corpus: Corpus
    tokenizer: TextTokenizer
    train: TokenSplit
    valid: TokenSplit

    def summary(self) -> dict[str, Any]:
        return {
            "corpus": self.corpus.name,
            "source": self.corpus.source,
            "tokenizer": self.tokenizer.name,
            "vocab_size": self.tokenizer.vocab_size,
            "train_tokens": self.train.n_tokens,
            "valid_tokens": self.valid.n_tokens,
            "train_chunks": len(self.train),
            "valid_chunks": len(self.valid),
            "valid_bytes": self.valid.n_bytes,
            "valid_words": self.valid.n_words,
        }


def prepare_data(
    corpus: Corpus,
    seq_len: int,
    *,
    tokenizer: TextTokenizer | None = None,
    kind: str = "bpe",
    vocab_size: int = 2048,
) -> PreparedData:
    tok = tokenizer or build_tokenizer(kind, corpus.train, vocab_size)
    lengths = tok.byte_lengths()
    train = make_split(
        tok.encode(corpus.train), seq_len, lengths, corpus.train, keep_tail=False, what="train split"
    )
    valid = make_split(
        tok.encode(corpus.valid), seq_len, lengths, corpus.valid, keep_tail=True, what="valid split"
    )
    return PreparedData(corpus, tok, train, valid)


def leakage_warning(corpus: Corpus, metrics: dict[str, float]) -> str | None:
    """The original's lesson: a WikiText-2 perplexity under 20 from a small model means a bug (leakage)."""
    if not corpus.is_wikitext:
        return None
    low = {k: v for k, v in metrics.items() if k in ("perplexity", "word_perplexity") and v < 20}
    if not low:
        return None
    shown = ", ".join(f"{k}={v:.2f}" for k, v in low.items())
    return (
        f"WARNING: WikiText-2 validation {shown} is below 20. Small models trained from scratch land far "
        "above that (GPT-2 1.5B zero-shot is ~18 word-level); check for label leakage (no shift, "
        "overlapping train/valid text, a non-causal mask) before trusting this number."
    )
