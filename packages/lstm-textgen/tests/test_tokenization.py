import difflib
from pathlib import Path

import numpy as np
import pytest

from lstm_textgen.errors import TextgenError
from lstm_textgen.text import embedded_corpus
from lstm_textgen.tokenization import (
    END_ID,
    SPECIAL_TOKENS,
    START_ID,
    UNK_ID,
    CharTokenizer,
    WordTokenizer,
    fit_tokenizer,
    load_tokenizer,
)

TEXT = "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:"


def test_word_tokenizer_specials_cap_and_unknowns():
    tok = WordTokenizer.fit("a a a b b c", vocab_size=6)
    assert tok.tokens() == [*SPECIAL_TOKENS, "a", "b"]
    assert tok.encode("a b c z") == [4, 5, UNK_ID, UNK_ID]
    assert tok.decode([START_ID, 4, UNK_ID, 5, END_ID]) == "a <UNK> b"


def test_word_tokenizer_keeps_elisions_punctuation_and_newlines():
    tok = WordTokenizer.fit(TEXT, vocab_size=10_004)
    assert tok.decode(tok.encode(TEXT)) == TEXT
    assert "summer's" in tok.tokens() and "\n" in tok.tokens()


@pytest.mark.parametrize("kind", ["word", "char", "bpe"])
def test_byte_lengths_cover_the_text_exactly(kind: str, tmp_path: Path):
    text = embedded_corpus()[:3000] + " naïve café — ünïcode"
    tok = fit_tokenizer(kind, text, 300 if kind == "bpe" else 10_004, tmp_path)
    ids, lengths = tok.encode_with_byte_lengths(text)
    assert ids.dtype == np.int32 and len(ids) == len(lengths)
    assert int(lengths.sum()) == len(text.encode("utf-8"))
    if kind != "word":  # word-level detokenisation cannot know the original spacing
        assert tok.decode(ids) == text


def test_char_tokenizer_cap_maps_rare_characters_to_unk():
    tok = CharTokenizer.fit("aaabbc", vocab_size=6)
    assert tok.tokens()[4:] == ["a", "b"]
    assert tok.encode("abcx") == [4, 5, UNK_ID, UNK_ID]


def test_bpe_keras_hub_encoding_agrees_with_lm_shared(tmp_path: Path):
    """keras-hub applies lm_shared's merges; only its pre-split regex (Llama 3's, not GPT-2's)
    differs, on rare cases such as "Feed'st" -> ' st' vs 's t'."""
    from lm_shared.tokenization import BPETokenizer as SharedBPE

    text = embedded_corpus()
    tok = fit_tokenizer("bpe", text, 400, tmp_path)
    shared = SharedBPE.load(tmp_path)
    ours, theirs = tok.encode(text), shared.encode(text)
    assert difflib.SequenceMatcher(a=ours, b=theirs, autojunk=False).ratio() > 0.99
    assert tok.encode("Shall I compare thee") == shared.encode("Shall I compare thee")
    assert shared.decode(ours) == text
    assert tok.tokens() == shared.tokens_in_id_order()


@pytest.mark.parametrize("kind", ["word", "char", "bpe"])
def test_vocabulary_smaller_than_specials_is_rejected(kind: str, tmp_path: Path):
    with pytest.raises(TextgenError, match="too small"):
        fit_tokenizer(kind, TEXT, 3, tmp_path)


def test_bpe_vocabulary_must_hold_the_byte_alphabet(tmp_path: Path):
    with pytest.raises(TextgenError, match="byte symbols"):
        fit_tokenizer("bpe", TEXT, 100, tmp_path)


@pytest.mark.parametrize("kind", ["word", "char", "bpe"])
def test_save_load_round_trip(kind: str, tmp_path: Path):
    tok = fit_tokenizer(kind, embedded_corpus(), 300, tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert loaded.kind == kind and loaded.tokens() == tok.tokens()
    assert loaded.encode(TEXT) == tok.encode(TEXT)


def test_load_tokenizer_reports_missing_folder(tmp_path: Path):
    with pytest.raises(TextgenError, match="tokenizer config not found"):
        load_tokenizer(tmp_path)
