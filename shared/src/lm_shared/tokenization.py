"""Byte-level BPE tokenizers trained with Hugging Face ``tokenizers``.

The tokenizer normalises text to Unicode NFC, works on bytes (so every string round-trips, no
``<unk>`` ever appears), and gives the caller's special tokens the ids 0..n-1 in the given order;
special tokens are matched whole and never split. Vocabulary and merges export in the GPT-2 format
that keras-hub's ``BytePairTokenizer`` and GGUF's ``gpt2`` tokenizer model read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from lm_shared.errors import UserError

BYTE_ALPHABET_SIZE = 256


class TokenizerError(UserError, ValueError):
    """Raised for unusable tokenizer inputs (empty corpus, bad specials, unreadable file)."""


def _validate_specials(special_tokens: Sequence[str]) -> list[str]:
    specials = list(special_tokens)
    seen: set[str] = set()
    for i, tok in enumerate(specials):
        if not isinstance(tok, str) or not tok:
            raise TokenizerError(f"special_tokens[{i}] must be a non-empty string, got {tok!r}")
        if tok in seen:
            raise TokenizerError(f"special_tokens[{i}] duplicates {tok!r}; special tokens must be unique")
        seen.add(tok)
    return specials


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    special_tokens: Sequence[str] = (),
    *,
    min_frequency: int = 2,
    show_progress: bool = False,
) -> BPETokenizer:
    """Train a byte-level BPE (Sennrich et al., 2016; bytes as in GPT-2) on an iterable of texts.

    The pre-tokenizer is ``tokenizers``' ``ByteLevel(use_regex=True)`` (GPT-2's split, which
    llama.cpp's ``gpt-2`` pre-tokenizer reproduces) and the text is normalised to NFC.

    Args:
        texts: the corpus, consumed once; blank texts are skipped.
        vocab_size: the most tokens, special tokens and the 256 byte symbols included.
        special_tokens: tokens that get ids 0..n-1 in this order and are never split.
        min_frequency: the fewest occurrences a pair needs to be merged.
        show_progress: show ``tokenizers``' progress bar.

    Returns:
        The trained tokenizer.

    Raises:
        TokenizerError: the corpus has no non-blank text or holds a non-string, a special token is
            empty or repeated, ``min_frequency < 1``, or ``vocab_size`` cannot hold the specials
            plus the 256 byte symbols.
    """
    specials = _validate_specials(special_tokens)
    floor = len(specials) + BYTE_ALPHABET_SIZE
    if vocab_size < floor:
        raise TokenizerError(
            f"vocab_size={vocab_size} is too small: it must hold {len(specials)} special tokens "
            f"plus the {BYTE_ALPHABET_SIZE} byte symbols (at least {floor})"
        )
    if min_frequency < 1:
        raise TokenizerError(f"min_frequency must be >= 1, got {min_frequency}")

    n_nonempty = 0

    def counted(items: Iterable[str]) -> Iterator[str]:
        nonlocal n_nonempty
        for text in items:
            if not isinstance(text, str):
                raise TokenizerError(f"corpus items must be str, got {type(text).__name__}")
            if text.strip():
                n_nonempty += 1
                yield text

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tokenizer.train_from_iterator(counted(texts), trainer=trainer)
    if n_nonempty == 0:
        raise TokenizerError("cannot train a tokenizer on an empty corpus (no non-blank text was given)")
    return BPETokenizer(tokenizer)


class BPETokenizer:
    """A thin, typed wrapper around a byte-level ``tokenizers.Tokenizer``.

    Build one with :func:`train_bpe` or :meth:`load`. ``len(tokenizer)`` is :attr:`vocab_size`.

    Args:
        tokenizer: the wrapped tokenizer, kept as :attr:`hf` for anything not wrapped here.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.hf = tokenizer

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save atomically as ``tokenizers``' JSON.

        Args:
            path: a ``.json`` file, or a directory (created) to hold ``tokenizer.json``.

        Returns:
            The file written.
        """
        path = Path(path)
        if path.suffix != ".json":
            path.mkdir(parents=True, exist_ok=True)
            path = path / "tokenizer.json"
        from lm_shared.runs import atomic_path

        with atomic_path(path) as tmp:
            self.hf.save(str(tmp))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BPETokenizer:
        """Load a tokenizer saved by :meth:`save` (or any ``tokenizers`` JSON).

        Args:
            path: a ``tokenizer.json`` file, or a directory that holds one.

        Returns:
            The loaded tokenizer.

        Raises:
            TokenizerError: the file is missing or is not a valid ``tokenizer.json``.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"{path}: tokenizer file not found")
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
            raise TokenizerError(f"{path}: not a valid tokenizer.json ({exc})") from None

    # ---------------------------------------------------------------- vocabulary
    @property
    def vocab_size(self) -> int:
        """Number of token ids, special tokens included."""
        return self.hf.get_vocab_size(with_added_tokens=True)

    @property
    def special_tokens(self) -> list[str]:
        """Special tokens in id order."""
        added = self.hf.get_added_tokens_decoder()
        return [tok.content for _, tok in sorted(added.items()) if tok.special]

    def token_to_id(self, token: str) -> int | None:
        """The id of ``token`` (a vocabulary entry in byte-level form, or a special token), else None."""
        return self.hf.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        """The vocabulary entry of ``token_id`` (byte-level form, e.g. ``"Ġthe"``), else None."""
        return self.hf.id_to_token(token_id)

    def vocab(self) -> dict[str, int]:
        """Token -> id for the whole vocabulary, special tokens included."""
        return self.hf.get_vocab(with_added_tokens=True)

    def tokens_in_id_order(self) -> list[str]:
        """Every token, the one with id ``i`` at index ``i`` (a GGUF token list).

        Raises:
            TokenizerError: some id below :attr:`vocab_size` has no token.
        """
        inverse = {i: t for t, i in self.vocab().items()}
        missing = [i for i in range(self.vocab_size) if i not in inverse]
        if missing:
            raise TokenizerError(f"vocabulary has gaps at ids {missing[:5]}")
        return [inverse[i] for i in range(self.vocab_size)]

    def merges(self) -> list[tuple[str, str]]:
        """BPE merges in rank order (first = applied first)."""
        raw = json.loads(self.hf.to_str())["model"]["merges"]
        pairs: list[tuple[str, str]] = []
        for merge in raw:
            a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
            pairs.append((a, b))
        return pairs

    def export_vocab_merges(self, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write GPT-2 style ``vocab.json`` (specials included) and ``merges.txt``.

        Args:
            directory: where to write both files (created when missing).

        Returns:
            The paths of ``vocab.json`` and ``merges.txt``.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocab_path = directory / "vocab.json"
        merges_path = directory / "merges.txt"
        vocab_path.write_text(json.dumps(self.vocab(), ensure_ascii=False, indent=0), encoding="utf-8")
        lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in self.merges()]
        merges_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return vocab_path, merges_path

    # ---------------------------------------------------------------- encode / decode
    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text`` (NFC-normalised first; special tokens in it are matched whole).

        Args:
            text: any string; :meth:`decode` gives back its NFC form.
            add_special_tokens: apply the tokenizer's post-processor template (a tokenizer from
                :func:`train_bpe` has none, so nothing is added).

        Returns:
            The ids.
        """
        return self.hf.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Sequence[str], *, add_special_tokens: bool = False) -> list[list[int]]:
        """:meth:`encode` of each text (``tokenizers`` runs them in parallel); unpadded id lists."""
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=add_special_tokens)]

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """The text of ``ids``.

        Args:
            ids: token ids.
            skip_special_tokens: leave special tokens out of the text.

        Returns:
            The decoded string (the NFC form of what :meth:`encode` was given).
        """
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def decode_batch(self, batch: Sequence[Sequence[int]], *, skip_special_tokens: bool = False) -> list[str]:
        """:meth:`decode` of each id sequence in ``batch``."""
        return self.hf.decode_batch([list(ids) for ids in batch], skip_special_tokens=skip_special_tokens)

    # ---------------------------------------------------------------- interop
    def to_transformers(self, **special_tokens: Any) -> Any:
        """Wrap as a ``transformers.PreTrainedTokenizerFast`` sharing this tokenizer.

        Args:
            **special_tokens: the wrapper's special-token arguments, e.g. ``pad_token="<pad>"``.

        Returns:
            The ``PreTrainedTokenizerFast`` (needs the ``transformers`` package).
        """
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(tokenizer_object=self.hf, **special_tokens)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, special_tokens={self.special_tokens})"
