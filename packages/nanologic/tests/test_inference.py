import pytest
import torch

from nanologic.data import (
    ATOMS,
    CONNECTORS,
    EOS,
    FORMULA,
    SPECIAL_TOKENS,
    apply_polarity,
    formalization_result,
    literal_polarity,
    parse_output,
    prompt_text,
    record_from_raw,
    target_text,
)
from nanologic.errors import NanologicError
from nanologic.generator import generate
from nanologic.inference import Formalizer, first_complete_formula, has_redundant_definition, uncovered_words
from nanologic.logic import parse
from nanologic.model import NanoLogic, NanoLogicConfig, build_config


@pytest.fixture(scope="module")
def formalizer():
    from lm_shared.tokenization import train_bpe

    texts = [e["natural_language_input"] for e in generate(200, seed=1)]
    tokenizer = train_bpe(texts, 600, SPECIAL_TOKENS)
    torch.manual_seed(0)
    model = NanoLogic(build_config("tiny", tokenizer.vocab_size)).eval()
    return Formalizer(model, tokenizer, max_new_tokens=24, constraint=None)


@pytest.fixture
def grounded(formalizer):
    """The fixture's model decoding under the grounded grammar (a fresh one: tests patch it)."""
    return Formalizer(formalizer.model, formalizer.tokenizer, max_new_tokens=40, constraint="grounded")


def _encode_output(f: Formalizer, atoms: list[str]) -> list[int]:
    listed = " | ".join(f"{letter}: {d}" for letter, d in zip("pqrs", atoms))
    return f.tokenizer.encode(f"{ATOMS} {listed} {CONNECTORS} ∧: y {FORMULA} p ∧ q {EOS}")


def test_repeated_atom_span_finds_the_repeated_definition(formalizer):
    out = _encode_output(
        formalizer, ["llueve", "la columna admite valores nulos", "la columna admite valores nulos"]
    )
    start, end = formalizer.repeated_atom_span(out)
    assert formalizer.tokenizer.decode(out[start:end]).strip() == "la columna admite valores nulos"
    # the repeat is the third definition, not the second
    assert formalizer.tokenizer.decode(out[:start]).rstrip().endswith("r:")
    assert (
        formalizer.repeated_atom_span(_encode_output(formalizer, ["llueve", "hace frío", "me mojo"])) is None
    )
    assert formalizer.repeated_atom_span(formalizer.tokenizer.encode("sin secciones")) is None


def test_switch_least_sure_changes_one_token_of_the_repeat_and_resumes(formalizer):
    prompt = formalizer.tokenizer.encode(prompt_text("Si llueve, me mojo."))
    out = _encode_output(formalizer, ["llueve", "me mojo", "me mojo"])
    start, end = formalizer.repeated_atom_span(out)
    switched: set[int] = set()
    new = formalizer._switch_least_sure(prompt, out, (start, end), switched)
    (pos,) = switched
    assert start <= pos < end
    assert new[:pos] == out[:pos] and new[pos] != out[pos]
    # the rest is the model's own greedy continuation of the new prefix
    expected = formalizer.model.generate(
        [prompt + new[: pos + 1]], len(new) - pos - 1, pad_id=formalizer.pad_id, stop_ids=(formalizer.eos_id,)
    )[0]
    assert new[pos + 1 :] == expected
    # a second call never switches the same position back
    formalizer._switch_least_sure(prompt, out, (start, end), switched)
    assert len(switched) == 2


def _encode_answer(f: Formalizer, atoms: list[str], formula: str) -> list[int]:
    listed = " | ".join(f"{letter}: {d}" for letter, d in zip("pqrs", atoms))
    return f.tokenizer.encode(f"{ATOMS} {listed} {CONNECTORS} ∧: y {FORMULA} {formula} {EOS}")


def test_repair_span_under_a_grammar_takes_merged_or_missed_clauses(formalizer):
    listed = _encode_answer(formalizer, ["llueve", "me mojo"], "p ∧ q")
    assert formalizer.repair_span(listed, whole_list=True) is None
    for atoms, formula in (
        (["llueve y me mojo"], "p ∧ p"),
        (["llueve mucho", "llueve"], "p ∧ q"),  # q holds nothing p lacks
        (["llueve", "me mojo"], "p ∧ ¬p"),
        (["llueve", "me mojo"], "p ∧ (q ∧ (p"),  # cut by the token limit
    ):
        out = _encode_answer(formalizer, atoms, formula)
        assert formalizer.repair_span(out) is None  # free decoding: only repeated definitions
        start, end = formalizer.repair_span(out, whole_list=True)
        assert formalizer.tokenizer.decode(out[start:end]).strip().startswith("p: llueve")
        assert out[end] == formalizer.connectors_id
    # the formula's connectives differ from the declared ones ("∧: y"): connectors and formula
    out = _encode_answer(formalizer, ["llueve", "me mojo"], "p → q")
    start, end = formalizer.repair_span(out, whole_list=True)
    assert out[start - 1] == formalizer.connectors_id and out[end] == formalizer.eos_id
    # a letter used three times: the formula has run on
    out = formalizer.tokenizer.encode(
        f"{ATOMS} p: llueve | q: me mojo {CONNECTORS} ∧: y | →: si {FORMULA} p ∧ (q → (p → (q ∧ p))) {EOS}"
    )
    start, end = formalizer.repair_span(out, whole_list=True)
    assert out[start - 1] == formalizer.connectors_id and out[end] == formalizer.eos_id
    twice = f"{ATOMS} p: llueve | q: me mojo {CONNECTORS} ∧: y | →: si {FORMULA} (p → q) ∧ (q → p) {EOS}"
    assert formalizer.repair_span(formalizer.tokenizer.encode(twice), whole_list=True) is None
    # a negation said (in the sentence or the connectors) but missing from the formula: all of it
    affirmative = formalizer.tokenizer.encode(f"{ATOMS} p: llueve {CONNECTORS}  {FORMULA} p {EOS}")
    start, end = formalizer.repair_span(affirmative, whole_list=True, sentence="No llueve.")
    assert affirmative[start - 1] == formalizer.atoms_id and affirmative[end] == formalizer.eos_id
    assert formalizer.repair_span(affirmative, whole_list=True, sentence="Llueve.") is None
    declared = formalizer.tokenizer.encode(f"{ATOMS} p: llueve {CONNECTORS} ¬: no {FORMULA} p {EOS}")
    assert formalizer.repair_span(declared, whole_list=True)[1] == len(declared) - 1
    repeated = _encode_answer(formalizer, ["llueve", "llueve"], "p ∧ q")
    assert formalizer.repair_span(repeated, whole_list=True) == formalizer.repeated_atom_span(repeated)


def test_coverage_tries_are_judged_on_the_answer_as_it_will_be_given(formalizer):
    # A chain's clause written once without its subject and once with it, or twice word for word,
    # to reach the clause after it: the normalisation gives both one letter, so the answer is
    # whole. Read as written (the repair) it is marked, and the coverage try that found the
    # missed clause was refused.
    sentence = "Si Ana canta, no baila; y si no baila, Ana llora."
    connectors = f"{CONNECTORS} →: si | ¬: no | ∧: y | →: si {FORMULA}"
    written = Formalizer(formalizer.model, formalizer.tokenizer, constraint=None, normalize_definitions=False)
    for second in ("baila", "Ana baila"):
        atoms = f"{ATOMS} p: Ana canta | q: {second} ¬ | r: Ana baila ¬"
        out = formalizer.tokenizer.encode(f"{atoms} | s: Ana llora {connectors} (p → q) ∧ (r → s) {EOS}")
        assert formalizer.repair_span(out, whole_list=True, sentence=sentence, as_given=True) is None
        assert formalizer._answered_result(out, sentence)["formula"] == "(p → ¬q) ∧ (¬q → r)"
        assert formalizer.repair_span(out, whole_list=True, sentence=sentence) is not None
        assert written.repair_span(out, whole_list=True, sentence=sentence, as_given=True) is not None
        # as given, a formula that joins the merged clause with itself is still marked
        looped = formalizer.tokenizer.encode(f"{atoms} {connectors} (p → q) ∧ (q → r) {EOS}")
        assert formalizer.repair_span(looped, whole_list=True, sentence=sentence, as_given=True) is not None


def test_switch_under_the_grammar_keeps_the_answer_in_it(formalizer, grounded):
    xgr = pytest.importorskip("xgrammar")
    from nanologic.grammar import grounded_grammar

    sentence = "Si llueve, me mojo."
    grammar = grounded_grammar(sentence)
    prompt = formalizer.tokenizer.encode(prompt_text(sentence))
    out = _encode_answer(formalizer, ["llueve", "llueve"], "p ∧ q")
    start, end = grounded.repair_span(out, whole_list=True)
    switched: set[int] = set()
    new = grounded._switch_least_sure(prompt, out, (start, end), switched, grammar)
    (pos,) = switched
    assert new[:pos] == out[:pos] and new[pos] != out[pos]
    matcher = xgr.GrammarMatcher(grounded._grammar_compiler.compile(grammar))
    assert all(matcher.accept_token(t) for t in new), formalizer.tokenizer.decode(new)


def test_a_redundant_definition_holds_no_content_word_of_its_own():
    assert has_redundant_definition(
        ["Rosa es menor de edad", "Rosa es mayor de edad", "su hermano es mayor de edad"]
    )
    assert has_redundant_definition(["Juana tiene trece años", "Juana tiene trece"])
    assert not has_redundant_definition(["Juana tiene trece años", "Rosa tiene quince años"])
    assert not has_redundant_definition(["llueve"])
    # an expression is one word: the variable "y" of "x = y" is no conjunction
    assert not has_redundant_definition(["x = y", "x = 2"])
    assert has_redundant_definition(["x = y", "x = y"])
    assert not has_redundant_definition(["hay examen", "el examen es difícil"])  # "hay" is a word of its own
    assert has_redundant_definition(["", "llueve"])


def test_a_sentence_without_words_is_refused(formalizer):
    with pytest.raises(NanologicError, match="sentence 2"):
        formalizer.formalize(["Llueve.", "..."])


def test_uncovered_words_are_the_content_words_no_definition_holds():
    sentence = "Si llueve y hace sol sale el arco iris."
    assert uncovered_words(sentence, ["llueve", "hace sol"]) == ["sale", "arco", "iris"]
    assert uncovered_words(sentence, ["llueve", "hace sol", "sale el arco iris"]) == []
    # another form of a verb holds it; negations, cues and function words never count
    assert uncovered_words("Si no es el caso de que salga el sol, llueve.", ["sale el sol", "llueve"]) == []
    assert uncovered_words("No supo qué contestar.", ["supo qué"]) == ["contestar"]


def test_cover_keeps_only_a_reading_that_leaves_fewer_words_out(formalizer, grounded, monkeypatch):
    sentence = "Si llueve y hace sol, sale el arco iris."
    prompt = formalizer.tokenizer.encode(prompt_text(sentence))
    complete = formalizer.tokenizer.encode(
        f"{ATOMS} p: llueve | q: hace sol | r: sale el arco iris {CONNECTORS} ∧: y | →: si "
        f"{FORMULA} (p ∧ q) → r {EOS}"
    )
    assert grounded._cover(prompt, complete, "grammar", sentence) is complete
    short = _encode_answer(formalizer, ["llueve", "hace sol"], "p ∧ q")
    unused = _encode_answer(formalizer, ["llueve", "hace sol", "sale el arco iris"], "p ∧ q")
    tries = []

    def switch(candidates):
        def fake(items):
            tries.extend(span for _, _, span, _, _ in items)
            return candidates[: len(items)]

        return fake

    # the first try (another atom where the list ended) declares r but never uses it: refused
    monkeypatch.setattr(grounded, "_switch_batch", switch([unused, complete]))
    assert grounded._cover(prompt, short, "grammar", sentence) is complete
    end = short.index(grounded.connectors_id)
    assert tries == [(end - 1, end), (short.index(grounded.atoms_id) + 1, end)]
    # neither try leaves fewer words out: the answer stays as it was
    tries.clear()
    monkeypatch.setattr(grounded, "_switch_batch", switch([unused, short]))
    assert grounded._cover(prompt, short, "grammar", sentence) is short


def test_formalize_normalises_definitions_and_keeps_the_raw_answer(formalizer, monkeypatch):
    sentence = "La alcaldesa apoya la moción y firma el plan."
    raw = (
        f"{ATOMS} p: la alcaldesa apoya la moción | q: firma el plan {CONNECTORS} ∧: y {FORMULA} p ∧ q {EOS}"
    )
    monkeypatch.setattr(formalizer, "generate_raw", lambda sentences, batch_size=64: [raw])
    (result,) = formalizer.formalize([sentence])
    assert result["atoms"] == {"p": "la alcaldesa apoya la moción", "q": "la alcaldesa firma el plan"}
    assert result["raw"] == raw
    monkeypatch.setattr(formalizer, "normalize_definitions", False)
    assert formalizer.formalize([sentence])[0]["atoms"]["q"] == "firma el plan"


@pytest.mark.parametrize(
    ("runaway", "letters", "cut"),
    [
        ("¬(p → q ↔ q → ¬q ↔ ¬p ∨ q → ¬q ∧ q", {"p", "q"}, "¬(p → q)"),
        ("(p → q) ∧ (q ∧ q → ¬q ∧ (q ∧ (q", {"p", "q"}, "p → q"),
        ("p ∧ (q → r ∨ r → p ∧ (q → r ↔ r", {"p", "q", "r"}, "p ∧ (q → r)"),
        # never a whole formula over the declared letters, or not a formula's start at all
        ("(p ∨ q) → (((q ∨ (p ∧ (((q ∨ q", {"p", "q", "r"}, None),
        ("p ∧ q))", {"p", "q", "r"}, None),
        # ASCII spellings are read as the parser reads them; text after the formula is not
        ("p -> q & q <-> p |", {"p", "q"}, "p → q"),
        ("p ∧ q ya está", {"p", "q"}, "p ∧ q"),
    ],
)
def test_a_runaway_formula_is_cut_where_it_first_was_whole(runaway, letters, cut):
    assert first_complete_formula(runaway, letters) == cut


def test_a_cut_formula_keeps_the_declared_binary_connectives(formalizer, monkeypatch):
    # "Viene o no viene": one letter is whole at "p"; the declared ∨ asks for "p ∨ ¬p"
    assert first_complete_formula("p ∨ ¬p ∨ ¬p", {"p"}) == "p"
    assert first_complete_formula("p ∨ ¬p ∨ ¬p", {"p"}, {"∨"}) == "p ∨ ¬p"
    assert first_complete_formula("p ∧ (q → r ∨ r → p", {"p", "q", "r"}, {"∧", "→"}) == "p ∧ (q → r)"
    # no prefix says every declared connective: the shortest whole one
    assert first_complete_formula("p ∧ q ∧ p ∧ q", {"p", "q"}, {"↔"}) == "p ∧ q"
    raw = f"{ATOMS} p: viene ± {CONNECTORS} ∨: o | ¬: no {FORMULA} p ∨ ¬p ∨ ¬p {EOS}"
    monkeypatch.setattr(formalizer, "generate_raw", lambda sentences, batch_size=64: [raw])
    (result,) = formalizer.formalize(["Viene o no viene."])
    assert result["formula_cut"] and parse(result["formula"]) == parse("p ∨ ¬p")


def test_formalize_cuts_a_runaway_formula_and_keeps_the_raw_answer(formalizer, monkeypatch):
    raw = f"{ATOMS} p: estudias | q: suspendes ¬ {CONNECTORS} ¬: no pasa que {FORMULA} ¬(p → q ↔ q → p ∧ ¬(q"
    monkeypatch.setattr(formalizer, "generate_raw", lambda sentences, batch_size=64: [raw])
    (result,) = formalizer.formalize(["No pasa que si estudias, suspendas."])
    assert result["valid_formula"] and result["formula_cut"] and result["raw"] == raw
    assert parse(result["formula"]) == parse("¬(p → ¬q)")  # the declared mark sets q's sign
    whole = f"{ATOMS} p: estudias | q: suspendes {CONNECTORS} →: si {FORMULA} p → q {EOS}"
    monkeypatch.setattr(formalizer, "generate_raw", lambda sentences, batch_size=64: [whole])
    assert not formalizer.formalize(["Si estudias, suspendes."])[0]["formula_cut"]


def test_a_formula_that_ran_on_and_ended_is_cut_where_it_first_was_whole(formalizer, monkeypatch):
    # no gold formula uses a letter three times; this one went on after p ∧ (q → r) and closed
    answer = (
        f"{ATOMS} p: Leo es abogado | q: Manuel trabajó | r: la reunión dura {CONNECTORS} ∧: puesto que | →: cuando "
        f"{FORMULA} p ∧ ((q → r) → (p → (r → (p → (r ∧ r))))) {EOS}"
    )
    monkeypatch.setattr(formalizer, "generate_raw", lambda sentences, batch_size=64: [answer])
    (result,) = formalizer.formalize(["Puesto que Leo es abogado, cuando Manuel trabajó, la reunión dura."])
    assert result["formula_cut"] and parse(result["formula"]) == parse("p ∧ (q → r)")
    twice = f"{ATOMS} p: llueve | q: nieva {CONNECTORS} ∨: o {FORMULA} (p ∨ q) ∧ ¬(p ∧ q) {EOS}"
    monkeypatch.setattr(formalizer, "generate_raw", lambda sentences, batch_size=64: [twice])
    (result,) = formalizer.formalize(["O llueve o nieva."])
    assert not result["formula_cut"] and parse(result["formula"]) == parse("(p ∨ q) ∧ ¬(p ∧ q)")


def test_an_answer_cut_inside_a_character_shows_no_replacement_character(formalizer, monkeypatch):
    # the token limit fell inside "∨" (three bytes): the byte-level decoder gives U+FFFD
    raw = f"{ATOMS} p: llueve | q: nieva {CONNECTORS} ∨: o {FORMULA} p ∨ q \ufffd"
    monkeypatch.setattr(formalizer, "generate_raw", lambda sentences, batch_size=64: [raw])
    (result,) = formalizer.formalize(["Llueve o nieva."])
    assert result["formula"] == "p ∨ q" and not result["formula_cut"]


def test_generate_raw_with_and_without_repair_parses(formalizer):
    sentences = ["Si llueve, me mojo.", "No hay backup y el server crashea."]
    for tries in (0, 2):
        formalizer.repair_tries = tries
        for text in formalizer.generate_raw(sentences):
            assert isinstance(parse_output(text)["atoms"], dict)


def test_parsed_definitions_drop_the_sentence_final_punctuation_a_copy_carries():
    text = f" {ATOMS} p: el perro ladra | q: el cartero llega. | r: Leonardo D. {CONNECTORS} →: si {FORMULA} q → p"
    atoms = parse_output(text)["atoms"]
    assert atoms == {"p": "el perro ladra", "q": "el cartero llega", "r": "Leonardo D."}


def test_polarity_marks_are_the_literals_signs_and_read_back():
    assert literal_polarity("(p ∨ q) ∧ ¬(p ∧ q)") == {"p": "", "q": ""}  # a negated group is structure
    assert literal_polarity("(p ∨ ¬p) ∧ (¬q ∧ r)") == {"p": "±", "q": "¬", "r": ""}
    for r in map(record_from_raw, generate(200, seed=5)):
        text = target_text(r, with_thought=False)
        parsed = parse_output(text)
        assert parsed["atoms"] == r["atoms"]
        assert parsed["polarity"] == literal_polarity(r["formula"])
        negated = [letter for letter, mark in parsed["polarity"].items() if mark == "¬"]
        assert all(f"{letter}: {r['atoms'][letter]} ¬" in text for letter in negated)
        assert formalization_result(text, polarity_marks=True)["formula"] == r["formula"]


def test_an_answer_without_marks_reads_as_before():
    text = f" {ATOMS} p: llueve | q: nieva {CONNECTORS} ∧: y {FORMULA} ¬p ∧ q"
    parsed = parse_output(text)
    assert parsed["atoms"] == {"p": "llueve", "q": "nieva"}
    assert parsed["polarity"] == {"p": "", "q": ""}


def test_declared_marks_set_the_formulas_literal_signs():
    raw = f" {ATOMS} p: Ana canta | q: Luis baila {CONNECTORS} ∨: o | ∧: pero {FORMULA} (p ∨ ¬q) ∧ ¬(p ∧ ¬q) {EOS}"
    assert formalization_result(raw)["formula"] == "(p ∨ ¬q) ∧ ¬(p ∧ ¬q)"  # a run without marks
    assert formalization_result(raw, polarity_marks=True)["formula"] == "(p ∨ q) ∧ ¬(p ∧ q)"
    marked = raw.replace("Luis baila", "Luis baila ¬").replace("(p ∨ ¬q) ∧ ¬(p ∧ ¬q)", "p ∧ q")
    assert formalization_result(marked, polarity_marks=True)["formula"] == "p ∧ ¬q"
    mixed = f" {ATOMS} p: llueve ± {CONNECTORS} ∨: o {FORMULA} p ∨ ¬p {EOS}"
    assert formalization_result(mixed, polarity_marks=True)["formula"] == "p ∨ ¬p"
    for formula in ("¬(p → q) ∧ (¬r ∨ s)", "(p ∨ ¬p) ∧ ¬q"):
        node = parse(formula)
        assert apply_polarity(node, literal_polarity(formula)) == node


def test_a_formula_written_out_deeper_than_the_parser_takes_back_is_unparsable():
    """A run-on "p ↔ q ↔ p ↔ …" parses (a loop), but written out with its parentheses it nests
    past logic.MAX_NESTING: every later parse of the answer would fail (evaluate crashed on one)."""
    chain = " ↔ ".join("pq" * 40)
    result = formalization_result(
        f"<|atoms|> p: llueve | q: nieva <|connectors|> ↔: si <|formula|> {chain} <|eos|>"
    )
    assert parse(chain) is not None
    assert not result["valid_formula"] and result["formula_ascii"] == ""
    short = formalization_result(
        "<|atoms|> p: llueve | q: nieva <|connectors|> ↔: si <|formula|> p ↔ q ↔ p <|eos|>"
    )
    assert short["valid_formula"] and short["formula"] == "(p ↔ q) ↔ p"


def test_models_built_now_write_marks_and_old_configs_do_not():
    assert build_config("tiny", 100).polarity_marks
    saved_before_the_marks = {
        k: v for k, v in build_config("tiny", 100).to_dict().items() if k != "polarity_marks"
    }
    assert not NanoLogicConfig(**saved_before_the_marks).polarity_marks


def test_beam_keeps_the_best_answer_that_breaks_no_rule(formalizer, monkeypatch):
    repeated = _encode_answer(formalizer, ["me mojo", "me mojo"], "p → q")
    clean = _encode_answer(formalizer, ["llueve", "me mojo"], "p → q")
    also_clean = _encode_answer(formalizer, ["llueve", "hace frío"], "p ∧ q")
    prompt = formalizer.tokenizer.encode(prompt_text("Si llueve, me mojo."))
    calls = []

    def beam_search(p, max_new_tokens, beam_size, *, stop_ids, mask):
        calls.append((p, beam_size, mask))
        return [(repeated, -0.1), (clean, -0.2), (also_clean, -0.3)]

    monkeypatch.setattr(formalizer.model, "beam_search", beam_search)
    monkeypatch.setattr(formalizer, "beam_size", 3)
    assert formalizer._beam(prompt, None, "Si llueve, me mojo.") == clean
    assert calls == [(prompt, 3, None)]
    # none keeps the rules: the best one (the repair then gets its turn)
    monkeypatch.setattr(formalizer.model, "beam_search", lambda *a, **k: [(repeated, -0.1)])
    assert formalizer._beam(prompt, None, "Si llueve, me mojo.") == repeated
    with pytest.raises(NanologicError, match="beam_size"):
        Formalizer(formalizer.model, formalizer.tokenizer, beam_size=0)


def test_repairs_batched_over_sentences_equal_one_sentence_at_a_time(formalizer, monkeypatch):
    pytest.importorskip("xgrammar")
    # 40 tokens: room for the untrained model to reach a formula the repair takes up
    f = Formalizer(formalizer.model, formalizer.tokenizer, max_new_tokens=40, constraint="grounded")
    sentences = [
        "Si llueve, me mojo.",
        "Juan estudia o Marta trabaja.",
        "No es cierto que Ana cante y Pedro baile.",
        "El perro ladra si el cartero llega.",
        "Si nieva, no salgo de casa.",
        "Ana canta y Pedro baila.",
        "Hablo y no hablo.",
        "Es primavera.",
    ]
    batch_sizes = []
    switch_batch = f._switch_batch

    def counting(items):
        batch_sizes.append(len(items))
        return switch_batch(items)

    monkeypatch.setattr(f, "_switch_batch", counting)
    together = f.generate_raw(sentences)
    assert max(batch_sizes) > 1  # the untrained model's answers were repaired together
    assert together == [f.generate_raw([s])[0] for s in sentences]


def test_retarget_resumes_where_a_verb_was_taken_twice_or_a_definition_was_cut(formalizer, grounded):
    pytest.importorskip("xgrammar")
    from nanologic.grammar import grounded_grammar

    # "llega" read for the subjunctives "vaya" and "dimita", which no definition holds
    sentence = "Ya sea que mi hermana vaya al concierto o que mi hermana dimita de nuevo, no llega."
    prompt = formalizer.tokenizer.encode(prompt_text(sentence))
    out = formalizer.tokenizer.encode(
        f"{ATOMS} p: mi hermana llega al concierto | q: mi hermana llega de nuevo | r: llega ¬ "
        f"{CONNECTORS} ∨: ya sea que | →: ya sea que | ¬: no {FORMULA} (p ∨ q) → ¬r {EOS}"
    )
    # the repair on its own: the rules' clause count (three) would not let a fourth atom open
    grammar = grounded_grammar(sentence, polarity_marks=True, rule_bounds=False)
    left_out = uncovered_words(sentence, grounded._definitions(out))
    assert left_out == ["vaya", "dimita"]
    heads = grounded._retarget_heads(prompt, out, grammar, sentence, left_out)
    opened = grounded._another_atom_head(out, grammar)
    assert opened is not None and heads[-2] == opened and heads[-1][:-1] == opened
    heads = heads[:-2] + heads[-1:]  # the opened atom written freely ends in no word
    decoded = [formalizer.tokenizer.decode(head[:-1]) for head in heads]
    # at each "llega" (the sentence says it once); never at the repeated subject "mi hermana"
    assert decoded[:3] == [
        f"{ATOMS} p: mi hermana",
        f"{ATOMS} p: mi hermana llega al concierto | q: mi hermana",
        f"{ATOMS} p: mi hermana llega al concierto | q: mi hermana llega de nuevo | r:",
    ]
    for head, prefix in zip(heads, decoded):
        word = formalizer.tokenizer.decode(head[-1:])
        assert word.startswith(" ") and any(
            form.startswith(word.strip().lower()) for form in ("va", "vaya", "dimite", "dimita")
        ), (prefix, word)
    # a definition cut short ("Ana lee" for "Ana lee novelas") is resumed where it ended, in the
    # list or at its end; never across a comma ("Luis canta, Ana lee novelas")
    for sentence, atoms, cut in (
        ("Si Ana lee novelas, Luis canta.", ["Ana lee", "Luis canta"], "p: Ana lee"),
        ("Si Luis canta, Ana lee novelas.", ["Luis canta", "Ana lee"], "p: Luis canta | q: Ana lee"),
    ):
        prompt = formalizer.tokenizer.encode(prompt_text(sentence))
        out = _encode_answer(formalizer, atoms, "p → q")
        grammar = grounded_grammar(sentence, polarity_marks=True, rule_bounds=False)
        heads = grounded._retarget_heads(prompt, out, grammar, sentence, ["novelas"])[:-2]
        assert [formalizer.tokenizer.decode(h[:-1]).rstrip() for h in heads] == [f"{ATOMS} {cut}"]
        assert formalizer.tokenizer.decode(heads[0][-1:]).startswith(" n")


def test_retarget_tries_another_atom_where_the_list_ended_before_a_clause(formalizer, grounded):
    pytest.importorskip("xgrammar")
    from nanologic.grammar import grounded_grammar

    # "mi prima suspende lengua", an elided conjunct, was left out of the list
    sentence = "Ya que Lola paga en junio, mi prima suspende francés y lengua."
    # the repair on its own: the rules' clause count would not let the list end at two atoms
    grammar = grounded_grammar(sentence, polarity_marks=True, rule_bounds=False)
    out = formalizer.tokenizer.encode(
        f"{ATOMS} p: Lola paga en junio | q: mi prima suspende francés "
        f"{CONNECTORS} ∧: ya que {FORMULA} p ∧ q {EOS}"
    )
    head = grounded._another_atom_head(out, grammar)
    assert head is not None
    assert formalizer.tokenizer.decode(head) == (
        f"{ATOMS} p: Lola paga en junio | q: mi prima suspende francés | r:"
    )
    # the try is one of the retarget batch's heads, decoded on under the grammar
    prompt = formalizer.tokenizer.encode(prompt_text(sentence))
    tried = grounded._resume_batch([prompt], [head], [grammar])[0]
    assert tried[: len(head)] == head and grounded._compiler().accepts(grammar, tried)
    # among the retarget's heads: as it is, and with a token that begins the word left out
    heads = grounded._retarget_heads(prompt, out, grammar, sentence, ["lengua"])
    assert heads[-2] == head and heads[-1][:-1] == head
    assert "lengua".startswith(formalizer.tokenizer.decode(heads[-1][-1:]).strip())
    # one verb left out is mostly a clause's own verb misread: the new atom only as it is
    assert grounded._retarget_heads(prompt, out, grammar, sentence, ["suspende"])[-1] == head
    # none where the grammar allows no more atoms (eight)
    listed = " | ".join(f"{letter}: llueve" for letter in "pqrstuvw")
    full = formalizer.tokenizer.encode(f"{ATOMS} {listed} {CONNECTORS} {FORMULA} p {EOS}")
    one = grounded_grammar("Llueve.", polarity_marks=True, rule_bounds=False)
    assert grounded._compiler().accepts(one, full[: full.index(grounded.connectors_id)])
    assert grounded._another_atom_head(full, one) is None


def test_retarget_tries_a_definition_the_answer_merges_into_an_earlier_one(formalizer, grounded):
    pytest.importorskip("xgrammar")
    from nanologic.grammar import grounded_grammar

    # two forms of one clause, given as one letter (``p → p``), while "Llover" is left out; no
    # definition is made only of the other's words ("moja", "moje")
    sentence = "Llover es condición suficiente para que el suelo se moje."
    definitions = ["el suelo se moja", "el suelo se moje"]
    assert not has_redundant_definition(definitions)
    out = _encode_answer(formalizer, definitions, "p → q")
    prompt = formalizer.tokenizer.encode(prompt_text(sentence))
    grammar = grounded_grammar(sentence, polarity_marks=True)
    heads = grounded._retarget_heads(prompt, out, grammar, sentence, ["Llover"])
    decoded = [formalizer.tokenizer.decode(head[:-1]).rstrip() for head in heads]
    assert f"{ATOMS} p: el suelo se moja | q:" in decoded
    tried = heads[decoded.index(f"{ATOMS} p: el suelo se moja | q:")]
    assert "llover".startswith(formalizer.tokenizer.decode(tried[-1:]).strip().lower())


def test_grounded_unbounded_decoding_leaves_the_atom_count_to_the_model(formalizer, grounded):
    pytest.importorskip("xgrammar")
    from nanologic.grammar import grounded_grammar

    sentence = "Juan vive en nuestra calle y Pedro en la manzana contigua."
    marks = formalizer.model.config.polarity_marks
    unbounded = Formalizer(formalizer.model, formalizer.tokenizer, constraint="grounded-unbounded")
    assert unbounded._grammars([sentence]) == [
        grounded_grammar(sentence, polarity_marks=marks, rule_bounds=False)
    ]
    assert grounded._grammars([sentence]) == [grounded_grammar(sentence, polarity_marks=marks)]
    assert unbounded._grammars([sentence]) != grounded._grammars([sentence])


def test_retarget_keeps_only_a_reading_that_leaves_fewer_words_out(formalizer, grounded, monkeypatch):
    sentence = "Si Ana lee novelas, Luis canta."
    prompt = formalizer.tokenizer.encode(prompt_text(sentence))

    def answer(first: str, formula: str) -> list[int]:
        text = f"{ATOMS} p: {first} | q: Luis canta {CONNECTORS} →: si {FORMULA} {formula} {EOS}"
        return formalizer.tokenizer.encode(text)

    short, whole, looped = (
        answer("Ana lee", "p → q"),
        answer("Ana lee novelas", "p → q"),
        answer("Ana lee novelas", "p → p"),
    )
    assert grounded.repair_span(short, True, sentence, as_given=True) is None
    head = short[: short.index(grounded.atoms_id) + 5]
    monkeypatch.setattr(grounded, "_retarget_heads", lambda *args: [head, head])
    monkeypatch.setattr(grounded, "_processor", lambda *args: None)
    for tails, expected in (([looped, whole], whole), ([looped, short], short)):
        monkeypatch.setattr(
            grounded.model, "generate", lambda *args, tails=tails, **kw: [t[len(head) :] for t in tails]
        )
        # the first try joins p with itself (marked): refused; the second holds "novelas"
        assert grounded._retarget_batch([prompt], [short], ["grammar"], [sentence]) == [expected]
    # an answer marked already may give way to a marked try that leaves fewer words out
    marked = answer("Ana lee", "p → p")
    monkeypatch.setattr(grounded.model, "generate", lambda *args, **kw: [looped[len(head) :]])
    monkeypatch.setattr(grounded, "_retarget_heads", lambda *args: [head])
    assert grounded._retarget_batch([prompt], [marked], ["grammar"], [sentence]) == [looped]


def test_a_clause_declared_twice_where_each_letter_is_named_once_is_decoded_again_without_it(
    formalizer, grounded, monkeypatch
):
    """ "Si x = y, entonces x = 2" declared "p: x = y | q: x = 2 | r: x = 2" and written
    ``(p → q) → r`` was given ``(p → q) → q``: the list without its repeat is decoded on."""
    from nanologic.grammar import grounded_grammar

    sentence = "Si x = y, entonces x = 2."
    grammar = grounded_grammar(sentence, polarity_marks=True)
    prompt = formalizer.tokenizer.encode(prompt_text(sentence))
    connectors = f"{CONNECTORS} →: si...entonces {FORMULA}"
    encode = formalizer.tokenizer.encode
    repeated = encode(f"{ATOMS} p: x = y | q: x = 2 | r: x = 2 {connectors} ((p → q) → r) {EOS}")
    head = encode(f"{ATOMS} p: x = y | q: x = 2 {CONNECTORS}")
    heads_seen = []

    def generate(prompts, *args, tail, **kwargs):
        heads_seen.extend(p[len(prompt) :] for p in prompts)
        return [encode(tail) for _ in prompts]

    for tail, expected in (
        (
            f" →: si...entonces {FORMULA} p → q {EOS}",
            head + encode(f" →: si...entonces {FORMULA} p → q {EOS}"),
        ),
        (f" →: si...entonces {FORMULA} (p → q) → q {EOS}", repeated),  # a letter named twice: kept
    ):
        monkeypatch.setattr(
            grounded.model, "generate", lambda *a, tail=tail, **kw: generate(*a, tail=tail, **kw)
        )
        assert grounded._drop_repeats_batch([prompt], [repeated], [grammar], [sentence]) == [expected]
    assert heads_seen == [head, head]
    # a sentence that may name a clause twice keeps its answer untouched
    other = "Hablo y no hablo."
    twice = encode(f"{ATOMS} p: hablo | q: hablo {CONNECTORS} ∧: y | ¬: no {FORMULA} p ∧ ¬q {EOS}")
    out = grounded._drop_repeats_batch([prompt], [twice], [grounded_grammar(other)], [other])
    assert out[0] is twice
