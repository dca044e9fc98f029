from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lm_shared.tokenization import BPETokenizer, TokenizerError, train_bpe

SPECIALS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|formula|>"]
CORPUS = ["Si llueve y no llevo paraguas, entonces me mojo.", "p ∧ ¬q → r", "hello world"] * 30


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return train_bpe(CORPUS, vocab_size=400, special_tokens=SPECIALS)


def test_specials_get_first_ids_and_are_never_split(tok):
    assert [tok.token_to_id(s) for s in SPECIALS] == [0, 1, 2, 3]
    assert tok.special_tokens == SPECIALS
    ids = tok.encode("<|bos|>llueve<|formula|>p ∧ q<|eos|>")
    assert ids[0] == 1 and ids[-1] == 2 and 3 in ids


@settings(max_examples=60, deadline=None)
@given(st.text())
def test_any_text_round_trips_after_nfc(tok, text):
    assert tok.decode(tok.encode(text)) == unicodedata.normalize("NFC", text)


def test_nfc_normalisation(tok):
    decomposed = "cafe\u0301"
    assert tok.encode(decomposed) == tok.encode("café")


def test_batch_and_save_load(tmp_path, tok):
    batch = tok.encode_batch(["p ∧ q", "me mojo"])
    assert tok.decode_batch(batch) == ["p ∧ q", "me mojo"]
    path = tok.save(tmp_path / "tk")
    assert path.name == "tokenizer.json"
    again = BPETokenizer.load(tmp_path / "tk")
    assert again.encode("me mojo si llueve") == tok.encode("me mojo si llueve")
    assert again.vocab_size == tok.vocab_size


def test_export_vocab_merges_for_gpt2_consumers(tmp_path, tok):
    vocab_path, merges_path = tok.export_vocab_merges(tmp_path)
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    assert vocab["<|pad|>"] == 0 and len(vocab) == tok.vocab_size
    lines = merges_path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#version")
    assert len(lines) - 1 == len(tok.merges()) > 0
    # every merge result is itself in the vocabulary
    assert all(a + b in vocab for a, b in tok.merges())
    assert tok.tokens_in_id_order()[:4] == SPECIALS


def test_transformers_wrapper(tok):
    pytest.importorskip("transformers")
    fast = tok.to_transformers(pad_token="<|pad|>", bos_token="<|bos|>", eos_token="<|eos|>")
    assert fast.pad_token_id == 0
    assert fast("me mojo")["input_ids"] == tok.encode("me mojo")


def test_errors():
    with pytest.raises(TokenizerError, match="empty corpus"):
        train_bpe([], vocab_size=300)
    with pytest.raises(TokenizerError, match="empty corpus"):
        train_bpe(["  ", "\n"], vocab_size=300)
    with pytest.raises(TokenizerError, match="duplicates '<a>'"):
        train_bpe(CORPUS, vocab_size=300, special_tokens=["<a>", "<b>", "<a>"])
    with pytest.raises(TokenizerError, match="too small"):
        train_bpe(CORPUS, vocab_size=100, special_tokens=["<a>"])


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        BPETokenizer.load(tmp_path / "missing.json")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        BPETokenizer.load(bad)
