"""What the three tabs of ``nanologic serve`` compute, as plain functions (no Gradio, no browser).

The web app (:mod:`nanologic.app`) only wires these to components. Every function takes the
model backend as an argument and returns fresh values, so nothing here is shared between
browser sessions. A backend is any object with
``formalize(sentences: list[str], batch_size=...) -> list[dict]`` returning, per sentence,
``atoms`` (letter -> definition), ``connectors`` ([symbol, cue] pairs), ``formula`` (Unicode),
``formula_ascii`` and ``valid_formula`` — :class:`nanologic.inference.Formalizer` (PyTorch) or
the llama.cpp formaliser.

User mistakes raise :class:`AppInputError` with a Spanish one-line message meant for the page.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from nanologic.argument import check_argument
from nanologic.data import has_words, normalize_text, read_jsonl, write_jsonl
from nanologic.errors import NanologicError
from nanologic.inference import formalize_output_row, shared_atoms, split_argument
from nanologic.logic import (
    Atom,
    FormulaError,
    Node,
    Not,
    assignments,
    atom_letters,
    atoms,
    evaluate,
    parse,
    rename,
    to_ascii,
    to_unicode,
)

# Longest sentence the page accepts. The default model has a 256-token context that must hold the
# prompt and the answer (whose atom definitions repeat most of the sentence); the generator's
# longest sentences are about 250 characters, so 400 leaves room and a 2,000-character paste is
# refused with this number instead of a truncated, unparsable answer.
MAX_SENTENCE_CHARS = 400
# Most atoms a truth table shown in the page may have (2^8 = 256 rows). Validity itself is
# decided over up to 16 atoms (nanologic.logic's limit), without showing the table.
MAX_TABLE_ATOMS = 8
MAX_ARGUMENT_ATOMS = 16
MAX_PREMISES = 8
# Sentences per model call in the batch tab: the progress bar moves once per chunk.
BATCH_CHUNK = 16
MAX_BATCH_LINES = 5000

EXAMPLE_SENTENCES = (
    "Si llueve y no llevo paraguas, entonces me mojo",
    "El servidor no responde a tiempo o los datos se pierden",
    "Si el firewall bloquea el tráfico entrante, el atacante no consigue acceso root",
    "No es cierto que el sistema esté actualizado",
    "Hay backup si y solo si el backup está cifrado",
)
EXAMPLE_ARGUMENTS = (
    ("Si llueve, me mojo.\nMe mojo.", "Llueve."),
    ("p → q\nq", "p"),
    ("p ∨ q\n¬p", "q"),
    ("Si el servidor se cae, los datos se pierden.\nLos datos no se pierden.", "El servidor no se cae."),
)
# Colours of atom letters in the highlighted sentence and the formula tree (colour-blind safe).
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#9c755f")
CONNECTIVE_COLOUR = "#bab0ac"


class Backend(Protocol):
    def formalize(self, sentences: list[str], batch_size: int = ...) -> list[dict]: ...


class AppInputError(Exception):
    """Bad input from the page (or no model loaded): a Spanish message shown in the page."""


def atom_colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def check_sentence(sentence: str | None, what: str = "La frase") -> str:
    """The normalised sentence, or AppInputError when it has no word (empty, blanks or punctuation
    only) or is longer than MAX_SENTENCE_CHARS."""
    text = normalize_text(sentence or "")
    if not has_words(text):
        raise AppInputError(f"{what} está vacía: escribe una frase en español.")
    if len(text) > MAX_SENTENCE_CHARS:
        raise AppInputError(
            f"{what} tiene {len(text):,} caracteres; el límite es {MAX_SENTENCE_CHARS} "
            "(el contexto del modelo). Divídela en frases más cortas."
        )
    return text


def require_backend(backend: Backend | None, load_error: str | None) -> Backend:
    if backend is None:
        raise AppInputError(load_error or "No hay ningún modelo cargado.")
    return backend


def run_model(backend: Backend, sentences: list[str], batch_size: int = BATCH_CHUNK) -> list[dict]:
    """backend.formalize with the backend's own user errors turned into page messages."""
    try:
        return backend.formalize(sentences, batch_size=batch_size)
    except NanologicError as exc:
        raise AppInputError(f"El modelo no pudo formalizar: {exc}") from None


def formula_error_text(exc: FormulaError, what: str = "La fórmula") -> str:
    """'La fórmula no es válida (posición N): reason' plus the text with a caret under N."""
    return (
        f"{what} no es válida (posición {exc.position + 1}): {exc.reason}\n{exc.text}\n{' ' * exc.position}^"
    )


def parse_formula(text: str | None, what: str = "La fórmula") -> Node:
    source = (text or "").strip()
    if not source:
        raise AppInputError(f"{what} está vacía.")
    try:
        return parse(source)
    except FormulaError as exc:
        raise AppInputError(formula_error_text(exc, what)) from None


# Characters of the formula notation (Unicode and ASCII spellings of nanologic.logic's parser).
_FORMULA_CHARS = re.compile(r"^[a-z0-9\s()¬∧∨→↔~!&|<=>\-]+$")


def looks_like_formula(text: str) -> bool:
    """True when a line is written in formula notation rather than Spanish.

    Only formula characters, and no two letters in a row (atoms are one letter plus digits), so
    "p → q" and the broken "p → (q" are formulas (the second gets a positioned error) while
    "llueve" or "Me mojo." are sentences for the model.
    """
    text = text.strip()
    return bool(text) and bool(_FORMULA_CHARS.match(text)) and not re.search(r"[a-z]{2}", text)


# ---------------------------------------------------------------------------------------------
# Truth tables, formula trees and the sentence highlighting
# ---------------------------------------------------------------------------------------------


@dataclass
class TruthTable:
    """Rows of a truth table over ``names``; ``columns`` are the formulas evaluated per row."""

    names: list[str]
    columns: list[str]
    rows: list[tuple[dict[str, bool], list[bool]]]

    def html(self, mark: Callable[[dict[str, bool], list[bool]], str] | None = None) -> str:
        """An HTML table; ``mark(row, values)`` gives each row's CSS class ('' for none)."""
        head = "".join(f"<th>{html.escape(n)}</th>" for n in [*self.names, *self.columns])
        body = []
        for assignment, values in self.rows:
            cls = mark(assignment, values) if mark else ""
            cells = [_vf(assignment[n]) for n in self.names] + [_vf(v, strong=True) for v in values]
            body.append(f'<tr class="{cls}">' + "".join(cells) + "</tr>")
        return (
            '<table class="nl-truth"><thead><tr>'
            + head
            + "</tr></thead><tbody>"
            + "".join(body)
            + "</tbody></table>"
        )


def _vf(value: bool, strong: bool = False) -> str:
    text = "V" if value else "F"
    return f"<td><b>{text}</b></td>" if strong else f"<td>{text}</td>"


def table_limit_message(n_atoms: int) -> str:
    return (
        f"La tabla de verdad no se muestra: la fórmula tiene {n_atoms} átomos y el límite de la "
        f"página es {MAX_TABLE_ATOMS} ({2**MAX_TABLE_ATOMS} filas)."
    )


def build_truth_table(formulas: Sequence[Node], names: Sequence[str] | None = None) -> TruthTable:
    """Truth table of ``formulas`` over ``names`` (default: their atoms in order of appearance).

    Raises AppInputError above MAX_TABLE_ATOMS atoms.
    """
    if names is None:
        names = []
        for f in formulas:
            names += [a for a in atoms(f) if a not in names]
    names = list(names)
    if len(names) > MAX_TABLE_ATOMS:
        raise AppInputError(table_limit_message(len(names)))
    rows = [(row, [evaluate(f, row) for f in formulas]) for row in assignments(names)]
    return TruthTable(names, [to_unicode(f) for f in formulas], rows)


def formula_tree_svg(node: Node, definitions: dict[str, str] | None = None) -> str:
    """An SVG drawing of the formula's syntax tree (root on top; hover an atom for its definition).

    Leaves are spaced evenly left to right, each inner node sits above the middle of its children.
    """
    definitions = definitions or {}
    order = atoms(node)
    placed: list[tuple[float, int, str, str]] = []  # x, depth, label, colour
    edges: list[tuple[float, int, float, int]] = []
    next_leaf = [0]

    def place(n: Node, d: int) -> float:
        if isinstance(n, Atom):
            x = float(next_leaf[0])
            next_leaf[0] += 1
            colour = atom_colour(order.index(n.name)) if n.name in order else CONNECTIVE_COLOUR
            placed.append((x, d, n.name, colour))
            return x
        kids = [n.child] if isinstance(n, Not) else [n.left, n.right]
        xs = [place(k, d + 1) for k in kids]
        x = sum(xs) / len(xs)
        for kx in xs:
            edges.append((x, d, kx, d + 1))
        placed.append((x, d, "¬" if isinstance(n, Not) else n.op, CONNECTIVE_COLOUR))
        return x

    place(node, 0)
    dx, dy, pad, r = 56, 60, 30, 17
    width = int(2 * pad + dx * max(next_leaf[0] - 1, 0))
    height = int(2 * pad + dy * max(d for _, d, _, _ in placed))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="nl-tree" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(to_unicode(node))}">'
    ]
    for x1, d1, x2, d2 in edges:
        parts.append(
            f'<line x1="{pad + dx * x1:.1f}" y1="{pad + dy * d1}" x2="{pad + dx * x2:.1f}" '
            f'y2="{pad + dy * d2}" stroke="#888" stroke-width="1.5"/>'
        )
    for x, d, label, colour in placed:
        title = definitions.get(label, "")
        tip = f"<title>{html.escape(label)}: {html.escape(title)}</title>" if title else ""
        parts.append(
            f'<g>{tip}<circle cx="{pad + dx * x:.1f}" cy="{pad + dy * d}" r="{r}" fill="{colour}"/>'
            f'<text x="{pad + dx * x:.1f}" y="{pad + dy * d + 6}" text-anchor="middle" '
            f'font-size="17" font-family="sans-serif" fill="#fff">{html.escape(label)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _fold(word: str) -> str:
    """Lower case without accents, for matching a definition's words against the sentence."""
    decomposed = unicodedata.normalize("NFD", word.lower())
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def _same_word(a: str, b: str) -> bool:
    # Atom definitions are in the indicative, the sentence may use the subjunctive ("llueve" /
    # "llueva", "está" / "esté"): words of 4+ letters match when all but their last letter agree.
    if a == b:
        return True
    return min(len(a), len(b)) >= 4 and a[:-1] == b[:-1] and abs(len(a) - len(b)) <= 1


_WORD = re.compile(r"\w+", re.UNICODE)


def ground_definitions(sentence: str, definitions: dict[str, str]) -> dict[str, list[tuple[int, int]]]:
    """Character spans of the sentence that each atom definition came from.

    For each definition, the stretch of the sentence (at most twice its length in words, so a
    negation or a moved subject fits: "se pierden los datos" for "los datos se pierden") holding
    the most of its words, then the fewest words an earlier atom took, then the shortest. Returns
    letter -> [(start, end), ...] in sentence order; an empty list means none of the definition's
    words is in the sentence (a definition the model did not ground in it).
    """
    words = [(m.start(), m.end(), _fold(m.group())) for m in _WORD.finditer(sentence)]
    taken: set[int] = set()
    spans: dict[str, list[tuple[int, int]]] = {}
    for letter, definition in definitions.items():
        target = [_fold(w) for w in _WORD.findall(definition)]
        window = 2 * len(target) + 1
        best: list[int] = []
        best_score: tuple[int, int, int] = (0, 0, 0)
        for start in range(len(words)):
            left = list(target)
            matched: list[int] = []
            for i in range(start, min(len(words), start + window)):
                hit = next((k for k, w in enumerate(left) if _same_word(words[i][2], w)), None)
                if hit is None:
                    continue
                left.pop(hit)
                matched.append(i)
                score = (len(matched), -sum(m in taken for m in matched), -(i - start))
                if score > best_score:
                    best, best_score = list(matched), score
        taken.update(best)
        spans[letter] = [(words[i][0], words[i][1]) for i in best]
    return spans


def source_words(sentence: str, spans: list[tuple[int, int]]) -> str:
    """The words of ``spans`` as written, adjacent ones joined by a space, gaps shown as '…'."""
    groups: list[list[int]] = []
    for start, end in sorted(spans):
        if groups and sentence[groups[-1][1] : start].strip() == "":
            groups[-1][1] = end
        else:
            groups.append([start, end])
    return " … ".join(sentence[a:b] for a, b in groups)


def find_cue(sentence: str, cue: str) -> tuple[int, int] | None:
    """Span of a connector's cue ("si … entonces" is found by its first part), case-insensitive."""
    first = re.split(r"\s*(?:…|\.\.\.)\s*", cue.strip())[0]
    if not first:
        return None
    match = re.search(rf"(?<!\w){re.escape(first)}(?!\w)", sentence, flags=re.IGNORECASE)
    return (match.start(), match.end()) if match else None


def highlight(sentence: str, labelled: list[tuple[tuple[int, int], str]]) -> list[tuple[str, str | None]]:
    """The sentence cut into (text, label or None) pieces, as gr.HighlightedText shows them.

    Overlapping spans: the first one listed wins.
    """
    owner: list[str | None] = [None] * len(sentence)
    for (start, end), label in labelled:
        for i in range(start, end):
            if owner[i] is None:
                owner[i] = label
    pieces: list[tuple[str, str | None]] = []
    i = 0
    while i < len(sentence):
        j = i
        while j < len(sentence) and owner[j] == owner[i]:
            j += 1
        # Spaces between two words of one atom belong to it, so "llevo paraguas" is one piece.
        joins = owner[i] is None and pieces and j < len(sentence) and owner[j] == pieces[-1][1]
        if joins and sentence[i:j].strip() == "":
            nxt = j
            while nxt < len(sentence) and owner[nxt] == owner[j]:
                nxt += 1
            pieces[-1] = (pieces[-1][0] + sentence[i:nxt], pieces[-1][1])
            i = nxt
            continue
        pieces.append((sentence[i:j], owner[i]))
        i = j
    return pieces


# ---------------------------------------------------------------------------------------------
# Tab 1: Formalizar
# ---------------------------------------------------------------------------------------------


@dataclass
class FormulaView:
    """What the page shows for one formula: normalised text, truth table and tree."""

    unicode: str
    ascii: str
    table_html: str
    tree_svg: str
    n_true: int
    n_rows: int
    message: str = ""


def render_formula(text: str | None, definitions: dict[str, str] | None = None) -> FormulaView:
    """Parse an (edited) formula with the project's parser; truth table with true rows marked.

    Raises AppInputError with the error position when it does not parse. Above MAX_TABLE_ATOMS the
    table is replaced by a message naming the limit (the tree is still drawn).
    """
    node = parse_formula(text)
    tree = formula_tree_svg(node, definitions)
    try:
        table = build_truth_table([node])
    except AppInputError as exc:
        return FormulaView(to_unicode(node), to_ascii(node), "", tree, 0, 0, str(exc))
    n_true = sum(values[0] for _, values in table.rows)
    table_html = table.html(lambda _, values: "nl-true" if values[0] else "")
    return FormulaView(to_unicode(node), to_ascii(node), table_html, tree, n_true, len(table.rows))


@dataclass
class Formalization:
    sentence: str
    atoms_rows: list[list[str]]  # [letter, definition, words of the sentence]
    highlighted: list[tuple[str, str | None]]
    colours: dict[str, str]
    connectors_rows: list[list[str]]  # [symbol, cue, found in the sentence: "sí" / "no"]
    definitions: dict[str, str]
    formula: FormulaView | None
    message: str = ""  # a problem with the model's answer (the rest is still shown)
    raw: dict = field(default_factory=dict)


def formalize_sentence(backend: Backend, sentence: str | None) -> Formalization:
    """Tab 1: the model's atoms, connectors and formula for one sentence, with the views above."""
    text = check_sentence(sentence)
    result = run_model(backend, [text], batch_size=1)[0]
    definitions = dict(result["atoms"])
    spans = ground_definitions(text, definitions)
    colours = {letter: atom_colour(i) for i, letter in enumerate(definitions)}
    labelled = [(span, letter) for letter, letter_spans in spans.items() for span in letter_spans]
    connectors_rows = []
    for symbol, cue in result["connectors"]:
        where = find_cue(text, cue)
        connectors_rows.append([symbol, cue, "sí" if where else "no"])
        if where:
            labelled.append((where, symbol))
            colours.setdefault(symbol, CONNECTIVE_COLOUR)
    atoms_rows = [
        [letter, definition, source_words(text, spans[letter]) or "(no está en la frase)"]
        for letter, definition in definitions.items()
    ]
    message, view = "", None
    if not result.get("valid_formula", True) or not result["formula"]:
        message = f"La fórmula del modelo no se puede analizar: {result['formula']!r}. Corrígela abajo."
    else:
        try:
            view = render_formula(result["formula"], definitions)
        except AppInputError as exc:
            message = str(exc)
    return Formalization(
        sentence=text,
        atoms_rows=atoms_rows,
        highlighted=highlight(text, sorted(labelled, key=lambda item: item[0])),
        colours=colours,
        connectors_rows=connectors_rows,
        definitions=definitions,
        formula=view,
        message=message,
        raw=result,
    )


# ---------------------------------------------------------------------------------------------
# Tab 2: Verificar argumento
# ---------------------------------------------------------------------------------------------


@dataclass
class ArgumentView:
    valid: bool
    verdict: str  # "VÁLIDO" / "INVÁLIDO"
    name: str  # the named form or fallacy, or a description when it has no classical name
    lines: list[list[str]]  # [role, what the user wrote, formula in shared letters]
    shared_rows: list[list[str]]  # [letter, definition, where it occurs]
    counterexample: dict[str, bool] | None
    table_html: str
    message: str = ""


def _argument_lines(premises_text: str | None, conclusion_text: str | None) -> tuple[list[str], str]:
    premises = [line.strip() for line in (premises_text or "").splitlines() if line.strip()]
    conclusion = (conclusion_text or "").strip()
    if not conclusion:
        if len(premises) == 1 and not looks_like_formula(premises[0]):
            # The whole argument in one line: "P1. P2. Por lo tanto, C."
            try:
                return split_argument(premises[0])
            except NanologicError:
                pass
        raise AppInputError(
            "Falta la conclusión: escríbela en su campo, o escribe el argumento entero en una línea "
            "(«Si llueve, me mojo. Me mojo. Por lo tanto, llueve.»)."
        )
    if not premises:
        raise AppInputError("Falta al menos una premisa (una por línea).")
    if len(premises) > MAX_PREMISES:
        raise AppInputError(f"Hay {len(premises)} premisas; el límite es {MAX_PREMISES}.")
    return premises, conclusion


def verify_argument(
    backend: Backend | None,
    premises_text: str | None,
    conclusion_text: str | None,
    load_error: str | None = None,
) -> ArgumentView:
    """Tab 2: premises and a conclusion, each a Spanish sentence or a formula.

    Sentences go to the model in one call and share atoms by definition
    (:func:`nanologic.inference.shared_atoms`); a formula keeps its letters, and sentence atoms get
    letters no formula uses. Validity by truth table (:func:`nanologic.argument.check_argument`).
    """
    premises, conclusion = _argument_lines(premises_text, conclusion_text)
    items = [*premises, conclusion]
    roles = [f"Premisa {i + 1}" for i in range(len(premises))] + ["Conclusión"]
    all_nodes, definitions = _argument_formulas(backend, load_error, items, roles)
    names = _argument_atom_names(all_nodes)
    result = check_argument(all_nodes[:-1], all_nodes[-1])
    lines = [[role, item, to_unicode(node)] for role, item, node in zip(roles, items, all_nodes)]
    occurs = {a: [role for role, n in zip(roles, all_nodes) if a in atoms(n)] for a in names}
    shared_rows = [
        [a, definitions.get(a, "(fórmula)"), ", ".join(occurs[a])] for a in names if len(occurs[a]) > 1
    ]
    if result.valid:
        name = result.form or "forma válida (sin nombre clásico)"
    else:
        name = result.fallacy or "falacia formal (sin nombre clásico)"
    table_html, message = _argument_table_html(all_nodes, names, result.counterexample)
    return ArgumentView(
        valid=result.valid,
        verdict="VÁLIDO" if result.valid else "INVÁLIDO",
        name=name,
        lines=lines,
        shared_rows=shared_rows,
        counterexample=result.counterexample,
        table_html=table_html,
        message=message,
    )


def _argument_formulas(
    backend: Backend | None, load_error: str | None, items: list[str], roles: list[str]
) -> tuple[list[Node], dict[str, str]]:
    """Each line's formula (a formula as written, a sentence through the model) and the
    definitions of the sentences' atoms, by letter. Errors name the line (its role)."""
    nodes: list[Node | None] = [None] * len(items)
    sentences: list[int] = []
    for i, (role, item) in enumerate(zip(roles, items)):
        if looks_like_formula(item):
            nodes[i] = parse_formula(item, role)
        else:
            check_sentence(item, role)
            sentences.append(i)
    formula_letters = {a for n in nodes if n is not None for a in atoms(n)}
    definitions: dict[str, str] = {}
    if sentences:
        formalised, definitions = _formalize_argument_sentences(
            require_backend(backend, load_error),
            [items[i] for i in sentences],
            [roles[i] for i in sentences],
            formula_letters,
        )
        for i, node in zip(sentences, formalised):
            nodes[i] = node
    return [n for n in nodes if n is not None], definitions


def _formalize_argument_sentences(
    backend: Backend, sentences: list[str], roles: list[str], taken: set[str]
) -> tuple[list[Node], dict[str, str]]:
    """The sentences' formulas in one model call, atoms shared by definition and lettered
    with letters not in ``taken`` (the formulas' own), and those atoms' definitions."""
    results = run_model(backend, [normalize_text(s) for s in sentences])
    for role, res in zip(roles, results):
        if not res.get("valid_formula", True):
            raise AppInputError(
                f"{role}: el modelo escribió una fórmula que no se puede analizar "
                f"({res['formula']!r}); escríbela tú como fórmula."
            )
    try:
        shared, shared_defs = shared_atoms(results)
    except NanologicError as exc:
        raise AppInputError(str(exc)) from None
    free = iter(a for a in atom_letters(len(taken) + len(shared_defs) + 1) if a not in taken)
    relabel = {old: next(free) for old in shared_defs}
    nodes = [
        rename(rename(node, {k: f"{k}_tmp" for k in relabel}), {f"{k}_tmp": v for k, v in relabel.items()})
        for node in shared
    ]
    return nodes, {relabel[old]: d for old, d in shared_defs.items()}


def _argument_atom_names(all_nodes: list[Node]) -> list[str]:
    """The argument's atoms in order of appearance; raises above MAX_ARGUMENT_ATOMS."""
    names: list[str] = []
    for n in all_nodes:
        names += [a for a in atoms(n) if a not in names]
    if len(names) > MAX_ARGUMENT_ATOMS:
        raise AppInputError(
            f"El argumento tiene {len(names)} átomos; el límite de la tabla de verdad es {MAX_ARGUMENT_ATOMS}."
        )
    return names


def _argument_table_html(
    all_nodes: list[Node], names: list[str], counterexample: dict[str, bool] | None
) -> tuple[str, str]:
    """The argument's truth table as HTML, the counterexample and rows with true premises
    marked, and a message ("" or why there is no table: too many atoms)."""
    try:
        table = build_truth_table(all_nodes, names)
    except AppInputError as exc:
        return "", str(exc)
    n_prem = len(all_nodes) - 1

    def mark(assignment: dict[str, bool], values: list[bool]) -> str:
        if assignment == counterexample:
            return "nl-counterexample"
        return "nl-premises-true" if all(values[:n_prem]) else ""

    return table.html(mark), ""


# ---------------------------------------------------------------------------------------------
# Tab 3: Lote
# ---------------------------------------------------------------------------------------------


def read_batch(path: str | Path, display_name: str | None = None) -> list[dict]:
    """Rows of an uploaded JSONL file, each with a string ``input`` of acceptable length.

    Errors name the file (as the user called it) and the line number.
    """
    path = Path(path)
    name = display_name or path.name
    try:
        rows = read_jsonl(path, required=("input",))
    except NanologicError as exc:
        raise AppInputError(str(exc).replace(str(path), name)) from None
    except UnicodeDecodeError:
        raise AppInputError(
            f"{name}: no es texto UTF-8 (se espera JSONL, un objeto JSON por línea)."
        ) from None
    if not rows:
        raise AppInputError(f'{name}: el archivo no tiene ninguna línea con {{"input": "…"}}.')
    if len(rows) > MAX_BATCH_LINES:
        raise AppInputError(f"{name}: {len(rows):,} líneas; el límite por archivo es {MAX_BATCH_LINES:,}.")
    lineno = _nonblank_line_numbers(path)
    for row, n in zip(rows, lineno):
        try:
            check_sentence(row["input"], "La frase")
        except AppInputError as exc:
            raise AppInputError(f"{name}:{n}: {exc}") from None
    return rows


def _nonblank_line_numbers(path: Path) -> list[int]:
    with path.open(encoding="utf-8-sig") as handle:
        return [n for n, line in enumerate(handle, start=1) if line.strip()]


def formalize_batch(
    backend: Backend,
    rows: list[dict],
    out_path: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Tab 3: formalise every row's ``input``, written in ``nanologic formalize --output``'s format.

    ``progress(done, total)`` is called after each chunk of BATCH_CHUNK sentences.
    """
    results: list[dict] = []
    total = len(rows)
    for start in range(0, total, BATCH_CHUNK):
        chunk = [normalize_text(r["input"]) for r in rows[start : start + BATCH_CHUNK]]
        results += run_model(backend, chunk)
        if progress is not None:
            progress(len(results), total)
    return write_jsonl(out_path, [formalize_output_row(r, res) for r, res in zip(rows, results)])


def results_preview(path: str | Path, limit: int = 20) -> list[list[str]]:
    """The first rows of a results file as [input, formula] for a preview table."""
    rows: list[list[str]] = []
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            if len(rows) >= limit:
                break
            row = json.loads(line)
            rows.append([row["input"], row["formula"]])
    return rows


# ---------------------------------------------------------------------------------------------
# Backend loading
# ---------------------------------------------------------------------------------------------

TRAIN_HINT = "entrena uno con `uv run --package nanologic train` (unos 14 minutos en 2 núcleos)"


def newest_run(runs_dir: str | Path = "runs") -> Path | None:
    """The run directory under ``runs_dir`` (up to two levels deep) with the newest model.safetensors."""
    root = Path(runs_dir)
    if not root.is_dir():
        return None
    candidates = [*root.glob("*/model.safetensors"), *root.glob("*/*/model.safetensors")]
    candidates = [c for c in candidates if (c.parent / "model_config.json").is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda c: c.stat().st_mtime).parent


@dataclass
class LoadedBackend:
    backend: Backend | None
    description: str  # what was loaded, for the page header and the terminal
    error: str | None  # why nothing was loaded (the page shows it; the app still runs)


def load_backend(
    checkpoint: str | Path | None = None, gguf: str | Path | None = None, runs_dir: str | Path = "runs"
) -> LoadedBackend:
    """The model for the app: --gguf, --checkpoint, or the newest run under ``runs_dir``.

    Never raises for a missing or incompatible model: the app starts anyway (formulas work without
    a model) and shows ``error`` in the page.
    """
    if gguf is not None:
        try:
            from nanologic.llamacpp import LlamaCppFormalizer
        except ImportError as exc:
            return LoadedBackend(None, "", f"El modelo GGUF no se puede usar: {exc}.")
        try:
            return LoadedBackend(LlamaCppFormalizer.from_gguf(gguf), f"GGUF {gguf}", None)
        except Exception as exc:  # noqa: BLE001 - any failure to open the file is shown in the page
            return LoadedBackend(None, "", f"No se pudo cargar el modelo GGUF {gguf}: {exc}")
    description = ""
    if checkpoint is None:
        checkpoint = newest_run(runs_dir)
        if checkpoint is None:
            return LoadedBackend(
                None,
                "",
                f"No hay ningún modelo entrenado en {runs_dir}/: {TRAIN_HINT}, o pasa "
                "--run DIR. Las fórmulas funcionan sin modelo.",
            )
        description = " (la ejecución más reciente en " + str(runs_dir) + "/)"
    from nanologic.inference import Formalizer

    try:
        return LoadedBackend(Formalizer.from_run(checkpoint), f"{checkpoint}{description}", None)
    except NanologicError as exc:
        return LoadedBackend(
            None, "", f"No se pudo cargar el modelo: {exc}. Las fórmulas funcionan sin modelo."
        )
