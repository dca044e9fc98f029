"""Sequence data utilities: contiguous splits, sliding windows, and document packing.

Packing puts several short documents into one fixed-length row so no compute is spent on
padding; the per-token document ids give the block-diagonal causal mask that keeps documents from
attending to each other, and positions restart at 0 for each document.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


def contiguous_split(seq: Any, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> list[Any]:
    """Cut ``seq`` into consecutive parts, in order (e.g. train/validation/test).

    No shuffling across the boundaries: windows cut afterwards can never leak between splits.

    Args:
        seq: anything sliceable with ``len`` (a list, str, NumPy array or 1-D tensor).
        fractions: each part's share of ``len(seq)``; non-negative, summing to 1 (within 1e-6).

    Returns:
        One slice of ``seq`` per fraction. Boundaries are the rounded cumulative fractions times
        ``len(seq)``, so the last part takes the rounding remainder.

    Raises:
        ValueError: ``fractions`` is empty, has a negative entry or does not sum to 1.
    """
    if not fractions or any(f < 0 for f in fractions):
        raise ValueError(f"fractions must be non-negative, got {list(fractions)}")
    total = sum(fractions)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {total}")
    n = len(seq)
    bounds = [0]
    acc = 0.0
    for f in fractions[:-1]:
        acc += f
        bounds.append(int(round(acc * n)))
    bounds.append(n)
    return [seq[bounds[i] : bounds[i + 1]] for i in range(len(fractions))]


def sliding_windows(ids: torch.Tensor, window: int, stride: int) -> torch.Tensor:
    """All windows ``ids[i : i + window]`` for i = 0, stride, 2·stride, … (a view, no copy).

    Args:
        ids: a 1-D tensor of token ids ``[N]``.
        window: window length in tokens.
        stride: offset between window starts (``stride < window`` overlaps them).

    Returns:
        ``[(N - window) // stride + 1, window]``, same dtype and storage as ``ids``; a trailing
        piece shorter than ``window`` is dropped.

    Raises:
        ValueError: ``ids`` is not 1-D, ``window`` or ``stride`` is below 1, or ``N < window``.
    """
    if ids.dim() != 1:
        raise ValueError(f"ids must be 1-D, got shape {tuple(ids.shape)}")
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    if ids.numel() < window:
        raise ValueError(f"sequence of {ids.numel()} tokens is shorter than one window of {window}")
    return ids.unfold(0, window, stride)


@dataclass
class PackedBatch:
    """Rows of packed documents, all int64 tensors ``[rows, seq_len]``.

    Attributes:
        input_ids: the documents' tokens, ``pad_id`` after the last document of a row.
        doc_ids: the index of each token's source document, -1 on padding (the input of
            :func:`document_causal_mask`).
        position_ids: positions that restart at 0 at each document start (0 on padding).
    """

    input_ids: torch.Tensor
    doc_ids: torch.Tensor
    position_ids: torch.Tensor

    @property
    def efficiency(self) -> float:
        """Fraction of positions that hold real tokens."""
        return float((self.doc_ids >= 0).float().mean())


def pack_documents(docs: Sequence[Sequence[int]], seq_len: int, pad_id: int) -> PackedBatch:
    """First-fit-decreasing packing of whole documents into rows of ``seq_len`` tokens.

    Documents are never split: one longer than ``seq_len`` is an error (truncate it first).
    First-fit decreasing (Johnson, 1973): longest document first, each into the first row with
    room; it needs at most about 11/9 of the optimal number of rows. Within a row, documents keep
    their original relative order, so the result is reproducible.

    Args:
        docs: documents as token-id sequences.
        seq_len: row length in tokens.
        pad_id: the id that fills the rest of a row.

    Returns:
        The :class:`PackedBatch`, one row per bin.

    Raises:
        ValueError: ``seq_len < 1``, or a document is empty or longer than ``seq_len``.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    for i, doc in enumerate(docs):
        if len(doc) == 0:
            raise ValueError(f"document {i} is empty")
        if len(doc) > seq_len:
            raise ValueError(f"document {i} has {len(doc)} tokens, more than seq_len={seq_len}")
    order = sorted(range(len(docs)), key=lambda i: (-len(docs[i]), i))
    rows: list[list[int]] = []
    space: list[int] = []
    for i in order:
        need = len(docs[i])
        for r, free in enumerate(space):
            if free >= need:
                rows[r].append(i)
                space[r] -= need
                break
        else:
            rows.append([i])
            space.append(seq_len - need)
    n = len(rows)
    input_ids = torch.full((n, seq_len), pad_id, dtype=torch.long)
    doc_ids = torch.full((n, seq_len), -1, dtype=torch.long)
    position_ids = torch.zeros((n, seq_len), dtype=torch.long)
    for r, members in enumerate(rows):
        offset = 0
        for i in sorted(members):
            tokens = torch.as_tensor(list(docs[i]), dtype=torch.long)
            end = offset + tokens.numel()
            input_ids[r, offset:end] = tokens
            doc_ids[r, offset:end] = i
            position_ids[r, offset:end] = torch.arange(tokens.numel())
            offset = end
    return PackedBatch(input_ids=input_ids, doc_ids=doc_ids, position_ids=position_ids)


def document_causal_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """Block-diagonal causal mask: query i may attend to key j when j <= i in the same document.

    Padding (doc id -1) attends only to itself so softmax rows stay finite; its outputs are
    ignored by the loss anyway.

    Args:
        doc_ids: ``[B, L]`` document index per token, -1 on padding (:attr:`PackedBatch.doc_ids`).

    Returns:
        A bool mask ``[B, L, L]`` on ``doc_ids``' device, True where attention is allowed (the
        convention of ``scaled_dot_product_attention``'s boolean ``attn_mask``, after adding a
        head axis).

    Raises:
        ValueError: ``doc_ids`` is not 2-D.
    """
    if doc_ids.dim() != 2:
        raise ValueError(f"doc_ids must be [batch, length], got shape {tuple(doc_ids.shape)}")
    length = doc_ids.size(1)
    causal = torch.ones(length, length, dtype=torch.bool, device=doc_ids.device).tril()
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]
    real = doc_ids >= 0
    mask = causal & same_doc & (real[:, :, None] & real[:, None, :])
    eye = torch.eye(length, dtype=torch.bool, device=doc_ids.device)
    return mask | (eye & ~real[:, :, None])
