"""The text contract of nanologic's GGUF on real llama-cpp-python, and the --gguf front-end."""

import json
import unicodedata
from pathlib import Path

import pytest
import torch

from nanologic.data import (
    SPECIAL_TOKENS,
    formalization_result,
    prompt_text,
    record_from_raw,
    sequence_text,
    target_text,
)
from nanologic.errors import NanologicError
from nanologic.generator import generate

llama_cpp = pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.llamacpp

HARD = [
    "Si el puerto 22 está abierto, el error 500 aparece cada 27 días.",
    "Los números 1, 12, 123, 1234, 12345 y 123456.",
    "¿Llueve? ¡No!",
    "p | q | (r) → s ∧ t ∨ ¬u ↔ v",
    "La canción del año  tiene  espacios dobles.",
    " Con un espacio delante.",
    unicodedata.normalize("NFC", unicodedata.normalize("NFD", "Acción, pingüino, ñandú y canción.")),
]


@pytest.fixture(scope="module")
def records():
    return [record_from_raw(e) for e in generate(150, seed=21)]


@pytest.fixture(scope="module")
def exported(records, tmp_path_factory):
    from lm_shared.tokenization import train_bpe
    from nanologic.export import export_model, write_grammar_file
    from nanologic.model import NanoLogic, build_config

    tokenizer = train_bpe([sequence_text(r, False) for r in records], 800, SPECIAL_TOKENS)
    torch.manual_seed(0)
    model = NanoLogic(
        build_config("tiny", tokenizer.vocab_size, qk_norm=False, final_softcap=0.0, copy_head=False)
    ).eval()
    path = export_model(model, tokenizer, tmp_path_factory.mktemp("gguf") / "m.gguf")
    write_grammar_file(path)
    return model, tokenizer, path


def test_llamacpp_token_ids_equal_ours(records, exported):
    _, tokenizer, path = exported
    vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    texts = [prompt_text(r["natural_language_input"]) for r in records]
    texts += [sequence_text(r, False) for r in records] + [prompt_text(h) for h in HARD] + HARD
    bad = [t for t in texts if vocab.tokenize(t.encode(), add_bos=False, special=True) != tokenizer.encode(t)]
    assert not bad, bad[:3]


def test_default_rendering_of_an_answer_parses_like_pytorch(records, exported):
    _, tokenizer, path = exported
    vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    for r in records:
        ids = tokenizer.encode(target_text(r, False))  # a generated answer, eos included
        text = vocab.detokenize(ids).decode("utf-8")  # llama.cpp defaults: special=False
        ours = formalization_result(tokenizer.decode(ids))
        theirs = formalization_result(text)
        assert {k: v for k, v in theirs.items() if k != "raw"} == {
            k: v for k, v in ours.items() if k != "raw"
        }
        assert theirs["atoms"] == r["atoms"] and theirs["valid_formula"]


@pytest.mark.parametrize("grammar", [False, "format", "grounded"])
def test_text_front_end_equals_pytorch_greedy(records, exported, grammar):
    from nanologic.inference import Formalizer
    from nanologic.llamacpp import LlamaCppFormalizer

    model, tokenizer, path = exported
    sentences = [r["natural_language_input"] for r in records[:3]] + HARD[:2]
    constraint = grammar or None
    # llama.cpp's grammar sampler reads the GBNF alone: no token-level lone-space rule
    ref = Formalizer(
        model, tokenizer, max_new_tokens=48, repair_tries=0, constraint=constraint, lone_space_rule=False
    )
    ours = LlamaCppFormalizer.from_gguf(path, grammar=grammar, max_new_tokens=48, n_threads=1)
    assert ours.formalize(sentences) == ref.formalize(sentences, batch_size=2)


def test_old_exporter_file_is_refused(exported, tmp_path):
    from lm_shared.gguf import write_llama_gguf
    from nanologic.export import gguf_config, hf_llama_state_dict
    from nanologic.llamacpp import LlamaCppFormalizer

    model, tokenizer, _ = exported
    old = write_llama_gguf(
        tmp_path / "old.gguf",
        hf_llama_state_dict(model),
        gguf_config(model.config),
        tokenizer,
        tokenizer_pre="default",
    )
    with pytest.raises(NanologicError, match="re-export"):
        LlamaCppFormalizer.from_gguf(old)


def test_cli_gguf_front_end_and_bad_files(records, exported, tmp_path, capsys):
    from nanologic.cli import main

    _, _, path = exported
    assert path.with_suffix(".gbnf").read_text().startswith("# nanologic answer grammar")
    assert main(["formalize", "--gguf", str(path), "--grammar", "Si llueve, me mojo."]) == 0
    assert "fórmula" in capsys.readouterr().out
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"input": "Si llueve, me mojo.", "id": 3}\n', encoding="utf-8")
    assert main(["formalize", "--gguf", str(path), "--input", str(src), "--output", str(dst)]) == 0
    row = json.loads(dst.read_text(encoding="utf-8"))
    assert row["id"] == 3 and isinstance(row["atoms"], dict)
    assert main(["check", "--gguf", str(path), "Si llueve, me mojo. Llueve. Por lo tanto, me mojo."]) in (
        0,
        2,
    )
    capsys.readouterr()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert main(["formalize", "--gguf", str(cut), "Llueve."]) == 2
    err = capsys.readouterr().err
    assert "cut.gguf" in err and "truncated" in err and err.count("\n") == 1
    assert main(["formalize", "--gguf", str(path), "--checkpoint", str(tmp_path), "Llueve."]) == 2


def test_web_app_gguf_backend_formalizes_like_pytorch(records, exported, tmp_path):
    """`nanologic serve --gguf FILE` (issue 18): the app's llama.cpp backend gives the PyTorch answer."""
    from nanologic.app_logic import formalize_batch, formalize_sentence, load_backend, read_batch
    from nanologic.inference import Formalizer

    model, tokenizer, path = exported
    loaded = load_backend(gguf=path)
    assert loaded.error is None and loaded.backend is not None, loaded.error
    sentence = records[0]["natural_language_input"]
    shown = formalize_sentence(loaded.backend, sentence)
    ref = Formalizer(model, tokenizer, repair_tries=0, constraint=None).formalize([sentence])[0]
    assert shown.raw == ref
    # the Lote tab through the same backend: one output line per input line
    batch = tmp_path / "in.jsonl"
    batch.write_text("".join(json.dumps({"input": r["natural_language_input"]}) + "\n" for r in records[:3]))
    out = formalize_batch(loaded.backend, read_batch(batch), tmp_path / "out.jsonl")
    assert len(Path(out).read_text(encoding="utf-8").splitlines()) == 3
    # a damaged file is a message in the page, not a crash
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(path.read_bytes()[:1000])
    bad = load_backend(gguf=broken)
    assert bad.backend is None and bad.error
