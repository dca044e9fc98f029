"""The format's normalisations of an atom definition, applied to a model's answer after decoding.

A definition is an affirmative clause in the indicative with its subject written out (see the
package README, "format"): "Si Lucía suspendiera el examen, repetirá curso" defines
``p: Lucía suspendió el examen``, and "la alcaldesa apoya la moción y firma el plan" defines
``q: la alcaldesa firma el plan``. The grounded grammar lets the model write these forms
(:func:`nanologic.grammar.verb_variants`, its jump back), but a small model often copies the
sentence's words as they stand instead. :func:`normalize_definitions` does the rewrites the
format asks for where a rule can tell them apart:

- a subjunctive form of a lexicon verb that is not also an indicative form (and not a noun after a
  determiner: "el viaje") becomes the indicative of the same person, as the generator's
  ``INDICATIVE_OF_SUBJUNCTIVE`` maps tenses;
- a perfect's auxiliary before a finite verb is dropped ("Rodrigo ha lleva" -> ``Rodrigo
  lleva``), "hay" before a participle is "ha", "ha" opening a clause before a noun is "hay";
- a present or imperfect written for a verb the sentence says only in the imperfect subjunctive
  after "que" becomes the preterite ("Ya sea que el dragón ganara" -> ``el dragón ganó``);
- a third-person plural verb after a singular subject (a predicate shared by several subjects:
  "Ni Valeria ni Ana piden la cuenta" defines ``Valeria pide la cuenta``) takes the singular, and
  a complement of the lexicon that agrees ("estar | cansad@", "ser | médic@") takes a singular
  subject's gender and number ("Ni Luis ni Marta son médicos" defines ``Marta es médica``; a
  first name's gender as the generator reads it: the lexicon's, else "-a" feminine);
- a singular verb after a plural subject ("los gatos", not a coordination) takes the plural where
  the sentence does not say that form ("los gatos es mascotas" -> ``los gatos son mascotas``),
  and loses the subject, lent by the model, where the sentence says it of another subject ("los
  vecinos llegaba a la meta" -> ``llegaba a la meta``);
- a third-person subject the model lent to a verb that cannot take it (first or second person
  singular; plural, where the sentence coordinates no other subject with it; impersonal) is
  dropped ("Ricardo entrené este mes" -> ``entrené este mes``, "Hugo ha habido elecciones" ->
  ``ha habido elecciones``);
- a definition that starts with a verb the sentence says right after its subject (a pronoun, a
  name, a determiner and its noun) takes that subject ("está afinado" for "… y Tiso no está
  afinado" -> ``Tiso está afinado``);
- a definition that starts with a third-person verb whose subject the sentence leaves out (the
  verb follows a cue, a comma or the sentence start) takes the subject of the nearest earlier
  definition (without a reflexive pronoun: "yo me quedo" lends "yo"), when their number agrees;
- a definition without a verb that the sentence says after "y", "o" or "ni" takes the verb of the
  nearest earlier definition, when its complement opens alike (a predicate shared by a
  coordination: "Silvia lee el libro de lengua y el de medicina", "Nicanor Parra es escritor y
  matemático" defines ``Nicanor Parra es matemático``);
- a definition cut short within a predicate its subject shares with a coordinated subject is
  completed from the other subject's definition ("Ni Mogrecuee ni Ignacio pierden las elecciones":
  ``Mogrecuee pierde`` -> ``Mogrecuee pierde las elecciones``);
- a preposition the sentence says between two words that the definition puts side by side is
  put back (``desde casa Fiacel`` -> ``desde casa en Fiacel`` for "desde casa en Fiacel").

A run of words written twice in a row is written once ("me mojo me mojo" -> "me mojo").
Only the generator's verb lexicon and the common verbs of ``lexicon.READING_VERBS`` are known
(:mod:`nanologic.conjugation`); other words stay.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence

from nanologic.conjugation import INDICATIVE_OF_SUBJUNCTIVE, TENSES, conjugate
from nanologic.data import has_words, literal_polarity, normalize_text
from nanologic.errors import NanologicError
from nanologic.logic import Node, rename, to_ascii, to_unicode, try_parse
from nanologic.logic import atoms as formula_letters


def word_set(text: str) -> frozenset[str]:
    """The space-separated words of ``text`` as a set (the word lists here and in the grammar)."""
    return frozenset(text.split())


# Words that carry no clause of their own: articles, prepositions, pronouns and the like, which a
# definition may drop ("ya", "también", "sí"); the cue inventory's words are added to them.
FUNCTION_WORDS = word_set(
    "el la los las lo le les un una unos unas de del al a en que y e por "
    "para con se su sus es son ya también sí tan muy me te nos os mi mis tu tus"
)


@functools.lru_cache(maxsize=1)
def not_content_words() -> frozenset[str]:
    """Words that are never the content of a definition: function words, negations and
    sentence-level connectives (:data:`nanologic.grammar.CONNECTIVE_WORDS`), the cue inventory's
    words (:data:`nanologic.generator.CUES`); lower case."""
    from nanologic.generator import CUES
    from nanologic.grammar import CONNECTIVE_WORDS

    cue_words = {w.lower() for cues in CUES.values() for cue in cues for w in re.findall(r"\w+", cue)}
    return FUNCTION_WORDS | CONNECTIVE_WORDS | frozenset(cue_words)


_DETERMINERS = word_set(
    "el la los las un una unos unas del al mi mis tu tus su sus este esta estos estas ese esa cada otro otra"
)
_PLURAL_DETERMINERS = word_set("los las unos unas mis tus sus estos estas nuestros nuestras")
_SINGULAR_DETERMINERS = word_set("el la un una mi tu su este esta ese esa aquel aquella cada")
_NOT_NAMES = word_set(
    "ellos ellas ustedes nosotros nosotras vosotros vosotras todos todas muchos muchas algunos algunas "
    "varios varias ambos ambas pocos pocas otros otras unos unas "
    # adverbs that open a sentence with a capital ("Hoy llegan los invitados")
    "hoy mañana ayer anoche ahora siempre nunca jamás aquí allí allá ahí luego después antes "
    "pronto tarde también tampoco todavía ya entonces así"
)
_PRONOUN_PERSON = {
    **dict.fromkeys(("yo",), 0),
    **dict.fromkeys(("tú",), 1),
    **dict.fromkeys(("nosotros", "nosotras"), 3),
    **dict.fromkeys(("vosotros", "vosotras"), 4),
}
_PERSONAL_PRONOUNS = word_set("yo tú nosotros nosotras vosotros vosotras")
# words that may stand between a verb and what precedes its clause ("…, no se cae")
_CLITICS = word_set("no se lo la le les me te nos os ya también sí")
_REFLEXIVE_PRONOUNS = word_set("me te se nos os")
# verbs without a subject: weather and existence ("llueve", "hay tarea", "hace frío")


def _impersonal_predicates() -> tuple[frozenset[str], frozenset[str]]:
    """The lemmas of the generator's impersonal predicates (``lexicon.IMPERSONAL``: weather, "hacer
    calor", "haber niebla") and the words that open what "hacer" and "haber" take there."""
    from nanologic.lexicon import IMPERSONAL

    lemmas, objects = set(), set()
    for entry in IMPERSONAL:
        lemma, _, complement = (part.strip() for part in entry.partition("|"))
        lemmas.add(lemma)
        if lemma in {"hacer", "haber"} and complement and not complement.startswith("{"):
            objects.add(complement.split()[0])
    return frozenset(lemmas), frozenset(objects)


_IMPERSONAL_LEMMAS, _IMPERSONAL_OBJECTS = _impersonal_predicates()
_WEATHER_LEMMAS = _IMPERSONAL_LEMMAS - {"haber", "hacer"}
_PARTICIPLE_ENDINGS = ("ado", "ido", "ído", "to", "cho")
_THIRD_SINGULAR, _THIRD_PLURAL = 2, 5
_PLURAL_PERSONS = frozenset({_PRONOUN_PERSON["nosotros"], _PRONOUN_PERSON["vosotros"], _THIRD_PLURAL})
_WORD_RE = re.compile(r"\w+(?:[-'’]\w+)*%?|[,;:.]")


def _lowered_tokens(sentence: str) -> list[str]:
    """The sentence's words and punctuation marks (``,;:.``), lower case."""
    return [t.lower() for t in _WORD_RE.findall(sentence)]


@functools.lru_cache(maxsize=1)
def _conjugation_tables() -> tuple[
    dict[str, frozenset[int]],
    dict[str, frozenset[str]],
    dict[str, tuple],
    dict[str, frozenset[tuple[str, str, int]]],
]:
    """(first word of a finite form -> persons, -> lemmas, subjunctive-only form -> its readings,
    first word -> every (lemma, tense, person) it may begin: "han" -> every verb's perfect, third
    plural, and haber's present)."""
    from nanologic.grammar import lexicon_conjugations

    persons: dict[str, set[int]] = {}
    lemmas: dict[str, set[str]] = {}
    readings_of: dict[str, set[tuple[str, str, int]]] = {}
    indicative: set[str] = set()
    subjunctive: dict[str, list[tuple[str, str, int]]] = {}
    for lemma, tense, person, form in lexicon_conjugations():
        first = form.split()[0]
        persons.setdefault(first, set()).add(person)
        lemmas.setdefault(first, set()).add(lemma)
        readings_of.setdefault(first, set()).add((lemma, tense, person))
        if tense in TENSES:
            indicative.add(first)
        else:
            subjunctive.setdefault(first, []).append((lemma, tense, person))
    only_subjunctive = {}
    for form, readings in subjunctive.items():
        # "haya" begins every verb's perfect subjunctive ("haya cantado"): read it as haber's own
        if "haber" in {lemma for lemma, _, _ in readings}:
            readings = [r for r in readings if r[0] == "haber"]
        if form not in indicative and (
            len({lemma for lemma, _, _ in readings}) == 1 or _one_indicative_per_person(readings)
        ):
            only_subjunctive[form] = tuple(readings)
    return (
        {k: frozenset(v) for k, v in persons.items()},
        {k: frozenset(v) for k, v in lemmas.items()},
        only_subjunctive,
        {k: frozenset(v) for k, v in readings_of.items()},
    )


def _one_indicative_per_person(readings: list[tuple[str, str, int]]) -> bool:
    """Whether the verbs a subjunctive form may be of give it one indicative in each person:
    "fuera" is "ir" or "ser", and "fue" either way."""
    forms: dict[int, set[str]] = {}
    for lemma, tense, person in readings:
        forms.setdefault(person, set()).add(
            conjugate(lemma, INDICATIVE_OF_SUBJUNCTIVE[tense], person).split()[0]
        )
    return all(len(f) == 1 for f in forms.values())


def _is_plural(subject: list[str]) -> bool:
    """A plural determiner, "ellos"/"ellas", or a coordination ("Ana y Luis"; not a sum's terms
    "el producto de 15 y 18")."""
    coordinated = any(w == "y" and not (i and subject[i - 1][:1].isdigit()) for i, w in enumerate(subject))
    return subject[0].lower() in _PLURAL_DETERMINERS | {"ellos", "ellas"} or coordinated


def _indicative(words: list[str]) -> list[str]:
    """The words with each subjunctive-only verb form in the indicative of the same person."""
    readings_of = _conjugation_tables()[2]
    out = list(words)
    for i, word in enumerate(words):
        readings = readings_of.get(word.lower())
        # after a determiner a noun ("el viaje"); a capital past the first word a name ("en Ame")
        if not readings or (i > 0 and (words[i - 1].lower() in _DETERMINERS or word[:1].isupper())):
            continue
        persons = {person for _, _, person in readings}
        if words[0].lower() == "yo" and 0 in persons:
            person = 0
        elif _THIRD_PLURAL in persons and _is_plural(words):
            person = _THIRD_PLURAL
        else:
            person = _THIRD_SINGULAR if _THIRD_SINGULAR in persons else min(persons)
        lemma, tense = next((lemma, tense) for lemma, tense, p in readings if p == person)
        form = conjugate(lemma, INDICATIVE_OF_SUBJUNCTIVE[tense], person).split()[0]
        out[i] = form.capitalize() if word[:1].isupper() else form
    return out


def _singular_subject(subject: list[str]) -> bool:
    """A determiner that says one ("la final"), "él"/"ella", or a name ("Valeria", "Leonardo D.")."""
    if not subject or _is_plural(subject):
        return False
    first = subject[0].lower()
    if first in _SINGULAR_DETERMINERS or first in {"él", "ella"}:
        return True
    # a capital opens a sentence too ("Ellos comen", "Muchos votan"): a name is no such word
    return all(w[:1].isupper() and w.lower() not in _NOT_NAMES for w in subject)


def _subject_person(subject: list[str]) -> int | None:
    """The person a clause's own subject asks of its verb (0-5, as ``conjugate``), or None when
    the subject does not say: "yo" 0, "tú" 1, a singular noun phrase or name 2, a plural one 5."""
    if len(subject) == 1 and subject[0].lower() in {"yo", "tú"}:
        return _PRONOUN_PERSON[subject[0].lower()]
    if _singular_subject(subject):
        return _THIRD_SINGULAR
    if subject and subject[0].lower() in _PLURAL_DETERMINERS and "y" not in subject:
        return _THIRD_PLURAL
    return None


@functools.lru_cache(maxsize=1)
def _agreeing_stems() -> frozenset[str]:
    """Stems of the lexicon's complements that agree with their subject ("cansad" of
    "estar | cansad@", "médic" of "ser | médic@")."""
    from nanologic import lexicon

    stems: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, str):
            stems.update(re.findall(r"(\w+)@", value))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    for name in dir(lexicon):
        if name.isupper():
            walk(getattr(lexicon, name))
    return frozenset(stems)


def _subject_gender(subject: list[str]) -> str | None:
    """ "o" or "a" for a singular subject whose gender its words say (a determiner, "él"/"ella", a
    person noun phrase of the lexicon, a first name as the generator reads it), else None."""
    from nanologic.clauses import name_gender
    from nanologic.lexicon import PERSON_NPS

    first = subject[0].lower()
    if first in {"el", "un", "este", "ese", "aquel", "él"}:
        return "o"
    if first in {"la", "una", "esta", "esa", "aquella", "ella"}:
        return "a"
    person_nps = {text: gender for text, gender, _ in (entry.split("|") for entry in PERSON_NPS)}
    phrase = " ".join(subject).lower()
    if phrase in person_nps:
        return "a" if person_nps[phrase] == "f" else "o"
    if len(subject) == 1 and subject[0][:1].isupper() and first not in _NOT_NAMES:
        return "a" if name_gender(subject[0]) == "f" else "o"
    return None


def _agreeing(words: list[str]) -> list[str]:
    """A plural verb after a subject of another person put in that subject's person, with an
    agreeing complement of the lexicon ("cansad@") after it, or after "estado"/"sido", in the
    subject's gender and number: a predicate shared by several subjects ("Ni Valeria ni Ana piden
    la cuenta", "el día y la tarde estuvieron despejados", "Ni mi hermano ni yo sabemos nadar",
    "Tanto Pilar como Pablo están contentos") is defined for each ("Valeria pide la cuenta", "la
    tarde estuvo despejada", "mi hermano sabe nadar", "yo sé nadar", "Pilar está contenta"). A
    form of several tenses or verbs is changed only when every reading gives the same form."""
    k = _finite_verb_index(words)
    if not k:
        return words
    subject = words[: k - 1] if words[k - 1].lower() in {"se", "no"} else words[:k]
    readings = _conjugation_tables()[3].get(words[k].lower(), frozenset())
    verb_persons = {person for _, _, person in readings}
    person = _subject_person(subject)
    out = list(words)
    if len(verb_persons) == 1 and not verb_persons.isdisjoint(_PLURAL_PERSONS):
        if person is None or person in verb_persons:
            return words
        agreed = {conjugate(lemma, tense, person).split()[0] for lemma, tense, _ in readings}
        if len(agreed) != 1:
            return words
        out[k] = agreed.pop()
    elif verb_persons != {_THIRD_SINGULAR} or person != _THIRD_SINGULAR:
        return words
    # a perfect's participle does not agree ("la tienda ha cerrado"); "ha estado cerrada" does
    perfect = "haber" in {lemma for lemma, _, _ in readings}
    at = k + 2 if perfect and len(out) > k + 2 and out[k + 1].lower() in {"estado", "sido"} else k + 1
    complement = out[at].lower() if len(out) > at and (at == k + 2 or not perfect) else ""
    ending = next((e for e in ("os", "as", "o", "a") if complement.endswith(e)), "")
    stem = complement[: -len(ending)] if ending else ""
    if person != _THIRD_PLURAL and stem in _agreeing_stems():
        out[at] = stem + (_subject_gender(subject) or ending[0])
    return out


def _says(tokens: list[str], span: list[str]) -> bool:
    """Whether the sentence's lowered ``tokens`` say the lowered words of ``span`` in a row."""
    return any(tokens[i : i + len(span)] == span for i in range(len(tokens) - len(span) + 1))


def _subject_end(words: list[str], k: int) -> int:
    """Where the subject before the verb ``words[k]`` ends: before the verb's "no" and reflexive
    pronouns ("nos hemos mudado")."""
    start = k
    while start > 0 and words[start - 1].lower() in _REFLEXIVE_PRONOUNS | {"no"}:
        start -= 1
    return start


def _infinitive_conjugated(words: list[str], sentence: str) -> list[str]:
    """A definition that opens with an infinitive of a known verb that the sentence says as a
    clause of its own (an infinitive subject or purpose, after "hay que": "Llover es condición
    suficiente para que …", "Tener entrada es condición necesaria para entrar …", "Hay que tener
    el carné") in the present of the generic *tú*, as the format reads it (``tienes entrada``), or
    of the third person for weather (``llueve``). Not one the sentence says after a verb, "que"
    or a coordinator, which shares that verb ("Tengo que estudiar y limpiar el cuarto" defines
    ``tengo que limpiar el cuarto``)."""
    from nanologic.grammar import _verb_forms

    first = words[0].lower()
    # a name the generator made that is also an infinitive ("Nadar lleva un reloj") has its verb
    if first not in _verb_forms()[1] or (len(words) > 1 and words[1].lower() in _conjugation_tables()[0]):
        return words
    tokens = _lowered_tokens(sentence)
    said = [i for i, token in enumerate(tokens) if token == first]
    persons = _conjugation_tables()[0]

    def own_clause(i: int) -> bool:
        before = tokens[i - 1] if i else ""
        if before == "que":
            return i >= 2 and tokens[i - 2] == "hay"
        # "para" before an infinitive is the preposition of a purpose, not parar's form
        return before == "para" or (before not in COORDINATORS and before not in persons)

    if not said or not all(own_clause(i) for i in said):
        return words
    person = _THIRD_SINGULAR if first in _WEATHER_LEMMAS else 1
    return [conjugate(first, "pres", person), *words[1:]]


def _with_a_plural_subject(words: list[str], sentence: str) -> list[str]:
    """A verb of the singular after a plural subject of the third person ("los gatos", "las
    niñas"; not a coordination, not an impersonal verb): a form the sentence does not say is the
    model's choice among the grammar's agreement variants and takes the plural of the same tense
    ("los gatos es mascotas" -> ``los gatos son mascotas`` for "Los gatos y los perros son
    mascotas", "los niños entrenó" -> ``los niños entrenaron``); a form the sentence says is
    another subject's verb, and the subject, lent by the model, is dropped ("los vecinos llegaba a
    la meta" -> ``llegaba a la meta`` for "Siempre que los vecinos ganan la carrera, llegaba a la
    meta"), unless the sentence says the two together. A form of several verbs or tenses is changed
    only when every reading gives the same plural."""
    k = _finite_verb_index(words)
    if not k:
        return words
    start = _subject_end(words, k)
    subject = words[:start]
    if not subject or _subject_person(subject) != _THIRD_PLURAL or _impersonal(words, k):
        return words
    readings = _conjugation_tables()[3].get(words[k].lower(), frozenset())
    persons = {person for _, _, person in readings}
    if not persons or not persons <= {0, 1, _THIRD_SINGULAR}:
        return words
    tokens = _lowered_tokens(sentence)
    if words[k].lower() in tokens:
        return words if _says(tokens, [w.lower() for w in words[: k + 1]]) else words[start:]
    agreed = {conjugate(lemma, tense, _THIRD_PLURAL).split()[0] for lemma, tense, _ in readings}
    if len(agreed) != 1:
        return words
    return [*words[:k], agreed.pop(), *words[k + 1 :]]


def _finite_verb_index(words: list[str]) -> int | None:
    """The first word that is a verb form, not one after a determiner ("el estudio termina") nor
    a first name of the lexicon before another verb form ("Leo suspende": "leo" is "leer")."""
    from nanologic.grammar import lexicon_names

    persons = _conjugation_tables()[0]
    verbs = [
        i
        for i, w in enumerate(words)
        if w.lower() in persons and not (i and words[i - 1].lower() in _DETERMINERS)
    ]
    if len(verbs) > 1 and words[verbs[0]] in lexicon_names():
        return verbs[1]
    return verbs[0] if verbs else None


def _subject_left_out(sentence: str, verb: str, any_form: bool = False) -> bool:
    """Whether ``verb`` follows a cue, a punctuation mark or the start of the sentence; with
    ``any_form``, where the sentence does not say ``verb`` itself, another form of its verb ("se
    presentara" for a definition's "se presentó") stands for it, except a perfect's auxiliary,
    which begins every verb's perfect."""
    tokens = _WORD_RE.findall(sentence)
    cue_words = not_content_words() - _DETERMINERS - {"de", "a", "en", "es", "son"}
    said = {verb.lower()}
    lemmas_of = _conjugation_tables()[1]
    lemmas = lemmas_of.get(verb.lower(), frozenset())
    if any_form and "haber" not in lemmas and not any(token.lower() == verb.lower() for token in tokens):
        said = {t.lower() for t in tokens if lemmas & lemmas_of.get(t.lower(), frozenset())}
    for i, token in enumerate(tokens):
        if token.lower() not in said:
            continue
        j = i - 1
        while j >= 0 and tokens[j].lower() in _CLITICS:
            j -= 1
        if j < 0 or not tokens[j][0].isalnum() or tokens[j].lower() in cue_words:
            return True
    return False


def _impersonal(words: list[str], k: int) -> bool:
    """Whether the finite verb ``words[k]`` (of the lexicon) takes no subject: a perfect is
    impersonal by its participle ("ha nevado"), "amanecerá nublado" by its verb, "hacer" and
    "haber" by what follows ("ha hecho calor", "hubo mercado", "ha habido elecciones", not "ha
    hecho los deberes")."""
    from nanologic.grammar import lexicon_verb_lemma

    lemmas = _conjugation_tables()[1].get(words[k].lower(), frozenset())
    following = words[k + 1].lower() if len(words) > k + 1 else ""
    participle = following if "haber" in lemmas else ""
    participle_lemma = lexicon_verb_lemma(participle) if participle.endswith(_PARTICIPLE_ENDINGS) else None
    after = words[k + 2 :] if participle_lemma is not None else words[k + 1 :]
    impersonal_object = bool(after) and (after[0].lower() in _IMPERSONAL_OBJECTS or after[0][:1].isdigit())
    if participle_lemma is not None:
        return participle_lemma in _WEATHER_LEMMAS or (
            participle_lemma in {"haber", "hacer"} and impersonal_object
        )
    # "ha" is a form of every verb's perfect, so a participle after it says which
    return (bool(lemmas & _WEATHER_LEMMAS) and not participle.endswith(_PARTICIPLE_ENDINGS)) or (
        bool(lemmas & {"haber", "hacer"}) and impersonal_object
    )


# Endings that say a verb's person whatever the verb (the future; the preterite's third persons):
# real sentences use verbs the lexicon lacks ("Si el agua hierve, entonces soltará vapor").
_FUTURE_PERSON_ENDINGS = (("remos", 3), ("réis", 4), ("rán", 5), ("rás", 1), ("ré", 0), ("rá", 2))
# the future's endings, which no noun or adjective has ("recibirán"; read by the grammar too)
FUTURE_ENDINGS = tuple(ending for ending, _ in _FUTURE_PERSON_ENDINGS)
_PERSON_ENDINGS = (*_FUTURE_PERSON_ENDINGS, ("aron", 5), ("ieron", 5))


def _persons_by_ending(word: str) -> frozenset[int]:
    """The person a word outside the lexicon's verbs says by its ending (``_PERSON_ENDINGS``), as
    ``conjugate`` numbers them (0-5); empty when it says none."""
    return next(
        (
            frozenset({person})
            for ending, person in _PERSON_ENDINGS
            if len(word) > len(ending) + 2 and word.endswith(ending)
        ),
        frozenset(),
    )


_SUBJECT_PERSON = {
    **_PRONOUN_PERSON,
    **dict.fromkeys(("él", "ella", "usted"), _THIRD_SINGULAR),
    **dict.fromkeys(("ellos", "ellas", "ustedes"), _THIRD_PLURAL),
}


def _with_the_subject_said(words: list[str], sentence: str, written: list[str] | None = None) -> list[str]:
    """``words`` with the subject the sentence says right before their opening verb put first: a
    subject pronoun, a name, or a determiner and its noun, before the verb or its "no" and
    clitics, not after a preposition or a verb, of a person the verb takes ("está afinado" for "…
    y Tiso no está afinado" is ``Tiso está afinado``, "estamos contentos" for "Nosotros estamos
    contentos …" is ``nosotros estamos contentos``). Where the sentence says the verb after
    different subjects, or after none, the words stay (an elided subject is
    :func:`_with_subject`'s).

    ``written``: the definition as the model wrote it, whose verb is the one to look for."""
    verb_at = 1 if words[0].lower() in _REFLEXIVE_PRONOUNS and len(words) > 1 else 0
    persons = _conjugation_tables()[0].get(words[verb_at].lower(), frozenset())
    if not persons or _impersonal(words, verb_at):
        return words
    verb = (written if written is not None and len(written) > verb_at else words)[verb_at].lower()
    tokens = _WORD_RE.findall(sentence)
    subjects = set()
    for i, token in enumerate(tokens):
        if token.lower() != verb:
            continue
        j = i - 1
        while j >= 0 and tokens[j].lower() in _CLITICS:
            j -= 1
        if j < 0:
            subjects.add(())
            continue
        word = tokens[j]
        # after a preposition or a verb, a noun phrase is that word's ("en Córdoba usa …", "graba
        # un disco miente")
        opening = j - 1 if j > 0 and tokens[j - 1].lower() in _DETERMINERS else j
        before = tokens[opening - 1].lower() if opening > 0 else ""
        if before in _PREPOSITIONS or before in _conjugation_tables()[0]:
            subjects.add(())
            continue
        person: int | None
        if word.lower() in _SUBJECT_PERSON:
            subject, person = [word.lower()], _SUBJECT_PERSON[word.lower()]
        elif j > 0 and tokens[j - 1].lower() in _DETERMINERS and word.isalpha():
            subject = [tokens[j - 1].lower(), word]
            person = _subject_person(subject)
        elif (
            word[:1].isupper()
            and word.isalpha()
            and word.lower() not in _NOT_NAMES
            and word.lower() not in (not_content_words() | _conjugation_tables()[0].keys())
        ):
            subject, person = [word], _THIRD_SINGULAR
        else:
            subjects.add(())
            continue
        subjects.add(tuple(subject) if person in persons else ())
    if len(subjects) != 1 or not (subject := list(subjects.pop())):
        return words
    return [*subject, words[0][:1].lower() + words[0][1:], *words[1:]]


def _with_subject(
    words: list[str], earlier: list[list[str]], sentence: str, written: list[str] | None = None
) -> list[str]:
    """``words`` with the subject of the nearest earlier definition put first, when it is elided.

    ``written``: the definition as the model wrote it, before the indicative replaced a
    subjunctive ("haya vuelto" -> "ha vuelto"); its verb is the one to look for in the sentence."""
    persons_of, lemmas_of, _, _ = _conjugation_tables()
    verb_at = 1 if words[0].lower() == "se" and len(words) > 1 else 0
    verb = words[verb_at]
    written_verb = written[verb_at] if written is not None and len(written) > verb_at else verb
    persons = persons_of.get(verb.lower(), frozenset())
    if not persons:
        persons = _persons_by_ending(verb.lower())
        following = words[verb_at + 1].lower() if len(words) > verb_at + 1 else ""
        # "bajarán las ventas": a noun phrase after the verb that agrees with it may be its subject
        if following in (_PLURAL_DETERMINERS if persons & _PLURAL_PERSONS else _SINGULAR_DETERMINERS):
            return words
    if not persons:
        return words
    third_person = bool(persons & {_THIRD_SINGULAR, _THIRD_PLURAL}) and not _impersonal(words, verb_at)
    if not third_person and not persons & {0, 1, 3, 4}:
        return words
    for previous in reversed(earlier):
        k = _finite_verb_index(previous)
        if not k:  # no verb, or no subject before it: look further back
            continue
        subject = previous[:k]
        while subject and subject[-1].lower() in _REFLEXIVE_PRONOUNS:  # "yo me quedo", "se baña"
            subject = subject[:-1]
        pronoun_person = _PRONOUN_PERSON.get(subject[0].lower()) if len(subject) == 1 else None
        if pronoun_person in (0, 1, 3, 4):
            # "nosotras cantamos y bailamos" defines "nosotras bailamos": the verb names the person
            if pronoun_person in persons and _subject_left_out(sentence, written_verb):
                return subject + words
            return words
        if not third_person:
            return words
        lowered = {w.lower() for w in words}
        if (
            all(w.lower() in _DETERMINERS for w in subject)
            or (len(subject) == 1 and len(subject[0]) == 1)  # a variable: "z será menor que 44"
            or subject[0].lower() in _PERSONAL_PRONOUNS
            or any(w.lower() in lowered for w in subject if w.lower() not in _DETERMINERS)
            or not _subject_left_out(sentence, written_verb, any_form=True)
        ):
            return words
        plural = _is_plural(subject)
        if (plural and _THIRD_PLURAL in persons) or (not plural and _THIRD_SINGULAR in persons):
            return subject + [words[0][:1].lower() + words[0][1:]] + words[1:]
        return words
    return words


# A perfect's first word ("ha llegado"); the grammar and the rule baseline read these too.
PERFECT_AUXILIARIES = word_set("he has ha hemos habéis han")


def _perfect_mended(words: list[str]) -> list[str]:
    """A perfect's auxiliary as the format writes it: one before a finite verb, which the grammar
    lets a definition take from the sentence's "haya" ("Rodrigo ha lleva unas entradas" for "que
    Rodrigo lleve unas entradas o que Dueia haya llevado un reloj"), is dropped; "hay" before a
    participle is "ha" ("hay hecho 27 grados"), and a definition opening with "ha" before what
    the generator's impersonal "haber" takes, a determiner or a number is "hay" ("ha niebla")."""
    from nanologic.grammar import lexicon_verb_lemma

    persons = _conjugation_tables()[0]
    out: list[str] = []
    for i, word in enumerate(words):
        low = word.lower()
        following = words[i + 1].lower() if i + 1 < len(words) else ""
        participle = following.endswith(_PARTICIPLE_ENDINGS)
        if low in PERFECT_AUXILIARIES and following in persons and not participle:
            continue
        # a participle of the lexicon: "mercado" ends like one
        if low == "hay" and participle and lexicon_verb_lemma(following) is not None:
            out.append(word[0] + "a")
        elif (
            low == "ha"
            and i == 0
            and (following in _IMPERSONAL_OBJECTS or following in _DETERMINERS or following[:1].isdigit())
        ):
            out.append(word[0] + "ay")  # "ha niebla", "ha una tormenta"; "ha leído" is a perfect
        else:
            out.append(word)
    return out


def _past_of_a_past_subjunctive(words: list[str], sentence: str) -> list[str]:
    """``words`` with a present or imperfect verb in the preterite of the same person when the
    sentence says that verb only in the imperfect subjunctive after "que" ("Ya sea que el dragón
    ganara la batalla" defines ``el dragón ganó la batalla``, as the generator's
    ``INDICATIVE_OF_SUBJUNCTIVE`` reads it; a small model often writes ``gana``). After "si" the
    imperfect subjunctive is a counterfactual ("Si la tribu fuera nómada" defines ``la tribu es
    nómada``) and stays as the model wrote it, as does a verb the sentence also says in another
    tense."""
    readings_of = _conjugation_tables()[3]
    tokens = _lowered_tokens(sentence)
    after_que: set[str] = set()
    for i, token in enumerate(tokens):
        readings = readings_of.get(token, frozenset())
        if not readings or any(tense != "impf_sub" for _, tense, _ in readings):
            continue
        # the nearest "que" or "si" of the same stretch between punctuation marks: one "que"
        # may govern coordinated clauses ("para que A corra a las ocho o Tomás no pidiera …")
        stretch = tokens[:i]
        stop = max((j for j, t in enumerate(stretch) if t in {",", ";", ":", "."}), default=-1)
        opener = next((t for t in reversed(stretch[stop + 1 :]) if t in {"que", "si"}), None)
        if opener == "que":
            after_que |= {lemma for lemma, _, _ in readings}
    # a verb the sentence also says in another simple tense ("que Álvaro pida … o Jordi pidiera
    # …") may be read from that one; "haya", "ha" begin every verb's perfect
    after_que -= {
        lemma
        for token in tokens
        for lemma, tense, _ in readings_of.get(token, ())
        if tense not in {"impf_sub", "perf", "perf_sub"}
    }
    if not after_que:
        return words
    out = list(words)
    for i, word in enumerate(words):
        readings = readings_of.get(word.lower(), frozenset())
        if word.lower() in tokens or len({(lemma, tense) for lemma, tense, _ in readings}) != 1:
            continue
        lemma, tense, _ = next(iter(readings))
        persons = {person for _, _, person in readings}
        # "volvía" is first or third person: the definition's subject says which
        person = 0 if words[0].lower() == "yo" and 0 in persons else max(persons)
        if lemma in after_que and tense in {"pres", "impf"}:
            form = conjugate(lemma, "pret", person).split()[0]
            out[i] = form.capitalize() if word[:1].isupper() else form
    return out


# Words that join two conjuncts (the grammar and the rule baseline read them too).
COORDINATORS = word_set("y e o u ni")
_IMPERSONAL_HABER = word_set("hay había habrá hubo habría haya hubiera")


def _with_predicate(words: list[str], earlier: list[list[str]], sentence: str) -> list[str]:
    """``words`` with the verb of the nearest earlier definition written in, when the definition
    has no verb of its own and the sentence says its words right after "y", "e", "o", "u" or "ni":
    a predicate shared by a coordination ("Silvia lee el libro de lengua y el libro de
    medicina" defines ``Silvia lee el libro de medicina``, "votamos en contra de la moción y en
    contra del plan" ``votamos en contra del plan``). A subject the definition already has stays
    before the verb ("David ha aprobado música o arte" read as ``David arte`` gives ``David ha
    aprobado arte``). Only the nearest earlier definition with a verb lends it, and only when its
    complement and this one open alike (a determiner, a preposition, a number, a name or another
    word) and, beyond a preposition, share a word at one end or are as long. Relations ("x = 1"),
    definitions with a verb of the lexicon or an infinitive's ending, and definitions the sentence
    does not say right after a coordinator, or says before "también" / "tampoco", are unchanged."""
    if (
        _finite_verb_index(words) is not None
        or any(not w[:1].isalnum() for w in words)
        or any(w.lower() in _IMPERSONAL_HABER or _looks_like_a_verb(w) for w in words)
    ):
        return words
    tokens = _lowered_tokens(sentence)

    def after_coordinator(rest: list[str]) -> bool:
        # said right after a coordinator, and not a clause of its own with its verb left to
        # "también" ("El niño lee un libro y la niña también")
        head = [w.lower() for w in rest[:2]]
        return any(
            tokens[i : i + len(head)] == head
            and i
            and tokens[i - 1] in COORDINATORS
            and not {"también", "tampoco"} & set(tokens[i : i + len(rest) + 1])
            for i in range(len(tokens))
        )

    lemmas_of = _conjugation_tables()[1]
    for previous in reversed(earlier):
        k = _finite_verb_index(previous)
        if k is None:
            continue
        end = k + 1
        if "haber" in lemmas_of.get(previous[k].lower(), ()) and end < len(previous):
            end += previous[end].lower().endswith(_PARTICIPLE_ENDINGS)
        subject = [w.lower() for w in previous[:k]]
        own_subject = bool(subject) and [w.lower() for w in words[:k]] == subject
        rest = words[k:] if own_subject else words
        # the shared verb's complement and this one open alike ("la merienda" / "la sopa", "en
        # contra de" / "en contra del"); "son aves y el sol brilla" is two clauses
        if end == len(previous) or not rest or not after_coordinator(rest):
            return words
        complement = [w.lower() for w in previous[end:]]
        lowered = [w.lower() for w in rest]
        kind = _opening(rest[0])
        # beyond a preposition, the two complements also share a word at one end or are as long
        # ("el libro de lengua" / "el libro de medicina", "manzanas todos los días" / "pasta todos
        # los días", "música" / "arte"): "Juan toca la guitarra y la gente aplaude" is two clauses
        alike = (
            complement[:2] == lowered[:2]
            or complement[-2:] == lowered[-2:]
            or (kind == "determiner" and complement[1:2] == lowered[1:2])
            or (kind == "word" and complement[0] == lowered[0])
            or len(complement) == len(lowered)
        )
        if kind != _opening(previous[end]) or (kind != "preposition" and not alike):
            return words
        return previous[:end] + rest
    return words


def _looks_like_a_verb(word: str) -> bool:
    """A form of a lexicon verb (any, participles and infinitives too) or, for a word the lexicon
    does not know, an infinitive's ending ("limpiar", "estar")."""
    from nanologic.grammar import lexicon_verb_lemma

    low = word.lower()
    return lexicon_verb_lemma(low) is not None or (len(low) > 3 and low.endswith(("ar", "er", "ir")))


_PREPOSITIONS = word_set("a al en de del con por para contra sin hasta desde hacia sobre")


def _opening(word: str) -> str:
    """What kind of word opens a complement: a determiner, a preposition, a number, a name or
    another word."""
    low = word.lower()
    if low in _DETERMINERS:
        return "determiner"
    if low in _PREPOSITIONS:
        return "preposition"
    if word[:1].isdigit():
        return "number"
    return "name" if word[:1].isupper() else "word"


# A run of one to four words written twice in a row ("me mojo me mojo": the grammar's jump back
# used to repeat what was just written). One gold definition of a training split's 68,418 has one.
_REPEAT_RE = re.compile(r"(?<!\S)((?:\S+ ){0,3}\S+) \1(?!\S)")


def _without_repeats(definition: str) -> str:
    while (collapsed := _REPEAT_RE.sub(r"\1", definition)) != definition:
        definition = collapsed
    return definition


def normalize_definitions(atoms: dict[str, str], sentence: str) -> dict[str, str]:
    """The atom definitions with the format's normalisations applied (see the module docstring).

    Args:
        atoms: letter -> definition, in the order the answer declared them.
        sentence: the sentence they were read from.

    Returns:
        A new dict, same letters and order; a definition no rule applies to is unchanged.
    """
    out: dict[str, str] = {}
    earlier: list[list[str]] = []
    for letter, definition in atoms.items():
        words = _without_repeats(definition).split()
        if words:
            words = _perfect_mended(_with_prepositions(_own_subject(words, sentence), sentence))
            words = _without_a_lent_subject(_infinitive_conjugated(words, sentence), sentence)
            # twice: the indicative of "haya niebla" is "ha niebla"
            indicative = _perfect_mended(_indicative(words))
            agreeing = _with_a_plural_subject(_agreeing(indicative), sentence)
            agreeing = _with_the_subject_said(agreeing, sentence, written=words)
            words = _with_subject(agreeing, earlier, sentence, written=words)
            words = _with_predicate(_past_of_a_past_subjunctive(words, sentence), earlier, sentence)
            # the indicative can make a repeat ("haya expuesto ha expuesto")
            words = _without_repeats(" ".join(words)).split()
            earlier.append(words)
        out[letter] = " ".join(words) if words else definition
    completed = _with_shared_complement([d.split() for d in out.values()], sentence)
    return {letter: " ".join(words) for letter, words in zip(out, completed, strict=True)}


def _own_subject(words: list[str], sentence: str) -> list[str]:
    """A clause of the sentence that a definition holds after a subject and a verb it does not say
    together, its own: ``Juan trabaja Marta trabaja`` for "Juan estudia o Marta trabaja" is
    ``Marta trabaja`` (the model lent the first clause's subject, then wrote the clause)."""
    k = _finite_verb_index(words)
    if not k or len(words) < k + 3 or words[-1].lower() != words[k].lower():
        return words
    tokens = _lowered_tokens(sentence)
    lowered = [w.lower() for w in words]
    if _says(tokens, lowered[k + 1 :]) and not _says(tokens, lowered[: k + 1]):
        return words[k + 1 :]
    return words


def _without_a_lent_subject(words: list[str], sentence: str) -> list[str]:
    """A definition without the third-person subject the model lent to a verb that cannot take it.

    The verb is of the first or second person singular ("Ricardo entrené este mes" for "Puesto
    que Ricardo no montó …, no entrené este mes"), of the first or second person plural, said so in
    the sentence, where the sentence coordinates no other subject with the lent one ("Miguel
    aprobáis" for "… o Miguel ha cantado, o bien no aprobáis"; "Ni mi hermano ni yo sabemos nadar"
    keeps ``mi hermano``, :func:`_agreeing` puts it in his person), or impersonal ("Hugo ha habido
    elecciones"): the verb's clause has its own subject, left out, and the definition is the clause
    from the verb on ("entrené este mes"); so is a personal pronoun of another person than the
    verb's only one ("vosotros jugaste"). A subject the sentence says right before the verb stays,
    as does one before a word that is more often a preposition or "como" than a verb.
    """
    k = _finite_verb_index(words)
    if not k:
        return words
    start = _subject_end(words, k)
    subject = words[:start]
    if not subject:
        return words
    tokens = _lowered_tokens(sentence)
    verb = words[k].lower()
    if verb in _PREPOSITIONS | {"como", "bajo", "entre"}:  # "Tanto Lorena como Vuemenor hacen …"
        return words
    if _says(tokens, [w.lower() for w in words[: k + 1]]):
        return words  # the sentence says this subject with this verb
    persons = _conjugation_tables()[0].get(verb, frozenset())
    pronoun_person = _PRONOUN_PERSON.get(subject[0].lower()) if len(subject) == 1 else None
    if pronoun_person is not None:
        # "vosotros jugaste": a pronoun of another person than the verb's only one
        # (a plural verb is the shared predicate of a coordination, :func:`_agreeing`)
        singular = len(persons) == 1 and persons <= {0, 1, _THIRD_SINGULAR}
        return words[start:] if singular and pronoun_person not in persons else words
    third_person = subject[0].lower() in {"él", "ella", "ellos", "ellas"} or _subject_person(subject) in (
        _THIRD_SINGULAR,
        _THIRD_PLURAL,
    )
    if not third_person:
        return words
    coordinated = any(
        token == subject[-1].lower() and i + 1 < len(tokens) and tokens[i + 1] in COORDINATORS | {"como"}
        for i, token in enumerate(tokens)
    )
    if (
        (persons and persons <= {0, 1})
        or (persons and persons <= {0, 1, 3, 4} and verb in tokens and not coordinated)
        # a perfect's auxiliary without its participle ("Ignacio ha un regalo") is a broken perfect
        or (
            _impersonal(words, k) and not (verb in PERFECT_AUXILIARIES and words[k + 1 : k + 2] != ["habido"])
        )
    ):
        return words[start:]
    return words


_GAP_PREPOSITIONS = word_set("a en de con por para desde hasta sin sobre")


def _with_prepositions(words: list[str], sentence: str) -> list[str]:
    """``words`` with a preposition the sentence says between two of them put back, where the
    two are never said next to each other ("trabajaste desde casa Fiacel" for "… desde casa en
    Fiacel")."""
    tokens = _lowered_tokens(sentence)
    pairs = set(zip(tokens, tokens[1:]))
    between = {(a, c): b for a, b, c in zip(tokens, tokens[1:], tokens[2:]) if b in _GAP_PREPOSITIONS}
    out = words[:1]
    for word in words[1:]:
        pair = (out[-1].lower(), word.lower())
        if pair not in pairs and pair in between:
            out.append(between[pair])
        out.append(word)
    return out


def _with_shared_complement(definitions: list[list[str]], sentence: str) -> list[list[str]]:
    """The definitions, each one cut short within a predicate its subject shares with another
    subject completed from the other's definition: "Ni Mogrecuee ni Ignacio pierden las
    elecciones" defines ``Mogrecuee pierde las elecciones`` where the model wrote ``Mogrecuee
    pierde``. Only where the sentence coordinates the two subjects ("ni A ni B", "A y B", "tanto A
    como B": one's last word, a coordinator, the other's first word within three words), so that
    "Juan aprobó y Ana aprobó historia" stays, and the other definition has the same verb (the
    same form, where either is a perfect's auxiliary) and goes on with the words this one ends
    with."""
    tokens = _lowered_tokens(sentence)
    lemmas_of = _conjugation_tables()[1]
    out = [list(d) for d in definitions]
    for i, words in enumerate(definitions):
        k = _finite_verb_index(words)
        if not k:
            continue
        verb, rest = words[k].lower(), [w.lower() for w in words[k + 1 :]]
        lemmas = lemmas_of.get(verb, frozenset())
        for j, other in enumerate(definitions):
            m = _finite_verb_index(other)
            if j == i or not m:
                continue
            other_verb, other_lemmas = other[m].lower(), lemmas_of.get(other[m].lower(), frozenset())
            same_verb = other_verb == verb or (
                "haber" not in lemmas | other_lemmas and bool(lemmas & other_lemmas)
            )
            tail = other[m + 1 :]
            if (
                same_verb
                and len(tail) > len(rest)
                and [w.lower() for w in tail[: len(rest)]] == rest
                and _coordinated(tokens, words[:k], other[:m])
            ):
                out[i] = words + tail[len(rest) :]
                break
    return out


def _coordinated(tokens: list[str], subject: list[str], other: list[str], window: int = 3) -> bool:
    """Whether ``tokens`` (a sentence's, lower case) say one subject's last word, then "y", "e",
    "o", "u", "ni", "como" or a comma, and the other's first word within ``window`` words."""
    for first, second in ((subject, other), (other, subject)):
        last, opening = first[-1].lower(), second[0].lower()
        for n, token in enumerate(tokens[:-1]):
            coordinator = tokens[n + 1] in COORDINATORS | {"como", ","}
            if token == last and coordinator and opening in tokens[n + 2 : n + 2 + window]:
                return True
    return False


# Spellings of the cue inventory's phrases that writers use and the generator does not: the
# accented "sí y sólo sí" (6 of data/dev_real.jsonl's biconditionals), "sólo si", and the "ó"
# that older texts write between numbers ("x + y = 2 ó x + y = 0", the RAE's rule before 2010).
_CUE_SPELLINGS = (
    (re.compile(r"(?<!\w)([Ss])[ií] y s[oó]lo s[ií](?!\w)"), r"\1i y solo si"),
    (re.compile(r"(?<!\w)([Ss])ólo si(?!\w)"), r"\1olo si"),
    (re.compile(r"(?<=\s)ó(?=\s)"), "o"),
    # "sólo en (el) caso de que A, B" is the generator's "solo si A, B"; "en el caso de que", its
    # "en caso de que"
    (re.compile(r"(?<!\w)([Ss])[oó]lo en (?:el )?caso de que(?!\w)"), r"\1olo si"),
    (re.compile(r"(?<!\w)([Ee])n el caso de que(?!\w)"), r"\1n caso de que"),
    # "decir que A equivale a decir que B" is "que A equivale a que B"
    (
        re.compile(r"^(?:([D])|d)ecir que (.+ equivale a) decir que(?!\w)"),
        lambda m: f"{'Q' if m[1] else 'q'}ue {m[2]} que",
    ),
    # the exclusive "or"'s ending with the feminine of "ambos" ("medicina o derecho, pero no ambas
    # cosas"), or after "a" ("Iré a Madrid o a Sevilla, pero no a ambas")
    (re.compile(r"(?<!\w)([Pp])ero no (?:a )?ambas(?: cosas)?(?=\s*[.;:!?]*\s*$)"), r"\1ero no ambos"),
    (re.compile(r"(?<!\w)([Pp])ero no a ambos(?=\s*[.;:!?]*\s*$)"), r"\1ero no ambos"),
    # "a no ser que" is "a menos que" (its "no" negates nothing); "no es verdad que", "no es cierto que"
    (re.compile(r"(?<!\w)([Aa]) no ser que(?!\w)"), r"\1 menos que"),
    (re.compile(r"(?<!\w)([Nn])o es verdad que(?!\w)"), r"\1o es cierto que"),
)


def prepare_sentence(sentence: str) -> str:
    """The sentence every formaliser reads: :func:`nanologic.data.normalize_text` (spaces, quotes,
    Unicode form) then :func:`normalize_cue_spelling`."""
    return normalize_cue_spelling(normalize_text(sentence))


def prepare_sentences(sentences: Sequence[str]) -> list[str]:
    """:func:`prepare_sentence` of each sentence, for a formaliser (the model, llama.cpp or the
    rule baseline) to read.

    Raises:
        NanologicError: a sentence has no word (empty, blanks or punctuation only), naming its
            number (1-based) in ``sentences``: there is nothing to formalise, and the baseline
            would otherwise answer it with one empty atom.
    """
    for number, sentence in enumerate(sentences, 1):
        if not has_words(sentence):
            raise NanologicError(f"sentence {number} ({sentence!r}) has no words to formalise")
    return [prepare_sentence(s) for s in sentences]


def normalize_results(
    results: list[dict], sentences: list[str], enabled: bool = True, drop_unnamed: bool = True
) -> list[dict]:
    """Apply :func:`normalize_definitions` to every result's ``atoms`` in place (and return them),
    then :func:`merge_repeated_atoms` and, with ``drop_unnamed``, :func:`drop_unnamed_atoms`.

    The one post-processing shared by the PyTorch, llama.cpp and rule formalisers, so the three
    cannot drift apart. ``sentences`` are the prepared sentences (:func:`prepare_sentence`), one
    per result, in order. ``enabled=False`` (the formalisers' ``normalize_definitions`` off)
    returns the results as written.
    """
    if not enabled:
        return results
    for result, sentence in zip(results, sentences, strict=True):
        result["atoms"] = normalize_definitions(result["atoms"], sentence)
        merge_repeated_atoms(result, sentence)
        if drop_unnamed:
            drop_unnamed_atoms(result)
    return results


def clause_key(definition: str) -> str:
    """The key under which two definitions are one clause: case, spacing and end punctuation aside.

    Used within an answer (:func:`merge_repeated_atoms`) and across the sentences of an argument
    (:func:`nanologic.inference.shared_atoms`). Relation symbols count, so "x < 3" and "x > 3" stay
    two clauses (``evaluation.normalize_definition``, a scoring key, drops them).
    """
    return " ".join(unicodedata.normalize("NFC", definition).casefold().strip(" .,;:").split())


def _future_as_present(definition: str) -> str:
    """``definition`` with each word that is only ever a future of the lexicon put in the present
    of the same person ("Rodrigo preparará la merienda" -> "Rodrigo prepara la merienda"; "habrá
    niebla" -> "hay niebla", impersonal where no participle follows)."""
    readings_of = _conjugation_tables()[3]
    words = definition.split()
    out = []
    for k, word in enumerate(words):
        readings = readings_of.get(word.lower(), frozenset())
        if len(readings) != 1 or next(iter(readings))[1] != "fut":
            out.append(word)
            continue
        ((lemma, _, person),) = readings
        participle_follows = k + 1 < len(words) and words[k + 1].lower().endswith(_PARTICIPLE_ENDINGS)
        impersonal = lemma == "haber" and person == 2 and not participle_follows
        out.append("hay" if impersonal else conjugate(lemma, "pres", person).split()[0])
    return " ".join(out)


# The determiner of a denied clause and the one it denies, accented and folded ("no detectó ningún
# intruso" denies "detecta un intruso")
DENIED_DETERMINERS = {"ningún": "un", "ningun": "un", "ninguno": "uno", "ninguna": "una"}


def tenseless_clause(clause: str) -> tuple[str, ...]:
    """``clause`` word by word with the tense taken out: a verb of the lexicon as its infinitive, an
    auxiliary "haber" before a participle dropped ("ha llegado" is "llega"), any other word as its
    stem. Every word counts and order is kept: "él canta" is not "ella canta", "Ana ama a Luis" is
    not "Luis ama a Ana", and "x − y = 2" is not "y − x = 2" (a symbol stays itself). A denial's
    "ningún" is the "un" of the clause it denies ("no detectó ningún intruso": "detecta un intruso").
    The key under which an argument's sentences say one clause again (the rule baseline's letters,
    :func:`merge_repeated_atoms`)."""
    from nanologic.evaluation import word_stems
    from nanologic.grammar import lexicon_verb_lemma

    tokens = [DENIED_DETERMINERS.get(t, t) for t in re.findall(r"\w+|[^\w\s]", clause.lower())]
    out: list[str] = []
    for word, following in zip(tokens, [*tokens[1:], ""]):
        lemma = lexicon_verb_lemma(word)
        if lemma == "haber" and lexicon_verb_lemma(following):
            continue
        out.append(lemma or (word_stems(word) or [word])[0])  # a symbol has no stem: itself
    return tuple(out)


def _argument_sentences(sentence: str) -> list[list[str]] | None:
    """The folded words of each premise and of the conclusion of an argument said in several
    sentences (:func:`nanologic.grammar.argument_parts`), or None when ``sentence`` is none."""
    from nanologic.grammar import argument_parts

    parts = argument_parts(sentence)
    if parts is None:
        return None
    premises, conclusion = parts
    return [re.findall(r"\w+", part) for part in (*premises, conclusion)]


def _said_in(definition: str, sentences: list[list[str]]) -> set[int]:
    """Which of ``sentences`` (folded words) say every word of ``definition`` that is a verb of
    the lexicon."""
    from nanologic.grammar import fold_text, lexicon_verb_lemma

    verbs = [fold_text(w) for w in re.findall(r"\w+", definition.lower()) if lexicon_verb_lemma(w)]
    return {i for i, words in enumerate(sentences) if verbs and all(v in words for v in verbs)}


def merge_repeated_atoms(result: dict, sentence: str | None = None) -> dict:
    """Give a clause defined under two letters one letter, in place (and return ``result``).

    "Si llueve, me mojo; y si me mojo, me resfrío" is ``(p → q) ∧ (q → r)``: the clause that
    comes back is the same proposition. A small model often declares it again under a new letter
    (``q: me mojo``, ``r: me mojo``), which makes ``(p → q) ∧ (r → s)`` and loses the chain (49 of
    the 147 failures of a default run's synthetic test, 2026-12-05). Definitions equal up to case,
    spacing and end punctuation, after the normalisations above, or up to a future said again in
    the present ("no preparará la merienda; y si no prepara la merienda, …": a condition with "si"
    or "cuando" takes the present, and the generator says a future clause so; none of 8,000
    generated sentences holds two gold atoms that differ only so) are one atom: the later letter is
    replaced by the earlier one in the formula, and the letters after it move down so that they stay
    the declared sequence (``p, q, s`` -> ``p, q, r``). In an argument said in several sentences
    (``sentence`` given), two definitions equal but for tense (:func:`tenseless_clause`) whose verbs
    the sentence says in different sentences are one clause too, as the rule baseline reads them:
    "Si el autobús no llega a tiempo, llego tarde; el autobús no ha llegado a tiempo, así que …"
    (within one sentence "llovió" and "lloverá" stay two; no generated argument holds two gold
    atoms equal but for tense). An answer whose formula does not parse is left as it is.

    Args:
        result: a :func:`nanologic.data.formalization_result` dict (``atoms``, ``formula``,
            ``formula_ascii``, ``valid_formula``, ``polarity``).
        sentence: the sentence the answer reads, for the argument's rule; None leaves it out.
    """
    merged = repeated_atoms(result["atoms"], sentence)
    node = try_parse(result["formula"]) if result.get("valid_formula") else None
    if not merged or node is None:
        return result
    return _relettered(result, node, [letter for letter in result["atoms"] if letter not in merged], merged)


def repeated_atoms(atoms: dict[str, str], sentence: str | None = None) -> dict[str, str]:
    """Letter -> the earlier letter of the same clause, for each definition of ``atoms`` that
    :func:`merge_repeated_atoms` gives an earlier letter (the rule is its docstring's)."""
    first_letter: dict[str, str] = {}
    merged: dict[str, str] = {}
    sentences = _argument_sentences(sentence) if sentence else None
    for letter, definition in atoms.items():
        key = clause_key(_future_as_present(definition))
        if key and key in first_letter:
            merged[letter] = first_letter[key]
            continue
        first_letter.setdefault(key, letter)
        if sentences is None:
            continue
        said = _said_in(definition, sentences)
        for other, other_definition in atoms.items():
            if other == letter:
                break
            other_said = _said_in(other_definition, sentences)
            if (
                other not in merged
                and said
                and other_said
                and not said & other_said
                and tenseless_clause(definition) == tenseless_clause(other_definition)
            ):
                merged[letter] = other
                break
    return merged


def _relettered(result: dict, node: Node, kept: list[str], merged: dict[str, str]) -> dict:
    """``result`` (in place) with only the ``kept`` letters' definitions, lettered anew in the
    declared sequence (``p, q, s`` -> ``p, q, r``), each letter of ``merged`` written as the one
    it maps to, the formula (parsed: ``node``) and polarity rewritten to match."""
    atoms = result["atoms"]
    relabel = dict(zip(kept, list(atoms)[: len(kept)], strict=True))
    mapping = {
        letter: relabel[merged.get(letter, letter)]
        for letter in atoms
        if letter in relabel or letter in merged
    }
    node = rename(node, mapping)
    result["atoms"] = {relabel[letter]: atoms[letter] for letter in kept}
    if result.get("polarity"):  # the merged letter's literals may differ in sign now
        result["polarity"] = literal_polarity(node)
    result["formula"], result["formula_ascii"] = to_unicode(node), to_ascii(node)
    return result


def drop_unnamed_atoms(result: dict) -> dict:
    """Drop the definitions of the letters the formula does not name, in place (and return
    ``result``); the letters left are lettered anew in the declared sequence.

    No gold answer declares a letter its formula leaves out (the format's atoms are the formula's
    propositions), while a small model sometimes declares a clause twice in two forms and names
    one ("Si no me eligen como alcalde, no tendrán metro": ``¬p → ¬q`` over "q: tendrá metro | r:
    tendrán metro"), or an extra piece of the sentence it never uses. The answer given keeps what
    the formula says. An answer whose formula does not parse is left as it is.
    """
    node = try_parse(result["formula"]) if result.get("valid_formula") else None
    if node is None:
        return result
    named = set(formula_letters(node))
    kept = [letter for letter in result["atoms"] if letter in named]
    if len(kept) == len(result["atoms"]) or not kept:
        return result
    return _relettered(result, node, kept, {})


def normalize_cue_spelling(sentence: str) -> str:
    """``sentence`` with the cue spellings the generator does not use written as it does.

    "Iré sí y sólo sí me dan el alta" -> "Iré si y solo si me dan el alta"; "Sólo si" -> "Solo si";
    "x = 2 ó x = 0" -> "x = 2 o x = 0".
    Applied to a sentence before it is decoded (:class:`nanologic.inference.Formalizer`, llama.cpp).
    """
    for pattern, replacement in _CUE_SPELLINGS:
        sentence = pattern.sub(replacement, sentence)
    return sentence
