import pytest
import torch

from nanologic.data import ATOMS, CONNECTORS, EOS, FORMULA, SPECIAL_TOKENS, parse_output, prompt_text
from nanologic.generator import generate
from nanologic.inference import Formalizer
from nanologic.model import NanoLogic, build_config


@pytest.fixture(scope="module")
def formalizer():
    from lm_shared.tokenization import train_bpe

    texts = [e["natural_language_input"] for e in generate(200, seed=1)]
    tokenizer = train_bpe(texts, 600, SPECIAL_TOKENS)
    torch.manual_seed(0)
    model = NanoLogic(build_config("tiny", tokenizer.vocab_size)).eval()
    return Formalizer(model, tokenizer, max_new_tokens=24)


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
