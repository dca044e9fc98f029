"""Scoring predicted formalisations against gold ones, and the evaluation report.

Equivalence aligns atoms by their definitions, not their letters: a correct formula that names
"llueve" q instead of p still counts. Predicted atoms whose definition matches no gold atom get
fresh names, so they can never match by accident.

Grounded accuracy (issue 13) asks more of real sentences, whose gold definitions a model cannot
reproduce word for word: the predicted atoms are aligned one-to-one with the gold atoms so that the
total definition overlap is largest, every gold atom the reading uses must be aligned with a
predicted definition holding at least half of its content words, and under that alignment the
predicted formula must be equivalent to the gold formula or to one of its ``alt`` readings
(:func:`nanologic.logic.same_reading`: where the gold is a tautology, as a valid argument's formula
is, or a contradiction, of its shape too, so that ``(p ∧ p) → p`` does not pass for modus ponens).
:func:`error_category` sorts the failures into cue unknown, wrong structure, atom not grounded and
polarity (plus unparsable).
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nanologic.logic import (
    CONNECTORS,
    Binary,
    Node,
    Not,
    atoms,
    connectors_used,
    equivalent,
    main_connector,
    rename,
    same_reading,
    subformulas,
    to_unicode,
    tree_similarity,
    try_parse,
)

MAIN_LABELS = ("atom", *CONNECTORS)


def normalize_definition(text: str) -> str:
    text = unicodedata.normalize("NFC", text).lower()
    return re.sub(r"[^\w\s]", "", re.sub(r"\s+", " ", text)).strip()


def align_atoms(pred_atoms: dict[str, str], gold_atoms: dict[str, str]) -> dict[str, str]:
    """Map predicted letters to gold letters through equal (normalised) definitions."""
    gold_by_def = {normalize_definition(d): letter for letter, d in gold_atoms.items()}
    mapping = {}
    for i, (letter, definition) in enumerate(pred_atoms.items()):
        mapping[letter] = gold_by_def.get(normalize_definition(definition), f"unmatched{i}")
    return mapping


def atom_f1(pred_atoms: dict[str, str], gold_atoms: dict[str, str]) -> float:
    pred = {normalize_definition(d) for d in pred_atoms.values()}
    gold = {normalize_definition(d) for d in gold_atoms.values()}
    if not pred and not gold:
        return 1.0
    tp = len(pred & gold)
    if tp == 0:
        return 0.0
    precision, recall = tp / len(pred), tp / len(gold)
    return 2 * precision * recall / (precision + recall)


# ---------------------------------------------------------------------------------------------
# Grounded accuracy (issue 13)
# ---------------------------------------------------------------------------------------------

# Spanish function words: articles, prepositions, conjunctions, pronouns and clitics, the forms of
# "ser/estar/haber" that only carry tense, and "no" (polarity is scored by the formula, and gold
# definitions are affirmative). Accents are stripped before lookup. Kept small and in the open on
# purpose: no Spanish stopword list ships with the libraries this project already depends on.
SPANISH_STOPWORDS = frozenset(
    [
        "a",
        "al",
        "algo",
        "algun",
        "alguna",
        "algunas",
        "alguno",
        "algunos",
        "ante",
        "antes",
        "aqui",
        "asi",
        "aun",
        "bajo",
        "cada",
        "como",
        "con",
        "contra",
        "cual",
        "cuales",
        "cuando",
        "de",
        "del",
        "desde",
        "donde",
        "durante",
        "e",
        "el",
        "ella",
        "ellas",
        "ellos",
        "en",
        "entre",
        "era",
        "eran",
        "es",
        "esa",
        "esas",
        "ese",
        "eso",
        "esos",
        "esta",
        "estaba",
        "estan",
        "estar",
        "estas",
        "este",
        "esto",
        "estos",
        "fue",
        "fueron",
        "ha",
        "han",
        "hasta",
        "hay",
        "la",
        "las",
        "le",
        "les",
        "lo",
        "los",
        "me",
        "mi",
        "mis",
        "muy",
        "nos",
        "nosotros",
        "o",
        "os",
        "otra",
        "otras",
        "otro",
        "otros",
        "para",
        "pero",
        "poco",
        "por",
        "porque",
        "que",
        "quien",
        "se",
        "ser",
        "si",
        "sin",
        "sino",
        "sobre",
        "son",
        "su",
        "sus",
        "tambien",
        "tan",
        "te",
        "ti",
        "tu",
        "tus",
        "u",
        "un",
        "una",
        "unas",
        "uno",
        "unos",
        "y",
        "ya",
        "yo",
        "no",
        "ni",
    ]
)

#: A predicted definition grounds a gold one when it holds at least this share of its content words.
GROUNDING_THRESHOLD = 0.5


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if unicodedata.category(c) != "Mn"))


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", unicodedata.normalize("NFC", text).lower())


def _stems(words: list[str]) -> list[str]:
    return [_strip_accents(stem) for stem in _stemmer().stemWords(words)]


def word_stems(text: str) -> list[str]:
    """Every word of ``text`` as its Spanish Snowball stem, lower-cased and accent-stripped, in order."""
    return _stems(_words(text))


def content_words(text: str) -> set[str]:
    """Content words of ``text`` as Spanish Snowball stems, lower-cased and accent-stripped.

    Stopwords (:data:`SPANISH_STOPWORDS`) go first. Stemming lets an inflected copy of a word count
    ("llueva" for "llueve", "médica" for "médico"); an irregular form does not ("haga"/"hace").
    Numbers and symbols ("x", "2", "c²") count as content: in "x + y = 2" they are the content. A
    definition made only of stopwords keeps all its words, so it is never empty.
    """
    words = _words(text)
    return set(_stems([w for w in words if _strip_accents(w) not in SPANISH_STOPWORDS] or words))


@functools.cache
def _stemmer():
    import snowballstemmer

    return snowballstemmer.stemmer("spanish")


def definition_overlap(predicted: str, gold: str) -> float:
    """Share of the gold definition's content words that the predicted definition contains (0..1)."""
    gold_words = content_words(gold)
    if not gold_words:
        return 0.0
    return len(gold_words & content_words(predicted)) / len(gold_words)


_BRUTE_FORCE_LIMIT = 50_000


def best_alignment(pred_atoms: dict[str, str], gold_atoms: dict[str, str]) -> dict[str, tuple[str, float]]:
    """One-to-one map gold letter -> (predicted letter, overlap) with the largest total overlap.

    Exhaustive over injective maps while there are at most 50,000 of them (8 atoms on each side),
    greedy by overlap beyond that. Gold letters left without a predicted atom are absent.
    """
    import itertools
    import math

    gold_letters, pred_letters = list(gold_atoms), list(pred_atoms)
    score = {
        (g, p): definition_overlap(pred_atoms[p], gold_atoms[g]) for g in gold_letters for p in pred_letters
    }
    k = min(len(gold_letters), len(pred_letters))
    if k == 0:
        return {}
    if math.perm(max(len(gold_letters), len(pred_letters)), k) <= _BRUTE_FORCE_LIMIT:
        best: list[tuple[str, str]] = []  # k >= 1: the first candidate's total (>= 0) replaces it
        best_total = -1.0
        if len(gold_letters) <= len(pred_letters):
            candidates = (zip(gold_letters, perm) for perm in itertools.permutations(pred_letters, k))
        else:
            candidates = (zip(perm, pred_letters) for perm in itertools.permutations(gold_letters, k))
        for candidate in candidates:
            pairs = list(candidate)
            total = sum(score[g, p] for g, p in pairs)
            if total > best_total:
                best, best_total = pairs, total
        return {g: (p, score[g, p]) for g, p in best}
    alignment: dict[str, tuple[str, float]] = {}
    used: set[str] = set()
    for (g, p), value in sorted(score.items(), key=lambda kv: -kv[1]):
        if g not in alignment and p not in used:
            alignment[g] = (p, value)
            used.add(p)
    return alignment


def gold_readings(gold: dict) -> list[tuple[dict[str, str], Node]]:
    """The gold reading and its ``alt`` readings as (atoms, parsed formula) pairs.

    An ``alt`` entry is a formula string over the gold atoms or ``{"atoms": ..., "formula": ...}``.
    Raises ValueError on a formula that does not parse.
    """
    readings = []
    for item in [{"atoms": gold["atoms"], "formula": gold["formula"]}, *gold.get("alt", [])]:
        reading = {"atoms": gold["atoms"], "formula": item} if isinstance(item, str) else item
        node = try_parse(reading["formula"])
        if node is None:
            raise ValueError(f"gold formula does not parse: {reading['formula']!r}")
        readings.append((reading["atoms"], node))
    return readings


def _grounded_rename(pred_formula: Node, alignment: dict[str, tuple[str, float]]) -> Node:
    """Rename predicted letters to their aligned gold letters; ungrounded or unaligned predicted
    letters get fresh names, so they can only match a gold atom through a grounded definition."""
    mapping = {p: g for g, (p, value) in alignment.items() if value >= GROUNDING_THRESHOLD}
    fresh = {a: f"ungrounded_{a}" for a in atoms(pred_formula) if a not in mapping}
    return rename(pred_formula, {**mapping, **fresh})


def grounded_match(pred: dict, gold: dict) -> bool:
    """True when ``pred`` is right with atoms that come from the sentence (see the module docstring).

    ``pred`` and ``gold`` have ``atoms`` (letter -> definition) and ``formula``; ``gold`` may have
    ``alt``. A letter a predicted formula uses but never defines can ground nothing.
    """
    pred_formula = try_parse(pred.get("formula", ""))
    if pred_formula is None:
        return False
    pred_atoms = pred.get("atoms", {}) or {}
    for gold_atoms, gold_formula in gold_readings(gold):
        used = atoms(gold_formula)
        alignment = best_alignment(pred_atoms, {g: gold_atoms[g] for g in used})
        if any(g not in alignment or alignment[g][1] < GROUNDING_THRESHOLD for g in used):
            continue
        aligned = _grounded_rename(pred_formula, alignment)
        if len(set(atoms(aligned)) | set(used)) <= 16 and same_reading(aligned, gold_formula):
            return True
    return False


def equivalent_any_mapping(pred_formula: Node, gold_formula: Node, max_mappings: int = 40_320) -> bool:
    """Equivalent under some one-to-one renaming of the predicted letters, whatever the definitions
    (the "best letter mapping" score of issue 13).

    Tries every injective map of min(#pred, #gold) predicted letters onto gold letters (the other
    predicted letters get fresh names); False when there are more than ``max_mappings`` maps
    (8 atoms on each side), so a runaway output cannot stall a report.
    """
    import itertools
    import math

    pred_letters, gold_letters = atoms(pred_formula), atoms(gold_formula)
    k = min(len(pred_letters), len(gold_letters))
    if math.comb(len(pred_letters), k) * math.perm(len(gold_letters), k) > max_mappings:
        return False
    for chosen in itertools.combinations(pred_letters, k):
        fresh = {a: f"extra_{a}" for a in pred_letters if a not in chosen}
        for targets in itertools.permutations(gold_letters, k):
            mapping = {**fresh, **dict(zip(chosen, targets))}
            if same_reading(rename(pred_formula, mapping), gold_formula):
                return True
    return False


def _strip_negations(node: Node) -> Node:
    if isinstance(node, Not):
        return _strip_negations(node.child)
    if isinstance(node, Binary):
        return Binary(node.op, _strip_negations(node.left), _strip_negations(node.right))
    return node


#: Connective cues that Spanish logic textbooks list (their "traducciones verbales" tables) and the
#: development set uses. A sentence holding one that the generator's inventory lacks is a sentence
#: whose structure no formaliser trained or built on that inventory was shown.
TEXTBOOK_CUES = (
    "a menos que",
    "salvo que",
    "excepto que",
    "ni",
    "tanto",
    "no pasa que",
    "es mentira que",
    "es falso que",
    "no es cierto que",
    "no es el caso que",
    "es inobjetable que",
    "para que",
    "para",
    "hay que",
    "se debe",
    "es necesario",
    "sólo cuando",
    "solo cuando",
    "cuando y solo cuando",
    "sí y solo sí",
    "si y solo si",
    "condición necesaria",
    "condición suficiente",
    "puesto que",
    "ya que",
    "dado que",
    "de todos modos",
    "así que",
    "luego",
    "por lo tanto",
    "en consecuencia",
    "porque",
    "mientras",
    "siempre y cuando",
    "sólo si",
    "solo si",
    "sólo en el caso de que",
    "en vista de que",
    "luego de que",
    "además",
    "sin embargo",
    "no obstante",
    "aunque",
    "pero",
    "o bien",
    "a la vez",
    "siempre que",
    "en caso de que",
    "cuando",
    "entonces",
    "si",
    "o",
    "u",
    "y",
    "e",
    "no",
    "tampoco",
)


def _cue_pattern(cue: str) -> re.Pattern:
    return re.compile(r"(?<!\w)" + re.escape(_strip_accents(cue.lower())) + r"(?!\w)")


def unknown_cues(sentence: str, known: Sequence[str]) -> list[str]:
    """Textbook cues in ``sentence`` that are neither in ``known`` nor part of a longer known cue
    found in the same place (accent- and case-insensitive)."""
    text = _strip_accents(sentence.lower())
    known_spans = []
    for cue in known:
        known_spans += [m.span() for m in _cue_pattern(cue).finditer(text)]
    found = []
    for cue in TEXTBOOK_CUES:
        for m in _cue_pattern(cue).finditer(text):
            if not any(s <= m.start() and m.end() <= e for s, e in known_spans):
                found.append(cue)
                break
    return found


ERROR_CATEGORIES = (
    "correct",
    "unparsable",
    "atom not grounded",
    "cue unknown",
    "polarity",
    "wrong structure",
)


def error_category(pred: dict, gold: dict, sentence: str, known_cues: Sequence[str]) -> str:
    """The one reason an output is not grounded-correct, judged against the primary gold reading.

    - ``correct``: :func:`grounded_match` holds (any reading).
    - ``unparsable``: the predicted formula does not parse.
    - ``atom not grounded``: some gold atom has no predicted definition holding half of its content
      words under the best alignment (whatever the formula).
    - ``cue unknown``: atoms grounded, formula wrong, and the sentence holds a textbook cue that
      ``known_cues`` (the generator's inventory) lacks (:func:`unknown_cues`).
    - ``polarity``: atoms grounded, every cue known, and the formulas become equivalent once every ¬
      is removed from both: only the place or number of negations is wrong.
    - ``wrong structure``: atoms grounded, every cue known, connectives or grouping wrong.
    """
    if grounded_match(pred, gold):
        return "correct"
    pred_formula = try_parse(pred.get("formula", ""))
    if pred_formula is None:
        return "unparsable"
    gold_atoms, gold_formula = gold_readings(gold)[0]
    used = atoms(gold_formula)
    alignment = best_alignment(pred.get("atoms", {}) or {}, {g: gold_atoms[g] for g in used})
    if any(g not in alignment or alignment[g][1] < GROUNDING_THRESHOLD for g in used):
        return "atom not grounded"
    if unknown_cues(sentence, known_cues):
        return "cue unknown"
    aligned = _grounded_rename(pred_formula, alignment)
    if len(set(atoms(aligned)) | set(used)) <= 16 and equivalent(
        _strip_negations(aligned), _strip_negations(gold_formula)
    ):
        return "polarity"
    return "wrong structure"


def _generator_cues() -> tuple[str, ...]:
    from nanologic.generator import known_cues

    return known_cues()


def score_example(pred: dict, gold: dict, known_cues: Sequence[str] | None = None) -> dict:
    """Every per-example metric; ``pred``/``gold`` have ``atoms`` (letter -> definition) and ``formula``.

    ``gold`` may carry ``alt`` readings (see :func:`gold_readings`): ``equivalent``, ``grounded`` and
    ``equivalent_any_mapping`` accept any reading; the other metrics use the primary one.
    ``known_cues`` (default: the generator's inventory) decides the ``cue unknown`` error category.
    """
    gold_formula = try_parse(gold["formula"])
    if gold_formula is None:
        raise ValueError(f"gold formula does not parse: {gold['formula']!r}")
    readings = gold_readings(gold)
    sentence = gold.get("natural_language_input") or gold.get("input") or ""
    pred_formula = try_parse(pred.get("formula", ""))
    mapping = align_atoms(pred.get("atoms", {}), gold["atoms"])
    result = {
        "parsed": pred_formula is not None,
        "exact_match": pred.get("formula", "").strip() == gold["formula"].strip(),
        "atom_f1": atom_f1(pred.get("atoms", {}), gold["atoms"]),
        "gold_main": main_connector(gold_formula),
    }
    if pred_formula is None:
        result.update(
            normalized_match=False,
            equivalent=False,
            connector_match=False,
            main_connector_match=False,
            pred_main="unparsable",
            partial_credit=0.0,
            subformula_recall=0.0,
        )
    else:
        # Atoms used in the formula but never declared keep their letter prefixed, so they only
        # match a gold atom through a declared definition.
        undeclared = {a: f"undeclared_{a}" for a in atoms(pred_formula) if a not in mapping}
        aligned = rename(pred_formula, {**mapping, **undeclared})
        gold_subs = {to_unicode(n) for n in subformulas(gold_formula)}
        pred_subs = {to_unicode(n) for n in subformulas(aligned)}
        result.update(
            normalized_match=to_unicode(aligned) == to_unicode(gold_formula),
            equivalent=len(atoms(aligned)) <= 16 and same_reading(aligned, gold_formula),
            connector_match=connectors_used(aligned) == connectors_used(gold_formula),
            main_connector_match=main_connector(aligned) == main_connector(gold_formula),
            pred_main=main_connector(aligned),
            partial_credit=tree_similarity(aligned, gold_formula),
            subformula_recall=len(gold_subs & pred_subs) / len(gold_subs),
        )
    if pred_formula is not None and not result["equivalent"]:
        for alt_atoms, alt_formula in readings[1:]:
            alt_mapping = align_atoms(pred.get("atoms", {}), alt_atoms)
            undeclared = {a: f"undeclared_{a}" for a in atoms(pred_formula) if a not in alt_mapping}
            alt_aligned = rename(pred_formula, {**alt_mapping, **undeclared})
            if len(atoms(alt_aligned)) <= 16 and same_reading(alt_aligned, alt_formula):
                result["equivalent"] = True
                break
    result["grounded"] = grounded_match(pred, gold)
    result["equivalent_any_mapping"] = pred_formula is not None and any(
        equivalent_any_mapping(pred_formula, f) for _, f in readings
    )
    cues = _generator_cues() if known_cues is None else known_cues
    result["error_category"] = error_category(pred, gold, sentence, cues)
    result["unknown_cues"] = len(unknown_cues(sentence, cues))
    # The original's four compositional levels.
    result["level1_atoms"] = result["atom_f1"] == 1.0
    result["level2_subformulas"] = result["subformula_recall"]
    result["level3_main_connector"] = result["main_connector_match"]
    result["level4_equivalent"] = result["equivalent"]
    return result


def read_gold(path: str | Path) -> list[dict]:
    """Gold examples from a JSONL file in either format, as the rows :func:`aggregate` expects.

    - a split written by ``nanologic preprocess`` (``natural_language_input``, ``atoms``, ``formula``,
      ``complexity``, ...), returned as it is;
    - a real-sentence set like ``data/dev_real.jsonl``: ``input``, ``atoms`` (letter -> definition),
      ``formula``, optional ``alt`` (formula strings over the same atoms, or ``{"atoms", "formula"}``),
      optional ``source``/``licence``/``id``. Every formula must parse, the main formula must use
      exactly the declared atoms and an ``alt`` only declared ones.

    Raises :class:`~nanologic.data.NanologicError` naming the file, line and field.
    """
    from nanologic.data import read_jsonl
    from nanologic.errors import NanologicError
    from nanologic.generator import complexity_of
    from nanologic.logic import FormulaError, parse

    path = Path(path)
    rows = read_jsonl(path)
    out = []
    for lineno, row in enumerate(rows, start=1):
        if "natural_language_input" in row:
            out.append(row)
            continue
        where = f"{path}: example {lineno}"
        if not isinstance(row.get("input"), str) or not row["input"].strip():
            raise NanologicError(f"{where}: expected a non-empty string field 'input'")
        atoms_field = row.get("atoms")
        if not isinstance(atoms_field, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in atoms_field.items()
        ):
            raise NanologicError(f"{where}: expected 'atoms' as an object letter -> definition")
        # (field, atoms, formula as read: parse() turns a non-string into a FormulaError)
        readings: list[tuple[str, dict, Any]] = [("formula", atoms_field, row.get("formula"))]
        alts = row.get("alt", [])
        if not isinstance(alts, list):
            raise NanologicError(f"{where}: expected 'alt' as a list of readings")
        for i, alt in enumerate(alts):
            if isinstance(alt, dict) and isinstance(alt.get("atoms"), dict):
                readings.append((f"alt[{i}]", alt["atoms"], alt.get("formula")))
            elif isinstance(alt, str):
                readings.append((f"alt[{i}]", atoms_field, alt))
            else:
                raise NanologicError(f"{where}: alt[{i}]: expected a formula or {{'atoms', 'formula'}}")
        for field, declared, formula in readings:
            try:
                node = parse(formula)
            except FormulaError as exc:
                raise NanologicError(f"{where}: {field}: {exc.reason} at position {exc.position}") from None
            used = set(atoms(node))
            if field == "formula" and used != set(declared):
                raise NanologicError(
                    f"{where}: formula uses {sorted(used)} but 'atoms' declares {sorted(declared)}"
                )
            if not used <= set(declared):
                raise NanologicError(f"{where}: {field} uses undeclared atoms {sorted(used - set(declared))}")
        source = row.get("source")
        if not isinstance(source, dict):
            source = {}
        out.append(
            {
                "id": row.get("id", str(lineno)),
                "natural_language_input": row["input"],
                "atoms": atoms_field,
                "formula": row["formula"],
                "alt": alts,
                "complexity": complexity_of(parse(row["formula"])),
                "block": source.get("title", "unknown"),
                "source_kind": source.get("kind", "unknown"),
            }
        )
    return out


def _length_bucket(n_chars: int) -> str:
    for limit in (60, 100, 150, 200):
        if n_chars <= limit:
            return f"≤{limit} chars"
    return ">200 chars"


def aggregate(golds: Sequence[dict], scores: Sequence[dict]) -> dict:
    """The report: overall metrics, breakdowns, confusion matrix, accuracy vs number of atoms."""
    n = len(scores)
    if n == 0:
        raise ValueError("nothing to aggregate: empty test set")

    def mean(key: str, rows: Sequence[dict] = scores) -> float:
        return sum(float(r[key]) for r in rows) / len(rows)

    def breakdown(key_fn) -> dict:
        groups: dict[str, list[dict]] = defaultdict(list)
        for g, s in zip(golds, scores):
            for key in key_fn(g):
                groups[key].append(s)
        return {
            k: {
                "n": len(v),
                "equivalence_accuracy": round(mean("equivalent", v), 4),
                "grounded_accuracy": round(mean("grounded", v), 4),
            }
            for k, v in sorted(groups.items(), key=lambda kv: str(kv[0]))
        }

    confusion: dict[str, Counter] = defaultdict(Counter)
    for s in scores:
        confusion[s["gold_main"]][s["pred_main"]] += 1
    return {
        "n_test": n,
        "equivalence_accuracy": round(mean("equivalent"), 4),
        "exact_match": round(mean("exact_match"), 4),
        "normalized_match": round(mean("normalized_match"), 4),
        "parse_rate": round(mean("parsed"), 4),
        "atom_f1": round(mean("atom_f1"), 4),
        "connector_accuracy": round(mean("connector_match"), 4),
        "main_connector_accuracy": round(mean("main_connector_match"), 4),
        "partial_credit": round(mean("partial_credit"), 4),
        "compositional": {
            "level1_atoms": round(mean("level1_atoms"), 4),
            "level2_subformulas": round(mean("level2_subformulas"), 4),
            "level3_main_connector": round(mean("level3_main_connector"), 4),
            "level4_equivalent": round(mean("level4_equivalent"), 4),
        },
        "grounded_accuracy": round(mean("grounded"), 4),
        "equivalence_any_mapping": round(mean("equivalent_any_mapping"), 4),
        "error_categories": {c: sum(s["error_category"] == c for s in scores) for c in ERROR_CATEGORIES},
        "failures_with_unknown_cue": sum(not s["grounded"] and s["unknown_cues"] > 0 for s in scores),
        "by_complexity": breakdown(lambda g: [g["complexity"]]),
        "by_connector": breakdown(lambda g: [c for c in CONNECTORS if c in g["formula"]]),
        "by_block": breakdown(lambda g: [g.get("block", "unknown")]),
        "by_n_atoms": breakdown(lambda g: [str(len(g["atoms"]))]),
        "by_length": breakdown(lambda g: [_length_bucket(len(g["natural_language_input"]))]),
        "by_source": breakdown(lambda g: [g.get("source_kind", "synthetic")]),
        "main_connector_confusion": {
            gold: {
                pred: confusion[gold][pred] for pred in (*MAIN_LABELS, "unparsable") if confusion[gold][pred]
            }
            for gold in MAIN_LABELS
            if gold in confusion
        },
    }


def write_report(report: dict, examples: Sequence[dict], out_dir: Path) -> list[Path]:
    """report.json, report.md, predictions.jsonl and PNG charts under ``out_dir``."""
    from lm_shared.runs import atomic_write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "report.json", out_dir / "report.md", out_dir / "predictions.jsonl"]
    atomic_write_json(paths[0], report)  # the run's summary: never left half-written
    paths[1].write_text(markdown_report(report), encoding="utf-8")
    paths[2].write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples), encoding="utf-8")
    paths += write_charts(report, out_dir)
    return paths


def markdown_report(report: dict) -> str:
    lines = [
        "# nanologic evaluation",
        "",
        f"Examples: **{report['n_test']}** ({report.get('split', 'test')}).",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in (
        "equivalence_accuracy",
        "exact_match",
        "normalized_match",
        "parse_rate",
        "atom_f1",
        "connector_accuracy",
        "main_connector_accuracy",
        "partial_credit",
        "grounded_accuracy",
        "equivalence_any_mapping",
    ):
        lines.append(f"| {key} | {report[key]:.4f} |")
    lines += ["", "## Error categories (grounded)", "", "| category | n |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["error_categories"].items()]
    lines += ["", "## Compositional levels", "", "| level | score |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in report["compositional"].items()]
    for section in ("by_complexity", "by_connector", "by_block", "by_n_atoms", "by_length", "by_source"):
        lines += [
            "",
            f"## Equivalence {section.replace('_', ' ')}",
            "",
            "| group | n | equivalence | grounded |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {k} | {v['n']} | {v['equivalence_accuracy']:.4f} | {v['grounded_accuracy']:.4f} |"
            for k, v in report[section].items()
        ]
    lines += ["", "## Main-connector confusion (rows: gold, columns: predicted)", ""]
    cols = [*MAIN_LABELS, "unparsable"]
    lines += ["| gold \\ pred | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for gold, row in report["main_connector_confusion"].items():
        lines.append(f"| {gold} | " + " | ".join(str(row.get(c, 0)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_charts(report: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, section, title in zip(
        axes,
        ("by_complexity", "by_n_atoms", "by_connector"),
        ("by complexity", "by number of atoms", "by connector present"),
    ):
        keys = list(report[section])
        ax.bar(keys, [report[section][k]["equivalence_accuracy"] for k in keys], color="#4477aa")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"Equivalence {title}")
        for i, k in enumerate(keys):
            ax.text(i, 0.02, f"n={report[section][k]['n']}", ha="center", fontsize=8, color="white")
    fig.tight_layout()
    paths.append(out_dir / "accuracy.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    labels = [*MAIN_LABELS, "unparsable"]
    matrix = [[report["main_connector_confusion"].get(g, {}).get(p, 0) for p in labels] for g in MAIN_LABELS]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(MAIN_LABELS)), MAIN_LABELS)
    ax.set_xlabel("predicted main connector")
    ax.set_ylabel("gold main connector")
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "confusion.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
