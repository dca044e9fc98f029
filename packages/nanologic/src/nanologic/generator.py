"""Deterministic generator of Spanish sentences with gold propositional formulas.

A sentence is built from a logical skeleton: literals (a clause, possibly negated inside the
clause, "no hay backup" -> ¬q), small groups of literals ("llueve y hace frío", "ni A ni B"), and
one top-level construction chosen among the cues Spanish really uses, in both clause orders.
Every construction knows the formula it expresses and the cue it used, so atoms, connectors,
formula and a reasoning trace ("thought") come out of the construction, not from pattern matching.

Atoms are lettered p, q, r, ... by first mention in the sentence, so one sentence has exactly one
gold formula (the original's several-formulas-per-sentence made exact match ill-posed).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from nanologic.clauses import (
    BLOCKS,
    Clause,
    ClauseSampler,
    coordinated_complement,
    elide_repeated_subjects,
    normalises,
    plural_predicate,
    strip_subject_marks,
)
from nanologic.clauses import distinct_clauses as distinct_clauses
from nanologic.configs import DEFAULT_COMMA_LESS_SHARE
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
    "excepto que": "«excepto que» equivale a «si no»: la negación de la condición implica el resto",
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
    "negation_symbol": ("≠",),  # "x ≠ 2" is ¬(x = 2): the atom keeps "="
    "negation_prefix": (
        "no es cierto que",
        "es falso que",
        "no pasa que",
        "es mentira que",
        "no es el caso que",
        "no es el caso de que",
    ),  # negates what follows
    "not_both": ("no puede ser que",),  # "no puede ser que A y que B a la vez": ¬(A ∧ B)
    "not_both_end": ("a la vez",),
    "conjunction": ("y", "e", "además", "y además", "pero", "aunque", "sin embargo"),
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
    "unless": ("a menos que", "salvo que", "excepto que"),  # "B a menos que A": ¬A → B
    "biconditional": ("si y solo si", "únicamente cuando", "equivale a"),
    "either_antecedent": ("ya sea que",),  # "ya sea que A o que B, C": (A ∨ B) → C
    # Textbook cues added for issue 13 (roles above keep their names; these are new roles).
    "both": ("tanto", "como"),  # "tanto A como B <predicado>": A ∧ B, predicate shared
    "only_when": ("solo cuando", "sólo cuando"),  # "A solo cuando B": A → B
    "condition_after": ("siempre y cuando",),  # "A siempre y cuando B": B → A
    "purpose_necessary": ("para", "hay que", "se debe", "es necesario"),  # "para A, hay que B": A → B
    "necessary_condition": ("condición necesaria",),  # "B es condición necesaria para A": A → B
    "sufficient_condition": ("condición suficiente",),  # "A es condición suficiente para B": A → B
    "iff_condition": ("condición necesaria y suficiente",),  # A ↔ B
    "biconditional_when": ("cuando y solo cuando", "cuando y sólo cuando"),  # A ↔ B
    "excluded_middle": (
        "o no",
        "de todos modos",
        "de todas formas",
    ),  # "o A o no, pero B de todos modos": (A ∨ ¬A) ∧ B
    "both_conditions": ("tanto si", "como si"),  # "tanto si A como si B, C": (A → C) ∧ (B → C)
    # Opens the conclusion of an argument said in several sentences: "Si A, B. No B. Por lo
    # tanto, no A." is ((A → B) ∧ ¬B) → ¬A, the premises joined, implying the conclusion.
    "conclusion": ("por lo tanto", "luego", "así que", "en consecuencia", "por consiguiente", "entonces"),
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
    sub_mentions: list[int] = field(default_factory=list)  # said in the subjunctive or infinitive


def _cat(formula: Node, *parts: Phrase | str) -> Phrase:
    text, mentions, cues, subs = [], [], [], []
    for part in parts:
        if isinstance(part, str):
            text.append(part)
        else:
            text.append(part.text)
            mentions += part.mentions
            cues += part.cues
            subs += part.sub_mentions
    return Phrase("".join(text), formula, mentions, cues, subs)


def _y(next_text: str) -> str:
    """'y' becomes 'e' before an /i/ sound (hielo keeps 'y') and, as the exercises write it, before
    the variable y ("x ≠ y e y ≠ z")."""
    low = strip_subject_marks(next_text).lower()
    i_sound = (low.startswith("i") or low.startswith("hi")) and not low.startswith("hie")
    return "e" if i_sound or re.match(r"y²? ", low) else "y"


def _o(next_text: str) -> str:
    """'o' becomes 'u' before an /o/ sound."""
    low = strip_subject_marks(next_text).lower()
    return "u" if low.startswith("o") or low.startswith("ho") else "o"


@dataclass(frozen=True)
class Literal:
    clause_id: int
    negated: bool = False


class SentenceBuilder:
    """Realises logical skeletons over one draw of clauses."""

    def __init__(self, rng: random.Random, clauses: list[Clause]) -> None:
        self.rng = rng
        self.clauses = clauses  # grows as the sentence's draw adds fresh clauses

    # -- literals and groups ------------------------------------------------------------------
    def lit(self, literal: Literal, mood: str = "ind", tampoco: bool = False) -> Phrase:
        clause = self.clauses[literal.clause_id]
        atom: Node = Atom(f"c{literal.clause_id}")
        cues: list[tuple[str, str]] = []
        if tampoco or literal.negated:
            atom, cues = Not(atom), [(NOT, clause.negation_cue(tampoco))]
        text = clause.text(literal.negated and not tampoco, mood, tampoco)
        subs = [literal.clause_id] if normalises(clause, mood) else []
        return Phrase(text, atom, [literal.clause_id], cues, subs)

    def elliptic(self, lits: list[Literal], kind: str, mood: str = "ind") -> Phrase:
        """Two atoms that share words, each defined in full.

        - ``pred_and`` / ``pred_or`` / ``pred_nor`` / ``tanto``: two subjects share the predicate
          ("Ana y Pedro van a la fiesta", "ni el banco ni la tienda abren hoy", "tanto Carmen como
          Raúl votaron"); ``pred_and`` may negate the shared predicate (both literals negated);
        - ``verb_and`` / ``verb_or`` / ``verb_nor``: one subject and verb, two complements
          ("tengo sed y sueño", "no tengo ni sed ni sueño");
        - ``vp_nor``: one subject, two predicates ("Pedro no estudia ni trabaja").
        """
        a, b = (self.clauses[x.clause_id] for x in lits)
        ids = [x.clause_id for x in lits]
        subs = [i for i, c in zip(ids, (a, b)) if normalises(c, mood)]
        pa, pb = Atom(f"c{ids[0]}"), Atom(f"c{ids[1]}")
        negated = lits[0].negated
        if kind.startswith("pred") or kind == "tanto":
            shared = plural_predicate(a, b, mood)
            if kind == "tanto":
                f = Binary(AND, pa, pb)
                text = f"tanto {a.subject} como {b.subject} {shared}"
                cues = [(AND, "tanto...como")]
            elif kind == "pred_nor":
                f = Binary(AND, Not(pa), Not(pb))
                text = f"ni {a.subject} ni {b.subject} {shared}"
                cues = [(NOT, "ni...ni"), (AND, "ni...ni")]
            elif kind == "pred_or":
                f = Binary(OR, pa, pb)
                text = f"{a.subject} {_o(b.subject)} {b.subject} {shared}"
                cues = [(OR, _o(b.subject))]
            else:
                conj = _y(b.subject)
                if negated:
                    f = Binary(AND, Not(pa), Not(pb))
                    text = f"{a.subject} {conj} {b.subject} no {shared}"
                    cues = [(AND, conj), (NOT, "no")]
                else:
                    f = Binary(AND, pa, pb)
                    text = f"{a.subject} {conj} {b.subject} {shared}"
                    cues = [(AND, conj)]
            return Phrase(text, f, ids, cues, subs)
        first = a.text(False, mood)
        if kind == "vp_nor":
            predicate = b.text(False, mood, mark=False)[len(b.subject) :].strip()
            f = Binary(AND, Not(pa), Not(pb))
            head = a.text(True, mood)
            return Phrase(f"{head} ni {predicate}", f, ids, [(NOT, "no"), (NOT, "ni"), (AND, "ni")], subs)
        second = coordinated_complement(b)
        if kind == "verb_nor":
            f = Binary(AND, Not(pa), Not(pb))
            head = a.text(True, mood)
            first_comp = coordinated_complement(a)
            head = head[: len(head) - len(first_comp)].rstrip()
            if self.rng.random() < 0.5:  # "no tengo sed ni sueño", as often as "ni sed ni sueño"
                return Phrase(
                    f"{head} {first_comp} ni {second}", f, ids, [(NOT, "no"), (NOT, "ni"), (AND, "ni")], subs
                )
            text = f"{head} ni {first_comp} ni {second}"
            return Phrase(text, f, ids, [(NOT, "no"), (NOT, "ni...ni"), (AND, "ni...ni")], subs)
        if kind == "verb_or":
            f = Binary(OR, pa, pb)
            conj = _o(second)
            return Phrase(f"{first} {conj} {second}", f, ids, [(OR, conj)], subs)
        f = Binary(AND, pa, pb)
        conj = _y(second)
        return Phrase(f"{first} {conj} {second}", f, ids, [(AND, conj)], subs)

    def group(self, lits: list[Literal], kind: str, mood: str = "ind") -> Phrase:
        """A group of literals: 'lit', 'and' (2-3), 'or' (2), 'obien' (2), 'nor' (2, positive),
        or one of the elliptic kinds of :meth:`elliptic` (2)."""
        if kind == "lit":
            return self.lit(lits[0], mood)
        if kind in ELLIPTIC_KINDS:
            return self.elliptic(lits, kind, mood)
        if kind == "nor":
            a, b = (self.lit(Literal(x.clause_id), mood) for x in lits)
            formula: Node = Binary(AND, Not(a.formula), Not(b.formula))
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
        """ante -> cons, said in one of the many Spanish ways, both clause orders.

        The clauses are drawn in the moods the style needs, always in this order: indicative and
        after-"si" forms of both, then the subjunctive antecedent, then the subjunctive consequent.
        Each draw may use the random generator, so this order is part of the data (same seed, same
        sentences); the three groups of styles below follow it.
        """
        style = self.rng.choice(_CONDITIONAL_STYLES)
        a_ind, c_ind = ante("ind"), cons("ind")
        a_ante, c_ante = ante("ante"), cons("ante")
        f = Binary(IMPLIES, a_ind.formula, c_ind.formula)
        if style in _CONDITIONAL_AFTER_SI:
            return _conditional_after_si(style, f, a_ante, c_ind)
        a_sub = ante("sub")
        if style in _CONDITIONAL_SUB_ANTECEDENT:
            return self._conditional_sub_antecedent(style, f, a_ind, a_sub, c_ind, c_ante)
        c_sub = cons("sub")
        return _conditional_sub_both(style, f, a_sub, c_ind, c_sub)

    def _conditional_sub_antecedent(
        self, style: str, f: Node, a_ind: Phrase, a_sub: Phrase, c_ind: Phrase, c_ante: Phrase
    ) -> Phrase:
        """The styles of :data:`_CONDITIONAL_SUB_ANTECEDENT` ("en caso de que", "solo si", ...)."""
        if style == "en_caso":
            return _cat(f, "en caso de que ", _implies_cue(f, "en caso de que"), a_sub, CLAUSE_COMMA, c_ind)
        if style == "en_caso_post":
            return _cat(f, c_ind, " en caso de que ", _implies_cue(f, "en caso de que"), a_sub)
        if style == "implica":
            return _cat(f, "que ", a_sub, " implica que ", _implies_cue(f, "implica"), c_ind)
        if style == "solo_si":
            return _cat(f, a_ind, " solo si ", _implies_cue(f, "solo si"), c_ante)
        if style == "solo_si_pre":
            return _cat(f, "solo si ", _implies_cue(f, "solo si"), c_ante, CLAUSE_COMMA, a_ind)
        word = self.rng.choice(["solo cuando", "sólo cuando"])  # solo_cuando, solo_cuando_pre
        if style == "solo_cuando":
            return _cat(f, a_ind, f" {word} ", _implies_cue(f, word), c_ante)
        return _cat(f, f"{word} ", _implies_cue(f, word), c_ante, CLAUSE_COMMA, a_ind)

    def simple_conditional(self, ante: Callable[[str], Phrase], cons: Callable[[str], Phrase]) -> Phrase:
        """A conditional that starts with its connective (safe to coordinate with another one)."""
        a, c = ante("ante"), cons("ind")
        f = Binary(IMPLIES, a.formula, c.formula)
        word, cue = self.rng.choice([("si", "si"), ("cuando", "cuando"), ("siempre que", "siempre que")])
        return _cat(f, f"{word} ", Phrase("", f, [], [(IMPLIES, cue)]), a, CLAUSE_COMMA, c)

    def unless(self, cond: Callable[[str], Phrase], main: Callable[[str], Phrase]) -> Phrase:
        """main unless cond  ==  ¬cond → main."""
        c_sub, m = cond("sub"), main("ind")
        f = Binary(IMPLIES, Not(c_sub.formula), m.formula)
        word = self.rng.choice(CUES["unless"])
        cue = Phrase("", f, [], [(IMPLIES, word), (NOT, word)])
        # "A o B salvo que C" would be ambiguous, so a compound main clause comes after the cue.
        if isinstance(m.formula, Atom | Not) and self.rng.random() < 0.5:
            return _cat(f, m, f" {word} ", cue, c_sub)
        return _cat(f, f"{word} ", cue, c_sub, CLAUSE_COMMA, m)

    def biconditional(self, left: Callable[[str], Phrase], right: Callable[[str], Phrase]) -> Phrase:
        style = self.rng.choice(["ssi", "equivale", "unicamente", "cuando_y_solo_cuando", "condicion"])
        if style in ("equivale", "condicion"):
            a, b = left("sub"), right("sub")
            f = Binary(IFF, a.formula, b.formula)
            if style == "condicion":
                cue = Phrase("", f, [], [(IFF, "condición necesaria y suficiente")])
                return _cat(f, "que ", a, " es condición necesaria y suficiente para que ", cue, b)
            return _cat(f, "que ", a, " equivale a que ", Phrase("", f, [], [(IFF, "equivale a")]), b)
        a, b = left("ind"), right("ante")
        f = Binary(IFF, a.formula, b.formula)
        if style == "ssi":
            return _cat(f, a, " si y solo si ", Phrase("", f, [], [(IFF, "si y solo si")]), b)
        if style == "cuando_y_solo_cuando":
            word = self.rng.choice(["cuando y solo cuando", "cuando y sólo cuando"])
            return _cat(f, a, f" {word} ", Phrase("", f, [], [(IFF, word)]), b)
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
            return _cat(f, "aunque ", cue("aunque"), a, CLAUSE_COMMA, b)
        if style == "aunque_post":
            return _cat(f, a, ", aunque ", cue("aunque"), b)
        if style == "sin_embargo":
            return _cat(f, a, "; sin embargo, ", cue("sin embargo"), b)
        word = self.rng.choice(["dado que", "ya que", "puesto que"])
        if style == "premisa":
            return _cat(f, f"{word} ", cue(word), a, CLAUSE_COMMA, b)
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
        word = self.rng.choice(CUES["negation_prefix"])
        a = inner("sub")
        f = Not(a.formula)
        return _cat(f, f"{word} ", Phrase("", f, [], [(NOT, word)]), a)

    def tampoco(self, a_lit: Literal, b_lit: Literal) -> Phrase:
        a = self.lit(Literal(a_lit.clause_id, True))
        b = self.lit(Literal(b_lit.clause_id), tampoco=True)
        f = Binary(AND, a.formula, b.formula)
        conj = _y(b.text)
        return _cat(f, a, f" {conj} ", Phrase("", f, [], [(AND, conj)]), b)

    def not_both(self, a_lit: Literal, b_lit: Literal) -> Phrase:
        a, b = self.lit(Literal(a_lit.clause_id), "sub"), self.lit(Literal(b_lit.clause_id), "sub")
        f = Not(Binary(AND, a.formula, b.formula))
        cue = Phrase("", f, [], [(NOT, "no...a la vez"), (AND, "y")])
        return _cat(f, "no puede ser que ", cue, a, " y que ", b, " a la vez")

    def infinitive_condition(self, ante: Literal, cons: Literal) -> Phrase:
        """Necessary and sufficient conditions said with infinitives (generic clauses):
        "para A, hay que C", "se debe C para A", "C es condición necesaria para A" (A → C);
        "A es condición suficiente para C" (A → C); "A es condición necesaria y suficiente para C"."""
        a, c = self.lit(ante, "inf"), self.lit(cons, "inf")
        style = self.rng.choice(
            [
                "para_hay_que",
                "hay_que_para",
                "se_debe_para",
                "para_necesario",
                "necesaria",
                "suficiente",
                "nec_suf",
            ]
        )
        op = IFF if style == "nec_suf" else IMPLIES
        f = Binary(op, a.formula, c.formula)

        def cue(c_: str) -> Phrase:
            return Phrase("", f, [], [(op, c_)])

        if style == "para_hay_que":
            return _cat(f, "para ", cue("para...hay que"), a, ", hay que ", c)
        if style == "hay_que_para":
            return _cat(f, "hay que ", cue("hay que...para"), c, " para ", a)
        if style == "se_debe_para":
            return _cat(f, "se debe ", cue("se debe...para"), c, " para ", a)
        if style == "para_necesario":
            return _cat(f, "para ", cue("para...es necesario"), a, " es necesario ", c)
        if style == "necesaria":
            return _cat(f, c, " es condición necesaria para ", cue("condición necesaria"), a)
        if style == "suficiente":
            return _cat(f, a, " es condición suficiente para ", cue("condición suficiente"), c)
        return _cat(
            f, a, " es condición necesaria y suficiente para ", cue("condición necesaria y suficiente"), c
        )

    def tautology(self, a_lit: Literal, b: Callable[[str], Phrase]) -> Phrase:
        """ "O A o no, pero B de todos modos" == (A ∨ ¬A) ∧ B (the textbooks keep both atoms)."""
        a = self.lit(Literal(a_lit.clause_id))
        rest = b("ind")
        pa = a.formula
        f = Binary(AND, Binary(OR, pa, Not(pa)), rest.formula)
        ending = self.rng.choice(["de todos modos", "de todas formas"])
        cues = Phrase("", f, [], [(OR, "o...o no"), (NOT, "o no"), (AND, f"pero...{ending}")])
        if self.rng.random() < 0.5:
            return _cat(f, "o ", cues, a, " o no, pero ", rest, f" {ending}")
        return _cat(f, "o ", cues, a, f" o no, pero {ending} ", rest)

    def tanto_si(
        self, a: Callable[[str], Phrase], b: Callable[[str], Phrase], c: Callable[[str], Phrase]
    ) -> Phrase:
        """ "Tanto si A como si B, C" == (A → C) ∧ (B → C)."""
        pa, pb, pc = a("ante"), b("ante"), c("ind")
        f = Binary(AND, Binary(IMPLIES, pa.formula, pc.formula), Binary(IMPLIES, pb.formula, pc.formula))
        cue = Phrase("", f, [], [(AND, "tanto si...como si"), (IMPLIES, "tanto si...como si")])
        return _cat(f, "tanto si ", cue, pa, " como si ", pb, ", ", pc)


# ---------------------------------------------------------------------------------------------
# Skeleton sampling
# ---------------------------------------------------------------------------------------------


ELLIPTIC_KINDS = ("pred_and", "pred_or", "pred_nor", "tanto", "verb_and", "verb_or", "verb_nor", "vp_nor")
_NEGATIVE_ELLIPTIC = ("pred_nor", "verb_nor", "vp_nor")


class _Draw:
    """Fresh clauses for one sentence, with literal negation drawn at a fixed rate.

    Even odds make a literal's polarity independent of its place in the skeleton, so the model
    must read it from the sentence: at 0.3 the held-out polarity combinations were the main error.
    A new clause keeps the previous clause's subject with probability ``p_same_subject``, so that
    subjects can be elided ("Juan estudia y aprueba") and the definitions repeat them.
    """

    def __init__(
        self,
        rng: random.Random,
        builder: SentenceBuilder,
        sampler: ClauseSampler,
        p_neg: float = 0.5,
        p_same_subject: float = 0.3,
    ) -> None:
        self.rng = rng
        self.builder = builder
        self.sampler = sampler
        self.p_neg = p_neg
        self.p_same_subject = p_same_subject

    def _add(self, clause: Clause) -> int:
        self.builder.clauses.append(clause)
        return len(self.builder.clauses) - 1

    def lit(self, allow_neg: bool = True) -> Literal:
        clauses = self.builder.clauses
        prev = clauses[-1] if clauses and self.rng.random() < self.p_same_subject else None
        cid = self._add(self.sampler.clause(same_subject_as=prev))
        negated = allow_neg and self.rng.random() < self.p_neg
        return Literal(cid, negated and clauses[cid].negatable)

    def generic_lit(self, allow_neg: bool = True) -> Literal:
        cid = self._add(self.sampler.generic_clause())
        return Literal(cid, allow_neg and self.rng.random() < self.p_neg)

    def pair(self, kind: str, allow_neg: bool = True) -> list[Literal]:
        if kind.startswith("pred") or kind == "tanto":
            a, b = self.sampler.shared_predicate_pair()
        elif kind == "vp_nor":
            a = self.sampler.clause()
            b = self.sampler.clause(same_subject_as=a)
            if b.subject != a.subject or a.symbolic or b.symbolic:
                a, b = self.sampler.shared_verb_pair()
        else:
            a, b = self.sampler.shared_verb_pair()
        negated = kind == "pred_and" and allow_neg and self.rng.random() < self.p_neg
        return [Literal(self._add(a), negated), Literal(self._add(b), negated)]

    def group(
        self,
        b: SentenceBuilder,
        max_literals: int,
        allow_neg: bool = True,
        kinds: tuple[str, ...] = ("and", "or", "obien", "nor", "elliptic"),
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
        elif kind == "elliptic":
            options = [k for k in ELLIPTIC_KINDS if allow_neg or k not in _NEGATIVE_ELLIPTIC]
            kind = self.rng.choice(options)
            lits = self.pair(kind, allow_neg)
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
    "elliptic",
    "infinitive_condition",
    "tautology",
    "tanto_si",
    "argument",
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
        if rng.random() < 0.5:
            kind = rng.choice(_NEGATIVE_ELLIPTIC)
            return b.group(d.pair(kind), kind)
        return b.group([d.lit(False), d.lit(False)], "nor")
    if family == "elliptic":
        kind = rng.choice(ELLIPTIC_KINDS)
        return b.group(d.pair(kind), kind)
    if family == "infinitive_condition":
        return b.infinitive_condition(d.generic_lit(), d.generic_lit())
    if family == "tautology":
        return b.tautology(d.lit(False), d.group(b, 2))
    if family == "tanto_si":
        return b.tanto_si(_reuse(b, d.lit()), _reuse(b, d.lit()), d.group(b, 1))
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
        # the comma stays: "Puesto que A si B, C" would make A the conditional's consequent
        return _cat(f, f"{word} ", Phrase("", f, [], [(AND, word)]), premise, ", ", cond)
    if family == "argument":
        return _argument(b, d)
    if family == "negated_conditional":
        a, c = d.lit(), d.lit()
        inner = Binary(IMPLIES, b.lit(a).formula, b.lit(c).formula)
        negated = Not(inner)
        cue = Phrase("", negated, [], [(NOT, "no es cierto que"), (IMPLIES, "si...entonces")])
        return _cat(
            negated, "no es cierto que, si ", cue, b.lit(a, "ante"), CLAUSE_COMMA, "entonces ", b.lit(c)
        )
    raise ValueError(f"unknown family {family!r}")


# Two-premise argument forms: the minor premise and the conclusion as (which literal, flipped?),
# over the major premise's literals a and c ("chain": a → c, c → e, so a → e).
_ARGUMENT_FORMS = {
    "modus_ponens": (("a", False), ("c", False)),
    "modus_tollens": (("c", True), ("a", True)),
    "disjunctive_syllogism": (("a", True), ("c", False)),
    "affirming_the_consequent": (("c", False), ("a", False)),
    "denying_the_antecedent": (("a", True), ("c", True)),
    "chain": None,
}


def _argument(b: SentenceBuilder, d: _Draw) -> Phrase:
    """An argument said in several sentences, as textbooks write them: "Si llueve, me mojo. No me
    mojo. Por lo tanto, no llueve." The premises are joined and imply the conclusion:
    ((a → c) ∧ ¬c) → ¬a. Valid forms and the two classic fallacies alike (formalising is not
    judging validity)."""
    rng = b.rng
    form = rng.choice(list(_ARGUMENT_FORMS))
    a, c = d.lit(), d.lit()
    if form == "disjunctive_syllogism":
        major = b.group([a, c], "or")
    else:
        major = b.simple_conditional(_reuse(b, a), _reuse(b, c))
    if form == "chain":
        e = d.lit()
        minor = b.simple_conditional(_reuse(b, c), _reuse(b, e))
        conclusion = b.simple_conditional(_reuse(b, a), _reuse(b, e))
    else:
        spec = _ARGUMENT_FORMS[form]
        assert spec is not None
        chosen = [{"a": a, "c": c}[which] for which, _ in spec]
        minor, conclusion = (
            b.lit(Literal(lit.clause_id, lit.negated != flip)) for lit, (_, flip) in zip(chosen, spec)
        )
    f = Binary(IMPLIES, Binary(AND, major.formula, minor.formula), conclusion.formula)
    word = rng.choice(CUES["conclusion"])
    cue = Phrase("", f, [], [(AND, word), (IMPLIES, word)])
    if rng.random() < 0.7:
        return _cat(f, major, ". ", minor, f". {word.capitalize()}, ", cue, conclusion)
    return _cat(f, major, "; ", minor, f", {word} ", cue, conclusion)


# SentenceBuilder.conditional's styles, in the order its random choice indexes them.
_CONDITIONAL_STYLES = (
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
    "solo_cuando",
    "solo_cuando_pre",
    "siempre_y_cuando",
    "para_que",
    "suficiente",
    "necesaria",
)
# Styles whose clauses need no subjunctive (the antecedent after si/cuando/siempre que) ...
_CONDITIONAL_AFTER_SI = (
    "si_entonces",
    "si",
    "si_post",
    "cuando",
    "cuando_post",
    "siempre_que",
    "siempre_que_post",
)
# ... only a subjunctive antecedent; the others need a subjunctive consequent too.
_CONDITIONAL_SUB_ANTECEDENT = (
    "en_caso",
    "en_caso_post",
    "implica",
    "solo_si",
    "solo_si_pre",
    "solo_cuando",
    "solo_cuando_pre",
)


# The comma that closes an opening subordinate clause ("Si llueve, me mojo"). Writers often leave
# it out ("Si llueve me mojo", "Si A entonces B": eight of dev_real's failures in session 45), and
# with it always there the model learns to end a definition at the comma rather than where the
# clause ends; ``generate(comma_less_share=...)`` writes a stable share of the sentences that have
# one without any (README, "Data": over two seeds configs.DEFAULT_COMMA_LESS_SHARE won on
# dev_real against the same data with every comma, and lost some equivalence on the synthetic
# sentences with commas).
CLAUSE_COMMA = "\x03, "


# Without the comma, a clause that opens with a coordinator would read as the condition's own
# continuation ("Aunque Vera no firmará la propuesta ni Ana ni Luis pierden").
_OPENS_WITH_A_COORDINATOR = re.compile(re.escape(CLAUSE_COMMA) + r"\W*(?:ni|o|u|y|e|tanto|ya sea)(?!\w)")


def _write_clause_commas(text: str, comma_less_share: float = 0.0) -> str:
    """``text`` with every :data:`CLAUSE_COMMA` written as ", " or, for the share
    ``comma_less_share`` of texts (chosen by the text's SHA-1, so the same sentence is always
    written the same way and no random draw moves), all of them left out; kept where a clause after
    one opens with a coordinator or the condition before one holds a comma."""
    if CLAUSE_COMMA not in text:
        return text
    draw = int.from_bytes(hashlib.sha1(text.encode()).digest()[:4], "big") / 2**32
    left_out = draw < comma_less_share and not _OPENS_WITH_A_COORDINATOR.search(text)
    # a condition that holds a comma of its own ("Cuando A, B y C, D") keeps the one that ends it
    conditions = [re.split(r"[;.]", before)[-1] for before in text.split(CLAUSE_COMMA)[:-1]]
    left_out = left_out and not any("," in condition for condition in conditions)
    return text.replace(CLAUSE_COMMA, " " if left_out else ", ")


def _implies_cue(f: Node, cue: str) -> Phrase:
    """The empty phrase that records a conditional's cue (→) in a sentence."""
    return Phrase("", f, [], [(IMPLIES, cue)])


def _conditional_after_si(style: str, f: Node, a_ante: Phrase, c_ind: Phrase) -> Phrase:
    """The styles of :data:`_CONDITIONAL_AFTER_SI`: "si A, entonces C", "C cuando A", ..."""
    if style == "si_entonces":
        return _cat(f, "si ", _implies_cue(f, "si...entonces"), a_ante, CLAUSE_COMMA, "entonces ", c_ind)
    if style == "si":
        return _cat(f, "si ", _implies_cue(f, "si"), a_ante, CLAUSE_COMMA, c_ind)
    if style == "si_post":
        return _cat(f, c_ind, " si ", _implies_cue(f, "si"), a_ante)
    if style == "cuando":
        return _cat(f, "cuando ", _implies_cue(f, "cuando"), a_ante, CLAUSE_COMMA, c_ind)
    if style == "cuando_post":
        return _cat(f, c_ind, " cuando ", _implies_cue(f, "cuando"), a_ante)
    if style == "siempre_que":
        return _cat(f, "siempre que ", _implies_cue(f, "siempre que"), a_ante, CLAUSE_COMMA, c_ind)
    return _cat(f, c_ind, " siempre que ", _implies_cue(f, "siempre que"), a_ante)  # siempre_que_post


def _conditional_sub_both(style: str, f: Node, a_sub: Phrase, c_ind: Phrase, c_sub: Phrase) -> Phrase:
    """The other styles: "C siempre y cuando A", "para que A, es necesario que C", ..."""
    if style == "siempre_y_cuando":
        # "C siempre y cuando A": A is the condition of C
        return _cat(f, c_ind, " siempre y cuando ", _implies_cue(f, "siempre y cuando"), a_sub)
    if style == "para_que":
        # "para que A, C": C is necessary for A
        return _cat(f, "para que ", _implies_cue(f, "para que"), a_sub, CLAUSE_COMMA, c_ind)
    if style == "suficiente":
        cue = _implies_cue(f, "condición suficiente")
        return _cat(f, "que ", a_sub, " es condición suficiente para que ", cue, c_sub)
    if style == "necesaria":
        cue = _implies_cue(f, "condición necesaria")
        return _cat(f, "que ", c_sub, " es condición necesaria para que ", cue, a_sub)
    if style == "necesario":
        return _cat(f, "para que ", a_sub, ", es necesario que ", _implies_cue(f, "es necesario que"), c_sub)
    if style == "necesario_post":
        return _cat(f, "es necesario que ", _implies_cue(f, "es necesario que"), c_sub, " para que ", a_sub)
    return _cat(f, "basta con que ", _implies_cue(f, "basta con que"), a_sub, " para que ", c_sub)


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


_FORMULA_START = re.compile(r"[a-z]²? [=+\-−<>≤≥≠]")


def _sentence_case(text: str) -> str:
    """Capital first letter, and after each full stop of a text in several sentences (arguments),
    except a variable that opens a formula ("x + y = 2 y z = 1.")."""

    def capital(start: str) -> str:
        return start if _FORMULA_START.match(start) else start[0].upper() + start[1:]

    text = re.sub(r"(?<=\. )\w.{0,3}", lambda m: capital(m.group(0)), text)
    return capital(text[:4]) + text[4:] + "."


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


_CONJUNCTION_VARIANT = {"y": "e", "e": "y", "o": "u", "u": "o"}


def _conjunction_as_said(cue: str, sentence: str) -> str:
    """The cue "y" as "e" (or "o" as "u") when eliding a subject made the sentence say it so
    ("… y Raquel hiciera …" -> "… e hiciera …")."""
    other = _CONJUNCTION_VARIANT.get(cue)
    words = set(re.findall(r"\w+", sentence.lower()))
    return other if other and cue not in words and other in words else cue


def example_from_phrase(
    phrase: Phrase,
    clauses: list[Clause],
    block: str,
    rng: random.Random | None = None,
    comma_less_share: float = DEFAULT_COMMA_LESS_SHARE,
) -> dict:
    """Turn a realised skeleton into a raw example in the original's JSON schema.

    With ``rng``, a subject that repeats the previous clause's subject may be elided in the
    sentence ("Juan estudia y aprueba"); definitions always keep it ("Juan aprueba"). A clause
    only said in the subjunctive or the infinitive is defined in the indicative. A share
    ``comma_less_share`` of the sentences with an opening condition leave out the comma that ends
    it (:func:`_write_clause_commas`).
    """
    first_mention: dict[int, None] = {}
    for cid in phrase.mentions:
        first_mention.setdefault(cid, None)
    letters = atom_letters(len(first_mention))
    mapping = {f"c{cid}": letter for cid, letter in zip(first_mention, letters)}
    formula = rename(phrase.formula, mapping)
    # by count: "Si A, sumarás B; y si sumas B, C" says B once in the future and once in the
    # present a conditional takes, so B is defined as said, "sumarás B"
    only_sub = {cid for cid in first_mention if phrase.mentions.count(cid) == phrase.sub_mentions.count(cid)}
    atoms_list = [
        {
            "atom": letter,
            "definition": clauses[cid].sub_definition if cid in only_sub else clauses[cid].definition,
        }
        for cid, letter in zip(first_mention, letters)
    ]
    text = _write_clause_commas(phrase.text, comma_less_share)
    text = elide_repeated_subjects(text, rng) if rng is not None else strip_subject_marks(text)
    sentence = _sentence_case(text)
    seen: set[tuple[str, str]] = set()
    connectors = []
    for symbol, cue in phrase.cues:
        cue = _conjunction_as_said(cue, sentence)
        if (symbol, cue) not in seen:
            seen.add((symbol, cue))
            connectors.append({"connector": symbol, "natural_language_cue": cue})
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
    "elliptic": 5,
    "infinitive_condition": 4,
    "tautology": 2,
    "tanto_si": 2,
    "argument": 3,
}


def generate_one(
    rng: random.Random,
    block: str,
    symbolic_share: float = 0.0,
    comma_less_share: float = DEFAULT_COMMA_LESS_SHARE,
) -> dict:
    """One example of domain ``block`` with fresh clauses from :class:`ClauseSampler` (a share
    ``symbolic_share`` of the mathematics clauses in symbols, "x + y = 3"; a share
    ``comma_less_share`` of the opening conditions without their comma, "Si llueve me mojo")."""
    families = list(_WEIGHTS)
    family = rng.choices(families, weights=[_WEIGHTS[f] for f in families])[0]
    builder = SentenceBuilder(rng, [])
    phrase = _skeleton(family, builder, _Draw(rng, builder, ClauseSampler(rng, block, symbolic_share)))
    return example_from_phrase(phrase, builder.clauses, block, rng, comma_less_share)


def generate(
    n: int, seed: int = 0, symbolic_share: float = 0.0, comma_less_share: float = DEFAULT_COMMA_LESS_SHARE
) -> list[dict]:
    """``n`` examples, domains in rotation; the same seed gives the same list.

    ``symbolic_share`` (0 to 1) of the mathematics clauses are written in symbols ("x + y = 3",
    "x ≠ 2" for ¬(x = 2)); ``comma_less_share`` (0 to 1) of the sentences with an opening
    condition are written without the comma that ends it ("Si llueve me mojo", "Si A entonces B";
    none where the comma is needed to read them). Raises ValueError for a share outside [0, 1].
    """
    if not 0.0 <= comma_less_share <= 1.0:
        raise ValueError(f"comma_less_share must be in [0, 1], got {comma_less_share!r}")
    rng = random.Random(seed)
    return [generate_one(rng, BLOCKS[i % len(BLOCKS)], symbolic_share, comma_less_share) for i in range(n)]
