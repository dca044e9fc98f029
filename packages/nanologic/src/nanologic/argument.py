"""The original's "Verificador": decide an argument's validity by truth table and name its form.

Pure code, no model. Validity: no assignment makes every premise true and the conclusion false;
the first such assignment is shown as a counterexample. Forms are recognised by matching the
premises (in any order) and the conclusion against schemas whose letters stand for any formula.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from nanologic.logic import Atom, Binary, Node, Not, assignments, atoms, evaluate, parse, to_unicode

# (name, premises, conclusion); letters A-D are schematic variables.
VALID_FORMS = (
    ("modus ponens", ("A → B", "A"), "B"),
    ("modus tollens", ("A → B", "¬B"), "¬A"),
    ("silogismo hipotético", ("A → B", "B → C"), "A → C"),
    ("silogismo disyuntivo", ("A ∨ B", "¬A"), "B"),
    ("silogismo disyuntivo", ("A ∨ B", "¬B"), "A"),
    ("dilema constructivo", ("A → B", "C → D", "A ∨ C"), "B ∨ D"),
    ("dilema destructivo", ("A → B", "C → D", "¬B ∨ ¬D"), "¬A ∨ ¬C"),
    ("simplificación", ("A ∧ B",), "A"),
    ("simplificación", ("A ∧ B",), "B"),
    ("conjunción", ("A", "B"), "A ∧ B"),
    ("adición", ("A",), "A ∨ B"),
)
FALLACIES = (
    ("afirmación del consecuente", ("A → B", "B"), "A"),
    ("negación del antecedente", ("A → B", "¬A"), "¬B"),
    ("afirmación de un disyunto", ("A ∨ B", "A"), "¬B"),
    ("afirmación de un disyunto", ("A ∨ B", "B"), "¬A"),
    ("silogismo hipotético inválido", ("A → B", "A → C"), "B → C"),
    ("falacia de la conversa", ("A → B",), "B → A"),
    ("falacia de la inversa", ("A → B",), "¬A → ¬B"),
)
_SCHEMA_VARS = frozenset("ABCD")


def _match(schema: Node, formula: Node, binding: dict[str, Node]) -> bool:
    if isinstance(schema, Atom) and schema.name in _SCHEMA_VARS:
        bound = binding.get(schema.name)
        if bound is None:
            binding[schema.name] = formula
            return True
        return bound == formula
    if isinstance(schema, Not):
        return isinstance(formula, Not) and _match(schema.child, formula.child, binding)
    if isinstance(schema, Binary):
        return (
            isinstance(formula, Binary)
            and formula.op == schema.op
            and _match(schema.left, formula.left, binding)
            and _match(schema.right, formula.right, binding)
        )
    return False


def _lower(schema: str) -> Node:
    # Schema letters are upper case; the formula parser only knows lower-case atoms.
    node = parse(schema.translate(str.maketrans("ABCD", "abcd")))

    def up(n: Node) -> Node:
        if isinstance(n, Atom):
            return Atom(n.name.upper())
        if isinstance(n, Not):
            return Not(up(n.child))
        return Binary(n.op, up(n.left), up(n.right))

    return up(node)


def match_form(
    premises: Sequence[Node], conclusion: Node, forms: Sequence[tuple[str, tuple[str, ...], str]]
) -> str | None:
    """Name of the first form whose schema matches (premises in any order), else None."""
    for name, schema_premises, schema_conclusion in forms:
        if len(schema_premises) != len(premises):
            continue
        parsed = [_lower(p) for p in schema_premises]
        target = _lower(schema_conclusion)
        for order in itertools.permutations(premises):
            binding: dict[str, Node] = {}
            if all(_match(s, f, binding) for s, f in zip(parsed, order)) and _match(
                target, conclusion, binding
            ):
                return name
    return None


@dataclass
class ArgumentResult:
    valid: bool
    form: str | None  # a named valid form, when recognised
    fallacy: str | None  # a named formal fallacy, when recognised (only for invalid arguments)
    counterexample: dict[str, bool] | None  # premises true, conclusion false
    atoms: list[str]
    premises: list[str]
    conclusion: str

    def to_dict(self) -> dict:
        return {
            "valid": self.valid,
            "form": self.form,
            "fallacy": self.fallacy,
            "counterexample": self.counterexample,
            "premises": self.premises,
            "conclusion": self.conclusion,
        }


def check_argument(premises: Sequence[Node | str], conclusion: Node | str) -> ArgumentResult:
    """Validity by truth table over all atoms, plus the name of the form or fallacy."""
    prem = [parse(p) if isinstance(p, str) else p for p in premises]
    concl = parse(conclusion) if isinstance(conclusion, str) else conclusion
    names: list[str] = []
    for f in [*prem, concl]:
        names += [a for a in atoms(f) if a not in names]
    counterexample = None
    for row in assignments(names):
        if all(evaluate(p, row) for p in prem) and not evaluate(concl, row):
            counterexample = row
            break
    valid = counterexample is None
    return ArgumentResult(
        valid=valid,
        form=match_form(prem, concl, VALID_FORMS) if valid else None,
        fallacy=None if valid else match_form(prem, concl, FALLACIES),
        counterexample=counterexample,
        atoms=names,
        premises=[to_unicode(p) for p in prem],
        conclusion=to_unicode(concl),
    )
