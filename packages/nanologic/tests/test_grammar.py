"""The answer grammar (GBNF) and the grammar-constrained PyTorch decoder."""

import pytest
import torch

from nanologic.data import SPECIAL_TOKENS, prompt_text, record_from_raw, target_text
from nanologic.generator import generate
from nanologic.grammar import answer_grammar, grounded_grammar, indicative_variants, sentence_words

xgr = pytest.importorskip("xgrammar")


@pytest.fixture(scope="module")
def records():
    return [record_from_raw(e) for e in generate(200, seed=11)]


@pytest.fixture(scope="module")
def tokenizer(records):
    from lm_shared.tokenization import train_bpe

    texts = [prompt_text(r["natural_language_input"]) + target_text(r, False) for r in records]
    return train_bpe(texts, 700, SPECIAL_TOKENS)


@pytest.fixture(scope="module")
def compiler(tokenizer):
    from nanologic.grammar import GrammarCompiler

    return GrammarCompiler(tokenizer, stop_ids=[tokenizer.token_to_id("<|eos|>")])


def accepts(compiler, tokenizer, grammar: str, text: str) -> bool:
    """Whether the grammar accepts the token sequence of ``text`` and then ends (eos)."""
    matcher = xgr.GrammarMatcher(compiler.compile(grammar))
    return all(matcher.accept_token(t) for t in tokenizer.encode(text)) and matcher.is_terminated()


@pytest.mark.parametrize(
    ("sentence", "answer"),
    [
        # the subject pronoun after "si no," had been read as a verb, which cut the definition
        # before "salimos"
        (
            "Si llueve, me quedo en casa; si no, nosotras salimos.",
            "<|atoms|> p: llueve ± | q: me quedo en casa | r: nosotras salimos <|connectors|> →: si"
            " | ∧: si no | ¬: si no | →: si no <|formula|> (p → q) ∧ (¬p → r) <|eos|>",
        ),
        # no conjunction follows "que" at once: the generator's "Es mentira que y sea …" had its
        # gold refused
        (
            "Es mentira que y sea un número entero o el pianista acierte el resultado.",
            "<|atoms|> p: y es un número entero | q: el pianista acierta el resultado <|connectors|>"
            " ¬: es mentira que | ∨: o <|formula|> ¬(p ∨ q) <|eos|>",
        ),
    ],
)
def test_words_once_misread_are_read_as_the_gold_reads_them(tokenizer, compiler, sentence, answer):
    assert accepts(compiler, tokenizer, grounded_grammar(sentence), answer)


def test_de_lo_contrario_says_a_negation():
    from nanologic.grammar import says_a_negation

    assert says_a_negation("Si llueve, me quedo; de lo contrario, salgo.")


def test_gold_answers_are_accepted(records, tokenizer, compiler):
    fmt = answer_grammar()
    refused = []
    for r in records:
        answer = target_text(r, with_thought=False)
        sentence = r["natural_language_input"]
        assert accepts(compiler, tokenizer, fmt, answer), answer
        assert accepts(compiler, tokenizer, grounded_grammar(sentence, rule_bounds=False), answer), r
        if not accepts(compiler, tokenizer, grounded_grammar(sentence), answer):
            refused.append(sentence)
    # the rules' clause count bounds the atom list, and it is wrong for a few generator sentences
    # (0.5 % of a training split's: "Aunque o bien A, o bien B, o bien C, o bien D" read as five
    # clauses); 1 of these 200
    assert len(refused) <= 2, refused


def test_relations_in_symbols_are_written_and_read(tokenizer, compiler):
    # "<" standing alone is a relation (it cannot start "<|eos|>"); "≠" is read as ¬ over "="
    sentence = "Si x ≠ 2, entonces z − n < n."
    answer = "<|atoms|> p: x = 2 ¬ | q: z − n < n <|connectors|> →: si | ¬: ≠ <|formula|> ¬p → q <|eos|>"
    assert accepts(compiler, tokenizer, answer_grammar(), answer)
    assert accepts(compiler, tokenizer, grounded_grammar(sentence), answer)
    assert not accepts(compiler, tokenizer, grounded_grammar(sentence), answer.replace("x = 2", "x = 3"))
    assert not accepts(compiler, tokenizer, answer_grammar(), answer.replace("n < n", "n <n"))


@pytest.mark.parametrize(
    "answer",
    [
        "<|atoms|> p: llueve <|connectors|>  <|formula|> q <|eos|>",  # undeclared letter
        "<|atoms|> q: llueve <|connectors|>  <|formula|> q <|eos|>",  # letters out of order
        "<|atoms|> p: llueve | q: nieva <|connectors|> ∧: y <|formula|> (p ∧ q <|eos|>",  # unbalanced
        "<|atoms|> p: llueve | q: nieva <|connectors|> ∧: y <|formula|> p ∧ ∧ q <|eos|>",
        "<|atoms|> p: llueve | q: nieva <|connectors|> ∧: y <|formula|> p ∧ q<|eos|>",  # spacing
        "<|atoms|> p: llueve <|formula|> p <|eos|>",  # no connectors section
    ],
)
def test_malformed_answers_are_rejected(tokenizer, compiler, answer):
    assert not accepts(compiler, tokenizer, answer_grammar(), answer)


def test_grounded_definitions_come_from_the_sentence(tokenizer, compiler):
    sentence = "Si no llueve y Marta trabaje, el servidor se cae."
    ok = "<|atoms|> p: llueve | q: Marta trabaja | r: el servidor se cae <|connectors|> ¬: no | ∧: y | →: si <|formula|> (¬p ∧ q) → r <|eos|>"
    assert accepts(compiler, tokenizer, grounded_grammar(sentence), ok)
    invented = ok.replace("el servidor se cae", "el DNS resuelve el dominio")
    assert accepts(compiler, tokenizer, answer_grammar(), invented)
    assert not accepts(compiler, tokenizer, grounded_grammar(sentence), invented)


def _answer(definitions: list[str], formula: str, connectors: str = "") -> str:
    atoms = " | ".join(f"{letter}: {d}" for letter, d in zip("pqrs", definitions))
    return f"<|atoms|> {atoms} <|connectors|> {connectors} <|formula|> {formula} <|eos|>"


def test_the_connector_list_is_bounded(tokenizer, compiler):
    # unbounded, a default model looped in the list ("∧: no Por lo tanto Por lo tanto …", formulas
    # written as cues) until the answer's token budget ran out, and its formula did not parse
    from nanologic.grammar import MAX_CONNECTORS, MAX_CUE_WORDS

    definitions = ["llueve", "Marta trabaja", "el servidor se cae"]

    def answer(connectors: str) -> str:
        return _answer(definitions, "(¬p ∧ q) → r", connectors)

    most = " | ".join(["∧: y"] * MAX_CONNECTORS)
    longest = "∧: " + " ".join(["y"] * MAX_CUE_WORDS)
    too_many = " | ".join(["∧: y"] * (MAX_CONNECTORS + 1))
    too_long = "∧: " + " ".join(["y"] * (MAX_CUE_WORDS + 1))
    for grammar in (answer_grammar(), grounded_grammar("Si no llueve y Marta trabaja, el servidor se cae.")):
        for said in ("¬: no | ∧: y | →: si...entonces", "", most, longest):
            assert accepts(compiler, tokenizer, grammar, answer(said)), said
        for wrong in (too_many, too_long):
            assert not accepts(compiler, tokenizer, grammar, answer(wrong)), wrong


def test_the_generators_connector_lists_keep_the_grammars_bounds():
    from nanologic.grammar import MAX_CONNECTORS, MAX_CUE_WORDS

    records = [record_from_raw(e) for e in generate(3000, seed=5)]
    assert max(len(r["connectors"]) for r in records) <= MAX_CONNECTORS
    assert max(len(cue.split()) for r in records for _, cue in r["connectors"]) <= MAX_CUE_WORDS


def test_grounded_definitions_read_the_sentence_in_order(tokenizer, compiler):
    """Words in the sentence's order, one jump back (a repeated subject or verb), no connective."""
    grammar = grounded_grammar("Luis come pan y Ana también.")
    gapped = _answer(["Luis come pan", "Ana come pan"], "p ∧ q", "∧: y")
    assert accepts(compiler, tokenizer, grammar, gapped)  # "come pan" taken back once
    for wrong in (
        ["pan Ana come Luis", "Ana come pan"],  # two jumps back
        ["Luis Luis Luis", "Ana come pan"],  # a loop on one word
        ["Luis come pan pan", "Ana come pan"],  # the jump back to the word just written
    ):
        assert not accepts(compiler, tokenizer, grammar, _answer(wrong, "p ∧ q", "∧: y")), wrong
        assert accepts(compiler, tokenizer, answer_grammar(), _answer(wrong, "p ∧ q", "∧: y"))
    sentence = "Si no llueve, Ana canta o baila."
    grammar = grounded_grammar(sentence)
    right = _answer(["llueve", "Ana canta", "Ana baila"], "¬p → (q ∨ r)", "¬: no | →: si | ∨: o")
    assert accepts(compiler, tokenizer, grammar, right)
    for merged in (["no llueve", "Ana canta"], ["llueve", "Ana canta o baila"], ["si llueve", "Ana canta"]):
        assert not accepts(compiler, tokenizer, grammar, _answer(merged, "p → q", "→: si")), merged


def test_tanto_si_a_como_si_b_c_is_two_conditionals():
    """ "Tanto si llueve como si nieva, la excursión se suspende." (dev_real) was written ``p → (q ∧
    r)``: read as "si A, C; si B, C", its formula is noted as the generator writes it, (A → C) ∧
    (B → C)."""
    from nanologic.grammar import conjunction_notes

    assert conjunction_notes("Tanto si llueve como si nieva, la excursión se suspende.") == [
        "# conjunction parts 2",
        "# argument compound 1 → + llover / + excur suspender",
        "# argument compound 2 → + nevar / + excur suspender",
    ]
    assert conjunction_notes("Tanto Ana como Luis cantan.") == []


def test_a_verbs_definition_goes_on_past_no_other_clauses_verb(tokenizer, compiler):
    """After a verb, a definition may skip words but not another clause's verb: the model took the
    first clause's verb for the second's ("Óscar canta el microscopio" for "… o Óscar use el
    microscopio"). A verb coordinated with the next one, a determiner and a subject are passed."""
    grammar = grounded_grammar("Si Ana canta, Luis usa el coche.")
    assert accepts(
        compiler, tokenizer, grammar, _answer(["Ana canta", "Luis usa el coche"], "p → q", "→: si")
    )
    wrong = _answer(["Ana canta", "Luis canta el coche"], "p → q", "→: si")
    assert not accepts(compiler, tokenizer, grammar, wrong)
    assert accepts(compiler, tokenizer, answer_grammar(), wrong)
    negated = ["¬: no | ∧: y", "¬p ∧ ¬q"]
    for sentence, definitions, (connectors, formula) in (
        (
            "Tengo que estudiar y limpiar el cuarto.",
            ["tengo que estudiar", "tengo que limpiar el cuarto"],
            ["∧: y", "p ∧ q"],
        ),
        (
            "Bruno no buscará ni una cámara este año ni unas gafas.",
            ["Bruno buscará una cámara este año ¬", "Bruno buscará unas gafas ¬"],
            negated,
        ),
        (
            "Ellas no van a clase y no están atentas.",
            ["ellas van a clase ¬", "ellas están atentas ¬"],
            negated,
        ),
    ):
        answer = _answer(definitions, formula, connectors)
        assert accepts(compiler, tokenizer, grounded_grammar(sentence), answer), sentence


def test_a_definition_does_not_end_on_a_verb_before_its_complement(tokenizer, compiler):
    """A verb the sentence follows at once by a determiner, a preposition or a number opens its
    complement there: no definition ends on it (the default model wrote "Consuelo pierde" for
    "… no pierde el empleo", "habéis salido" for "… habéis salido con Luis"), nor does any word
    the sentence follows by a preposition that goes on with it ("Vicente viaja al norte" for "…
    al norte del país"). Before a bound (a coordinator, a comma) it may."""
    for sentence, right, wrong, (connectors, formula) in (
        (
            "Si Consuelo no pierde el empleo, Ana canta.",
            ["Consuelo pierde el empleo ¬", "Ana canta"],
            ["Consuelo pierde ¬", "Ana canta"],
            ["¬: no | →: si", "¬p → q"],
        ),
        (
            "Si habéis salido con Luis, Ana canta.",
            ["habéis salido con Luis", "Ana canta"],
            ["habéis salido", "Ana canta"],
            ["→: si", "p → q"],
        ),
        (
            "Si Vicente viaja al norte del país, no se quedará en la capital.",
            ["Vicente viaja al norte del país", "Vicente se quedará en la capital ¬"],
            ["Vicente viaja al norte", "Vicente se quedará en la capital ¬"],
            ["¬: no | →: si", "p → ¬q"],
        ),
        (
            "Si mi prima fue al concierto este año, llueve.",
            ["mi prima fue al concierto este año", "llueve"],
            ["mi prima fue al concierto", "llueve"],
            ["→: si", "p → q"],
        ),
        (
            "Si Ana canta y Luis baila, llueve.",
            ["Ana canta", "Luis baila", "llueve"],
            None,
            ["∧: y | →: si", "(p ∧ q) → r"],
        ),
    ):
        grammar = grounded_grammar(sentence)
        assert accepts(compiler, tokenizer, grammar, _answer(right, formula, connectors)), sentence
        if wrong is not None:
            assert not accepts(compiler, tokenizer, grammar, _answer(wrong, formula, connectors)), sentence


def test_a_definition_holds_no_finite_verb_of_the_next_clause(tokenizer, compiler):
    """Past a clause's bound (a coordinator, a connective, a cue, a comma), a definition that has
    its finite verb takes no other, nor one after the jump back (dev_real: "suben los precios
    suben los sueldos", "Brayan está estudiando tiene examen"). An infinitive or a participle
    sharing the verb, and a noun that is also a verb form, are passed."""
    for sentence, right, wrong, (connectors, formula) in (
        (
            "Si suben los precios y no suben los sueldos, la gente compra menos.",
            ["suben los precios", "suben los sueldos", "la gente compra menos"],
            ["suben los precios suben los sueldos", "la gente compra menos"],
            ("→: si | ∧: y | ¬: no", "(p ∧ ¬q) → r"),
        ),
        (
            "Brayan está estudiando porque tiene examen y está amenazado.",
            ["Brayan está estudiando", "Brayan tiene examen", "Brayan está amenazado"],
            ["Brayan está estudiando tiene examen", "Brayan está amenazado"],
            ("→: porque | ∧: y", "(q ∧ r) → p"),
        ),
    ):
        grammar = grounded_grammar(sentence)
        assert accepts(compiler, tokenizer, grammar, _answer(right, formula, connectors)), sentence
        merged = _answer(wrong, "q → p" if "porque" in sentence else "p → q", connectors)
        assert not accepts(compiler, tokenizer, grammar, merged), wrong
        assert accepts(compiler, tokenizer, answer_grammar(), merged)
    for sentence, definitions in (
        (
            "O Juan será reelegido o destinado para un puesto nuevo.",
            ["Juan será reelegido", "Juan será destinado"],
        ),
        ("Tengo que estudiar y limpiar el cuarto.", ["tengo que estudiar", "tengo que limpiar el cuarto"]),
        ("Vamo habló estadística y dibujo.", ["Vamo habló estadística", "Vamo habló dibujo"]),
    ):
        answer = _answer(
            definitions,
            "p ∨ q" if sentence.startswith("O ") else "p ∧ q",
            "∨: o" if "O " in sentence else "∧: y",
        )
        assert accepts(compiler, tokenizer, grounded_grammar(sentence), answer), sentence
    # without a bound, a second finite verb beyond doubt needs a word that subordinates it
    grammar = grounded_grammar("Si trabajas o estudias te preparas mejor para el futuro.")
    right = _answer(
        ["trabajas", "estudias", "te preparas mejor para el futuro"], "(p ∨ q) → r", "→: si | ∨: o"
    )
    merged = _answer(["trabajas", "estudias te preparas mejor para el futuro"], "p ∨ q", "∨: o")
    assert accepts(compiler, tokenizer, grammar, right)
    assert not accepts(compiler, tokenizer, grammar, merged)
    assert accepts(compiler, tokenizer, answer_grammar(), merged)
    # a first person's "-o" present that opens a clause is a verb ("dibujo" after "y" may be a noun)
    grammar = grounded_grammar("Si salgo electo recibirán un aumento.")
    assert accepts(
        compiler, tokenizer, grammar, _answer(["salgo electo", "recibirán un aumento"], "p → q", "→: si")
    )
    merged = _answer(["salgo electo recibirán un aumento", "recibirán un aumento"], "p → q", "→: si")
    assert not accepts(compiler, tokenizer, grammar, merged)
    said = _answer(["Juan dice que Ana vendrá"], "p")
    assert accepts(compiler, tokenizer, grounded_grammar("Juan dice que Ana vendrá."), said)


def test_a_copula_is_a_clauses_finite_verb(tokenizer, compiler):
    """ "es", "son", "está" count as a clause's finite verb: "el sol brilla es aves" for "Los
    murciélagos son aves y el sol no brilla." (dev_real) holds two clauses' verbs."""
    grammar = grounded_grammar("Los murciélagos son aves y el sol no brilla.")
    connectors = "∧: y | ¬: no"
    right = _answer(["los murciélagos son aves", "el sol brilla ¬"], "p ∧ ¬q", connectors)
    assert accepts(compiler, tokenizer, grammar, right)
    merged = _answer(["los murciélagos son aves", "el sol brilla son aves ¬"], "p ∧ ¬q", connectors)
    assert not accepts(compiler, tokenizer, grammar, merged)
    assert accepts(compiler, tokenizer, answer_grammar(), merged)


def test_a_definition_with_its_verb_ends_with_its_sentence(tokenizer, compiler):
    """Once a definition holds a finite verb, it writes nothing after the sentence's end, going on
    or going back ("tenemos clase Hoy" for "… entonces tenemos clase. Hoy es miércoles.",
    dev_real); a subject said in an earlier sentence is still lent to a later verb, and an
    abbreviation's period ends no sentence."""
    grammar = grounded_grammar("Si llueve, Ana canta. Luis baila.")
    connectors = "→: si | ∧: y"
    right = _answer(["llueve", "Ana canta", "Luis baila"], "(p → q) ∧ r", connectors)
    assert accepts(compiler, tokenizer, grammar, right)
    for merged in (["llueve", "Ana canta Luis", "Luis baila"], ["llueve", "Ana canta", "Luis baila Ana"]):
        answer = _answer(merged, "(p → q) ∧ r", connectors)
        assert not accepts(compiler, tokenizer, grammar, answer), merged
        assert accepts(compiler, tokenizer, answer_grammar(), answer)
    lent = _answer(
        ["la tierra es un planeta", "la tierra posee luz propia ¬"], "p → ¬q", "→: por lo tanto | ¬: no"
    )
    assert accepts(
        compiler,
        tokenizer,
        grounded_grammar("La tierra es un planeta. Por lo tanto, no posee luz propia."),
        lent,
    )
    abbreviated = _answer(["Ana llamó al Dr Pérez"], "p")
    assert accepts(compiler, tokenizer, grounded_grammar("Ana llamó al Dr. Pérez."), abbreviated)


def test_a_definition_never_ends_on_a_copula_or_a_pronoun_before_a_verb(tokenizer, compiler):
    """ "tú estás" for "Tú estás despierto o estás durmiendo" (dev_real), "la célula se dividía se"."""
    for sentence, right, cut, (connectors, formula) in (
        (
            "Tú estás despierto o estás durmiendo.",
            ["tú estás despierto", "tú estás durmiendo"],
            ["tú estás", "tú estás durmiendo"],
            ("∨: o", "p ∨ q"),
        ),
        (
            "La célula muere o no se divide.",
            ["la célula muere", "la célula se divide"],
            ["la célula muere", "la célula se divide se"],
            ("∨: o | ¬: no", "p ∨ ¬q"),
        ),
    ):
        grammar = grounded_grammar(sentence)
        assert accepts(compiler, tokenizer, grammar, _answer(right, formula, connectors)), sentence
        assert not accepts(compiler, tokenizer, grammar, _answer(cut, formula, connectors)), cut
        assert accepts(compiler, tokenizer, answer_grammar(), _answer(cut, formula, connectors))


def test_grounded_definitions_split_at_y_between_clauses(tokenizer, compiler):
    """ "y" joining clauses or an elided coordination is a cue, not part of a definition."""
    for sentence, merged, split in (
        (
            "El cielo es azul y los campos son verdes.",
            ["el cielo es azul y los campos son verdes"],
            ["el cielo es azul", "los campos son verdes"],
        ),
        (
            "Nicanor Parra es escritor y matemático.",
            ["Nicanor Parra es escritor y matemático"],
            ["Nicanor Parra es escritor", "Nicanor Parra es matemático"],
        ),
    ):
        grammar = grounded_grammar(sentence)
        assert not accepts(compiler, tokenizer, grammar, _answer(merged, "p"))
        assert accepts(compiler, tokenizer, grammar, _answer(split, "p ∧ q", "∧: y"))
    # between the terms of arithmetic, and as a variable, "y" stays
    for sentence, definitions in (
        ("Si la suma de 5 y 12 es 17, llueve.", ["la suma de 5 y 12 es 17", "llueve"]),
        ("Si x + y = 3, llueve.", ["x + y = 3", "llueve"]),
        ("Si y es positivo, x es negativo.", ["y es positivo", "x es negativo"]),
    ):
        answer = _answer(definitions, "p → q", "→: si")
        assert accepts(compiler, tokenizer, grounded_grammar(sentence), answer), sentence


def test_grounded_definitions_of_a_mathematical_sentence(tokenizer, compiler):
    # a model without polarity marks writes the negation of "x ≠ 2" in its formula
    grammar = grounded_grammar("Si x ≠ 2, entonces y > 1.", polarity_marks=False)
    answer = _answer(["x = 2", "y > 1"], "¬p → q", "¬: ≠ | →: si")
    assert accepts(compiler, tokenizer, grammar, answer)
    assert not accepts(compiler, tokenizer, grammar, _answer(["x = 3", "y > 1"], "¬p → q"))
    assert not accepts(compiler, tokenizer, grammar, _answer(["x ≠ 2", "y > 1"], "p → q"))  # affirmative


def test_no_negation_where_the_sentence_says_none(tokenizer, compiler):
    affirmative = grounded_grammar("Está ventoso y hace frío.")
    right = _answer(["está ventoso", "hace frío"], "p ∧ q", "∧: y")
    assert accepts(compiler, tokenizer, affirmative, right)
    for wrong in (
        _answer(["está ventoso", "hace frío"], "¬(p ∧ q)", "∧: y"),
        _answer(["está ventoso ¬", "hace frío"], "p ∧ q", "∧: y"),  # a polarity mark
        _answer(["está ventoso", "hace frío"], "p ∧ q", "∧: y | ¬: y"),  # a declared ¬
    ):
        assert not accepts(compiler, tokenizer, affirmative, wrong), wrong
    for sentence in ("Nunca está ventoso y hace frío.", "Es falso que esté ventoso y haga frío."):
        negated = _answer(["está ventoso", "hace frío"], "¬(p ∧ q)", "¬: nunca")
        assert accepts(compiler, tokenizer, grounded_grammar(sentence), negated), sentence


def test_only_the_connectives_the_sentence_can_say(tokenizer, compiler):
    grammar = grounded_grammar("Está ventoso y hace frío.")
    atoms = ["está ventoso", "hace frío"]
    assert accepts(compiler, tokenizer, grammar, _answer(atoms, "p ∧ q", "∧: y"))
    for formula in ("q → p", "p ∨ q", "p ↔ q"):
        assert not accepts(compiler, tokenizer, grammar, _answer(atoms, formula)), formula
    assert not accepts(compiler, tokenizer, grammar, _answer(atoms, "p ∧ q", "∧: y | →: y"))
    either = _answer(["hemos de llegar allí antes", "otro recibirá el empleo"], "p ∨ q", "∨: u")
    assert accepts(
        compiler,
        tokenizer,
        grounded_grammar("Hemos de llegar allí antes, u otro recibirá el empleo."),
        either,
    )
    iff = _answer(["llueve", "me mojo"], "p ↔ q", "↔: si y solo si")
    assert accepts(compiler, tokenizer, grounded_grammar("Si y sólo si llueve, me mojo."), iff)


def test_an_argument_is_its_premises_then_its_conclusion(tokenizer, compiler):
    sentence = "Si está soleado, entonces es de día. No es de día. Por lo tanto, no está soleado."
    grammar = grounded_grammar(sentence)
    atoms = ["está soleado", "es de día"]
    assert accepts(compiler, tokenizer, grammar, _answer(atoms, "((p → q) ∧ ¬q) → ¬p", "→: si | ¬: no"))
    for formula in ("p → q", "(p → q) ∧ ¬q", "(p → q) → ¬p", "¬q → ¬p"):  # two premises, then →
        assert not accepts(compiler, tokenizer, grammar, _answer(atoms, formula, "→: si")), formula
    # one premise before the conclusion; a sentence without a conclusion is free
    one = _answer(["llueve", "me mojo"], "p → q", "→: luego")
    assert accepts(compiler, tokenizer, grounded_grammar("Llueve. Luego, me mojo."), one)
    free = _answer(["llueve", "me mojo"], "(p → q) ∧ p", "→: si")
    assert accepts(compiler, tokenizer, grounded_grammar("Si llueve, me mojo. Llueve."), free)


def test_two_clauses_joined_by_a_connective_are_two_atoms(tokenizer, compiler):
    sentence = "Hemos de llegar allí antes, u otro recibirá el empleo."
    two = _answer(["hemos de llegar allí antes", "otro recibirá el empleo"], "p ∨ q", "∨: u")
    assert accepts(compiler, tokenizer, grounded_grammar(sentence), two)
    assert not accepts(
        compiler, tokenizer, grounded_grammar(sentence), _answer(["hemos de llegar allí antes"], "p")
    )
    # a "y" after a noun joins two things said of the subject, even before a number
    sentence = "Los caballos poseen una cola y 4 patas."
    one = _answer(["los caballos poseen una cola y 4 patas"], "p")
    assert not accepts(compiler, tokenizer, grounded_grammar(sentence), one)
    two = _answer(["los caballos poseen una cola", "los caballos poseen 4 patas"], "p ∧ q", "∧: y")
    assert accepts(compiler, tokenizer, grounded_grammar(sentence), two)
    # a conditional's condition and consequent, whatever joins them (a default run had answered
    # this with one atom)
    sentence = "Tener entrada es condición necesaria para entrar al concierto."
    two = _answer(["tienes entrada", "entras al concierto"], "q → p", "→: es condición necesaria para")
    assert accepts(compiler, tokenizer, grounded_grammar(sentence), two)
    one = _answer(["tienes entrada"], "p", "→: es condición necesaria para")
    assert not accepts(compiler, tokenizer, grounded_grammar(sentence), one)
    # one atom said twice, a "y" between numbers, a sentence without a connective
    for sentence, answer in (
        ("Hablo y no hablo.", _answer(["hablo"], "p ∧ ¬p", "∧: y | ¬: no")),
        ("Mi tía suma 54 y 82 cada semana.", _answer(["mi tía suma 54 y 82 cada semana"], "p")),
        ("Es primavera.", _answer(["es primavera"], "p")),
    ):
        assert accepts(compiler, tokenizer, grounded_grammar(sentence), answer), sentence


def test_a_definition_never_ends_on_a_word_that_needs_a_complement(tokenizer, compiler):
    sentence = "La enfermedad la provocó el tabaco o los productos con los que trabaja."
    grammar = grounded_grammar(sentence)
    whole = ["la enfermedad la provocó el tabaco", "los productos con los que trabaja"]
    assert accepts(compiler, tokenizer, grammar, _answer(whole, "p ∨ q", "∨: o"))
    for cut in (["la enfermedad la provocó el", whole[1]], [whole[0], "los productos con los que"]):
        assert not accepts(compiler, tokenizer, grammar, _answer(cut, "p ∨ q", "∨: o")), cut
    # a function word stands for itself: no subjunctive-to-indicative guess "qua" for "que"
    assert "qua" not in {w.lower() for w in sentence_words(sentence)}


def test_a_definition_is_no_bare_noun_phrase(tokenizer, compiler):
    """A definition ends once it holds a word that may be a verb (or a relation, or a word that is
    no part of a noun phrase): a new user's "Si el coche no arranca, …" was answered "p: el coche"."""
    sentence = "Si el coche no arranca, llamo al taller y tomo el autobús."
    grammar = grounded_grammar(sentence)
    whole = ["el coche arranca ¬", "llamo al taller", "tomo el autobús"]
    connectors = "¬: no | →: si | ∧: y"
    assert accepts(compiler, tokenizer, grammar, _answer(whole, "¬p → (q ∧ r)", connectors))
    for cut in (["el coche ¬", *whole[1:]], [*whole[:2], "el autobús"]):
        assert not accepts(compiler, tokenizer, grammar, _answer(cut, "¬p → (q ∧ r)", connectors)), cut
    # a relation is a clause, and a sentence without any verb-like word keeps every ending
    assert accepts(
        compiler, tokenizer, grounded_grammar("x = 2 o x = 3."), _answer(["x = 2", "x = 3"], "p ∨ q", "∨: o")
    )
    assert accepts(compiler, tokenizer, grounded_grammar("El sol."), _answer(["El sol"], "p"))


def test_a_definition_starting_in_an_elided_conjunct_goes_on_past_it(tokenizer, compiler):
    """ "té y fruta", "en Oaxaca y en Nopiane", "ni Mogrecuee ni Ignacio pierden": a conjunct
    without a verb shares one said elsewhere, so it is no definition alone."""
    for sentence, fragment, whole in (
        (
            "La médica compró té y fruta.",
            ["la médica compró té", "fruta"],
            ["la médica compró té", "la médica compró fruta"],
        ),
        (
            "Carla trabajará en Oaxaca y en Nopiane.",
            ["Carla trabajará en Oaxaca", "en Nopiane"],
            ["Carla trabajará en Oaxaca", "Carla trabajará en Nopiane"],
        ),
        (
            "Ni Mogrecuee ni Ignacio pierden las elecciones.",
            ["Mogrecuee", "Ignacio pierde las elecciones"],
            ["Mogrecuee pierde las elecciones", "Ignacio pierde las elecciones"],
        ),
    ):
        grammar = grounded_grammar(sentence)
        connectors = "¬: ni | ∧: ni" if sentence.startswith("Ni") else "∧: y"
        formula = "¬p ∧ ¬q" if sentence.startswith("Ni") else "p ∧ q"
        assert accepts(compiler, tokenizer, grammar, _answer(whole, formula, connectors)), sentence
        assert not accepts(compiler, tokenizer, grammar, _answer(fragment, formula, connectors)), sentence
    # a conjunct that is a clause, its verb known to the lexicon or not, stays a definition
    for sentence, definitions in (
        ("Los murciélagos son aves y el sol brilla.", ["los murciélagos son aves", "el sol brilla"]),
        ("O vienes o te quedas.", ["vienes", "te quedas"]),
        ("Juana tiene trece años y Rosa quince.", ["Juana tiene trece años", "Rosa tiene quince"]),
    ):
        connectors = "∨: o" if sentence.startswith("O") else "∧: y"
        formula = "p ∨ q" if sentence.startswith("O") else "p ∧ q"
        answer = _answer(definitions, formula, connectors)
        assert accepts(compiler, tokenizer, grounded_grammar(sentence), answer), sentence


def test_past_a_clauses_bound_a_definition_takes_no_word_of_another_clause_with_its_verb(tokenizer, compiler):
    """ "perseveras en tus decisiones éxito te sonríe": after its finite verb and a clause's bound,
    a definition wrote the words of a clause with a verb of its own; "perseveras", a verb outside
    the lexicon, is read as one after "si"."""
    sentence = (
        "Si perseveras en tus decisiones y no cedes al desaliento, comprobarás cómo el éxito te sonríe."
    )
    whole = ["perseveras en tus decisiones", "cedes al desaliento ¬", "comprobarás cómo el éxito te sonríe"]
    connectors = "→: si | ∧: y | ¬: no"
    grammar = grounded_grammar(sentence)
    assert accepts(compiler, tokenizer, grammar, _answer(whole, "(p ∧ ¬q) → r", connectors))
    for run_on in ("perseveras en tus decisiones éxito te sonríe", "perseveras en tus decisiones éxito"):
        answer = _answer([run_on, *whole[1:]], "(p ∧ ¬q) → r", connectors)
        assert not accepts(compiler, tokenizer, grammar, answer), run_on
    # a list's elided conjunct is still read past its bound ("compré leche")
    sentence = "Compré pan, leche y huevos."
    answer = _answer(["compré pan", "compré leche", "compré huevos"], "p ∧ q ∧ r", "∧: y")
    assert accepts(compiler, tokenizer, grounded_grammar(sentence), answer)


def test_a_definition_holds_one_conjunct_of_tanto_como_and_ni_ni(tokenizer, compiler):
    """ "tanto A como B V", "ni A ni B V": each definition has one subject with the predicate they
    share; "como" there is the cue, not the verb "comer", and no definition runs from A into B."""
    for sentence, whole, merged, formula, connectors in (
        (
            "Tanto Consuelo como los jugadores entregan el informe.",
            ["Consuelo entrega el informe", "los jugadores entregan el informe"],
            ["Consuelo como los jugadores entregan el informe", "Consuelo los jugadores entregan el informe"],
            "p ∧ q",
            "∧: tanto...como",
        ),
        (
            "Ni Idetiasvea ni Rebeca corrían.",
            ["Idetiasvea corría", "Rebeca corría"],
            ["Idetiasvea Rebeca corría"],
            "¬p ∧ ¬q",
            "¬: ni | ∧: ni",
        ),
    ):
        grammar = grounded_grammar(sentence)
        assert accepts(compiler, tokenizer, grammar, _answer(whole, formula, connectors)), sentence
        for first in merged:
            answer = _answer([first, whole[1]], formula, connectors)
            assert not accepts(compiler, tokenizer, grammar, answer), first


def test_an_expression_is_written_whole_and_a_negated_one_takes_the_mark(tokenizer, compiler):
    """An equation is one proposition: no definition holds a piece of it ("x", "x 2", "= 2") or
    runs two together; "x ≠ y" is the atom "x = y" with the mark ¬ (± where the sentence also
    affirms it)."""
    sentence = "Si x ≠ y e y ≠ z, entonces x + y > z y z = 1."
    grammar = grounded_grammar(sentence)
    right = ["x = y ¬", "y = z ¬", "x + y > z", "z = 1"]
    assert accepts(compiler, tokenizer, grammar, _answer(right, "(p ∧ q) → (r ∧ s)", "→: si"))
    for wrong in (
        ["x = y", *right[1:]],  # a negated expression without its mark
        ["x = y ±", *right[1:]],  # mixed, where the sentence never affirms "x = y"
        ["x ¬", *right[1:]],  # a piece of an expression
        [*right[:2], "x + y", "z = 1"],
        [*right[:2], "x + y > z z = 1"],  # two expressions run together
        [*right[:2], "x + y > z y z = 1"],  # the conjunction between them
        ["x = y y = z ¬", *right[2:]],
    ):
        assert not accepts(compiler, tokenizer, grammar, _answer(wrong, "(p ∧ q) → (r ∧ s)")), wrong
    both = _answer(["x = 2 ±", "llueve"], "(p ∨ ¬p) → q")
    assert accepts(compiler, tokenizer, grounded_grammar("Si x = 2 o x ≠ 2, llueve."), both)
    # the words of an expression that is not one stay words: "la suma de 5 y 12", the variable "y"
    assert accepts(
        compiler,
        tokenizer,
        grounded_grammar("Si la suma de 5 y 12 es 17, llueve."),
        _answer(["la suma de 5 y 12 es 17", "llueve"], "p → q"),
    )


def test_normalisation_table():
    assert {"valida", "valide"} <= indicative_variants("valide")
    assert {"hay", "ha"} <= indicative_variants("haya")
    assert "llega" in indicative_variants("llegue")
    assert "crece" in indicative_variants("crezca")
    assert "ejecutó" in indicative_variants("ejecutado")
    words = sentence_words("Que la VPN esté activa.")
    assert {"que", "la", "VPN", "está", "activa"} <= set(words)


@pytest.mark.llamacpp
def test_llamacpp_reads_the_grammars():
    llama_cpp = pytest.importorskip("llama_cpp")
    llama_cpp.LlamaGrammar.from_string(answer_grammar(), verbose=False)
    llama_cpp.LlamaGrammar.from_string(grounded_grammar("¿Llueve o «nieva» en 2024?"), verbose=False)


def test_constrained_decoding_follows_the_grammar(tokenizer, records):
    """A random model writes junk freely; under the mask it writes the answer's format."""
    from nanologic.inference import Formalizer
    from nanologic.model import NanoLogic, build_config

    torch.manual_seed(0)
    model = NanoLogic(build_config("tiny", tokenizer.vocab_size)).eval()
    sentences = [r["natural_language_input"] for r in records[:6]]
    free = Formalizer(model, tokenizer, max_new_tokens=60, repair_tries=0, constraint=None).formalize(
        sentences
    )
    assert not any(r["raw"].startswith("<|atoms|> p: ") for r in free)
    for constraint in ("format", "grounded"):
        fmt = Formalizer(model, tokenizer, max_new_tokens=40, constraint=constraint)
        for sentence, result in zip(sentences, fmt.formalize(sentences, batch_size=4)):
            assert result["raw"].startswith("<|atoms|> p: "), result["raw"]
            if constraint == "grounded":
                allowed = set(sentence_words(sentence))
                words = " ".join(result["atoms"].values()).split()
                if "<|connectors|>" not in result["raw"]:
                    words = words[:-1]  # cut by max_new_tokens
                assert set(words) <= allowed, (sentence, result["raw"])


def test_mask_allows_only_declared_letters_and_eos_at_the_end(tokenizer, compiler):
    from nanologic.grammar import GrammarLogitsProcessor

    prefix = "<|atoms|> p: llueve | q: nieva <|connectors|> ∧: y <|formula|>"
    ids = tokenizer.encode(prefix)
    proc = GrammarLogitsProcessor(compiler, [answer_grammar()], prompt_len=0)
    gen = torch.Generator().manual_seed(0)
    for k in range(len(ids)):  # feed the prefix one token at a time, as generate() does
        logits = torch.randn(1, tokenizer.vocab_size, generator=gen)
        masked = proc(torch.tensor([ids[:k]]), logits)
        assert torch.isfinite(masked[0, ids[k]]), tokenizer.decode(ids[: k + 1])
    masked = proc(torch.tensor([ids]), torch.zeros(1, tokenizer.vocab_size))
    allowed = {tokenizer.decode([i]) for i in torch.isfinite(masked[0]).nonzero().flatten().tolist()}
    allowed = {
        a for a in allowed if "\ufffd" not in a
    }  # a byte token that starts "¬" decodes alone as U+FFFD
    # a lone space may start "¬" where this small vocabulary has no " ¬" (see the next test)
    assert allowed and all(a.lstrip(" ")[:1] in {"p", "q", "¬", "(", ""} for a in allowed), allowed
    assert not {"r", " r"} & allowed
    # After a complete formula and its final space, eos is allowed.
    done = tokenizer.encode(prefix + " p ∧ q ")
    proc = GrammarLogitsProcessor(compiler, [answer_grammar()], prompt_len=0)
    for k in range(len(done) + 1):
        masked = proc(torch.tensor([done[:k]]), torch.zeros(1, tokenizer.vocab_size))
    assert torch.isfinite(masked[0, tokenizer.token_to_id("<|eos|>")])


def test_grounded_words_cover_the_formats_verb_normalisations():
    from nanologic.grammar import verb_variants

    # a shared predicate repeated per subject; a future is read as itself, not in the present
    assert "acostará" in verb_variants("acostarán") and "acuesta" not in verb_variants("acostarán")
    assert "llueve" in verb_variants("llueva")
    assert {"te", "duchas"} <= set(sentence_words("Para no ducharse, hay que madrugar."))
    assert "hay" in verb_variants("haber")
    assert "lleno" in verb_variants("llenos")
    # a word that is no verb form gets nothing, and an auxiliary does not open every verb
    assert verb_variants("sed") == set()
    assert "llueve" not in verb_variants("ha")


def test_the_generators_bare_verbs_are_conjugated_like_the_others(tokenizer, compiler):
    """ "mentir", "gritar" and "descansar" are in no table of the lexicon but its bare verbs, and
    the conjugation table had left them out: the gold answer of "Es mentira que mintieras o cante
    por fin" (``mentiste``) did not read the sentence, nor 17 other gold answers of a test split
    and 3,000 training sentences."""
    from nanologic.grammar import lexicon_verb_lemma, verb_variants

    assert {"mentiste", "mientes"} <= verb_variants("mintieras")
    assert lexicon_verb_lemma("gritaron") == "gritar" and lexicon_verb_lemma("descansaras") == "descansar"
    grammar = grounded_grammar("Es mentira que mintieras o cante por fin.")
    assert accepts(
        compiler,
        tokenizer,
        grammar,
        _answer(["mentiste", "canto por fin"], "¬(p ∨ q)", "¬: es mentira | ∨: o"),
    )


def test_a_verb_is_read_in_its_own_tense_without_the_perfects_auxiliary():
    """ "Llover es condición suficiente para que el suelo se moje" was defined "el suelo se ha que
    el suelo se ha", and "Si y solo si estudio, saco buenas notas" wrote "saqué": every verb's
    position offered every tense and "ha", "he", "hemos"… (the first word of its perfect). A verb
    now gives its own tense in any person, the present for a future, an infinitive or a present
    subjunctive, the past tenses or the present for an imperfect subjunctive; the sentence's own
    auxiliary still gives "ha"."""
    from nanologic.grammar import verb_variants

    for verb in ("moje", "llover", "hablo", "vaya"):
        assert not {"ha", "he", "has", "hemos", "habéis", "han"} & verb_variants(verb), verb
    assert "saco" in verb_variants("saco") and "saqué" not in verb_variants("saco")
    assert "hablé" not in verb_variants("hablo")
    assert {"moja", "mojará"} <= verb_variants("moje")
    assert {"llueve", "llueves"} <= verb_variants("llover") and "lloverá" not in verb_variants("llover")
    assert {"empezó", "empezaba", "empieza"} <= verb_variants("empezara")
    assert {"ha", "hay"} <= set(sentence_words("Es posible que haya llovido."))
    assert "ha" in sentence_words("El juego ha empezado.")
    assert "ha" not in sentence_words("Si llueve, el suelo se moja.")


def test_a_verb_is_read_in_its_own_person_or_one_subject_of_a_plural():
    """A default model wrote "tenéis" for "tiene" ("Brayan está estudiando porque tiene examen"),
    "conseguís" for "consigue" and "hago los deberes" for "Lorena y Vuemenor hacen los deberes":
    every verb's position offered every person. A verb now gives its own person, a plural's gives
    each subject's singular, and an infinitive the generic "tú" or an impersonal."""
    from nanologic.grammar import verb_variants

    assert verb_variants("tiene") == {"tiene"}
    assert verb_variants("tener") == {"tiene", "tienes"}
    assert {"hace", "hacen"} <= verb_variants("hacen") and not {"hago", "hacéis"} & verb_variants("hacen")
    assert {"canto", "canta", "cantamos"} <= verb_variants("cantamos") and "cantáis" not in verb_variants(
        "cantamos"
    )
    assert {"sabes"} <= verb_variants("sepas") and "sabemos" not in verb_variants("sepas")
    assert "mientes" in verb_variants("mintieras") and "mentimos" not in verb_variants("mintieras")


def test_a_words_forms_are_those_it_may_stand_for_where_it_stands():
    """The subjunctive's ending swaps (for verbs the lexicon does not know) had given every word
    forms no verb has: "votaben" for the known "votaban", "notes" for "saco buenas notas", "Juen"
    for "Juan"; the agreement of adjectives "célula" for "las células"; and every word its
    capitalised form ("es utilitarista Naturalista"). A known verb now gives the conjugator's
    forms; an unknown word takes the swaps only after a word that may open a subjunctive clause,
    within that clause, and not as a noun (after a determiner) or a name; a word the sentence
    writes in lower case has no capitalised form. No gold definition of a training split's 6,000
    answers or of ``dev_real`` needed any of these."""
    words = set(sentence_words("Si y solo si estudio, saco buenas notas."))
    assert "notas" in words and "notes" not in words and "Saco" not in words
    words = set(sentence_words("Es necesario que Juan apele el caso; Pedro votaban."))
    assert {"apela", "apele", "Juan", "votaban", "votaba"} <= words
    assert not {"Juen", "votaben", "Apela"} & words
    words = set(sentence_words("Si las células no tienen clorofila, las plantas mueren."))
    assert {"células", "tiene"} <= words and not {"célula", "célules", "planta"} & words
    assert {"llueva", "Llueva", "llueve"} <= set(sentence_words("Llueva o no, salgo."))


def test_a_noun_after_a_determiner_does_not_end_a_definition_as_a_verb(tokenizer, compiler):
    """ "Si las células de la planta no tienen clorofila, …" was defined "p: las células de la
    planta": "planta" counted as a word that may end a definition for its agreement forms
    ("planto"), which a noun after a determiner does not have."""
    sentence = "Si las células de la planta no tienen clorofila, entonces no pueden sintetizar los alimentos."
    grammar = grounded_grammar(sentence, rule_bounds=False)
    good = ["las células de la planta tienen clorofila ¬", "pueden sintetizar los alimentos ¬"]
    assert accepts(compiler, tokenizer, grammar, _answer(good, "¬p → ¬q", "→: si...entonces | ¬: no"))
    cut = ["las células de la planta", "pueden sintetizar los alimentos ¬"]
    assert not accepts(compiler, tokenizer, grammar, _answer(cut, "p → ¬q", "→: si...entonces | ¬: no"))


def test_a_definition_never_holds_a_cue_phrase_the_sentence_says():
    """ "O A o B, pero no las dos cosas" was read `(A ∨ B) ∧ r` with `r: las dos cosas`, and
    "Tener entrada es condición necesaria para entrar al concierto" as one atom: the words of a cue
    phrase of several words are no definition's, where the sentence says the phrase (and only
    there: "casi siempre; y cuando" is no "siempre y cuando")."""
    words = {w.lower() for w in sentence_words("O llueve o nieva, pero no las dos cosas.")}
    assert {"llueve", "nieva"} <= words and not {"las", "dos", "cosas"} & words
    words = {w.lower() for w in sentence_words("Tener entrada es condición necesaria para entrar.")}
    assert "entrada" in words and not {"condición", "necesaria"} & words
    assert not {"y", "solo", "sólo"} & {w.lower() for w in sentence_words("Si y sólo si llueve, me mojo.")}
    assert "siempre" in sentence_words("Ana no llora casi siempre; y cuando canta, baila.")
    assert "siempre" not in sentence_words("Ana gana siempre y cuando entrena.")
    # the words stay a definition's where they are no cue
    assert {"dos", "cosas"} <= set(sentence_words("Compro dos cosas."))


def _allowed_after(tokenizer, compiler, text: str, grammar: str | None = None) -> set[str]:
    """The texts of the tokens the mask allows after ``text`` (fed one token at a time)."""
    from nanologic.grammar import GrammarLogitsProcessor

    ids = tokenizer.encode(text)
    proc = GrammarLogitsProcessor(compiler, [grammar or answer_grammar()], prompt_len=0)
    for k in range(len(ids) + 1):
        masked = proc(torch.tensor([ids[:k]]), torch.zeros(1, tokenizer.vocab_size))
    return {tokenizer.decode([i]) for i in torch.isfinite(masked[0]).nonzero().flatten().tolist()}


def test_formula_uses_only_the_declared_binary_connectives(tokenizer, compiler):
    prefix = "<|atoms|> p: llueve | q: nieva | r: hace frío <|connectors|> ∧: y | ¬: no <|formula|> p"
    allowed = _allowed_after(tokenizer, compiler, prefix)
    assert any("∧" in a for a in allowed)
    assert not any(symbol in a for a in allowed for symbol in "∨→↔"), allowed
    # a token holding the first bytes of "→" or "↔" (U+2192, U+2194 share E2 86) cannot open a
    # path to them either: with "∧" and "∨" allowed the mask keeps E2 88's tokens only
    tail = "<|atoms|> p: llueve | q: nieva <|connectors|> ∨: o | ∧: y <|formula|> p"
    ids = tokenizer.encode(tail)
    from nanologic.grammar import GrammarLogitsProcessor

    proc = GrammarLogitsProcessor(compiler, [answer_grammar()], prompt_len=len(ids), answers=[ids])
    masked = proc(torch.tensor([ids]), torch.zeros(1, tokenizer.vocab_size))
    allowed_bytes = [compiler.token_bytes[t] for t in torch.isfinite(masked[0]).nonzero().flatten().tolist()]
    assert any(b"\xe2\x88\xa7" in b for b in allowed_bytes)
    assert not any(b"\xe2\x86" in b for b in allowed_bytes), allowed_bytes
    # after a lone first byte, only the bytes that finish "∧" or "∨" remain
    lone = [t for t in range(tokenizer.vocab_size) if compiler.token_bytes[t] == b" \xe2"]
    if lone:
        proc = GrammarLogitsProcessor(compiler, [answer_grammar()], prompt_len=0, answers=[ids + lone])
        masked = proc(torch.tensor([[]], dtype=torch.long), torch.zeros(1, tokenizer.vocab_size))
        for t in torch.isfinite(masked[0]).nonzero().flatten().tolist():
            assert compiler.token_bytes[t].startswith(b"\x88"), compiler.token_bytes[t]


def _texts_after(tokenizer, compiler, grammar: str, head: str):
    """formula written so far -> the texts (stripped, whole characters) of the tokens the whole mask
    allows after ``head`` and it."""

    def allowed(formula: str) -> set[str]:
        return {
            a.strip()
            for a in _allowed_after(tokenizer, compiler, head + formula, grammar)
            if "\ufffd" not in a
        }

    return allowed


def _mask_allows(tokenizer, compiler, grammar: str, text: str) -> bool:
    """Whether the whole mask (grammar and :class:`FormulaMask`) allows every token of ``text``."""
    from nanologic.grammar import GrammarLogitsProcessor

    ids = tokenizer.encode(text)
    proc = GrammarLogitsProcessor(compiler, [grammar], prompt_len=0)
    for k in range(len(ids)):
        masked = proc(torch.tensor([ids[:k]]), torch.zeros(1, tokenizer.vocab_size))
        if not torch.isfinite(masked[0, ids[k]]):
            return False
    return True


def test_a_formula_names_each_letter_once_where_the_sentence_says_each_clause_once(
    records, tokenizer, compiler
):
    from nanologic.grammar import LETTERS_ONCE_NOTE, letters_once

    sentence = "Si llueve, nieva y hace frío."
    assert letters_once(sentence) and letters_once("Si y solo si llueve, me quedo en casa.")
    # an expression is one word: its variables said again are no clause said twice
    assert letters_once("Si x = y, entonces x = 2.") and not letters_once("Si x = y, entonces x ≠ y.")
    for other in (
        "Hablo y no hablo.",  # one clause said twice
        "Cuando Esteban no era médico, Noelia saldrá; además, cuando sale, devolvió una bicicleta.",
        "Elena estudia medicina o derecho, pero no ambas cosas.",  # (p ∨ q) ∧ ¬(p ∧ q)
        "Tanto si llueve como si nieva, la excursión se suspende.",  # (p → r) ∧ (q → r)
        "O Beatriz ganará el partido o no, pero llueve.",  # (p ∨ ¬p) ∧ q
        "Si hierve, suelta vapor. No suelta vapor. Por lo tanto, no hierve.",
        "Si llueve, me quedo en casa; si no, salgo a correr.",  # (p → q) ∧ (¬p → r)
        "Si llueve, me quedo en casa; de lo contrario, salgo a correr.",
    ):
        assert not letters_once(other), other
        assert LETTERS_ONCE_NOTE not in grounded_grammar(other)
    grammar = grounded_grammar(sentence)
    assert LETTERS_ONCE_NOTE in grammar
    head = "<|atoms|> p: llueve | q: nieva | r: hace frío <|connectors|> →: si | ∧: y <|formula|> "
    assert _mask_allows(
        tokenizer, compiler, grammar, _answer(["llueve", "nieva", "hace frío"], "p → (q ∧ r)", "→: si | ∧: y")
    )
    allowed = _allowed_after(tokenizer, compiler, head + "p → (q ∧ ", grammar)
    assert "r" in {a.strip() for a in allowed} and not any(c in a for a in allowed for c in "pq"), allowed
    # every letter named: the formula may only close and end
    allowed = _allowed_after(tokenizer, compiler, head + "p → (q ∧ r", grammar)
    assert allowed and all(set(a) <= set(") ") for a in allowed), allowed
    # one letter left: no "(" (it would hold two); a sentence whose consequent has no note, which
    # would ask for the "(" of "(q ∧ r)"
    two = "<|atoms|> p: llueve | q: nieva <|connectors|> →: cuando <|formula|> p → "
    commaless = grounded_grammar("Cuando llueve nieva y hace frío.", rule_bounds=False)
    assert LETTERS_ONCE_NOTE in commaless and "# argument" not in commaless
    assert not any("(" in a for a in _allowed_after(tokenizer, compiler, two, commaless))
    # two letters left, inside a parenthesis without its connective yet: "((" would need three
    nested = head.replace("<|formula|> ", "<|formula|> p → (")
    assert not any("(" in a for a in _allowed_after(tokenizer, compiler, nested, grammar))
    assert any("(" in a for a in _allowed_after(tokenizer, compiler, head + "p → ", grammar))
    # without the rule a letter may come back
    assert "p" in {a.strip() for a in _allowed_after(tokenizer, compiler, head + "p → (q ∧ ")}
    # no generated gold answer is ruled out (the rules' clause count aside: see
    # test_gold_answers_are_accepted)
    for r in records:
        answer = target_text(r, with_thought=False)
        grammar = grounded_grammar(r["natural_language_input"], rule_bounds=False)
        assert _mask_allows(tokenizer, compiler, grammar, answer), r


def test_an_argument_may_say_its_conclusion_after_a_comma(tokenizer, compiler):
    from nanologic.grammar import argument_parts, argument_premises

    sentence = "Si tengo hambre, como; no como, luego no tengo hambre."
    assert argument_parts(sentence) == (["si tengo hambre, como", "no como"], "luego no tengo hambre")
    atoms = ["tengo hambre", "como"]
    grammar = grounded_grammar(sentence)
    assert accepts(compiler, tokenizer, grammar, _answer(atoms, "((p → q) ∧ ¬q) → ¬p", "→: si | ¬: no"))
    assert not accepts(compiler, tokenizer, grammar, _answer(atoms, "(p → q) ∧ (¬q → ¬p)", "→: si | ¬: no"))
    # "entonces" after a comma is a conditional's consequent, "luego de" a time
    assert argument_premises("Si llueve, me mojo; si me mojo, entonces me resfrío.") == 0
    assert argument_premises("Llegó; luego de comer, se fue.") == 0


def test_an_arguments_premise_of_one_clause_takes_its_letter_and_sign(tokenizer, compiler):
    from nanologic.grammar import argument_literal_notes

    sentence = "Si está soleado, entonces es de día. No es de día. Por lo tanto, no está soleado."
    notes = argument_literal_notes(sentence)
    assert notes[0] == "# argument premises 2" and notes[2].startswith("# argument literal 2 ¬ ")
    assert notes[3].startswith("# argument literal c ¬ ")
    grammar = grounded_grammar(sentence)
    connectors = "→: si | ∧: por lo tanto | ¬: no"  # the mask also keeps the declared connectives
    head = _answer(["está soleado", "es de día"], "", connectors).replace(" <|eos|>", "")
    # the second premise, "No es de día": ¬ first, then q (p's definition shares no word with it)
    allowed = {a.strip() for a in _allowed_after(tokenizer, compiler, head + "((p → q) ∧", grammar)}
    assert allowed == {"¬"} or allowed <= {"¬", ""}, allowed
    allowed = {a.strip() for a in _allowed_after(tokenizer, compiler, head + "((p → q) ∧ ¬", grammar)}
    assert "q" in allowed and "p" not in allowed and not any("(" in a or "¬" in a for a in allowed), allowed
    # the conclusion, "no está soleado": ¬p
    allowed = {a.strip() for a in _allowed_after(tokenizer, compiler, head + "((p → q) ∧ ¬q) → ¬", grammar)}
    assert "p" in allowed and "q" not in allowed, allowed
    assert _mask_allows(
        tokenizer,
        compiler,
        grammar,
        _answer(["está soleado ±", "es de día ±"], "((p → q) ∧ ¬q) → ¬p", connectors),
    )
    # "O A o B" without a comma is a premise of two clauses too (dev_real: ``(p ∧ ¬p) → q``); "o A o
    # no A" is one clause
    notes = argument_literal_notes("O es de día o es de noche. No es de día. Por lo tanto, es de noche.")
    assert "# argument compound 1 ∨ + dia / + noche" in notes, notes
    assert not any(
        "compound" in note for note in argument_literal_notes("O llueve o no llueve. Llueve. Luego llueve.")
    )
    # no such premise or conclusion, no note
    assert (
        argument_literal_notes(
            "Si llueve y nieva, me mojo y me resfrío. Llueve y nieva. Luego me mojo y me resfrío."
        )
        == []
    )


def test_an_arguments_conclusion_takes_the_letter_of_the_clause_it_denies(tokenizer, compiler):
    from nanologic.grammar import argument_literal_notes

    # "no … ningún intruso" denies "detecta un intruso": "ningún" is no word of the clause (its
    # words had matched no definition wholly, and a default run wrote the conclusion unsigned)
    notes = argument_literal_notes(
        "Si el perro guardián detecta un intruso, el perro guardián ladra. El perro guardián no ladró."
        " Por lo tanto, el perro guardián no detectó ningún intruso."
    )
    assert notes[-1] == "# argument literal c ¬ perro guard detectar intru", notes
    # "veinte no es un número impar" shares two words with each definition; its clause is the one
    # said with the subject once, "es un número impar" (a default run wrote ¬p, then no mark on q)
    sentence = "O veinte es un número par, o es un número impar. Veinte es un número par. Entonces, veinte no es un número impar."
    grammar = grounded_grammar(sentence)
    atoms = "<|atoms|> p: veinte es un número par ± | q: es un número impar"
    assert _mask_allows(tokenizer, compiler, grammar, atoms)
    assert not _mask_allows(tokenizer, compiler, grammar, atoms + " <|connectors|>")  # q needs its mark
    head = atoms + " ± <|connectors|> ∨: o...o | ¬: no <|formula|> ((p ∨ q) ∧ p) → ¬"
    allowed = {a.strip() for a in _allowed_after(tokenizer, compiler, head, grammar)}
    assert "q" in allowed and "p" not in allowed, allowed


def test_an_argument_opens_as_its_first_premise_does(tokenizer, compiler):
    """The conjunction's "(" and the first premise's opening can be one token (" ((¬"): the model
    wrote ``((¬p ∨ ¬q) ∧ ¬p) → ¬q`` for "A o no B. No A. Luego no B."."""
    grammar = grounded_grammar("Juan estudia o no trabaja. No estudia. Luego Juan no trabaja.")
    head = _answer(["Juan estudia ±", "Juan trabaja ¬"], "", "∨: o | ¬: no | →: luego").replace(
        " <|eos|>", ""
    )
    opening = {a.strip() for a in _allowed_after(tokenizer, compiler, head, grammar)}
    assert opening and opening <= {"(", "(("}, opening
    # a first premise of one clause said negated: "(" and "(¬"
    grammar = grounded_grammar("No estudio. Si no estudio, no apruebo. Luego no apruebo.")
    head = _answer(["estudio ¬", "apruebo ¬"], "", "¬: no | →: si").replace(" <|eos|>", "")
    opening = {a.strip() for a in _allowed_after(tokenizer, compiler, head, grammar) if "\ufffd" not in a}
    assert opening and opening <= {"(", "(¬"}, opening


def test_a_clause_of_one_verb_that_is_also_a_function_word_is_a_clause():
    """ "como" (comer) is left out of content keys and verb detection as the comparative and cue
    word it mostly is, so "Si tengo hambre, como" had no literal for its consequent and the
    modus ponens of a new user's trial no notes but one (the model answered it ``(p ∧ p) → r``)."""
    from nanologic.grammar import argument_literal_notes, clause_sign_notes

    notes = argument_literal_notes("Si tengo hambre, como. Tengo hambre. Por lo tanto, como.")
    assert notes[1:] == [
        "# argument compound 1 → + tener hambr / + comer",
        "# argument literal 2 + tener hambr",
        "# argument literal c + comer",
    ]
    # a lone "es" or "ha" is no clause: "…, es que sus gobiernos …" gets no note of its own
    sentence = (
        "Es inobjetable que una condición suficiente para que los países europeos tengan baja "
        "inflación por lo tanto estabilidad económica, es que sus gobiernos tienen programas."
    )
    assert clause_sign_notes(sentence) and not any(n.endswith(" + ser") for n in clause_sign_notes(sentence))


def test_an_arguments_conditional_premise_is_written_as_one(tokenizer, compiler):
    from nanologic.grammar import argument_literal_notes

    sentence = "Si llueve, el suelo se moja. Llueve. Por lo tanto, el suelo se moja."
    notes = argument_literal_notes(sentence)
    assert notes[1].startswith("# argument compound 1 → + ") and " / + " in notes[1]
    assert argument_literal_notes("O no llueve, o nieva. Llueve. Luego, nieva.")[1].startswith(
        "# argument compound 1 ∨ ¬ "
    )
    # "A o no B" is a disjunction too; "otra vez" and "debes" (without "para") join no clauses
    notes = argument_literal_notes("Ana canta o no baila. No canta. Luego, no baila.")
    assert notes[1].startswith("# argument compound 1 ∨ + ") and " / ¬ " in notes[1], notes
    assert notes[2].startswith("# argument literal 2 ¬ "), notes
    notes = argument_literal_notes(
        "Si Ana canta otra vez, debes irte. Ana canta otra vez. Luego, debes irte."
    )
    assert notes[1].startswith("# argument compound 1 → ") and notes[3].startswith("# argument literal c + ")
    grammar = grounded_grammar(sentence)
    connectors = "→: si | ∧: por lo tanto"
    head = _answer(["llueve", "el suelo se moja"], "", connectors).replace(" <|eos|>", "")

    def allowed(formula: str) -> set[str]:
        # without the tokens that hold the first bytes of a symbol only ("\ufffd" decoded)
        return {
            a.strip()
            for a in _allowed_after(tokenizer, compiler, head + formula, grammar)
            if "\ufffd" not in a
        }

    # the premise opens with "(" (a model had written "(p ∧ p ∧ p …) → q")
    assert allowed("(") and all(a.startswith("(") for a in allowed("(") if a), allowed("(")
    assert "p" in allowed("((") and "q" not in allowed("((")  # "llueve" first
    assert allowed("((p") <= {"→", ""} and "→" in allowed("((p")  # its connective
    assert "q" in allowed("((p →") and "p" not in allowed("((p →")
    assert allowed("((p → q") <= {")", "),", ""} | {a for a in allowed("((p → q") if a.startswith(")")}
    # each premise is one conjunct: after the second the conjunction closes
    assert allowed("((p → q) ∧ p") == {")"} or allowed("((p → q) ∧ p") <= {")", ") →"}
    assert _mask_allows(
        tokenizer, compiler, grammar, _answer(["llueve", "el suelo se moja"], "((p → q) ∧ p) → q", connectors)
    )
    # a negated first clause: "(" then "¬", never "¬" bare (a model had written "(¬p ∧ q) → ¬p")
    negated = grounded_grammar("Si no llueve, salgo. No llueve. Luego salgo.")
    head = _answer(["llueve", "salgo"], "", "→: si | ¬: no").replace(" <|eos|>", "")
    opening = {
        a.strip() for a in _allowed_after(tokenizer, compiler, head + "(", negated) if "\ufffd" not in a
    }
    assert opening and all(a.startswith("(") for a in opening), opening


def test_a_conditional_opens_with_its_antecedents_literal(tokenizer, compiler):
    from nanologic.grammar import conditional_antecedent_notes

    sentence = "Si no llueve, salgo y corro."
    assert conditional_antecedent_notes(sentence)[0].startswith("# conditional antecedent ¬ ")
    # the condition said after, or as an exception: "a menos que A" is ¬A
    assert conditional_antecedent_notes("Salgo y corro cuando no llueve.")[0].startswith(
        "# conditional antecedent ¬ "
    )
    assert conditional_antecedent_notes("A menos que llueva, salgo.")[0].startswith(
        "# conditional antecedent ¬ "
    )
    assert conditional_antecedent_notes("Salgo a menos que no llueva.")[0].startswith(
        "# conditional antecedent + "
    )
    # the variable "y" of an expression is no conjunction ("x ≠ y" is one clause, negated)
    assert (
        conditional_antecedent_notes("Si x ≠ y, entonces x ≠ 1 y x ≠ z.")[0]
        == "# conditional antecedent ¬ x x=y"
    )
    # "Para que A, B": B is necessary for A, A → B; "sea" is the verb there, not "sea … sea"
    assert conditional_antecedent_notes("Para que ella sea feliz, necesita luz y agua.")[0].startswith(
        "# conditional antecedent + "
    )
    # necessary and sufficient conditions said around the clause: A → B opens with A's literal
    for said, antecedent in (
        ("Salgo sólo cuando llueve.", "salir"),  # "A sólo cuando B" is A → B, not B → A
        ("Solo si llueve, salgo.", "salir"),
        ("Que llueva implica que salgo y corro.", "llover"),
        ("Que llueva es condición suficiente para que salga.", "llover"),
        ("Basta con que llueva para que salga.", "llover"),
        ("Es necesario que estudies para que apruebes.", "aprobar"),
        ("Estudiar es condición necesaria para aprobar.", "aprobar"),
        ("Hay que estudiar para aprobar.", "aprobar"),  # an infinitive of the lexicon: its own key
        ("Si Vicente viaja al norte entonces no se queda.", "vicen viajar norte"),  # no comma
    ):
        assert conditional_antecedent_notes(said)[0] == f"# conditional antecedent + {antecedent}", said
    for other in (
        "Si llueve, me mojo. Llueve. Luego me mojo.",  # an argument: its own notes
        "Si llueve y nieva, me quedo, aunque salgas.",  # a comma in the consequent
    ):
        assert conditional_antecedent_notes(other) == [], other
    grammar = grounded_grammar(sentence)
    head = _answer(["llueve", "salgo", "corro"], "", "→: si | ¬: no | ∧: y").replace(" <|eos|>", "")

    allowed = _texts_after(tokenizer, compiler, grammar, head)

    assert allowed("") <= {"¬"} and allowed(""), allowed("")  # "(¬p → q) ∧ r" or "q ∧ …" ruled out
    assert allowed("¬") == {"p"}
    assert allowed("¬p") <= {"→", ""} and "→" in allowed("¬p")  # no ∧, no end
    # the consequent as said: "(", q, ∧, r, ")", then the end (the model wrote "¬(p ∨ q) → (¬r ∨ ¬s)"
    # for "A menos que A o B, no C y no D")
    assert allowed("¬p →") and all(a.startswith("(") for a in allowed("¬p →")), allowed("¬p →")
    assert allowed("¬p → (q") <= {"∧", ""} and "∧" in allowed("¬p → (q")
    assert not any(c in a for a in allowed("¬p → (q ∧ r)") for c in "∧∨→↔¬(")
    assert _mask_allows(
        tokenizer,
        compiler,
        grammar,
        _answer(["llueve ¬", "salgo", "corro"], "¬p → (q ∧ r)", "→: si | ¬: no | ∧: y"),
    )


def test_a_condition_of_two_clauses_opens_the_formula_as_said(tokenizer, compiler):
    """ "Si llueve y no llevo paraguas, entonces me mojo." (issue 13's first example) had become
    ``p → (¬q ∧ r)``: the condition's compound is written first, then → and the consequent."""
    from nanologic.grammar import CONDITIONAL_COMPOUND_NOTE, conditional_antecedent_notes

    sentence = "Si llueve y no llevo paraguas, entonces me mojo."
    assert conditional_antecedent_notes(sentence) == [
        CONDITIONAL_COMPOUND_NOTE,
        "# argument compound 1 ∧ + llover / ¬ llevar parag",
        "# argument literal c + mojar",
    ]
    grammar = grounded_grammar(sentence)
    atoms, connectors = ["llueve", "llevo paraguas ¬", "me mojo"], "∧: y | ¬: no | →: si"
    head = _answer(atoms, "", connectors).replace(" <|eos|>", "")

    allowed = _texts_after(tokenizer, compiler, grammar, head)

    assert allowed("") and all(a.startswith("(") for a in allowed("")), allowed("")
    assert allowed("(p") <= {"∧", ""} and "∧" in allowed("(p")
    assert allowed("(p ∧ ¬q)") <= {"→", ""} and "→" in allowed("(p ∧ ¬q)")
    assert allowed("(p ∧ ¬q) →") <= {"r", ""} and "r" in allowed("(p ∧ ¬q) →")
    assert _mask_allows(tokenizer, compiler, grammar, _answer(atoms, "(p ∧ ¬q) → r", connectors))


def test_an_unless_of_two_clauses_opens_the_formula_negated_whole(tokenizer, compiler):
    """ "A menos que A o B, ni C ni D" is ``¬(A ∨ B) → (¬C ∧ ¬D)``: the default model wrote the
    consequent ``(¬r ∨ ¬s)`` (6 of a test split's 17 such sentences); "¬(" opens the formula, in
    one token or two, the compound follows, then → and the consequent as said."""
    from nanologic.grammar import CONDITIONAL_COMPOUND_NOTE, conditional_antecedent_notes

    sentence = "A menos que llueva o nieve, ni Ana sale ni Luis corre."
    notes = conditional_antecedent_notes(sentence)
    assert notes[:2] == [CONDITIONAL_COMPOUND_NOTE, "# negated compound 1"], notes
    assert notes[2].startswith("# argument compound 1 ∨ + "), notes
    assert notes[3].startswith("# argument compound c ∧ ¬ ") and " / ¬ " in notes[3], notes
    assert conditional_antecedent_notes("Salgo a menos que llueva y nieve.")[1] == "# negated compound 1"
    # a part's "y" between numbers, "casi siempre", "para" before a noun join no clauses
    for said in (
        "A menos que Jimena dibuje un círculo o Celia sume 30 y 3, no juega y no dibuja un círculo.",
        "Salvo que los niños duerman la siesta casi siempre o se acuesten tarde, ni Ana corre ni Luis baila.",
        "A menos que Ana cante o Luis baile, ni Lobrue canta ni Víctor compra entradas para el concierto.",
    ):
        notes = conditional_antecedent_notes(said)
        assert len(notes) == 4 and notes[3].startswith("# argument compound c ∧ ¬ "), (said, notes)
    grammar = grounded_grammar(sentence)
    atoms, connectors = (
        ["llueve", "nieva", "Ana sale ¬", "Luis corre ¬"],
        "¬: ni | ∨: o | ∧: ni | →: a menos que",
    )
    head = _answer(atoms, "", connectors).replace(" <|eos|>", "")

    allowed = _texts_after(tokenizer, compiler, grammar, head)

    assert allowed("") and all(a.startswith("¬") for a in allowed("")), allowed("")
    assert allowed("¬") and all(a.startswith("(") for a in allowed("¬")), allowed("¬")
    assert allowed("¬(p") <= {"∨", ""} and "∨" in allowed("¬(p")
    assert allowed("¬(p ∨ q)") <= {"→", ""} and "→" in allowed("¬(p ∨ q)")
    assert allowed("¬(p ∨ q) → (¬r") <= {"∧", ""} and "∧" in allowed("¬(p ∨ q) → (¬r")
    assert _mask_allows(tokenizer, compiler, grammar, _answer(atoms, "¬(p ∨ q) → (¬r ∧ ¬s)", connectors))
    assert not _mask_allows(tokenizer, compiler, grammar, _answer(atoms, "¬(p ∨ q) → (¬r ∨ ¬s)", connectors))


def test_an_exclusive_or_is_its_disjunction_and_the_negated_conjunction(tokenizer, compiler):
    """ "O A o B, pero no las dos cosas" is ``(A ∨ B) ∧ ¬(A ∧ B)`` with two atoms; the default model
    had written ``(¬p ∨ q) ∧ ¬r`` with a third."""
    from nanologic.grammar import exclusive_or_notes

    sentence = "O la casa no está limpia o Ana tiene calefacción, pero no las dos cosas."
    assert exclusive_or_notes(sentence)[0] == "# conjunction parts 2"
    assert exclusive_or_notes("O bien llueve, o bien nieva, pero no ambos.")[2] == "# negated compound 2"
    assert exclusive_or_notes("Llueve, pero no ambos.") == []
    grammar = grounded_grammar(sentence)
    assert "a3 ::=" not in grammar  # two atoms
    atoms, connectors = ["la casa está limpia ¬", "Ana tiene calefacción"], "∨: o | ¬: no | ∧: pero"
    head = _answer(atoms, "", connectors).replace(" <|eos|>", "")

    allowed = _texts_after(tokenizer, compiler, grammar, head)

    assert allowed("(¬p ∨ q)") <= {"∧", ""} and "∧" in allowed("(¬p ∨ q)")
    assert allowed("(¬p ∨ q) ∧") and all(a.startswith("¬") for a in allowed("(¬p ∨ q) ∧"))
    assert allowed("(¬p ∨ q) ∧ ¬(¬p") <= {"∧", ""} and "∧" in allowed("(¬p ∨ q) ∧ ¬(¬p")
    assert _mask_allows(tokenizer, compiler, grammar, _answer(atoms, "(¬p ∨ q) ∧ ¬(¬p ∧ q)", connectors))
    assert not _mask_allows(tokenizer, compiler, grammar, _answer(atoms, "(¬p ∨ q) ∧ ¬q", connectors))


def test_relations_of_arithmetic_and_either_or_consequents_are_noted():
    """ "x ≠ 3" is a literal, the negated atom "x = 3", keyed by its relation written whole ("x-y=2"
    is not "y-x=2"); a part with two relations is two clauses; "y" between terms is a variable; "o
    bien A, o bien B" may be said before its condition. The default model had written
    ``¬p → (¬q ∨ r)`` for "Si x ≠ 0 ó x ≠ 3, entonces x = 1." and ``(¬p ∨ ¬q) → ¬r`` for "O bien
    A, o bien B siempre que no C"."""
    from nanologic.grammar import conditional_antecedent_notes

    assert conditional_antecedent_notes("Si x ≠ 0 o x ≠ 3, entonces x = 1.")[1:] == [
        "# argument compound 1 ∨ ¬ x 0 x=0 / ¬ x 3 x=3",
        "# argument literal c + x 1 x=1",
    ]
    assert conditional_antecedent_notes("Si x − y = 2, entonces y − x ≠ 2.") == [
        "# conditional antecedent + x 2 x−y=2",
        "# argument literal c ¬ x 2 y−x=2",
    ]
    assert conditional_antecedent_notes("Si x + y > z y z = 1, entonces x + y > 1.") == []
    # every cue of a condition said first ("en caso de que", "siempre y cuando", "con tal de que")
    assert conditional_antecedent_notes("En caso de que Ana nade, Luis trabaja y Eva corre.") == [
        "# conditional antecedent + ana nadar",
        "# argument compound c ∧ + luis trabajar / + eva correr",
    ]
    assert conditional_antecedent_notes("O bien Ana canta, o bien Luis no baila siempre que no llueve.") == [
        "# conditional antecedent ¬ llover",
        "# argument compound c ∨ + ana cantar / ¬ luis bailar",
    ]


def test_a_condition_of_three_clauses_is_written_as_said(tokenizer, compiler):
    """ "Si A, no B y C, D" is ``(p ∧ ¬q ∧ r) → s``; the default model had written ``(p ∧ ¬q) → (r ∧ s)``."""
    from nanologic.grammar import conditional_antecedent_notes

    sentence = "Si Ana canta, Luis no baila y Eva corre, entonces salto."
    assert conditional_antecedent_notes(sentence)[1:] == [
        "# argument compound 1 ∧ + ana cantar / ¬ luis bailar / + eva correr",
        "# argument literal c + salto",
    ]
    atoms, connectors = ["Ana canta", "Luis baila ¬", "Eva corre", "salto"], "→: si | ¬: no | ∧: y"
    head = _answer(atoms, "", connectors).replace(" <|eos|>", "")
    allowed = _texts_after(tokenizer, compiler, grounded_grammar(sentence), head)

    assert allowed("(p ∧ ¬q") <= {"∧", ""} and "∧" in allowed("(p ∧ ¬q")
    assert "r" in allowed("(p ∧ ¬q ∧") and not allowed("(p ∧ ¬q ∧") & {"p", "q", "s"}
    assert allowed("(p ∧ ¬q ∧ r)") <= {"→", ""} and "→" in allowed("(p ∧ ¬q ∧ r)")
    grammar = grounded_grammar(sentence)
    assert _mask_allows(tokenizer, compiler, grammar, _answer(atoms, "(p ∧ ¬q ∧ r) → s", connectors))
    assert not _mask_allows(tokenizer, compiler, grammar, _answer(atoms, "(p ∧ ¬q) → (r ∧ s)", connectors))


def test_a_marker_spelled_in_plain_tokens_changes_the_section(tokenizer, compiler):
    """With ``<|connectors|>`` banned (a definition that needs its mark), a model wrote "<|" and
    spelled the marker out; the mask then stayed in the atom list and left the formula free, and the
    missing mark undid the formula's ¬ ("El examen es el lunes salvo que el profesor esté enfermo."
    -> ``q → p``)."""
    from nanologic.grammar import FormulaMask

    sentence = "El examen es el lunes salvo que el profesor esté enfermo."
    grammar = grounded_grammar(sentence)
    allowed = _allowed_after(
        tokenizer, compiler, "<|atoms|> p: el examen es el lunes | q: el profesor esté enfermo ", grammar
    )
    assert allowed and not any(a.lstrip().startswith("<") for a in allowed), allowed
    mask = FormulaMask.for_grammar(compiler, grammar)
    pieces = ["<|atoms|>", " p: llueve", " <", "|conn", "ectors|", "> ∧: y ", "<|", "formula|>", " p"]
    ids = [i for piece in pieces for i in tokenizer.encode(piece)]
    assert (
        tokenizer.decode(ids).count("<|connectors|>") == 1
        and tokenizer.token_to_id("<|connectors|>") not in ids
    )
    for token in ids:
        mask.accept(token)
    assert mask.section == "formula" and mask.formula_text == b" p", mask.formula_text
    assert mask.connector_text.strip() == "∧: y".encode() and mask.banned == {"∨", "→", "↔"}
    assert mask._definitions() == {"p": "llueve "}


def test_a_sentence_of_two_clauses_is_their_compound(tokenizer, compiler):
    """ "A y B", "o A, o B", "ni A ni B" whole: L1, the connective, L2, the end, two atoms at most;
    "Hablo y no hablo." names its one clause twice (the model had written ``p ∧ p``)."""
    from nanologic.grammar import sentence_compound_notes

    assert sentence_compound_notes("Ana canta y Pedro no baila.") == [
        "# sentence compound ∧ + ana cantar / ¬ pedro bailar"
    ]
    assert sentence_compound_notes("Ni llueve ni nieva.") == ["# sentence compound ∧ ¬ llover / ¬ nevar"]
    assert sentence_compound_notes("Si llueve, salgo.") == []
    grammar = grounded_grammar("Ana canta y Pedro no baila.")
    assert "a3 ::=" not in grammar  # two atoms at most
    atoms, connectors = ["Ana canta", "Pedro baila ¬"], "∧: y | ¬: no"
    head = _answer(atoms, "", connectors).replace(" <|eos|>", "")

    allowed = _texts_after(tokenizer, compiler, grammar, head)

    assert allowed("") == {"p"}
    assert allowed("p") <= {"∧", ""} and "∧" in allowed("p")
    assert allowed("p ∧") <= {"¬", ""} and "¬" in allowed("p ∧")
    assert allowed("p ∧ ¬") == {"q"}
    assert not any(c in a for a in allowed("p ∧ ¬q") for c in "∧∨→↔¬(")
    assert _mask_allows(tokenizer, compiler, grammar, _answer(atoms, "p ∧ ¬q", connectors))
    # one clause said twice: the same letter
    twice = grounded_grammar("Hablo y no hablo.")
    head = _answer(["hablo ±"], "", "∧: y | ¬: no").replace(" <|eos|>", "")
    assert _texts_after(tokenizer, compiler, twice, head)("p ∧ ¬") == {"p"}
    # and its mark is "±": a mark "" would make the ¬ the mask fixed positive again ("p ∧ p")
    marks = _allowed_after(tokenizer, compiler, "<|atoms|> p: hablo", twice)
    assert marks and not any("|" in a or "¬" in a or "<" in a for a in marks), marks


def test_a_number_does_not_make_y_a_variable(tokenizer, compiler):
    """ "…, entonces ya acabó el periodo y hay fiesta el 16." had the definition "ya acabó el periodo
    y hay fiesta el 16": the number made its "y" a possible variable, a word definitions may hold."""
    grammar = grounded_grammar("Si no hay tarea, entonces ya acabó el periodo y hay fiesta el 16.")
    connectors = "→: si | ¬: no | ∧: y"
    merged = _answer(["hay tarea ¬", "ya acabó el periodo y hay fiesta el 16"], "¬p → q", connectors)
    apart = _answer(["hay tarea ¬", "ya acabó el periodo", "hay fiesta el 16"], "¬p → (q ∧ r)", connectors)
    assert accepts(compiler, tokenizer, grammar, apart) and not accepts(compiler, tokenizer, grammar, merged)
    # the variable "y" of a mathematical sentence stays a word of its definitions
    allowed = _allowed_after(
        tokenizer, compiler, "<|atoms|> p: x = 1 | q:", grounded_grammar("Si x = 1, entonces y > 1.")
    )
    assert any(a.strip().startswith("y") for a in allowed), allowed


def test_each_relation_said_is_an_atom():
    """ "Si x ≠ y, entonces x ≠ 1 y x ≠ z." had been answered with the one atom "x = y"."""
    from nanologic.grammar import relations_said

    assert relations_said("Si x ≠ y, entonces x ≠ 1 y x ≠ z.") == 3
    assert relations_said("x = 2 o x ≠ 2.") == 1  # one atom, affirmed and negated
    assert relations_said("Si llueve, salgo.") == 0
    root = next(
        line
        for line in grounded_grammar("Si x ≠ y, entonces x ≠ 1 y x ≠ z.").splitlines()
        if line.startswith("root")
    )
    assert "a2 " not in root and "a3" in root, root


def test_a_biconditional_is_written_as_said(tokenizer, compiler):
    """ "Si y solo si llueve, me quedo en casa." had become ``p ∧ p``: its first clause, ↔, the other."""
    from nanologic.grammar import BICONDITIONAL_NOTE, conditional_antecedent_notes

    for said in (
        "Si y solo si llueve, me quedo en casa.",
        "Me quedo en casa sí y solo sí llueve.",
        "Me quedo en casa cuando y sólo cuando llueve.",
        "Que llueva equivale a que me quede en casa.",
        "Que llueva es condición necesaria y suficiente para que me quede en casa.",
    ):
        assert conditional_antecedent_notes(said)[0] == BICONDITIONAL_NOTE, said
    # a sum of numbers is no conjunction of clauses ("suma" is a verb of the lexicon too)
    assert "∧" not in " ".join(conditional_antecedent_notes("La suma de 7 y 8 es par si y solo si llueve."))
    grammar = grounded_grammar("Si y solo si llueve, me quedo en casa.")
    atoms, connectors = ["llueve", "me quedo en casa"], "↔: si y solo si"
    head = _answer(atoms, "", connectors).replace(" <|eos|>", "")
    allowed = {
        a.strip() for a in _allowed_after(tokenizer, compiler, head + "p", grammar) if "\ufffd" not in a
    }
    assert allowed <= {"↔", ""} and "↔" in allowed, allowed
    assert _mask_allows(tokenizer, compiler, grammar, _answer(atoms, "p ↔ q", connectors))
    assert not _mask_allows(tokenizer, compiler, grammar, _answer(atoms, "p ↔ q ∧ p", connectors))


def test_polarity_marks_follow_the_noted_literals(tokenizer, compiler):
    from nanologic.grammar import MARKS_FOLLOW_NOTE

    sentence = "Salgo a menos que llueva."  # ¬q → p: q's mark is "¬" (decoding applies marks)
    grammar = grounded_grammar(sentence)
    assert MARKS_FOLLOW_NOTE in grammar and MARKS_FOLLOW_NOTE not in grounded_grammar(
        sentence, polarity_marks=False
    )
    allowed = _allowed_after(tokenizer, compiler, "<|atoms|> p: salgo | q: llueve", grammar)
    assert any("¬" in a for a in allowed) and not any("|" in a for a in allowed), allowed
    # a clause said positive takes no "¬"
    allowed = _allowed_after(
        tokenizer, compiler, "<|atoms|> p: llueve", grounded_grammar("Si llueve, salgo.")
    )
    assert any("|" in a for a in allowed) and not any("¬" in a for a in allowed), allowed
    # one clause said with both signs, once without its subject: "±" ("Fidel votará … o no …. No
    # votará …" had been marked positive, which undid the ¬ the formula mask had fixed)
    argument = grounded_grammar("Juan estudia o no trabaja. No estudia. Luego Juan no trabaja.")
    allowed = _allowed_after(tokenizer, compiler, "<|atoms|> p: Juan estudia", argument)
    assert allowed and not any("|" in a or "¬" in a for a in allowed), allowed
    # a definition holding more than the clause and a subject is another clause: free
    allowed = _allowed_after(tokenizer, compiler, "<|atoms|> p: salgo de casa con mi perro", grammar)
    assert any("¬" in a for a in allowed) and any("|" in a for a in allowed), allowed


def test_polarity_marks_follow_each_clause_where_no_other_note_holds(tokenizer, compiler):
    from nanologic.grammar import CLAUSE_SIGN_NOTE, clause_sign_notes

    sentence = "Cuando Ana dimite, Luis no sale; además, si no llueve, Ana canta o no baila."
    grammar = grounded_grammar(sentence)
    assert CLAUSE_SIGN_NOTE in grammar
    for definition, mark in (
        ("Ana dimite", ""),  # "cuando dimite" says no negation
        ("Luis sale", "¬"),
        ("llueve", "¬"),
        ("Ana canta", ""),
        ("Ana baila", "¬"),  # "o no baila"
    ):
        allowed = _allowed_after(tokenizer, compiler, f"<|atoms|> p: {definition}", grammar)
        if mark:
            assert any("¬" in a for a in allowed) and not any("|" in a for a in allowed), definition
        else:
            assert any("|" in a for a in allowed) and not any("¬" in a for a in allowed), definition
    # a sign the clause's own words do not say: left to the model
    for sentence in (
        "Es falso que llueva y nieve.",  # ¬(p ∧ q)
        "Es falso que llueva si nieva.",
        "Salgo salvo que llueva.",
        "Ana y Luis no cantan.",  # the elided conjunct "Ana" takes the shared predicate's sign
        "Nadie canta.",
    ):
        keys = {key for note in clause_sign_notes(sentence) for key in note.split()[3:]}
        assert not keys & {"llover", "ana", "cantar"} or keys == {"luis", "cantar"}, sentence
    assert clause_sign_notes("No es cierto que el tren salga ni que llegue tarde.") == [
        "# clause ¬ llegar tarde"
    ]
    # a clause denied whole, up to a punctuation mark or the end, is negated (the default model
    # had written ``¬p ∧ ¬q ∧ r`` for "…, puesto que es falso que haya consultado con los peritos")
    assert clause_sign_notes("Es falso que llueva.") == ["# clause ¬ llover"]
    assert "# clause ¬ haber consu perit" in clause_sign_notes(
        "El juez no es justo, puesto que es falso que haya consultado con los peritos."
    )
    # one clause said with both signs: both notes, so its mark is "±"
    assert clause_sign_notes("Llueve o no llueve.") == ["# clause + llover", "# clause ¬ llover"]


def test_a_conjunction_is_written_only_where_the_sentence_can_say_one():
    from nanologic.grammar import AND, IMPLIES, said_connectives

    # a conditional of two clauses and no word of ∧: no ∧ (a model wrote "p ∧ q")
    assert AND not in said_connectives("Si se somete el agua a cien grados, entra en ebullición.")
    assert AND not in said_connectives("Si x ≠ 2, entonces y > 1.")  # "y", a variable
    assert said_connectives("Si x ≠ 2, entonces y > 1.") >= {IMPLIES}
    for sentence in (
        "Si llueve, salgo y corro.",  # "y"
        "Si llueve, salgo, corro, grito.",  # a list: two separators or more
        "No saldremos, puesto que hay examen.",  # a reason read as ∧
        "Si llueve, me mojo. Llueve. Luego me mojo.",  # an argument
        "Juan canta, María baila.",  # no other connective: the comma may join
    ):
        assert AND in said_connectives(sentence), sentence


def test_a_reason_or_a_time_says_no_conditional():
    """ "Puesto que A, B y C" is ``A ∧ (B ∧ C)``; the default model wrote ``p ∧ (q → r)`` (8 answers
    of two test splits, every one wrong) while the words "puesto", "ya", "siempre" let → pass."""
    from nanologic.grammar import AND, IFF, IMPLIES, said_connectives

    for sentence in (
        "Puesto que Ana gana la liga, Luis corre y el Valencia gana el partido.",
        "Los jugadores entrenaban, dado que Antonio ahorra y compra una cámara.",
        "Voy andando ya que no tengo coche.",
        "Ni Hugo compró una cámara ni la gasolina está barata casi siempre.",
    ):
        said = said_connectives(sentence)
        assert AND in said and not said & {IMPLIES, IFF}, (sentence, said)
    assert IMPLIES in said_connectives("Siempre que llueve, ya que es otoño, me mojo.")
    assert IMPLIES in said_connectives("Ya sea que llueva o que nieve, me quedo en casa.")
    # "otra vez" says neither → ("cada vez que") nor ∧ ("a la vez"): the default model wrote
    # "¬p ∨ (¬q ∧ ¬r)" for "O bien A, o bien B otra vez o C"
    again = "O bien Carmen no compite, o bien David no calcula el área otra vez o Julio no termina."
    assert not said_connectives(again) & {AND, IMPLIES}
    assert AND in said_connectives("Es utilitarista y naturalista a la vez.")
    assert IMPLIES in said_connectives("Cada vez que llueve, me mojo.")


def test_a_biconditional_is_written_as_often_as_the_sentence_says_one(tokenizer, compiler):
    """ "A si y solo si ni B ni C" is ``p ↔ (¬q ∧ ¬r)``; the default model wrote ``p ↔ (¬q ↔ ¬r)``
    (4 answers of a seed-1 test split), and ``p ↔ (q ∨ r)`` for "A, B o únicamente C"."""
    from nanologic.grammar import IFF_AT_MOST_NOTE, biconditionals_said

    sentence = "Ana gana si y solo si Luis no canta ni Eva baila."
    assert biconditionals_said(sentence) == 1
    assert biconditionals_said("Que A equivale a que B si y sólo si C.") == 2
    grammar = grounded_grammar(sentence)
    assert f"{IFF_AT_MOST_NOTE} 1" in grammar.splitlines()
    head = _answer(
        ["Ana gana", "Luis canta ¬", "Eva baila ¬"], "", "↔: si y solo si | ¬: no | ∧: ni"
    ).replace(" <|eos|>", "")
    assert "↔" in {a.strip() for a in _allowed_after(tokenizer, compiler, head + "p", grammar)}
    assert "↔" not in {a.strip() for a in _allowed_after(tokenizer, compiler, head + "p ↔ (¬q", grammar)}


def test_o_a_o_no_pero_opens_with_the_excluded_middle(tokenizer, compiler):
    from nanologic.grammar import excluded_middle_notes

    sentence = "O Marta viene a la cena o no viene, pero la cena se celebra de todos modos."
    assert excluded_middle_notes(sentence)[0].startswith("# excluded middle ")
    assert excluded_middle_notes("O el virus muere o no se contamina, pero no las dos cosas.") == []
    assert excluded_middle_notes("O llueve o no nieva, pero salgo.") == []  # "no nieva": another clause
    grammar = grounded_grammar(sentence)
    # ∨ is left out of the connector list: the shape needs it all the same
    head = _answer(["Marta viene a la cena ±", "la cena se celebra"], "", "∧: pero | ¬: no").replace(
        " <|eos|>", ""
    )

    allowed = _texts_after(tokenizer, compiler, grammar, head)

    assert all(a.startswith("(") for a in allowed("")) and allowed("")
    assert "p" in allowed("(") and "q" not in allowed("(")
    assert allowed("(p") <= {"∨", ""} and "∨" in allowed("(p")
    assert allowed("(p ∨") <= {"¬", ""} and "¬" in allowed("(p ∨")
    assert allowed("(p ∨ ¬") == {"p"}
    assert {a for a in allowed("(p ∨ ¬p") if a} <= {a for a in allowed("(p ∨ ¬p") if a.startswith(")")}
    assert "∧" in allowed("(p ∨ ¬p)") and "→" not in allowed("(p ∨ ¬p)")
    assert _mask_allows(
        tokenizer,
        compiler,
        grammar,
        _answer(["Marta viene a la cena ±", "la cena se celebra"], "(p ∨ ¬p) ∧ q", "∧: pero | ¬: no"),
    )


def test_a_definition_short_of_one_word_of_a_noted_clause_takes_its_mark(tokenizer, compiler):
    # "Chefogalo un pastel" of "Chefogalo y el profesor no preparan un pastel": a definition holds
    # all of its clause's keys but one
    sentence = "Cuando Ana dimite, Luis no canta tangos; además, si no llueve, Ana baila."
    grammar = grounded_grammar(sentence)
    allowed = _allowed_after(tokenizer, compiler, "<|atoms|> p: Ana dimite | q: Luis canta", grammar)
    assert any("¬" in a for a in allowed) and not any("|" in a for a in allowed), allowed


def test_the_excluded_middles_clause_is_marked_said_both_ways(tokenizer, compiler):
    """The mark "¬" or none on A of "O A o no, pero B" undid the formula's excluded middle, since
    decoding gives each literal its mark's sign: ``(p ∨ ¬p)`` was given as ``(¬p ∨ ¬p)`` or
    ``(p ∨ p)`` in 4 answers of two synthetic test splits. A takes "±"."""
    grammar = grounded_grammar("O Marta viene a la cena o no viene, pero la cena se celebra de todos modos.")
    allowed = _allowed_after(tokenizer, compiler, "<|atoms|> p: Marta viene a la cena", grammar)
    # the definition may go on, or end with its mark (" ±", or " " and "±" where the vocabulary has
    # no " ±"): neither "¬" nor an end without one
    assert " ±" in allowed or " " in allowed, allowed
    assert not any("|" in a or "¬" in a for a in allowed), allowed


def test_an_adverb_or_a_participle_joins_no_clauses():
    """ "bien" joins clauses only in "o bien", "si bien"; "dado", "puesto", "ya" only before "que":
    "O el Atleti juega bien mañana o no, pero …" and "O Inés ha dado clase de arte o no, pero …" had
    no excluded middle, "Íñigo consigue el puesto, dado que …" no reason, and the model wrote
    ``p ∨ (¬q ∨ r)`` and ``p → (q ∧ r)`` for them."""
    from nanologic.grammar import _literal_part, excluded_middle_notes

    for clause in ("el atleti juega bien manana", "ines ha dado clase de arte", "consigues el puesto"):
        assert _literal_part(clause) is not None, clause
    for joined in (
        "o bien llueve",
        "dado que llueve",
        "puesto que llueve",
        "ya que llueve",
        "ya sea que llueva",
    ):
        assert _literal_part(joined) is None, joined
    assert excluded_middle_notes("O el Atleti juega bien mañana o no, pero de todos modos gana el Betis.")


def test_the_formula_names_every_clause_an_atom_defines(tokenizer, compiler):
    """ "No corremos otra vez, no faltábamos a clase y Chubruel no hará los deberes el jueves" was
    answered with r declared as the third clause and the formula ``¬p ∧ ¬q``: the formula may not
    end while a declared letter that defines a clause of the sentence is unnamed (and no named
    letter defines that clause)."""
    from nanologic.grammar import NAMED_CLAUSE_NOTE, named_clause_notes

    sentence = "No corremos otra vez, no faltábamos a clase y Chubruel no hará los deberes el jueves."
    assert len(named_clause_notes(sentence)) == 3 and NAMED_CLAUSE_NOTE in grounded_grammar(sentence)
    grammar = grounded_grammar(sentence)
    atoms = ["corremos otra vez ¬", "faltábamos a clase ¬", "Chubruel hará los deberes el jueves ¬"]
    assert not _mask_allows(tokenizer, compiler, grammar, _answer(atoms, "¬p ∧ ¬q", "¬: no | ∧: y"))
    assert _mask_allows(tokenizer, compiler, grammar, _answer(atoms, "¬p ∧ ¬q ∧ ¬r", "¬: no | ∧: y"))
    # a letter whose definition is no clause of the sentence may stay out, where the rules do not
    # count the clauses (below: where they do, every declared letter is named)
    junk = [*atoms[:2], "Chubruel corremos otra vez"]
    unbounded = grounded_grammar(sentence, rule_bounds=False)
    assert _mask_allows(tokenizer, compiler, unbounded, _answer(junk, "¬p ∧ ¬q", "¬: no | ∧: y"))


def test_where_the_rules_count_the_clauses_the_formula_names_every_declared_letter(tokenizer, compiler):
    """ "O bien Rodrigo ha gritado, o bien la raíz de 69 es 26 o Gatre no resolverá la ecuación"
    (three clauses, as the rules read it) was declared with three atoms, its third ill-copied ("la
    raíz de 69 resolverá la ecuación"), and closed ``p ∨ q``; the unnamed letter was then dropped.
    Where the atom list is bounded by the rules' count, the formula may not end before it names
    every declared letter."""
    from nanologic.grammar import ALL_NAMED_NOTE

    sentence = "O bien Rodrigo ha gritado, o bien la raíz de 69 es 26 o Gatre no resolverá la ecuación."
    grammar = grounded_grammar(sentence)
    assert ALL_NAMED_NOTE in grammar and ALL_NAMED_NOTE not in grounded_grammar(sentence, rule_bounds=False)
    atoms = ["Rodrigo ha gritado", "la raíz de 69 es 26", "la raíz de 69 resolverá la ecuación ¬"]
    assert not _mask_allows(tokenizer, compiler, grammar, _answer(atoms, "p ∨ q", "∨: o bien | ¬: no"))
    assert _mask_allows(tokenizer, compiler, grammar, _answer(atoms, "p ∨ q ∨ ¬r", "∨: o bien | ¬: no"))
    sentence = "No corremos otra vez, no faltábamos a clase y Chubruel no hará los deberes el jueves."
    atoms = ["corremos otra vez ¬", "faltábamos a clase ¬", "Chubruel corremos otra vez"]
    assert not _mask_allows(
        tokenizer, compiler, grounded_grammar(sentence), _answer(atoms, "¬p ∧ ¬q", "¬: no | ∧: y")
    )


def test_a_side_without_a_verb_shares_the_other_sides_predicate_and_sign():
    """ "ni Bruno ni Beatriz abren la tienda", "Bruno y la camarera no multiplican 20 por 9", "ha
    escuchado bachata y salsa" are two clauses each (the generator's elliptic coordination), and
    had no note: the model wrote ``(¬r ∨ ¬s)``, ``(q ∧ ¬r)``, ``(q ∨ r)`` for them. A side counts as
    verbless only where it reads as a noun phrase and no word of it may be a verb, so "o llegará
    tarde", "o el sol brilla", whose verbs the lexicon does not know, keep their own sign."""
    from nanologic.grammar import AND, OR, _compound_part, conditional_antecedent_notes

    # the shared side's literal holds the shared words too, so its definition ("Bruno multiplica
    # 20 por 9") is the one its letter and mark are read from
    assert _compound_part("bruno y la camarera no multiplican 20 por 9", True) == (
        AND,
        (True, ["bruno", "multiplicar", "20", "9"]),
        (True, ["camar", "multiplicar", "20", "9"]),
    )
    assert _compound_part("jordi ha escuchado bachata y salsa", True)[2] == (
        False,
        ["salsa", "jordi", "haber", "escuchar"],
    )
    assert _compound_part("ni bruno ni beatriz abren la tienda", True)[1:] == (
        (True, ["bruno", "abrir", "tiend"]),
        (True, ["beatr", "abrir", "tiend"]),
    )
    # two sides whose words fold to one key keep the first side's own words: two clauses still
    from nanologic.grammar import sentence_compound_notes

    assert sentence_compound_notes("Tanto mi hermano como mi hermana recogían la mesa.") == [
        "# sentence compound ∧ + herma / + herma recog mesa"
    ]
    # a name is no verb, whatever its folded form ("Vera", "verá")
    assert _compound_part("vera y alejandro no han llevado un libro", True)[1][0]
    for own_signs in ("no vendra a la fiesta o llegara tarde", "los murcielagos no son aves o el sol brilla"):
        symbol, first, second = _compound_part(own_signs, True)
        assert symbol == OR and first[0] and not second[0], own_signs
    notes = conditional_antecedent_notes(
        "A menos que Álvaro pida vacaciones o Jordi pidiera un aumento, ni Bruno ni Beatriz abren la tienda."
    )
    assert notes[-1] == "# argument compound c ∧ ¬ bruno abrir tiend / ¬ beatr abrir tiend"


def test_the_part_after_an_excluded_middle_is_written_as_said(tokenizer, compiler):
    from nanologic.grammar import excluded_middle_notes

    sentence = "O Marta viene a la cena o no viene, pero de todos modos ni llueve ni hace frío."
    notes = excluded_middle_notes(sentence)
    assert notes[1:] == ["# conjunction parts 2", "# argument compound 2 ∧ ¬ llover / ¬ hacer frio"], notes
    assert excluded_middle_notes("O Marta viene a la cena o no viene, pero llueve y no hace frío.")[2] == (
        "# argument compound 2 ∧ + llover / ¬ hacer frio"
    )
    assert excluded_middle_notes("O Marta viene a la cena o no, pero no llueve de todas formas.")[2] == (
        "# argument literal 2 ¬ llover"
    )
    # a predicate shared by two subjects: two clauses, each with the predicate and its sign
    shared = "O Marta viene a la cena o no viene, pero el bebé y los perros no estarán tranquilos."
    assert (
        excluded_middle_notes(shared)[2] == "# argument compound 2 ∧ ¬ bebe estar tranq / ¬ perro estar tranq"
    )
    grammar = grounded_grammar(sentence)
    atoms = ["Marta viene a la cena ±", "llueve ¬", "hace frío ¬"]
    head = _answer(atoms, "", "∨: o | ¬: no | ∧: pero").replace(" <|eos|>", "")

    allowed = _texts_after(tokenizer, compiler, grammar, head)

    # the model wrote "(p ∨ ¬p) ∧ (¬q ∨ ¬r)" and "(p ∨ ¬p) ∧ ¬q" for such sentences
    assert allowed("(p ∨ ¬p) ∧") and all(a.startswith("(") for a in allowed("(p ∨ ¬p) ∧"))
    assert allowed("(p ∨ ¬p) ∧ (¬q") <= {"∧", ""} and "∧" in allowed("(p ∨ ¬p) ∧ (¬q")
    assert allowed("(p ∨ ¬p) ∧ (¬q ∧ ¬") == {"r"}
    assert _mask_allows(
        tokenizer, compiler, grammar, _answer(atoms, "(p ∨ ¬p) ∧ (¬q ∧ ¬r)", "∨: o | ¬: no | ∧: pero")
    )


def test_a_conjunction_of_conditionals_is_written_part_by_part(tokenizer, compiler):
    from nanologic.grammar import conjunction_notes

    sentence = "Si estudio, no limpio; y si no limpio, no corro."
    notes = conjunction_notes(sentence)
    assert notes[0] == "# conjunction parts 2" and all("argument compound" in n for n in notes[1:]), notes
    assert conjunction_notes("Si estudio, entonces no limpio y si limpio, entonces no estudio.")[0].endswith(
        " 2"
    )
    assert (
        conjunction_notes("No pasa que llueva o nieve; además, no pasa que salga o corra.") == []
    )  # ¬(A ∨ B)
    assert conjunction_notes("Si llueve, salgo.") == []
    # after a comma before a word of contrast or reason, or opened by one; "ni A ni B" opening the
    # sentence is two flat conjuncts (the model had written "¬p ∧ ¬q ∧ (r ∧ s)" for "…, pero A o B")
    assert conjunction_notes("Ni Inés duerme ni Ana cuenta, pero Eva llega o Luis calcula.") == [
        "# conjunction parts 3",
        "# argument literal 1 ¬ ines dormir",
        "# argument literal 2 ¬ ana contar",
        "# argument compound 3 ∨ + eva llegar / + luis calcular",
    ]
    assert conjunction_notes("Puesto que o bien Ana canta, o bien Eva baila, Luis corre y Ana baila.")[
        1:
    ] == [
        "# argument compound 1 ∨ + ana cantar / + eva bailar",
        "# argument compound 2 ∧ + luis correr / + ana bailar",
    ]
    assert conjunction_notes("O Ana canta o Eva baila, pero no ambos.") == []  # an exclusive or
    # "tanto A como B V": A shares B's predicate and its sign (the model had written "(q ∨ r)")
    assert conjunction_notes("Ana no canta, pero tanto Luis como Eva no bailan.")[-1] == (
        "# argument compound 2 ∧ ¬ luis bailar / ¬ eva bailar"
    )
    grammar = grounded_grammar(sentence)
    atoms = ["estudio", "limpio ¬", "corro ¬"]
    head = _answer(atoms, "", "→: si | ¬: no | ∧: y").replace(" <|eos|>", "")

    allowed = _texts_after(tokenizer, compiler, grammar, head)

    # the second part repeats the first's clause: its letter, its sign (a model wrote "(¬r → ¬s)")
    assert allowed("(p → ¬q) ∧ (") == {"¬"} or allowed("(p → ¬q) ∧ (") <= {"¬", ""}
    assert "q" in allowed("(p → ¬q) ∧ (¬") and "p" not in allowed("(p → ¬q) ∧ (¬")
    assert not any(c in a for a in allowed("(p → ¬q) ∧ (¬q → ¬r)") for c in "∧∨→↔(")  # it ends
    assert _mask_allows(
        tokenizer, compiler, grammar, _answer(atoms, "(p → ¬q) ∧ (¬q → ¬r)", "→: si | ¬: no | ∧: y")
    )
    # a clause the model declared twice (one verb, two tenses) takes its first letter: the default
    # model had written "(p → ¬q) ∧ (¬r → ¬s)" with q "Montse cantará tango", r "Montse canta tango"
    sentence = "Si Montse está afinada, no cantará tango; y si no canta tango, el concierto no se celebra."
    atoms = [
        "Montse está afinada",
        "Montse cantará tango ¬",
        "Montse canta tango ¬",
        "el concierto se celebra ¬",
    ]
    head = _answer(atoms, "", "→: si | ¬: no | ∧: y").replace(" <|eos|>", "")
    allowed = _texts_after(tokenizer, compiler, grounded_grammar(sentence), head)
    assert "q" in allowed("(p → ¬q) ∧ (¬") and "r" not in allowed("(p → ¬q) ∧ (¬")
    # but a conditional's consequent is another clause than its condition (one verb, two atoms)
    sentence = "Si la célula crece, la célula creció."
    head = _answer(["la célula crece", "la célula creció"], "", "→: si").replace(" <|eos|>", "")
    allowed = _texts_after(tokenizer, compiler, grounded_grammar(sentence), head)
    assert allowed("p →") == {"q"} or allowed("p →") <= {"q", ""}, allowed("p →")


def test_no_a_ni_b_negates_both_clauses(tokenizer, compiler):
    """ "A no V ni W" is ¬A ∧ ¬B wherever a part of two clauses is read: the default model had
    written ``p ↔ ¬q`` for "La serie es lineal si y solo si Ainhoa no resolvió la ecuación ni
    multiplicó 7 por 4" (3 of a synthetic test's 19 wrong structures)."""
    from nanologic.grammar import conditional_antecedent_notes

    assert conditional_antecedent_notes("Si llueve, Ana no canta ni baila.")[-1] == (
        "# argument compound c ∧ ¬ ana cantar / ¬ bailar"
    )
    # "no A ni no B" is no such reading
    assert "∧" not in " ".join(conditional_antecedent_notes("Si llueve, Ana no canta ni no baila."))
    sentence = "La serie es lineal si y solo si Ana no resuelve la ecuación ni multiplica 7 por 4."
    atoms = ["la serie es lineal", "Ana resuelve la ecuación ¬", "Ana multiplica 7 por 4 ¬"]
    connectors = "↔: si y solo si | ¬: no | ∧: ni"
    grammar = grounded_grammar(sentence)
    assert _mask_allows(tokenizer, compiler, grammar, _answer(atoms, "p ↔ (¬q ∧ ¬r)", connectors))
    assert not _mask_allows(tokenizer, compiler, grammar, _answer(atoms, "p ↔ ¬q", connectors))


def test_a_conditional_of_three_clauses_is_a_part_counted_not_noted(tokenizer, compiler):
    """ "Si A, B; además, si no C, D o E": the second part is no compound of two clauses, so it has
    no note, but the conjunction still has two parts and the first its shape; the model had
    written ``((p ∨ q) → ¬r) ∧ (s → t)`` (8 of a synthetic test's 25 wrong structures)."""
    from nanologic.grammar import CLAUSE_SIGN_NOTE, conjunction_notes

    sentence = "Si llueve, me mojo; además, si no salgo, leo o duermo."
    notes = conjunction_notes(sentence)
    assert notes[:3] == [
        "# conjunction parts 2",
        "# argument compound 1 → + llover / + mojar",
        "# counted part 2 → ∨",  # the connectives it says
    ], notes
    # its clauses' signs come from the sentence, as where no part is noted
    assert f"{CLAUSE_SIGN_NOTE} ¬ salir" in notes, notes
    atoms = "p: llueve | q: me mojo | r: salgo ¬ | s: leo | t: duermo"
    head = f"<|atoms|> {atoms} <|connectors|> →: si | ∧: además | ¬: no | ∨: o <|formula|>"
    grammar = grounded_grammar(sentence)
    assert _mask_allows(tokenizer, compiler, grammar, f"{head} (p → q) ∧ (¬r → (s ∨ t)) <|eos|>")
    assert not _mask_allows(tokenizer, compiler, grammar, f"{head} ((p ∨ q) → ¬r) ∧ (s → t) <|eos|>")
    assert not _mask_allows(tokenizer, compiler, grammar, f"{head} (p → q) ∧ (¬r → (s ∧ t)) <|eos|>")
    # the counted part, written whole, ends the formula
    allowed = _texts_after(tokenizer, compiler, grammar, head)
    assert not any(c in a for a in allowed("(p → q) ∧ (¬r → (s ∨ t))") for c in "∧∨→↔(pqrst")
    # an argument ("…, entonces si A, C") is no conjunction
    assert conjunction_notes("Si llueve, me mojo; si me mojo, enfermo, entonces si llueve, enfermo.") == []


def test_the_lone_space_only_ends_a_section(records):
    """The lone-space token comes before a marker in every training target (or before a text the
    tokenizer does not join to a space); where a word must follow, the model's "end here" on it
    made it spell the word a byte at a time ("Hablo y no hablo." → ``p: Hablo habláis habláis
    habla``), so there the mask leaves it out."""
    from lm_shared.tokenization import train_bpe
    from nanologic.grammar import GrammarCompiler

    texts = [prompt_text(r["natural_language_input"]) + target_text(r, False) for r in records]
    tokenizer = train_bpe(texts, 2000, SPECIAL_TOKENS)  # large enough to hold " ¬" and " ±"
    assert {tokenizer.decode([t]) for t in tokenizer.encode(" ¬ ±")} == {" ¬", " ±"}
    compiler = GrammarCompiler(tokenizer, stop_ids=[tokenizer.token_to_id("<|eos|>")])
    space = compiler.space_id
    assert space is not None and tokenizer.encode(" <|connectors|>") == [
        space,
        tokenizer.token_to_id("<|connectors|>"),
    ]
    for text in ("llueve", "¬", "±", "(p"):
        assert (
            tokenizer.encode(" " + text)[0] != space
            or tokenizer.encode(" " + text)[1] in compiler.after_space
        )
    formula = "<|atoms|> p: llueve | q: nieva <|connectors|> ∧: y <|formula|> p ∧"
    assert " " not in _allowed_after(
        tokenizer, compiler, "<|atoms|> p:", grounded_grammar("Si llueve, nieva.")
    )
    assert " " not in _allowed_after(tokenizer, compiler, formula)
    assert " " in _allowed_after(tokenizer, compiler, "<|atoms|> p: llueve | q: nieva")
    assert " " in _allowed_after(tokenizer, compiler, formula + " q")
    # the end the grammar allows but the marks do not: the clause needs its ¬ first
    grammar = grounded_grammar("El examen es el lunes salvo que el profesor esté enfermo.")
    head = "<|atoms|> p: el examen es el lunes | q: el profesor esté enfermo"
    allowed = _allowed_after(tokenizer, compiler, head, grammar)
    assert " " not in allowed and " ¬" in allowed, allowed


def test_the_lone_space_comes_before_a_letter_the_vocabulary_holds_only_as_bytes(tokenizer, compiler):
    """In a small vocabulary "Á" has no token, let alone " Á": the tokenizer writes " Álvaro" as
    the lone space and two bytes, and the mask must let a definition open that way."""
    sentence = "Ni Álvaro canta ni Óscar baila."
    ids = tokenizer.encode(" Álvaro")
    assert ids[0] == compiler.space_id and tokenizer.decode(ids[1:2]) != "Á"  # the case at hand
    assert ids[1] in compiler.after_space
    answer = _answer(["Álvaro canta", "Óscar baila"], "¬p ∧ ¬q", "¬: ni...ni | ∧: ni...ni")
    answer = answer.replace("Álvaro canta", "Álvaro canta ¬").replace("Óscar baila", "Óscar baila ¬")
    assert _mask_allows(tokenizer, compiler, grounded_grammar(sentence), answer)


def test_a_conditional_without_its_comma_is_read_with_it():
    """The condition of "Si A B" ends where the rule baseline's split finds the consequent opening
    (with its subject), and the grammar notes the conditional as if the comma were there: the
    default model had read "Si está durmiendo no vendrá a la fiesta." as ``¬p → q`` (dev_real)."""
    from nanologic.grammar import with_conditional_comma

    for sentence, read in (
        ("Si está durmiendo no vendrá a la fiesta.", "Si está durmiendo, no vendrá a la fiesta."),
        # not at a noun that is also a verb form ("cocina"); the subject goes with its verb
        (
            "Siempre que la cocina no es grande nosotros no nadamos.",
            "Siempre que la cocina no es grande, nosotros no nadamos.",
        ),
        # not at a participle, nor inside the head's last coordinated clause before its verb
        (
            "Cuando vemos el partido el año pasado y la Real Sociedad no ganó la copa el torneo empieza.",
            "Cuando vemos el partido el año pasado y la Real Sociedad no ganó la copa, el torneo empieza.",
        ),
        # a noun phrase after a preposition is no subject
        (
            "Si salgo electo presidente de la República recibirán un aumento.",
            "Si salgo electo presidente de la República, recibirán un aumento.",
        ),
        # the other cues of a condition; a subject after a pronominal verb, "de" in a subject; no
        # time said with a demonstrative, nor a noun after a preposition ("el viaje"), is a subject
        (
            "A menos que el examen se suspendiera el científico suspende física.",
            "A menos que el examen se suspendiera, el científico suspende física.",
        ),
        (
            "Excepto que amaneciera nublado la raíz de 60 será par.",
            "Excepto que amaneciera nublado, la raíz de 60 será par.",
        ),
        (
            "A menos que Celia venda un reloj este año tronará.",
            "A menos que Celia venda un reloj este año, tronará.",
        ),
        (
            "Para que Miriam sume 92 y 23 durante el viaje saldrá y no resuelve la ecuación.",
            "Para que Miriam sume 92 y 23 durante el viaje, saldrá y no resuelve la ecuación.",
        ),
        # a subject of two noun phrases goes with its verb, a name after a time too
        (
            "Siempre que los precios bajan esta semana Pupliochicha y Alejandro no tuvieron dinero.",
            "Siempre que los precios bajan esta semana, Pupliochicha y Alejandro no tuvieron dinero.",
        ),
        (
            "Si ellos no aprenden a tocar la gaita el médico o mi abuela han trabajado por fin.",
            "Si ellos no aprenden a tocar la gaita, el médico o mi abuela han trabajado por fin.",
        ),
        (
            "Siempre que la serie no tiene solución en invierno los jugadores o David pagan.",
            "Siempre que la serie no tiene solución en invierno, los jugadores o David pagan.",
        ),
        (
            "Cuando Gloria no defiende la piafiaranba los domingos Gloria marca un gol.",
            "Cuando Gloria no defiende la piafiaranba los domingos, Gloria marca un gol.",
        ),
        # a subject "de" numbers; a perfect whole before the consequent's verb; "el año pasado"
        # is a time, no participle
        (
            "Siempre que mi hermana ha resuelto la ecuación el producto de 6 y 29 no será par.",
            "Siempre que mi hermana ha resuelto la ecuación, el producto de 6 y 29 no será par.",
        ),
        (
            "Cuando no has pagado contaremos hasta 98 después de cenar.",
            "Cuando no has pagado, contaremos hasta 98 después de cenar.",
        ),
        (
            "Si Xavier no pidió un aumento el año pasado ha sido ingeniero.",
            "Si Xavier no pidió un aumento el año pasado, ha sido ingeniero.",
        ),
        # the other openings whose comma the generator leaves out: "solo si", "aunque", "ya que",
        # "dado que", "puesto que"
        (
            "Solo si la nieve corta la carretera antes de las 29 no nieva en la sierra o las alumnas "
            "estarán atentas.",
            "Solo si la nieve corta la carretera antes de las 29, no nieva en la sierra o las alumnas "
            "estarán atentas.",
        ),
        (
            "Ya que el ministro no apoyó la reforma educativa Óscar no es mayor de edad o corre.",
            "Ya que el ministro no apoyó la reforma educativa, Óscar no es mayor de edad o corre.",
        ),
        (
            "Aunque Vera no friega los platos Guillermo no visita a Felipe.",
            "Aunque Vera no friega los platos, Guillermo no visita a Felipe.",
        ),
        # said already, or no place found: as it is
        ("Si llueve, me mojo.", "Si llueve, me mojo."),
        ("Si llueve entonces me mojo.", "Si llueve entonces me mojo."),
        ("Si llueve.", "Si llueve."),
        # each part after ";", past the words that join it ("y", "pero", "y además,")
        (
            "Si Fernando marca un gol ella no gana el premio; y si el caballero no cruzó el bosque "
            "el caballero ha ganado la batalla.",
            "Si Fernando marca un gol, ella no gana el premio; y si el caballero no cruzó el bosque, "
            "el caballero ha ganado la batalla.",
        ),
        (
            "Cuando llegamos pronto el concierto no se celebra; pero siempre que dura 6 horas no "
            "ensayarás este mes; y además, llegamos pronto o durará 6 horas.",
            "Cuando llegamos pronto, el concierto no se celebra; pero siempre que dura 6 horas, no "
            "ensayarás este mes; y además, llegamos pronto o durará 6 horas.",
        ),
        ("Si llueve, me mojo; y si me mojo, me resfrío.", "Si llueve, me mojo; y si me mojo, me resfrío."),
    ):
        assert with_conditional_comma(sentence) == read, sentence
    # two conditionals, each with its signs (the default model had marked the second consequent
    # negated, ``(p → ¬q) ∧ (¬r → ¬s)``, where the whole part had been one clause said negated)
    notes = grounded_grammar(
        "Si Iván atiende a los clientes Patricia no investigó el virus; pero cuando nosotros no "
        "corremos cada semana el autobús parará en Cusco."
    ).splitlines()
    assert "# conjunction parts 2" in notes
    assert "# argument compound 2 → ¬ nosot correr cada seman / + autob parar cusco" in notes
    notes = grounded_grammar("Si está durmiendo no vendrá a la fiesta.").splitlines()
    assert "# conditional antecedent + esta durmi" in notes and "# argument literal c ¬ vendr fiest" in notes


def test_the_atom_list_holds_as_many_atoms_as_the_rules_read_clauses(tokenizer, compiler):
    # the default model had declared "mi prima suspende tritincoguel" alone, and a fragment of
    # "Juan vive en nuestra calle y Pedro en la manzana contigua" as a third clause
    sentence = "Ya que Lola paga en junio, mi prima suspende tritincoguel y cuetrorgra."
    two = "<|atoms|> p: Lola paga en junio | q: mi prima suspende tritincoguel <|connectors|> ∧: ya que"
    three = two.replace(" <|conn", " | r: mi prima suspende cuetrorgra <|conn")
    bounded, free = grounded_grammar(sentence), grounded_grammar(sentence, rule_bounds=False)
    assert not accepts_start(compiler, tokenizer, bounded, two + " <|formula|> p ∧ q <|eos|>")
    assert accepts(compiler, tokenizer, bounded, three + " <|formula|> p ∧ (q ∧ r) <|eos|>")
    assert accepts(compiler, tokenizer, free, two + " <|formula|> p ∧ q <|eos|>")
    sentence = "Juan vive en nuestra calle y Pedro en la manzana contigua."
    three = "<|atoms|> p: Juan vive en nuestra calle | q: Juan en la manzana | r: Pedro contigua"
    assert not accepts_start(compiler, tokenizer, grounded_grammar(sentence), three)
    assert accepts_start(compiler, tokenizer, grounded_grammar(sentence, rule_bounds=False), three)
    # a cue the rules do not read leaves the count to the model
    sentence = "Brayan está estudiando porque tiene examen y está amenazado."
    assert grounded_grammar(sentence) == grounded_grammar(sentence, rule_bounds=False)


def accepts_start(compiler, tokenizer, grammar: str, text: str) -> bool:
    """Whether the grammar accepts the token sequence of ``text`` as the start of an answer."""
    return compiler.accepts(grammar, tokenizer.encode(text))
