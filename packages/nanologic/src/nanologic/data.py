"""Reading and writing the raw (seed schema) and processed (JSONL) files, and the sequence format.

Raw file: ``{"examples": [...]}`` (the original's layout), a bare JSON list, or JSONL with one example
per line. Errors name the file and line; per-example schema problems are reported by the clean
stage as rejection reasons instead of stopping the whole run.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lm_shared.errors import UserError
from lm_shared.runs import atomic_write_text

SPECIAL_TOKENS = (
    "<|pad|>",
    "<|bos|>",
    "<|eos|>",
    "<|unk|>",
    "<|input|>",
    "<|output|>",
    "<|thought|>",
    "<|atoms|>",
    "<|connectors|>",
    "<|formula|>",
)
PAD, BOS, EOS, UNK, INPUT, OUTPUT, THOUGHT, ATOMS, CONNECTORS, FORMULA = SPECIAL_TOKENS
COMPLEXITIES = ("simple", "intermediate", "advanced")


class NanologicError(UserError):
    """A user-facing error: bad input file, bad option, missing checkpoint. Printed without traceback."""


def _json_error(path: Path, exc: json.JSONDecodeError, line_offset: int = 0) -> NanologicError:
    return NanologicError(f"{path}:{exc.lineno + line_offset}:{exc.colno}: malformed JSON: {exc.msg}")


def read_raw(path: str | Path) -> list[dict]:
    """Read examples from a seed-schema JSON file or a JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise NanologicError(f"{path}: file not found")
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NanologicError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _json_error(path, exc) from None
    except RecursionError:
        raise NanologicError(f"{path}: malformed JSON: nested too deeply") from None
    if isinstance(data, dict) and isinstance(data.get("examples"), list):
        data = data["examples"]
    if not isinstance(data, list):
        raise NanologicError(f'{path}: expected {{"examples": [...]}} or a JSON list of examples')
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise NanologicError(f"{path}: example {i}: expected an object, got {type(item).__name__}")
    return data


def read_jsonl(path: str | Path, required: Iterable[str] = ()) -> list[dict]:
    """Read a JSONL file of objects; ``required`` string fields are checked with file:line errors."""
    path = Path(path)
    if not path.is_file():
        raise NanologicError(f"{path}: file not found")
    rows = []
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise NanologicError(
                    f"{path}:{lineno}: not UTF-8 text (byte {exc.start} of the line); save it as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise NanologicError(f"{path}:{lineno}:{exc.colno}: malformed JSON: {exc.msg}") from None
            except RecursionError:
                raise NanologicError(f"{path}:{lineno}: malformed JSON: nested too deeply") from None
            if not isinstance(row, dict):
                raise NanologicError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            for key in required:
                if not isinstance(row.get(key), str):
                    raise NanologicError(f"{path}:{lineno}: field {key!r} must be a string")
            rows.append(row)
    return rows


def write_raw(path: str | Path, examples: list[dict]) -> Path:
    return atomic_write_text(path, json.dumps({"examples": examples}, ensure_ascii=False, indent=1) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def normalize_text(text: str) -> str:
    """NFC and collapsed whitespace (llama.cpp does not run the tokenizer's NFC, so we do it here)."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


def example_id(sentence: str) -> str:
    return hashlib.sha1(normalize_text(sentence).encode()).hexdigest()[:12]


def schema_problem(ex: Any) -> str | None:
    """The first schema violation of a raw example, or None."""
    if not isinstance(ex, dict):
        return "example is not an object"
    if not isinstance(ex.get("natural_language_input"), str):
        return "natural_language_input: expected a string"
    if ex.get("complexity") not in COMPLEXITIES:
        return f"complexity: expected one of {', '.join(COMPLEXITIES)}"
    output = ex.get("output")
    if not isinstance(output, dict) or not isinstance(output.get("formula"), str):
        return "output.formula: expected a string"
    thought = ex.get("thought")
    if not isinstance(thought, dict):
        return "thought: expected an object"
    atoms_ = thought.get("identified_atoms")
    if not isinstance(atoms_, list) or not all(
        isinstance(a, dict) and isinstance(a.get("atom"), str) and isinstance(a.get("definition"), str)
        for a in atoms_
    ):
        return "thought.identified_atoms: expected a list of {atom, definition}"
    conns = thought.get("identified_connectors", [])
    if not isinstance(conns, list) or not all(
        isinstance(c, dict)
        and isinstance(c.get("connector"), str)
        and isinstance(c.get("natural_language_cue"), str)
        for c in conns
    ):
        return "thought.identified_connectors: expected a list of {connector, natural_language_cue}"
    steps = thought.get("reasoning_steps", [])
    if not isinstance(steps, list):
        return "thought.reasoning_steps: expected a list"
    return None


# ---------------------------------------------------------------------------------------------
# Sequence format
# ---------------------------------------------------------------------------------------------


def prompt_text(sentence: str) -> str:
    return f"{BOS}{INPUT} {normalize_text(sentence)} {OUTPUT}"


def target_text(record: dict, with_thought: bool) -> str:
    """The part the model learns to write, ``<|thought|>`` only in phase 1."""
    atoms_part = " | ".join(f"{letter}: {definition}" for letter, definition in record["atoms"].items())
    conn_part = " | ".join(f"{symbol}: {cue}" for symbol, cue in record["connectors"])
    thought = f"{THOUGHT} {' '.join(record['thought'])} " if with_thought and record.get("thought") else ""
    return f"{thought}{ATOMS} {atoms_part} {CONNECTORS} {conn_part} {FORMULA} {record['formula']} {EOS}"


def sequence_text(record: dict, with_thought: bool) -> str:
    return prompt_text(record["natural_language_input"]) + target_text(record, with_thought)


_TRAILING_PUNCTUATION = re.compile(r"(?<=[a-záéíóúüñ0-9%)])\s*[.,;:]+$")


def _clause_text(definition: str) -> str:
    """A definition as the format writes it: a clause never ends in punctuation. A copying model
    carries the sentence's final period over ("el cartero llega."); an initial keeps its own
    ("Leonardo D.")."""
    return _TRAILING_PUNCTUATION.sub("", definition.strip())


def parse_output(text: str) -> dict:
    """Split generated text (after ``<|output|>``) into atoms, connectors and formula.

    Tolerant: a missing section gives an empty value, so a malformed output scores as wrong
    instead of crashing the evaluation.
    """
    text = text.split(EOS)[0]
    sections: dict[str, str] = {}
    for name, token in (
        ("thought", THOUGHT),
        ("atoms", ATOMS),
        ("connectors", CONNECTORS),
        ("formula", FORMULA),
    ):
        if token in text:
            rest = text.split(token, 1)[1]
            for other in (THOUGHT, ATOMS, CONNECTORS, FORMULA):
                rest = rest.split(other, 1)[0]
            sections[name] = rest.strip()
    atoms_: dict[str, str] = {}
    for item in sections.get("atoms", "").split("|"):
        if ":" in item:
            letter, definition = item.split(":", 1)
            if letter.strip():
                atoms_[letter.strip()] = _clause_text(definition)
    connectors: list[list[str]] = []
    for item in sections.get("connectors", "").split("|"):
        if ":" in item:
            symbol, cue = item.split(":", 1)
            connectors.append([symbol.strip(), cue.strip()])
    return {
        "thought": sections.get("thought", ""),
        "atoms": atoms_,
        "connectors": connectors,
        "formula": sections.get("formula", ""),
    }


def formalization_result(raw: str) -> dict:
    """The dict a formaliser returns for one generated answer text (any backend).

    Keys: ``atoms`` (letter -> definition), ``connectors`` ([symbol, cue] pairs), ``formula``
    (normalised Unicode when it parses, else as written), ``formula_ascii`` ("" when it does not
    parse), ``valid_formula`` and ``raw`` (the text after ``<|output|>``).
    """
    from nanologic.logic import to_ascii, to_unicode, try_parse

    parsed = parse_output(raw)
    node = try_parse(parsed["formula"])
    return {
        "atoms": parsed["atoms"],
        "connectors": parsed["connectors"],
        "formula": to_unicode(node) if node is not None else parsed["formula"],
        "formula_ascii": to_ascii(node) if node is not None else "",
        "valid_formula": node is not None,
        "raw": raw,
    }


def record_from_raw(ex: dict) -> dict:
    """Flatten a cleaned raw example into the processed record the trainer reads."""
    thought = ex.get("thought", {})
    return {
        "id": ex.get("id") or example_id(ex["natural_language_input"]),
        "source_id": ex.get("source_id") or ex.get("id") or example_id(ex["natural_language_input"]),
        "natural_language_input": normalize_text(ex["natural_language_input"]),
        "atoms": {a["atom"]: normalize_text(a["definition"]) for a in thought.get("identified_atoms", [])},
        "connectors": [
            [c["connector"], c["natural_language_cue"]] for c in thought.get("identified_connectors", [])
        ],
        "thought": [
            str(s.get("explanation", "")) for s in thought.get("reasoning_steps", []) if isinstance(s, dict)
        ],
        "formula": ex["output"]["formula"],
        "formula_ascii": ex["output"].get("formula_ascii", ""),
        "complexity": ex["complexity"],
        "block": ex.get("block", "unknown"),
        "augmented": bool(ex.get("augmented", False)),
        "augmentation_type": ex.get("augmentation_type", "none"),
    }
