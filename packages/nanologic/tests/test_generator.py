import random
import re

import pytest

from nanologic.clauses import BLOCKS, ClauseSampler, Predicate, Subject, build_clause
from nanologic.conjugation import TENSES
from nanologic.generator import CUES as CUES_BY_ROLE
from nanologic.generator import (
    Literal,
    SentenceBuilder,
    _cat,
    distinct_clauses,
    example_from_phrase,
    generate,
    known_cues,
)
from nanologic.logic import AND, Binary, Not, atoms, depth, parse, pattern, to_unicode
from nanologic.pipeline import clean, consistency_problems


@pytest.fixture(scope="module")
def examples():
    return generate(3000, seed=7)


def test_same_seed_same_data():
    assert generate(50, seed=3) == generate(50, seed=3)
    assert generate(50, seed=3) != generate(50, seed=4)


def test_inventory_and_blocks(examples):
    # open vocabulary: almost every drawn clause is new
    assert distinct_clauses(3000) >= 2500
    definitions = [a["definition"] for e in examples for a in e["thought"]["identified_atoms"]]
    assert len(set(definitions)) >= 0.8 * len(definitions)
    assert {e["block"] for e in examples} == set(BLOCKS)
    assert {e["complexity"] for e in examples} == {"simple", "intermediate", "advanced"}


def test_every_example_is_consistent(examples):
    kept, report = clean(examples, max_trivial_fraction=1.0)
    assert not {k for k in report.rejected if k != "exact duplicate"}
    for e in kept:
        assert consistency_problems(e) == [], e["natural_language_input"]
        f = parse(e["output"]["formula"])
        assert len(atoms(f)) <= 6 and depth(f) <= 3
        # atoms are lettered p, q, r, ... in order of first mention
        assert [a["atom"] for a in e["thought"]["identified_atoms"]] == list("pqrstu"[: len(atoms(f))])


CUES = [
    "y",
    "además",
    "pero",
    "aunque",
    "sin embargo",
    "o",
    "o bien",
    "ya sea que",
    "pero no ambos",
    "si...entonces",
    "cuando",
    "siempre que",
    "en caso de que",
    "implica",
    "solo si",
    "es necesario que",
    "basta con que",
    "a menos que",
    "salvo que",
    "si y solo si",
    "equivale a",
    "únicamente cuando",
    "no",
    "no es cierto que",
    "ni...ni",
    "tampoco",
    "no...a la vez",
    "dado que",
    "ya que",
    "puesto que",
    # textbook cues (issue 13)
    "tanto...como",
    "no pasa que",
    "es mentira que",
    "para que",
    "para...hay que",
    "hay que...para",
    "se debe...para",
    "para...es necesario",
    "condición necesaria",
    "condición suficiente",
    "condición necesaria y suficiente",
    "solo cuando",
    "sólo cuando",
    "cuando y solo cuando",
    "siempre y cuando",
    "o...o no",
    "tanto si...como si",
    # conclusions of arguments said in several sentences
    "por lo tanto",
    "luego",
    "así que",
]


def test_every_cue_is_used(examples):
    used = {c["natural_language_cue"] for e in examples for c in e["thought"]["identified_connectors"]}
    assert set(CUES) <= used


def test_max_atoms_and_depth_reached(examples):
    assert max(len(e["thought"]["identified_atoms"]) for e in examples) == 6
    assert max(depth(parse(e["output"]["formula"])) for e in examples) == 3


def _find(examples, cue):
    return [
        e
        for e in examples
        if any(c["natural_language_cue"] == cue for c in e["thought"]["identified_connectors"])
    ]


def test_solo_si_reverses_direction(examples):
    for e in _find(examples, "solo si")[:20]:
        s = e["natural_language_input"]
        if s.startswith("Solo si"):
            continue
        # "A solo si B": A is mentioned first (p) and implies B.
        assert parse(e["output"]["formula"]).op == "→"
        assert "p" in e["output"]["formula"].split("→")[0]


def test_negation_inside_clause(examples):
    found = 0
    for e in examples:
        sentence = e["natural_language_input"].lower()
        for a in e["thought"]["identified_atoms"]:
            d = a["definition"]
            if (
                d.startswith("hay ")
                and re.search(rf"\bno {re.escape(d)}\b", sentence)
                and sentence.count(d) == 1
            ):
                found += 1
                assert f"¬{a['atom']}" in e["output"]["formula"], e["natural_language_input"]
    assert found >= 5


def test_unless_means_negated_condition_implies(examples):
    for e in _find(examples, "a menos que")[:20]:
        f = parse(e["output"]["formula"])
        assert f.op == "→" and type(f.left).__name__ == "Not"


def test_thought_mentions_formula(examples):
    for e in examples[:50]:
        steps = e["thought"]["reasoning_steps"]
        assert steps[-1]["explanation"] == f"Fórmula: {e['output']['formula']}."


def test_literal_polarity_is_balanced_and_no_o_bien_stutter(examples):
    # polarity near even odds (nor/tampoco/"no es cierto" force some ¬, and some slots are
    # affirmative by construction), so a slot's polarity cannot be guessed from the skeleton
    literals = [n for e in examples for n, _ in re.findall(r"(¬?)([p-u])", e["output"]["formula"])]
    share = sum(1 for n in literals if n) / len(literals)
    assert 0.4 < share < 0.6, share
    assert not any("o bien o bien" in e["natural_language_input"].lower() for e in examples)


def test_every_recorded_cue_is_in_the_public_inventory(examples):
    known = set(known_cues())
    for e in examples:
        for c in e["thought"]["identified_connectors"]:
            for piece in c["natural_language_cue"].split("..."):
                assert piece.strip() in known, (piece, e["natural_language_input"])


def _first(examples, cue, where=lambda s: True):
    found = [e for e in _find(examples, cue) if where(e["natural_language_input"].lower())]
    assert found, cue
    return found[:15]


def _pattern(e):
    return pattern(parse(e["output"]["formula"]))


def test_new_cues_round_trip_to_the_right_formula(examples):
    def polarity_free(e):
        return re.sub("¬", "", e["output"]["formula"])

    for e in _first(examples, "no pasa que") + _first(examples, "es mentira que"):
        assert isinstance(parse(e["output"]["formula"]), Not)
    for e in _first(examples, "cuando y solo cuando") + _first(examples, "condición necesaria y suficiente"):
        assert parse(e["output"]["formula"]).op == "↔"
    # "A solo cuando B": A → B; "Sólo cuando B, A": A → B with B mentioned first
    for e in _first(examples, "solo cuando", lambda s: not s.startswith(("solo", "sólo"))):
        f = parse(e["output"]["formula"])
        assert f.op == "→" and "p" in to_unicode(f.left)
    for e in _first(examples, "sólo cuando", lambda s: s.startswith("sólo cuando")):
        f = parse(e["output"]["formula"])
        assert f.op == "→" and "p" in to_unicode(f.right)
    # "B es condición necesaria para A" and "hay que B para A": A → B, B first (p)
    # the necessary condition is said first (p) and is the consequent
    for cue in ("condición necesaria", "hay que...para", "se debe...para"):
        for e in _first(examples, cue, lambda s: "suficiente" not in s):
            f = parse(e["output"]["formula"])
            assert f.op == "→" and "p" in to_unicode(f.right), e["natural_language_input"]
        assert "q → p" in {polarity_free(e) for e in _first(examples, cue)}
    for cue in ("condición suficiente", "para...hay que", "para...es necesario"):
        for e in _first(examples, cue, lambda s: "necesaria y" not in s):
            f = parse(e["output"]["formula"])
            assert f.op == "→" and "p" in to_unicode(f.left), e["natural_language_input"]
    for e in _first(examples, "siempre y cuando"):
        f = parse(e["output"]["formula"])
        # "A siempre y cuando B": the condition B (mentioned last) implies A (mentioned first)
        assert f.op == "→" and "p" in to_unicode(f.right)
    for e in _first(examples, "o...o no"):
        f = parse(e["output"]["formula"])
        assert f.op == "∧" and to_unicode(f.left) == "p ∨ ¬p"
    for e in _first(examples, "tanto si...como si"):
        f = parse(e["output"]["formula"])
        assert f.op == "∧" and f.left.op == f.right.op == "→" and f.left.right == f.right.right
    for e in _first(examples, "tanto...como"):
        assert "∧" in e["output"]["formula"]


def test_arguments_join_their_premises_and_imply_the_conclusion(examples):
    # "Si A, B. No B. Por lo tanto, no A." is ((A → B) ∧ ¬B) → ¬A, the textbooks' reading of an
    # argument said in several sentences; each sentence starts with a capital.
    arguments = [
        e
        for e in examples
        if any(
            c["connector"] == "∧" and c["natural_language_cue"] in CUES_BY_ROLE["conclusion"]
            for c in e["thought"]["identified_connectors"]
        )
    ]
    assert len(arguments) >= 30
    forms = set()
    for e in arguments:
        f = parse(e["output"]["formula"])
        assert f.op == "→" and f.left.op == "∧", e["natural_language_input"]
        forms.add(pattern(f))
        for sentence in e["natural_language_input"].split(". ")[1:]:
            assert sentence[0].isupper(), e["natural_language_input"]
        assert not consistency_problems(e)
    # modus ponens, modus tollens, disjunctive syllogism, the fallacies and the chain all occur
    assert len(forms) >= 6, forms


def _clause(subject, person, gender, kind, lemma, complement, tense="pres", reflexive=False):
    subj = Subject(subject, person, gender, kind)
    return build_clause(subj, Predicate(lemma, reflexive, complement, complement), tense, "compras")


def _realise(kind, a, b, negated=False):
    builder = SentenceBuilder(random.Random(0), [a, b])
    phrase = builder.group([Literal(0, negated), Literal(1, negated)], kind)
    ex = example_from_phrase(phrase, builder.clauses, "compras", random.Random(0))
    defs = [x["definition"] for x in ex["thought"]["identified_atoms"]]
    return ex["natural_language_input"], ex["output"]["formula"], defs


def test_a_clause_said_once_in_the_indicative_is_defined_as_said():
    # "Si A, sumarás B; y si sumas B, ...": a conditional says the future in the present, so only
    # a clause every mention of which changes mood or tense is defined in the normalised form
    add = _clause("", 1, "m", "pronoun", "sumar", "250 y 51", tense="fut")
    rain = _clause("", 2, "m", "impersonal", "llover", "")
    builder = SentenceBuilder(random.Random(0), [rain, add])
    said, again = builder.lit(Literal(1), "ind"), builder.lit(Literal(1), "ante")
    both = _cat(Binary(AND, said.formula, again.formula), said, " y si ", again)
    ex = example_from_phrase(both, builder.clauses, "compras")
    assert ex["natural_language_input"] == "Sumarás 250 y 51 y si sumas 250 y 51."
    assert [a["definition"] for a in ex["thought"]["identified_atoms"]] == ["sumarás 250 y 51"]
    only_ante = builder.lit(Literal(1), "ante")
    ex = example_from_phrase(only_ante, builder.clauses, "compras")
    assert [a["definition"] for a in ex["thought"]["identified_atoms"]] == ["sumas 250 y 51"]


def test_elliptic_coordination_gives_complete_definitions():
    bank = _clause("el banco", 2, "m", "thing", "abrir", "hoy")
    shop = _clause("la tienda", 2, "f", "thing", "abrir", "hoy")
    assert _realise("pred_nor", bank, shop) == (
        "Ni el banco ni la tienda abren hoy.",
        "¬p ∧ ¬q",
        ["el banco abre hoy", "la tienda abre hoy"],
    )
    luis = _clause("Luis", 2, "m", "name", "ser", "médic@")
    marta = _clause("Marta", 2, "f", "name", "ser", "médic@")
    assert _realise("pred_nor", luis, marta) == (
        "Ni Luis ni Marta son médicos.",
        "¬p ∧ ¬q",
        ["Luis es médico", "Marta es médica"],
    )
    carmen = _clause("Carmen", 2, "f", "name", "votar", "en las elecciones", tense="pret")
    raul = _clause("Raúl", 2, "m", "name", "votar", "en las elecciones", tense="pret")
    assert _realise("tanto", carmen, raul) == (
        "Tanto Carmen como Raúl votaron en las elecciones.",
        "p ∧ q",
        ["Carmen votó en las elecciones", "Raúl votó en las elecciones"],
    )
    ana = _clause("Ana", 2, "f", "name", "ir", "a la fiesta")
    pedro = _clause("Pedro", 2, "m", "name", "ir", "a la fiesta")
    assert _realise("pred_and", ana, pedro, negated=True)[:2] == (
        "Ana y Pedro no van a la fiesta.",
        "¬p ∧ ¬q",
    )
    thirst = _clause("", 0, "m", "pronoun", "tener", "sed")
    sleep = _clause("", 0, "m", "pronoun", "tener", "sueño")
    assert _realise("verb_and", thirst, sleep) == (
        "Tengo sed y sueño.",
        "p ∧ q",
        ["tengo sed", "tengo sueño"],
    )
    assert _realise("verb_nor", thirst, sleep)[:2] == ("No tengo ni sed ni sueño.", "¬p ∧ ¬q")
    studies = _clause("Pedro", 2, "m", "name", "estudiar", "")
    works = _clause("Pedro", 2, "m", "name", "trabajar", "")
    assert _realise("vp_nor", studies, works) == (
        "Pedro no estudia ni trabaja.",
        "¬p ∧ ¬q",
        ["Pedro estudia", "Pedro trabaja"],
    )


def test_elided_subject_is_repeated_in_the_definition(examples):
    elided = 0
    for e in examples:
        sentence = e["natural_language_input"]
        for a in e["thought"]["identified_atoms"]:
            d = a["definition"]
            if d not in sentence and d[0].isupper() and " " in d:
                name, rest = d.split(" ", 1)
                if rest in sentence and name in sentence:
                    elided += 1
    assert elided >= 30


def test_agreement_and_subjunctive_normalisation():
    open_shop = _clause("la tienda", 2, "f", "thing", "estar", "abiert@")
    assert open_shop.definition == "la tienda está abierta"
    banks = _clause("los bancos", 5, "m", "thing", "estar", "abiert@")
    assert banks.definition == "los bancos están abiertos"
    assert banks.text(mood="sub", mark=False) == "los bancos estén abiertos"
    won = _clause("Ana", 2, "f", "name", "ganar", "la carrera", tense="perf")
    assert won.text(mood="sub", mark=False) == "Ana haya ganado la carrera"
    assert won.sub_definition == "Ana ha ganado la carrera"
    rain = _clause("", 2, "m", "impersonal", "llover", "", tense="fut")
    assert (rain.definition, rain.subjunctive, rain.sub_definition) == ("lloverá", "llueva", "llueve")
    assert rain.text(mood="ante", mark=False) == "llueve"
    ticket = _clause("", 1, "m", "generic", "tener", "entrada")
    assert (ticket.text(mood="inf"), ticket.definition) == ("tener entrada", "tienes entrada")
    up = _clause("", 0, "m", "pronoun", "levantar", "temprano", tense="perf", reflexive=True)
    assert up.definition == "me he levantado temprano"


def test_person_and_tense_coverage():
    rng = random.Random(3)
    persons, tenses, domains = set(), set(), set()
    for i in range(3000):
        sampler = ClauseSampler(rng, BLOCKS[i % len(BLOCKS)])
        c = sampler.clause()
        persons.add(c.subj.person)
        tenses.add(c.tense)
        domains.add(c.block)
    assert persons == set(range(6))
    assert tenses == set(TENSES)
    assert domains == set(BLOCKS)


def test_a_pronoun_is_dropped_only_where_the_verb_names_the_person():
    # "Ana sale o llega tarde": a dropped third person reads as the previous clause's subject, so
    # the generator says "él" / "ellas"; "salgo" and "salís" name their person themselves
    rng = random.Random(5)
    dropped, said = set(), set()
    for i in range(3000):
        subj = ClauseSampler(rng, BLOCKS[i % len(BLOCKS)]).clause().subj
        if subj is not None and subj.kind == "pronoun":
            (said if subj.text else dropped).add(subj.person)
    assert dropped == {0, 1, 3, 4}
    assert said == set(range(6))


def test_subjunctive_only_mentions_are_defined_in_the_indicative(examples):
    for e in _first(examples, "en caso de que") + _first(examples, "es mentira que"):
        for a in e["thought"]["identified_atoms"]:
            assert not re.search(r"\b(haya|sea|esté|vaya|tenga)\b", a["definition"]), e


def test_novel_fillers_are_pseudo_words_in_the_slot_form():
    from nanologic.lexicon import FILLERS, NOVEL_NOUN_SLOTS, novel_filler

    rng = random.Random(0)
    known = {w.lower() for fillers in FILLERS.values() for f in fillers for w in f.split()}
    nouns = []
    for slot, form in NOVEL_NOUN_SLOTS.items():
        for _ in range(20):
            text = novel_filler(rng, slot)
            words = text.split()
            if form == "definite":
                assert words[0] in ("el", "la")
            elif form == "indefinite":
                assert words[0] in ("un", "una")
            elif form == "proper":
                assert len(words) == 1 and text[0].isupper()
            elif form == "proper-definite":
                assert words[0] == "el" and words[1][0].isupper()
            assert re.fullmatch(r"[a-zñ]+", words[-1].lower())
            nouns.append(words[-1].lower())
    assert sum(n not in known for n in nouns) > 0.95 * len(nouns)
    assert [novel_filler(random.Random(1), "FOOD") for _ in range(3)] == [
        novel_filler(random.Random(1), "FOOD") for _ in range(3)
    ]


def test_some_definitions_copy_names_no_lexicon_holds(examples):
    # Pseudo-words train copying a word piece by piece; they are copied into the definitions.
    from nanologic.lexicon import FILLERS, PERSON_NPS, SURNAMES, THING_GROUPS

    lexicon_text = " ".join(
        [f for fillers in FILLERS.values() for f in fillers]
        + PERSON_NPS
        + list(SURNAMES)
        + [x for groups in THING_GROUPS.values() for nps, preds in groups for x in nps + preds]
    )
    known_names = set(re.findall(r"[A-ZÁÉÍÓÚÑ][a-záéíóúüñ]+", lexicon_text))
    with_novel_name = 0
    for e in examples:
        for atom in e["thought"]["identified_atoms"]:
            names = re.findall(r"[A-ZÁÉÍÓÚÑ][a-záéíóúüñ]+", atom["definition"])
            if any(n not in known_names and n in e["natural_language_input"] for n in names):
                with_novel_name += 1
                break
    assert with_novel_name > 0.02 * len(examples)


def test_a_conjunction_cue_follows_the_word_elision_left_in_the_sentence():
    from nanologic.generator import _conjunction_as_said

    sentence = "Es falso que Raquel estudie dibujo e hiciera los deberes."
    assert _conjunction_as_said("y", sentence) == "e"
    assert _conjunction_as_said("y", "Raquel estudia y Luis hace los deberes.") == "y"
    assert _conjunction_as_said("o", "Come pan u otro cereal.") == "u"
    assert _conjunction_as_said("si", sentence) == "si"


def test_people_do_things_in_a_bare_verb_too():
    """Real sentences' atoms are short ("Ana canta"); the generator makes some."""
    records = generate(400, seed=2)
    lengths = [len(a["definition"].split()) for e in records for a in e["thought"]["identified_atoms"]]
    assert sum(n <= 2 for n in lengths) / len(lengths) > 0.05


_FORMULA_START = re.compile(r"[a-z]²? [=<>≤≥≠+−-]")


def test_equations_in_symbols_negate_with_not_equal_and_keep_the_affirmative_atom():
    examples = generate(3000, seed=7, symbolic_share=0.4)
    kept, report = clean(examples, max_trivial_fraction=1.0)
    assert not {k for k in report.rejected if k != "exact duplicate"}
    inventory = set(known_cues())
    for e in kept:
        assert consistency_problems(e) == [], e["natural_language_input"]
        cues = {
            p.strip()
            for c in e["thought"]["identified_connectors"]
            for p in c["natural_language_cue"].split("...")
        }
        assert cues <= inventory, e["natural_language_input"]
    relation = re.compile(r" [=<>≤≥] ")
    symbolic = [
        (e, a) for e in examples for a in e["thought"]["identified_atoms"] if relation.search(a["definition"])
    ]
    assert len(symbolic) >= 50  # mathematics says a share of its clauses in symbols
    negated = 0
    for e, a in symbolic:
        sentence, definition = e["natural_language_input"], a["definition"]
        assert "≠" not in definition  # "x ≠ 2" is defined as "x = 2"
        as_not_equal = definition.replace(" = ", " ≠ ", 1)
        if " = " in definition and as_not_equal in sentence and definition not in sentence:
            negated += 1
            assert f"¬{a['atom']}" in e["output"]["formula"], sentence
            assert {"connector": "¬", "natural_language_cue": "≠"} in e["thought"]["identified_connectors"]
        else:
            assert definition in sentence, sentence
    assert negated >= 10
    # a sentence that opens with a formula keeps its variable in lower case: "x + y = 2 y z = 1."
    openers = [
        e["natural_language_input"]
        for e, _ in symbolic
        if _FORMULA_START.match(e["natural_language_input"].lower())
    ]
    assert openers and all(s[0].islower() for s in openers)


def test_no_symbols_unless_asked_for(examples):
    assert not any(re.search(r" [=<>≤≥≠] ", e["natural_language_input"]) for e in examples)
    with pytest.raises(ValueError, match="symbolic_share"):
        generate(5, symbolic_share=1.5)


_OPENS_WITH_A_CONDITION = re.compile(
    r"(Si|Cuando|Siempre que|En caso de que|Solo si|Sólo cuando|Solo cuando) "
)


def test_some_opening_conditions_are_written_without_their_comma():
    """Real writers leave the comma out ("Si llueve me mojo", "Si A entonces B"); the same sentence
    is always written the same way, and the formula does not change with the comma."""
    from nanologic.generator import CLAUSE_COMMA, _write_clause_commas

    share_asked = 0.3
    assert not any(
        _OPENS_WITH_A_CONDITION.match(e["natural_language_input"]) and "," not in e["natural_language_input"]
        for e in generate(300, seed=3, comma_less_share=0.0)
    )  # none at 0
    examples = generate(3000, seed=3, comma_less_share=share_asked)
    opening = [e for e in examples if _OPENS_WITH_A_CONDITION.match(e["natural_language_input"])]
    without = [e for e in opening if "," not in e["natural_language_input"]]
    share = len(without) / len(opening)
    assert 0.5 * share_asked < share < 1.5 * share_asked
    assert any(" entonces " in e["natural_language_input"] for e in without)
    for e in without:
        assert consistency_problems(e) == [], e["natural_language_input"]
        assert parse(e["output"]["formula"]).op == "→" or "∧" in e["output"]["formula"]
    text = f"si llueve{CLAUSE_COMMA}entonces me mojo"
    written = {_write_clause_commas(text, 0.5) for _ in range(3)}
    assert len(written) == 1 and written <= {"si llueve, entonces me mojo", "si llueve entonces me mojo"}
    assert _write_clause_commas(text, 1.0) == "si llueve entonces me mojo"
    assert _write_clause_commas("si llueve, me mojo", 1.0) == "si llueve, me mojo"  # no mark, no change
    for text in (
        f"aunque Vera no firma{CLAUSE_COMMA}ni Ana ni Luis pierden",
        f"si llueve{CLAUSE_COMMA}o bien corro",
    ):
        assert _write_clause_commas(text, 1.0) == text.replace(CLAUSE_COMMA, ", ")  # the comma is needed
    with pytest.raises(ValueError, match="comma_less_share"):
        generate(5, comma_less_share=1.5)


def test_a_premise_keeps_the_comma_before_a_conditional():
    """ "Puesto que A si B, C" would read A as the conditional's consequent."""
    examples = generate(4000, seed=4, comma_less_share=1.0)
    premised = [
        e
        for e in examples
        if re.match(r"(Puesto que|Dado que|Ya que) ", e["natural_language_input"])
        and re.search(r" (si|cuando|siempre que) ", e["natural_language_input"])
        and "∧ (" in e["output"]["formula"]
    ]
    assert premised
    for e in premised:
        first_condition = re.search(r" (si|cuando|siempre que) ", e["natural_language_input"]).start()
        assert "," in e["natural_language_input"][:first_condition], e["natural_language_input"]


def test_the_new_textbook_cues_are_generated():
    """ "No es el caso (de) que", "excepto que" and "no tengo sed ni sueño" (one "ni")."""
    examples = generate(3000, seed=5)
    said = " ".join(e["natural_language_input"].lower() for e in examples)
    assert "no es el caso que " in said and "no es el caso de que " in said and " excepto que " in said
    one_ni = [
        e
        for e in examples
        if {"connector": "¬", "natural_language_cue": "ni"} in e["thought"]["identified_connectors"]
        and re.search(r"\bno \w+ \w+ ni ", e["natural_language_input"].lower())
    ]
    assert one_ni and all(consistency_problems(e) == [] for e in one_ni)
