"""Corpora, tokenizer, packing and dynamic masking."""

import pytest
import torch

from tormented_mini.data import (
    SPECIAL_TOKENS,
    SpecialIds,
    batch_for_step,
    build_tokenizer,
    default_corpus,
    encode_corpus,
    load_texts,
    mask_tokens,
    pack_sequences,
    to_transformers_tokenizer,
)
from tormented_mini.errors import DataError

IDS = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(default_corpus(300), 400)


def test_default_corpus_is_fixed_and_agrees_in_number():
    corpus = default_corpus(50)
    assert corpus == default_corpus(50)
    assert all(p.endswith(".") for p in corpus)
    text = " ".join(default_corpus(400))
    assert "Los gatos" in text or "Los perros" in text


def test_tokenizer_specials_and_templates(tokenizer):
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    ids = tokenizer.hf.encode("el gato [MASK] pan").ids
    assert ids[0] == 2 and ids[-1] == 3 and 4 in ids
    tokens = tokenizer.hf.encode("el gato [MASK] pan").tokens
    position = ids.index(4)
    assert tokens[position - 1] != "Ġ"  # [MASK] swallowed the space before it (no lone space token)


def test_masking_never_touches_specials_and_follows_80_10_10():
    torch.manual_seed(0)
    rows = torch.randint(5, 300, (64, 128))
    rows[:, 0], rows[:, -1], rows[:, 100:120] = IDS.cls, IDS.sep, IDS.pad
    generator = torch.Generator().manual_seed(0)
    inputs, labels = mask_tokens(rows, IDS, 300, 0.15, generator)
    special = rows < 5
    assert (labels[special] == -100).all() and (inputs[special] == rows[special]).all()
    picked = labels != -100
    assert (labels[picked] == rows[picked]).all()
    share = picked.sum().item() / (~special).sum().item()
    assert 0.13 < share < 0.17
    masked = (inputs == IDS.mask) & picked
    unchanged = (inputs == rows) & picked
    replaced = picked & ~masked & ~unchanged
    n = picked.sum().item()
    assert 0.76 < masked.sum().item() / n < 0.84
    assert 0.07 < unchanged.sum().item() / n < 0.13
    assert 0.06 < replaced.sum().item() / n < 0.13
    assert (inputs[replaced] >= 5).all()  # random replacements are never special tokens
    assert (inputs[~picked] == rows[~picked]).all()


def test_masking_is_dynamic_but_seeded():
    rows = torch.randint(5, 300, (4, 32))
    a = mask_tokens(rows, IDS, 300, generator=torch.Generator().manual_seed(1))
    b = mask_tokens(rows, IDS, 300, generator=torch.Generator().manual_seed(1))
    c = mask_tokens(rows, IDS, 300, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


def test_every_row_gets_a_masked_token():
    rows = torch.tensor([[2, 7, 3, 0, 0]] * 50)
    _, labels = mask_tokens(rows, IDS, 300, 0.01, torch.Generator().manual_seed(0))
    assert ((labels != -100).sum(-1) == 1).all()


def test_packing_rows():
    rows = pack_sequences([[10, 11, 12], [20, 21], list(range(30, 50))], 8, IDS)
    assert rows.shape[1] == 8 and (rows[:, 0] == IDS.cls).all()
    assert rows[0].tolist() == [2, 10, 11, 12, 3, 20, 21, 3]
    flat = [t for row in rows.tolist() for t in row if t >= 5]
    assert flat == [10, 11, 12, 20, 21, *range(30, 50)]  # nothing lost, order kept


def test_load_texts_file_folder_bom_and_errors(tmp_path):
    (tmp_path / "a.txt").write_bytes("\ufeffPrimera línea\ncontinúa.\n\nSegundo párrafo.".encode())
    assert load_texts(tmp_path / "a.txt") == ["Primera línea continúa.", "Segundo párrafo."]
    sub = tmp_path / "docs"
    sub.mkdir()
    (sub / "b.txt").write_text("Otro texto.", encoding="utf-8")
    assert load_texts(sub) == ["Otro texto."]
    (tmp_path / "empty.txt").write_text("  \n\n")
    with pytest.raises(DataError, match="empty"):
        load_texts(tmp_path / "empty.txt")
    with pytest.raises(DataError, match="no such file"):
        load_texts(tmp_path / "nope.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(DataError, match="not UTF-8"):
        load_texts(tmp_path / "bin.txt")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="no .txt files"):
        load_texts(tmp_path / "nothing")


def test_split_is_contiguous_and_batches_are_reproducible(tokenizer):
    corpus = encode_corpus(default_corpus(300), tokenizer, 32)
    assert corpus.train.shape[1] == corpus.val.shape[1] == 32
    assert torch.equal(batch_for_step(corpus.train, 4, 7, 0), batch_for_step(corpus.train, 4, 7, 0))
    assert not torch.equal(batch_for_step(corpus.train, 4, 7, 0), batch_for_step(corpus.train, 4, 7, 1))


def test_mask_tokens_rejects_bad_arguments():
    rows = torch.randint(5, 300, (2, 8))
    with pytest.raises(DataError, match="batch, seq_len"):
        mask_tokens(rows[0], IDS, 300)
    with pytest.raises(DataError, match="mask_prob"):
        mask_tokens(rows, IDS, 300, 0.0)
    with pytest.raises(DataError, match="no non-special id"):
        mask_tokens(rows, IDS, 5)


def test_mask_tokens_against_transformers_collator(tokenizer):
    """Ours vs ``transformers.DataCollatorForLanguageModeling`` on the same batches, with the member's
    own tokenizer: the differences listed in ``mask_tokens``' docstring, measured."""
    from transformers import DataCollatorForLanguageModeling

    hf_tokenizer = to_transformers_tokenizer(tokenizer, 64)
    ids = SpecialIds.from_tokenizer(tokenizer)
    specials = torch.tensor(ids.all())
    vocab = len(hf_tokenizer)
    # Both sides agree on what is special and on the vocabulary size.
    assert sorted(hf_tokenizer.all_special_ids) == sorted(ids.all()) and vocab == tokenizer.vocab_size

    def theirs(rows: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        collator = DataCollatorForLanguageModeling(hf_tokenizer, mlm_probability=0.15, seed=seed)
        batch = collator(list(rows))  # the public call: stacks the rows, masks with its seeded generator
        return batch["input_ids"], batch["labels"]

    def ours(rows: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return mask_tokens(rows, ids, vocab, 0.15, torch.Generator().manual_seed(seed))

    # 1. Long packed rows of the default corpus (>= 64 maskable tokens each, ~200k in all, so the
    # draw leaves no row empty and ours takes no fallback draw): same rates, same picks.
    rows = encode_corpus(default_corpus(300), tokenizer, 128).train
    rows = rows[(~torch.isin(rows, specials)).sum(-1) >= 64]
    rows = rows.repeat(-(-1800 // rows.shape[0]), 1)
    special = torch.isin(rows, specials)
    hf_inputs, hf_labels = theirs(rows, 7)
    our_inputs, our_labels = ours(rows, 7)
    picked = hf_labels != -100
    assert picked.any(-1).all()
    assert torch.equal(our_labels, hf_labels)  # identical picks: bernoulli(p) == rand() < p, draw for draw
    assert not picked[special].any() and torch.equal(hf_labels[picked], rows[picked])
    assert 0.145 < picked.sum() / (~special).sum() < 0.155
    mask_slots = our_inputs == ids.mask
    assert (hf_inputs[mask_slots] == ids.mask).all()  # its bernoulli(0.8) is our roll < 0.8
    assert 0.79 < mask_slots.sum() / picked.sum() < 0.81
    rest = picked & ~mask_slots  # the 10 % random + 10 % unchanged slots, the same on both sides
    for inputs in (hf_inputs, our_inputs):
        assert 0.09 < (rest & (inputs != rows)).sum() / picked.sum() < 0.11  # ~10 % replaced
    assert not torch.equal(hf_inputs[rest], our_inputs[rest])  # from here on the draws part
    # Transformers draws random tokens from the whole vocabulary, specials included; ours never does.
    hf_special_draws = rest & torch.isin(hf_inputs, specials)
    assert hf_special_draws.sum() >= 10 and (hf_inputs < vocab).all()
    assert {ids.pad, ids.mask} <= set(hf_inputs[hf_special_draws].tolist())  # [PAD] and [MASK] as inputs
    assert not (rest & torch.isin(our_inputs, specials)).any()

    # 2. Short rows with two maskable tokens: transformers leaves ~0.85**2 = 72 % of them without a
    # target; ours picks exactly one token there and keeps transformers' picks everywhere else.
    short = torch.zeros(2000, 8, dtype=torch.long)
    short[:, 0], short[:, 3], short[:, 4:] = ids.cls, ids.sep, ids.pad
    short[:, 1:3] = torch.randint(5, vocab, (2000, 2), generator=torch.Generator().manual_seed(0))
    _, hf_labels = theirs(short, 3)
    _, our_labels = ours(short, 3)
    hf_empty = (hf_labels == -100).all(-1)
    assert 0.69 < hf_empty.float().mean() < 0.75
    assert ((our_labels != -100).sum(-1) >= 1).all()
    assert ((our_labels[hf_empty] != -100).sum(-1) == 1).all()
    assert torch.equal(our_labels[~hf_empty], hf_labels[~hf_empty])

    # 3. Its torch_mask_tokens writes into the tensor it is given; ours leaves input_ids untouched.
    batch = rows[:64].clone()
    DataCollatorForLanguageModeling(hf_tokenizer, seed=0).torch_mask_tokens(batch)
    assert not torch.equal(batch, rows[:64])
    batch = rows[:64].clone()
    ours(batch, 0)
    assert torch.equal(batch, rows[:64])
