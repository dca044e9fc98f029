"""Three tokenisers with one interface: words (capped vocabulary), byte-level BPE, characters.

Every tokeniser reserves the same four special tokens at ids 0..3 (``<PAD>``, ``<UNK>``,
``<START>``, ``<END>``), so the loss can ignore id 0 and sampling can stop on ``<END>`` whatever
the tokeniser. ``vocab_size`` always counts the specials: the original's "10,000 words plus specials"
is ``vocab_size=10_004``.

``encode_with_byte_lengths`` also returns, for every token, how many UTF-8 bytes of the cleaned
text it stands for (whitespace before a word counts towards that word). Summed over the tokens a
model predicts, these give the denominator of bits per byte, so bits per byte is exact and
comparable across the three tokenisers, including words that fell out of the vocabulary.

BPE merges are trained by ``lm_shared.tokenization.train_bpe`` (Hugging Face ``tokenizers``) and
applied by keras-hub's ``BytePairTokenizer``, loaded from the exported GPT-2 ``vocab.json`` and
``merges.txt``; keras-hub has no BPE trainer of its own.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from lstm_textgen.errors import TextgenError

SPECIAL_TOKENS = ("<PAD>", "<UNK>", "<START>", "<END>")
PAD_ID, UNK_ID, START_ID, END_ID = range(len(SPECIAL_TOKENS))
TokenizerKind = Literal["word", "bpe", "char"]
TOKENIZER_KINDS: tuple[TokenizerKind, ...] = ("word", "bpe", "char")
CONFIG_FILE = "tokenizer_config.json"

# A word is a run of letters/digits, with inner apostrophes kept ("o'er", "feed'st"); every other
# non-space character is its own token; a newline is a token because verse and dialogue need it.
WORD_PATTERN = re.compile(r"\n|\w+(?:['’]\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = set(",.;:!?)]}'’\n")
_NO_SPACE_AFTER = set("([{\n")


def check_vocab_size(vocab_size: int, kind: str) -> None:
    """Reject vocabularies that cannot hold the specials plus at least one real token."""
    if vocab_size <= len(SPECIAL_TOKENS):
        raise TextgenError(
            f"vocab_size={vocab_size} is too small for the {kind} tokenizer: it must hold the "
            f"{len(SPECIAL_TOKENS)} special tokens {', '.join(SPECIAL_TOKENS)} plus at least one "
            f"regular token (so at least {len(SPECIAL_TOKENS) + 1})"
        )


class TextTokenizer(ABC):
    """Common interface of the three tokenisers."""

    kind: TokenizerKind

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""

    @abstractmethod
    def tokens(self) -> list[str]:
        """Token strings in id order (specials first)."""

    @abstractmethod
    def encode_with_byte_lengths(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (int32) and the UTF-8 bytes of ``text`` each token covers (int64)."""

    @abstractmethod
    def _decode_regular(self, ids: Sequence[int]) -> str:
        """Decode ids that contain no control specials (UNK allowed)."""

    @abstractmethod
    def _save_files(self, directory: Path) -> None: ...

    def encode(self, text: str) -> list[int]:
        return self.encode_with_byte_lengths(text)[0].tolist()

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Text for ``ids``; ``<PAD>``/``<START>``/``<END>`` are dropped unless asked for.

        ``<UNK>`` is always shown, so a reader sees where the vocabulary ran out.
        """
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise TextgenError(f"token id {bad[0]} is outside the vocabulary (size {self.vocab_size})")
        pieces: list[str] = []
        run: list[int] = []
        for i in ids:
            if i in (PAD_ID, START_ID, END_ID):
                if run:
                    pieces.append(self._decode_regular(run))
                    run = []
                if not skip_special_tokens:
                    pieces.append(SPECIAL_TOKENS[i])
            else:
                run.append(i)
        if run:
            pieces.append(self._decode_regular(run))
        return "".join(pieces)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_files(directory)
        config = {"kind": self.kind, "vocab_size": self.vocab_size, "special_tokens": list(SPECIAL_TOKENS)}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return directory


class _ListVocabTokenizer(TextTokenizer):
    """Shared parts of the word and character tokenisers: a token list saved as ``vocab.json``."""

    def __init__(self, vocabulary: Sequence[str]) -> None:
        vocabulary = list(vocabulary)
        if tuple(vocabulary[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise TextgenError(
                f"a {self.kind} vocabulary must start with the special tokens {SPECIAL_TOKENS}"
            )
        if len(set(vocabulary)) != len(vocabulary):
            raise TextgenError(f"the {self.kind} vocabulary has duplicate tokens")
        self._tokens = vocabulary
        self._ids = {tok: i for i, tok in enumerate(vocabulary)}

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    def tokens(self) -> list[str]:
        return list(self._tokens)

    def _save_files(self, directory: Path) -> None:
        (directory / "vocab.json").write_text(json.dumps(self._tokens, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def _load(cls, directory: Path) -> _ListVocabTokenizer:
        return cls(json.loads((directory / "vocab.json").read_text(encoding="utf-8")))


class WordTokenizer(_ListVocabTokenizer):
    """Words and punctuation; the ``vocab_size - 4`` most frequent kept, the rest map to ``<UNK>``."""

    kind: TokenizerKind = "word"

    @classmethod
    def fit(cls, text: str, vocab_size: int) -> WordTokenizer:
        check_vocab_size(vocab_size, cls.kind)
        # most_common is stable, so ties keep first-appearance order: same text, same vocabulary.
        counts = Counter(WORD_PATTERN.findall(text))
        if not counts:
            raise TextgenError("cannot build a word vocabulary from empty text")
        kept = [w for w, _ in counts.most_common(vocab_size - len(SPECIAL_TOKENS))]
        return cls([*SPECIAL_TOKENS, *kept])

    def encode_with_byte_lengths(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        ids, lengths, previous_end = [], [], 0
        for match in WORD_PATTERN.finditer(text):
            ids.append(self._ids.get(match.group(), UNK_ID))
            lengths.append(len(text[previous_end : match.end()].encode("utf-8")))
            previous_end = match.end()
        return np.asarray(ids, dtype=np.int32), np.asarray(lengths, dtype=np.int64)

    def _decode_regular(self, ids: Sequence[int]) -> str:
        out: list[str] = []
        for i in ids:
            token = self._tokens[i]
            if out and token[0] not in _NO_SPACE_BEFORE and out[-1][-1] not in _NO_SPACE_AFTER:
                out.append(" ")
            out.append(token)
        return "".join(out)


class CharTokenizer(_ListVocabTokenizer):
    """Unicode characters (after NFC); the ``vocab_size - 4`` most frequent kept."""

    kind: TokenizerKind = "char"

    @classmethod
    def fit(cls, text: str, vocab_size: int) -> CharTokenizer:
        check_vocab_size(vocab_size, cls.kind)
        counts = Counter(text)
        if not counts:
            raise TextgenError("cannot build a character vocabulary from empty text")
        kept = sorted(c for c, _ in counts.most_common(vocab_size - len(SPECIAL_TOKENS)))
        return cls([*SPECIAL_TOKENS, *kept])

    def encode_with_byte_lengths(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        ids = np.fromiter((self._ids.get(c, UNK_ID) for c in text), dtype=np.int32, count=len(text))
        lengths = np.fromiter((len(c.encode("utf-8")) for c in text), dtype=np.int64, count=len(text))
        return ids, lengths

    def _decode_regular(self, ids: Sequence[int]) -> str:
        return "".join(self._tokens[i] for i in ids)


class BPETokenizer(TextTokenizer):
    """Byte-level BPE: trained by lm_shared, applied by keras-hub's ``BytePairTokenizer``.

    Byte-level means no text is ever ``<UNK>``; each character of a (non-special) token string is
    one byte in GPT-2's byte-to-unicode alphabet, which gives the exact byte length per token.
    """

    kind: TokenizerKind = "bpe"

    def __init__(self, directory: Path) -> None:
        import keras_hub

        from lstm_textgen import runtime

        runtime.configure_keras()
        self.directory = directory
        vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
        inverse = {i: t for t, i in vocab.items()}
        self._tokens = [inverse[i] for i in range(len(inverse))]
        if tuple(self._tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise TextgenError(f"{directory}/vocab.json must start with the special tokens {SPECIAL_TOKENS}")
        self._keras = keras_hub.tokenizers.BytePairTokenizer(
            vocabulary=str(directory / "vocab.json"),
            merges=str(directory / "merges.txt"),
            unsplittable_tokens=list(SPECIAL_TOKENS),
        )
        self._byte_lengths = np.asarray(
            [0 if i < len(SPECIAL_TOKENS) else len(t) for i, t in enumerate(self._tokens)], dtype=np.int64
        )

    @classmethod
    def fit(cls, text: str, vocab_size: int, directory: Path) -> BPETokenizer:
        from lm_shared.tokenization import TokenizerError, train_bpe

        check_vocab_size(vocab_size, cls.kind)
        try:
            # Train on lines so no merge spans a line break; min_frequency=2 keeps hapax merges out.
            trained = train_bpe(text.splitlines(keepends=True), vocab_size, SPECIAL_TOKENS)
        except TokenizerError as exc:
            raise TextgenError(f"BPE tokenizer: {exc}") from None
        directory.mkdir(parents=True, exist_ok=True)
        trained.save(directory)
        trained.export_vocab_merges(directory)
        return cls(directory)

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    def tokens(self) -> list[str]:
        return list(self._tokens)

    def encode_with_byte_lengths(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        if not text:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        # Tokenise line by line: the same pieces the merges were trained on, and a batch call.
        lines = text.splitlines(keepends=True)
        rows = self._keras.tokenize(lines)  # a list of lists (tokenizers path) or a RaggedTensor
        rows = rows.to_list() if hasattr(rows, "to_list") else rows
        ids = np.concatenate([np.asarray(row, dtype=np.int32) for row in rows])
        return ids, self._byte_lengths[ids]

    def _decode_regular(self, ids: Sequence[int]) -> str:
        out = self._keras.detokenize(np.asarray([list(ids)], dtype=np.int32))
        value = np.asarray(out).reshape(-1)[0]
        return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)

    def _save_files(self, directory: Path) -> None:
        if directory.resolve() != self.directory.resolve():
            for name in ("vocab.json", "merges.txt", "tokenizer.json"):
                (directory / name).write_bytes((self.directory / name).read_bytes())


def fit_tokenizer(kind: str, text: str, vocab_size: int, directory: Path) -> TextTokenizer:
    """Fit a tokeniser of ``kind`` on ``text`` (the training split only) and save it to ``directory``."""
    if kind == "word":
        tokenizer: TextTokenizer = WordTokenizer.fit(text, vocab_size)
    elif kind == "char":
        tokenizer = CharTokenizer.fit(text, vocab_size)
    elif kind == "bpe":
        tokenizer = BPETokenizer.fit(text, vocab_size, directory)
    else:
        raise TextgenError(f"unknown tokenizer {kind!r}; expected one of {', '.join(TOKENIZER_KINDS)}")
    tokenizer.save(directory)
    return tokenizer


def load_tokenizer(directory: str | Path) -> TextTokenizer:
    """Load a tokeniser saved by :meth:`TextTokenizer.save`."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise TextgenError(f"{config_path}: tokenizer config not found (is this a trained model folder?)")
    try:
        kind = json.loads(config_path.read_text(encoding="utf-8"))["kind"]
    except (ValueError, KeyError, TypeError, IndexError, RecursionError) as exc:
        raise TextgenError(f"{config_path}: malformed tokenizer config ({exc})") from None
    if kind == "word":
        return WordTokenizer._load(directory)
    if kind == "char":
        return CharTokenizer._load(directory)
    if kind == "bpe":
        return BPETokenizer(directory)
    raise TextgenError(f"{config_path}: unknown tokenizer kind {kind!r}")
