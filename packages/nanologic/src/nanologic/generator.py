"""Deterministic generator of Spanish sentences with gold propositional formulas.

A sentence is built from a logical skeleton: literals (a clause, possibly negated inside the
clause, "no hay backup" -> ¬q), small groups of literals ("llueve y hace frío", "ni A ni B"), and
one top-level construction chosen among the cues Spanish really uses, in both clause orders.
Every construction knows the formula it expresses and the cue it used, so atoms, connectors,
formula and a reasoning trace ("thought") come out of the construction, not from pattern matching.

Atoms are lettered p, q, r, ... by first mention in the sentence, so one sentence has exactly one
gold formula (the seed's several-formulas-per-sentence made exact match ill-posed).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from nanologic.clauses import BLOCKS, CLAUSES, Clause
from nanologic.logic import (
    AND,
    IFF,
    IMPLIES,
    NOT,
    OR,
    Atom,
    Binary,
    Node,
    Not,
    atom_letters,
    atoms,
    connectors_used,
    depth,
    main_connector,
    rename,
    to_ascii,
    to_unicode,
)

CONNECTOR_NAMES = {
    NOT: "negación",
    AND: "conjunción",
    OR: "disyunción",
    IMPLIES: "implicación",
    IFF: "bicondicional",
}

# Why a cue maps to its connective, for the reasoning trace.
_CUE_NOTES = {
    "solo si": "«solo si» marca la condición necesaria: lo que va antes de «solo si» implica lo que va después",
    "es necesario que": "«es necesario que» marca la condición necesaria: el fin implica la condición",
    "basta con que": "«basta con que» marca una condición suficiente",
    "a menos que": "«a menos que» equivale a «si no»: la negación de la condición implica el resto",
    "salvo que": "«salvo que» equivale a «si no»: la negación de la condición implica el resto",
    "dado que": "«dado que» afirma su premisa, así que ambas partes se unen con una conjunción",
    "ya que": "«ya que» afirma su premisa, así que ambas partes se unen con una conjunción",
    "puesto que": "«puesto que» afirma su premisa, así que ambas partes se unen con una conjunción",
    "únicamente cuando": "«únicamente cuando» expresa una condición necesaria y suficiente",
    "pero no ambos": "«o … pero no ambos» es una disyunción exclusiva: (A ∨ B) ∧ ¬(A ∧ B)",
    "pero no las dos cosas": "«o … pero no las dos cosas» es una disyunción exclusiva: (A ∨ B) ∧ ¬(A ∧ B)",
    "aunque": "«aunque» afirma las dos partes: es una conjunción con contraste",
    "pero": "«pero» afirma las dos partes: es una conjunción con contraste",
    "sin embargo": "«sin embargo» afirma las dos partes: es una conjunción con contraste",
    "ni...ni": "«ni … ni» niega cada parte y las une: ¬A ∧ ¬B",
    "tampoco": "«tampoco» añade otra negación unida por conjunción",
    "no...a la vez": "«no … a la vez» niega que ocurran juntas: ¬(A ∧ B)",
}


# The cue inventory the constructions below realise, by role (how a rule-based reader must treat the
# cue). Public so that the baseline formaliser and the evaluation's "cue unknown" category read the
# generator's inventory instead of copying it; a test checks that every cue an example records is here.
CUES: dict[str, tuple[str, ...]] = {
    "negation": ("no", "tampoco"),  # inside a clause: negates that clause
    "negation_prefix": ("no es cierto que", "es falso que"),  # negates what follows
    "not_both": ("no puede ser que",),  # "no puede ser que A y que B a la vez": ¬(A ∧ B)
    "not_both_end": ("a la vez",),
    "conjunction": ("y", "e", "además", "pero", "aunque", "sin embargo"),
    "premise": ("dado que", "ya que", "puesto que"),  # asserts its clause: A ∧ B
    "disjunction": ("o", "u"),
    "either_or": ("o bien",),  # "o bien A, o bien B"
    "exclusive_end": ("pero no ambos", "pero no las dos cosas"),  # "o A o B, pero no ambos"
    "nor": ("ni",),  # "ni A ni B": ¬A ∧ ¬B
    "conditional": ("si", "cuando", "siempre que", "en caso de que"),  # antecedent follows the cue
    "conditional_then": ("entonces",),
    "implies": ("implica",),  # "que A implica que B": A → B
    "only_if": ("solo si",),  # "A solo si B": A → B
    "necessary": ("es necesario que",),  # "para que A, es necesario que B": A → B
    "purpose": ("para que",),
    "sufficient": ("basta con que",),  # "basta con que A para que B": A → B
    "unless": ("a menos que", "salvo que"),  # "B a menos que A": ¬A → B
    "biconditional": ("si y solo si", "únicamente cuando", "equivale a"),
    "either_antecedent": ("ya sea que",),  # "ya sea que A o que B, C": (A ∨ B) → C
}


def known_cues() -> tuple[str, ...]:
    """Every cue phrase of :data:`CUES`, longest first (the order a reader should match them in)."""
    return tuple(sorted({c for cues in CUES.values() for c in cues}, key=lambda c: (-len(c), c)))


@dataclass
class Phrase:
    """A piece of sentence with the clauses it mentions (in textual order), its cues and formula."""

    text: str
    formula: Node
    mentions: list[int] = field(default_factory=list)
    cues: list[tuple[str, str]] = field(default_factory=list)


def _cat(formula: Node, *parts: Phrase | str) -> Phrase:
    text, mentions, cues = [], [], []
    for part in parts:
        if isinstance(part, str):
            text.append(part)
        else:
            text.append(part.text)
            mentions += part.mentions
            cues += part.cues
    return Phrase("".join(text), formula, mentions, cues)


def _y(next_text: str) -> str:
    """'y' becomes 'e' before an /i/ sound (hielo keeps 'y')."""
    low = next_text.lower()
    return "e" if (low.startswith("i") or low.startswith("hi")) and not low.startswith("hie") else "y"


def _o(next_text: str) -> str:
    """'o' becomes 'u' before an /o/ sound."""
    low = next_text.lower()
    return "u" if low.startswith("o") or low.startswith("ho") else "o"


@dataclass(frozen=True)
class Literal:
    clause_id: int
    negated: bool = False


class SentenceBuilder:
    """Realises logical skeletons over one draw of clauses."""

    def __init__(self, rng: random.Random, clauses: list[Clause]) -> None:
        self.rng = rng
        self.clauses = clauses

    # -- literals and groups ------------------------------------------------------------------
    def lit(self, literal: Literal, mood: str = "ind", tampoco: bool = False) -> Phrase:
        clause = self.clauses[literal.clause_id]
        atom: Node = Atom(f"c{literal.clause_id}")
        cues: list[tuple[str, str]] = []
        if tampoco:
            atom, cues = Not(atom), [(NOT, "tampoco")]
        elif literal.negated:
            atom, cues = Not(atom), [(NOT, "no")]
        text = clause.text(literal.negated and not tampoco, mood, tampoco)
        return Phrase(text, atom, [literal.clause_id], cues)

    def group(self, lits: list[Literal], kind: str, mood: str = "ind") -> Phrase:
        """A group of literals: 'lit', 'and' (2-3), 'or' (2), 'obien' (2), 'nor' (2, positive)."""
        if kind == "lit":
            return self.lit(lits[0], mood)
        if kind == "nor":
            a, b = (self.lit(Literal(x.clause_id), mood) for x in lits)
            formula = Binary(AND, Not(a.formula), Not(b.formula))
            return _cat(
                formula, Phrase("ni ", formula, [], [(NOT, "ni...ni"), (AND, "ni...ni")]), a, " ni ", b
            )
        parts = [self.lit(x, mood) for x in lits]
        if kind == "and":
            formula = parts[0].formula
            for p in parts[1:]:
                formula = Binary(AND, formula, p.formula)
            conj = _y(parts[-1].text)
            cue = Phrase("", formula, [], [(AND, conj)])
            if len(parts) == 2:
                return _cat(formula, parts[0], f" {conj} ", cue, parts[1])
            return _cat(formula, parts[0], ", ", parts[1], f" {conj} ", cue, parts[2])
        formula = Binary(OR, parts[0].formula, parts[1].formula)
        if kind == "obien":
            cue = Phrase("", formula, [], [(OR, "o bien")])
            return _cat(formula, "o bien ", cue, parts[0], ", o bien ", parts[1])
        conj = _o(parts[1].text)
        cue = Phrase("", formula, [], [(OR, conj)])
        return _cat(formula, parts[0], f" {conj} ", cue, parts[1])

    # -- top-level constructions -----------------------------------------------------------------
    def conditional(self, ante: Callable[[str], Phrase], cons: Callable[[str], Phrase]) -> Phrase:
        """ante -> cons, said in one of the many Spanish ways, both clause orders."""
        style = self.rng.choice(
            [
                "si_entonces",
                "si",
                "si_post",
                "cuando",
                "cuando_post",
                "siempre_que",
                "siempre_que_post",
                "en_caso",
                "en_caso_post",
                "implica",
                "solo_si",
                "solo_si_pre",
                "necesario",
                "necesario_post",
                "basta",
            ]
        )
        a_ind, c_ind = ante("ind"), cons("ind")
        f = Binary(IMPLIES, a_ind.formula, c_ind.formula)

        def cue(c: str) -> Phrase:
            return Phrase("", f, [], [(IMPLIES, c)])

        if style == "si_entonces":
            return _cat(f, "si ", cue("si...entonces"), a_ind, ", entonces ", c_ind)
        if style == "si":
            return _cat(f, "si ", cue("si"), a_ind, ", ", c_ind)
        if style == "si_post":
            return _cat(f, c_ind, " si ", cue("si"), a_ind)
        if style == "cuando":
            return _cat(f, "cuando ", cue("cuando"), a_ind, ", ", c_ind)
        if style == "cuando_post":
            return _cat(f, c_ind, " cuando ", cue("cuando"), a_ind)
        if style == "siempre_que":
            return _cat(f, "siempre que ", cue("siempre que"), a_ind, ", ", c_ind)
        if style == "siempre_que_post":
            return _cat(f, c_ind, " siempre que ", cue("siempre que"), a_ind)
        a_sub = ante("sub")
        if style == "en_caso":
            return _cat(f, "en caso de que ", cue("en caso de que"), a_sub, ", ", c_ind)
        if style == "en_caso_post":
            return _cat(f, c_ind, " en caso de que ", cue("en caso de que"), a_sub)
        if style == "implica":
            return _cat(f, "que ", a_sub, " implica que ", cue("implica"), c_ind)
        if style == "solo_si":
            return _cat(f, a_ind, " solo si ", cue("solo si"), c_ind)
        if style == "solo_si_pre":
            return _cat(f, "solo si ", cue("solo si"), c_ind, ", ", a_ind)
        c_sub = cons("sub")
        if style == "necesario":
            return _cat(f, "para que ", a_sub, ", es necesario que ", cue("es necesario que"), c_sub)
        if style == "necesario_post":
            return _cat(f, "es necesario que ", cue("es necesario que"), c_sub, " para que ", a_sub)
        return _cat(f, "basta con que ", cue("basta con que"), a_sub, " para que ", c_sub)

    def simple_conditional(self, ante: Callable[[str], Phrase], cons: Callable[[str], Phrase]) -> Phrase:
        """A conditional that starts with its connective (safe to coordinate with another one)."""
        a, c = ante("ind"), cons("ind")
        f = Binary(IMPLIES, a.formula, c.formula)
        word, cue = self.rng.choice([("si", "si"), ("cuando", "cuando"), ("siempre que", "siempre que")])
        return _cat(f, f"{word} ", Phrase("", f, [], [(IMPLIES, cue)]), a, ", ", c)

    def unless(self, cond: Callable[[str], Phrase], main: Callable[[str], Phrase]) -> Phrase:
        """main unless cond  ==  ¬cond → main."""
        c_sub, m = cond("sub"), main("ind")
        f = Binary(IMPLIES, Not(c_sub.formula), m.formula)
        word = self.rng.choice(["a menos que", "salvo que"])
        cue = Phrase("", f, [], [(IMPLIES, word), (NOT, word)])
        # "A o B salvo que C" would be ambiguous, so a compound main clause comes after the cue.
        if isinstance(m.formula, Atom | Not) and self.rng.random() < 0.5:
            return _cat(f, m, f" {word} ", cue, c_sub)
        return _cat(f, f"{word} ", cue, c_sub, ", ", m)

    def biconditional(self, left: Callable[[str], Phrase], right: Callable[[str], Phrase]) -> Phrase:
        style = self.rng.choice(["ssi", "equivale", "unicamente"])
        if style == "equivale":
            a, b = left("sub"), right("sub")
            f = Binary(IFF, a.formula, b.formula)
            return _cat(f, "que ", a, " equivale a que ", Phrase("", f, [], [(IFF, "equivale a")]), b)
        a, b = left("ind"), right("ind")
        f = Binary(IFF, a.formula, b.formula)
        if style == "ssi":
            return _cat(f, a, " si y solo si ", Phrase("", f, [], [(IFF, "si y solo si")]), b)
        return _cat(f, a, " únicamente cuando ", Phrase("", f, [], [(IFF, "únicamente cuando")]), b)

    def conjunction(self, first: Callable[[str], Phrase], second: Callable[[str], Phrase]) -> Phrase:
        """first ∧ second with a contrast, addition or asserted-premise cue (textual order)."""
        style = self.rng.choice(
            ["ademas", "pero", "aunque", "aunque_post", "sin_embargo", "premisa", "premisa_post"]
        )
        a, b = first("ind"), second("ind")
        f = Binary(AND, a.formula, b.formula)

        def cue(c: str) -> Phrase:
            return Phrase("", f, [], [(AND, c)])

        if style == "ademas":
            return _cat(f, a, "; además, ", cue("además"), b)
        if style == "pero":
            return _cat(f, a, ", pero ", cue("pero"), b)
        if style == "aunque":
            return _cat(f, "aunque ", cue("aunque"), a, ", ", b)
        if style == "aunque_post":
            return _cat(f, a, ", aunque ", cue("aunque"), b)
        if style == "sin_embargo":
            return _cat(f, a, "; sin embargo, ", cue("sin embargo"), b)
        word = self.rng.choice(["dado que", "ya que", "puesto que"])
        if style == "premisa":
            return _cat(f, f"{word} ", cue(word), a, ", ", b)
        return _cat(f, a, f", {word} ", cue(word), b)

    def disjunction(self, first: Callable[[str], Phrase], second: Callable[[str], Phrase]) -> Phrase:
        a, b = first("ind"), second("ind")
        f = Binary(OR, a.formula, b.formula)
        return _cat(f, "o bien ", Phrase("", f, [], [(OR, "o bien")]), a, ", o bien ", b)

    def exclusive(self, a_lit: Literal, b_lit: Literal) -> Phrase:
        a, b = self.lit(a_lit), self.lit(b_lit)
        f = Binary(AND, Binary(OR, a.formula, b.formula), Not(Binary(AND, a.formula, b.formula)))
        ending = self.rng.choice(["pero no ambos", "pero no las dos cosas"])
        cue = Phrase("", f, [], [(OR, "o"), (AND, "pero"), (NOT, ending)])
        return _cat(f, "o ", cue, a, f" {_o(b.text)} ", b, f", {ending}")

    def either(self, a_lit: Literal, b_lit: Literal, cons: Callable[[str], Phrase]) -> Phrase:
        """'Ya sea que A o que B, C'  ==  (A ∨ B) → C."""
        a, b, c = self.lit(a_lit, "sub"), self.lit(b_lit, "sub"), cons("ind")
        f = Binary(IMPLIES, Binary(OR, a.formula, b.formula), c.formula)
        cue = Phrase("", f, [], [(OR, "ya sea que"), (IMPLIES, "ya sea que")])
        return _cat(f, "ya sea que ", cue, a, " o que ", b, ", ", c)

    def negation(self, inner: Callable[[str], Phrase]) -> Phrase:
        word = self.rng.choice(["no es cierto que", "es falso que"])
        a = inner("sub")
        f = Not(a.formula)
        return _cat(f, f"{word} ", Phrase("", f, [], [(NOT, word)]), a)

    def tampoco(self, a_lit: Literal, b_lit: Literal) -> Phrase:
        a = self.lit(Literal(a_lit.clause_id, True))
        b = self.lit(Literal(b_lit.clause_id), tampoco=True)
        f = Binary(AND, a.formula, b.formula)
        return _cat(f, a, f" {_y(b.text)} ", Phrase("", f, [], [(AND, "y")]), b)

    def not_both(self, a_lit: Literal, b_lit: Literal) -> Phrase:
        a, b = self.lit(Literal(a_lit.clause_id), "sub"), self.lit(Literal(b_lit.clause_id), "sub")
        f = Not(Binary(AND, a.formula, b.formula))
        cue = Phrase("", f, [], [(NOT, "no...a la vez"), (AND, "y")])
        return _cat(f, "no puede ser que ", cue, a, " y que ", b, " a la vez")


# ---------------------------------------------------------------------------------------------
# Skeleton sampling
# ---------------------------------------------------------------------------------------------


class _Draw:
    """Fresh clause ids for one sentence, with literal negation drawn at a fixed rate.

    Even odds make a literal's polarity independent of its place in the skeleton, so the model
    must read it from the sentence: at 0.3 the held-out polarity combinations were the main error.
    """

    def __init__(self, rng: random.Random, n_clauses: int, p_neg: float = 0.5) -> None:
        self.rng = rng
        self.order = rng.sample(range(n_clauses), n_clauses)
        self.next = 0
        self.p_neg = p_neg

    def lit(self, allow_neg: bool = True) -> Literal:
        cid = self.order[self.next]
        self.next += 1
        return Literal(cid, allow_neg and self.rng.random() < self.p_neg)

    def group(
        self,
        b: SentenceBuilder,
        max_literals: int,
        allow_neg: bool = True,
        kinds: tuple[str, ...] = ("and", "or", "obien", "nor"),
    ) -> Callable[[str], Phrase]:
        """Pick a group shape and its literals; returns a mood -> Phrase realiser (fixed wording)."""
        shapes = ["lit", "lit", "lit"]
        if max_literals >= 2:
            shapes += [k for k in kinds if allow_neg or k != "nor"]
        if max_literals >= 3:
            shapes += ["and3"]
        kind = self.rng.choice(shapes)
        if kind == "lit":
            lits = [self.lit(allow_neg)]
        elif kind == "and3":
            kind, lits = "and", [self.lit(allow_neg) for _ in range(3)]
        elif kind == "nor":
            lits = [self.lit(False), self.lit(False)]
        else:
            lits = [self.lit(allow_neg), self.lit(allow_neg)]
        state = self.rng.getstate()

        def realise(mood: str) -> Phrase:
            # Same random choices whichever mood is asked for, so ind/sub renderings agree.
            saved = b.rng.getstate()
            b.rng.setstate(state)
            phrase = b.group(lits, kind, mood)
            b.rng.setstate(saved)
            return phrase

        return realise


def _reuse(b: SentenceBuilder, lit: Literal) -> Callable[[str], Phrase]:
    return lambda mood: b.lit(lit, mood)


FAMILIES = (
    "literal",
    "group",
    "either",
    "conditional",
    "conditional_group",
    "unless",
    "biconditional",
    "conjunction",
    "disjunction",
    "exclusive",
    "negation",
    "nor",
    "tampoco",
    "not_both",
    "two_conditionals",
    "chain",
    "dilemma",
    "premise_conditional",
    "negated_conditional",
)


# Antecedents avoid "o bien … o bien", which reads badly after "si".
_ANTE = ("and", "or", "nor")


def _skeleton(family: str, b: SentenceBuilder, d: _Draw) -> Phrase:
    rng = b.rng
    if family == "literal":
        return b.lit(d.lit())
    if family == "conditional":
        return b.conditional(d.group(b, 1), d.group(b, 1))
    if family == "conditional_group":
        return b.conditional(d.group(b, 3, kinds=_ANTE), d.group(b, 2))
    if family == "unless":
        return b.unless(d.group(b, 2, allow_neg=False, kinds=("and", "or")), d.group(b, 2))
    if family == "group":
        return d.group(b, 3, kinds=("and", "or", "obien"))("ind")
    if family == "either":
        return b.either(d.lit(), d.lit(), d.group(b, 1))
    if family == "biconditional":
        return b.biconditional(d.group(b, 1), d.group(b, rng.choice([1, 2])))
    if family == "conjunction":
        return b.conjunction(d.group(b, 2), d.group(b, 2))
    if family == "disjunction":
        # A nested "o bien" inside "o bien …, o bien" reads as a stutter ("o bien o bien").
        return b.disjunction(d.group(b, 1), d.group(b, 2, kinds=("and", "or", "nor")))
    if family == "exclusive":
        return b.exclusive(d.lit(), d.lit())
    if family == "negation":
        return b.negation(d.group(b, 2, allow_neg=False))
    if family == "nor":
        return b.group([d.lit(False), d.lit(False)], "nor")
    if family == "tampoco":
        return b.tampoco(d.lit(), d.lit())
    if family == "not_both":
        return b.not_both(d.lit(), d.lit())
    if family == "two_conditionals":
        first = b.simple_conditional(d.group(b, 2, kinds=_ANTE), d.group(b, 1))
        second = b.simple_conditional(d.group(b, 1), d.group(b, 2))
        return _coordinate(rng, first, second)
    if family == "chain":
        x, y, z = d.lit(), d.lit(), d.lit()
        first = b.simple_conditional(_reuse(b, x), _reuse(b, y))
        second = b.simple_conditional(_reuse(b, y), _reuse(b, z))
        return _coordinate(rng, first, second)
    if family == "dilemma":
        a, bb, c, dd = d.lit(False), d.lit(), d.lit(False), d.lit()
        first = b.simple_conditional(_reuse(b, a), _reuse(b, bb))
        second = b.simple_conditional(_reuse(b, c), _reuse(b, dd))
        both = _coordinate(rng, first, second)
        alt = b.group([a, c], "or")
        f = Binary(AND, both.formula, alt.formula)
        return _cat(f, both, "; y además, ", Phrase("", f, [], [(AND, "y además")]), alt)
    if family == "premise_conditional":
        premise = d.group(b, 1)("ind")
        cond = b.simple_conditional(d.group(b, 2, kinds=_ANTE), d.group(b, 1))
        f = Binary(AND, premise.formula, cond.formula)
        word = rng.choice(["dado que", "ya que", "puesto que"])
        return _cat(f, f"{word} ", Phrase("", f, [], [(AND, word)]), premise, ", ", cond)
    if family == "negated_conditional":
        a, c = d.lit(), d.lit()
        inner = Binary(IMPLIES, b.lit(a).formula, b.lit(c).formula)
        f = Not(inner)
        cue = Phrase("", f, [], [(NOT, "no es cierto que"), (IMPLIES, "si...entonces")])
        return _cat(f, "no es cierto que, si ", cue, b.lit(a), ", entonces ", b.lit(c))
    raise ValueError(f"unknown family {family!r}")


def _coordinate(rng: random.Random, first: Phrase, second: Phrase) -> Phrase:
    f = Binary(AND, first.formula, second.formula)
    joiner, cue = rng.choice([("; y ", "y"), ("; además, ", "además"), ("; pero ", "pero")])
    return _cat(f, first, joiner, Phrase("", f, [], [(AND, cue)]), second)


# ---------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------


def complexity_of(formula: Node) -> str:
    """simple: ≤2 atoms and ≤1 binary connective; advanced: ≥4 atoms or depth 3; else intermediate."""
    n_atoms = len(atoms(formula))
    n_binary = sum(1 for _ in _binaries(formula))
    if n_atoms <= 2 and n_binary <= 1:
        return "simple"
    if n_atoms >= 4 or depth(formula) >= 3:
        return "advanced"
    return "intermediate"


def _binaries(node: Node) -> Iterator[Binary]:
    if isinstance(node, Binary):
        yield node
        yield from _binaries(node.left)
        yield from _binaries(node.right)
    elif isinstance(node, Not):
        yield from _binaries(node.child)


def _sentence_case(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def _thought(atoms_list: list[dict], connectors: list[dict], formula: Node) -> list[dict]:
    steps = [
        "Identifico las proposiciones atómicas: "
        + "; ".join(f"{a['atom']} = «{a['definition']}»" for a in atoms_list)
        + "."
    ]
    for c in connectors:
        note = _CUE_NOTES.get(c["natural_language_cue"])
        name = CONNECTOR_NAMES[c["connector"]]
        steps.append(
            (note + f" ({c['connector']}).")
            if note
            else f"«{c['natural_language_cue']}» indica una {name} ({c['connector']})."
        )
    main = main_connector(formula)
    if main == "atom":
        steps.append("La frase afirma una sola proposición, sin conectores.")
    else:
        steps.append(f"El conector principal es {main} ({CONNECTOR_NAMES[main]}).")
    steps.append(f"Fórmula: {to_unicode(formula)}.")
    return [{"step": i + 1, "explanation": s} for i, s in enumerate(steps)]


def example_from_phrase(phrase: Phrase, clauses: list[Clause], block: str) -> dict:
    """Turn a realised skeleton into a raw example in the seed's JSON schema."""
    first_mention: dict[int, None] = {}
    for cid in phrase.mentions:
        first_mention.setdefault(cid, None)
    letters = atom_letters(len(first_mention))
    mapping = {f"c{cid}": letter for cid, letter in zip(first_mention, letters)}
    formula = rename(phrase.formula, mapping)
    atoms_list = [
        {"atom": letter, "definition": clauses[cid].definition} for cid, letter in zip(first_mention, letters)
    ]
    seen: set[tuple[str, str]] = set()
    connectors = []
    for symbol, cue in phrase.cues:
        if (symbol, cue) not in seen:
            seen.add((symbol, cue))
            connectors.append({"connector": symbol, "natural_language_cue": cue})
    sentence = _sentence_case(phrase.text)
    return {
        "id": hashlib.sha1(sentence.encode()).hexdigest()[:12],
        "natural_language_input": sentence,
        "complexity": complexity_of(formula),
        "thought": {
            "reasoning_steps": _thought(atoms_list, connectors, formula),
            "identified_atoms": atoms_list,
            "identified_connectors": connectors,
        },
        "output": {"formula": to_unicode(formula), "formula_ascii": to_ascii(formula)},
        "block": block,
    }


# Family weights give roughly a third of each complexity level after the clean stage.
_WEIGHTS = {
    "literal": 2,
    "group": 3,
    "either": 3,
    "conditional": 9,
    "conditional_group": 10,
    "unless": 5,
    "biconditional": 5,
    "conjunction": 6,
    "disjunction": 4,
    "exclusive": 3,
    "negation": 4,
    "nor": 3,
    "tampoco": 3,
    "not_both": 3,
    "two_conditionals": 7,
    "chain": 4,
    "dilemma": 3,
    "premise_conditional": 5,
    "negated_conditional": 2,
}
_HARD = ("conditional_group", "two_conditionals", "dilemma", "premise_conditional", "chain")


def generate_one(rng: random.Random, block: str) -> dict:
    """One example of ``block``. The mixed block asks for ≥4 atoms and ≥3 distinct connectives."""
    if block == BLOCKS[4]:
        pool = CLAUSES[block] + rng.sample([c for blk in BLOCKS[:4] for c in CLAUSES[blk]], 40)
        while True:
            builder = SentenceBuilder(rng, pool)
            phrase = _skeleton(rng.choice(_HARD), builder, _Draw(rng, len(pool)))
            formula = phrase.formula
            if len({*phrase.mentions}) >= 4 and len(connectors_used(formula)) >= 3:
                return example_from_phrase(phrase, pool, block)
    pool = CLAUSES[block]
    families = list(_WEIGHTS)
    family = rng.choices(families, weights=[_WEIGHTS[f] for f in families])[0]
    builder = SentenceBuilder(rng, pool)
    phrase = _skeleton(family, builder, _Draw(rng, len(pool)))
    return example_from_phrase(phrase, pool, block)


def generate(n: int, seed: int = 0) -> list[dict]:
    """``n`` examples, blocks in rotation; the same seed gives the same list."""
    rng = random.Random(seed)
    return [generate_one(rng, BLOCKS[i % len(BLOCKS)]) for i in range(n)]


def distinct_clauses() -> int:
    return len({c.definition for blk in BLOCKS for c in CLAUSES[blk]})
