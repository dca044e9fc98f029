"""``seeddelta eval --text``: llama.cpp text prompts give the id-level eval's answers."""

import json

import pytest

from seeddelta.tasks import Sample, validation_set

llama_cpp = pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.llamacpp

HARD = [
    Sample("sum", "7+0", "7"),
    Sample("sum", "999+999", "1998"),
    Sample("copy", "a 1 12 123 1234 12345 123456", "a 1 12 123 1234 12345 123456"),
    Sample("copy", "x  y", "x  y"),
    Sample("brackets", "(()())", "OK"),
]


def test_text_prompts_tokenize_as_training(tiny_tok, tiny_gguf):
    from seeddelta.evaluate import encode_sample

    llm = llama_cpp.Llama(model_path=str(tiny_gguf), vocab_only=True, verbose=False)
    for s in validation_set(1, 150) + HARD:
        # llama.cpp adds the bos itself (add_bos_token), as training's "<s>" + prompt
        assert (
            llm.tokenize(s.prompt.encode(), add_bos=True, special=True) == encode_sample(tiny_tok, s).prompt
        )
        full = s.prompt + s.completion
        assert llm.tokenize(full.encode(), add_bos=False, special=True) == tiny_tok.encode(full)


def test_text_eval_agrees_with_id_level_eval(tiny_model, tiny_tok, tiny_gguf):
    from seeddelta.evaluate import exact_match
    from seeddelta.text_eval import text_exact_match

    samples = validation_set(1, 30) + HARD
    em_ids, rec_ids = exact_match(tiny_model, tiny_tok, samples, batch_size=1)
    em_text, rec_text = text_exact_match(tiny_gguf, samples, n_threads=1)
    # A random model writes invalid UTF-8: llama-cpp-python drops those bytes, tokenizers writes U+FFFD.
    # Its junk runs to the token budget, which the two paths may cut one token apart: compare prefixes.
    for text, ids in zip(rec_text, rec_ids):
        a, b = text["pred"], ids["pred"].replace("\ufffd", "")
        assert a.startswith(b) or b.startswith(a), (a, b)
        assert text["ok"] == ids["ok"]
    assert em_text == em_ids


def test_cli_eval_text_and_old_file(tiny_gguf, tiny_model, tiny_tok, tmp_path, capsys):
    from seeddelta.cli import main
    from seeddelta.gguf_io import write_model_gguf

    out = tmp_path / "text.json"
    assert main(["eval", "--model", str(tiny_gguf), "--text", "--samples", "6", "--json", str(out)]) == 0
    assert set(json.loads(out.read_text())["exact_match"]) == {"copy", "sum", "brackets"}
    old = write_model_gguf(tiny_model, tiny_tok, tmp_path / "old.gguf", "f32", tokenizer_pre="default")
    assert main(["eval", "--model", str(old), "--text", "--samples", "3"]) == 2
    assert "re-export" in capsys.readouterr().err
