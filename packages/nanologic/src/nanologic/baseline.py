"""A deterministic rule-based formaliser: the honest baseline of issue 13.

It reads a sentence with the generator's own cue inventory (:data:`nanologic.generator.CUES`, read
by role, never copied), so it knows exactly the constructions the trained model was shown and no
others. The sentence is split top-down, loosest construction first:

1. ``;`` joins independent parts (a conjunction; a leading "además", "pero", "y" is dropped; a
   part that opens with "o" is the other side of a disjunction);
2. constructions that open the sentence: negation prefixes ("no es cierto que"), "no puede ser que
   ... a la vez", asserted premises and "aunque" ("dado que A, B"), conditionals ("si A, entonces
   B", "cuando A, B"), "si y solo si A, B", "solo si", "a menos que", "para que A, es necesario
   que B", "basta con que A para que B", "ya sea que A o que B, C", "que A implica/equivale a que
   B", "o bien A, o bien B", "ni A ni B", "tanto A como B", "o A o B, pero no ambos", "no es
   cierto que A ni que B"; a conditional without a comma is split where its consequent opens
   (:func:`nanologic.grammar.split_commaless_conditional`), a purpose where its necessity cue does
   ("para A es necesario B");
3. infix constructions: biconditionals, contrast and premise ("A, pero B"), "A solo si B",
   "A a menos que B", "A si B", then disjunction ("o", "u") and conjunction ("y", "e", lists),
   then "A pero B" without a comma. Coordinated parts get the words they share written out
   (:func:`_complete_ellipsis`: "ni el banco ni la farmacia abren" gives "el banco abren", which
   the shared normalisation turns into "el banco abre",
   "Parra es escritor y matemático" gives "Parra es matemático"), as the generator's elliptic
   sentences define each atom in full;
4. what is left is a clause: a "no" or "tampoco" in it becomes ¬ and is removed from the
   definition, as is an emphatic "sí"; a leading "que" is dropped. Clauses with the same
   normalised text share a letter.

"y", "e", "o" next to an operator are terms, not connectives ("x + y = 2 y z = 1": two atoms). The
sentence read is :func:`nanologic.normalize.prepare_sentence`'s, as for the model.

The opening clause of a construction ends at the first comma that does not continue a list or an
"o bien" group. Letters are p, q, r, ... by first mention, as in the generator. It does not
conjugate (a subjunctive clause keeps its mood in the definition) and knows no cue outside the
inventory: that is the point of a baseline. A new role in ``CUES`` is ignored until a rule reads it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nanologic.evaluation import SPANISH_STOPWORDS, content_words, normalize_definition, unknown_cues
from nanologic.generator import CUES, known_cues
from nanologic.grammar import (
    DETERMINERS,
    SUBJECT_PRONOUNS,
    WORD_PUNCTUATION,
    argument_parts,
    fold_text,
    is_mathematical,
    is_verb,
    lexicon_verb_lemma,
    sentence_tokens,
    split_commaless_conditional,
)
from nanologic.lexicon import NAMES_F, NAMES_M, SURNAMES
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
    parse,
    rename,
    to_ascii,
    to_unicode,
)
from nanologic.logic import atoms as formula_atoms
from nanologic.normalize import tenseless_clause

_STRIP = WORD_PUNCTUATION


def _cues(role: str) -> tuple[str, ...]:
    """The generator's cues of one role, accent-free, longest first ('siempre que' before 'si')."""
    # Ties broken alphabetically: a set's order changes with the per-process string hash seed.
    return tuple(sorted({fold_text(c) for c in CUES.get(role, ())}, key=lambda c: (-len(c), c)))


def _word_at(low: str, cue: str, start: int = 0) -> int:
    """Index of ``cue`` as whole words in ``low`` at or after ``start``, or -1."""
    before = r"(?<!\w)" if cue[:1].isalnum() else ""
    match = re.compile(before + re.escape(cue) + r"(?!\w)").search(low, start)
    return match.start() if match else -1


def _starts_with(low: str, cue: str) -> bool:
    return _word_at(low, cue) == 0


@dataclass
class _Reading:
    definitions: list[str] = field(default_factory=list)
    connectors: list[tuple[str, str]] = field(default_factory=list)
    sentence: int = 0  # which of the text's sentences (split at ";" or a full stop) is being read
    sentence_of: list[int] = field(default_factory=list)

    def atom(self, text: str) -> Node:
        # Across sentences, the same words in another tense, or without their subject, are the same
        # clause ("el perro ladra" ... "el perro no ladró", "ella duerme" ... "duerme"): an argument
        # repeats its premises in its conclusion. Within one sentence a change of tense is another
        # clause ("o defiende la tesis o la defendió").
        key, tenseless = normalize_definition(text), tenseless_clause(text)
        for i, d in enumerate(self.definitions):
            if normalize_definition(d) == key:
                return Atom(f"a{i}")
            if self.sentence_of[i] != self.sentence and _same_but_subject(tenseless_clause(d), tenseless):
                return Atom(f"a{i}")
        self.definitions.append(text)
        self.sentence_of.append(self.sentence)
        return Atom(f"a{len(self.definitions) - 1}")


# "; " or a full stop before a capital: not after an initial ("Leonardo D. fue") or a title
# ("Ana llamó al Dr. Pérez.")
_SENTENCE_END_RE = re.compile(
    r";\s*|(?<!\b\w)(?<!\bDr)(?<!\bDra)(?<!\bSr)(?<!\bSra)(?<!\bSres)(?<!\bSta)(?<!\bSto)(?<!\bUd)(?<!\bUds)"
    r"\.\s+(?=[A-ZÁÉÍÓÚÑ¿¡])"
)


class RuleFormalizer:
    """``formalize(sentences) -> list[dict]`` with the same keys as the model's
    :class:`nanologic.inference.Formalizer` (``atoms``, ``connectors``, ``formula``,
    ``formula_ascii``, ``valid_formula``, ``raw``). Deterministic.

    ``normalize_definitions`` (default on, as for the model): the definitions are rewritten by
    :func:`nanologic.normalize.normalize_definitions`, so that both are scored after the same
    post-processing.
    """

    def __init__(self, normalize_definitions: bool = True) -> None:
        self.normalize_definitions = normalize_definitions

    def formalize(self, sentences: Sequence[str], batch_size: int = 0) -> list[dict]:
        from nanologic.normalize import normalize_results, prepare_sentences

        prepared = prepare_sentences(sentences)
        results = [self.formalize_one(s) for s in prepared]
        return normalize_results(results, prepared, self.normalize_definitions)

    def formalize_one(self, sentence: str) -> dict:
        reading = _Reading()
        node = self._parse(sentence, reading)
        # Letters by first mention in the formula's left-to-right order, as the generator does.
        order: list[str] = []
        for name in re.findall(r"a\d+", to_unicode(node)):
            if name not in order:
                order.append(name)
        letters = dict(zip(order, atom_letters(len(order))))
        node = rename(node, letters)
        atoms = {letters[name]: reading.definitions[int(name[1:])] for name in order}
        return {
            "atoms": atoms,
            "connectors": reading.connectors,
            "formula": to_unicode(node),
            "formula_ascii": to_ascii(node),
            "valid_formula": True,
            "raw": "",
        }

    # -- the rules ------------------------------------------------------------------------------
    def _parse(self, text: str, r: _Reading) -> Node:
        text = unicodedata.normalize("NFC", text).strip(_STRIP)
        low = fold_text(text)
        for rule in (self._sentences, self._prefixed, self._infix):
            node = rule(text, low, r)
            if node is not None:
                return node
        return self._clause(text, r)

    def _sentences(self, text: str, low: str, r: _Reading) -> Node | None:
        parts = [p for p in re.split(_SENTENCE_END_RE, text) if p.strip(_STRIP)]
        parts = [chained for part in parts for chained in _conditional_chain(part)]
        if len(parts) < 2:
            return None
        premises, conclusion = _conclusion_split(parts)
        if conclusion is not None:
            r.connectors.append((AND, conclusion[0]))
            r.connectors.append((IMPLIES, conclusion[0]))
            body = self._sentences("; ".join(premises), fold_text("; ".join(premises)), r)
            if body is None:
                body = self._parse(premises[0], r)
            r.sentence += 1
            return Binary(IMPLIES, body, self._parse(conclusion[1], r))
        # "A; o B": a part that opens with "o" is the other side of a disjunction
        alternatives = [c for c in _cues("disjunction") if len(c) == 1]
        opens_or = [
            k for k, p in enumerate(parts) if k and re.match(rf"\W*(?:{'|'.join(alternatives)})\W", p, re.I)
        ]
        if opens_or:
            bounds = [0, *opens_or, len(parts)]
            r.connectors.append((OR, "o"))
            sides = []
            for start, end in zip(bounds, bounds[1:]):
                # a later side's first part without its opening "o"
                side = [parts[start].strip(_STRIP)[1:] if start else parts[start], *parts[start + 1 : end]]
                joined = self._sentences("; ".join(side), "", r) if len(side) > 1 else None
                sides.append(joined or self._parse(side[0], r))
            return _chain(OR, sides)
        nodes: list[Node] = []
        for part in parts:
            r.sentence += 1
            part = part.strip(_STRIP)
            leading = True
            while leading:  # "y además, ..." drops both cues
                leading = False
                for cue in _cues("conjunction"):
                    if _starts_with(fold_text(part), cue):
                        part = part[len(cue) :].strip(_STRIP)
                        r.connectors.append((AND, cue))
                        leading = True
                        break
            otherwise = re.fullmatch(r"si no,\s*(.+)", part, re.IGNORECASE | re.DOTALL)
            if otherwise and nodes and isinstance(nodes[-1], Binary) and nodes[-1].op == IMPLIES:
                # "Si A, B; si no, C": "si no" is the previous condition denied, (A → B) ∧ (¬A → C)
                r.connectors += [(IMPLIES, "si no"), (NOT, "si no")]
                nodes.append(Binary(IMPLIES, Not(nodes[-1].left), self._parse(otherwise[1], r)))
                continue
            nodes.append(self._parse(part, r))
        return _chain(AND, nodes)

    def _prefixed(self, text: str, low: str, r: _Reading) -> Node | None:
        """The first of :data:`_PREFIX_RULES` (constructions that open the sentence) that reads it."""
        for rule in _PREFIX_RULES:
            node = rule(self, text, low, r)
            if node is not None:
                return node
        return None

    # -- the opening constructions, in the order _PREFIX_RULES tries them ------------------------
    # A rule returns None when the sentence is not its construction; a few note a connector before
    # they know (as the original single function did), so the order and the code stay as they were.
    def _not_both(self, text: str, low: str, r: _Reading) -> Node | None:
        """ "no puede ser que A y que B (a la vez)": ¬(A ∧ B)."""
        for cue in _cues("not_both"):
            if _starts_with(low, cue):
                body = _rest_after(text, cue)
                for end in _cues("not_both_end"):
                    body = re.sub(r"\s*" + re.escape(end) + r"\s*$", "", body, flags=re.I)
                left, sep, right = body.partition(" y que ")
                if sep:
                    r.connectors.append((NOT, cue))
                    return Not(Binary(AND, self._parse(left, r), self._parse(right, r)))
        return None

    def _negation_prefix(self, text: str, low: str, r: _Reading) -> Node | None:
        """ "no es cierto que A": ¬A; "no es cierto que A ni que B": ¬A ∧ ¬B (the "ni" goes on
        denying)."""
        for cue in _cues("negation_prefix"):
            if _starts_with(low, cue):
                r.connectors.append((NOT, cue))
                body = _rest_after(text, cue)
                denied = [
                    p for nor in _cues("nor") for p in re.split(rf"\s+{nor}\s+que\s+", body, flags=re.I)
                ]
                if len(denied) >= 2:
                    r.connectors.append((AND, "ni"))
                    return _chain(AND, [Not(self._parse(p, r)) for p in denied])
                return Not(self._parse(body, r))
        return None

    def _premise_prefix(self, text: str, low: str, r: _Reading) -> Node | None:
        """ "dado que A, B", "aunque A, B": A ∧ B."""
        for cue in (*_cues("premise"), *[c for c in _cues("conjunction") if " " not in c and len(c) > 2]):
            if _starts_with(low, cue):
                # "Dado que A B", "Aunque A B": a premise without its comma ends where B opens
                commaless = cue in _cues("premise") or cue == "aunque"
                head, tail = (_split_condition if commaless else _split_head)(_rest_after(text, cue))
                if tail:
                    r.connectors.append((AND, cue))
                    return Binary(AND, self._parse(head, r), self._parse(tail, r))
        return None

    def _unless_prefix(self, text: str, low: str, r: _Reading) -> Node | None:
        """ "a menos que A, B": ¬A → B."""
        for cue in _cues("unless"):
            if _starts_with(low, cue):
                head, tail = _split_condition(_rest_after(text, cue))
                if tail:
                    r.connectors += [(IMPLIES, cue), (NOT, cue)]
                    return Binary(IMPLIES, Not(self._parse(head, r)), self._parse(tail, r))
        return None

    def _only_if_prefix(self, text: str, low: str, r: _Reading) -> Node | None:
        """ "solo si A, B": B → A."""
        for cue in _cues("only_if"):
            if _starts_with(low, cue):
                head, tail = _split_condition(_rest_after(text, cue))
                if tail:
                    r.connectors.append((IMPLIES, cue))
                    return Binary(IMPLIES, self._parse(tail, r), self._parse(head, r))
        return None

    def _purpose_then_necessary(self, text: str, low: str, r: _Reading) -> Node | None:
        """ "para que A, es necesario que B": A → B."""
        for purpose in _cues("purpose"):
            if _starts_with(low, purpose):
                for need in _cues("necessary"):
                    body = _rest_after(text, purpose)
                    i = _word_at(fold_text(body), need)
                    if i > 0:
                        r.connectors.append((IMPLIES, need))
                        return Binary(
                            IMPLIES, self._parse(body[:i], r), self._parse(body[i + len(need) :], r)
                        )
        return None

    def _necessary_then_purpose(self, text: str, low: str, r: _Reading) -> Node | None:
        """ "es necesario que A para que B": B → A."""
        for need in _cues("necessary"):
            if _starts_with(low, need):
                body = _rest_after(text, need)
                for purpose in _cues("purpose"):
                    i = _word_at(fold_text(body), purpose)
                    if i > 0:
                        r.connectors.append((IMPLIES, need))
                        return Binary(
                            IMPLIES, self._parse(body[i + len(purpose) :], r), self._parse(body[:i], r)
                        )
        return None

    def _sufficient(self, text: str, low: str, r: _Reading) -> Node | None:
        """ "basta con que A para que B": A → B."""
        for cue in _cues("sufficient"):
            if _starts_with(low, cue):
                body = _rest_after(text, cue)
                for purpose in _cues("purpose"):
                    i = _word_at(fold_text(body), purpose)
                    if i > 0:
                        r.connectors.append((IMPLIES, cue))
                        return Binary(
                            IMPLIES, self._parse(body[:i], r), self._parse(body[i + len(purpose) :], r)
                        )
        return None

    def _either_antecedent(self, text: str, low: str, r: _Reading) -> Node | None:
        """ "ya sea que A o que B, C": (A ∨ B) → C."""
        for cue in _cues("either_antecedent"):
            if _starts_with(low, cue):
                head, tail = _split_head(_rest_after(text, cue))
                left, sep, right = head.partition(" o que ")
                if tail and sep:
                    r.connectors += [(OR, cue), (IMPLIES, cue)]
                    either = Binary(OR, self._parse(left, r), self._parse(right, r))
                    return Binary(IMPLIES, either, self._parse(tail, r))
        return None

    def _excluded_middle(self, text: str, low: str, r: _Reading) -> Node | None:
        """ "o A o no (A), pero B de todos modos": (A ∨ ¬A) ∧ B."""
        if _cues("excluded_middle") and _starts_with(low, "o"):
            i = _word_at(low, "o no", 2)
            ends = [e for e in _cues("excluded_middle") if e != "o no" and _word_at(low, e) > 0]
            if i > 0 and ends:
                a = self._parse(text[1:i], r)
                rest = text[i + 4 :].strip(_STRIP)
                # "o A o no lo A, pero ...": the denial may repeat A's words before its comma
                repeated, comma, after = rest.partition(",")
                if comma and content_words(repeated) <= content_words(text[1:i]):
                    rest = after.strip(_STRIP)
                rest = re.sub(r"^pero\s+", "", rest, flags=re.I)
                for e in ends:
                    rest = re.sub(r"\s*" + re.escape(e) + r"\s*", " ", rest, flags=re.I)
                r.connectors += [(OR, "o...o no"), (AND, ends[0])]
                return Binary(AND, Binary(OR, a, Not(a)), self._parse(rest, r))
        return None

    def _both_conditions(self, text: str, low: str, r: _Reading) -> Node | None:
        """ "tanto si A como si B, C": (A → C) ∧ (B → C)."""
        both_if = _cues("both_conditions")
        if len(both_if) >= 2 and _starts_with(low, "tanto si"):
            body = _rest_after(text, "tanto si")
            i = _word_at(fold_text(body), "como si")
            if i > 0:
                head, tail = _split_head(body[i + len("como si") :])
                if tail:
                    r.connectors.append((IMPLIES, "tanto si...como si"))
                    a, b, c = self._parse(body[:i], r), self._parse(head, r), self._parse(tail, r)
                    return Binary(AND, Binary(IMPLIES, a, c), Binary(IMPLIES, b, c))
        return None

    def _only_when_prefix(self, text: str, low: str, r: _Reading) -> Node | None:
        """ "solo cuando A, B": B → A."""
        for cue in _cues("only_when"):
            if _starts_with(low, cue):
                head, tail = _split_condition(_rest_after(text, cue))
                if tail:
                    r.connectors.append((IMPLIES, cue))
                    return Binary(IMPLIES, self._parse(tail, r), self._parse(head, r))
        return None

    def _need_for_purpose(self, text: str, low: str, r: _Reading) -> Node | None:
        """A necessity cue, then "para (que)": "NEED A para (que) B": B → A."""
        for need in _cues("purpose_necessary"):
            if need in _PURPOSE_WORDS or not _starts_with(low, need):
                continue
            body = _rest_after(text, need)
            for purpose in _PURPOSE_WORDS:
                i = _word_at(fold_text(body), purpose, 1)
                if i > 0 and purpose in (*_cues("purpose_necessary"), *_cues("purpose")):
                    r.connectors.append((IMPLIES, f"{need}...{purpose}"))
                    return Binary(IMPLIES, self._parse(body[i + len(purpose) :], r), self._parse(body[:i], r))
        return None

    def _purpose_first(self, text: str, low: str, r: _Reading) -> Node | None:
        """ "para (que) A, (NEED) B": A → B; without the comma, "para A NEED B"."""
        needs = [c for c in _cues("purpose_necessary") if c not in _PURPOSE_WORDS]
        for purpose in _PURPOSE_WORDS:
            if purpose in (*_cues("purpose_necessary"), *_cues("purpose")) and _starts_with(low, purpose):
                body = _rest_after(text, purpose)
                head, tail = _split_head(body)
                if not tail.strip(_STRIP):
                    # "Para aprobar es necesario estudiar": the necessity cue ends the purpose, or
                    # else where the consequent opens ("Para que llueva mi madre no vuelve")
                    found = sorted(
                        (i, need) for need in needs for i in (_word_at(fold_text(body), need, 1),) if i > 0
                    )
                    head, tail = (
                        (body[: found[0][0]], body[found[0][0] :]) if found else _split_condition(body)
                    )
                if tail:
                    for need in _cues("purpose_necessary"):
                        if need not in _PURPOSE_WORDS and _starts_with(fold_text(tail), need):
                            tail = tail[len(need) :]
                            break
                    r.connectors.append((IMPLIES, purpose))
                    return Binary(IMPLIES, self._parse(head, r), self._parse(tail, r))
        return None

    def _que_implies(self, text: str, low: str, r: _Reading) -> Node | None:
        """ "que A implica que B" (A → B), "que A equivale a que B" (A ↔ B)."""
        if _starts_with(low, "que"):
            for op, role in ((IMPLIES, "implies"), (IFF, "biconditional")):
                for cue in _cues(role):
                    i = _word_at(low, cue + " que")
                    if i > 0:
                        r.connectors.append((op, cue))
                        return Binary(op, self._parse(text[3:i], r), self._parse(text[i + len(cue) + 4 :], r))
        return None

    def _biconditional_prefix(self, text: str, low: str, r: _Reading) -> Node | None:
        """ "si y solo si A, B": A ↔ B."""
        for cue in _cues("biconditional"):
            if _starts_with(low, cue):
                head, tail = _split_condition(_rest_after(text, cue))
                if tail:
                    r.connectors.append((IFF, cue))
                    return Binary(IFF, self._parse(head, r), self._parse(tail, r))
        return None

    def _conditional_prefix(self, text: str, low: str, r: _Reading) -> Node | None:
        """ "si A, (entonces) B", "cuando A, B": A → B."""
        for cue in _cues("conditional"):
            if _starts_with(low, cue):
                body = _rest_after(text, cue)
                then = [
                    (i, c)
                    for c in _cues("conditional_then")
                    for i in (_word_at(fold_text(body), c, 1),)
                    if i > 0
                ]
                if then:
                    i, cue_then = then[0]
                    head, tail = body[:i], body[i + len(cue_then) :]
                    r.connectors.append((IMPLIES, f"{cue}...{cue_then}"))
                else:
                    head, tail = _split_condition(body)
                    r.connectors.append((IMPLIES, cue))
                if tail.strip(_STRIP):
                    # "si A y si B, C": the repeated "si" opens a second condition, not a conditional
                    head = re.sub(r"(?<!\w)(y|e|o|u)\s+si(?!\w)", r"\1", head, flags=re.IGNORECASE)
                    return Binary(IMPLIES, self._parse(head, r), self._parse(tail, r))
        return None

    def _either_or(self, text: str, low: str, r: _Reading) -> Node | None:
        """ "o bien A, o bien B": A ∨ B (∨ ...)."""
        for cue in _cues("either_or"):
            if _starts_with(low, cue):
                parts = [p for p in re.split(r",\s*" + re.escape(cue) + r"\s+", text[len(cue) :], flags=re.I)]
                if len(parts) >= 2:
                    r.connectors.append((OR, cue))
                    return _chain(OR, [self._parse(p, r) for p in parts])
        return None

    def _disjunction_prefix(self, text: str, low: str, r: _Reading) -> Node | None:
        """ "o A o B": the leading "o" is dropped, the infix rules read the rest."""
        for cue in _cues("disjunction"):
            if _starts_with(low, cue) and _word_at(low, cue, len(cue) + 1) > 0:
                return self._parse(_rest_after(text, cue), r)
        return None

    def _nor(self, text: str, low: str, r: _Reading) -> Node | None:
        """ "ni A ni B": ¬A ∧ ¬B. A later conditional, or a contrast or premise after a comma ("ni A
        ni B vienen, aunque C"), is split first by the infix rules."""
        for cue in _cues("nor"):
            later = (*_cues("conditional"), *_cues("only_if"), *_cues("unless"))
            after_comma = (*_contrast_or("conjunction_contrast"), *(f", {c}" for c in _cues("premise")))
            if any(low.find(c + " ") > 0 for c in after_comma):
                continue
            if _starts_with(low, cue) and not any(_word_at(low, c, len(cue) + 1) > 0 for c in later):
                parts = re.split(r"\s+" + re.escape(cue) + r"\s+", text[len(cue) :], flags=re.I)
                if len(parts) >= 2:
                    r.connectors += [(NOT, f"{cue}...{cue}"), (AND, f"{cue}...{cue}")]
                    return _chain(AND, [Not(self._parse(p, r)) for p in _complete_ellipsis(parts)])
        return None

    def _both(self, text: str, low: str, r: _Reading) -> Node | None:
        """ "tanto A como B <predicado>": A ∧ B, the predicate shared."""
        first, second = _cues("both") or ("", "")
        if first and _starts_with(low, first) and not _starts_with(low, "tanto si"):
            head, tail = _split_head(_rest_after(text, first))
            left, sep, right = head.partition(f" {second} ")
            if sep and left.strip(_STRIP) and right.strip(_STRIP):
                r.connectors.append((AND, f"{first}...{second}"))
                both = _chain(AND, [self._parse(p, r) for p in _complete_ellipsis([left, right])])
                return Binary(AND, both, self._parse(tail, r)) if tail.strip(_STRIP) else both
        return None

    def _infix(self, text: str, low: str, r: _Reading) -> Node | None:
        for end in _cues("exclusive_end"):
            if low.endswith(", " + end) or low.endswith(" " + end):
                body = text[: len(text) - len(end)].strip(_STRIP)
                for cue in _cues("disjunction"):
                    if _starts_with(fold_text(body), cue):
                        body = body[len(cue) :].strip()
                        break
                left, right = _split_top(body, _cues("disjunction"))
                if right:
                    a, b = self._parse(left, r), self._parse(right, r)
                    r.connectors += [(OR, "o"), (AND, "pero"), (NOT, end)]
                    return Binary(AND, Binary(OR, a, b), Not(Binary(AND, a, b)))
        for role, op, flip in (
            ("iff_condition", IFF, False),
            ("sufficient_condition", IMPLIES, False),
            ("necessary_condition", IMPLIES, True),
        ):
            for cue in _cues(role):
                for link in (f" es {cue} para que ", f" es {cue} para "):
                    i = low.find(link)
                    if i > 0:
                        r.connectors.append((op, cue))
                        left = re.sub(r"^que\s+", "", text[:i], flags=re.I)
                        a, b = self._parse(left, r), self._parse(text[i + len(link) :], r)
                        return Binary(op, b, a) if flip else Binary(op, a, b)
        for role, op, flip in (
            ("biconditional_when", IFF, False),
            ("only_when", IMPLIES, False),
            ("condition_after", IMPLIES, True),
        ):
            for cue in _cues(role):
                i = _word_at(low, cue, 1)
                if i > 0:
                    left, right = text[:i], text[i + len(cue) :]
                    if left.strip(_STRIP) and right.strip(_STRIP):
                        r.connectors.append((op, cue))
                        a, b = self._parse(left, r), self._parse(right, r)
                        return Binary(op, b, a) if flip else Binary(op, a, b)
        for op, roles, flip, negate_right in (
            (IFF, ("biconditional",), False, False),
            (AND, ("premise", "conjunction_contrast"), False, False),
            (IMPLIES, ("only_if",), False, False),
            (IMPLIES, ("unless",), True, True),
            (IMPLIES, ("conditional",), True, False),
        ):
            cues = [c for role in roles for c in _contrast_or(role)]
            for cue in cues:
                i = _word_at(low, cue, 1)
                if i > 0:
                    left, right = text[:i], text[i + len(cue) :]
                    if not left.strip(_STRIP) or not right.strip(_STRIP):
                        continue
                    if left.strip(_STRIP).lower() in _FOCUS_ADVERBS:  # "Solo si A B" unsplit: no atom "Solo"
                        continue
                    r.connectors.append((op, cue))
                    a, b = self._parse(left, r), self._parse(right, r)
                    if negate_right:
                        r.connectors.append((NOT, cue))
                        b = Not(b)
                    return Binary(op, b, a) if flip else Binary(op, a, b)
        for op, role in ((OR, "disjunction"), (AND, "conjunction")):
            splitting = _cues(role) if op == OR else tuple(c for c in _cues(role) if len(c) <= 2)
            parts = _split_all(text, splitting)
            if len(parts) >= 2:
                # the cue the sentence says ("o", not its variant "u")
                said = next((c for c in splitting if _word_at(low, c, 1) > 0), splitting[-1])
                r.connectors.append((op, said))
                return _chain(op, [self._parse(p, r) for p in _complete_ellipsis(parts)])
        # "A pero B" without a comma: a contrast conjunction once nothing else has split the text
        i = _word_at(low, "pero", 1)
        if i > 0 and "pero" in _cues("conjunction"):
            r.connectors.append((AND, "pero"))
            return Binary(AND, self._parse(text[:i], r), self._parse(text[i + len("pero") :], r))
        for cue in _cues("nor"):
            i = _word_at(low, cue, 1)
            if i > 0:
                head, items = (
                    text[:i].strip(),
                    re.split(rf"\s+{re.escape(cue)}\s+", text[i + len(cue) :], flags=re.I),
                )
                if _negated_verb_before_nor(head, items):
                    # "la médica no tocará ni la gaita ni el acordeón": ¬(… la gaita) ∧ ¬(… el acordeón)
                    r.connectors.append((AND, f"{cue}...{cue}"))
                    return _chain(AND, [self._parse(f"{head} {item}", r) for item in items])
                r.connectors.append((AND, cue))
                return Binary(AND, self._parse(text[:i], r), Not(self._parse(text[i + len(cue) :], r)))
        return None

    def _clause(self, text: str, r: _Reading) -> Node:
        words = text.strip(_STRIP).split()
        negated = False
        if "≠" in words:  # "x ≠ 2" is ¬(x = 2): the relation stays, affirmative
            words[words.index("≠")] = "="
            negated = True
            r.connectors.append((NOT, "≠"))
        for neg in () if negated else _cues("negation"):
            lowered = [w.lower().strip(_STRIP) for w in words]
            if neg in lowered:
                del words[lowered.index(neg)]
                negated = True
                r.connectors.append((NOT, neg))
                break
        # The emphatic "sí" ("yo sí quiero") only asserts: the atom is the clause without it.
        words = [w for w in words if w.lower() != "sí"] or words
        while words and words[0].lower() in ("que", *_cues("conditional_then")):
            words = words[1:]
        definition = " ".join(words).strip(_STRIP) or text.strip(_STRIP)
        first = definition.split(" ", 1)[0]
        if first.lower() in SPANISH_STOPWORDS or first.lower() in ("hoy", "hay", "mañana"):
            definition = first.lower() + definition[len(first) :]
        node = r.atom(definition)
        return Not(node) if negated else node


# The constructions that open a sentence, tried in this order (the first that reads it wins).
_PREFIX_RULES: tuple[Callable[[RuleFormalizer, str, str, _Reading], Node | None], ...] = (
    RuleFormalizer._not_both,
    RuleFormalizer._negation_prefix,
    RuleFormalizer._premise_prefix,
    RuleFormalizer._unless_prefix,
    RuleFormalizer._only_if_prefix,
    RuleFormalizer._purpose_then_necessary,
    RuleFormalizer._necessary_then_purpose,
    RuleFormalizer._sufficient,
    RuleFormalizer._either_antecedent,
    RuleFormalizer._excluded_middle,
    RuleFormalizer._both_conditions,
    RuleFormalizer._both,
    RuleFormalizer._only_when_prefix,
    RuleFormalizer._need_for_purpose,
    RuleFormalizer._purpose_first,
    RuleFormalizer._que_implies,
    RuleFormalizer._biconditional_prefix,
    RuleFormalizer._conditional_prefix,
    RuleFormalizer._either_or,
    RuleFormalizer._disjunction_prefix,
    RuleFormalizer._nor,
)
_PURPOSE_WORDS = ("para que", "para")


def clause_bounds(sentence: str) -> tuple[int, int] | None:
    """(fewest, most) atoms of an answer to ``sentence`` as the rules read it, or None where the
    rules cannot count them: the sentence says a textbook cue the generator's inventory lacks
    (:func:`unknown_cues`: "porque", "mientras"), it is an argument (:func:`argument_parts`; the
    rules do not merge a syllogism's clause said again with another subject), or a mathematical
    sentence says "y" (:func:`nanologic.grammar.is_mathematical`: in "…; pero cuando fue 72, y era
    menor que 11" the rules read the variable as a conjunction).

    The fewest are the distinct clauses of :class:`RuleFormalizer`'s answer after the shared
    normalisation (which gives a clause said twice one letter). The most are the distinct clauses
    of each part of its formula's top-level conjunction, summed: a model may declare a chain's
    repeated clause once per part ("Si A, no B; pero si no B, C": four), and the two are merged
    after decoding (:func:`nanologic.normalize.merge_repeated_atoms`), while a clause said twice
    within one part is one atom ("Viene o no viene": one). The rule reading's clause count is the
    gold answer's for 522 of a synthetic test split's 524 sentences and 2,997 of 3,000 training
    sentences (2026-12-07). Used by :func:`nanologic.grammar.grounded_grammar` to bound the atom
    list.
    """
    if unknown_cues(sentence, known_cues()) or argument_parts(sentence) is not None:
        return None
    tokens = sentence_tokens(sentence)
    if "y" in (token.lower() for token in tokens) and is_mathematical(tokens):
        return None  # "y" may be a variable there, which the grammar reads and the rules do not
    answer = RuleFormalizer().formalize([sentence])[0]
    fewest = len(answer["atoms"])
    conjuncts, stack = [], [parse(answer["formula"])]
    while stack:  # the top-level conjunction's parts
        node = stack.pop()
        if isinstance(node, Binary) and node.op == AND:
            stack += [node.left, node.right]
        else:
            conjuncts.append(node)
    return fewest, max(fewest, sum(len(set(formula_atoms(conjunct))) for conjunct in conjuncts))


def _rest_after(text: str, cue: str) -> str:
    """``text`` after its opening ``cue``, stripped."""
    return text[len(cue) :].strip(_STRIP)


def _conclusion_split(parts: list[str]) -> tuple[list[str], tuple[str, str] | None]:
    """An argument's premises and (cue, conclusion) when its last sentence opens with a
    conclusion cue ("Por lo tanto, no llueve") or says one after a comma ("no como, luego no
    tengo hambre", but not the "entonces" of "si A, entonces B"); else (parts, None)."""
    last = parts[-1].strip(_STRIP)
    low = fold_text(last)
    for cue in _cues("conclusion"):
        if _starts_with(low, cue):
            return parts[:-1], (cue, _rest_after(last, cue))
    # "…; y si A, entonces B": a coordinated conditional's "entonces" opens no conclusion
    opening = next((c for c in _cues("conjunction") if _starts_with(low, c)), "")
    unjoined = low[len(opening) :].strip() if opening else low
    if not any(_starts_with(unjoined, c) for c in _cues("conditional")):
        for cue in _cues("conclusion"):
            at = low.find(f", {cue} ")
            if at > 0:
                return parts[:-1] + [last[:at]], (cue, last[at + len(cue) + 2 :].strip(_STRIP))
    return parts, None


def _contrast_or(role: str) -> tuple[str, ...]:
    """Infix cue strings of a role; contrast conjunctions only after a comma ("A, pero B")."""
    if role == "conjunction_contrast":
        return tuple(f", {c}" for c in _cues("conjunction") if len(c) > 2)
    if role == "premise":
        return tuple(f", {c}" for c in _cues("premise"))
    return _cues(role)


def _chain(op: str, nodes: list[Node]) -> Node:
    node = nodes[0]
    for nxt in nodes[1:]:
        node = Binary(op, node, nxt)
    return node


_CONTINUATIONS = ("y ", "e ", "o ", "u ", "pero no ")
# Cues that open a new construction: a comma before one of them always ends the opening clause.
_OPENERS = tuple(
    fold_text(c)
    for role in (
        "conditional",
        "only_if",
        "unless",
        "premise",
        "negation_prefix",
        "either_or",
        "nor",
        "not_both",
    )
    for c in CUES.get(role, ())
)


def _split_condition(body: str) -> tuple[str, str]:
    """An opening condition's (head, tail): :func:`_split_head`'s, or, where the comma is left
    out ("Solo si llueve salgo", "A menos que llueva salgo"), where
    :func:`nanologic.grammar.split_commaless_conditional` finds the consequent opening."""
    head, tail = _split_head(body)
    if not tail.strip(_STRIP):
        head, tail = split_commaless_conditional(body)
    return head, tail


def _split_head(body: str) -> tuple[str, str]:
    """Split 'HEAD, TAIL' at the first comma that ends the opening clause group.

    A comma followed by "o bien" continues a group the head opened with "o bien"; a comma followed
    by a coordinator continues a list; "A, B y C, D" keeps "A, B y C" together.
    """
    commas = [m.start() for m in re.finditer(r",\s*", body)]
    for i, pos in enumerate(commas):
        head, tail = body[:pos], body[pos:].lstrip(", ")
        tail_low, head_low = fold_text(tail), head.lower()
        if tail_low.startswith("o bien"):
            if "o bien" in head_low:
                continue
            return head, tail
        if tail_low.startswith(_CONTINUATIONS):
            continue
        if any(_starts_with(tail_low, c) for c in _OPENERS):
            return head, tail
        if i + 1 < len(commas):
            segment = body[pos : commas[i + 1]].lower()
            if re.search(r"\s(y|e|o|u)\s", segment) and not re.search(r"\s(y|e|o|u)\s", head_low):
                continue
        return head, tail
    return body, ""


def _same_but_subject(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """``a`` and ``b`` (:func:`nanologic.normalize.tenseless_clause` keys) are equal, or equal once
    the longer one's opening subject (a pronoun, or a determiner and its noun) is left out."""
    if a == b:
        return True
    longer, shorter = (a, b) if len(a) > len(b) else (b, a)
    n = len(longer) - len(shorter)
    return 0 < n <= 2 and longer[n:] == shorter and _subject_words(list(longer[:n]) + ["x"]) == n


def _split_top(text: str, cues: tuple[str, ...]) -> tuple[str, str]:
    low = text.lower()
    for cue in cues:
        i = _word_at(low, cue, 1)
        if i > 0:
            return text[:i], text[i + len(cue) :]
    return text, ""


_OPERATORS = re.escape("=+-−<>≤≥≠·×/^")


_NAMES = frozenset({*NAMES_F, *NAMES_M, *SURNAMES})
_FOCUS_ADVERBS = frozenset({"también", "tampoco", "solo", "sólo", "solamente", "únicamente"})
_NEGATIONS = frozenset({"no", "nunca", "jamás", "tampoco"})
_PREPOSITIONS = frozenset({
    "a", "con", "de", "desde", "en", "entre", "hacia", "hasta", "para", "por", "sin", "sobre", "tras",
})  # fmt: skip


def _subject_words(words: list[str], names_only: bool = False) -> int:
    """How many of ``words`` open them as a subject: a determiner and its noun, a pronoun, or a
    run of capitalised names (with ``names_only``, names of the lexicon: at a sentence's start
    every word is capitalised); 0 when they do not open with one."""
    if not words:
        return 0
    first = words[0].lower()
    if first in DETERMINERS:
        return 2 if len(words) >= 2 else 0
    if first in SUBJECT_PRONOUNS:
        return 1
    n = 0
    while n < len(words) and words[n][:1].isupper() and (not names_only or words[n] in _NAMES):
        n += 1
    return n


# "al" and "del" are "a" and "de" with the article: "va a la sierra o al centro" repeats "a"
_CONTRACTED = {"al": "a", "del": "de"}


def _a_name(words: list[str]) -> bool:
    """Whether ``words`` are one capitalised word that is neither a verb nor a function word: a
    name outside the lexicon ("Mifassue", "Civallove" in "Civallove y Julio llegaron tarde")."""
    return (
        len(words) == 1
        and words[0][:1].isupper()
        and not is_verb(words[0])
        and words[0].lower() not in SPANISH_STOPWORDS
    )


def _complete_ellipsis(parts: list[str]) -> list[str]:
    """Coordinated parts with the words they share written out, so that each reads as a clause.

    - bare subjects before a last part with its own subject share its predicate ("el banco", "la
      farmacia abren los domingos" → "el banco abren los domingos", ...);
    - a later part of one word (a focus adverb aside) takes the first part's words but its last
      ("Nicanor Parra es escritor", "matemático" → "Nicanor Parra es matemático"), or only its
      subject when the word is a verb of the lexicon ("mi tía no obtuvo una beca", "durmió" → "mi
      tía durmió");
    - a later part that opens with a preposition of the first part takes the first part's words
      before it ("reviso el correo desde el computador", "desde el celular" → "reviso el correo
      desde el celular");
    - a later part that opens with a determiner and holds no verb is another object: it takes the
      first part's words before its object ("Cristina preparaba la comida", "la sopa" → "Cristina
      preparaba la sopa");
    - a subject said once before "o … o" ("las bacterias o se destruyen hirviendo el agua o se
      destruyen por cloración"): a first part without a verb before two or more parts that open
      with one is the subject of each, not a clause of its own.

    Borrowed words leave a negation behind: it belongs to the part that says it.
    """
    parts = [p.strip(_STRIP) for p in parts]
    words = [p.split() for p in parts]
    if (
        len(parts) >= 3
        and not any(is_verb(w) for w in words[0])
        and all(_opens_with_a_verb(ws) for ws in words[1:])
    ):
        return [f"{parts[0]} {part}" for part in parts[1:]]
    last = words[-1]
    k = _subject_words(last)
    heads = words[:-1]
    if 0 < k < len(last) and all(
        0 < _subject_words(h, names_only=True) == len(h) or _a_name(h) for h in heads
    ):
        predicate = " ".join(last[k:])
        return [f"{' '.join(h)} {predicate}" for h in heads] + [parts[-1]]
    first = [w for w in words[0] if w.lower() not in _NEGATIONS]
    completed = [parts[0]]
    for part, ws in zip(parts[1:], words[1:]):
        core = [w for w in ws if w.lower() not in _FOCUS_ADVERBS]
        opener = _CONTRACTED.get(ws[0].lower(), ws[0].lower()) if ws else ""
        at = max(
            (j for j, w in enumerate(first) if j > 0 and _CONTRACTED.get(w.lower(), w.lower()) == opener),
            default=0,
        )
        if len(core) == 1 and lexicon_verb_lemma(core[0]):
            subject = first[: _subject_words(first, names_only=True)]
            completed.append(" ".join(subject + ws))
        elif len(core) == 1 and len(first) >= 3:
            completed.append(" ".join(first[:-1] + ws))
        elif opener in _PREPOSITIONS and at > 0:
            completed.append(" ".join(first[:at] + ws))
        elif opener in DETERMINERS and not any(is_verb(w) for w in ws) and (obj := _object_start(first)):
            completed.append(" ".join(first[:obj] + ws))
        else:
            completed.append(part)
    return completed


_REFLEXIVE_CLITICS = frozenset({"se", "me", "te", "nos", "os"})


def _opens_with_a_verb(words: list[str]) -> bool:
    """Whether a clause opens with its verb, a reflexive clitic before it aside ("se destruyen")."""
    k = 1 if words and words[0].lower() in _REFLEXIVE_CLITICS else 0
    return len(words) > k and is_verb(words[k])


def _object_start(words: list[str]) -> int:
    """Where the object of a clause begins: the first determiner after its subject with a verb
    before it ("Cristina preparaba | la comida"); 0 when there is none."""
    for j in range(max(1, _subject_words(words)), len(words)):
        if words[j].lower() in DETERMINERS and any(is_verb(w) for w in words[:j]):
            return j
    return 0


def _split_all(text: str, cues: tuple[str, ...]) -> list[str]:
    """Split on every whole-word occurrence of the cues, and on list commas before the last one."""
    if not cues:
        return [text]
    # Not next to an operator: there "y", "e", "o" is a term ("x + y = 2", the variable y).
    pattern = (
        rf"(?<![{_OPERATORS}])\s+(?:" + "|".join(re.escape(c) for c in cues) + rf")\s+(?![{_OPERATORS}])"
    )
    pieces, start = [], 0
    for match in re.finditer(pattern, text, flags=re.I):
        # Nor between two numbers: "sumamos 14 y 92", "el producto de 3 y 16" name one operation.
        if match.group(0).strip().lower() in ("y", "e") and _between_numbers(
            text, match.start(), match.end()
        ):
            continue
        pieces.append(text[start : match.start()])
        start = match.end()
    pieces.append(text[start:])
    parts = [p for p in pieces if p.strip(_STRIP)]
    if len(parts) < 2:
        return [text]
    first = [p for p in re.split(r",\s+", parts[0]) if p.strip(_STRIP)]
    return [*first, *parts[1:]]


def _between_numbers(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` has a numeral on each side ("14 y 92", "3,5 y 7")."""
    return 0 < start and end < len(text) and text[start - 1].isdigit() and text[end].isdigit()


def _negated_verb_before_nor(head: str, items: list[str]) -> bool:
    """Whether "HEAD ni A ni B" shares a negated verb: HEAD says "no" (or "nunca", …) and ends with
    a verb, and two or more items follow, none of them opening with a verb ("no tocará ni la gaita
    ni el acordeón"; not "no canta ni baila ni toca", where each item is its own verb)."""
    words = head.split()
    return (
        len(items) >= 2
        and any(w.lower() in _NEGATIONS for w in words)
        and bool(words)
        and is_verb(words[-1])
        and all(item.split() and not is_verb(item.split()[0]) for item in items)
    )


def _conditional_chain(part: str) -> list[str]:
    """A conditional followed by another, "Si A, B, y si C, D" (or "… B y si C, D"), as two
    sentences (as if written with ";"). Only where the text before "y si" already holds a comma,
    the first conditional's own: "Si A y si B, C" is one conditional with two conditions."""
    low = fold_text(part)
    if not any(_starts_with(low, c) for c in _cues("conditional")):
        return [part]
    conjunctions = "|".join(re.escape(c) for c in _cues("conjunction"))
    conditionals = "|".join(re.escape(c) for c in _cues("conditional"))
    for match in re.finditer(rf",?\s+(?:{conjunctions})\s+(?:{conditionals})(?!\w)", low):
        if "," in low[: match.start()]:
            return [part[: match.start()], *_conditional_chain(part[match.start() :].strip(" ,"))]
    return [part]
