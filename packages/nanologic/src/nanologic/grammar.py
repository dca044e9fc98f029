"""GBNF grammars of nanologic's answer, and the same constraint as a logits mask for PyTorch.

The answer the model writes after ``<|output|>`` is::

    <|atoms|> p: def | q: def ¬ <|connectors|> ∧: y | ¬: no | →: si <|formula|> p ∧ ¬q → r <|eos|>

:func:`answer_grammar` accepts exactly: atoms lettered p, q, r, ... in order (so they are
distinct), each with a definition of words and an optional polarity mark (``¬`` or ``±``, see
:func:`nanologic.data.literal_polarity`); a connector list (possibly empty) of at most
``MAX_CONNECTORS`` items ``symbol: cue``, a cue of at most ``MAX_CUE_WORDS`` words;
a formula that our parser (:func:`nanologic.logic.parse`) accepts, in the spacing
:func:`nanologic.logic.to_unicode` writes, over the **declared** letters only; then the end
(llama.cpp and xgrammar allow the eos token once the grammar is complete).

:func:`grounded_grammar` (issue 13, part 3) makes each atom definition *read* the sentence: its words
in the sentence's order (skipping any), with one jump back to an earlier word at most, so that a
subject or predicate shared by two clauses can be repeated ("Luis come pan y Ana también" -> "Ana
come pan"), and a word may be given in the forms the format's normalisations allow: the
indicative for a subjunctive (:func:`indicative_variants`, :func:`verb_variants`), the agreement of
a repeated predicate, lower-cased or capitalised; right after a verb it skips no other verb that
ends a clause of its own ("Óscar canta el microscopio" for "… cante … o Óscar use el
microscopio"); an expression of arithmetic is written whole
("x + y = 3"), and "x ≠ y" is the definition "x = y" with the polarity mark ¬. A definition never
holds a negation or a sentence-level connective (``CONNECTIVE_WORDS``), because it is an
affirmative atomic clause; the formula uses only the connectives the sentence can say
(:func:`said_connectives`), a sentence that joins clauses has two atoms at least
(:func:`joins_clauses`), a formula names each letter once where the sentence says each clause once
(:func:`letters_once`), and an argument's premises and conclusion of one clause take their own
letter and sign, those of two clauses ("si A, B", "o A, o B") their parentheses, connective,
letters and signs (:func:`argument_literal_notes`), as do the parts of a conjunction of
conditionals (:func:`conjunction_notes`); a conditional opens with its condition's literal and
writes its consequent as said (:func:`conditional_antecedent_notes`), "O A o no, pero B" opens
with A's excluded middle and writes B as said (:func:`excluded_middle_notes`), an argument's first
token opens as its first premise does, and the polarity marks agree (``MARKS_FOLLOW_NOTE``): the rules
from :func:`letters_once` on are kept by :class:`FormulaMask`, which reads them from comment lines
of the grammar (llama.cpp ignores them). Of the
501 gold definitions of ``data/dev_real.jsonl`` 465 read the sentence in order and 6 need the jump (29 use words the sentence lacks, "la física es una ciencia natural");
of a generated test split's 1,501, 1,499 read it in order. Measured on the default model
(README): dev_real grounded accuracy 0.370 free, 0.392 with an earlier grammar that allowed any
sentence word in any order, 0.423 with this one.

The grammar is plain GBNF (literals, character classes, ``? * +``, ``{m,n}``, alternation), read by
llama.cpp (``--grammar-file``, ``llama_cpp.LlamaGrammar``) and by xgrammar
(``Grammar.from_ebnf``), which turns it into a token bitmask for our PyTorch decoder
(:class:`GrammarLogitsProcessor`). xgrammar was chosen after trying the alternatives that install
from wheels on CPU: it reads our byte-level HF tokenizer (special tokens included as their text,
so ``"<|atoms|>"`` in the grammar matches our single marker token), compiles a per-sentence
grammar in milliseconds, and applies the mask on CPU tensors. llguidance reads GBNF only through
a conversion to its Lark dialect; transformers-cfg ties itself to ``generate()`` of transformers
models, which our model does not use.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from nanologic.data import CONNECTORS as CONNECTORS_MARKER
from nanologic.data import FORMULA as FORMULA_MARKER
from nanologic.data import MIXED_MARK, NEGATED_MARK
from nanologic.lexicon import PRONOUNS, PRONOUNS_F
from nanologic.logic import AND, IFF, IMPLIES, NOT, OR, atom_letters
from nanologic.normalize import (
    COORDINATORS,
    DENIED_DETERMINERS,
    FUTURE_ENDINGS,
    PERFECT_AUXILIARIES,
    not_content_words,
    word_set,
)

BINARY_CONNECTIVES = (AND, OR, IMPLIES, IFF)
FORMULA_SYMBOLS = (NOT, *BINARY_CONNECTIVES)

MAX_ATOMS = 8  # p..w; the generator uses at most 6

# Irregular present subjunctive -> indicative (the regular endings are handled by rule).
_IRREGULAR_SUBJUNCTIVE = {
    "haya": ("hay", "ha"),
    "hayan": ("han", "hay"),
    "hayas": ("has",),
    "hayamos": ("hemos",),
    "sea": ("es",),
    "sean": ("son",),
    "seas": ("eres",),
    "seamos": ("somos",),
    "esté": ("está",),
    "estén": ("están",),
    "estés": ("estás",),
    "estemos": ("estamos",),
    "vaya": ("va", "voy"),
    "vayan": ("van",),
    "vayas": ("vas",),
    "vayamos": ("vamos",),
    "dé": ("da",),
    "den": ("dan",),
    "sepa": ("sabe",),
    "sepan": ("saben",),
    "quepa": ("cabe",),
    "tenga": ("tiene",),
    "tengan": ("tienen",),
    "tengas": ("tienes",),
    "tengamos": ("tenemos",),
    "venga": ("viene",),
    "vengan": ("vienen",),
    "haga": ("hace",),
    "hagan": ("hacen",),
    "hagamos": ("hacemos",),
    "diga": ("dice",),
    "digan": ("dicen",),
    "salga": ("sale",),
    "salgan": ("salen",),
    "salgamos": ("salimos",),
    "ponga": ("pone",),
    "pongan": ("ponen",),
    "pueda": ("puede",),
    "puedan": ("pueden",),
    "podamos": ("podemos",),
    "quiera": ("quiere",),
    "quieran": ("quieren",),
    "llueva": ("llueve",),
    "nieve": ("nieva",),
    "caiga": ("cae",),
    "caigan": ("caen",),
    "conozca": ("conoce",),
    "traiga": ("trae",),
    "atraiga": ("atrae",),
    "atraigan": ("atraen",),
    "oiga": ("oye",),
    "vea": ("ve",),
    "vean": ("ven",),
    "duerma": ("duerme",),
    "pierda": ("pierde",),
    "pierdan": ("pierden",),
    "encuentre": ("encuentra",),
    "encuentren": ("encuentran",),
    "vuelva": ("vuelve",),
    "consiga": ("consigue",),
    "siga": ("sigue",),
    "elija": ("elige",),
}
# Regular present subjunctive endings -> indicative endings (-ar verbs take -e, -er/-ir take -a;
# yo: -e/-a -> -o), with the spelling changes -gue/-que/-ce/-zca/-ja -> -ga/-ca/-za/-ce/-ge.
_ENDING_SWAPS = (
    ("guemos", ("gamos",)),
    ("quemos", ("camos",)),
    ("cemos", ("zamos",)),
    ("emos", ("amos",)),
    ("amos", ("emos", "imos")),
    ("guen", ("gan",)),
    ("quen", ("can",)),
    ("cen", ("zan",)),
    ("zcan", ("cen",)),
    ("jan", ("gen",)),
    ("en", ("an",)),
    ("an", ("en",)),
    ("gues", ("gas",)),
    ("ques", ("cas",)),
    ("ces", ("zas",)),
    ("zcas", ("ces",)),
    ("es", ("as",)),
    ("as", ("es",)),
    ("gue", ("ga", "go")),
    ("que", ("ca", "co")),
    ("ce", ("za", "zo")),
    ("zca", ("ce", "zco")),
    ("ja", ("ge", "jo")),
    ("e", ("a", "o")),
    ("a", ("e", "o")),
    # perfect subjunctive "haya + participle" -> preterite ("se haya ejecutado" -> "se ejecutó")
    ("ado", ("ó",)),
    ("ido", ("ió",)),
)


def indicative_variants(word: str) -> set[str]:
    """The word itself plus the indicative forms a subjunctive form may stand for.

    Over-generation is harmless (the constraint only gets looser): ``"valide"`` gives
    ``{"valide", "valida", "valido"}``; ``"haya"`` gives ``hay`` and ``ha`` among others.
    """
    out = {word}
    low = word.lower()
    out.update(_IRREGULAR_SUBJUNCTIVE.get(low, ()))
    for ending, replacements in _ENDING_SWAPS:
        if low.endswith(ending) and len(low) > len(ending) + 1:
            out.update(low[: -len(ending)] + r for r in replacements)
    return out


def _lexicon_lemmas() -> set[str]:
    """Infinitives of the generator's lexicon (clitic ``se`` removed), its bare verbs included
    ("mentir", "gritar", "descansar" are in no other table), and the common verbs it never writes
    (``lexicon.READING_VERBS``: "querer", "ayudar")."""
    from nanologic import lexicon

    def strings(value: Any) -> Iterable[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list | tuple):
            for v in value:
                yield from strings(v)

    lemmas = set()
    for table in (
        lexicon.PERSON_PREDICATES,
        lexicon.THING_GROUPS,
        lexicon.IMPERSONAL,
        lexicon.BARE_VERBS,
        lexicon.READING_VERBS,
    ):
        for text in strings(table):
            if " | " in text or re.fullmatch(r"[a-záéíóúñ]+(ar|er|ir)(se)?", text.strip()):
                head = text.split(" | ")[0].strip().split(" ")[0]
                lemmas.add(
                    head[:-2] if head.endswith("se") and head[:-2].endswith(("ar", "er", "ir")) else head
                )
    return {lemma for lemma in lemmas if lemma.endswith(("ar", "er", "ír", "ir"))}


@functools.cache
def lexicon_conjugations() -> tuple[tuple[str, str, int, str], ...]:
    """Every ``(lemma, tense, person, form)`` the conjugator gives for the lexicon's verbs, the
    indicative tenses and the subjunctive ones, persons 0-5 (forms it cannot build are left out).

    The one table behind the grounded grammar's verb variants and the definitions' normalisation
    (:mod:`nanologic.normalize`)."""
    from nanologic.conjugation import SUBJUNCTIVE_TENSES, TENSES, conjugate

    rows = []
    for lemma in sorted(_lexicon_lemmas()):
        for tense in TENSES + SUBJUNCTIVE_TENSES:
            for person in range(6):
                try:
                    rows.append((lemma, tense, person, conjugate(lemma, tense, person)))
                except (ValueError, KeyError, IndexError):
                    continue
    return tuple(rows)


@functools.cache
def _tense_forms() -> tuple[
    dict[tuple[str, str, int], frozenset[str]], dict[str, dict[tuple[str, str], frozenset[int]]]
]:
    """((lemma, indicative tense, person) -> its form's words, word -> the (lemma, tense) it is a
    form of -> the persons it is that form for)."""
    from nanologic.conjugation import TENSES

    by_tense: dict[tuple[str, str, int], set[str]] = {}
    tenses_of: dict[str, dict[tuple[str, str], set[int]]] = {}
    for lemma, tense, person, form in lexicon_conjugations():
        # the last word identifies the verb; "ha" of "ha llovido" would match every verb
        tenses_of.setdefault(form.split()[-1], {}).setdefault((lemma, tense), set()).add(person)
        if tense in TENSES:
            by_tense.setdefault((lemma, tense, person), set()).update(form.split())
    return (
        {k: frozenset(v) for k, v in by_tense.items()},
        {word: {k: frozenset(v) for k, v in pairs.items()} for word, pairs in tenses_of.items()},
    )


@functools.cache
def _verb_forms() -> tuple[dict[str, frozenset[str]], frozenset[str]]:
    """(form -> the lemmas it is a form of, the lemmas), from :func:`_tense_forms`."""
    by_tense, tenses_of = _tense_forms()
    return (
        {word: frozenset(lemma for lemma, _ in pairs) for word, pairs in tenses_of.items()},
        frozenset(lemma for lemma, _, _ in by_tense),
    )


def lexicon_verb_lemma(word: str) -> str | None:
    """The infinitive of ``word`` (any case) when it is a form of a verb of the generator's lexicon
    (the last word of a conjugated form: "durmió" -> "dormir", "llovido" -> "llover"), else None.
    A form of several verbs gives the first infinitive in alphabetical order."""
    lemmas = _verb_forms()[0].get(word.lower())
    return min(lemmas) if lemmas else None


def verb_variants(word: str, agreement: bool = True) -> set[str]:
    """The indicative forms of the verbs ``word`` may be a form of, in the tenses its own tense
    may be read as (``_TENSES_READ_AS``; an infinitive as the present) and the persons its own
    person may be read as (``_PERSONS_READ_AS``: its own, one subject of a plural's, the generic
    "tú" or an impersonal for an infinitive).

    Also, with ``agreement``, the four agreement forms of a word ending like an adjective
    (``llenos`` -> ``lleno``), and the reflexive pronouns of a pronominal infinitive (``ducharse``
    -> ``te duchas``).

    Covers what the format's normalisations do to a verb: a shared predicate repeated with the
    agreement of each subject ("ni Ana ni Luis vendrán" -> "Luis vendrá"), an infinitive read as
    the generic *tú* form, a subjunctive given in the indicative. A future is read as itself: where
    a condition says its clause again in the present ("no preparará …; y si no prepara …"), that
    present is the sentence's own word, and the two definitions are one atom
    (:func:`nanologic.normalize.merge_repeated_atoms`); the present as a future's reading let the
    model write "el bebé come este mes" for "comerá este mes". Only verbs of the generator's
    lexicon are known (the conjugator in :mod:`nanologic.conjugation`); other words get nothing
    extra.
    """
    lemmas_of, infinitives = _verb_forms()
    low = word.lower()
    out: set[str] = set()
    lemmas = set(lemmas_of.get(low, ()))
    if low in infinitives:
        lemmas.add(low)
    if low.endswith("se") and low[:-2] in infinitives:  # "ducharse" -> "te duchas"
        lemmas.add(low[:-2])
        out.update(_REFLEXIVE_PRONOUNS)
    if "haber" in lemmas:
        out.add("hay")  # impersonal "haber clase" -> "hay clase"
    by_tense, tenses_of = _tense_forms()
    for lemma in lemmas:
        said = {(t, p) for (lem, t), p in tenses_of.get(low, {}).items() if lem == lemma} or {
            ("inf", frozenset({_NO_PERSON}))
        }
        for tense_said, persons_said in said:
            persons = set().union(*(_PERSONS_READ_AS[person] for person in persons_said))
            for tense in _TENSES_READ_AS[tense_said]:
                for person in persons:
                    out.update(by_tense.get((lemma, tense, person), ()))
    if "haber" not in lemmas:
        # a perfect's first word: a verb's position may not write it alone ("Juan ha que Juan …",
        # "Hemos" for "hablo"), and no reading needs it there, since the participle would need a
        # position of its own; the sentence's own "ha" / "haya" still give it
        out -= PERFECT_AUXILIARIES
    if agreement and len(low) > 3 and (low[-1] in "oa" or low.endswith(("os", "as"))):
        # agreement of an adjective or participle with the subject of each definition
        stem = low[:-2] if low.endswith(("os", "as")) else low[:-1]
        out.update(stem + ending for ending in ("o", "a", "os", "as"))
    return out


_REFLEXIVE_PRONOUNS = ("me", "te", "se", "nos", "os")

# Words after which a clause may be in the subjunctive ("que", "cuando", "aunque", …, "si" for
# the imperfect): a verb the lexicon does not know takes the ending swaps of
# :func:`indicative_variants` only later in the same clause (up to a punctuation mark). No gold
# definition of a training split's 6,000 answers or of data/dev_real.jsonl needs a swap elsewhere.
_SUBJUNCTIVE_OPENERS = frozenset(
    {"que", "cuando", "aunque", "mientras", "si", "ojalá", "quizá", "quizás", "vez", "donde", "como"}
)

# The persons (0-5: yo, tú, él, nosotros, vosotros, ellos) a definition may give for a verb said in
# each: its own; a plural's subjects each said apart ("Ana y Luis cantan" -> "Ana canta", "Ana y yo
# cantamos" -> "yo canto"); an infinitive (``_NO_PERSON``) as the generic "tú" or an impersonal
# ("hay que tener el carné" -> "tienes el carné", "llover" -> "llueve"). Any person let a small model
# write "tenéis" for "tiene" and "conseguís" for "consigue"; of a training split's 8,000 answers and
# data/dev_real.jsonl's, no gold definition needs another.
_NO_PERSON = -1
_PERSONS_READ_AS = {
    _NO_PERSON: {1, 2},
    0: {0},
    1: {1},
    2: {2},
    3: {3, 0, 2},
    4: {4, 1, 2},
    5: {5, 2},
}

# The indicative tenses a definition may give for a verb said in each tense (any person): its own,
# the present for an infinitive (the generic "tú"), the indicative of a subjunctive.
_TENSES_READ_AS = {
    "pres": {"pres"},
    "pret": {"pret"},
    "impf": {"impf"},
    "fut": {"fut"},
    "perf": {"perf"},
    "pres_sub": {"pres", "fut"},
    "impf_sub": {"pret", "impf", "pres"},
    "perf_sub": {"perf"},
    "inf": {"pres"},
}


# Words an atom definition never holds: a definition is an affirmative atomic clause, so neither a
# negation nor a sentence-level connective of the cue inventory is part of it ("y" and "e": see
# _AND_WORDS). None of them occurs in the 501 gold definitions of data/dev_real.jsonl nor in a
# generated training split's 68,418.
CONNECTIVE_WORDS = frozenset(
    {
        "no",
        "ni",
        "o",
        "ó",
        "u",
        "si",
        "entonces",
        "pero",
        "aunque",
        "sino",
        "porque",
        "tampoco",
        "mientras",
        "además",
        "embargo",
        "obstante",
        "cuando",
        "luego",
        "salvo",
    }
)
# "y"/"e" join clauses ("el cielo es azul y los campos son verdes": two atoms) and elided
# coordinations ("Nicanor Parra es escritor y matemático": two atoms sharing the subject), so a
# definition holds them only between terms of arithmetic ("la suma de 5 y 12", "x + y = 3", where
# "y" is also a variable). In data/dev_real.jsonl 3 of 501 gold definitions join noun phrases
# with "y" ("Perú y Ecuador son países fronterizos"); the grammar cannot write those.
_AND_WORDS = frozenset({"y", "e"})


def _is_term(token: str) -> bool:
    """A number, a relation symbol or a one-letter variable (not the words a, e, o, u, y)."""
    return (
        any(c.isdigit() for c in token)
        or not token.isalnum()
        or (len(token) == 1 and token.lower() not in "aeouy")
    )


def _after_a_word(tokens: list[str], index: int) -> bool:
    """Whether tokens[index] ("y", "e") follows a word of a noun phrase, no term, and the sentence
    is not mathematical: "una cola y 4 patas" joins two things said of the horses, where "18 y 21"
    and "x e y" join terms."""
    return (
        index > 0
        and tokens[index - 1].isalpha()
        and not _is_term(tokens[index - 1])
        and not is_mathematical(tokens)
    )


def _joins_terms(tokens: list[str], index: int) -> bool:
    """Whether tokens[index] ("y", "e") may be part of a definition: next to a term, or the
    variable "y" of a mathematical sentence ("si y es positivo, x es negativo"; :func:`is_mathematical`:
    not for a number alone, "ya acabó el periodo y hay fiesta el 16" had let a definition run
    across its "y") or right after "que", "si" or "cuando"."""
    neighbours = tokens[max(index - 1, 0) : index] + tokens[index + 1 : index + 2]
    # no conjunction follows "que" or "si" at once: "Es mentira que y sea un número entero …"
    opens_a_clause = (
        index > 0
        and tokens[index - 1].lower() in ("que", "si", "cuando")
        and fold_text(" ".join(tokens[index + 1 : index + 2])) not in ("solo", "solamente")  # "si y solo si"
    )
    return any(map(_is_term, neighbours)) or (
        tokens[index].lower() == "y" and (is_mathematical(tokens) or opens_a_clause)
    )


# Words (and word beginnings) that make a sentence with numbers mathematical ("y no será menor que
# 82", "o bien y valdrá 16": "y" a variable), folded
_MATHEMATICAL_WORDS = frozenset(
    {"par", "impar", "primo", "primos", "vale", "valen", "valdra", "valdran", "valia", "valio", "valor"}
)
_MATHEMATICAL_BEGINNINGS = (
    "mayor",
    "menor",
    "igual",
    "positiv",
    "negativ",
    "multipl",
    "divisib",
    "suma",
    "product",
    "raiz",
    "cuadrad",
    "numer",
    "resultado",
    "ecuacion",
    "entero",
    "area",
)


def is_mathematical(tokens: list[str]) -> bool:
    """Whether ``tokens`` say mathematics: a variable or a relation symbol, or a number and a
    word of arithmetic (``_MATHEMATICAL_WORDS``, ``_MATHEMATICAL_BEGINNINGS``); a number alone
    ("hay fiesta el 16") is not."""
    if any(_is_term(t) and not any(c.isdigit() for c in t) for t in tokens):
        return True
    return any(any(c.isdigit() for c in t) for t in tokens) and any(
        fold_text(t) in _MATHEMATICAL_WORDS or fold_text(t).startswith(_MATHEMATICAL_BEGINNINGS)
        for t in tokens
    )


# A word of the sentence for the grounded grammar: Spanish words, numbers (with a percent sign)
# and the relation and operator symbols of mathematical sentences ("x + y = 3").
_READING_RE = re.compile(r"\w+(?:[-'’]\w+)*%?|[=+\-−<>≤≥≠]")
_SYMBOL_VARIANTS = {"≠": ("=",)}  # "x ≠ y" is ¬(x = y): the definition is the affirmative "x = y"


_OPERATOR_TOKENS = frozenset("=+-−<>≤≥≠")


def _is_operand(token: str) -> bool:
    """A number ("3", "2006", "c²") or a one-letter variable ("x", and here also "y" or "a")."""
    return token not in _OPERATOR_TOKENS and (any(c.isdigit() for c in token) or len(token) == 1)


def expression_spans(tokens: list[str]) -> list[tuple[int, int]]:
    """[start, end) of each expression of arithmetic in ``tokens``: an operand, then one or more
    operator and operand pairs ("x + y = 3", "c² = a² + b²", "x ≠ 0"), read left to right, so that
    in "x + y = 2 y z = 1" the second "y", between two expressions, is the conjunction."""
    spans = []
    start = 0
    while start < len(tokens):
        end = start + 1
        if _is_operand(tokens[start]):
            while end + 1 < len(tokens) and tokens[end] in _OPERATOR_TOKENS and _is_operand(tokens[end + 1]):
                end += 2
        if end - start > 1:
            spans.append((start, end))
        start = end
    return spans


_RELATIONS = frozenset("=<>≤≥≠")


def words_and_expressions(tokens: list[str]) -> tuple[list[str], list[str]]:
    """(the tokens outside expressions of arithmetic, each expression written whole with "=" for
    "≠"): an expression is one word where words are counted or compared, "x ≠ y" the same as
    "x = y" (its atom)."""
    spans = expression_spans(tokens)
    inside = {i for start, end in spans for i in range(start, end)}
    words = [token for i, token in enumerate(tokens) if i not in inside]
    return words, [
        " ".join("=" if token == "≠" else token for token in tokens[start:end]) for start, end in spans
    ]


def relations_said(sentence: str) -> int:
    """How many distinct relations of arithmetic ``sentence`` says ("x ≠ y" and "x = y" being one:
    the atom "x = y" and its negation), each an atom of its answer: none of data/dev_real.jsonl's 12
    such gold answers has fewer atoms. The default model had answered "Si x ≠ y, entonces x ≠ 1 y
    x ≠ z." with the one atom "x = y"."""
    _, expressions = words_and_expressions(sentence_tokens(sentence))
    return len({expression for expression in expressions if _RELATIONS.intersection(expression.split())})


def _case_variants(forms: Iterable[str], capitalised: bool = True) -> list[str]:
    """``forms`` and their lower-case forms, and with ``capitalised`` (a word the sentence writes
    with a capital) their capitalised ones. No gold definition of a training split's 20,000
    answers or of data/dev_real.jsonl capitalises a word its sentence does not (a model wrote
    "es utilitarista Naturalista", "Cenas se celebra")."""
    out: dict[str, None] = {}
    for form in sorted(forms):
        for variant in (
            (form, form.lower(), form[:1].upper() + form[1:]) if capitalised else (form, form.lower())
        ):
            out.setdefault(variant, None)
    return list(out)


def sentence_tokens(sentence: str) -> list[str]:
    """The sentence's words, numbers and relation symbols as the grammar reads them (NFC)."""
    return _READING_RE.findall(unicodedata.normalize("NFC", sentence))


def _punctuated(sentence: str) -> list[bool]:
    """For each token of :func:`sentence_tokens`, whether it opens the sentence or a punctuation
    mark stands between it and the token before."""
    text = unicodedata.normalize("NFC", sentence)
    spans = [m.span() for m in _READING_RE.finditer(text)]
    return [
        k == 0 or bool(_PUNCTUATION_RE.search(text[spans[k - 1][1] : spans[k][0]])) for k in range(len(spans))
    ]


def _after_a_determiner(tokens: list[str], k: int) -> bool:
    """Whether ``tokens[k]`` follows a determiner, so is a noun: no agreement forms ("las células"
    gives no "célula") and no verb's."""
    return k > 0 and tokens[k - 1].lower() in DETERMINERS


_AFFIRMATIVE_SI = re.compile(r"(?<!\w)sí(?!\w)", re.IGNORECASE)


def fold_text(text: str) -> str:
    """Lower-case without accents, same length as ``text`` (NFC), so indices carry over.

    The affirmative "sí" keeps its accent, so that no cue "si" matches it ("yo sí quiero enseñar",
    "no realiza su tarea y sí participa en clase"); :func:`nanologic.normalize.prepare_sentence`
    writes the accented "sí y sólo sí" as the cue "si y solo si" before either reads a sentence.
    Shared by the rule baseline's cue matching and the grounded grammar's.
    """
    folded = [
        unicodedata.normalize("NFD", ch)[0] if unicodedata.normalize("NFD", ch)[0].isalpha() else ch
        for ch in text
    ]
    for match in _AFFIRMATIVE_SI.finditer(text):
        folded[match.start() + 1] = "í"
    return "".join(folded).lower()


@functools.cache
def _cue_phrase_re() -> re.Pattern[str]:
    """The cue inventory's phrases of several words (``generator.CUES``), folded
    (:func:`fold_text`), longest first, each word separated by spaces only (no punctuation: "casi
    siempre; y cuando" is no cue)."""
    from nanologic.generator import known_cues

    phrases = [r"\s+".join(map(re.escape, fold_text(cue).split())) for cue in known_cues() if " " in cue]
    return re.compile(r"(?<!\w)(?:" + "|".join(phrases) + r")(?!\w)")


def _cue_phrase_indices(sentence: str) -> set[int]:
    """Indices of :func:`sentence_tokens` inside a cue phrase of several words ("condición
    necesaria", "si y solo si", "en caso de que", "de todos modos"): a definition is an atomic
    clause and never holds one (none of dev_real's 501 gold definitions does), but a model that
    merged a clause across "es necesario" or wrote "solo" for "si y solo si" did."""
    text = unicodedata.normalize("NFC", sentence)
    spans = [m.span() for m in _cue_phrase_re().finditer(fold_text(text))]
    inside = {
        index
        for index, token in enumerate(_READING_RE.finditer(text))
        if any(start <= token.start() and token.end() <= end for start, end in spans)
    }
    return inside | _as_well_as_indices(sentence_tokens(sentence))


def _as_well_as_indices(tokens: list[str]) -> set[int]:
    """Indices of each "como" that answers a "tanto" of its clause, and of that "tanto" ("tanto
    Consuelo como los jugadores entregan el informe", "fue pintor tanto como filósofo"): the cue
    of a conjunction, never a definition's words ("Consuelo como los jugadores entregan …" had
    been read whole, "como" as the verb "comer", and "la jefa tantas con tarjeta")."""
    found = set()
    for index, token in enumerate(tokens):
        if token.lower() != "como":
            continue
        for back in range(index - 1, -1, -1):
            if len(tokens[back]) == 1 and tokens[back] in WORD_PUNCTUATION:
                break
            if tokens[back].lower() == "tanto":
                found |= {back, index}
                break
    return found


def reading_positions(sentence: str) -> list[tuple[list[str], list[str]]]:
    """The sentence's words in order, each as (optional prefixes, forms) a definition may use there.

    A position's forms are the word itself (lower-cased as well, and capitalised where the sentence
    capitalises it), the indicative forms it may stand for (:func:`verb_variants` for a verb the
    lexicon knows; the ending swaps of :func:`indicative_variants` for another word only within a
    clause a word of ``_SUBJUNCTIVE_OPENERS`` opens, and for no noun after a determiner nor a name,
    which take no agreement forms either) and, for a symbol, its affirmative relation; a
    pronominal infinitive ("ducharse") may be preceded by its reflexive
    pronoun ("te duchas"). Negations and connectives (``CONNECTIVE_WORDS``) have no forms, nor the
    words of a cue phrase of several words where the sentence says it (:func:`_cue_phrase_indices`).
    An expression of arithmetic ("x + y = 3", :func:`expression_spans`) is one position, written
    whole, with "=" for "≠".
    """
    return [(prefixes, forms) for prefixes, forms, _, _ in _reading_positions(sentence)]


def _reading_positions(sentence: str) -> list[tuple[list[str], list[str], bool, int]]:
    """:func:`reading_positions`, each with whether it is an expression negated by "≠" and the
    index of its (first) token in :func:`sentence_tokens`."""
    positions: list[tuple[list[str], list[str], bool, int]] = []
    tokens = sentence_tokens(sentence)
    in_cue = _cue_phrase_indices(sentence)
    expressions = dict(expression_spans(tokens))
    # "x + y = 2 y z = 1": a "y" between two expressions is the conjunction
    between_expressions = {end for end in expressions.values() if end + 1 in expressions}
    punctuated = _punctuated(sentence)
    inside_expression_until = 0
    subjunctive_possible = False
    for index, raw in enumerate(tokens):
        clause_start = punctuated[index]
        if clause_start:
            subjunctive_possible = False
        if index and tokens[index - 1].lower() in _SUBJUNCTIVE_OPENERS:
            subjunctive_possible = True
        if index < inside_expression_until:
            continue
        if index in expressions:
            # An equation is one proposition: a definition writes it whole or not at all.
            inside_expression_until = expressions[index]
            expression = tokens[index:inside_expression_until]
            written = " ".join(_SYMBOL_VARIANTS.get(t, (t,))[0] for t in expression)
            positions.append(([], [written], "≠" in expression, index))
            continue
        if (
            index in in_cue
            or raw.lower() in CONNECTIVE_WORDS
            or (
                raw.lower() in _AND_WORDS
                and (index in between_expressions or not _joins_terms(tokens, index))
            )
        ):
            continue
        # a word after a determiner is a noun ("las células" gives no "célula", no "célules"), a
        # capitalised word inside a clause a name ("Juan" gives no "Juen")
        noun = _after_a_determiner(tokens, index) or (
            raw[:1].isupper() and not clause_start and raw.lower() not in _verb_forms()[0]
        )
        verbs = verb_variants(raw, agreement=not noun)
        prefixes: list[str] = []
        if len(raw) > 4 and raw.lower().endswith("se"):  # "ducharse" -> "te duchas"
            prefixes = sorted(verbs & set(_REFLEXIVE_PRONOUNS))
            verbs -= set(prefixes)
        if raw.lower() in _NEEDS_COMPLEMENT:  # a function word stands for itself ("que", not "qua")
            variants = {raw}
        elif raw in _SYMBOL_VARIANTS:
            variants = set(_SYMBOL_VARIANTS[raw])
        elif raw.lower() in _verb_forms()[0]:
            # a form of a known verb: its readings are the conjugator's, and the ending swaps for
            # unknown verbs would add forms no verb has ("votaben" for "votaban", "tiena"); a
            # perfect's participle still gives the preterite ("se haya ejecutado" -> "se ejecutó")
            variants = {raw} | verbs | {v for v in indicative_variants(raw) if v.endswith(("ó", "ió"))}
        elif subjunctive_possible and not noun:
            variants = indicative_variants(raw) | verbs
        else:
            # no clause opener that takes a subjunctive before it: "saco buenas notas" gives no
            # "notes"
            variants = {raw} | verbs
        positions.append((prefixes, _case_variants(variants, raw[:1].isupper()), False, index))
    return positions


def sentence_words(sentence: str) -> list[str]:
    """Words a grounded definition may use, in first-seen order (NFC; case variants added)."""
    words: dict[str, None] = {}
    for prefixes, forms in reading_positions(sentence):
        for word in prefixes + forms:
            words.setdefault(word, None)
    return list(words)


_FOLDED_CONNECTIVE_WORDS = frozenset(fold_text(word) for word in CONNECTIVE_WORDS)  # "ademas"
# Words that open a clause of their own, so an elided conjunct (:func:`_elided_conjuncts`) ends
# before them: the connectives but the negations, and "que" ("es necesario que A y B …").
_CLAUSE_OPENERS = (CONNECTIVE_WORDS | _FOLDED_CONNECTIVE_WORDS) - {"no", "tampoco"} | {"que", "pues"}
# "que" after these compares ("menor que 66") and opens no clause; folded
_COMPARATIVES = frozenset({"mayor", "menor", "mas", "menos", "antes", "despues", "igual", "mejor", "peor"})
_PUNCTUATION_RE = re.compile(r"[,;:.?!()¿¡«»\"—]")


def _conjuncts(sentence: str) -> tuple[list[str], list[tuple[int, int]], set[int]]:
    """(:func:`sentence_tokens`, the [start, end) spans of its conjuncts, the indices of its
    coordinators). A conjunct runs between punctuation, coordinators ("y", "e", "o", "u", "ni";
    "y" between terms of arithmetic, "la suma de 5 y 12", joins none), clause openers
    (``_CLAUSE_OPENERS``) and the words of cue phrases; spans may be empty."""
    text = unicodedata.normalize("NFC", sentence)
    matches = list(_READING_RE.finditer(text))
    tokens = [match.group() for match in matches]
    in_cue = _cue_phrase_indices(sentence)
    coordinators = {
        k
        for k, token in enumerate(tokens)
        if token.lower() in COORDINATORS and (token.lower() == "ni" or not _joins_terms(tokens, k))
    } | _as_well_as_indices(tokens)
    spans: list[tuple[int, int]] = []
    start = 0
    for k in range(len(tokens) + 1):
        breaks = (
            k == len(tokens)
            or k in coordinators
            or k in in_cue
            or (
                tokens[k].lower() in _CLAUSE_OPENERS and not (k and fold_text(tokens[k - 1]) in _COMPARATIVES)
            )
        )
        if (
            not breaks
            and k > start
            and _PUNCTUATION_RE.search(text[matches[k - 1].end() : matches[k].start()])
        ):
            spans.append((start, k))
            start = k
        if breaks:
            spans.append((start, k))
            start = k + 1
    return tokens, spans, coordinators


def _elided_conjuncts(sentence: str) -> list[tuple[int, int]]:
    """[start, end) spans of :func:`sentence_tokens` that are a conjunct (:func:`_conjuncts`) of a
    coordination ("y", "e", "o", "u", "ni" right before or after it) and say no verb
    (:func:`_may_be_a_verb`) nor a relation of arithmetic: the conjunct shares a verb said
    elsewhere, "la médica compró té y *fruta*", "*ni Mogrecuee* ni Ignacio pierden las elecciones",
    "Carla trabajará en Oaxaca y *en Nopiane*".

    A gold definition is a whole clause ("la médica compró fruta"), but the default model wrote
    the conjunct alone ("fruta", "Mogrecuee", "en Nopiane"), so a definition that holds a word of
    one must also hold a content word said outside them (:func:`_reading_rules`). A conjunct counts
    only where it reads as a noun phrase (:func:`_reads_as_a_noun_phrase`) and no word of it may be
    a verb, since a clause whose verb the lexicon does not know ("o el sol brilla") must stay a
    definition: no gold answer of ``dev_real``, both test splits or 3,000 training sentences is
    ruled out."""
    tokens, spans, coordinators = _conjuncts(sentence)
    return [
        (a, b)
        for a, b in spans
        if a < b
        and (a - 1 in coordinators or b in coordinators)
        and _says_no_verb(tokens, a, b)
        and not _RELATIONS.intersection(tokens[a:b])
    ]


def _says_no_verb(tokens: list[str], start: int, end: int, names: frozenset[str] = frozenset()) -> bool:
    """Whether ``tokens[start:end]`` read as a noun phrase (:func:`_reads_as_a_noun_phrase`) with
    no word that may be a verb (:func:`_may_be_a_verb`), a word of ``names`` being none (the
    folded names, where ``tokens`` are folded: "vera" is "verá" too)."""
    return _reads_as_a_noun_phrase(tokens, start, end) and not any(
        _may_be_a_verb(tokens, k) and tokens[k] not in names for k in range(start, end)
    )


def _reads_as_a_noun_phrase(tokens: list[str], start: int, end: int) -> bool:
    """Whether ``tokens[start:end]`` may be a noun phrase: one word, or every word after a word
    that needs a complement (``_NEEDS_COMPLEMENT``: "el decreto", "en contra de la reforma") or a
    name (capitalised, not the sentence's first word). "el sol brilla" is not one: a clause whose
    verb the lexicon may not know."""
    return end - start == 1 or all(
        tokens[k].lower() in _NEEDS_COMPLEMENT
        or (k > start and tokens[k - 1].lower() in _NEEDS_COMPLEMENT)
        or (k > 0 and tokens[k][:1].isupper())
        for k in range(start, end)
    )


# Forms of frequent verbs outside the lexicon's conjugations (irregular, or "hay"), and endings
# that only verbs have in practice (future, conditional, preterite, imperfect, gerund,
# participle, infinitive): :func:`_may_be_a_verb` errs towards "a verb", which only leaves a
# conjunct free.
_FREQUENT_VERB_FORMS = frozenset(
    {"hay", "es", "son", "era", "eran", "fue", "fueron", "sea", "sean", "soy", "eres", "somos"}
    | {"esta", "estan", "estas", "estoy", "estamos", "estaba", "estaban", "ha", "han", "he", "has"}
    | {"va", "van", "vas", "voy", "vamos", "viene", "vienen", "vienes", "vengo", "venimos", "vino"}
    | {"tiene", "tienen", "tienes", "tengo", "puede", "pueden", "puedes", "puedo", "podemos"}
    | {"quiere", "quieren", "quieres", "quiero", "dice", "dicen", "dices", "digo", "dijo", "hace"}
    | {"hacen", "haces", "hago", "hizo", "sabe", "saben", "sabes", "se", "da", "dan", "das", "doy"}
    | {"dio", "ve", "ven", "ves", "veo", "vio", "pone", "ponen", "pongo", "puso", "sale", "salen"}
    | {"salgo", "sigue", "siguen", "pide", "piden", "duerme", "duermen", "juega", "juegan", "debe"}
    | {"deben", "debes", "sirve", "sirven", "siente", "sienten", "piensa", "piensan", "vuelve"}
)
_VERB_ENDINGS = (
    *("ré", "rás", "rá", "remos", "réis", "rán", "ría", "rías", "ríamos", "rían", "ó"),
    *("aron", "ieron", "aste", "iste", "aba", "abas", "ábamos", "aban", "ían", "íamos"),
    *("ando", "iendo", "ado", "ados", "ido", "idos", "amos", "emos", "imos", "áis", "éis"),
    *("ar", "er", "ir", "arse", "erse", "irse"),
)
# a word after one of these is a verb: "no brilla", "te quedas", "se lo tragaron"
_BEFORE_A_VERB = frozenset({"no", "me", "te", "se", "nos", "os", "le", "les", "lo"})


@functools.cache
def lexicon_names() -> frozenset[str]:
    """The generator's first names (some are verb forms too: "Leo", "Armando")."""
    from nanologic.lexicon import NAMES_F, NAMES_M

    return frozenset(NAMES_F + NAMES_M)


# Endings of the present's second person singular and the plural persons, which few nouns after
# "si" or "cuando" have ("si perseveras", "cuando llegan"; not "si mañana")
_PRESENT_PERSON_ENDINGS = ("as", "es", "amos", "emos", "imos", "áis", "éis", "ís", "an", "en")


def _may_be_a_verb(tokens: list[str], k: int) -> bool:
    """Whether ``tokens[k]``, not a name of the lexicon, may be a verb form: of the lexicon
    (:func:`_folded_verb_forms`), a frequent one
    (``_FREQUENT_VERB_FORMS``), a verb's ending (``_VERB_ENDINGS``), after a negation or a clitic
    ("no brilla"), or "para" after a noun."""
    low = tokens[k].lower()
    folded = fold_text(low)
    if tokens[k] in lexicon_names():  # "Fernando", "Armando"
        return False
    return (
        folded in _folded_verb_forms()
        or folded in _FREQUENT_VERB_FORMS
        or (len(low) > 3 and low.endswith(_VERB_ENDINGS))
        # a subject pronoun is none ("si no, nosotras salimos")
        or (k > 0 and tokens[k - 1].lower() in _BEFORE_A_VERB and low not in SUBJECT_PRONOUNS)
        # "Si perseveras en tus decisiones": after a conditional's "si" or "cuando", a person's
        # ending of the present
        or (
            k > 0
            and tokens[k - 1].lower() in ("si", "cuando")
            and len(low) > 4
            and low.endswith(_PRESENT_PERSON_ENDINGS)
            and low not in not_content_words() | SUBJECT_PRONOUNS | DETERMINERS
        )
        # "el metro para en Aires": "para" after a noun may be "parar"
        or (low == "para" and k > 0 and tokens[k - 1].lower() not in _NEEDS_COMPLEMENT | COORDINATORS)
    )


def _reading_rules(sentence: str, polarity_marks: bool = True) -> list[str] | None:
    """GBNF rules of ``def``: the sentence's words in their order, with at most one jump back.

    Rules ``c<L>-<i>`` start a run at position i or later, ``s<L>-<i>`` write position i and go on;
    L = 1 once the definition has gone back to an earlier word (a subject or verb repeated from
    before: "Juana tiene trece años y Rosa quince" -> "Rosa tiene quince años"); ``b<i>`` is that
    jump from position i, to a position before i, never to itself ("me mojo me mojo"); a definition
    never ends on a word that needs a complement (``_NEEDS_COMPLEMENT``: "el", "de", "su"), a
    pronoun before a verb (``_PROCLITICS``: "se") or a copula (:func:`_copulas`: "es", "estás"), nor
    on a verb the sentence follows at once by a determiner, a preposition or a number
    (``_COMPLEMENT_OPENERS``: "Consuelo pierde" for "Consuelo no pierde el empleo"), nor on any
    word before one of ``_ADJUNCT_OPENERS`` ("Vicente viaja" for "Vicente viaja al
    norte del país"). Where
    the sentence has elided conjuncts (:func:`_elided_conjuncts`), each rule also carries a state
    ("", "o", "f": ``c<L><state>-<i>``, ``b<state><i>``): a definition holding a word of one goes
    on, never back, to a content word said outside them ("la médica compró fruta", not "fruta").
    A definition ends only once it holds a word that may be a verb, a relation or a word that is
    no part of a noun phrase (state suffix "v"; "el coche arranca", not "el coche"), where the
    sentence has one.
    An expression negated by "≠" is no word of such a run: it is a definition alone, "x = y" with
    the mark ¬ (or ±, where the sentence also affirms it; rule ``neg-def``; the mark optional
    without ``polarity_marks``), since "x ≠ y" is the negation of the atom "x = y". None when the
    sentence has no usable word.
    """
    all_positions = _reading_positions(sentence)
    positions = [(prefixes, forms) for prefixes, forms, negated, _ in all_positions if not negated]
    token_of = [index for _, _, negated, index in all_positions if not negated]
    negated = [forms[0] for _, forms, is_negated, _ in all_positions if is_negated]
    if not positions and not negated:
        return None
    rules = []
    if negated:
        optional = "" if polarity_marks else "?"
        affirmed = {form for _, forms in positions for form in forms}
        alternatives = [
            # ¬, or either mark where the sentence also affirms the expression ("x = 2 o x ≠ 2")
            _literal(form) + (f" mark{optional}" if form in affirmed else f' " {NEGATED_MARK}"{optional}')
            for form in dict.fromkeys(negated)
        ]
        rules.append("neg-def ::= " + " | ".join(alternatives))
    if not positions:
        return rules
    last = len(positions) - 1
    conjuncts = _elided_conjuncts(sentence)
    elided = {i for i, k in enumerate(token_of) if any(start <= k < end for start, end in conjuncts)}
    # the words an elided conjunct shares: any content word said outside the elided conjuncts
    shared = {
        i
        for i, (_, forms) in enumerate(positions)
        if elided and i not in elided and not {f.lower() for f in forms} <= _NEEDS_COMPLEMENT
    }

    tokens = sentence_tokens(sentence)
    expressions = dict(expression_spans(tokens))
    # The words after an elided conjunct's coordinator, up to the verb they share, are another
    # conjunct's: a definition holding the first never writes them ("Lorena Vuemenor hace los
    # deberes" for "tanto Lorena como Vuemenor hacen los deberes", "Idetiasvea Rebeca corría").
    _, conjunct_spans, coordinators = _conjuncts(sentence)
    parallel_tokens = set()
    for _, end in conjuncts:
        k = end + 1
        while end in coordinators and k < len(tokens) and not _may_be_a_verb(tokens, k):
            parallel_tokens.add(k)
            k += 1
    parallel = {i for i, k in enumerate(token_of) if k in parallel_tokens}

    # A definition is a clause: it ends only once it holds a word that may be a verb or a relation,
    # or one that is no part of a noun phrase (not a function word, nor after one, nor a name or a
    # number): "el coche arranca", not "el coche"; where the sentence has such a word at all.
    def nominal(k: int) -> bool:
        return (
            tokens[k].lower() in _NEEDS_COMPLEMENT
            or (k > 0 and (tokens[k - 1].lower() in _NEEDS_COMPLEMENT or tokens[k][:1].isupper()))
            or any(c.isdigit() for c in tokens[k])
        )

    verbal = {
        i
        for i, k in enumerate(token_of)
        if k in expressions
        or _may_be_a_verb(tokens, k)
        # a noun after a determiner is no verb for its agreement forms ("las células de la planta")
        or verb_variants(tokens[k], agreement=not _after_a_determiner(tokens, k))
        or not nominal(k)
    }

    # A verb's definition goes on past no other verb that ends a clause of its own ("Óscar canta
    # el microscopio" for "… el director cante de nuevo o Óscar use el microscopio"); a verb
    # coordinated with the next ("estudiar y limpiar el cuarto") may be passed.
    verbs = {
        i
        for i, k in enumerate(token_of)
        if _may_be_a_verb(tokens, k)
        and not nominal(k)
        and k not in expressions
        and tokens[k].lower() not in not_content_words() | _DEMONSTRATIVES
    }
    unpassable = {
        i
        for i in verbs
        if token_of[i] + 1 < len(tokens) and tokens[token_of[i] + 1].lower() not in COORDINATORS | {",", ";"}
    }

    text = unicodedata.normalize("NFC", sentence)
    token_spans = [m.span() for m in _READING_RE.finditer(text)]
    in_cue = _cue_phrase_indices(sentence)
    punctuated = _punctuated(sentence)

    def opens_a_clause(k: int) -> bool:
        """Whether token k opens the sentence or a clause, or follows "yo", "que", a clitic or "no"."""
        before = tokens[k - 1].lower() if k > 0 else ""
        return (
            punctuated[k]
            or k - 1 in in_cue
            or before in _BEFORE_A_VERB | {"yo", "que"}
            or (before in CONNECTIVE_WORDS and before not in COORDINATORS)
        )

    # A clause's bounds between two words: a coordinator, a connective but a negation, a cue
    # phrase or a punctuation mark. A definition holds one finite verb on either side at most
    # ("suben los precios suben los sueldos" for "Si suben los precios y no suben los sueldos");
    # an infinitive, a gerund or a participle may share the other side's verb ("tengo que limpiar
    # el cuarto" for "Tengo que estudiar y limpiar el cuarto", "Juan será destinado"), and so may a
    # first person's "-o" present that is also a noun ("Vamo habló estadística y dibujo") where it
    # does not open a clause ("Si salgo electo …" is a verb).
    finite = {
        i
        for i in verbs
        if not tokens[token_of[i]].lower().endswith(_NON_FINITE_ENDINGS)
        and (tokens[token_of[i]].lower() not in _first_person_presents() or opens_a_clause(token_of[i]))
    } | {i for i, k in enumerate(token_of) if tokens[k].lower() in _copulas()}  # "el sol brilla son aves"
    # "dice que viene", "comprobarás cómo el éxito te sonríe": a second finite verb after one of
    # these; without one, two finite verbs are two clauses ("estudias te preparas mejor" for "Si
    # trabajas o estudias te preparas mejor para el futuro", "Hoy es día treinta mañana será")
    subordinators = {i for i, k in enumerate(token_of) if tokens[k].lower() in _SUBORDINATORS}
    # the words of a conjunct with a finite verb of its own (no copula: "… o clase de dibujo es
    # condición necesaria"): past a clause's bound after a finite
    # verb a definition writes none of them ("perseveras en tus decisiones éxito te sonríe" for
    # "Si perseveras en tus decisiones y no cedes …, comprobarás cómo el éxito te sonríe")
    finite_tokens = {token_of[i] for i in finite if tokens[token_of[i]].lower() not in _copulas()}
    other_clauses = {
        i
        for i, k in enumerate(token_of)
        if any(start <= k < end and finite_tokens & set(range(start, end)) for start, end in conjunct_spans)
    }
    # a finite verb beyond doubt: after a clitic or "no", or in a tense whose ending no noun or
    # adjective has ("será", "llegó", "preparas" after "te"; not "limpia", "pregunta", "baja")
    sure_verbs = {
        i
        for i in finite
        if (token_of[i] > 0 and tokens[token_of[i] - 1].lower() in _BEFORE_A_VERB)
        or tokens[token_of[i]].lower().endswith(_FINITE_ENDINGS)
    }
    bounding_words = COORDINATORS | CONNECTIVE_WORDS - {"no", "tampoco"}
    clause_bound_before = set()
    # A sentence's end between two words (";", "?", "!", or "." before a word not in lower case,
    # nor after an abbreviation: not "Leonardo D. fue pintor", "el Sr. López"): a definition that
    # holds a finite verb writes nothing after it ("tenemos clase Hoy" for "… entonces tenemos
    # clase. Hoy es miércoles."), while a subject said before it may still be lent to a later
    # sentence's verb ("la tierra … no posee luz").
    sentence_end_before = set()
    for i in range(1, len(positions)):
        end = expressions.get(token_of[i - 1], token_of[i - 1] + 1)
        between = range(end, token_of[i])
        gap = text[token_spans[end - 1][1] : token_spans[token_of[i]][0]]
        if _PUNCTUATION_RE.search(gap) or any(
            t in in_cue or tokens[t].lower() in bounding_words for t in between
        ):
            clause_bound_before.add(i)
        said_next = re.search(r"\.\s+(\S)", gap + tokens[token_of[i]])
        abbreviation = len(tokens[end - 1]) <= 3 and tokens[end - 1][:1].isupper()  # "Sr.", "D."
        if re.search(r"[;?!]", gap) or (said_next and not said_next[1].islower() and not abbreviation):
            sentence_end_before.add(i)

    # A verb the sentence follows at once by a determiner, a preposition or a number opens its
    # complement there, and any word followed by a word of ``_ADJUNCT_OPENERS`` goes on into
    # its adjunct: a definition does not end there ("Consuelo pierde" for "Consuelo no pierde el
    # empleo", "habéis salido" for "… habéis salido con Luis", "Vicente viaja" for "Si Vicente
    # viaja al norte del país …", "Pedro es capaz" for "Pedro es capaz de reír …"). An article
    # after a noun may open the next clause's subject where a condition has no comma ("Solo si la
    # abogada friega los platos el pianista …"), so only a verb is held to it.
    unfinished = {
        i
        for i in range(len(positions))
        if i < last
        and i + 1 not in clause_bound_before
        and token_of[i + 1] == token_of[i] + 1
        and (
            tokens[token_of[i + 1]].lower()
            in (_COMPLEMENT_OPENERS | _ADJUNCT_OPENERS if i in verbs else _ADJUNCT_OPENERS)
            or (i in verbs and tokens[token_of[i + 1]][:1].isdigit())
        )
    }

    def after(state: str, i: int) -> str:
        """The state once word i is written: "" none yet, "o" a word of an elided conjunct and none
        it shares (the definition may not end: "fruta", "en Nopiane"), "f" a shared word, "g" a
        shared word after a word of an elided conjunct (no ``parallel`` word may follow: "Raúl
        pidió mi prima"); then "v" once a word of ``verbal`` is written; then "F" once a word of
        ``finite`` is written, "X" once a clause's bound is passed after it, "S" once a
        sentence's end is (:func:`onto`)."""
        verb = "v" if "v" in state or i in verbal else ""
        finite_now = "F" if i in finite else "" if i in subordinators else state.lstrip("ofgv")
        if i in shared or state.startswith(("f", "g")):
            return ("g" if state.startswith(("o", "g")) else "f") + verb + finite_now
        return ("o" if i in elided or state.startswith("o") else "") + verb + finite_now

    def onto(state: str, i: int) -> str:
        """The state on reaching word i from word i - 1."""
        if state.endswith(("F", "X")) and i in sentence_end_before:
            return state[:-1] + "S"
        return state[:-1] + "X" if state.endswith("F") and i in clause_bound_before else state

    @functools.cache
    def bodies(rule: str, level: int, state: str, i: int) -> tuple[str, ...]:
        """The productive alternatives of rule s (write word i), c (word i or a later one), k (as c,
        after a verb: past no ``unpassable`` word) or b (the jump back from word i), each a GBNF
        sequence; empty when no definition ends."""
        if rule in ("c", "k"):
            passes = i < last and not (rule == "k" and i in unpassable)
            reached = onto(state, i + 1)
            return ((f"s{level}{state}-{i}",) if bodies("s", level, state, i) else ()) + (
                (f"{rule}{level}{reached}-{i + 1}",) if passes and bodies(rule, level, reached, i + 1) else ()
            )
        if rule == "b":
            # back past a sentence's end only to lend a subject or verb to one that has none yet
            if "F" in state and i in sentence_end_before:
                return ()
            return ((f"s1{state}-{i - 1}",) if bodies("s", 1, state, i - 1) else ()) + (
                (f"b{state}{i - 1}",) if i > 1 and bodies("b", 0, state, i - 1) else ()
            )
        # after the jump back, whose words lend a subject or a predicate, one finite verb in all;
        # before it, a second one only after a word that subordinates its clause
        if (i in finite and state.endswith("X")) or (i in finite and level == 1 and state.endswith("F")):
            return ()
        if state.endswith("X") and i in other_clauses:
            return ()
        if (i in sure_verbs and state.endswith("F")) or state.endswith("S"):
            return ()
        if state.startswith(("o", "g")) and i in parallel:
            return ()
        now = after(state, i)
        run = "k" if i in verbs else "c"
        forward = onto(now, i + 1)
        onward = [f"{run}{level}{forward}-{i + 1}"] if i < last and bodies(run, level, forward, i + 1) else []
        # an elided word goes on to a word it shares, never back ("fruta compró"); back before
        # the bound, the verb's clause is open again
        back = now.replace("X", "F")
        if level == 0 and i > 0 and not now.startswith("o") and bodies("b", 0, back, i):
            onward.append(f"b{back}{i}")
        # a word that needs a complement may end a definition only where no word could follow it
        goes_on = i < last or (level == 0 and i > 0)
        may_end = (
            not now.startswith("o")
            and i not in unfinished
            and (not verbal or "v" in now)
            and not (
                goes_on
                and {f.lower() for f in positions[i][1]} <= _NEEDS_COMPLEMENT | _PROCLITICS | _copulas()
            )
        )
        if not onward:
            return (f"w{i}",) if may_end else ()
        return (f'w{i} (" " ({" | ".join(onward)})){"?" if may_end else ""}',)

    rules.append("def ::= c0-0")
    for i, (prefixes, forms) in enumerate(positions):
        word = " | ".join(_literal(f) for f in forms)
        if prefixes:
            word = "(" + " | ".join(_literal(p + " ") for p in prefixes) + ")? (" + word + ")"
        rules.append(f"w{i} ::= {word}")
    for state in (
        e + v + z
        for e in (("", "o", "f", "g") if elided else ("",))
        for v in ("", "v")
        for z in ("", "F", "X", "S")
    ):
        for level in (0, 1):
            for i in range(last + 1):
                for rule in ("c", "k", "s", "b") if level == 0 and i > 0 else ("c", "k", "s"):
                    if body := bodies(rule, level, state, i):
                        name = f"b{state}{i}" if rule == "b" else f"{rule}{level}{state}-{i}"
                        rules.append(f"{name} ::= " + " | ".join(body))
    return rules


@functools.cache
def _first_person_presents() -> frozenset[str]:
    """Forms of the lexicon's verbs ending in "o" that are only a first person singular present
    ("dibujo", "canto", "trabajo"): many are nouns as well."""
    readings: dict[str, set[tuple[str, int]]] = {}
    for _, tense, person, form in lexicon_conjugations():
        readings.setdefault(form, set()).add((tense, person))
    return frozenset(form for form, read in readings.items() if form.endswith("o") and read == {("pres", 0)})


# Endings of the future, the conditional, the preterite and the imperfect, and of the first and
# second persons plural: a word with one is a verb form, not a noun or an adjective. The finite
# ones of ``_VERB_ENDINGS`` and those of the second person plural it lacks ("-ís" is left out:
# "país").
_FINITE_ENDINGS = (
    *(e for e in _VERB_ENDINGS if not e.endswith(("ando", "iendo", "ado", "ados", "ido", "idos", "r", "se"))),
    *("ríais", "asteis", "isteis", "abais", "íais"),
)


# Words that make the clause after them part of a definition's ("Juan dice que Ana viene"); not
# "como", more often "as" ("Si no me eligen como alcalde, no tendrán metro").
_SUBORDINATORS = frozenset({"que", "qué", "cómo", "donde", "dónde", "quien", "quienes", "quién", "cuál"})


# Pronouns before a verb ("se lesiona", "nos hemos mudado"), and the forms of "ser", "estar" and
# a perfect's "haber" that need what follows them ("es primo", "estás despierto", "ha llovido"): a
# clause never ends on one, so a definition does not either ("su lanzador titular se lesiona
# titular se", "tú estás" for "Tú estás despierto o estás durmiendo").
_PROCLITICS = _BEFORE_A_VERB - {"no"}


@functools.cache
def _copulas() -> frozenset[str]:
    """The indicative and present subjunctive forms of "ser" and "estar" (not the imperfect
    subjunctive: "fuera" also means "outside"), a perfect's auxiliary and "hay"."""
    from nanologic.conjugation import TENSES, conjugate

    simple = [tense for tense in (*TENSES, "pres_sub") if tense != "perf"]
    forms = {
        conjugate(lemma, tense, person)
        for lemma in ("ser", "estar")
        for tense in simple
        for person in range(6)
    }
    return frozenset(forms) | PERFECT_AUXILIARIES | {"hay"}


# Endings of an infinitive, a gerund or a participle (the irregular ones: "hecho", "escrito",
# "puesto", "abierto", "vuelto", "visto", "roto", "muerto"): no finite verb of a clause of its own.
# A finite form read as one of these ("nado", "pido") only leaves the clause-bound rule unapplied.
_PARTICIPLE_ENDINGS = tuple(
    stem + ending
    for stem in ("ad", "id", "íd", "ch", "crit", "uest", "iert", "uelt", "ist", "ot", "uert")
    for ending in ("o", "a", "os", "as")
)
_NON_FINITE_ENDINGS = ("ar", "er", "ir", "ír", "ando", "iendo", "yendo", *_PARTICIPLE_ENDINGS)

# Unaccented, these are determiners ("este año"), not forms of "estar" ("esté", "está").
_DEMONSTRATIVES = frozenset({"este", "esta", "estos", "estas", "ese", "esa", "esos", "esas"})


# Words that need a complement after them (articles, prepositions, possessives, "que", "muy"):
# a clause never ends on one, so a definition never does (none of data/dev_real.jsonl's 501 gold
# definitions nor a training split's 66,701; a model that stopped early wrote "la enfermedad la
# provocó el", "se aprobaba una ley sobre"). Words that may also end a clause ("bajo", "una",
# "sobre", "este", "nuestro") are left out.
_NEEDS_COMPLEMENT = frozenset(
    {"el", "la", "los", "las", "un", "unos", "unas", "al", "del", "mi", "mis", "tu", "tus", "su", "sus"}
    | {"a", "de", "en", "con", "por", "para", "sin", "entre", "hacia", "desde", "según", "tras", "ante"}
    | {"durante", "mediante", "que", "cada", "muy", "tan"}
)

# Words that open an adjunct of the phrase before them: prepositions ("al norte del país", "capaz
# de reír"; not "sin" or "para", which open a clause of their own: "sin comunicarlo", "para
# conducir"), and a time's opening ("este año", "cada semana", "antes de las 9", "otra vez",
# "casi siempre").
_ADJUNCT_OPENERS = frozenset(
    {"a", "al", "de", "del", "en", "con", "por", "desde", "hacia", "durante"}
    | {"este", "esta", "estos", "estas", "cada", "antes", "después", "otra", "casi"}
)
# Words that open a verb's complement (determiners, prepositions): :func:`_reading_rules` ends
# no definition on a verb right before one. Not "para", which opens a purpose ("Se debe viajar
# para defender la tesis": ``viajas``), nor "que".
_COMPLEMENT_OPENERS = _NEEDS_COMPLEMENT - {"que", "muy", "tan", "para"} | {
    "una",
    "uno",
    "este",
    "esta",
    "estos",
    "estas",
}


# pronouns before a verb, with those that are also articles ("la", "los", "las")
_CLITICS = _PROCLITICS | {"la", "los", "las"}
# punctuation a word of a split text may carry ("vendrá." "¿Llueve")
WORD_PUNCTUATION = " ,.;:¡!¿?\"'«»"


def is_verb(word: str) -> bool:
    """A finite verb by the lexicon's conjugations, or a future by its ending ("recibirán");
    punctuation around ``word`` is ignored."""
    low = word.lower().strip(WORD_PUNCTUATION)
    return lexicon_verb_lemma(low) is not None or (len(low) > 4 and low.endswith(FUTURE_ENDINGS))


def split_commaless_conditional(body: str) -> tuple[str, str]:
    """Split a conditional's 'HEAD TAIL' that has no comma ("si está durmiendo no vendrá"): at "es
    que" (dropped), or, after a head that holds a verb, before a "no" or a clitic opening the tail
    or a verb that follows neither a verb ("está durmiendo") nor a coordinator ("llueve y hace
    sol"), where the head's last coordinated clause has its verb ("Cuando la reunión no empieza o
    mi padre fue a clase no …" opens its tail at the second "no", not at "fue"). ``(body, "")``
    when no such place is found. The rule baseline's split (:mod:`nanologic.baseline`), which the
    answer grammar's notes share."""
    words = body.split()

    def between_numbers(k: int) -> bool:  # "sume 92 y 23": no coordinated clause
        return 0 < k < len(words) - 1 and words[k - 1][:1].isdigit() and words[k + 1][:1].isdigit()

    # a verb: not a noun after a determiner or a preposition ("la cocina", "vuelvan a casa",
    # "durante el viaje"); a tail's: finite too
    verb_at = [
        is_verb(w)
        and (k == 0 or words[k - 1].lower() not in DETERMINERS | _NEEDS_COMPLEMENT)
        and not (k > 0 and w.lower() in ("pasado", "pasada") and words[k - 1].lower() in _TIME_NOUNS)
        for k, w in enumerate(words)
    ]
    for i in range(1, len(words)):
        head, word, before = words[:i], words[i].lower(), words[i - 1].lower()
        if i >= 2 and [w.lower() for w in words[i : i + 2]] == ["es", "que"]:
            return " ".join(head), " ".join(words[i + 2 :])  # "si A es que B": A → B
        last = max(
            (k for k, w in enumerate(head) if w.lower() in COORDINATORS and not between_numbers(k)),
            default=-1,
        )
        if before in COORDINATORS or before in _CLITICS:
            continue
        if not any(verb_at[last + 1 : i]):
            # "… esta semana Pupliochicha y Alejandro no tuvieron dinero": the coordinator joins
            # the tail's subjects, the head's clause ended before the first
            first = _coordinated_subject(words, verb_at, last, i)
            if first is not None:
                return " ".join(words[:first]), " ".join(words[first:])
            continue
        opens_tail = (
            word == "no"
            or (word in _CLITICS and i + 1 < len(words) and is_verb(words[i + 1]))
            or (
                verb_at[i]
                and not word.endswith(_NON_FINITE_ENDINGS)
                and (not verb_at[i - 1] or _ends_a_perfect(words, i))
                and before != "no"
            )
        )
        if opens_tail:
            i = _with_its_subject(words, i)
            return " ".join(words[:i]), " ".join(words[i:])
    return body, ""


# Subject pronouns, and the determiners that open a noun phrase (articles, possessives,
# demonstratives); the rule baseline reads subjects with the same sets.
SUBJECT_PRONOUNS = frozenset({*PRONOUNS, *PRONOUNS_F, "usted", "ustedes"})
DETERMINERS = frozenset({
    "el", "la", "los", "las", "un", "una", "unos", "unas", "mi", "mis", "tu", "tus", "su", "sus",
    "nuestro", "nuestra", "nuestros", "nuestras", "este", "esta", "estos", "estas", "ese", "esa",
    "esos", "esas", "aquel", "aquella", "aquellos", "aquellas",
})  # fmt: skip


# "el año pasado", "la semana pasada": a time, no participle of a verb
_TIME_NOUNS = frozenset(
    {"año", "mes", "semana", "lunes", "martes", "miércoles", "jueves", "viernes", "sábado"}
)


def _ends_a_perfect(words: list[str], i: int) -> bool:
    """Whether ``words[i - 2 : i]`` are a perfect ("has pagado"), whole before ``words[i]``:
    "cuando no has pagado contaremos hasta 98" opens its consequent at "contaremos"."""
    return (
        i > 1
        and words[i - 2].lower() in PERFECT_AUXILIARIES
        and words[i - 1].lower().endswith(_PARTICIPLE_ENDINGS)
    )


def _coordinated_subject(words: list[str], verb_at: list[bool], coordinator: int, i: int) -> int | None:
    """Where a tail opens whose subject is two noun phrases joined by ``words[coordinator]`` ("el
    médico o mi abuela han trabajado", "los jugadores o David pagan"), its finite verb (or "no")
    at ``words[i]``, and the words before the first noun phrase hold a verb; else None."""
    word = words[i].lower()
    finite = verb_at[i] and not word.endswith(_NON_FINITE_ENDINGS)
    if coordinator < 1 or not (word == "no" or finite) or _with_its_subject(words, i) != coordinator + 1:
        return None
    first = _with_its_subject(words, coordinator)
    if first == coordinator:
        return None
    earlier = max((k for k, w in enumerate(words[:first]) if w.lower() in COORDINATORS), default=-1)
    return first if any(verb_at[earlier + 1 : first]) else None


def _with_its_subject(words: list[str], i: int) -> int:
    """Where the clause whose verb (or "no", or clitic) is ``words[i]`` opens, given a subject said
    just before it: a subject pronoun ("… nosotros no nadamos"), a name ("… en Aires Lola escucha"),
    or an article or possessive and one word, or one word "de" and one more, after a word that is
    neither a preposition nor a verb but a pronominal one ("… en abril la biblioteca abre", "… se
    suspendiera el científico suspende", "… nublado la raíz de 60 será"; not "… de la República
    recibirán", "compra el pan llega", nor a time said with a demonstrative, "… este año tronará")."""
    before = words[i - 1].lower() if i > 0 else ""
    if before in SUBJECT_PRONOUNS:
        return i - 1
    for j in range(i - 2, max(i - 7, 0), -1):
        if words[j].lower() in DETERMINERS:
            opener = words[j - 1].lower()
            pronominal = is_verb(opener) and j > 1 and words[j - 2].lower() == "se"
            # "la raíz de 60", "el producto de 6 y 29"
            numbers = words[j + 3 : i]
            of_numbers = bool(numbers) and all(w[:1].isdigit() or w.lower() in ("y", "e") for w in numbers)
            shaped = i - j == 2 or (
                i - j >= 4 and words[j + 2].lower() == "de" and (i - j == 4 or of_numbers)
            )
            if (
                shaped
                and words[j].lower() not in _DEMONSTRATIVES
                and opener not in _NEEDS_COMPLEMENT
                and (pronominal or not is_verb(opener))
                and not any(is_verb(w) for w in words[j + 1 : i])
            ):
                return j
            break
    if i > 1 and words[i - 1][:1].isupper() and words[i - 2].lower() not in _NEEDS_COMPLEMENT:
        return i - 1
    return i


def _literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _formula_rules(
    k: int, connectives: frozenset[str] = frozenset(FORMULA_SYMBOLS), premises: int = 0
) -> list[str]:
    """Rules f<k> ... over the first k letters, mirroring nanologic.logic's recursive descent, with
    only the ``connectives`` given (each level without its operator is the level below it); with
    ``premises`` (an argument, :func:`argument_premises`) the whole formula is the conjunction of
    that many conjuncts or more, then → and the conclusion: ``((p → q) ∧ ¬q) → ¬p``."""
    letters = " | ".join(_literal(a) for a in atom_letters(k))

    def level(name: str, below: str, symbol: str, repeat: str) -> str:
        if symbol not in connectives:
            return f"f{k}-{name} ::= f{k}-{below}"
        target = f"f{k}-{name}" if repeat == "?" else f"f{k}-{below}"
        return f"f{k}-{name} ::= f{k}-{below} ({_literal(' ' + symbol + ' ')} {target}){repeat}"

    whole = f"f{k} ::= f{k}-iff"
    if premises == 1:
        whole = f"f{k} ::= f{k}-un {_literal(' ' + IMPLIES + ' ')} f{k}-un"
    elif premises > 1:
        conjuncts = f" {_literal(' ' + AND + ' ')} f{k}-un" * (premises - 1)
        whole = f'f{k} ::= "(" f{k}-un{conjuncts} ({_literal(" " + AND + " ")} f{k}-un)* ") " '
        whole += f"{_literal(IMPLIES + ' ')} f{k}-un"
    return [
        whole,
        level("iff", "imp", IFF, "*"),
        level("imp", "dis", IMPLIES, "?"),
        level("dis", "con", OR, "*"),
        level("con", "un", AND, "*"),
        # at most two ¬ in a row: no gold formula has even two, and an unbounded run let an
        # undertrained model write "¬¬¬…" up to the token limit
        f"f{k}-un ::= ({_literal(NOT)} {_literal(NOT)}?)? f{k}-prim"
        if NOT in connectives
        else f"f{k}-un ::= f{k}-prim",
        f'f{k}-prim ::= f{k}-atom | "(" f{k}-iff ")"',
        f"f{k}-atom ::= {letters}",
    ]


def _grammar(
    definition_rules: list[str],
    max_atoms: int,
    connectives: frozenset[str] = frozenset(FORMULA_SYMBOLS),
    min_atoms: int = 1,
    premises: int = 0,
    once: bool = False,
    notes: Sequence[str] = (),
) -> str:
    """The answer grammar over ``definition_rules`` (rule ``def``, and ``neg-def`` if given), with
    ``min_atoms`` to ``max_atoms`` atoms and only the ``connectives`` given, in the formula and the
    connector list (without ¬ no polarity mark either); ``premises``: see :func:`_formula_rules`;
    ``once``: the grammar carries ``LETTERS_ONCE_NOTE`` (:func:`letters_once`); ``notes``: more
    comment lines for :class:`FormulaMask` (:func:`argument_literal_notes`). The connector list
    holds at most ``MAX_CONNECTORS`` items of at most ``MAX_CUE_WORDS`` words each."""
    letters = atom_letters(max_atoms)
    defines = {rule.split(" ::= ")[0] for rule in definition_rules}
    plain = "def mark?" if NOT in connectives else "def"
    definition = " | ".join(d for d, name in ((plain, "def"), ("neg-def", "neg-def")) if name in defines)
    if " | " in definition:
        definition = f"({definition})"
    lines = [
        "# nanologic answer grammar (GBNF): atoms p, q, r... in order with definitions,",
        "# connectors, a formula over the declared letters only; eos follows the final space.",
        *([LETTERS_ONCE_NOTE] if once else []),
        *notes,
        'root ::= "<|atoms|> " (' + " | ".join(f"a{k}" for k in range(min_atoms, max_atoms + 1)) + ")",
    ]
    for k in range(1, max_atoms + 1):
        items = ' " | " '.join(f'"{letter}: " {definition}' for letter in letters[:k])
        lines.append(f'a{k} ::= {items} " <|connectors|> " conns? " <|formula|> " f{k} " "')
    symbols = " | ".join(_literal(s) for s in FORMULA_SYMBOLS if s in connectives)
    lines += [
        f'conns ::= conn (" | " conn){{0,{MAX_CONNECTORS - 1}}}',
        f'conn ::= ({symbols}) ": " cue',
        f'cue ::= cue-word (" " cue-word){{0,{MAX_CUE_WORDS - 1}}}',
        "cue-word ::= [^ |<\\n]+",
        f'mark ::= " " ({_literal(NEGATED_MARK)} | {_literal(MIXED_MARK)})',
        *definition_rules,
    ]
    for k in range(1, max_atoms + 1):
        lines += _formula_rules(k, connectives, premises)
    return "\n".join(lines) + "\n"


# The connector list's bounds: the generator's answers hold at most 8 connectors, each cue at most
# 6 words ("si...entonces" one, "o bien...o bien" two; 22,356 training answers of a default run).
# Unbounded, a default model looped in the list ("∧: no Por lo tanto Por lo tanto …", formulas
# written as cues) until the answer's token budget ran out, leaving a formula that did not parse.
MAX_CONNECTORS = 8
MAX_CUE_WORDS = 6


# A grammar cannot count a letter's uses without one copy of the formula rules per set of letters
# used, so the rule of :func:`letters_once` travels in the grammar as this comment, which
# :class:`FormulaMask` reads (llama.cpp ignores it, and has no FormulaMask).
LETTERS_ONCE_NOTE = "# formula: each declared letter at most once"
# ↔ at most as often as the sentence says a biconditional, as "# formula: ↔ at most N"
IFF_AT_MOST_NOTE = "# formula: ↔ at most"
# Where the rules count the sentence's clauses (the atom list is bounded, ``rule_bounds``), the
# formula may not end while a declared letter is unnamed: the model had declared "r: … resolverá
# la ecuación" and closed "p ∨ q" (the letter is then dropped, :func:`normalize.drop_unnamed_atoms`).
ALL_NAMED_NOTE = "# formula: every declared letter named"
_BICONDITIONAL_SAID_RE = re.compile(
    r"(?<!\w)(?:si y solo si|si y solamente si|cuando y solo cuando|(?:solo|solamente|unicamente)"
    r" (?:si|cuando)|unicamente|equivalen?|es equivalente|necesari[oa]s? y suficientes?"
    r"|suficientes? y necesari[oa]s?)(?!\w)"
)


def biconditionals_said(sentence: str) -> int:
    """How many times ``sentence`` says a biconditional ("si y sólo si", "únicamente cuando",
    "equivale", "necesaria y suficiente", … each once; "sólo si" and "sólo cuando" too, which some
    sentences read as ↔). No gold formula of data/dev_real.jsonl or of 4,000 generated sentences
    holds ↔ more often; the default model wrote ``p ↔ (¬q ↔ ¬r)`` for "A si y solo si ni B ni C"
    (4 of a seed-1 run's 28 wrong structures) and ``p ↔ (q ∨ r)`` for "A, B o únicamente C"."""
    return len(_BICONDITIONAL_SAID_RE.findall(fold_text(unicodedata.normalize("NFC", sentence))))


def answer_grammar(max_atoms: int = MAX_ATOMS) -> str:
    """The GBNF grammar of a well-formed answer (definitions: words without | < : or newline, or
    the relation "<" standing alone, as in "x < 3"; a "<" inside a word could start "<|eos|>")."""
    if not 1 <= max_atoms <= 26:
        raise ValueError(f"max_atoms must be in 1..26, got {max_atoms}")
    return _grammar(['def ::= word (" " word)*', 'word ::= [^ |<:\\n]+ | "<"'], max_atoms)


# Every word with which a sentence can negate: the cue inventory's (generator.CUES: "no", "ni",
# "tampoco", "≠", "es falso que", "es mentira que", "a menos que", "salvo que") and the other ways
# Spanish says it ("nunca", "jamás", "sin", "excepto", "nadie", "ningún", "imposible", "distinto",
# "de lo contrario").
# Every gold formula with a ¬ comes from a sentence with one of them (data/dev_real.jsonl's 227, a
# training split's 22,298); the default model wrote ¬ for sentences without any ("Es primavera."
# -> ¬p, "Está ventoso y hace frío." -> ¬(p ∧ q)).
_NEGATION_WORD_RE = re.compile(
    r"(?<!\w)(no|ni|nunca|jam[aá]s|tampoco|sin|salvo|excepto|menos|falso|mentira|ning[uú]n|ningun[oa]s?"
    r"|nadie|nada|imposible|distint[oa]s?|diferentes?|contrario)(?!\w)|≠",
    re.IGNORECASE,
)


def says_a_negation(sentence: str) -> bool:
    """Whether ``sentence`` holds a word that can negate (``_NEGATION_WORD_RE``); without one the
    grounded grammar writes no ¬."""
    return _NEGATION_WORD_RE.search(unicodedata.normalize("NFC", sentence)) is not None


# Words that can say a conditional, a disjunction, a biconditional (folded: lower case, no
# accents). Broad on purpose: the cue inventory's (generator.CUES) and the other ways Spanish
# says each ("de modo que", "se deduce", "requiere", "con tal de que"); a connective the sentence
# cannot say is a reading of the model's own. Every gold formula's connectives are said by its
# sentence (data/dev_real.jsonl's 227, two training splits' 22,298 and 22,367); the default
# model wrote → for "Está ventoso y hace frío." and "Tengo que estudiar y limpiar el cuarto."
# (25 such answers of six runs on dev_real, none right).
_SAID_BY = {
    IMPLIES: word_set(
        "si entonces cuando luego implica implican para solo solamente unicamente necesario necesaria "
        "necesarios necesarias necesita necesitan suficiente suficientes basta menos salvo excepto "
        "siempre caso porque puesto ya dado dada consiguiente consecuencia tanto asi ende modo manera "
        "eso hay debe deben debes debemos deber deberia condicion condiciones mientras tal vez sigue "
        "deduce concluye conlleva supone significa requiere requisito exige equivale equivalen "
        "equivalente sino cuanto consecuentemente pues"
    ),
    OR: word_set("o u bien sea menos salvo excepto ni sino"),
    IFF: word_set(
        "solo solamente unicamente equivale equivalen equivalente siempre suficiente suficientes cuando"
    ),
}


# Words that can say ∧ besides "y" / "e" (folded): "pero", "además", "ni … ni", "tanto … como",
# "no … sino", "sin", and the reasons read as conjunctions ("B, ya que A" is B ∧ A).
_AND_SAID_BY = word_set(
    "pero ademas aunque embargo obstante ni tanto como mientras tambien asimismo encima incluso "
    "igualmente ambos ambas vez tampoco sino sin dado ya puesto asi"
)


def _says_and_here(token: str, index: int, tokens: list[str]) -> bool:
    """Whether ``tokens[index]`` is a "y" / "e" that is no variable of arithmetic ("y > 1")."""
    beside = tokens[max(index - 1, 0) : index] + tokens[index + 1 : index + 2]
    return token in _AND_WORDS and not any(t in _OPERATOR_TOKENS for t in beside)


def _says_and(sentence: str) -> bool:
    """Whether ``sentence`` can say ∧: a word of ``_AND_SAID_BY``, a "y" / "e" that is no
    variable (:func:`_says_and_here`), two separators or more (",", ";", ":", "." before the end: a
    list, several sentences), or an argument."""
    folded = fold_text(unicodedata.normalize("NFC", sentence)).strip()
    tokens = [token.lower() for token in sentence_tokens(sentence)]
    # "vez" of "a la vez" says ∧, of "otra vez" and "tal vez" nothing
    if set(re.findall(r"\w+", _ONCE_MORE_RE.sub(" ", folded))) & _AND_SAID_BY or any(
        map(_says_and_here, tokens, range(len(tokens)), [tokens] * len(tokens))
    ):
        return True
    return len(re.findall(r"[,;:.](?!\s*$)", folded)) >= 2 or argument_parts(sentence) is not None


# Phrases whose words would say a connective they do not (folded): a reason, which the format reads
# as ∧ ("B, ya que A" is B ∧ A; dev_real's such sentences accept ∧, and none of two training
# splits' 307 whose only cue it is has → in its gold), and times ("casi siempre", "a la vez",
# "tal vez", "otra vez": not "siempre que", "cada vez que"; "otra vez" had said → and ∧, and the
# default model wrote "¬p ∨ (¬q ∧ ¬r)" for "O bien A, o bien B otra vez o C").
_ONCE_MORE = "otra vez|tal vez"
_ONCE_MORE_RE = re.compile(rf"(?<!\w)(?:{_ONCE_MORE})(?!\w)")
_SAYS_NO_CONNECTIVE_RE = re.compile(
    rf"(?<!\w)(?:ya que|puesto que|dado que|casi siempre|a la vez|{_ONCE_MORE})(?!\w)"
)


def said_connectives(sentence: str) -> frozenset[str]:
    """The connectives ``sentence`` can say: ¬ where it holds a word that negates
    (:func:`says_a_negation`), →, ∨ and ↔ where it holds one of their words (``_SAID_BY``), ∧
    where :func:`_says_and` or where it says no other binary connective (a comma alone may then
    join two clauses); the grounded grammar writes no other. A sentence such as "Si A, B." has
    no ∧: of the 4,485 and 4,432 sentences of two training splits that say another binary
    connective, no word of ∧ and fewer than two separators, no gold formula holds ∧ (1 of the 96
    of data/dev_real.jsonl: "…, entonces es una figura de 3 lados que tiene un ángulo recto", a
    relative clause); the default model wrote one in 9 of two runs' answers to such sentences
    ("Si se somete el agua a una temperatura de cien grados, entra en ebullición." -> ``p ∧ q``)."""
    folded = _SAYS_NO_CONNECTIVE_RE.sub(" ", fold_text(unicodedata.normalize("NFC", sentence)))
    words = set(re.findall(r"\w+", folded))
    said = {NOT} if says_a_negation(sentence) else set()
    said |= {symbol for symbol, cues in _SAID_BY.items() if words & cues}
    if _says_and(sentence) or not said & {IMPLIES, OR, IFF}:
        said.add(AND)
    return frozenset(said)


# An argument's conclusion (folded): the last of its sentences (split at "." and ";") opens with one
# of these, or says one after a comma ("Si A, B; no B, luego no A."), though never "entonces" there,
# which opens a conditional's consequent ("Si A, entonces B"); "luego de" is a time, not a cue.
_CONCLUSION_CUES = (
    "por lo tanto|por tanto|luego(?! de)|asi que|en consecuencia|por consiguiente|por ende|de modo que"
    "|de manera que|de ahi que|se concluye que|se sigue que|concluimos que"
)
_CONCLUSION_RE = re.compile(rf"(?:{_CONCLUSION_CUES}|entonces)(?!\w)")
_LATE_CONCLUSION_RE = re.compile(rf",\s*(?:{_CONCLUSION_CUES})(?!\w)")


def argument_parts(sentence: str) -> tuple[list[str], str] | None:
    """The premises and the conclusion (folded text, :func:`fold_text`) when ``sentence`` is an
    argument written as several sentences (split at "." and ";") whose last opens with a
    conclusion ("Si A, B. No B. Por lo tanto, no A.") or says one after a comma ("Si A, B; no B,
    luego no A.": the last sentence's words before the comma are one more premise); else None."""
    parts = [
        part.strip(" ,")
        for part in re.split(r"[.;](?:\s+|$)", fold_text(unicodedata.normalize("NFC", sentence)))
        if part.strip(" ,")
    ]
    if len(parts) < 2:
        return None
    if _CONCLUSION_RE.match(parts[-1]):
        return parts[:-1], parts[-1]
    late = _LATE_CONCLUSION_RE.search(parts[-1])
    if late is None:
        return None
    return [*parts[:-1], parts[-1][: late.start()]], parts[-1][late.start() :].lstrip(" ,")


# A premise or conclusion of one clause, negated or not: "No B", "luego no A". Its literal in the
# formula travels in the grammar as a comment line, "# argument literal SLOT SIGN KEYS" (SLOT the
# premise's number or "c" for the conclusion, SIGN "¬" or "+", KEYS :func:`content_keys`), which
# :class:`FormulaMask` reads.
ARGUMENT_LITERAL_NOTE = "# argument literal"
ARGUMENT_PREMISES_NOTE = "# argument premises"
_SIMPLE_NEGATIONS = frozenset({"no", "nunca", "jamas", "tampoco"})
# a premise that is one conjunct whatever it holds: a conditional or a disjunction
_ONE_CONJUNCT_OPENERS = frozenset({"si", "cuando", "siempre", "o", "u"})


# words of _SAID_BY that join clauses only in company: "cada vez que", "a la vez" but not "otra
# vez"; "hay que … para", "debes … para" but not "debes ir a comprar"; "sea … sea" (below)
_OBLIGATION_WORDS = frozenset({"hay", "debe", "deben", "debes", "debemos", "deber", "deberia"})


# words of _SAID_BY that join clauses only before "que" ("ya" also in "ya sea"), folded
_JOINS_BEFORE_QUE = frozenset({"dado", "dada", "puesto", "ya", "modo", "manera"})


def _joins_here(words: list[str], index: int) -> bool:
    """Whether ``words[index]``, a word of ``_SAID_BY`` or "y" / "e", joins clauses where it stands:
    not "y" between numbers, symbols or variables ("Celia suma 30 y 3", "x + y = 3"), "siempre"
    after "casi" (a time), "para" before anything but "que" or an infinitive ("compra entradas para
    el concierto"), "bien" but after "o" or "si", "dado", "puesto", "ya", "modo", "manera" but
    before "que" ("Inés ha dado clase", "el Atleti juega bien": one clause each)."""
    word = words[index]
    before, after = words[index - 1] if index else "", words[index + 1] if index + 1 < len(words) else ""
    if word in _AND_WORDS:
        return not ((not before or _is_term(before)) and after and _is_term(after))
    if word == "siempre":
        return before != "casi"
    if word == "para":
        return after == "que" or re.search(r"(?:ar|er|ir)(?:se)?$", after) is not None
    if word == "vez":
        return index > 0 and words[index - 1] in ("cada", "la", "tal")
    if word == "sea":  # "sea A, sea B", "o sea"; else the verb: "que ella sea mayor de edad"
        return words.count("sea") > 1 or (index > 0 and words[index - 1] == "o")
    if word == "bien":  # "o bien", "si bien"; else the adverb: "el Atleti juega bien"
        return before in ("o", "u", "si")
    if word in _JOINS_BEFORE_QUE:  # "dado que", "puesto que", "ya que"; else "ha dado clase", "el puesto"
        return after == "que" or (word == "ya" and after == "sea")
    return word not in _OBLIGATION_WORDS or "para" in words


_NEGATES_A_SENTENCE_RE = re.compile(
    r"(?<!\w)(?:no (?:pasa|ocurre|sucede|es (?:cierto|verdad|el caso))|es (?:falso|mentira))(?!\w)"
)


def _literal_part(part: str) -> tuple[bool, list[str]] | None:
    """(negated, content keys) when the folded ``part`` of an argument says one clause: no comma,
    no word that can join clauses there (``CONNECTIVE_WORDS``, ``_SAID_BY``: :func:`_joins_here`),
    one negation at most ("≠" one too), one relation of arithmetic at most; else None."""
    words = [token.lower() for token in sentence_tokens(part)]
    if sum(word in _RELATIONS for word in words) > 1:
        return None  # two relations of arithmetic, two clauses: "x + y > z y z = 1"
    # "x ≠ 3" is the negation of the atom "x = 3" (:func:`_reading_rules`)
    negations = [w for w in words if w in _SIMPLE_NEGATIONS or w == "≠"]
    joining = _FOLDED_CONNECTIVE_WORDS | _AND_WORDS | _SAID_BY[IMPLIES] | _SAID_BY[OR] | _SAID_BY[IFF]
    # a word of an expression of arithmetic is a term: the variable "y" of "x ≠ y" joins nothing
    terms = {k for start, end in expression_spans(words) for k in range(start, end)}
    others = [
        w
        for k, w in enumerate(words)
        if k not in terms and w in joining and w not in _SIMPLE_NEGATIONS and _joins_here(words, k)
    ]
    if "," in part or others or len(negations) > 1 or (not negations and says_a_negation(part)):
        return None
    if _NEGATES_A_SENTENCE_RE.search(part):  # "no pasa que A o B" is ¬(A ∨ B)
        return None
    # a denial's "ningún" is the "un" of the clause it denies, no content word of it: "no detectó
    # ningún intruso" takes the letter and sign of "detecta un intruso"
    keys = _literal_keys([DENIED_DETERMINERS.get(w, w) for w in words] if negations else words)
    return (bool(negations), keys) if keys else None


def _literal_keys(words: list[str]) -> list[str]:
    """:func:`content_keys` of ``words`` and their numbers, which tell "Yolanda tiene 18 años"
    from "… 22 años" where the argument's letter for a clause is chosen (:class:`FormulaMask`), and
    each relation of arithmetic they hold, written whole ("x-y=2" is not "y-x=2"; "≠" as "=")."""
    relations = [
        "".join("=" if word == "≠" else word for word in words[start:end])
        for start, end in expression_spans(words)
        if _RELATIONS.intersection(words[start:end])
    ]
    keys = content_keys(words) or [lemma for lemma in (_lone_verb(words),) if lemma]
    return keys + [word for word in words if word.isdigit()] + relations


def _lone_verb(words: list[str]) -> str | None:
    """The lemma when ``words`` are one verb of the lexicon, function word or not ("como" of "Si
    tengo hambre, como", which content keys and verb detection leave out as the comparative and cue
    word it mostly is); a lone "es", "ha" or "hay" is no clause."""
    if len(words) == 1 and words[0] not in _FREQUENT_VERB_FORMS:
        return lexicon_verb_lemma(words[0])
    return None


# A premise or conclusion of two such clauses joined by "si … , (entonces)" or "o … , o": its
# parenthesised formula "(L1 → L2)" or "(L1 ∨ L2)" travels as "# argument compound SLOT SYMBOL
# SIGN KEYS / SIGN KEYS".
ARGUMENT_COMPOUND_NOTE = "# argument compound"
_COMPOUND_PARTS = (
    (IMPLIES, re.compile(r"(?:si|cuando|siempre que) (?P<a>[^,]+), (?:entonces )?(?P<b>[^,]+)")),
    (OR, re.compile(r"(?:o bien|o|u) (?P<a>[^,]+), (?:o bien|o|u) (?P<b>[^,]+)")),
    # without the comma, the first "o" opening the part: "o es de dia o es de noche"
    (OR, re.compile(r"(?:o bien|o|u) (?P<a>[^,]+?) (?:o bien|o|u) (?P<b>[^,]+)")),
    (OR, re.compile(r"(?P<a>[^,]+?) (?:o|u) (?P<b>[^,]+)")),
)


# Conjunctions of two clauses, read where a part is one conjunct of a larger conjunction (the
# second part of "O A o no, pero B y C"), never in an argument, whose premise "A y B" adds two
# conjuncts: "ni A ni B" (both negated), "tanto A como B" (one predicate), "A y B".
# "A no V ni W": both negated ("Ainhoa no resolvió la ecuación ni multiplicó 7 por 4")
_NOT_NOR_RE = re.compile(r"(?P<a>(?:[^,]+? )?no [^,]+?),? ni (?P<b>[^,]+)")
_CONJUNCTION_COMPOUNDS = (
    (AND, re.compile(r"ni (?P<a>[^,]+?),? ni (?P<b>[^,]+)")),
    (AND, _NOT_NOR_RE),
    (AND, re.compile(r"tanto (?P<a>[^,]+?) como (?P<b>[^,]+)")),
    (AND, re.compile(r"(?P<a>[^,]+?),? (?:y|e) (?P<b>[^,]+)")),
)


@functools.cache
def _folded_verb_forms() -> frozenset[str]:
    # not the prepositions and cue words a verb's form folds to ("dé" -> "de", "pará" -> "para")
    return frozenset(fold_text(form) for form in _verb_forms()[0]) - {
        "caso",
        "como",
        "dado",
        "de",
        "para",
        "puesto",
        "se",
    }


def _says_a_verb(text: str) -> bool:
    """Whether the folded ``text`` holds a verb form of the lexicon (:func:`lexicon_verb_lemma`),
    folded ("vendia", "hara")."""
    return not _folded_verb_forms().isdisjoint(re.findall(r"\w+", text))


def _shared_keys(side: str, after: bool) -> list[str]:
    """Content keys (:func:`_literal_keys`) of what a coordinated side shares from the folded
    ``side`` that says the verb: from its first verb on where ``after`` ("la camarera no
    multiplican 20 por 9" shares "multiplicar 20 9"), else up to its last verb ("jordi ha
    escuchado bachata" shares "jordi haber escuchar")."""
    words = side.split()
    verbs = [k for k, word in enumerate(words) if _says_a_verb(word) and word not in _folded_names()]
    if not verbs:
        return []
    return _literal_keys(words[verbs[0] :] if after else words[: verbs[-1] + 1])


def _with_shared(keys: list[str], side: str, after: bool, other: list[str]) -> list[str]:
    """``keys`` of a coordinated side and what it shares from ``side`` (:func:`_shared_keys`),
    unless that makes them the ``other`` side's keys ("mi hermano" and "mi hermana" fold to one
    key): then ``keys`` alone, so that the two sides stay two clauses."""
    shared = keys + _shared_keys(side, after)
    return keys if set(shared) == set(other) else shared


@functools.cache
def _folded_names() -> frozenset[str]:
    return frozenset(fold_text(name).lower() for name in lexicon_names())


def _compound_part(
    part: str, conjunctions: bool = False
) -> tuple[str, tuple[bool, list[str]], tuple[bool, list[str]]] | None:
    """(→ or ∨, first literal, second literal) when the folded ``part`` of an argument is a
    conditional "si A, (entonces) B" ("cuando", "siempre que") or a disjunction "o A, o B" or "A
    o B" whose A and B each say one clause (:func:`_literal_part`); with ``conjunctions`` also
    (∧, …) for "ni A ni B" (A and B negated), "tanto A como B" (A with B's sign) and "A y B"; else
    None. Where one side says no verb it shares the other's predicate and sign ("Bruno y la
    camarera no multiplican 20 por 9", "ni Celia ni Braclaplan observaron la muestra", "ha
    escuchado bachata y salsa": two atoms each, as the generator writes them), and its literal
    holds its own words and the shared ones (:func:`_shared_keys`), so that its definition, "Bruno
    multiplica 20 por 9", is the one its letter and polarity mark are read from."""
    for symbol, pattern in _COMPOUND_PARTS + (_CONJUNCTION_COMPOUNDS if conjunctions else ()):
        match = pattern.fullmatch(part)
        if match:
            first, second = _literal_part(match["a"]), _literal_part(match["b"])
            if first is None or second is None:
                continue
            if symbol == OR and second[0] and set(second[1]) <= set(first[1]):
                continue  # "o A o no (A)": one clause, the excluded middle (excluded_middle_notes)
            if part.startswith("tanto "):  # "tanto A como B V": A shares B's predicate, and its sign
                return symbol, (second[0], _with_shared(first[1], match["b"], True, second[1])), second
            if re.search(r"\d$", match["a"]) and re.match(r"\d", match["b"]):
                continue  # numbers: "la suma de 7 y 8 es par" (and "suma" a verb of the lexicon)
            # a side that is one name says no verb, whatever its folded form ("Vera": "verá")
            verbs = tuple(_says_a_verb(match[side]) and match[side] not in _folded_names() for side in "ab")
            sides = {side: match[side].split() for side in "ab"}
            verbless = {
                side: _says_no_verb(words, 0, len(words), _folded_names()) and not _lone_verb(words)
                for side, words in sides.items()
            }
            if verbs[1] and verbless["a"]:  # "A y B V", "A o B V": B's predicate and sign
                first = (second[0], _with_shared(first[1], match["b"], True, second[1]))
            elif verbs[0] and verbless["b"]:  # "V A y B": A's verb and sign
                second = (first[0], _with_shared(second[1], match["a"], False, first[1]))
            elif symbol == AND and not all(verbs):
                continue  # a verb the lexicon does not know ("el sol brilla"): left to the model
            if part.startswith("ni "):
                if first[0] or second[0]:
                    continue
                first, second = (True, first[1]), (True, second[1])
            elif pattern is _NOT_NOR_RE:
                if not first[0] or second[0] != (not verbs[1]):
                    continue  # "no A ni B" negates both; B with a "no" of its own is another reading
                second = (True, second[1])
            return symbol, first, second
    return None


_LIST_RE = re.compile(r"(?P<a>[^,]+), (?P<b>[^,]+) (?:y|e) (?P<c>[^,]+)")


def _list_notes(slot: str, part: str) -> list[str]:
    """The ``ARGUMENT_COMPOUND_NOTE`` at ``slot`` of a conjunction of three clauses, "A, B y C",
    each one clause with a verb of the lexicon (:func:`_literal_part`, :func:`_says_a_verb`); else
    none. The condition of "Si A, no B y C, D" is ``(p ∧ ¬q ∧ r)``; the default model had written
    ``(p ∧ ¬q) → (r ∧ s)``."""
    match = _LIST_RE.fullmatch(part)
    if match is None or not all(_says_a_verb(match[side]) for side in "abc"):
        return []
    literals = [_literal_part(match[side]) for side in "abc"]
    if any(literal is None for literal in literals):
        return []
    return [
        f"{ARGUMENT_COMPOUND_NOTE} {slot} {_said_compound(AND, *(literal for literal in literals if literal))}"
    ]


def _said(literal: tuple[bool, list[str]]) -> str:
    """A literal as the notes write it: "¬ KEYS" or "+ KEYS"."""
    return f"{NOT if literal[0] else '+'} {' '.join(literal[1])}"


def _said_compound(symbol: str, *literals: tuple[bool, list[str]]) -> str:
    """A compound as the notes write it, "SYMBOL SIGN KEYS / SIGN KEYS …" (read by
    :func:`_read_compound`)."""
    return f"{symbol} {' / '.join(map(_said, literals))}"


def _part_notes(slot: str, part: str, conjunctions: bool = False) -> list[str]:
    """The note of an argument's ``part`` at ``slot`` (a premise's number or "c"): a literal
    (``ARGUMENT_LITERAL_NOTE``), a compound of two (``ARGUMENT_COMPOUND_NOTE``; ``conjunctions``:
    see :func:`_compound_part`), or none."""

    literal = _literal_part(part)
    if literal is not None:
        return [f"{ARGUMENT_LITERAL_NOTE} {slot} {_said(literal)}"]
    compound = _compound_part(part, conjunctions)
    if compound is not None:
        return [f"{ARGUMENT_COMPOUND_NOTE} {slot} {_said_compound(*compound)}"]
    return []


def argument_literal_notes(sentence: str) -> list[str]:
    """The ``ARGUMENT_LITERAL_NOTE`` and ``ARGUMENT_COMPOUND_NOTE`` lines of an argument
    (:func:`argument_parts`): one per premise of one clause or of two (:func:`_compound_part`), as
    long as each premise before it is one conjunct (one clause, a conditional, a disjunction), and
    one for such a conclusion. The default model wrote a premise of two clauses as one letter and
    then ran on, ``(p ∧ p ∧ p ∧ …) → q`` for modus ponens (29 answers of a synthetic test split
    won back with the compound notes, 2026-12-05). The default model wrote a premise or
    conclusion with another clause's letter or the other sign in most of its wrong answers to
    arguments ("Si está lloviendo, te espero dentro del teatro. Está lloviendo. Por lo tanto, te
    espero dentro del teatro." -> ``((p → q) ∧ q) → p``)."""
    parts = argument_parts(sentence)
    if parts is None:
        return []
    premises, conclusion = parts
    notes = [f"{ARGUMENT_PREMISES_NOTE} {len(premises)}"]
    for number, premise in enumerate(premises, 1):
        part_notes = _part_notes(str(number), premise)
        notes += part_notes
        if not part_notes and premise.split()[0] not in _ONE_CONJUNCT_OPENERS:
            break  # it may add conjuncts: the later premises' places are unknown
    cue = _CONCLUSION_RE.match(conclusion)
    notes += _part_notes("c", conclusion[cue.end() :].lstrip(" ,") if cue else conclusion)
    return notes if len(notes) > 1 else []


# The polarity marks (which decoding applies to the formula's literals, data.apply_polarity)
# agree with the signs the notes fix: read by FormulaMask where the model writes marks.
MARKS_FOLLOW_NOTE = "# atoms: polarity marks follow the noted literals"
# A conditional whose condition says one clause: its formula opens with the condition's literal
# and →, as "# conditional antecedent SIGN KEYS". Folded sentences, without the final period:
# (pattern, whether the condition is said negated: "a menos que A, B" is ¬A → B).
CONDITIONAL_ANTECEDENT_NOTE = "# conditional antecedent"
# A conditional whose condition says two clauses ("Si A y no B, C"): its formula opens with their
# compound, "(A ∧ ¬B) → ", the compound's note at slot "1" (``ARGUMENT_COMPOUND_NOTE``).
CONDITIONAL_COMPOUND_NOTE = "# conditional compound antecedent"
# A compound negated whole, "¬(A ∨ B)": "# negated compound SLOT" and its compound's note at SLOT
# ("a menos que A o B, C": ``¬(A ∨ B) → C``, slot "1"; "o A o B, pero no ambos": the second part).
NEGATED_COMPOUND_NOTE = "# negated compound"
# A biconditional said so ("A si y solo si B"): the same notes, and this line: ↔ where → was.
BICONDITIONAL_NOTE = "# conditional connective ↔"
_BICONDITIONAL_SENTENCES = (
    re.compile(r"s[ií] y s[oó]lo s[ií] (?P<a>[^,;.]+), (?P<b>[^,;.]+)"),
    re.compile(
        r"(?P<a>[^,;.]+?) (?:s[ií] y s[oó]lo s[ií]|s[ií] y solamente s[ií]|cuando y solo cuando"
        r"|unicamente cuando) (?P<b>[^,;.]+)"
    ),
    re.compile(r"que (?P<a>[^,;.]+?) equivale a que (?P<b>[^,;.]+)"),
    re.compile(r"(?:que )?(?P<a>[^,;.]+?) es condicion necesaria y suficiente para (?:que )?(?P<b>[^,;.]+)"),
)
_IF_CUES = r"(?:si|cuando|siempre que|siempre y cuando|en caso de que|con tal de que)"
_UNLESS_CUES = r"(?:a menos que|salvo que|excepto que|salvo si|excepto si)"
# A condition that opens the sentence, with its cue: "si", "a menos que", "para que", …
_COMMALESS_CONDITION_RE = re.compile(
    rf"(?P<cue>{_IF_CUES}|{_UNLESS_CUES}|para que|s[oó]lo si|solamente si|aunque|ya que|dado que|puesto que)"
    r" (?P<body>[^,;:.]+[.!?]?)",
    re.IGNORECASE,
)


def with_conditional_comma(sentence: str) -> str:
    """``sentence`` with the comma a conditional's condition leaves out ("Si está durmiendo no
    vendrá a la fiesta." -> "Si está durmiendo, no vendrá a la fiesta."), where it opens with
    "si", "cuando", "siempre que", "en caso de que", "a menos que", "salvo que", "excepto que",
    "para que", "solo si", "aunque", "ya que", "dado que", "puesto que" (…), holds no other comma,
    no "entonces" and one sentence, and :func:`split_commaless_conditional` finds where the
    consequent opens; else ``sentence``. The
    answer grammar reads the condition's clauses apart from the consequent's and notes the
    conditional's shape from it (:func:`grounded_grammar`); "si A es que B" is left as it is.
    Each part of a sentence split by ";" is read so, after the words that join it to the one before
    ("Si A B; pero cuando C D." -> "Si A, B; pero cuando C, D.")."""
    if ";" in sentence:
        parts = []
        for part in sentence.split(";"):
            joined = _PART_OPENING_RE.match(part)
            opening = joined.group(0) if joined else ""
            parts.append(opening + _with_one_conditional_comma(part[len(opening) :]))
        return ";".join(parts)
    return _with_one_conditional_comma(sentence)


# what joins a part after ";" to the one before: " y ", " pero ", " y además, "
_PART_OPENING_RE = re.compile(r"\s*(?:(?:y|e|pero|además|y además|mientras que)(?:,\s*|\s+))*", re.IGNORECASE)


def _with_one_conditional_comma(sentence: str) -> str:
    match = _COMMALESS_CONDITION_RE.fullmatch(sentence.strip())
    if match is None or re.search(r"(?<!\w)entonces(?!\w)", sentence, re.IGNORECASE):
        return sentence
    head, tail = split_commaless_conditional(match["body"])
    if not tail or f"{head} {tail}" != match["body"]:
        return sentence
    return f"{match['cue']} {head}, {tail}"


_EITHER_OR = r"(?:o bien|o|u) [^,;.]+, (?:o bien|o|u) [^,;.]+?"  # "o bien A, o bien B", commas and all
_CONDITIONAL_SENTENCES = (
    # "Si A, B y C, D": a condition of three clauses (_list_notes)
    (re.compile(rf"{_IF_CUES} (?P<a>[^,;.]+, [^,;.]+ (?:y|e) [^,;.]+), (?:entonces )?(?P<b>[^,;.]+)"), False),
    (re.compile(rf"{_IF_CUES} (?P<a>[^,;.]+), (?:entonces )?(?P<b>[^,;.]+)"), False),
    (re.compile(r"(?:si|cuando|siempre que) (?P<a>[^,;.]+?) entonces (?P<b>[^,;.]+)"), False),  # no comma
    (re.compile(rf"{_UNLESS_CUES} (?P<a>[^,;.]+), (?P<b>[^,;.]+)"), True),
    # "Para que A, B": B is necessary for A, A → B (121 of a training split, 1 of dev_real)
    (re.compile(r"para que (?P<a>[^,;.]+), [^,;.]+"), False),
    # "B sólo cuando A" is B → A, "B siempre y cuando A" A → B; B may be "o bien C, o bien D"
    (
        re.compile(
            rf"(?P<b>{_EITHER_OR}|[^,;.]+?) (?<!solo )(?<!solamente )(?<!unicamente )(?<!y ){_IF_CUES}"
            r" (?P<a>[^,;.]+)"
        ),
        False,
    ),
    (re.compile(rf"(?P<b>{_EITHER_OR}|[^,;.]+?) {_UNLESS_CUES} (?P<a>[^,;.]+)"), True),
    # A is necessary or sufficient for B, said around B: "que A implica que B", "que A es condición
    # suficiente para que B", "basta con que A para que B", "A es condición suficiente para B", "A
    # solo si B", "A sólo cuando B" (A → B); "que B es condición necesaria para que A", "es
    # necesario que B para que A", "hay que B para A", "se debe B para A", "B es condición necesaria
    # para A", "solo si B, A", "solo cuando B, A" (A → B)
    (
        re.compile(r"que (?P<a>[^,;.]+?) (?:implica que|es condicion suficiente para que) (?P<b>[^,;.]+)"),
        False,
    ),
    (re.compile(r"basta con que (?P<a>[^,;.]+?) para que (?P<b>[^,;.]+)"), False),
    (
        re.compile(r"(?P<a>[^,;.]+?) (?:es condicion suficiente para|solo si|solo cuando) (?P<b>[^,;.]+)"),
        False,
    ),
    (
        re.compile(
            rf"(?:que (?P<b>[^,;.]+?) es condicion necesaria|es necesario que (?P<b2>{_EITHER_OR}|[^,;.]+?))"
            r" para que (?P<a>[^,;.]+)"
        ),
        False,
    ),
    (re.compile(r"(?:hay que|se debe) [^,;.]+? para (?P<a>[^,;.]+)"), False),
    (re.compile(r"[^,;.]+? es condicion necesaria para (?P<a>[^,;.]+)"), False),
    (re.compile(r"solo (?:si|cuando) (?P<b>[^,;.]+), (?P<a>[^,;.]+)"), False),
)


def conditional_antecedent_notes(sentence: str) -> list[str]:
    """The ``CONDITIONAL_ANTECEDENT_NOTE`` line of a conditional sentence without commas but the
    one after its opening condition: "Si A, (entonces) B", "A menos que A, B", "Para que A, B",
    "B si A", "B a menos que A" ("cuando", "siempre que", "en caso de que", "salvo que", …; not
    "si y solo si"), and the conditions said around their clause (``_CONDITIONAL_SENTENCES``: "que
    A implica que B", "A solo si B", "es necesario que B para que A", …) whose condition A says one
    clause (:func:`_literal_part`): its formula is A's literal (negated after "a menos que") → B's
    formula; where B is one clause or two (:func:`_part_notes`, conjunctions too) its note follows
    at slot "c", and the formula ends after it. A condition of two clauses gives
    ``CONDITIONAL_COMPOUND_NOTE`` and its compound at slot "1" (``NEGATED_COMPOUND_NOTE`` 1
    after "a menos que": ``¬(A ∨ B) → C``, so every such gold formula of two training splits,
    1,000), and a
    biconditional (``_BICONDITIONAL_SENTENCES``: "si y solo si", "equivale a", …) the same notes
    after ``BICONDITIONAL_NOTE``. The gold formula of every such sentence opens so:
    43 of data/dev_real.jsonl, 1,227 of a training split, 63 of two synthetic test splits; the
    default model answered 8 of the 66 `dev_real` answers of two runs to the first form otherwise
    ("Si se somete el agua a una temperatura de cien grados, entra en ebullición." -> ``p ∧ q``)
    and most of a test split's "A menos que A, B y no C" (``¬(p ∧ q) → ¬r``) (2026-12-05)."""
    folded = fold_text(unicodedata.normalize("NFC", sentence)).strip().rstrip(".")
    if argument_parts(sentence) is not None:
        return []
    for biconditional in _BICONDITIONAL_SENTENCES:
        match = biconditional.fullmatch(folded)
        notes = _conditional_notes(match, False) if match else []
        if notes:
            return [BICONDITIONAL_NOTE, *notes]
    if re.search(r"s[ií] y s[oó]lo s[ií]", folded):
        return []
    for pattern, flips in _CONDITIONAL_SENTENCES:
        match = pattern.fullmatch(folded)
        notes = _conditional_notes(match, flips) if match else []
        if notes:
            return notes
    return []


def _conditional_notes(match: re.Match[str], flips: bool) -> list[str]:
    """The notes of a conditional whose condition is ``match["a"]`` (negated where ``flips``) and
    consequent ``match["b"]`` (or ``"b2"``), when the condition says one clause or two."""
    said = match.groupdict()
    consequent = said.get("b") or said.get("b2")
    after = _part_notes("c", consequent, conjunctions=True) if consequent else []
    literal = _literal_part(match["a"])
    if literal is not None:
        negated = literal[0] != flips
        return [f"{CONDITIONAL_ANTECEDENT_NOTE} {NOT if negated else '+'} {' '.join(literal[1])}", *after]
    compound = _part_notes("1", match["a"], conjunctions=True) or _list_notes("1", match["a"])
    if not compound:
        return []
    negation = [f"{NEGATED_COMPOUND_NOTE} 1"] if flips else []
    return [CONDITIONAL_COMPOUND_NOTE, *negation, *compound, *after]


# "Si A, B; y si C, D": a conjunction of parts of one or two clauses (:func:`_part_notes`), its
# formula "(A → B) ∧ (C → D)", as "# conjunction parts N" and the parts' notes.
CONJUNCTION_PARTS_NOTE = "# conjunction parts"
# parts: after ";", before "y / pero si (cuando, siempre que)", and after a comma before a word of
# contrast or reason ("…, pero B", "…, sin embargo, B", "…, dado que B"; not "pero no ambos")
_CONJUNCTION_SPLIT_RE = re.compile(
    r"\s*;\s*|,? (?:y|pero) (?=(?:si|cuando|siempre que) )"
    r"|, (?=(?:pero|sin embargo|no obstante|aunque|dado que|puesto que|ya que)(?!\w)(?! no (?:ambos|ambas|los dos|las dos)))"
)
_PART_OPENER_RE = re.compile(
    r"(?:y ademas|ademas|y|pero|sin embargo|no obstante|aunque|dado que|puesto que|ya que)(?:,\s*|\s+)"
)
# "Aunque A, B", "Puesto que A, B": the reason or the concession is the first part
_REASON_FIRST_RE = re.compile(
    rf"(?:aunque|dado que|puesto que|ya que) (?P<a>{_EITHER_OR}|[^,;]+), (?P<b>[^;]+)"
)


# "Tanto si A como si B, C" is the conjunction of "si A, C" and "si B, C" (the generator's
# both_conditions cue): (A → C) ∧ (B → C).
_BOTH_CONDITIONS_RE = re.compile(r"tanto si (?P<a>[^,]+?) como si (?P<b>[^,]+), (?P<c>[^,;]+)")


def conjunction_notes(sentence: str) -> list[str]:
    """The ``CONJUNCTION_PARTS_NOTE`` line and the parts' notes of a sentence that joins two or
    three parts with ";", "y" / "pero" before a conditional ("Si estudio, no limpio y si limpio,
    no estudio"), a comma before a word of contrast or reason (", pero", ", sin embargo", ", dado
    que") or opens with one ("Aunque A, B"), every part a conditional or a disjunction of two
    clauses, a conjunction of two ("ni A ni B", "A y B"; two conjuncts where it opens the sentence,
    as the generator writes the conjunction: ``¬p ∧ ¬q ∧ (r ∨ s)`` but ``¬p ∧ (¬q ∧ ¬r)``) or one
    clause (:func:`_part_notes`), at least
    one part not one clause, and is no argument; "Tanto si A como si B, C" is read as "si A, C; si
    B, C". The default model wrote the second of such a
    chain's repeated clause with a letter of its own or the wrong sign in most of its wrong
    answers to them, ``(p → ¬q) ∧ (¬r → ¬s)`` for "Cuando Putibioe mentía, el entrenador no
    miente cada semana; y cuando no miente cada semana, …" (2026-12-05)."""
    if argument_parts(sentence) is not None:
        return []
    folded = fold_text(unicodedata.normalize("NFC", sentence)).strip().rstrip(".")
    parts = [
        _PART_OPENER_RE.sub("", part, count=1) if _PART_OPENER_RE.match(part) else part
        for part in _CONJUNCTION_SPLIT_RE.split(folded)
    ]
    reason_first = _REASON_FIRST_RE.fullmatch(folded)
    if len(parts) == 1 and reason_first:
        parts = [reason_first["a"], reason_first["b"]]
    if len(parts) == 1 and (both := _BOTH_CONDITIONS_RE.fullmatch(folded)):
        parts = [f"si {both['a']}, {both['c']}", f"si {both['b']}, {both['c']}"]
    if not 2 <= len(parts) <= 3:
        return []
    conjuncts: list[tuple[str, str]] = []  # each conjunct's note kind and what it says
    for part in parts:
        literal = _literal_part(part)
        compound = None if literal is not None else _compound_part(part, conjunctions=True)
        if literal is not None:
            conjuncts.append((ARGUMENT_LITERAL_NOTE, _said(literal)))
        elif compound is not None and compound[0] == AND and not conjuncts:  # "Ni A ni B; …" opens flat
            conjuncts += [
                (ARGUMENT_LITERAL_NOTE, _said(compound[1])),
                (ARGUMENT_LITERAL_NOTE, _said(compound[2])),
            ]
        elif compound is not None:
            conjuncts.append((ARGUMENT_COMPOUND_NOTE, _said_compound(*compound)))
        elif _CONDITIONAL_PART_RE.fullmatch(part):
            # a conditional of three clauses or more: counted, with the connectives it says
            conjuncts.append(
                (COUNTED_PART_NOTE, " ".join(sorted(said_connectives(part) & set(BINARY_CONNECTIVES))))
            )
        else:
            return []
    if all(kind == ARGUMENT_LITERAL_NOTE for kind, _ in conjuncts) and len(conjuncts) == len(parts):
        return []  # clauses only, no shape to note
    if all(kind == COUNTED_PART_NOTE for kind, _ in conjuncts):
        return []
    notes = [f"{kind} {number} {said}" for number, (kind, said) in enumerate(conjuncts, 1)]
    # a part counted takes its clauses' signs from the sentence, as where no part is noted
    counted = [clause_sign_notes(sentence)] if any(kind == COUNTED_PART_NOTE for kind, _ in conjuncts) else []
    return [
        f"{CONJUNCTION_PARTS_NOTE} {len(conjuncts)}",
        *notes,
        *(line for lines in counted for line in lines),
    ]


# A part of a conjunction that is a conditional whatever its sides ("si no C, D o E"): the mask
# keeps the conjunction's other parts and its shape, this part written as the model reads it with
# the binary connectives it says (``COUNTED_PART_NOTE`` N and the symbols).
COUNTED_PART_NOTE = "# counted part"
# Not where ", entonces" follows its consequent: "Si A, B; si B, C, entonces si A, C" is an argument.
_CONDITIONAL_PART_RE = re.compile(r"(?:si|cuando|siempre que) [^,]+, (?:entonces )?(?!.*, entonces ).+")


# "O A o no, pero B": the formula opens with A's excluded middle, "(p ∨ ¬p) ∧ ", as
# "# excluded middle KEYS"; B, of one clause or two, is the conjunction's second part
# (``CONJUNCTION_PARTS_NOTE`` 2 and B's note at slot 2).
EXCLUDED_MIDDLE_NOTE = "# excluded middle"
_EXCLUDED_MIDDLE_RE = re.compile(
    r"o (?P<a>[^,]+?) o no(?: (?P<again>[^,]+))?, pero (?!no (?:ambos|ambas|los dos|las dos))"
)
_ANYWAY_RE = re.compile(
    r"^(?:de (?:todos modos|todas formas|todas maneras),? )|,? de (?:todos modos|todas formas|todas maneras)$"
)


def excluded_middle_notes(sentence: str) -> list[str]:
    """The ``EXCLUDED_MIDDLE_NOTE`` line of a sentence that opens "O A o no(…), pero" with A one
    clause (:func:`_literal_part`): its formula opens ``(p ∨ ¬p) ∧`` with A's letter. So every such
    gold formula of a training split (512) and of data/dev_real.jsonl (2, "O Marta viene a la
    cena o no viene, pero la cena se celebra de todos modos."); the default model wrote most of a
    test split's otherwise, ``(p ∨ ¬q) ∧ ¬r`` (2026-12-05). Where the rest B ("de todos modos"
    aside) is one clause, "A y B", "ni A ni B", "o bien A, o bien B" or "A o B" (:func:`_part_notes`),
    its note follows at slot 2 of a two-part conjunction: the default model wrote
    ``(p ∨ ¬p) ∧ (¬q ∧ ¬r)`` for "…, pero ella no está en forma o David no …" in 9 answers of a
    test split (2026-12-05)."""
    folded = fold_text(unicodedata.normalize("NFC", sentence)).strip().rstrip(".")
    match = _EXCLUDED_MIDDLE_RE.match(folded)
    literal = _literal_part(match["a"]) if match else None
    if match is None or literal is None or literal[0]:
        return []
    if match["again"] and not set(content_keys(match["again"].split())) & set(literal[1]):
        return []  # "o no B": another clause, not A again
    rest = _ANYWAY_RE.sub("", folded[match.end() :].strip())
    second = _part_notes("2", rest, conjunctions=True)
    return [
        f"{EXCLUDED_MIDDLE_NOTE} {' '.join(literal[1])}",
        *([f"{CONJUNCTION_PARTS_NOTE} 2", *second] if second else []),
    ]


# A sentence that is one compound of two clauses, "A y no B", "O A, o B", "Ni A ni B": its formula
# is "L1 ∧ L2" / "L1 ∨ L2" without parentheses, then the end, as "# sentence compound SYMBOL SIGN
# KEYS / SIGN KEYS", and it has two atoms at most (one where both sides say one clause: "Hablo y
# no hablo").
SENTENCE_COMPOUND_NOTE = "# sentence compound"


def sentence_compound_notes(sentence: str) -> list[str]:
    """The ``SENTENCE_COMPOUND_NOTE`` line of a sentence that is, whole, a conjunction or a
    disjunction of two clauses (:func:`_compound_part`: "A y B", "ni A ni B", "A o B", "o A, o B"
    with A and B one clause each). The default model had answered "Los murciélagos son aves y el
    sol no brilla." with a third atom, ``p ∧ ¬q ∧ r``, and "Hablo y no hablo." with ``p ∧ p``."""
    folded = fold_text(unicodedata.normalize("NFC", sentence)).strip().rstrip(".")
    compound = _compound_part(folded, conjunctions=True)
    if compound is None or compound[0] == IMPLIES:
        return []
    return [f"{SENTENCE_COMPOUND_NOTE} {_said_compound(*compound)}"]


# "O A o B, pero no ambos" (an exclusive or): "(A ∨ B) ∧ ¬(A ∧ B)", a conjunction of two parts,
# the second negated (``NEGATED_COMPOUND_NOTE``), and two atoms.
_EXCLUSIVE_OR_RE = re.compile(r"(?P<a>[^;.]+?),? pero no (?:ambos|ambas|los dos|las dos)(?: cosas)?")


# A clause of the sentence, whose letter the formula must name once an atom defines it (the
# clause's content keys): read by FormulaMask (:func:`named_clause_notes`).
NAMED_CLAUSE_NOTE = "# named clause"
# Where a sentence has no other note, each of its clauses travels with the sign it is said with,
# as "# clause SIGN KEYS", so the polarity marks follow what the sentence says (MARKS_FOLLOW_NOTE,
# FormulaMask._mask_marks).
CLAUSE_SIGN_NOTE = "# clause"
# what a clause's sign cannot be read from: the words before it negate it without a word of its
# own ("es falso que A", "a menos que A": ¬A, but ¬(A ∧ B) keeps A positive)
_NEGATED_FROM_BEFORE_RE = re.compile(
    r"(?<!\w)(?:falso|mentira|cierto|verdad|pasa|ocurre|sucede|caso(?: de)?|menos|salvo|excepto|sin)$"
)


# What denies the clause after it whole (folded): "es falso que", "no es cierto que", …
_DENIED_BEFORE_RE = re.compile(
    r"(?<!\w)(?:es falso|es mentira|no es cierto|no es verdad|no pasa|no ocurre|no sucede|no es el caso(?: de)?) que$"
)


def clause_sign_notes(sentence: str) -> list[str]:
    """``CLAUSE_SIGN_NOTE`` lines, one per conjunct (:func:`_conjuncts`) of ``sentence`` with
    content words (folded keys): "¬" where it says one simple negation ("no", "nunca", "jamás",
    "tampoco", "≠") or follows "ni", "ni que" or the "no" of "o no", "+" where it says none; none
    for an elided conjunct (:func:`_elided_conjuncts`: "El maratón y el torneo no son…"), for one
    with another negation ("sin", "nadie", "ningún") or two, for one whose sign the words before it
    decide ("es falso que", "a menos que"), nor for a sentence that names a clause twice without
    saying it twice ("o A o no", "pero no ambos"), whose marks come from the formula.

    The model had marked "siempre que dimite" negated and "o bien nevó mañana" too, in 15 of 33
    polarity errors of a synthetic test split, and "No supo qué contestar" positive."""
    if _NAMES_A_CLAUSE_TWICE_RE.search(fold_text(sentence).lower()):
        return []
    said, spans, coordinators = _conjuncts(sentence)
    tokens = [fold_text(token).lower() for token in said]
    text = unicodedata.normalize("NFC", sentence)
    token_ends = [match.end() for match in _READING_RE.finditer(text)]
    elided = _elided_conjuncts(sentence)  # their sign is the shared predicate's
    notes = []
    for start, end in spans:
        words = tokens[start:end]
        simple = sum(word in _SIMPLE_NEGATIONS or word == "≠" for word in words)
        # "…, puesto que es falso que haya consultado con los peritos.": a clause denied whole,
        # up to a punctuation mark or the end, is negated (not "es falso que A y B", ¬(A ∧ B))
        if (
            end > start
            and not simple
            and _DENIED_BEFORE_RE.search(" ".join(tokens[max(start - 6, 0) : start]))
            and end not in coordinators
            and (end == len(tokens) or _PUNCTUATION_RE.search(text[token_ends[end - 1] : token_ends[end]]))
            and (keys := _literal_keys(words))
        ):
            notes.append(f"{CLAUSE_SIGN_NOTE} {NOT} {' '.join(keys)}")
            continue
        # "ni A", and "o no A", whose "no" belongs to the cue phrase "o no"
        before = tokens[max(start - 2, 0) : start]
        negated_before = bool(before) and (
            before[-1] in _SIMPLE_NEGATIONS | {"ni"} or before == ["ni", "que"]
        )
        keys = _literal_keys(words)
        if (
            not keys
            or (start, end) in elided
            or simple + negated_before > 1
            or (not simple and says_a_negation(" ".join(words)))
            or _NEGATED_FROM_BEFORE_RE.search(" ".join(tokens[max(start - 3, 0) : max(start - 1, 0)]))
        ):
            continue
        notes.append(f"{CLAUSE_SIGN_NOTE} {NOT if simple or negated_before else '+'} {' '.join(keys)}")
    return notes


def named_clause_notes(sentence: str) -> list[str]:
    """``NAMED_CLAUSE_NOTE`` lines, one per conjunct (:func:`_conjuncts`) of ``sentence`` with
    content keys: a declared letter whose definition holds one of them (its keys and one more word
    at most), where no letter the formula has named holds it, keeps the formula from ending
    (:class:`FormulaMask`). The default model declared "Chubruel hará los deberes el jueves" for
    "No corremos otra vez, no faltábamos a clase y Chubruel no hará los deberes el jueves" and wrote
    ``¬p ∧ ¬q``: 23 wrong answers of two runs (`dev_real` and the synthetic tests) left out such a
    letter, 2 right ones did (a sentence whose gold reading is lenient)."""
    said, spans, _ = _conjuncts(sentence)
    tokens = [fold_text(token).lower() for token in said]
    keys = (_literal_keys(tokens[start:end]) for start, end in spans)
    return [f"{NAMED_CLAUSE_NOTE} {' '.join(k)}" for k in keys if k]


def exclusive_or_notes(sentence: str) -> list[str]:
    """The ``CONJUNCTION_PARTS_NOTE`` 2 lines of an exclusive or, "o A o B, pero no ambos" ("las dos
    cosas"), whose A and B each say one clause (:func:`_compound_part`): ``(A ∨ B) ∧ ¬(A ∧ B)``,
    so every such gold formula of a training split (291) and of data/dev_real.jsonl (1). The
    default model wrote a third atom or another second part in 7 of a test split's 45 answers to
    "O la casa no estuvo limpia el año pasado o tiene calefacción el miércoles, pero no las dos
    cosas." (``(¬p ∨ q) ∧ ¬r``, 2026-12-06)."""
    folded = fold_text(unicodedata.normalize("NFC", sentence)).strip().rstrip(".")
    match = _EXCLUSIVE_OR_RE.fullmatch(folded)
    said = match["a"] if match else ""
    # "o bien A, o bien B" as it is; "o A o B" without its first "o"
    compound = _compound_part(said) or _compound_part(re.sub(r"^(?:o bien|o|u) ", "", said))
    if match is None or compound is None or compound[0] != OR:
        return []
    _, first, second = compound
    return [
        f"{CONJUNCTION_PARTS_NOTE} 2",
        f"{ARGUMENT_COMPOUND_NOTE} 1 {_said_compound(OR, first, second)}",
        f"{NEGATED_COMPOUND_NOTE} 2",
        f"{ARGUMENT_COMPOUND_NOTE} 2 {_said_compound(AND, first, second)}",
    ]


def argument_premises(sentence: str) -> int:
    """The number of premises when ``sentence`` is an argument (:func:`argument_parts`), else 0.
    Its formula is then the premises' conjunction → the conclusion, ``((p → q) ∧ ¬q) → ¬p`` (a
    premise that is itself a conjunction adds conjuncts): so every such gold formula of
    data/dev_real.jsonl (12) and of two training splits (894 and 597; 233 and 156 of them with the
    conclusion after a comma), and the default model answered 8 of dev_real's 12 ``p → q``."""
    parts = argument_parts(sentence)
    return 0 if parts is None else len(parts[0])


def _says_a_word_twice(tokens: list[str]) -> bool:
    """Whether a content word comes twice in ``tokens``, counting two forms of one verb as one
    word ("saldrá" … "sale": :func:`lexicon_verb_lemma`; a verb outside the lexicon by its first
    five letters, "gritarán" … "gritan"). An expression of arithmetic is one word, "x ≠ y" the same
    as "x = y", so the variables of "Si x = y, entonces x = 2" are not words said twice."""
    words, expressions = words_and_expressions(tokens)
    keys = content_keys(words) + expressions
    return len(set(keys)) < len(keys)


def content_keys(tokens: Iterable[str]) -> list[str]:
    """One key per content word of ``tokens`` (not :func:`not_content_words`): a verb's infinitive
    (:func:`lexicon_verb_lemma`; an infinitive of the lexicon is its own key, so "llover" and
    "llueve" share "llover"), else the word's first five letters, folded ("gritarán" and "gritan"
    share "grita"), so two forms of one word share their key."""
    skip = not_content_words()
    infinitives = _verb_forms()[1]
    return [
        lexicon_verb_lemma(low) or (low if low in infinitives else fold_text(low)[:5])
        for low in (t.lower() for t in tokens)
        if low.isalpha() and low not in skip
    ]


# Cues whose formula names a clause twice without the sentence saying it twice: the exclusive
# "pero no ambos" ((p ∨ q) ∧ ¬(p ∧ q)), "tanto si A como si B, C" ((p → r) ∧ (q → r)) and "o A o
# no" (p ∨ ¬p); folded.
_NAMES_A_CLAUSE_TWICE_RE = re.compile(
    r"(?<!\w)(?:tanto si(?!\w).*(?<!\w)como si|no (?:ambos|ambas|los dos|las dos)|o no(?=\s*(?:[,;.:]|$|pero(?!\w)))"
    # "Si A, B; si no, C" is (A → B) ∧ (¬A → C): the condition denied is named again
    r"|si no(?=\s*,)|de lo contrario|en caso contrario)(?!\w)"
)


def letters_once(sentence: str) -> bool:
    """Whether the formula of ``sentence`` names each declared letter at most once: the sentence
    says no content word twice (:func:`_says_a_word_twice`), is no argument
    (:func:`argument_premises`) and has none of the cues that name a clause twice
    (``_NAMES_A_CLAUSE_TWICE_RE``). Gold formulas that break it: 0 of data/dev_real.jsonl's 166
    such sentences, 0 of two training splits' 12,649 and 12,499 (the generator's chains, "cuando
    A, B saldrá; y si B sale, C", say B's verb twice, in two forms). The default model named a letter twice in 21 answers
    to them of 227 at each of two runs, 19 of them wrong (``(¬p ∧ q ∧ q) → ¬p`` for "Si x ≠ 2,
    entonces y > 1", ``p ∧ p`` for "Si y solo si llueve, me quedo en casa")."""
    if _says_a_word_twice(sentence_tokens(sentence)) or argument_premises(sentence):
        return False
    return _NAMES_A_CLAUSE_TWICE_RE.search(fold_text(unicodedata.normalize("NFC", sentence))) is None


def joins_clauses(sentence: str) -> bool:
    """Whether ``sentence`` joins two clauses with a connective (``CONNECTIVE_WORDS`` other than a
    negation; "y" / "e" unless between terms of arithmetic) and repeats no word of its own (as
    "Viene o no viene", "Hablo y no hablo", whose one atom is said twice): then its answer has two
    atoms at least. None of data/dev_real.jsonl's one-atom gold answers and none of a training
    split's has such a sentence; the default model answered 60 `dev_real` sentences of six runs
    with one atom where the gold has several ("Hemos de llegar allí antes, u otro recibirá el
    empleo." -> p)."""
    tokens = sentence_tokens(sentence)
    if _says_a_word_twice(tokens):
        return False
    expressions = dict(expression_spans(tokens))
    between_expressions = {end for end in expressions.values() if end + 1 in expressions}
    inside = {i for start, end in expressions.items() for i in range(start, end)}
    for index, token in enumerate(tokens):
        low = token.lower()
        if index in inside or low in ("no", "tampoco"):
            continue
        if low in CONNECTIVE_WORDS or (
            low in _AND_WORDS
            and (
                index in between_expressions
                or not _joins_terms(tokens, index)
                or _after_a_word(tokens, index)
            )
        ):
            return True
    return False


def grounded_grammar(
    sentence: str, max_atoms: int = MAX_ATOMS, polarity_marks: bool = True, rule_bounds: bool = True
) -> str:
    """:func:`answer_grammar` whose atom definitions read the sentence (see module doc).

    ``polarity_marks``: the model writes each atom's polarity mark (``NanoLogicConfig.polarity_marks``),
    so the definition of an expression negated by "≠" takes the mark; without marks the formula
    writes the negation itself and the mark stays optional.

    ``rule_bounds`` (default on): where the rule baseline can count the sentence's clauses, the
    atom list holds at least as many atoms as its reading has clauses and at most as many as the
    parts of its formula's top-level conjunction name, summed
    (:func:`nanologic.baseline.clause_bounds`). The default model had
    stopped one clause short ("mi prima suspende tritincoguel y cuetrorgra": one atom) or declared a
    fragment as a clause of its own ("Juan vive en nuestra calle y Pedro en la manzana contigua":
    ``p ∧ q ∧ r``); two default-data runs gained 6 + 7 `dev_real` answers and 3 + 2 synthetic ones
    net (2026-12-07).
    """
    if not 1 <= max_atoms <= 26:
        raise ValueError(f"max_atoms must be in 1..26, got {max_atoms}")
    sentence = with_conditional_comma(sentence)
    rules = _reading_rules(sentence, polarity_marks)
    if rules is None:
        return answer_grammar(max_atoms)
    # a conditional's condition and consequent are two clauses, whatever joins them ("Tener entrada
    # es condición necesaria para entrar al concierto" had been answered with one atom)
    conditional = conditional_antecedent_notes(sentence)
    min_atoms = max(2 if conditional or joins_clauses(sentence) else 1, relations_said(sentence))
    connectives = said_connectives(sentence)
    premises = argument_premises(sentence) if IMPLIES in connectives else 0
    once = letters_once(sentence)
    notes = (
        argument_literal_notes(sentence)
        if premises
        else conjunction_notes(sentence)
        or conditional
        or excluded_middle_notes(sentence)
        or sentence_compound_notes(sentence)
        or exclusive_or_notes(sentence)
        or clause_sign_notes(sentence)
    )
    if notes and (notes[0].startswith(SENTENCE_COMPOUND_NOTE) or NEGATED_COMPOUND_NOTE + " 2" in notes):
        max_atoms = min(max_atoms, 2)
    if notes and polarity_marks:
        notes.append(MARKS_FOLLOW_NOTE)
    notes = [*notes, *named_clause_notes(sentence)]
    if IFF in connectives:
        notes.append(f"{IFF_AT_MOST_NOTE} {biconditionals_said(sentence)}")
    if rule_bounds:
        from nanologic.baseline import clause_bounds  # the baseline imports this module

        bounds = clause_bounds(sentence)
        if bounds is not None:
            min_atoms = max(min_atoms, bounds[0])
            max_atoms = min(max_atoms, max(bounds[1], min_atoms))
            notes.append(ALL_NAMED_NOTE)
    return _grammar(rules, max_atoms, connectives, min(min_atoms, max_atoms), premises, once, notes)


# ---------------------------------------------------------------------------------------------
# PyTorch: a logits mask from the same grammar (xgrammar)
# ---------------------------------------------------------------------------------------------


class GrammarCompiler:
    """Compiles GBNF grammars for one tokenizer (xgrammar), caching the sentence-free grammar."""

    def __init__(self, tokenizer: Any, stop_ids: Sequence[int], lone_space_rule: bool = True) -> None:
        """``lone_space_rule``: the masks keep the lone-space token for a section's end
        (:func:`space_only_before_marker`); off, they allow what the GBNF allows, as llama.cpp's
        grammar sampler does."""
        try:
            import xgrammar as xgr
        except ImportError:
            from nanologic.errors import NanologicError

            raise NanologicError(
                "grammar-constrained decoding needs xgrammar (`uv pip install xgrammar`)"
            ) from None
        self.xgr = xgr
        self.vocab_size = tokenizer.vocab_size
        hf = tokenizer.to_transformers()
        info = xgr.TokenizerInfo.from_huggingface(
            hf, vocab_size=self.vocab_size, stop_token_ids=list(stop_ids)
        )
        self.compiler = xgr.GrammarCompiler(info, max_threads=1)
        self._cache: dict[str, Any] = {}
        self.token_bytes: list[bytes] = list(info.decoded_vocab)
        self._completing: dict[tuple[frozenset[str], bytes], Any] = {}
        # The lone-space token ends a section: in the training targets it comes before a marker
        # (" <|connectors|>", " <|formula|>", " <|eos|>"), another space (an empty connector
        # list) or a text the tokenizer does not join to a space (" ±" in a small vocabulary), so
        # a model's mass on it means "end here" (see :func:`space_only_before_marker`).
        self.space_id = (
            next((i for i, text in enumerate(self.token_bytes) if text == b" "), None)
            if lone_space_rule
            else None
        )
        self.after_space = _tokens_after_a_lone_space(tokenizer, self.token_bytes, self.space_id)

    def compile(self, grammar: str) -> Any:
        if grammar not in self._cache:
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[grammar] = self.compiler.compile_grammar(grammar)
        return self._cache[grammar]

    def accepts(self, grammar: str, tokens: Sequence[int]) -> bool:
        """Whether ``grammar`` accepts ``tokens`` as the start of an answer."""
        matcher = self.xgr.GrammarMatcher(self.compile(grammar))
        return all(matcher.accept_token(int(token)) for token in tokens)

    def _token_mask(self, key: tuple[frozenset[str], bytes], holds: Any) -> Any:
        """bool [V], cached under ``key``: the tokens whose bytes ``holds`` (bytes -> bool)."""
        import torch

        if key not in self._completing:
            if len(self._completing) > 256:
                self._completing.clear()
            self._completing[key] = torch.tensor([holds(text) for text in self.token_bytes], dtype=torch.bool)
        return self._completing[key]

    def tokens_naming(self, texts: frozenset[str]) -> Any:
        """bool [V]: the tokens that write one of ``texts``: the atom letters (the formula's only
        letters) or a polarity mark; special tokens such as ``<|eos|>`` hold letters but write none."""
        encoded = [text.encode() for text in texts]
        return self._token_mask(
            (texts, b"<letters>"), lambda text: not text.startswith(b"<|") and any(e in text for e in encoded)
        )

    def tokens_ending_definition(self) -> Any:
        """bool [V]: the tokens that end an atom's definition without a mark: those holding "|"
        (the next atom), ``<|connectors|>`` among the special tokens, and the plain tokens that
        spell it ("<", "<|", " <|": with ``<|connectors|>`` banned, a model wrote "<|" and went on
        to spell the marker out)."""
        connectors = CONNECTORS_MARKER.encode()

        def ends(text: bytes) -> bool:
            special = text.startswith(b"<|") and text.endswith(b"|>") and len(text) > 4
            if special:
                return text == connectors
            return b"|" in text or text.lstrip(b" ").startswith(b"<")

        return self._token_mask((frozenset(), b"<definition end>"), ends)

    def tokens_writing(self, texts: frozenset[str]) -> Any:
        """bool [V]: the tokens that write one of ``texts`` after any spaces, and nothing more (the
        openings of a formula's part: "(", "(¬", "((", whose byte-level tokens may end inside "¬")."""
        encoded = {text.encode() for text in texts}
        starts = {text[: text.find(b"\xc2") + 1] for text in encoded if b"\xc2" in text}
        return self._token_mask((texts, b"<writing>"), lambda text: text.lstrip(b" ") in encoded | starts)

    def tokens_completing(self, symbols: frozenset[str], tail: bytes) -> Any:
        """bool [V]: the tokens that, after ``tail`` (the incomplete UTF-8 end of the text so far),
        write one of ``symbols`` or start a character that only ``symbols`` among the formula's
        symbols begin with (a byte-level token may hold one byte of "↔", three bytes; "\xe2\x86"
        can only go on to → or ↔)."""
        import torch

        key = (symbols, tail)
        if key not in self._completing:
            if len(self._completing) > 256:
                self._completing.clear()
            banned = [symbol.encode() for symbol in symbols]
            allowed = [symbol.encode() for symbol in FORMULA_SYMBOLS if symbol not in symbols]

            def writes_banned(text: bytes) -> bool:
                if any(b in text for b in banned):
                    return True
                start = _incomplete_utf8_tail(text)
                return bool(start) and not any(a.startswith(start) for a in allowed)

            self._completing[key] = torch.tensor(
                [writes_banned(tail + b) for b in self.token_bytes], dtype=torch.bool
            )
        return self._completing[key]


def _tokens_after_a_lone_space(tokenizer: Any, token_bytes: list[bytes], space: int | None) -> list[int]:
    """The tokens that follow the lone-space token ``space`` where the tokenizer itself writes it:
    the markers, a space, and the first token after it when a token's text or one of its
    characters, after a space, is encoded with the space alone (" ±" as " ", "±" where no " ±"
    token exists; " Álvaro" as " " and the bytes of "Á" where no token holds "Á")."""
    if space is None:
        return []
    markers = [i for i, text in enumerate(token_bytes) if text.startswith(b"<|") and text.endswith(b"|>")]
    texts: set[str] = set()
    for piece in token_bytes:
        try:
            decoded = piece.decode().strip()
        except UnicodeDecodeError:
            continue
        if decoded and not decoded.startswith("<|"):
            texts.add(decoded)
            texts.update(decoded)
    # the format's symbols and the accented letters ("Álvaro"), which a small vocabulary may hold
    # only as bytes; letters only, whose first bytes (0xC3-0xC9) no symbol of the format shares, so
    # that " " and a byte cannot spell " ¬" or " ∧" the long way
    texts.update((*FORMULA_SYMBOLS, NEGATED_MARK, MIXED_MARK))
    texts.update(letter for letter in map(chr, range(0xC0, 0x250)) if letter.isalpha())
    following = {space, *markers}
    for text in sorted(texts):
        ids = tokenizer.encode(" " + text)
        if len(ids) > 1 and ids[0] == space:
            following.add(ids[1])
    return sorted(following)


def _incomplete_utf8_tail(data: bytes) -> bytes:
    """The bytes at the end of ``data`` that start a UTF-8 character not yet complete."""
    for back in range(1, min(3, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII): does its character fit in what follows?
            width = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            return data[-back:] if width > back else b""
    return b""


def _parentheses_missing_their_connective(formula: bytes) -> int:
    """How many of the parentheses open at the end of ``formula`` have no binary connective of
    their own yet (each needs one more operand, so one more letter)."""
    connectives = tuple(symbol.encode() for symbol in BINARY_CONNECTIVES)
    has_connective: list[bool] = []
    k = 0
    while k < len(formula):
        if formula[k : k + 1] == b"(":
            has_connective.append(False)
        elif formula[k : k + 1] == b")" and has_connective:
            has_connective.pop()
        elif has_connective and formula.startswith(connectives, k):
            has_connective[-1] = True
        k += 1
    return has_connective.count(False)


# A compound of two clauses or more as the notes give it: (its connective, (first literal, second
# literal, …)), each literal (negated, content keys).
Compound = tuple[str, tuple[tuple[bool, frozenset[str]], ...]]


def _read_compound(text: str) -> Compound:
    """The compound of a note's "SYMBOL SIGN KEYS / SIGN KEYS …" (:func:`_said`), two sides or more."""
    symbol, sides = text.split(" ", 1)
    return symbol, tuple((side.split()[0] == NOT, frozenset(side.split()[1:])) for side in sides.split(" / "))


class FormulaMask:
    """What the grammar cannot say about an answer's formula: only the declared connectives, and,
    under ``LETTERS_ONCE_NOTE``, each declared letter at most once.

    The answer grammar cannot tie the formula to the lists written before it (that would take one
    copy of the formula rules per subset of connectives or of letters), so this follows one
    answer's tokens and, once ``<|formula|>`` is written, masks the tokens that would write a
    binary connective (∧ ∨ → ↔) the connector list left out. A small model's formula otherwise
    strays into connectives no cue of the sentence gave: "Ni A ni B, aunque no C" declared ∧ and ¬
    and was written ``¬p ∧ ¬q ∧ (¬r ↔ (¬r ∧ ¬p ∧ ¬q))``. ¬ is left free: with polarity marks a
    negation may be declared in the atom list instead. With ``once`` (the grammar of a sentence
    that :func:`letters_once` holds for) it also masks a letter the formula has named, and, once
    every declared letter is named, anything that opens another operand (a binary connective, ¬,
    "("), so the formula can only close and end, and "(" where too few letters are left for it
    (two, and one for each open parenthesis still without its connective). With
    ``ARGUMENT_LITERAL_NOTE`` lines (:func:`argument_literal_notes`) it writes an argument's
    premise or conclusion of one clause with the sign that clause says and the letter whose
    definition shares the most of its words; with ``ARGUMENT_COMPOUND_NOTE`` lines one of two
    clauses as "(", the first literal, its connective, the second literal, ")"; and where every
    premise has a note, the premises' conjunction closes after the last one. The parts of a
    conjunction (``CONJUNCTION_PARTS_NOTE``) are written the same way, a conditional's antecedent
    (``CONDITIONAL_ANTECEDENT_NOTE``, or ``CONDITIONAL_COMPOUND_NOTE`` and a compound at slot "1")
    and an excluded middle (``EXCLUDED_MIDDLE_NOTE``) open the formula, a conditional's
    consequent (slot "c") ends it, ``BICONDITIONAL_NOTE`` makes that conditional's connective ↔,
    a sentence that is one compound (``SENTENCE_COMPOUND_NOTE``) is written without parentheses,
    a compound under ``NEGATED_COMPOUND_NOTE`` opens with "¬(" ("a menos que A o B", the second part
    of an exclusive or), a noted conjunction's part written whole is followed by " ∧ ",
    and in the atom list the polarity marks follow the signs these notes fix, or, in a sentence
    without them, the sign each clause is said with (``CLAUSE_SIGN_NOTE``; ``MARKS_FOLLOW_NOTE``,
    :meth:`_mask_marks`; an excluded middle's clause is said both ways, so "±"). Where no other
    note fixes the formula's shape, it may not end while a declared letter that defines a clause of
    the sentence (``NAMED_CLAUSE_NOTE``) is unnamed, or, under ``ALL_NAMED_NOTE`` (the rules
    count the clauses), any declared letter is, and ↔ is written at most as often as the
    sentence says a biconditional (``IFF_AT_MOST_NOTE``). A binary connective a note demands passes even
    where the connector list left it out. The sections are followed by the markers' text, so a
    marker spelled in plain tokens changes the section too.

    Capping each letter at ``nanologic.inference.MAX_USES_OF_A_LETTER`` uses for every sentence
    was tried and not kept: a formula that runs on is cut where it was first complete
    (:func:`nanologic.inference.answer_result`), which reads "Dado que A, cuando B, C" right
    (``p ∧ (q → r)``), while a capped formula ends complete and wrong
    (``p ∧ ((q → r) → (p → (r → q)))``): the default run's synthetic test scored 0.719 grounded
    with the cap and 0.756 without (2026-12-05).
    """

    def __init__(self, compiler: GrammarCompiler, once: bool = False) -> None:
        self.compiler = compiler
        self.once = once
        self.section = "atoms"
        self.atom_text = b""
        self.connector_text = b""
        self.formula_text = b""
        self.banned: frozenset[str] = frozenset()
        self.premises = 0  # an argument's (ARGUMENT_PREMISES_NOTE)
        self.literals: dict[str, tuple[bool, frozenset[str]]] = {}  # slot -> (negated, keys)
        self.antecedent: tuple[bool, frozenset[str]] | None = None  # CONDITIONAL_ANTECEDENT_NOTE
        self.compound_antecedent = False  # CONDITIONAL_COMPOUND_NOTE
        self.negated: frozenset[str] = frozenset()  # NEGATED_COMPOUND_NOTE: slots "¬(" opens
        # SENTENCE_COMPOUND_NOTE: (symbol, first literal, second literal)
        self.sentence: Compound | None = None
        self.connective = IMPLIES  # a conditional's: ↔ under BICONDITIONAL_NOTE
        self.marks_follow = False  # MARKS_FOLLOW_NOTE
        self.conjuncts = 0  # CONJUNCTION_PARTS_NOTE: the parts of a conjunction of compounds
        self.excluded_middle: frozenset[str] | None = None  # EXCLUDED_MIDDLE_NOTE: A's keys
        # ARGUMENT_COMPOUND_NOTE: slot -> (symbol, first literal, second literal)
        self.compounds: dict[str, Compound] = {}
        self.clauses: list[tuple[bool, frozenset[str]]] = []  # CLAUSE_SIGN_NOTE: (negated, keys)
        self.named_clauses: list[frozenset[str]] = []  # NAMED_CLAUSE_NOTE: keys
        self.most_biconditionals: int | None = None  # IFF_AT_MOST_NOTE
        self.all_named = False  # ALL_NAMED_NOTE
        self.counted: dict[str, frozenset[str]] = {}  # COUNTED_PART_NOTE: slot -> its connectives

    @classmethod
    def for_grammar(cls, compiler: GrammarCompiler, grammar: str) -> FormulaMask:
        mask = cls(compiler, once=LETTERS_ONCE_NOTE in grammar)
        mask.marks_follow = MARKS_FOLLOW_NOTE in grammar
        mask.all_named = ALL_NAMED_NOTE in grammar
        for line in grammar.splitlines():
            if line.startswith(ARGUMENT_PREMISES_NOTE + " "):
                mask.premises = int(line.split()[-1])
            elif line.startswith(ARGUMENT_LITERAL_NOTE + " "):
                slot, sign, *keys = line[len(ARGUMENT_LITERAL_NOTE) + 1 :].split()
                mask.literals[slot] = (sign == NOT, frozenset(keys))
            elif line.startswith(SENTENCE_COMPOUND_NOTE + " "):
                mask.sentence = _read_compound(line[len(SENTENCE_COMPOUND_NOTE) + 1 :])
            elif line == BICONDITIONAL_NOTE:
                mask.connective = IFF
            elif line.startswith(IFF_AT_MOST_NOTE + " "):
                mask.most_biconditionals = int(line.split()[-1])
            elif line == CONDITIONAL_COMPOUND_NOTE:
                mask.compound_antecedent = True
            elif line.startswith(NEGATED_COMPOUND_NOTE + " "):
                mask.negated |= {line.split()[-1]}
            elif line.startswith(CONDITIONAL_ANTECEDENT_NOTE + " "):
                sign, *keys = line[len(CONDITIONAL_ANTECEDENT_NOTE) + 1 :].split()
                mask.antecedent = (sign == NOT, frozenset(keys))
            elif line.startswith(CONJUNCTION_PARTS_NOTE + " "):
                mask.conjuncts = int(line.split()[-1])
            elif line.startswith(COUNTED_PART_NOTE + " "):
                slot, *symbols = line[len(COUNTED_PART_NOTE) + 1 :].split()
                mask.counted[slot] = frozenset(symbols)
            elif line.startswith(EXCLUDED_MIDDLE_NOTE + " "):
                mask.excluded_middle = frozenset(line[len(EXCLUDED_MIDDLE_NOTE) + 1 :].split())
            elif line.startswith(NAMED_CLAUSE_NOTE + " "):
                mask.named_clauses.append(frozenset(line[len(NAMED_CLAUSE_NOTE) + 1 :].split()))
            elif line.startswith(CLAUSE_SIGN_NOTE + " "):
                sign, *keys = line[len(CLAUSE_SIGN_NOTE) + 1 :].split()
                mask.clauses.append((sign == NOT, frozenset(keys)))
            elif line.startswith(ARGUMENT_COMPOUND_NOTE + " "):
                slot, compound = line[len(ARGUMENT_COMPOUND_NOTE) + 1 :].split(" ", 1)
                mask.compounds[slot] = _read_compound(compound)
        return mask

    def copy(self) -> FormulaMask:
        twin = FormulaMask(self.compiler, self.once)
        twin.premises, twin.literals, twin.compounds = self.premises, self.literals, self.compounds
        twin.antecedent, twin.marks_follow = self.antecedent, self.marks_follow
        twin.compound_antecedent, twin.connective = self.compound_antecedent, self.connective
        twin.negated, twin.clauses, twin.named_clauses = self.negated, self.clauses, self.named_clauses
        twin.sentence, twin.most_biconditionals = self.sentence, self.most_biconditionals
        twin.counted, twin.all_named = self.counted, self.all_named
        twin.excluded_middle, twin.conjuncts = self.excluded_middle, self.conjuncts
        twin.section, twin.atom_text, twin.connector_text = self.section, self.atom_text, self.connector_text
        twin.formula_text, twin.banned = self.formula_text, self.banned
        return twin

    def accept(self, token: int) -> None:
        """Follow one more token. The sections change where their marker's text is written, as
        its special token or spelled in plain tokens ("<|", "connect", …), which the grammar
        accepts as well."""
        piece = self.compiler.token_bytes[token]
        if self.section == "atoms":
            self.atom_text, marker, rest = (self.atom_text + piece).partition(CONNECTORS_MARKER.encode())
            if marker:
                self.section, self.connector_text = "connectors", b""
                piece = rest
        if self.section == "connectors":
            self.connector_text, marker, rest = (self.connector_text + piece).partition(
                FORMULA_MARKER.encode()
            )
            if marker:
                self.section, self.formula_text = "formula", b""
                items = self.connector_text.decode(errors="replace").split("|")
                declared = {item.split(":", 1)[0].strip() for item in items}
                self.banned = frozenset(BINARY_CONNECTIVES) - declared
                piece = rest
            else:
                return
        if self.section == "formula":
            self.formula_text += piece

    def _definitions(self) -> dict[str, str]:
        """Letter -> definition (with its mark, if any) of the atom list written so far."""
        # a definition holds no ":" (the grammar's word), so "x: " opens an item of the list
        return dict(re.findall(r"(?<![^\s>|])([a-z]): ([^|<]*)", self.atom_text.decode(errors="replace")))

    def mask_row(self, row: Any) -> Any:
        """``row`` (float [V'], already masked by the grammar) with the tokens this rules out at
        -inf, unless that would leave no token at all."""
        if self.section == "atoms" and self.marks_follow:
            return self._mask_marks(row)
        if self.section != "formula":
            return row
        banned_symbols = self.banned
        banned_letters: frozenset[str] = frozenset()
        if self.once:
            declared = frozenset(self._definitions())
            named = frozenset(re.findall(r"[a-z]", self.formula_text.decode(errors="replace")))
            banned_letters = named
            unnamed = len(declared - named)
            if declared and unnamed == 0:
                banned_symbols = banned_symbols | {*BINARY_CONNECTIVES, NOT, "("}
            elif unnamed < 2 + _parentheses_missing_their_connective(self.formula_text):
                # a new "(" holds two letters, and every open one still to write its connective
                # one more: without this the untrained and the default model ran "((((…" to the
                # token limit
                banned_symbols = banned_symbols | {"("}
        openings: frozenset[str] = frozenset()
        noted: tuple[frozenset[str], frozenset[str], frozenset[str]] | None = None
        formula = self.formula_text.decode(errors="replace")
        if self.antecedent is not None:
            noted = (*self._antecedent_bans(), frozenset())
            if self.connective in formula and ("c" in self.literals or "c" in self.compounds):
                noted = self._argument_literal_bans()  # the consequent (:func:`conditional_antecedent_notes`)
        if self.excluded_middle is not None and (not self.conjuncts or _conjunct_slot(formula)[0] == "1"):
            noted = self._excluded_middle_bans()
        elif (self.literals or self.compounds) and self.antecedent is None:
            noted = self._argument_literal_bans()
        elif self.sentence is not None:
            noted = self._sentence_bans()
        if noted is None and (
            self._leaves_a_letter_unnamed(formula) or self._leaves_a_clause_unnamed(formula)
        ):
            banned_symbols = banned_symbols | {"<|eos|>"}
        if noted is not None:
            more_symbols, more_letters, openings = noted
            demanded = frozenset(BINARY_CONNECTIVES) - more_symbols
            if len(demanded) == 1:  # the sentence's shape needs it, declared in the connector list or not
                banned_symbols = banned_symbols - demanded
            banned_symbols, banned_letters = banned_symbols | more_symbols, banned_letters | more_letters
        if self.most_biconditionals is not None and formula.count(IFF) >= self.most_biconditionals:
            banned_symbols = banned_symbols | {IFF}
        if not banned_symbols and not banned_letters and not openings:
            return row
        tail = _incomplete_utf8_tail(self.formula_text)
        banned = self.compiler.tokens_completing(banned_symbols, tail)
        if banned_letters:
            banned = banned | self.compiler.tokens_naming(banned_letters)
        if openings:
            banned = banned | ~self.compiler.tokens_writing(openings)
        return _without(row, banned)

    def _leaves_a_letter_unnamed(self, formula: str) -> bool:
        """Under ``ALL_NAMED_NOTE``, whether a declared letter is not in the ``formula`` (so far)."""
        return self.all_named and bool(self._definitions().keys() - set(re.findall(r"[a-z]", formula)))

    def _leaves_a_clause_unnamed(self, formula: str) -> bool:
        """Whether a declared letter the ``formula`` (so far) does not name defines a clause of
        ``NAMED_CLAUSE_NOTE`` (holds its keys, one more word at most) that no named letter's
        definition holds."""
        if not self.named_clauses:
            return False
        named = set(re.findall(r"[a-z]", formula))
        keys = {letter: _definition_keys(d) for letter, d in self._definitions().items()}
        return any(
            _holds(keys[letter], clause) and not any(_holds(keys[n], clause) for n in named if n in keys)
            for letter in keys.keys() - named
            for clause in self.named_clauses
        )

    def _argument_literal_bans(self) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
        """(symbols, letters, the openings the next token must write, or none) to ban where the
        formula is at a premise or conclusion of an argument, or a part of a conjunction
        (``self.conjuncts``), of one clause
        (``self.literals``): the sign the clause says (¬ first where it negates, no ¬ where it does
        not, no "(") and a letter whose definition shares a content word with it (any declared
        letter where none does); or of two (``self.compounds``): "(", the first literal, the
        compound's connective, the second literal, ")". An argument of several premises opens with
        the conjunction's "(" and what its first premise's opening allows in the same token
        (" ((¬" is one token: the model wrote ``((¬p ∨ ¬q) ∧ ¬p) → ¬q`` for "A o no B. No A. …")."""
        free = frozenset[str]()
        formula = self.formula_text.decode(errors="replace")
        conditional = self.antecedent is not None or self.compound_antecedent
        premises = self.premises or (1 if conditional else 0)  # a conditional: A → B
        where = (
            _conjunct_slot(formula) if self.conjuncts else _argument_slot(formula, premises, self.connective)
        )
        if where is None:
            if self.premises > 1 and not formula.strip() and ("1" in self.literals or "1" in self.compounds):
                return free, free, frozenset("(" + opening for opening in self._openings("1") | {""})
            return free, free, free
        slot, written = where
        declared = frozenset(self._definitions())
        text = written.replace(" ", "")
        if slot in self.literals:
            written_whole = re.search(r"[a-z]", text) is not None
        elif self.conjuncts and slot not in self.compounds:  # a part counted, not noted
            written_whole = _closes_a_group(text)
        else:
            written_whole = ")" in text
        # the last part of a conjunction, or a conditional's consequent: the formula ends
        if written_whole and (slot == str(self.conjuncts) or (slot == "c" and conditional)):
            return frozenset({"(", NOT, *BINARY_CONNECTIVES}), declared, free
        if written_whole and self.conjuncts and int(slot) < self.conjuncts:  # then " ∧ " and the next
            return frozenset(BINARY_CONNECTIVES) - {AND} | {"(", ")", NOT, "<|eos|>"}, declared, free
        if written_whole and slot == "1" and premises == 1:  # A, then " → " and B
            return (
                frozenset(BINARY_CONNECTIVES) - {self.connective} | {"(", ")", NOT, "<|eos|>"},
                declared,
                free,
            )
        last = slot == str(self.premises) and self.premises > 1
        if (
            written_whole
            and last
            and all(str(n) in self.literals or str(n) in self.compounds for n in range(1, self.premises + 1))
        ):
            # each premise is one conjunct: the conjunction closes after the last ("(p ∧ p ∧ …)")
            return frozenset({"(", NOT, " ", *BINARY_CONNECTIVES}), declared, free
        # a conditional's consequent is another clause than its condition, even where they say one
        # verb ("En caso de que la célula creciera, crece.", "Siempre que el Rayo ganó la liga, no
        # gana la liga y …": two atoms)
        condition = re.search(r"[a-z]", formula) if slot == "c" and self.antecedent is not None else None
        avoid = condition[0] if condition else ""
        if slot in self.literals:
            return *self._literal_bans(self.literals[slot], written, avoid), free
        if slot in self.counted:  # inside the part, only the connectives it says
            return frozenset(BINARY_CONNECTIVES) - self.counted[slot], free, free
        if slot not in self.compounds:
            return free, free, free
        compound = self.compounds[slot]
        if slot in self.negated:  # "¬(" opens it, in one token or two
            if not text:
                openings = self._openings(slot)
                return frozenset(BINARY_CONNECTIVES), declared, frozenset({NOT, *(NOT + o for o in openings)})
            if text == NOT:
                return frozenset(BINARY_CONNECTIVES) | {NOT}, declared, self._openings(slot)
            if not text.startswith(NOT):
                return free, free, free  # written another way
            text = text[1:]
        if not text:  # "(" opens it, in a token of its own or as "(¬"
            return (
                frozenset(BINARY_CONNECTIVES) | (free if compound[1][0][0] else {NOT}),
                declared,
                self._openings(slot),
            )
        if not text.startswith("(") or ")" in text:
            return free, free, free  # written another way, or closed
        return *self._compound_bans(compound, text[1:], closes=True, avoid=avoid), free

    def _openings(self, slot: str) -> frozenset[str]:
        """What a noted part at ``slot`` may open with in one token: a compound "(" (and "(¬" where
        its first literal is negated), a literal nothing or "¬" (where it is negated)."""
        if slot in self.compounds:
            return frozenset({"(", "(" + NOT} if self.compounds[slot][1][0][0] else {"("})
        if slot in self.literals:
            return frozenset({NOT} if self.literals[slot][0] else set())
        return frozenset()

    def _mask_marks(self, row: Any) -> Any:
        """``row`` with the tokens at -inf that would give the definition being written a polarity
        mark against the noted literals whose words it holds (all of them; the fullest of them where
        they disagree): no "¬" for a clause said positive, no end without a mark ("¬" or "±",
        since the formula may say it positive elsewhere) for a clause said negated, "±" for one
        said both ways. Decoding gives the formula's literals the marks' signs
        (:func:`nanologic.data.apply_polarity`), so a sign the formula mask fixed was undone by a
        mark: "Lucía aprobará el curso a menos que suspenda el examen final" was decoded
        ``¬q → p``, then read ``q → p``. Gold answers it rules out: none of data/dev_real.jsonl nor of
        a training split's 894 arguments, 1 of its 1,211 conjunctions of conditionals (the
        generator's "el pantano no estuvo helado" … "estará helado", one verb in two tenses).
        A definition of two content words or more holds a clause too where it has all of its keys
        but one: a coordinated side written short ("Chefogalo un pastel" of "Chefogalo y el
        profesor no preparan un pastel" had been left unmarked, so ``¬q`` was read ``q``)."""
        definitions = list(self._definitions().values())
        current = definitions[-1].strip() if definitions else ""
        if not current or current.endswith((NEGATED_MARK, MIXED_MARK)):
            return row
        keys = _definition_keys(current)
        said = [self.antecedent] if self.antecedent is not None else []
        said += [*self.literals.values()] + [side for _, sides in self.compounds.values() for side in sides]
        said += [*self.sentence[1]] if self.sentence is not None else []
        said += self.clauses
        if self.excluded_middle is not None:  # "O A o no": A said both ways, so "±"
            said += [(False, self.excluded_middle), (True, self.excluded_middle)]

        # a clause an earlier definition holds is no longer this one's ("el Rayo gana la liga"
        # after "el Rayo ganó la liga": one verb, two tenses)
        earlier = [_definition_keys(d) for d in definitions[:-1]]
        held = [
            (literal, negated)
            for negated, literal in said
            if self._holds_said(keys, literal, short_anywhere=True)
            and not any(_holds(words, literal) for words in earlier)
        ]
        if not held:
            return row
        fullest = {
            sign: max((literal for literal, negated in held if negated == sign), key=len, default=frozenset())
            for sign in (True, False)
        }
        size = {sign: len(literal) for sign, literal in fullest.items()}
        # one clause said with both signs (an argument's), in an argument also with its subject
        # once elided ("Fidel votará … o no …. No votará …"; in a chain "Siempre que éramos
        # reelegidos, Raquel no es reelegida" are two clauses): "±"
        smaller, larger = sorted(fullest.values(), key=len)
        elided = self.premises > 0 and smaller and smaller <= larger and len(larger - smaller) <= 1
        if size[True] == size[False] or elided:
            banned = self.compiler.tokens_ending_definition() | self.compiler.tokens_naming(
                frozenset({NEGATED_MARK})
            )
        elif size[True] > size[False]:  # the fullest clause it holds is said negated: a mark
            banned = self.compiler.tokens_ending_definition()
        else:  # "será positivo" may be "el número es positivo" or another subject's clause
            banned = self.compiler.tokens_naming(frozenset({NEGATED_MARK}))
        return _without(row, banned)

    def _holds_said(
        self, words: AbstractSet[str], clause: AbstractSet[str], short_anywhere: bool = False
    ) -> bool:
        """Whether a definition's content ``words`` hold a noted ``clause`` (:func:`_holds`), or,
        in an argument (in any sentence with ``short_anywhere``: the polarity marks), all of it but
        one word, its subject said once ("O veinte es un número par, o es un número impar. …
        veinte no es un número impar": "es un número impar" is the clause denied)."""
        short = (self.premises > 0 or short_anywhere) and len(words) > 1 and _holds(clause, words)
        return _holds(words, clause) or short

    def _excluded_middle_bans(self) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
        """(symbols, letters, the openings the next token must write, or none) while the formula
        writes the excluded middle it opens with (``self.excluded_middle``): "(", A's letter, " ∨ ¬",
        the same letter, ")", " ∧ "."""
        assert self.excluded_middle is not None
        text = self.formula_text.decode(errors="replace").replace(" ", "")
        declared = frozenset(self._definitions())
        binary = frozenset(BINARY_CONNECTIVES)
        if not text:
            return binary | {NOT}, declared, frozenset({"("})
        match = re.fullmatch(r"\((?:([a-z])(?:(∨)(?:(¬)(?:([a-z])(\))?)?)?)?)?", text)
        if match is None:
            if text.startswith("(") and re.fullmatch(r"\(([a-z])∨¬\1\)", text[: text.find(")") + 1]):
                after = text[text.find(")") + 1 :]
                if not after:  # " ∧ " and nothing else: no end, no other connective
                    return binary - {AND} | {")", "<|eos|>"}, declared, frozenset()
            return frozenset(), frozenset(), frozenset()
        letter, disjunction, negation, again, _ = match.groups()
        if letter is None:
            return self._literal_bans((False, self.excluded_middle), "") + (frozenset(),)
        if disjunction is None:
            return binary - {OR} | {"(", ")", NOT}, declared, frozenset()
        if negation is None:
            return binary | {"(", ")"}, declared, frozenset()
        if again is None:
            return binary | {"(", ")", NOT}, declared - {letter}, frozenset()
        return binary | {"(", NOT, " "}, declared, frozenset()  # only ")"

    def _sentence_bans(self) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
        """(symbols, letters, openings) while the formula writes a sentence that is one compound
        (``self.sentence``), without parentheses: :meth:`_compound_bans`, then the end."""
        assert self.sentence is not None
        text = self.formula_text.decode(errors="replace").replace(" ", "")
        return *self._compound_bans(self.sentence, text, closes=False), frozenset()

    def _compound_bans(
        self, compound: Compound, body: str, closes: bool, avoid: str = ""
    ) -> tuple[frozenset[str], frozenset[str]]:
        """(symbols, letters) to ban where ``body`` of a compound of two clauses or more is written:
        the first literal, the compound's connective, the second literal (and so on), then ")" where
        it ``closes`` (a parenthesised part; a space there would open another connective, which a
        greedy model took), else the end. Each literal takes another letter than those before it, but in a whole
        sentence both sides saying one clause ("Hablo y no hablo") take one; in a part, such sides
        are the generator's one verb in two tenses, two atoms ("Si el proyecto se cancela, el
        proyecto se canceló."). Neither takes a letter of ``avoid``."""
        symbol, (first, *rest) = compound
        declared = frozenset(self._definitions())
        letters = re.findall(r"[a-z]", body)
        if not letters:
            return self._literal_bans(first, body, avoid)
        if body.count(symbol) < len(letters) < len(compound[1]):  # a side written: the connective
            return frozenset(BINARY_CONNECTIVES) - {symbol} | {"(", ")", NOT, "<|eos|>"}, declared
        if body.count(symbol) == len(letters):  # the next side
            after = body.rsplit(symbol, 1)[-1]
            if len(letters) == 1 and not closes and first[1] == rest[0][1]:  # one clause said twice
                return self._literal_bans((rest[0][0], frozenset()), after)[0], declared - {letters[0]}
            return self._literal_bans(rest[len(letters) - 1], after, avoid + "".join(letters))
        return frozenset({"(", NOT, *BINARY_CONNECTIVES} | ({" "} if closes else {")"})), declared

    def _antecedent_bans(self) -> tuple[frozenset[str], frozenset[str]]:
        """(symbols, letters) to ban while the formula writes a conditional's antecedent
        (``self.antecedent``): its literal, then " → " (" ↔ " for a biconditional; the answer may not
        end there: the end token is banned as the symbol ``<|eos|>``)."""
        formula = self.formula_text.decode(errors="replace")
        if any(symbol in formula for symbol in BINARY_CONNECTIVES):
            return frozenset(), frozenset()
        if not re.search(r"[a-z]", formula):
            assert self.antecedent is not None
            return self._literal_bans(self.antecedent, formula)
        return frozenset(BINARY_CONNECTIVES) - {self.connective} | {"(", ")", NOT, "<|eos|>"}, frozenset(
            self._definitions()
        )

    def _literal_bans(
        self, literal: tuple[bool, frozenset[str]], written: str, avoid: str = ""
    ) -> tuple[frozenset[str], frozenset[str]]:
        """(symbols, letters) to ban for one clause's ``literal`` (negated, content keys), of which
        ``written`` is written: its sign, then the first letter whose definition holds the clause
        as :meth:`_holds_said` reads it, else a letter whose definition shares the most content words
        with it and, of those, holds the fewest others, none of the letters of ``avoid`` (any
        declared letter where none shares one).
        "Entonces, veinte no es un número impar" shares two words with "veinte es un número par"
        and with "es un número impar", and is the second, its subject said once."""
        if re.search(r"[a-z]", written):
            return frozenset(), frozenset()  # its letter is written
        negated, keys = literal
        definitions = self._definitions()
        declared = frozenset(definitions)
        if negated and NOT not in written:
            return frozenset({"("}), declared
        words = {
            letter: frozenset(_definition_keys(definition)) for letter, definition in definitions.items()
        }
        shared = {
            letter: len(keys & words[letter]) for letter in words if letter not in avoid
        } or dict.fromkeys(avoid, 1)
        holding = sorted(letter for letter in shared if self._holds_said(words[letter], keys))
        if holding:
            return frozenset({"(", NOT}), declared - {holding[0]}
        most = max(shared.values())
        closest = [letter for letter, count in shared.items() if count == most and count]
        fewest_others = min((len(words[letter] - keys) for letter in closest), default=0)
        sharing: dict[frozenset[str], str] = {}  # a clause declared twice, as the model did ("Montse
        for letter in sorted(letter for letter in closest if len(words[letter] - keys) == fewest_others):
            # cantará tango" … "Montse canta tango"), takes its first letter
            sharing.setdefault(words[letter], letter)
        return frozenset({"(", NOT}), declared - (frozenset(sharing.values()) or declared)


def _without(row: Any, banned: Any) -> Any:
    """``row`` (float [V']) with the ``banned`` tokens (bool [V], V <= V') at -inf, unless that
    would leave no token at all (then ``row`` as it is: the grammar alone decides)."""
    banned = banned.to(row.device)
    masked = row.clone()
    masked[: banned.numel()] = masked[: banned.numel()].masked_fill(banned, float("-inf"))
    return masked if bool(masked.isfinite().any()) else row


def _holds(words: AbstractSet[str], clause: AbstractSet[str]) -> bool:
    """Whether a definition's content ``words`` hold a noted ``clause``'s keys and little more:
    an elided subject (one word) at most. "el senado bajaba los impuestos el lunes" holds the words
    of "baje los impuestos" but is not it."""
    return clause <= words and len(words - clause) <= 1


def _definition_keys(definition: str) -> set[str]:
    """:func:`_literal_keys` of an atom's ``definition`` as written (folded words)."""
    return set(_literal_keys(sentence_tokens(fold_text(definition))))


def _closes_a_group(text: str) -> bool:
    """Whether ``text`` (a formula's part, spaces removed) is one parenthesised group, "¬" before
    it or not, closed at its end: "(¬r→(s∨t))"."""
    body = text.removeprefix(NOT)
    if not body.startswith("("):
        return False
    depth = 0
    for k, ch in enumerate(body):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return k == len(body) - 1
    return False


def _conjunct_slot(formula: str) -> tuple[str, str]:
    """Where a conjunction's ``formula`` (written so far) is: (the part's number, the text written
    there); parts are separated by ∧ outside parentheses."""
    depth, start, slot = 0, 0, 1
    for k, ch in enumerate(formula):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == AND and depth == 0:
            slot, start = slot + 1, k + 1
    return str(slot), formula[start:]


def _argument_slot(formula: str, premises: int, connective: str = IMPLIES) -> tuple[str, str] | None:
    """Where an argument's ``formula`` (written so far) is: (the premise's number or "c" for the
    conclusion, the text written there), or None between them. The formula is ``P1 → C`` with one
    premise, ``(P1 ∧ P2 ∧ …) → C`` with several (:func:`_formula_rules`); a biconditional's
    ``connective`` is ↔ (``P1 ↔ C``)."""
    depth, start = 0, 0
    slot: str | None = "1" if premises == 1 else None
    for k, ch in enumerate(formula):
        if ch == "(":
            depth += 1
            if premises > 1 and depth == 1 and slot is None:
                slot, start = "1", k + 1
        elif ch == ")":
            depth -= 1
            if premises > 1 and depth == 0 and slot not in (None, "c"):
                slot = "→"
        elif ch == AND and premises > 1 and depth == 1 and slot not in (None, "→", "c"):
            slot, start = str(int(slot) + 1), k + 1
        elif ch == connective and depth == 0 and slot in ("1", "→"):
            slot, start = "c", k + 1
    return None if slot in (None, "→") else (slot, formula[start:])


def space_only_before_marker(
    compiler: GrammarCompiler, matcher: Any, connectives: FormulaMask, row: Any, scratch: Any
) -> Any:
    """``row`` (float [V'], already masked by ``matcher``'s grammar and ``connectives``) with the
    lone-space token at -inf where neither allows a marker or another space right after it.

    xgrammar allows any tokenization of the grammar's text, so where a word must follow, " " then
    "ha", "b", "l", "áis" spells " habláis" as well as " habl" + "áis" does. The model, which saw
    the lone space only before ``<|connectors|>``, ``<|formula|>`` or ``<|eos|>`` (or another space,
    before an empty connector list), puts its "the list ends here" mass on it; where the masks
    then asked for more, it spelt a word a byte at a time ("Hablo y no hablo." → ``p: Hablo
    habláis habláis habla``). ``scratch`` is a one-row xgrammar bitmask (int32 [1, ceil(V/32)])
    the check overwrites; ``matcher`` and ``connectives`` are left as they were.
    """
    import torch

    space = compiler.space_id
    if space is None or space >= row.numel() or not bool(row[space].isfinite()):
        return row
    if not matcher.accept_token(space):
        return row
    matcher.fill_next_token_bitmask(scratch, 0)
    matcher.rollback(1)
    words = scratch[0].tolist()
    if any(words[t // 32] >> (t % 32) & 1 for t in compiler.after_space):
        # the next token's row as decoding would mask it, every token the grammar allows at 0
        after = _apply_bitmask(compiler.xgr, scratch, torch.zeros(1, row.numel()), compiler.vocab_size)[0]
        following = connectives.copy()
        following.accept(space)
        if bool(following.mask_row(after)[compiler.after_space].isfinite().any()):
            return row
    row = row.clone()
    row[space] = float("-inf")
    return row


class GrammarLogitsProcessor:
    """Masks each row's logits to the tokens its grammar allows next (for ``NanoLogic.generate``).

    One matcher per row; called as ``processor(sequence [B, T0 + t], logits [B, V])``: it first
    feeds each row's newest token (the prompt, ``T0`` tokens, is not part of the answer), then
    applies the bitmask. Rows whose grammar has accepted the stop token are left unmasked (their
    token is ignored by the caller). Greedy decoding under the mask is the highest-logit token the
    grammar allows. Besides the grammar: :class:`FormulaMask`'s rules and, unless the compiler was
    built without it, the lone-space token only where a section may end
    (:func:`space_only_before_marker`).
    """

    def __init__(
        self,
        compiler: GrammarCompiler,
        grammars: Iterable[str],
        prompt_len: int,
        answers: Sequence[Sequence[int]] | None = None,
    ) -> None:
        xgr = compiler.xgr
        self.xgr = xgr
        grammars = list(grammars)
        self.matchers = [xgr.GrammarMatcher(compiler.compile(g)) for g in grammars]
        self.connectives = [FormulaMask.for_grammar(compiler, g) for g in grammars]
        self.prompt_len = prompt_len
        self.vocab_size = compiler.vocab_size
        self.bitmask = xgr.allocate_token_bitmask(len(self.matchers), self.vocab_size)
        self.compiler = compiler
        self.scratch = xgr.allocate_token_bitmask(1, self.vocab_size)
        for i, answer in enumerate(answers or []):  # tokens a row has written before decoding resumes
            for token in answer:
                self._accept(i, int(token))

    def _accept(self, row: int, token: int) -> None:
        if not self.matchers[row].is_terminated():
            self.matchers[row].accept_token(token)
            self.connectives[row].accept(token)

    def __call__(self, sequence: Any, logits: Any) -> Any:
        generated = sequence.size(1) - self.prompt_len
        if generated > 0:
            for row, token in enumerate(sequence[:, -1].tolist()):
                self._accept(row, int(token))
        self.bitmask.fill_(-1)  # all allowed
        for i, matcher in enumerate(self.matchers):
            if not matcher.is_terminated():
                matcher.fill_next_token_bitmask(self.bitmask, i)
        masked = _apply_bitmask(self.xgr, self.bitmask, logits, self.vocab_size)
        for i, (matcher, connectives) in enumerate(zip(self.matchers, self.connectives)):
            if not matcher.is_terminated():
                masked[i] = space_only_before_marker(
                    self.compiler, matcher, connectives, connectives.mask_row(masked[i]), self.scratch
                )
        return masked


def _apply_bitmask(xgr: Any, bitmask: Any, logits: Any, vocab_size: int) -> Any:
    """float32 copy of ``logits`` [B, V'] with the tokens ``bitmask`` forbids (and any padded
    embedding row past the tokenizer's ``vocab_size``) at -inf."""
    import torch

    masked = logits[:, :vocab_size].float().contiguous()
    xgr.apply_token_bitmask_inplace(masked, bitmask.to(masked.device))
    if logits.size(1) > vocab_size:  # padded embedding rows are never allowed
        pad = torch.full_like(logits[:, vocab_size:], float("-inf"), dtype=masked.dtype)
        masked = torch.cat([masked, pad], dim=1)
    return masked


class BeamGrammarMask:
    """The grammar of one sentence for a beam search: one matcher per live beam.

    Calling it sets the tokens a beam's grammar forbids to -inf; :meth:`advance` follows the
    beams the search kept (each new beam forks its parent's matcher and accepts its token), so
    every beam is masked by the state of its own prefix, with the rules
    :class:`GrammarLogitsProcessor` adds to the grammar.
    """

    def __init__(self, compiler: GrammarCompiler, grammar: str) -> None:
        self.xgr = compiler.xgr
        self.vocab_size = compiler.vocab_size
        self.matchers = [self.xgr.GrammarMatcher(compiler.compile(grammar))]
        self.connectives = [FormulaMask.for_grammar(compiler, grammar)]
        self.compiler = compiler
        self.scratch = self.xgr.allocate_token_bitmask(1, self.vocab_size)

    def advance(self, parents: Sequence[int], tokens: Sequence[int]) -> None:
        """Beam i continues beam ``parents[i]`` with ``tokens[i]``."""
        matchers, connectives = [], []
        for parent, token in zip(parents, tokens):
            matcher = self.matchers[parent].fork()
            matcher.accept_token(int(token))
            matchers.append(matcher)
            connectives.append(self.connectives[parent].copy())
            connectives[-1].accept(int(token))
        self.matchers, self.connectives = matchers, connectives

    def __call__(self, scores: Any) -> Any:
        """float32 [beams, V'] scores with the forbidden tokens at -inf (V' >= the tokenizer's V),
        :class:`FormulaMask` included."""
        bitmask = self.xgr.allocate_token_bitmask(len(self.matchers), self.vocab_size)
        for i, matcher in enumerate(self.matchers):
            matcher.fill_next_token_bitmask(bitmask, i)
        masked = _apply_bitmask(self.xgr, bitmask, scores, self.vocab_size)
        for i, (matcher, connectives) in enumerate(zip(self.matchers, self.connectives)):
            masked[i] = space_only_before_marker(
                self.compiler, matcher, connectives, connectives.mask_row(masked[i]), self.scratch
            )
        return masked
