"""Reading and cleaning the corpus: UTF-8 files or folders, or the embedded default.

Cleaning is deliberately conservative (NFC, drop non-printable characters, consistent whitespace)
so that the text a model sees is the text a person reads; lowercasing and punctuation removal are
options because they change what the model can generate.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lstm_textgen.errors import TextgenError

DEFAULT_CORPUS_NAME = "embedded: Shakespeare, 24 sonnets (1609, public domain)"

_SPACES = re.compile(r"[^\S\n]+")  # any whitespace except newline
_MANY_NEWLINES = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class CleaningOptions:
    """How raw text is normalised before tokenisation."""

    lowercase: bool = False  # fold case (smaller vocabulary, but generated text loses capitals)
    keep_punctuation: bool = True  # False replaces Unicode punctuation (category P*) with spaces


def embedded_corpus() -> str:
    """The small corpus shipped in the package, so `train` runs offline with no arguments."""
    return resources.files("lstm_textgen").joinpath("default_corpus.txt").read_text(encoding="utf-8")


def _decode_utf8(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")  # tolerates (and drops) a byte-order mark
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise TextgenError(
            f"{path}: not valid UTF-8 at byte {exc.start} (line {line}): "
            f"{exc.reason}; convert the file to UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None


def text_files(path: Path) -> list[Path]:
    """The files a path names: itself, or every non-hidden file under a folder, sorted."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise TextgenError(f"{path}: folder has no files to read")
        return files
    raise TextgenError(f"{path}: no such file or folder")


def read_corpus(path: str | Path | None) -> tuple[str, str]:
    """Read a file, a folder (files joined by blank lines) or, for ``None``, the embedded corpus.

    Returns ``(text, source_description)``. Raises :class:`TextgenError` for missing, non-UTF-8 or
    empty input, naming the file.
    """
    if path is None:
        return embedded_corpus(), DEFAULT_CORPUS_NAME
    root = Path(path)
    parts = []
    for file in text_files(root):
        text = _decode_utf8(file, file.read_bytes())
        if text.strip():
            parts.append(text)
    if not parts:
        raise TextgenError(f"{root}: input is empty (no non-blank text)")
    return "\n\n".join(parts), str(root)


def _is_printable(char: str) -> bool:
    # Unicode "Other" categories: control, format (zero-width, BOM), surrogate, private use, unassigned.
    return char in "\n\t" or not unicodedata.category(char).startswith("C")


def clean_text(text: str, options: CleaningOptions | None = None) -> str:
    """NFC-normalise, drop non-printable characters and make whitespace consistent.

    Line breaks are kept (they carry the structure of verse and dialogue): ``\\r\\n`` and ``\\r``
    become ``\\n``, other whitespace runs become one space, lines lose trailing spaces and at most
    one blank line separates paragraphs.
    """
    options = options or CleaningOptions()
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(ch for ch in text if _is_printable(ch))
    if options.lowercase:
        text = text.lower()
    if not options.keep_punctuation:
        text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip(" ") for line in text.split("\n"))
    return _MANY_NEWLINES.sub("\n\n", text).strip("\n")


def clean_prompt(prompt: str, options: CleaningOptions | None = None) -> str:
    """Apply the training text's character-level cleaning to a prompt, keeping its whitespace.

    A trailing space is part of what the user asks the model to continue, so unlike
    :func:`clean_text` the spacing is left as typed.
    """
    options = options or CleaningOptions()
    prompt = "".join(ch for ch in unicodedata.normalize("NFC", prompt) if _is_printable(ch))
    if options.lowercase:
        prompt = prompt.lower()
    if not options.keep_punctuation:
        prompt = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in prompt)
    return prompt
