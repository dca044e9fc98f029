"""InfinitoLM: a causal transformer language model with switchable "IIT" features.

Read top to bottom:

1. ``InfinitoConfig`` and the size presets (the original's 512/4/8 and 384/3/6, plus a CPU size).
2. ``CausalSelfAttention`` and ``Block``: a pre-LN GPT block. The attention is always causal; when
   the IIT metrics are on it also returns per-query attention statistics.
3. The IIT metrics: per-position, causal statistics of the hidden states and attention
   (temporal integration, integration across segments, complexity, attention diversity and
   coherence). Each value at position t depends only on positions <= t, lies in [0, 1] and is
   differentiable; none is a constant.
4. ``LearnablePhiWeights``: a softmax over four logits that mixes the components into one number.
5. ``IITGuidedMemory``: a slot memory that every position reads (attention over slots written by
   *earlier* training batches) and that training writes to (the hidden states with the highest
   weighted phi); it never writes in eval mode.
6. ``InfinitoLM``: embeddings, blocks, exploration noise, memory, tied head, and the losses.

The phi loss is ``lambda_phi * relu(phi_target - phi)**2`` (mean over sequences). Minimising it
*raises* the weighted phi until it reaches ``phi_target`` (a value inside [0, 1], so reachable);
above the target it is exactly zero. What these statistics measure is described honestly in the
README: they are heuristics named after integrated information, not Φ.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PHI_COMPONENTS = ("temporal", "integration", "complexity", "attention")
"""The four components mixed by the learnable phi weights, in logit order."""


# Field names before issue 17's one vocabulary (hidden_size etc., as the other members and HF).
FORMER_FIELD_NAMES = {
    "d_model": "hidden_size",
    "n_layers": "num_layers",
    "n_heads": "num_heads",
    "d_ff": "intermediate_size",
}


@dataclass(frozen=True)
class InfinitoConfig:
    """Architecture and IIT-feature switches of :class:`InfinitoLM` (saved as JSON with every run)."""

    vocab_size: int = 2048  # tokenizer size; set from the trained tokenizer at build time
    max_seq_len: int = 128  # learned positions; longer inputs are rejected, never silently cropped
    hidden_size: int = 128  # residual stream width
    num_layers: int = 2  # transformer blocks
    num_heads: int = 4  # attention heads (hidden_size must divide evenly)
    intermediate_size: int = 0  # MLP hidden width; 0 means 4 * hidden_size (the original's ratio)
    dropout: float = 0.15  # the original's Model A value; applied to embeddings, attention and MLP
    tie_embeddings: bool = True  # share input embedding and output head (79% of the original's params)
    # --- IIT features (all off = the baseline transformer) ---
    iit_metrics: bool = True  # compute the causal per-position metrics in the forward pass
    phi_components: tuple[str, ...] = PHI_COMPONENTS  # components that enter the weighted phi
    learnable_phi_weights: bool = True  # softmax over 4 trainable logits (else fixed at init)
    phi_weight_init: tuple[float, ...] = (0.3, 0.3, 0.2, 0.2)  # the original's initial mixture
    lambda_phi: float = 0.3  # weight of the phi loss (the original's value, now really used); 0 = off
    phi_target: float = 0.8  # hinge target in (0, 1]: the phi loss is zero once phi >= target
    segment_len: int = 16  # recent-segment length for "integration across segments"
    complexity_window: int = 8  # window of recent states whose effective dimension is "complexity"
    memory: bool = True  # IIT-guided slot memory (read every forward, written in training)
    memory_slots: int = 256  # number of slots (the original's value)
    memory_writes: int = 8  # slots written per training forward (top-phi positions, one per sequence)
    memory_decay: float = 0.995  # per-step decay of a slot's priority when choosing what to evict
    noise_std: float = 0.05  # exploration noise, relative to each token's residual RMS; 0 = off

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> None:
            raise ValueError(f"config field {name}={getattr(self, name)!r}: expected {expected}")

        for name in ("vocab_size", "max_seq_len", "hidden_size", "num_layers", "num_heads"):
            if getattr(self, name) < 1:
                bad(name, "a positive integer")
        if self.hidden_size % self.num_heads:
            bad("hidden_size", f"a multiple of num_heads={self.num_heads}")
        if self.intermediate_size < 0:
            bad("intermediate_size", "0 (= 4 * hidden_size) or a positive integer")
        if not 0.0 <= self.dropout < 1.0:
            bad("dropout", "a value in [0, 1)")
        unknown = set(self.phi_components) - set(PHI_COMPONENTS)
        if unknown or len(set(self.phi_components)) != len(self.phi_components):
            bad("phi_components", f"distinct names from {PHI_COMPONENTS}")
        if len(self.phi_weight_init) != len(PHI_COMPONENTS) or min(self.phi_weight_init) <= 0:
            bad("phi_weight_init", f"{len(PHI_COMPONENTS)} positive numbers")
        if self.lambda_phi < 0:
            bad("lambda_phi", "a value >= 0")
        if not 0.0 < self.phi_target <= 1.0:
            bad("phi_target", "a value in (0, 1] (phi lies in [0, 1], so a larger target is unreachable)")
        if self.segment_len < 1 or self.complexity_window < 3:
            bad("complexity_window" if self.complexity_window < 3 else "segment_len", "a larger window")
        if self.memory_slots < 1 or not 0 <= self.memory_writes <= self.memory_slots:
            bad("memory_writes", f"0..memory_slots={self.memory_slots}")
        if not 0.0 < self.memory_decay <= 1.0:
            bad("memory_decay", "a value in (0, 1]")
        if self.noise_std < 0:
            bad("noise_std", "a value >= 0")
        if (self.lambda_phi > 0 or self.memory) and not self.iit_metrics:
            bad("iit_metrics", "True when lambda_phi > 0 or memory is on (both use the metrics)")
        if self.lambda_phi > 0 and not self.phi_components:
            bad("phi_components", "at least one component when lambda_phi > 0")

    @property
    def ff_width(self) -> int:
        return self.intermediate_size or 4 * self.hidden_size

    @property
    def uses_iit(self) -> bool:
        return self.iit_metrics or self.memory or self.noise_std > 0 or self.lambda_phi > 0

    def baseline(self) -> InfinitoConfig:
        """The same transformer with every IIT feature off (what ``--baseline`` trains)."""
        return replace(
            self, iit_metrics=False, learnable_phi_weights=False, lambda_phi=0.0, memory=False, noise_std=0.0
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InfinitoConfig:
        """The config from its :meth:`to_dict` form; runs saved before the workspace's common names
        (``d_model``, ``n_layers``, ``n_heads``, ``d_ff``) load too.

        Raises:
            ValueError: an unknown field, or a value :meth:`__post_init__` refuses.
        """
        values = {FORMER_FIELD_NAMES.get(key, key): value for key, value in data.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config field(s): {', '.join(unknown)}")
        for name in ("phi_components", "phi_weight_init"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


PRESETS: dict[str, dict[str, Any]] = {
    # The original's "Model A" architecture (GPT-2 vocab, 256-token windows).
    "seed": dict(hidden_size=512, num_layers=4, num_heads=8, dropout=0.15, max_seq_len=256),
    # The original's proposed smaller model ("28M"; ~44.8M with an untied GPT-2 vocab).
    "small": dict(hidden_size=384, num_layers=3, num_heads=6, dropout=0.15, max_seq_len=256),
    # Finishes a run on 2 CPU cores in minutes; the size used for the README comparison.
    "cpu": dict(hidden_size=128, num_layers=2, num_heads=4, dropout=0.15, max_seq_len=128, memory_slots=128),
}


def preset(name: str, **overrides: Any) -> InfinitoConfig:
    """Build a config from a named preset plus explicit overrides.

    Args:
        name: a key of :data:`PRESETS` (``seed``, ``small`` or ``cpu``).
        **overrides: config fields whose values replace the preset's.

    Returns:
        The validated config.

    Raises:
        ValueError: an unknown preset, or a value :meth:`InfinitoConfig.__post_init__` refuses.
        TypeError: an override that is not a config field.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return InfinitoConfig(**{**PRESETS[name], **overrides})


# --------------------------------------------------------------------------------------------
# Transformer blocks
# --------------------------------------------------------------------------------------------


KVCache = list[tuple[Tensor, Tensor]]
"""Per block, the keys and values ``[B, H, T_past, head_dim]`` of the tokens seen so far."""


class CausalSelfAttention(nn.Module):
    def __init__(self, config: InfinitoConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.hidden_size // config.num_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: Tensor, need_stats: bool = False, past: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None, tuple[Tensor, Tensor]]:
        """Attend causally; ``past`` holds the keys and values of earlier tokens (KV cache).

        Returns the block output ``[B, T, D]``, the attention statistics (with ``need_stats``)
        and this call's keys and values including ``past``.
        """
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.num_heads, self.head_dim).transpose(1, 2) for z in (q, k, v))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        dropout_p = self.attn_dropout if self.training else 0.0
        stats = None
        if need_stats:
            if past is not None:
                raise ValueError("attention statistics are computed on whole sequences, not with a KV cache")
            y, stats = _attention_with_statistics(q, k, v, dropout_p, self.training)
        elif past is None or t == k.shape[2]:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
        else:
            # New tokens at positions past_len .. past_len + t - 1 see every cached key and their own past.
            mask = torch.ones(t, k.shape[2], dtype=torch.bool, device=x.device).tril(k.shape[2] - t)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(b, t, d)
        return self.resid_dropout(self.proj(y)), stats, (k, v)


def _attention_with_statistics(
    q: Tensor, k: Tensor, v: Tensor, dropout_p: float, training: bool
) -> tuple[Tensor, dict[str, Tensor]]:
    """Explicit causal attention that also returns :func:`attention_statistics` of its probabilities.

    The metrics need the probabilities *before* dropout (rows sum to 1), so SDPA cannot be used.
    Softmax and the per-head entropies come from one autograd function with a closed-form
    backward (:class:`_SoftmaxWithEntropy`): autograd's chain through clamp, log and product
    over T x T was the largest part of the IIT model's extra backward time (issue 16).
    """
    t = q.shape[2]
    # Scaling q instead of the T x T scores, and masking the fresh scores in place, saves two
    # passes over T x T (autograd needs neither tensor).
    scores = ((q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)).float()
    future = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    probs, head_entropy = _SoftmaxWithEntropy.apply(scores.masked_fill_(future, float("-inf")))
    stats = attention_statistics(probs, head_entropy)
    y = F.dropout(probs.to(v.dtype), p=dropout_p, training=training) @ v
    return y, stats


class _SoftmaxWithEntropy(torch.autograd.Function):
    """``p = softmax(s)`` and ``H = -sum p log p`` over the last dim, with the backward in closed form.

    Forward: ``scores`` ``[..., T]`` (float32, -inf where masked) -> ``p`` ``[..., T]`` and ``H``
    ``[...]`` in nats (log clamped at 1e-12, as :func:`_entropy`). Backward: with
    dH/ds_j = -p_j (log p_j + H), the gradient is the softmax backward of ``u = g_p - g_H log p``:
    ``g_s = p * (u - sum(p * u))`` (the entropy's constant terms cancel there), four passes over
    T x T instead of autograd's chain of nine.
    """

    @staticmethod
    def forward(ctx: Any, scores: Tensor) -> tuple[Tensor, Tensor]:
        probs = scores.softmax(dim=-1)
        log_probs = probs.clamp_min(1e-12).log()
        ctx.save_for_backward(probs, log_probs)
        return probs, -(probs * log_probs).sum(-1)

    @staticmethod
    def backward(ctx: Any, grad_probs: Tensor | None, grad_entropy: Tensor | None) -> Tensor:
        probs, log_probs = ctx.saved_tensors
        if grad_probs is None:
            grad_probs = torch.zeros_like(probs)
        if grad_entropy is None:
            u = grad_probs.clone()
        else:
            u = torch.addcmul(grad_probs, log_probs, grad_entropy.unsqueeze(-1), value=-1.0)
        return u.sub_((probs * u).sum(-1, keepdim=True)).mul_(probs)


class MLP(nn.Module):
    def __init__(self, config: InfinitoConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.hidden_size, config.ff_width)
        self.proj = nn.Linear(config.ff_width, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LN block (the original was post-LN; pre-LN trains stably without warmup tricks)."""

    def __init__(self, config: InfinitoConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.hidden_size)
        self.mlp = MLP(config)

    def forward(
        self, x: Tensor, need_stats: bool = False, past: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None, tuple[Tensor, Tensor]]:
        attn_out, stats, present = self.attn(self.ln_1(x), need_stats, past)
        x = x + attn_out
        return x + self.mlp(self.ln_2(x)), stats, present


# --------------------------------------------------------------------------------------------
# IIT metrics: per-position, causal, bounded in [0, 1]
# --------------------------------------------------------------------------------------------


def _entropy(p: Tensor, dim: int = -1) -> Tensor:
    # Clamp inside the log only: masked keys have p = 0 exactly, where d(p log p)/dp is -inf.
    return -(p * p.clamp_min(1e-12).log()).sum(dim)


def attention_statistics(probs: Tensor, head_entropy: Tensor | None = None) -> dict[str, Tensor]:
    """Per-query attention diversity and head coherence from causal attention probabilities.

    * diversity_t = mean over heads of H(p_h,t) / log(t + 1): 1 = uniform over the allowed past,
      0 = all mass on one key.
    * coherence_t = 1 - JSD(p_1,t .. p_H,t) / log(min(H, t + 1)), with the generalised
      Jensen-Shannon divergence JSD = H(mean_h p_h) - mean_h H(p_h): 1 = all heads attend alike.

    Query 0 has a single allowed key, where both are undefined; :func:`metric_validity` excludes it.

    Args:
        probs: attention probabilities ``[B, H, T, T]`` (float32), each row summing to 1 over the
            allowed keys and 0 on future ones.
        head_entropy: the entropy of each row ``[B, H, T]`` in nats, when the caller has it (saves
            computing it again).

    Returns:
        ``diversity`` and ``coherence``, each ``[B, T]`` in [0, 1], in ``probs``' dtype.
    """
    num_heads, t = probs.shape[1], probs.shape[-1]
    if head_entropy is None:
        head_entropy = _entropy(probs)  # [B, H, T]
    n_keys = torch.arange(1, t + 1, device=probs.device, dtype=probs.dtype)
    log_keys = n_keys.log().clamp_min(1e-6)
    mean_head_entropy = head_entropy.mean(1)
    diversity = (mean_head_entropy / log_keys).clamp(0, 1)
    jsd = _entropy(probs.mean(1)) - mean_head_entropy  # [B, T], >= 0 up to rounding
    log_mix = n_keys.clamp(max=num_heads).log().clamp_min(1e-6)
    coherence = (1.0 - jsd / log_mix).clamp(0, 1)
    return {"diversity": diversity, "coherence": coherence}


def _cosine01(a: Tensor, b: Tensor) -> Tensor:
    return 0.5 * (1.0 + F.cosine_similarity(a, b, dim=-1, eps=1e-6))


def temporal_integration(h: Tensor) -> Tensor:
    """(1 + cos(h_t, h_{t-1})) / 2 per position: how little the state turns from one token to the next.

    Args:
        h: hidden states ``[B, T, D]`` (float).

    Returns:
        ``[B, T]`` in [0, 1], in ``h``'s dtype; position 0 (no past) is set to 0.5.
    """
    # Each state is normalised once (cosine_similarity would do it twice, with a slower backward).
    unit = h / h.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    cosine01 = 0.5 * (1.0 + (unit[:, 1:] * unit[:, :-1]).sum(-1))
    return torch.cat([cosine01.new_full((h.shape[0], 1), 0.5), cosine01], dim=1)


def segment_integration(h: Tensor, segment_len: int) -> Tensor:
    """(1 + cos(mean of the last s states, mean of all earlier states)) / 2 per position ``[B, T]``.

    The original split the whole window into quarters (reading the future); this causal version
    compares the current segment with the context before it.

    Args:
        h: hidden states ``[B, T, D]`` (float).
        segment_len: s, the number of recent states averaged (>= 1).

    Returns:
        ``[B, T]`` in [0, 1], in ``h``'s dtype; positions t < s have no earlier context and get 0.5
        (excluded from the averages by :func:`metric_validity`).
    """
    b, t, d = h.shape
    out = torch.full((b, t), 0.5, device=h.device, dtype=h.dtype)
    if t <= segment_len:
        return out
    csum = torch.cumsum(h, dim=1)
    ends = torch.arange(segment_len, t, device=h.device)  # positions with earlier context
    recent = (csum[:, ends] - csum[:, ends - segment_len]) / segment_len
    earlier = csum[:, ends - segment_len] / (ends - segment_len + 1).to(h.dtype).view(1, -1, 1)
    out[:, segment_len:] = _cosine01(recent, earlier)
    return out


def trajectory_complexity(h: Tensor, window: int) -> Tensor:
    """Normalised effective dimension of the last ``window`` states, per position ``[B, T]``.

    For the centred window X (w x D) with Gram matrix G = X X^T, the participation ratio
    tr(G)^2 / ||G||_F^2 = (sum of eigenvalues)^2 / sum of squared eigenvalues lies in [1, w - 1];
    it is mapped to [0, 1]. 0 = the recent states move along one direction, 1 = they spread
    evenly over w - 1 directions. No eigendecomposition is needed. Positions t < w - 1 get 0.5.

    Every window's Gram matrix is read from the w diagonals <h_s, h_{s+k}> (k < w) of the states'
    inner products and centred as J G J (J = I - 11^T / w), instead of centring and multiplying
    T - w + 1 copies of the window (half the time forward and backward). Subtracting the
    sequence's mean state first changes no centred Gram matrix and keeps the products small.

    Args:
        h: hidden states ``[B, T, D]`` (float; float32 keeps the Gram matrices accurate).
        window: w, the number of recent states (>= 3).

    Returns:
        ``[B, T]`` in [0, 1], in ``h``'s dtype; positions t < w - 1 get 0.5.
    """
    b, t, d = h.shape
    out = torch.full((b, t), 0.5, device=h.device, dtype=h.dtype)
    if t < window:
        return out
    h = h - h.mean(dim=1, keepdim=True)
    diagonals = torch.stack(
        [F.pad((h[:, lag:] * h[:, : t - lag]).sum(-1), (0, lag)) for lag in range(window)], dim=1
    )  # [B, w, T]: diagonals[:, k, s] = <h_s, h_{s+k}>
    idx = torch.arange(window, device=h.device)
    lag = (idx[:, None] - idx[None, :]).abs()
    first = torch.minimum(idx[:, None], idx[None, :])
    starts = torch.arange(t - window + 1, device=h.device)
    gram = diagonals[:, lag, starts[:, None, None] + first]  # [B, T - w + 1, w, w]
    centred = (
        gram - gram.mean(-1, keepdim=True) - gram.mean(-2, keepdim=True) + gram.mean((-2, -1), keepdim=True)
    )
    trace = centred.diagonal(dim1=-2, dim2=-1).sum(-1)
    ratio = trace.square() / (centred.square().sum((-2, -1)) + 1e-12)
    out[:, window - 1 :] = ((ratio - 1.0) / (window - 2)).clamp(0, 1)
    return out


def metric_validity(t: int, config: InfinitoConfig, device: torch.device) -> dict[str, Tensor]:
    """Which positions each component is defined at.

    Args:
        t: the sequence length.
        config: gives ``segment_len`` and ``complexity_window``.
        device: where the masks are built.

    Returns:
        A bool mask ``[T]`` for each of ``temporal``, ``integration``, ``complexity`` and
        ``attention`` (True = defined, enters the averages).
    """
    pos = torch.arange(t, device=device)
    return {
        "temporal": pos >= 1,
        "integration": pos >= config.segment_len,
        "complexity": pos >= config.complexity_window - 1,
        "attention": pos >= 1,
    }


def iit_components(
    h: Tensor, attn_stats: list[dict[str, Tensor]], config: InfinitoConfig
) -> dict[str, Tensor]:
    """All per-position components, plus attention diversity and coherence.

    Args:
        h: the last block's residual stream ``[B, T, D]`` (any float dtype; used in float32).
        attn_stats: per block, its :func:`attention_statistics` (at least one block).
        config: gives ``segment_len`` and ``complexity_window``.

    Returns:
        ``temporal``, ``integration``, ``complexity``, ``attention`` (the mean of diversity and
        coherence), ``attention_diversity`` and ``attention_coherence``: each ``[B, T]``, float32
        in [0, 1], with its gradient; undefined positions hold 0.5 (see :func:`metric_validity`).
    """
    h = h.float()
    diversity = torch.stack([s["diversity"] for s in attn_stats]).mean(0)
    coherence = torch.stack([s["coherence"] for s in attn_stats]).mean(0)
    return {
        "temporal": temporal_integration(h),
        "integration": segment_integration(h, config.segment_len),
        "complexity": trajectory_complexity(h, config.complexity_window),
        # The original's fourth component; diversity and coherence are both kept and reported.
        "attention": 0.5 * (diversity + coherence),
        "attention_diversity": diversity,
        "attention_coherence": coherence,
    }


class LearnablePhiWeights(nn.Module):
    """Softmax over four logits (initialised at log of the original's 0.3/0.3/0.2/0.2).

    Components switched off in the config get a -inf logit, so the weights of the active ones
    still sum to 1. With ``learnable_phi_weights=False`` the logits are a buffer (no gradient).
    """

    logits: Tensor  # a Parameter, or a buffer when the weights are fixed
    active: Tensor  # bool [4]: which components enter the mixture

    def __init__(self, config: InfinitoConfig) -> None:
        super().__init__()
        logits = torch.tensor(config.phi_weight_init, dtype=torch.float32).log()
        if config.learnable_phi_weights:
            self.logits = nn.Parameter(logits)
        else:
            self.register_buffer("logits", logits)
        active = torch.tensor([name in config.phi_components for name in PHI_COMPONENTS])
        self.register_buffer("active", active, persistent=False)

    def forward(self) -> Tensor:
        return self.logits.masked_fill(~self.active, float("-inf")).softmax(-1)

    def as_dict(self) -> dict[str, float]:
        with torch.no_grad():
            return {name: float(w) for name, w in zip(PHI_COMPONENTS, self.forward().tolist())}


# --------------------------------------------------------------------------------------------
# IIT-guided memory
# --------------------------------------------------------------------------------------------


class IITGuidedMemory(nn.Module):
    """A slot memory of hidden states, read by attention and written by phi priority.

    Read (training and eval): each position t queries the slots with its own state h_t, so the
    read at t depends only on h_t (itself causal) and on slots written by *earlier* forward passes.
    A zero "null slot" is always present, so an empty memory reads exactly zero and the model can
    learn to ignore memory.

    Write (training only, after the read, without gradient): each sequence proposes its position
    with the highest weighted phi; the ``memory_writes`` best proposals replace the slots with the
    lowest decayed priority (empty slots first). Eval and generation never write, so validation
    text cannot enter the memory. Everything is vectorised (no per-sample Python loop, no sync).
    """

    slots: Tensor  # float32 [S, D]: stored hidden states
    priority: Tensor  # float32 [S]: weighted phi when written; -inf = empty slot
    written_at: Tensor  # int64 [S]: value of ``step`` when each slot was written
    step: Tensor  # int64 scalar: writes attempted so far (the clock of the priority decay)
    n_writes: Tensor  # int64 scalar: proposals stored so far

    def __init__(self, config: InfinitoConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.config = config
        self.norm = nn.LayerNorm(d)
        self.query = nn.Linear(d, d, bias=False)
        self.key = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d, d, bias=False)
        self.out = nn.Linear(d, d)
        self.dropout = nn.Dropout(config.dropout)
        self.register_buffer("slots", torch.zeros(config.memory_slots, d))
        self.register_buffer("priority", torch.full((config.memory_slots,), float("-inf")))
        self.register_buffer("written_at", torch.zeros(config.memory_slots, dtype=torch.long))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("n_writes", torch.zeros((), dtype=torch.long))
        self.defer_writes = False
        self._pending: list[tuple[Tensor, Tensor]] = []

    def filled(self) -> Tensor:
        return torch.isfinite(self.priority)

    def read(self, h: Tensor) -> Tensor:
        """Attention of every position over the slots: ``h`` ``[B, T, D]`` -> ``[B, T, D]``.

        Computed as ``out(softmax(query(LN h) · key(LN slots)ᵀ / √D) · value(LN slots))``, with the
        query and output projections folded into the S slots instead of the B·T positions:
        (x Wqᵀ) kᵀ = x (Wqᵀ kᵀ) and (w v) Woᵀ = w (v Woᵀ). The values are the same up to rounding
        and the read's matmuls about halve (S = 128 against B·T = 2,048 in the ``cpu`` preset).
        """
        b, t, d = h.shape
        mem = self.norm(self.slots.to(h.dtype))
        keys, values = self.key(mem), self.value(mem)  # [S, D] each
        query_keys = self.query.weight.T @ keys.T  # [D, S]: Wqᵀ kᵀ
        scores = (self.norm(h) @ query_keys) / math.sqrt(d)  # [B, T, S]
        scores = scores.masked_fill(~self.filled(), float("-inf"))
        null = torch.zeros(b, t, 1, device=h.device, dtype=scores.dtype)
        weights = torch.cat([null, scores], dim=-1).softmax(-1)[..., 1:]
        projected_values = F.linear(values, self.out.weight)  # [S, D]: v Woᵀ (the bias comes after)
        return self.dropout(weights @ projected_values + self.out.bias)

    @torch.no_grad()
    def write(self, h: Tensor, priority: Tensor) -> None:
        """Store the top-priority state of the best sequences; ``priority`` is ``[B, T]`` (-inf = invalid).

        With :attr:`defer_writes` (set by the trainer) the proposals wait for
        :meth:`commit_writes`, which runs once per optimizer step that was taken, so a skipped step
        leaves the memory as it was.
        """
        best_pos = priority.argmax(dim=1)  # [B]
        best_val = priority.gather(1, best_pos[:, None]).squeeze(1)
        states = h[torch.arange(h.shape[0], device=h.device), best_pos].float()
        if self.defer_writes:
            self._pending.append((states, best_val.float()))
        else:
            self._store(states, best_val.float())

    @torch.no_grad()
    def commit_writes(self) -> None:
        """Apply the deferred proposals as one write, as if their sequences had been one batch.

        Under gradient accumulation the micro-batches' proposals are pooled (one write per optimizer
        step); under DDP every rank's are gathered in rank order, so all ranks store the same slots.
        """
        if not self._pending:
            return
        states = torch.cat([s for s, _ in self._pending])
        values = torch.cat([v for _, v in self._pending])
        self._pending = []
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            if world > 1:
                gathered_s = [torch.empty_like(states) for _ in range(world)]
                gathered_v = [torch.empty_like(values) for _ in range(world)]
                torch.distributed.all_gather(gathered_s, states.contiguous())
                torch.distributed.all_gather(gathered_v, values.contiguous())
                states, values = torch.cat(gathered_s), torch.cat(gathered_v)
        self._store(states, values)

    def discard_writes(self) -> None:
        self._pending = []

    def _store(self, states: Tensor, values: Tensor) -> None:
        """Let the best ``memory_writes`` proposals (one state per sequence) replace weaker slots."""
        n_write = min(self.config.memory_writes, values.shape[0])
        self.step += 1
        if n_write == 0:
            return
        chosen_val, chosen_seq = values.topk(n_write)
        keep = torch.isfinite(chosen_val)
        states = states[chosen_seq]
        age = (self.step - self.written_at).float()
        decayed = self.priority * self.config.memory_decay**age
        # Keep the S highest (decayed) priorities among the old slots and the new proposals: a
        # proposal only evicts a slot it beats, and empty slots (-inf) go first. Out-of-place,
        # because the read of this very forward still needs the old slots for backward.
        pool_priority = torch.cat([decayed, torch.where(keep, chosen_val, float("-inf"))])
        kept = pool_priority.topk(self.config.memory_slots).indices
        is_new = kept >= self.config.memory_slots
        pool_original = torch.cat([self.priority, chosen_val])
        self.slots = torch.cat([self.slots, states])[kept]
        self.priority = pool_original[kept]
        self.written_at = torch.cat([self.written_at, self.step.expand(n_write)])[kept]
        self.n_writes = self.n_writes + (is_new & torch.isfinite(self.priority)).sum()


# --------------------------------------------------------------------------------------------
# The language model
# --------------------------------------------------------------------------------------------


@dataclass
class InfinitoOutput:
    """What :meth:`InfinitoLM.forward` returns; losses are ``None`` without labels."""

    logits: Tensor
    last_hidden: Tensor  # final (normalised) hidden states [B, T, D], used by contrastive search
    loss: Tensor | None = None  # ce_loss + lambda_phi * phi_loss
    ce_loss: Tensor | None = None
    phi_loss: Tensor | None = None
    phi: Tensor | None = None  # weighted phi, mean over sequences (with gradient)
    components: dict[str, Tensor] = field(default_factory=dict)  # sequence-mean components, detached
    hidden_states: tuple[Tensor, ...] | None = None  # residual stream after embedding and each block
    past_key_values: KVCache | None = None  # with use_cache: keys/values of every token so far


class SequenceTooLongError(ValueError):
    """An input is longer than the model's learned positions."""


class InfinitoLM(nn.Module):
    def __init__(self, config: InfinitoConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.hidden_size)
        self.pos_emb = nn.Embedding(config.max_seq_len, config.hidden_size)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self.phi_weights = LearnablePhiWeights(config) if config.iit_metrics else None
        self.memory = IITGuidedMemory(config) if config.memory else None
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):  # GPT-2: scale residual projections by depth
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.num_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """The number of parameters, a tied embedding counted once.

        Args:
            exclude_embeddings: leave out the token and position embeddings (and an untied head).

        Returns:
            The parameter count.
        """
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a tied weight once
        if exclude_embeddings:
            n -= self.tok_emb.weight.numel() + self.pos_emb.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.lm_head.weight.numel()
        return n

    def _add_noise(self, x: Tensor) -> Tensor:
        rms = x.detach().float().pow(2).mean(-1, keepdim=True).sqrt().to(x.dtype)
        return x + self.config.noise_std * rms * torch.randn_like(x)

    def forward(
        self,
        input_ids: Tensor,
        labels: Tensor | None = None,
        *,
        output_hidden_states: bool = False,
        compute_metrics: bool | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
    ) -> InfinitoOutput:
        """Next-token logits for ``input_ids`` and, with ``labels``, the training losses.

        With ``use_cache`` the output carries every block's keys and values; passing them back as
        ``past_key_values`` runs only the new tokens (positions continue after the cached ones), with
        the same logits as running the whole sequence (eval mode; the memory reads per position).

        Args:
            input_ids: token ids ``[B, T]`` (int64).
            labels: the next token of each position ``[B, T]`` (int64), aligned with ``input_ids``;
                -100 = ignore. ``None``: no losses.
            output_hidden_states: also return the residual stream after the embedding and after
                each block (``num_layers + 1`` tensors ``[B, T, D]``).
            compute_metrics: compute the IIT metrics (phi, its components, the phi loss and the
                memory's write priority). ``None``: the config's ``iit_metrics`` in training and
                off in eval, where nothing uses them (the memory only writes in training); pass
                True to inspect them.
            past_key_values: from an earlier call with ``use_cache``, per block the keys and values
                ``[B, H, T_past, head_dim]`` of the tokens before ``input_ids`` (eval mode only).
            use_cache: return every block's keys and values, ``past_key_values`` included.

        Returns:
            :class:`InfinitoOutput` with ``logits`` ``[B, T, V]`` and ``last_hidden`` ``[B, T, D]``
            (the weights' dtype, or autocast's); with ``labels`` ``ce_loss`` (float32 scalar, nats
            per token) and ``loss`` = ``ce_loss + lambda_phi * phi_loss``; with the metrics
            ``phi``, ``phi_loss`` and the sequence-mean ``components`` (float32 scalars in [0, 1]).
            In training a memory also stores the states with the highest weighted phi.

        Raises:
            SequenceTooLongError: cached plus new tokens exceed ``max_seq_len``.
            ValueError: ``compute_metrics=True`` on a model built without ``iit_metrics``, or a KV
                cache in training mode or with the metrics.
        """
        cfg = self.config
        b, t = input_ids.shape
        past_len = past_key_values[0][0].shape[2] if past_key_values else 0
        if past_len + t > cfg.max_seq_len:
            raise SequenceTooLongError(
                f"input has {past_len + t} tokens but the model's max_seq_len is {cfg.max_seq_len}"
            )
        if compute_metrics is None:
            compute_metrics = cfg.iit_metrics and self.training
        if compute_metrics and not cfg.iit_metrics:
            raise ValueError("compute_metrics=True needs a model built with iit_metrics=True")
        if past_key_values and (self.training or compute_metrics):
            raise ValueError("a KV cache is for generation: eval mode, without IIT metrics")
        noisy = self.training and cfg.noise_std > 0
        pos = torch.arange(past_len, past_len + t, device=input_ids.device)
        x = self.drop(self.tok_emb(input_ids) + self.pos_emb(pos))
        hidden = [x] if output_hidden_states else None
        attn_stats = []
        presents: KVCache = []
        for i, block in enumerate(self.blocks):
            past = past_key_values[i] if past_key_values else None
            x, stats, present = block(x, need_stats=compute_metrics, past=past)
            if use_cache:
                presents.append(present)
            if stats is not None:
                attn_stats.append(stats)
            if noisy:
                x = self._add_noise(x)
            if hidden is not None:
                hidden.append(x)

        out = InfinitoOutput(logits=x, last_hidden=x)  # both filled in below
        priority = self._phi_terms(x, attn_stats, out) if compute_metrics else None

        if self.memory is not None:
            state = x
            x = x + self.memory.read(x)
            if self.training and priority is not None:
                self.memory.write(state.detach(), priority.detach())

        h = self.ln_f(x)
        out.last_hidden = h
        out.logits = self.lm_head(h)
        out.hidden_states = tuple(hidden) if hidden is not None else None
        out.past_key_values = presents if use_cache else None
        if labels is not None:
            out.ce_loss = F.cross_entropy(
                out.logits.float().view(-1, out.logits.size(-1)), labels.reshape(-1), ignore_index=-100
            )
            out.loss = out.ce_loss
            if out.phi_loss is not None:
                out.loss = out.loss + cfg.lambda_phi * out.phi_loss
        return out

    def _phi_terms(
        self, h: Tensor, attn_stats: list[dict[str, Tensor]], out: InfinitoOutput
    ) -> Tensor | None:
        """Fill ``out.components``, ``out.phi`` and ``out.phi_loss`` from the last block's ``h``.

        Returns the per-position weighted phi ``[B, T]`` (-inf where a component is undefined),
        which decides what the memory stores, or ``None`` when no component is active.
        """
        cfg = self.config
        assert self.phi_weights is not None  # forward checked iit_metrics, which builds it
        comps = iit_components(h, attn_stats, cfg)
        valid = metric_validity(h.shape[1], cfg, h.device)
        valid["attention_diversity"] = valid["attention_coherence"] = valid["attention"]
        seq_means = {name: _masked_mean(comps[name], valid[name]) for name in comps}  # [B] each
        out.components = {name: v.mean().detach() for name, v in seq_means.items()}
        w = self.phi_weights()
        active = [(i, name) for i, name in enumerate(PHI_COMPONENTS) if name in cfg.phi_components]
        if not active:
            return None
        phi_per_seq = sum(w[i] * seq_means[name] for i, name in active)
        out.phi = phi_per_seq.mean()
        priority = sum(w[i] * comps[name].masked_fill(~valid[name], float("-inf")) for i, name in active)
        if cfg.lambda_phi > 0:
            out.phi_loss = F.relu(cfg.phi_target - phi_per_seq).square().mean()
        return priority


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over positions where ``mask`` ([T]) is true; ``values`` is ``[B, T]`` -> ``[B]``."""
    m = mask.to(values.dtype)
    return (values * m).sum(-1) / m.sum().clamp_min(1.0)


def count_parameters(config: InfinitoConfig) -> dict[str, int]:
    """Parameter counts of ``config`` built tied and untied (for the README table).

    The models are built on the meta device, so no memory is allocated.

    Args:
        config: the architecture; its ``tie_embeddings`` is overridden both ways.

    Returns:
        ``tied``, ``tied_non_embedding``, ``untied`` and ``untied_non_embedding`` parameter counts.
    """
    counts = {}
    for tied in (True, False):
        with torch.device("meta"):
            model = InfinitoLM(replace(config, tie_embeddings=tied))
        key = "tied" if tied else "untied"
        counts[key] = model.num_parameters()
        counts[f"{key}_non_embedding"] = model.num_parameters(exclude_embeddings=True)
    return counts
