"""Optimizer helpers shared by the members."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def param_groups_with_weight_decay(
    model: torch.nn.Module, weight_decay: float, no_decay_names: Sequence[str] = ("embed",)
) -> list[dict[str, Any]]:
    """Two optimizer parameter groups: weight decay on matrices (``dim >= 2``) only.

    Biases, norm gains and other vectors/scalars, and any parameter whose name contains one of
    ``no_decay_names`` (embeddings by default, which a tied output head shares), get no decay:
    decaying them pulls norms and embeddings towards zero without regularising anything (the
    usual practice since GPT-2/nanoGPT). Frozen parameters are left out.

    Args:
        model: the module whose trainable parameters are grouped.
        weight_decay: the first group's ``weight_decay`` (decoupled in AdamW, Loshchilov & Hutter, 2019).
        no_decay_names: substrings of parameter names exempt from decay.

    Returns:
        ``[{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]``,
        ready for ``torch.optim.AdamW(groups, lr=...)``.

    Raises:
        ValueError: ``weight_decay < 0``.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.dim() < 2 or any(key in name for key in no_decay_names)
        (no_decay if exempt else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
