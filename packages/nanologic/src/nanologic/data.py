"""Reading and writing the raw (the original's JSON schema) and processed (JSONL) files, and the sequence format.

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

from lm_shared.runs import atomic_write_text
from nanologic.errors import NanologicError
from nanologic.logic import Atom, Binary, Node, Not, parse, to_ascii, to_unicode, try_parse

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


def _json_error(path: Path, exc: json.JSONDecodeError, line_offset: int = 0) -> NanologicError:
    # json's messages for a position end in " at" ("Invalid control character at"), the position
    # being in the str() this one-line error replaces: it is given as path:line:column instead.
    message = exc.msg.removesuffix(" at").removesuffix(" starting")
    return NanologicError(f"{path}:{exc.lineno + line_offset}:{exc.colno}: malformed JSON: {message}")


def read_raw(path: str | Path) -> list[dict]:
    """Read examples from a JSON file in the original's schema (``{"examples": [...]}``) or a JSONL file."""
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


def has_words(text: str) -> bool:
    """Whether ``text`` holds a word (a letter or digit), i.e. something to formalise: not empty,
    blanks or punctuation only ("¿?")."""
    return re.search(r"\w", text) is not None


def read_jsonl(path: str | Path, required: Iterable[str] = (), worded: Iterable[str] = ()) -> list[dict]:
    """Read a JSONL file of objects; ``required`` string fields, and ``worded`` ones that must hold
    a word (a sentence to formalise), are checked with file:line errors (:class:`NanologicError`)."""
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
                # without its newline, json's position is always on line 1 of the string
                row = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                raise _json_error(path, exc, line_offset=lineno - 1) from None
            except RecursionError:
                raise NanologicError(f"{path}:{lineno}: malformed JSON: nested too deeply") from None
            if not isinstance(row, dict):
                raise NanologicError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            for key in required:
                if not isinstance(row.get(key), str):
                    raise NanologicError(f"{path}:{lineno}: field {key!r} must be a string")
            for key in worded:
                if not has_words(row.get(key) or ""):
                    raise NanologicError(f"{path}:{lineno}: field {key!r} has no words to formalise")
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


# An atom's polarity mark, written after its definition: every literal occurrence of the letter
# in the formula is negated ("¬"), or some are and some are not ("±"); no mark: all positive.
NEGATED_MARK, MIXED_MARK = "¬", "±"
# Part of the token-cache key: bump it when target_text writes a different sequence.
SEQUENCE_FORMAT_VERSION = 2


def literal_polarity(formula: str | Node) -> dict[str, str]:
    """Each letter's polarity mark in ``formula``: ``"¬"``, ``"±"`` or ``""`` (see ``NEGATED_MARK``).

    A literal is a letter or a negated letter; a negation over anything larger (``¬(p ∧ q)``) is
    structure, not polarity, so ``(p ∨ q) ∧ ¬(p ∧ q)`` marks neither letter.

    Raises:
        FormulaError: ``formula`` is a string that does not parse.
    """
    signs: dict[str, set[bool]] = {}

    def walk(node: object) -> None:
        if isinstance(node, Atom):
            signs.setdefault(node.name, set()).add(False)
        elif isinstance(node, Not) and isinstance(node.child, Atom):
            signs.setdefault(node.child.name, set()).add(True)
        elif isinstance(node, Not):
            walk(node.child)
        elif isinstance(node, Binary):
            walk(node.left)
            walk(node.right)

    walk(parse(formula) if isinstance(formula, str) else formula)
    return {
        letter: (MIXED_MARK if len(s) > 1 else NEGATED_MARK if True in s else "")
        for letter, s in signs.items()
    }


def apply_polarity(formula: Node, polarity: dict[str, str]) -> Node:
    """``formula`` with each literal's sign set to its letter's declared mark.

    A letter marked ``"¬"`` occurs negated, one marked ``""`` positive; ``"±"`` and undeclared
    letters keep the formula's signs; negations of larger subformulas are left alone. Inverse of
    :func:`literal_polarity` on what it fixes: ``literal_polarity(apply_polarity(f, m))`` agrees
    with ``m`` on every marked letter.
    """
    if isinstance(formula, Atom):
        return Not(formula) if polarity.get(formula.name) == NEGATED_MARK else formula
    if isinstance(formula, Not) and isinstance(formula.child, Atom):
        return formula.child if polarity.get(formula.child.name) == "" else formula
    if isinstance(formula, Not):
        return Not(apply_polarity(formula.child, polarity))
    return Binary(formula.op, apply_polarity(formula.left, polarity), apply_polarity(formula.right, polarity))


def target_text(record: dict, with_thought: bool) -> str:
    """The part the model learns to write, ``<|thought|>`` only in phase 1.

    Each atom's definition is followed by its polarity mark (:func:`literal_polarity`): the model
    decides a literal's negation where it reads the clause (the "no" it just left out of the
    definition), and decoding gives the formula's literals the declared signs
    (:func:`formalization_result`). Written only inside the formula, the negations followed the
    pattern's training prior instead of the sentence (README: on the held-out test the marks were
    right for 76 % of the sentences, the formula's own signs for 48 %). A formula section with
    the structure alone (signs only in the marks) was tried and did worse (README).
    """
    # A formula our parser rejects (a user's split with "A ∧ B") trains as before, without marks.
    node = try_parse(record["formula"])
    polarity = literal_polarity(node) if node is not None else {}
    atoms_part = " | ".join(
        f"{letter}: {definition}" + (f" {polarity[letter]}" if polarity.get(letter) else "")
        for letter, definition in record["atoms"].items()
    )
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
    """Split generated text (after ``<|output|>``) into atoms, connectors, formula and polarity.

    ``polarity`` maps each letter to the mark written after its definition (``"¬"``, ``"±"`` or
    ``""``; see :func:`literal_polarity`); the definitions come without it.

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
    polarity: dict[str, str] = {}
    for item in sections.get("atoms", "").split("|"):
        if ":" in item:
            letter, definition = item.split(":", 1)
            if letter.strip():
                definition, mark = _split_mark(definition)
                atoms_[letter.strip()] = _clause_text(definition)
                polarity[letter.strip()] = mark
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
        "polarity": polarity,
    }


def _split_mark(definition: str) -> tuple[str, str]:
    """``"el perro ladra ¬"`` -> ``("el perro ladra", "¬")``; no mark -> ``(definition, "")``."""
    words = definition.split()
    if words and words[-1] in (NEGATED_MARK, MIXED_MARK):
        return " ".join(words[:-1]), words[-1]
    return definition, ""


def formalization_result(raw: str, polarity_marks: bool = False) -> dict:
    """The dict a formaliser returns for one generated answer text (any backend).

    With ``polarity_marks`` (a model trained to write them, ``NanoLogicConfig.polarity_marks``)
    the formula's literals take the signs the atoms section declared (:func:`apply_polarity`; see
    :func:`target_text`).

    Keys: ``atoms`` (letter -> definition), ``connectors`` ([symbol, cue] pairs), ``formula``
    (normalised Unicode when it parses, else as written), ``formula_ascii`` ("" when it does not
    parse), ``valid_formula``, ``polarity`` (letter -> mark, see :func:`parse_output`) and ``raw`` (the text after ``<|output|>``).
    """
    parsed = parse_output(raw)
    node = try_parse(parsed["formula"])
    if node is not None and polarity_marks:
        node = apply_polarity(node, parsed["polarity"])
    if node is not None and try_parse(to_unicode(node)) is None:
        # A run-on chain ("p ↔ q ↔ p ↔ …", "p → q → …") written out with its parentheses nests
        # deeper than the parser takes back (logic.MAX_NESTING): unparsable, as everywhere after.
        node = None
    return {
        "atoms": parsed["atoms"],
        "connectors": parsed["connectors"],
        "formula": to_unicode(node) if node is not None else parsed["formula"],
        "formula_ascii": to_ascii(node) if node is not None else "",
        "valid_formula": node is not None,
        "polarity": parsed["polarity"],
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
