from __future__ import annotations

import pytest
import torch

from lm_shared.data import contiguous_split, document_causal_mask, pack_documents, sliding_windows


def test_contiguous_split_keeps_order_and_covers_everything():
    parts = contiguous_split(list(range(10)), (0.8, 0.1, 0.1))
    assert parts == [list(range(8)), [8], [9]]
    with pytest.raises(ValueError):
        contiguous_split([1, 2], (0.5, 0.6))


def test_windows_after_split_never_cross_the_boundary():
    ids = torch.arange(100)
    train, val = contiguous_split(ids, (0.9, 0.1))
    w_train = sliding_windows(train, 11, 5)
    w_val = sliding_windows(val, 5, 5)
    assert w_train.max() < 90 and w_val.min() >= 90
    assert w_train[1, 0] == 5 and w_train.shape[1] == 11
    with pytest.raises(ValueError, match="shorter than one window"):
        sliding_windows(torch.arange(3), 5, 1)


def test_packing_and_block_diagonal_mask():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10]]
    packed = pack_documents(docs, seq_len=5, pad_id=0)
    flat = packed.input_ids[packed.doc_ids >= 0].tolist()
    assert sorted(flat) == list(range(1, 11))  # every token exactly once
    assert packed.input_ids.shape[0] == 2  # 10 tokens fit in two rows of 5
    for row_doc, row_pos in zip(packed.doc_ids, packed.position_ids):
        for d in row_doc.unique():
            if d >= 0:
                assert row_pos[row_doc == d].tolist() == list(range(len(docs[d])))
    mask = document_causal_mask(packed.doc_ids)
    doc = packed.doc_ids
    for b in range(doc.size(0)):
        for i in range(5):
            for j in range(5):
                expect = bool(doc[b, i] >= 0 and doc[b, i] == doc[b, j] and j <= i)
                if doc[b, i] < 0:
                    expect = i == j
                assert bool(mask[b, i, j]) == expect
    with pytest.raises(ValueError, match="document 0 has 6 tokens"):
        pack_documents([[1] * 6], seq_len=5, pad_id=0)


def test_mask_matches_attention_on_separate_documents():
    torch.manual_seed(0)
    docs = [[1, 2, 3], [4, 5]]
    packed = pack_documents(docs, seq_len=5, pad_id=0)
    x = torch.randn(1, 5, 8)
    mask = document_causal_mask(packed.doc_ids)[:, None]
    packed_out = torch.nn.functional.scaled_dot_product_attention(
        x[:, None], x[:, None], x[:, None], attn_mask=mask
    )[:, 0]
    for d in (0, 1):
        sel = packed.doc_ids[0] == d
        alone = x[:, sel]
        ref = torch.nn.functional.scaled_dot_product_attention(alone, alone, alone, is_causal=True)
        assert torch.allclose(packed_out[:, sel], ref, atol=1e-6)
