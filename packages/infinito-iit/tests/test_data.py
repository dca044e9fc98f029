import unicodedata

import pytest
import torch

from infinito_iit import data as data_mod
from infinito_iit.data import (
    Corpus,
    OwnBPE,
    leakage_warning,
    load_corpus,
    make_split,
    prepare_data,
    split_text,
)
from infinito_iit.errors import InfinitoError


def test_default_corpus_is_embedded_and_split_contiguously():
    corpus = load_corpus(None)
    assert corpus.name == "default" and len(corpus.train) > 6 * len(corpus.valid) > 0
    assert data_mod.default_corpus_text() == corpus.train + corpus.valid


def test_text_file_with_bom_is_read_and_split_at_the_tail(tmp_path):
    text = "".join(f"line {i} of the corpus\n" for i in range(100))
    path = tmp_path / "quijote.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    corpus = load_corpus(path)
    assert not corpus.train.startswith("\ufeff")
    assert corpus.train + corpus.valid == text and text.endswith(corpus.valid)
    assert corpus.valid.startswith("line ")  # cut at a line boundary


def test_split_text_fraction():
    train, valid = split_text("a\n" * 1000, 0.1)
    assert abs(len(valid) / 2000 - 0.1) < 0.01


def test_wikitext_folder_with_official_names(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"wiki.{split}.raw").write_text(f" = {split} = \n text of {split} \n")
    corpus = load_corpus(tmp_path)
    assert "valid" in corpus.valid and corpus.test is not None and corpus.is_wikitext


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.txt", "no such file"),
        (lambda p: (p / "empty.txt").write_text("  \n\n") and p / "empty.txt", "empty"),
        (lambda p: (p / "bin.txt").write_bytes(b"\xff\xfe\x00abc") and p / "bin.txt", "not UTF-8"),
        (lambda p: p, "expected one of"),
    ],
)
def test_bad_corpus_inputs_name_the_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(InfinitoError, match=message) as info:
        load_corpus(path)
    assert str(tmp_path) in str(info.value)


def test_wikitext_offline_gives_a_clear_message(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(InfinitoError, match="offline.*wiki.train.raw"):
        load_corpus("wikitext-2-raw-v1")


def test_wikitext_loader_joins_splits(monkeypatch):
    import datasets

    fake = {s: {"text": [f" = {s} = \n", f" body of {s} \n"]} for s in ("train", "validation", "test")}
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config: fake)
    corpus = load_corpus("wikitext-2-raw-v1")
    assert corpus.valid == " = validation = \n body of validation \n" and corpus.is_wikitext


def test_byte_lengths_count_utf8_bytes_exactly():
    text = "El ingenioso hidalgo don Quijote de la Mancha, café – 日本語. " * 20
    tok = OwnBPE.train(text, 300)
    ids = tok.encode(text)
    assert int(tok.byte_lengths()[ids].sum()) == len(unicodedata.normalize("NFC", text).encode())
    assert tok.decode(ids) == text


def test_chunks_are_non_overlapping_and_cover_every_token():
    ids = list(range(1, 24))
    lengths = torch.ones(30, dtype=torch.long).numpy()
    split = make_split(ids, 5, lengths, "w " * 10, keep_tail=True, what="valid")
    assert torch.equal(split.inputs[0], torch.tensor([1, 2, 3, 4, 5]))
    assert torch.equal(split.labels[0], torch.tensor([2, 3, 4, 5, 6]))
    predicted = split.labels[split.labels >= 0].tolist()
    assert predicted == ids[1:]  # each token after the first exactly once, in order
    assert split.n_bytes == 22 and split.n_words == 10
    train = make_split(ids, 5, lengths, "", keep_tail=False, what="train")
    assert len(train) == 4 and (train.labels >= 0).all()


def test_too_short_split_is_an_error():
    with pytest.raises(InfinitoError, match="fewer than one window"):
        make_split([1, 2, 3], 8, torch.ones(5).numpy(), "", keep_tail=False, what="train split")


def test_prepare_data_on_default_corpus():
    prepared = prepare_data(load_corpus(None), 32, vocab_size=300)
    assert prepared.train.inputs.shape[1] == 32 and len(prepared.valid) > 0
    assert prepared.summary()["vocab_size"] == prepared.tokenizer.vocab_size <= 300


def test_leakage_warning_only_for_wikitext_below_20():
    wiki = Corpus("wikitext-2-raw-v1", "hf", "a", "b")
    other = Corpus("input.txt", "input.txt", "a", "b")
    assert "leakage" in leakage_warning(wiki, {"perplexity": 18.99, "word_perplexity": 40.0})
    assert leakage_warning(wiki, {"perplexity": 216.46, "word_perplexity": 450.0}) is None
    assert leakage_warning(other, {"perplexity": 3.0}) is None


def test_gpt2_tokenizer_path_with_a_local_gpt2_format_tokenizer(tmp_path):
    from infinito_iit.data import GPT2BPE

    text = "The river valley lies between two ranges of low hills. " * 30
    # A byte-level BPE in the transformers format stands in for the GPT-2 download (offline test).
    OwnBPE.train(text, 300).tok.to_transformers(eos_token="<|endoftext|>").save_pretrained(tmp_path / "gpt2")
    tok = GPT2BPE(str(tmp_path / "gpt2"))
    ids = tok.encode(text)
    assert tok.decode(ids) == text and int(tok.byte_lengths()[ids].sum()) == len(text.encode())


def test_gpt2_tokenizer_unavailable_is_a_clear_error(monkeypatch):
    import transformers

    from infinito_iit.data import GPT2BPE

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(InfinitoError, match="--tokenizer bpe"):
        GPT2BPE()
