import pytest

from nanologic.argument import check_argument


@pytest.mark.parametrize(
    ("premises", "conclusion", "form"),
    [
        (["p → q", "p"], "q", "modus ponens"),
        (["(p ∧ r) → q", "¬q"], "¬(p ∧ r)", "modus tollens"),
        (["p → q", "q → r"], "p → r", "silogismo hipotético"),
        (["p ∨ q", "¬p"], "q", "silogismo disyuntivo"),
        (["p → q", "r → s", "p ∨ r"], "q ∨ s", "dilema constructivo"),
        (["p", "p → q"], "q", "modus ponens"),
    ],
)
def test_valid_forms(premises, conclusion, form):
    result = check_argument(premises, conclusion)
    assert result.valid and result.counterexample is None
    assert result.form == form


@pytest.mark.parametrize(
    ("premises", "conclusion", "fallacy"),
    [
        (["p → q", "q"], "p", "afirmación del consecuente"),
        (["p → q", "¬p"], "¬q", "negación del antecedente"),
        (["p ∨ q", "p"], "¬q", "afirmación de un disyunto"),
    ],
)
def test_fallacies_have_counterexamples(premises, conclusion, fallacy):
    result = check_argument(premises, conclusion)
    assert not result.valid
    assert result.fallacy == fallacy
    row = result.counterexample
    from nanologic.logic import evaluate, parse

    assert all(evaluate(parse(p), row) for p in premises)
    assert not evaluate(parse(conclusion), row)


def test_unnamed_valid_argument():
    result = check_argument(["p ∧ q", "q → r"], "r ∨ s")
    assert result.valid and result.form is None
