"""Grounded accuracy, alignment, alt readings, error categories and the dev-set reader."""

import json

import pytest

from nanologic.errors import NanologicError
from nanologic.evaluation import (
    aggregate,
    best_alignment,
    content_words,
    definition_overlap,
    error_category,
    grounded_match,
    read_gold,
    score_example,
    unknown_cues,
)
from nanologic.generator import generate, known_cues

GOLD = {
    "input": "Si llueve y no llevo paraguas, entonces me mojo.",
    "atoms": {"p": "llueve", "q": "llevo paraguas", "r": "me mojo"},
    "formula": "(p ∧ ¬q) → r",
}


def test_content_words_drop_stopwords_accents_and_inflection():
    assert content_words("el servidor no se cae") == content_words("El servidor se cae")
    assert content_words("las plantas crecen") == content_words("la planta crece")
    assert content_words("Marta es médica") == content_words("Marta es médico")
    assert content_words("Llueva") == content_words("llueve")
    assert "x" in content_words("x + y = 2") and "2" in content_words("x + y = 2")
    assert definition_overlap("Juan es médico", "Juan es médico") == 1.0
    assert definition_overlap("matemático", "Nicanor Parra es matemático") == pytest.approx(1 / 3)


def test_the_gold_is_grounded_and_a_letter_permutation_still_passes():
    assert grounded_match(GOLD, GOLD)
    permuted = {"atoms": {"r": "llueve", "p": "llevo paraguas", "q": "me mojo"}, "formula": "(r ∧ ¬p) → q"}
    assert grounded_match(permuted, GOLD)


def test_definitions_copied_from_the_sentence_with_extra_words_pass():
    pred = {
        "atoms": {"p": "si llueve", "q": "llevo un paraguas", "r": "entonces me mojo"},
        "formula": "(p ∧ ¬q) → r",
    }
    assert grounded_match(pred, GOLD)


def test_right_formula_with_atoms_from_elsewhere_fails():
    # The failure of issue 13: the formula is right, the definitions come from the training inventory.
    pred = {
        "atoms": {"p": "el servidor se cae", "q": "hay backup", "r": "los datos se pierden"},
        "formula": "(p ∧ ¬q) → r",
    }
    assert not grounded_match(pred, GOLD)
    score = score_example(pred, {**GOLD, "natural_language_input": GOLD["input"]})
    assert score["equivalent_any_mapping"] and not score["grounded"]
    assert score["error_category"] == "atom not grounded"


def test_one_wrong_definition_among_right_ones_fails():
    pred = {"atoms": {"p": "llueve", "q": "salgo a correr", "r": "me mojo"}, "formula": "(p ∧ ¬q) → r"}
    assert not grounded_match(pred, GOLD)


def test_grounded_atoms_with_a_wrong_formula_fail():
    pred = {"atoms": dict(GOLD["atoms"]), "formula": "(p ∧ ¬q) ∧ r"}
    assert not grounded_match(pred, GOLD)
    reversed_ = {"atoms": dict(GOLD["atoms"]), "formula": "r → (p ∧ ¬q)"}
    assert not grounded_match(reversed_, GOLD)


def test_undeclared_letters_and_unparsable_formulas_fail():
    assert not grounded_match({"atoms": {"p": "llueve"}, "formula": "(p ∧ ¬q) → r"}, GOLD)
    assert not grounded_match({"atoms": dict(GOLD["atoms"]), "formula": "(p ∧ ¬q →"}, GOLD)


def test_alignment_is_one_to_one_and_maximal():
    alignment = best_alignment({"a": "llueve mucho", "b": "llueve"}, {"p": "llueve", "q": "llueve mucho"})
    assert alignment == {"p": ("b", 1.0), "q": ("a", 1.0)}


def test_alt_readings_count_for_grounded_and_equivalence():
    gold = {
        "input": "Perú y Ecuador son países fronterizos, además son tropicales.",
        "atoms": {"p": "Perú y Ecuador son países fronterizos", "q": "Perú y Ecuador son tropicales"},
        "formula": "p ∧ q",
        "alt": [
            {
                "atoms": {
                    "p": "Perú y Ecuador son países fronterizos",
                    "q": "Perú es tropical",
                    "r": "Ecuador es tropical",
                },
                "formula": "p ∧ q ∧ r",
            }
        ],
    }
    pred = {
        "atoms": {
            "p": "Perú y Ecuador son países fronterizos",
            "q": "Perú es tropical",
            "r": "Ecuador es tropical",
        },
        "formula": "p ∧ q ∧ r",
    }
    assert grounded_match(pred, gold)
    assert score_example(pred, gold)["equivalent"]
    xor_gold = {"atoms": {"p": "vienes", "q": "te quedas"}, "formula": "p ∨ q", "alt": ["(p ∨ q) ∧ ¬(p ∧ q)"]}
    assert grounded_match(
        {"atoms": {"p": "vienes", "q": "te quedas"}, "formula": "(p ∨ q) ∧ ¬(p ∧ q)"}, xor_gold
    )


@pytest.mark.parametrize(
    ("sentence", "gold", "pred", "category"),
    [
        (
            "Si nieva, no salgo.",
            {"atoms": {"p": "nieva", "q": "salgo"}, "formula": "p → ¬q"},
            {"atoms": {"p": "nieva", "q": "salgo"}, "formula": "p → q"},
            "polarity",
        ),
        (
            "Si nieva, no salgo.",
            {"atoms": {"p": "nieva", "q": "salgo"}, "formula": "p → ¬q"},
            {"atoms": {"p": "nieva", "q": "salgo"}, "formula": "p ∧ ¬q"},
            "wrong structure",
        ),
        (
            "Salgo mientras no nieve.",
            {"atoms": {"p": "salgo", "q": "nieva"}, "formula": "¬q → p"},
            {"atoms": {"p": "salgo", "q": "nieve"}, "formula": "q → p"},
            "cue unknown",
        ),
        (
            "Si nieva, no salgo.",
            {"atoms": {"p": "nieva", "q": "salgo"}, "formula": "p → ¬q"},
            {"atoms": {"p": "hay backup", "q": "salgo"}, "formula": "p → ¬q"},
            "atom not grounded",
        ),
        (
            "Si nieva, no salgo.",
            {"atoms": {"p": "nieva", "q": "salgo"}, "formula": "p → ¬q"},
            {"atoms": {"p": "nieva"}, "formula": "p → "},
            "unparsable",
        ),
        (
            "Si nieva, no salgo.",
            {"atoms": {"p": "nieva", "q": "salgo"}, "formula": "p → ¬q"},
            {"atoms": {"q": "nieva", "p": "salgo"}, "formula": "q → ¬p"},
            "correct",
        ),
    ],
)
def test_error_categories(sentence, gold, pred, category):
    assert error_category(pred, gold, sentence, known_cues()) == category


def test_unknown_cues_respect_the_inventory():
    assert unknown_cues("Salgo mientras no llueva", known_cues()) == ["mientras"]
    assert unknown_cues("Si llueve, entonces me mojo", known_cues()) == []
    # "no" inside a known longer cue is not reported on its own.
    assert unknown_cues("No es cierto que llueva", known_cues()) == []
    assert unknown_cues("No es el caso que Ana cante", known_cues()) == []
    assert "porque" in unknown_cues("No canta porque Ana duerme", known_cues())


def test_every_cue_the_generator_records_is_in_its_public_inventory():
    known = set(known_cues())
    for example in generate(400, seed=3):
        for item in example["thought"]["identified_connectors"]:
            for part in item["natural_language_cue"].split("..."):
                assert part.strip() in known or all(w in known for w in part.split()), part


def test_aggregate_reports_grounded_and_categories_on_generated_examples():
    examples = generate(30, seed=5)
    golds = [
        {
            **e,
            "atoms": {a["atom"]: a["definition"] for a in e["thought"]["identified_atoms"]},
            "formula": e["output"]["formula"],
        }
        for e in examples
    ]
    for g in golds:
        g["natural_language_input"] = g["natural_language_input"]
    scores = [score_example({"atoms": g["atoms"], "formula": g["formula"]}, g) for g in golds]
    report = aggregate(golds, scores)
    assert report["grounded_accuracy"] == 1.0 and report["equivalence_accuracy"] == 1.0
    assert report["error_categories"]["correct"] == 30
    for key in ("exact_match", "atom_f1", "by_complexity", "main_connector_confusion"):
        assert key in report


def test_read_gold_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "dev.jsonl"
    good = {"input": "Llueve.", "atoms": {"p": "llueve"}, "formula": "p"}
    cases = [
        ({**good, "formula": "p ∧"}, "formula"),
        ({**good, "formula": "p ∧ q"}, "declares"),
        ({**good, "atoms": ["llueve"]}, "'atoms'"),
        ({**good, "alt": ["q"]}, r"alt\[0\]"),
        ({"atoms": {"p": "llueve"}, "formula": "p"}, "'input'"),
    ]
    for row, expected in cases:
        path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
        with pytest.raises(NanologicError, match=r"dev.jsonl: example 2: .*" + expected):
            read_gold(path)


def test_any_mapping_is_bounded_and_letter_blind():
    from nanologic.evaluation import equivalent_any_mapping
    from nanologic.logic import parse

    assert equivalent_any_mapping(parse("q → p"), parse("p → q"))
    assert not equivalent_any_mapping(parse("p ∧ q"), parse("p → q"))
    wide = parse(" ∧ ".join("pqrstuvw") + " ∧ p1 ∧ q1 ∧ r1")
    assert not equivalent_any_mapping(wide, parse("p ∧ q ∧ r ∧ s ∧ t ∧ u ∧ v ∧ w"))  # too many maps: no stall
