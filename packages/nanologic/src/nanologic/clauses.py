"""Open-vocabulary atomic clauses: subjects, predicates and tenses drawn from curated lexicons.

A clause is a subject (a name, a pronoun, a person or thing noun phrase, or none for impersonal
clauses such as "llueve") and a predicate (an infinitive from :mod:`nanologic.lexicon` with a
complement whose slots are filled with foods, places, numbers, names, ...), conjugated by
:mod:`nanologic.conjugation` for the subject's person and number in one of five indicative tenses,
with agreement of predicate adjectives ("la tienda está abierta", "los bancos están abiertos").

The space is large enough (millions of clauses) that a model cannot recall definitions: it must
copy them from the sentence. Negation goes between subject and predicate ("el banco no abre hoy",
"no se cae"). The atom's definition is the positive indicative clause; a clause only said in the
subjunctive is defined in the matching indicative (llueva -> llueve, haya ganado -> ha ganado,
lloviera -> llovió), and an infinitive of a generic clause in the second person ("tener entrada"
-> "tienes entrada"), as the textbooks do.

Mathematics also says clauses in symbols ("x + y = 3", "c² > a²"), as the exercises do: an
equation's negation is written "x ≠ 3" and its atom stays the affirmative "x = 3"; an inequality is
negated only where a construction forces it, as "no es cierto que x > 3".
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace

from nanologic.conjugation import INDICATIVE_OF_SUBJUNCTIVE, SUBJUNCTIVE_OF, conjugate
from nanologic.lexicon import (
    ADVERBIALS,
    BARE_VERBS,
    FILLERS,
    IMPERSONAL,
    NAMES_F,
    NAMES_M,
    NOVEL_NOUN_SLOTS,
    PERSON_NPS,
    PERSON_PREDICATES,
    PRONOUNS,
    PRONOUNS_F,
    THING_GROUPS,
    novel_filler,
)

# Domains of the generated sentences (the "block" field of an example).
BLOCKS = (
    "tiempo",
    "familia",
    "escuela",
    "trabajo",
    "compras",
    "deporte",
    "música",
    "política",
    "ciencia",
    "matemáticas",
    "historias",
)

TENSE_WEIGHTS = {"pres": 0.55, "pret": 0.15, "fut": 0.12, "perf": 0.1, "impf": 0.08}
# Slots whose filler can be coordinated under one verb ("compro pan y leche").
COORDINABLE_SLOTS = frozenset(
    [
        "FOOD",
        "ITEM",
        "SUBJECT",
        "INSTRUMENT",
        "GENRE",
        "SPORT",
        "STATE",
        "PLACE",
        "CITY",
        "DISH",
        "NAME",
        "TOPIC",
    ]
)
P_ADVERBIAL = 0.35  # share of predicates that get a time or place adverbial
P_NOVEL = 0.2  # share of noun and name slots filled with a pseudo-word (lexicon.novel_filler)
P_BARE = 0.25  # share of people's predicates that are a bare verb (lexicon.BARE_VERBS)
_SYMBOL_VARIABLES = list("xyzabcnmk")
SUBJECT_MARK = "\x01", "\x02"  # around a subject that a later identical subject may elide

_CLITICS = ("me", "te", "se", "nos", "os", "se")
# Relations of a symbolic clause and their weights; "=" is the one with a symbol for its negation.
_RELATIONS = {"=": 6, "<": 1, ">": 1, "≤": 1, "≥": 1}
_OPERATORS = ("+", "−", "-")  # the minus sign and the hyphen people type for it
_SLOT = re.compile(r"\{([A-Z]+)\}")


@dataclass(frozen=True)
class Subject:
    text: str  # surface text; "" for a dropped pronoun, an impersonal or a generic clause
    person: int  # 0-5
    gender: str  # "m" or "f"
    kind: str  # "pronoun", "name", "person", "thing", "impersonal", "generic"
    group: str = ""  # the thing group whose predicates suit it

    @property
    def plural(self) -> bool:
        return self.person >= 3


@dataclass(frozen=True)
class Predicate:
    lemma: str  # infinitive, without the reflexive clitic
    reflexive: bool
    template: str  # complement with {SLOT}s and @ agreement marks
    complement: str  # the template with its slots filled (@ marks kept)
    slot: str = ""  # the single coordinable slot of the template, if any


def _agree(text: str, gender: str, plural: bool) -> str:
    ending = ("a" if gender == "f" else "o") + ("s" if plural else "")
    return text.replace("@", ending)


def _contract(text: str) -> str:
    return re.sub(r"\bde el\b", "del", re.sub(r"\ba el\b", "al", text))


def _finite(pred: Predicate, tense: str, person: int, impersonal: bool) -> str:
    if pred.lemma == "haber" and impersonal:
        return "hay" if tense == "pres" else conjugate("haber", tense, 2)
    form = conjugate(pred.lemma, tense, person)
    return f"{_CLITICS[person]} {form}" if pred.reflexive else form


def predicate_text(pred: Predicate, tense: str, person: int, gender: str, impersonal: bool = False) -> str:
    """The conjugated predicate with its complement agreeing in gender and number."""
    verb = _finite(pred, tense, person, impersonal)
    comp = _agree(pred.complement, gender, person >= 3)
    return _contract(f"{verb} {comp}".strip())


def infinitive_text(pred: Predicate) -> str:
    verb = pred.lemma + ("se" if pred.reflexive else "")
    return _contract(f"{verb} {_agree(pred.complement, 'm', False)}".strip())


@dataclass(frozen=True)
class Clause:
    """One atomic proposition and how to say it (indicative, subjunctive, infinitive)."""

    subject: str  # may be empty (impersonal, dropped pronoun, generic)
    indicative: str  # predicate in the indicative mood
    subjunctive: str  # predicate in the subjunctive that its tense takes after "que"
    block: str
    tense: str = "pres"
    sub_indicative: str = ""  # indicative a subjunctive-only mention normalises to
    infinitive: str = ""  # infinitive predicate (generic and impersonal clauses only)
    ante_indicative: str = ""  # after "si"/"cuando" a future is said in the present
    subj: Subject | None = None
    pred: Predicate | None = None
    symbolic: bool = False  # an equation or inequality in symbols ("x + y = 3")

    @property
    def negatable(self) -> bool:
        """Whether a draw may negate it: an inequality's negation, "no es cierto que x > 3", would
        leave its scope ambiguous inside a sentence, so only the forced negations of a few
        constructions (an argument's "No es cierto que x > 3.") say it."""
        return not self.symbolic or " = " in self.indicative

    def negation_cue(self, tampoco: bool = False) -> str:
        """The words (or symbol) that negate this clause in :meth:`text`."""
        if self.symbolic:
            return "≠" if " = " in self.indicative else "no es cierto que"
        return "tampoco" if tampoco else "no"

    def text(self, negated: bool = False, mood: str = "ind", tampoco: bool = False, mark: bool = True) -> str:
        """Surface text; ``mood`` is "ind", "sub", "inf" (infinitive, no subject) or "ante" (the
        indicative after "si"/"cuando", where Spanish says a future in the present).

        With ``mark`` a named subject is wrapped in :data:`SUBJECT_MARK` so that the generator can
        elide it when the previous clause had the same subject ("Juan estudia y aprueba").
        A symbolic clause has one text in every mood; negated, "=" becomes "≠" ("tampoco" too).
        """
        if self.symbolic:
            if not (negated or tampoco):
                return self.indicative
            if self.negation_cue() == "≠":
                return self.indicative.replace(" = ", " ≠ ", 1)
            return f"no es cierto que {self.indicative}"
        negation = "tampoco" if tampoco else ("no" if negated else "")
        if mood == "inf":
            return " ".join(part for part in (negation, self.infinitive) if part)
        predicate = {"ind": self.indicative, "sub": self.subjunctive}.get(mood)
        if predicate is None:
            predicate = self.ante_indicative or self.indicative
        subject = self.subject
        if (
            subject
            and mark
            and self.subj is not None
            and self.subj.kind in ("name", "person", "thing", "pronoun")
        ):
            subject = f"{SUBJECT_MARK[0]}{subject}{SUBJECT_MARK[1]}"
        return " ".join(part for part in (subject, negation, predicate) if part)

    @property
    def definition(self) -> str:
        """The atom's definition: the positive clause in the indicative."""
        return self.text(mark=False)

    @property
    def sub_definition(self) -> str:
        """The definition when every mention is subjunctive or infinitive."""
        return " ".join(part for part in (self.subject, self.sub_indicative or self.indicative) if part)


def build_clause(subj: Subject, pred: Predicate, tense: str, block: str) -> Clause:
    impersonal = subj.kind in ("impersonal",)
    sub_tense = SUBJUNCTIVE_OF[tense]
    return Clause(
        subject=subj.text,
        indicative=predicate_text(pred, tense, subj.person, subj.gender, impersonal),
        subjunctive=predicate_text(pred, sub_tense, subj.person, subj.gender, impersonal),
        block=block,
        tense=tense,
        sub_indicative=predicate_text(
            pred, INDICATIVE_OF_SUBJUNCTIVE[sub_tense], subj.person, subj.gender, impersonal
        ),
        infinitive=infinitive_text(pred) if subj.kind in ("generic", "impersonal") else "",
        ante_indicative=predicate_text(
            pred, "pres" if tense == "fut" else tense, subj.person, subj.gender, impersonal
        ),
        subj=subj,
        pred=pred,
    )


def name_gender(name: str) -> str:
    """Gender of a first name: the lexicon's, or for a pseudo-name the Spanish default by ending."""
    if name in NAMES_F or (name not in NAMES_M and name.endswith("a")):
        return "f"
    return "m"


def _parse_np(entry: str) -> tuple[str, str, bool]:
    text, gender, number = entry.split("|")
    return text, gender, number == "p"


class ClauseSampler:
    """Draws fresh clauses of one domain; ``definitions`` are kept distinct within a sentence."""

    def __init__(self, rng: random.Random, block: str, symbolic_share: float = 0.0) -> None:
        if block not in BLOCKS:
            raise ValueError(f"unknown domain {block!r}; choose from {', '.join(BLOCKS)}")
        if not 0.0 <= symbolic_share <= 1.0:
            raise ValueError(f"symbolic_share must be in [0, 1], got {symbolic_share!r}")
        self.rng = rng
        self.block = block
        self.symbolic_share = symbolic_share
        self.used: set[str] = set()

    # -- pieces -----------------------------------------------------------------------------------
    def filler(self, slot: str) -> str:
        if slot in NOVEL_NOUN_SLOTS and self.rng.random() < P_NOVEL:
            return novel_filler(self.rng, slot)
        return self.rng.choice(FILLERS[slot])

    def fill(self, template: str) -> str:
        return _SLOT.sub(lambda m: self.filler(m.group(1)), template)

    def predicate(self, entry: str) -> Predicate:
        lemma, template = (part.strip() for part in entry.split("|"))
        reflexive = lemma.endswith("se") and lemma[:-2].endswith(("ar", "er", "ir", "ír"))
        slots = _SLOT.findall(template)
        slot = slots[0] if len(slots) == 1 and slots[0] in COORDINABLE_SLOTS else ""
        if self.rng.random() < P_ADVERBIAL and not {"TIME", "DAY", "MONTH"} & set(slots):
            template = f"{template} {self.rng.choice(ADVERBIALS)}".strip()
        return Predicate(lemma[:-2] if reflexive else lemma, reflexive, template, self.fill(template), slot)

    def sibling(self, pred: Predicate) -> Predicate:
        """Same verb and template, another filler of its slot ("pan" -> "leche")."""
        for _ in range(20):
            other = replace(pred, complement=self.fill(pred.template))
            if other.complement != pred.complement:
                return other
        raise ValueError(f"no sibling for {pred.template!r}")

    def person_subject(self) -> Subject:
        r = self.rng.random()
        if r < 0.35:
            person = self.rng.choice([0, 0, 1, 1, 2, 3, 3, 4, 5])
            gender = self.rng.choice("mf")
            # A dropped third-person pronoun ("llega tarde") reads as the previous clause's subject
            # ("Ana sale o llega tarde"), as the definitions' normalisation writes it; so only the
            # first and second persons, which the verb's ending names, go without one.
            explicit = self.rng.random() < 0.25 or person in (2, 5)
            pronoun = (PRONOUNS_F if gender == "f" else PRONOUNS)[person]
            return Subject(pronoun if explicit else "", person, gender, "pronoun")
        if r < 0.75 or self.block == "historias":
            name = self.filler("NAME")
            return Subject(name, 2, name_gender(name), "name")
        text, gender, plural = _parse_np(self.rng.choice(PERSON_NPS))
        return Subject(text, 5 if plural else 2, gender, "person")

    def thing_subject(self, group_index: int) -> Subject:
        nps, _ = THING_GROUPS[self.block][group_index]
        text, gender, plural = _parse_np(self.rng.choice(nps))
        return Subject(self.fill(text), 5 if plural else 2, gender, "thing", f"{self.block}:{group_index}")

    def _person_predicates(self) -> list[str]:
        if self.block in PERSON_PREDICATES:
            return PERSON_PREDICATES[self.block]
        # weather and stories borrow everyday predicates from every domain
        return [p for preds in PERSON_PREDICATES.values() for p in preds]

    def predicate_for(self, subj: Subject) -> Predicate:
        if subj.kind == "impersonal":
            return self.predicate(self.rng.choice(IMPERSONAL))
        if subj.kind == "thing":
            block, index = subj.group.split(":")
            return self.predicate(self.rng.choice(THING_GROUPS[block][int(index)][1]))
        if self.rng.random() < P_BARE:
            return self.predicate(self.rng.choice(BARE_VERBS))
        return self.predicate(self.rng.choice(self._person_predicates()))

    def subject(self) -> Subject:
        weather = self.block == "tiempo"
        if self.rng.random() < (0.45 if weather else 0.04):
            return Subject("", 2, "m", "impersonal")
        has_things = self.block in THING_GROUPS
        if has_things and self.rng.random() < (0.6 if weather else 0.4):
            return self.thing_subject(self.rng.randrange(len(THING_GROUPS[self.block])))
        return self.person_subject()

    def tense(self) -> str:
        return self.rng.choices(list(TENSE_WEIGHTS), weights=list(TENSE_WEIGHTS.values()))[0]

    def _accept(self, clause: Clause) -> Clause | None:
        key = clause.definition.lower()
        if key in self.used or clause.sub_definition.lower() in self.used:
            return None
        self.used.add(key)
        self.used.add(clause.sub_definition.lower())
        return clause

    def _operand(self, variable: bool = False) -> str:
        if variable or self.rng.random() < 0.6:
            return self.rng.choice(_SYMBOL_VARIABLES) + ("²" if self.rng.random() < 0.1 else "")
        # small numbers as often as the rest: the exercises' "x = 1", "y > 0" (0 to 100)
        return self.rng.choice(FILLERS["NUM"][:101] if self.rng.random() < 0.5 else FILLERS["NUM"][:11])

    def _side(self, variable_first: bool = False) -> str:
        first = self._operand(variable_first)
        if self.rng.random() < 0.35:
            return f"{first} {self.rng.choice(_OPERATORS)} {self._operand()}"
        return first

    def symbolic_clause(self) -> Clause | None:
        """An equation or inequality that opens with a variable ("x + y = 3", "c² > a² + 1", "x ≤ 7"),
        or None when both sides are the same or it repeats a clause of the sentence."""
        left, right = self._side(variable_first=True), self._side()
        relation = self.rng.choices(list(_RELATIONS), weights=list(_RELATIONS.values()))[0]
        if left == right:
            return None
        text = f"{left} {relation} {right}"
        return self._accept(Clause("", text, text, "matemáticas", symbolic=True))

    # -- clauses --------------------------------------------------------------------------------
    def clause(self, same_subject_as: Clause | None = None) -> Clause:
        """A fresh clause; with ``same_subject_as`` it keeps that clause's subject when it can.
        A mathematics clause is symbolic with probability ``symbolic_share`` (no subject to keep);
        at 0 no random number is drawn for it, so the data equal those of a generator without it."""
        for _ in range(100):
            if (
                self.symbolic_share
                and self.block == "matemáticas"
                and self.rng.random() < self.symbolic_share
            ):
                symbolic = self.symbolic_clause()
                if symbolic is not None:
                    return symbolic
                continue
            subj = self.subject()
            previous = same_subject_as.subj if same_subject_as is not None else None
            if previous is not None and previous.kind in ("name", "person", "thing", "pronoun"):
                subj = previous
            clause = self._accept(build_clause(subj, self.predicate_for(subj), self.tense(), self.block))
            if clause is not None:
                return clause
        raise RuntimeError("could not draw a fresh clause")

    def generic_clause(self) -> Clause:
        """A clause said with an infinitive ("tener entrada"), defined in the generic second person
        ("tienes entrada"), or an impersonal one ("llover" -> "llueve")."""
        for _ in range(100):
            if self.rng.random() < 0.15:
                subj = Subject("", 2, "m", "impersonal")
            else:
                subj = Subject("", 1, self.rng.choice("mf"), "generic")
            pred = self.predicate_for(subj)
            clause = self._accept(build_clause(subj, pred, "pres", self.block))
            if clause is not None:
                return clause
        raise RuntimeError("could not draw a fresh generic clause")

    def shared_predicate_pair(self) -> tuple[Clause, Clause]:
        """Two third-person subjects with the same predicate and tense ("el banco" / "la tienda"
        + "abrir hoy"), for "ni A ni B abren hoy", "tanto A como B ...", "A y B ..."."""
        for _ in range(100):
            if self.block in THING_GROUPS and self.rng.random() < 0.5:
                index = self.rng.randrange(len(THING_GROUPS[self.block]))
                a, b = self.thing_subject(index), self.thing_subject(index)
            else:
                a, b = self._third_person(), self._third_person()
            if a.text == b.text:
                continue
            pred, tense = self.predicate_for(a), self.tense()
            first = build_clause(a, pred, tense, self.block)
            second = build_clause(b, pred, tense, self.block)
            if self._accept(first) is None:
                continue
            if self._accept(second) is None:
                self.used.discard(first.definition.lower())
                continue
            return first, second
        raise RuntimeError("could not draw a shared-predicate pair")

    def _third_person(self) -> Subject:
        if self.rng.random() < 0.6:
            name = self.filler("NAME")
            return Subject(name, 2, name_gender(name), "name")
        text, gender, plural = _parse_np(self.rng.choice(PERSON_NPS))
        return Subject(text, 5 if plural else 2, gender, "person")

    def shared_verb_pair(self) -> tuple[Clause, Clause]:
        """One subject and verb with two fillers of the same slot ("tengo sed" / "tengo sueño")."""
        candidates = [p for p in self._person_predicates() if self.predicate(p).slot]
        if not candidates:  # e.g. mathematics: borrow everyday predicates
            candidates = [p for preds in PERSON_PREDICATES.values() for p in preds if self.predicate(p).slot]
        for _ in range(200):
            subj = self.person_subject()
            pred = self.predicate(self.rng.choice(candidates))
            tense = self.tense()
            first = build_clause(subj, pred, tense, self.block)
            second = build_clause(subj, self.sibling(pred), tense, self.block)
            if self._accept(first) is None:
                continue
            if self._accept(second) is None:
                self.used.discard(first.definition.lower())
                continue
            return first, second
        raise RuntimeError("could not draw a shared-verb pair")


def plural_predicate(first: Clause, second: Clause, mood: str) -> str:
    """The shared predicate of two third-person subjects, in the plural ("abren hoy")."""
    assert first.pred is not None and first.subj is not None and second.subj is not None
    gender = "f" if first.subj.gender == "f" and second.subj.gender == "f" else "m"
    tense = {"ind": first.tense, "ante": "pres" if first.tense == "fut" else first.tense}.get(
        mood, SUBJUNCTIVE_OF[first.tense]
    )
    return predicate_text(first.pred, tense, 5, gender)


def coordinated_complement(clause: Clause) -> str:
    """The complement alone, for "tengo sed y sueño": the second clause's "sueño"."""
    assert clause.pred is not None and clause.subj is not None
    return _contract(_agree(clause.pred.complement, clause.subj.gender, clause.subj.plural))


def normalises(clause: Clause, mood: str) -> bool:
    """Whether saying ``clause`` in ``mood`` changes its tense or mood (so its definition, if every
    mention does, is :attr:`Clause.sub_definition`)."""
    return mood in ("sub", "inf") or (mood == "ante" and clause.tense == "fut")


def _fix_conjunction(before: str, after: str) -> str:
    """y/e and o/u agree with the word that now follows them."""
    low = after.lower()
    m = re.search(r"\b(y|e|o|u) $", before)
    if not m:
        return before
    i_sound = (low.startswith("i") or low.startswith("hi")) and not low.startswith("hie")
    o_sound = low.startswith("o") or low.startswith("ho")
    word = m.group(1)
    if word in "ye":
        word = "e" if i_sound else "y"
    else:
        word = "u" if o_sound else "o"
    return before[: m.start()] + word + " "


def strip_subject_marks(text: str) -> str:
    return text.replace(SUBJECT_MARK[0], "").replace(SUBJECT_MARK[1], "")


def elide_repeated_subjects(text: str, rng: random.Random, p_elide: float = 0.6) -> str:
    """Drop a marked subject that repeats the previous marked subject (with probability
    ``p_elide``): "Juan estudia y Juan aprueba" -> "Juan estudia y aprueba". Removes the marks."""
    out, last, pos = [], None, 0
    pattern = re.compile(re.escape(SUBJECT_MARK[0]) + "(.*?)" + re.escape(SUBJECT_MARK[1]) + " ?")
    for m in pattern.finditer(text):
        out.append(text[pos : m.start()])
        subject = m.group(1)
        if subject == last and rng.random() < p_elide:
            rest = strip_subject_marks(text[m.end() :])
            if out:
                out[-1] = _fix_conjunction(out[-1], rest)
        else:
            out.append(subject + (" " if m.group(0).endswith(" ") else ""))
        last = subject
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def distinct_clauses(n: int = 20_000, seed: int = 0) -> int:
    """Distinct definitions among ``n`` clauses drawn over all domains (a lower bound of the space)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    for i in range(n):
        sampler = ClauseSampler(rng, BLOCKS[i % len(BLOCKS)])
        seen.add(sampler.clause().definition)
    return len(seen)
