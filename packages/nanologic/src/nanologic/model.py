"""NanoLogic: a decoder-only transformer, in one file, top to bottom.

Pre-norm blocks with RMSNorm (fp32 upcast), grouped-query attention with RoPE (interleaved
pairs, as the original; rotate-half on request), optional QK-norm, SwiGLU FFN, tied embeddings with
an optional √d embedding scale, learnable head scale, optional attention/output logit soft-caps,
z-loss, stochastic depth, and, as options, differential attention (Ye et al. 2024) and the original's
gate-residual FFN, and a copy head (an induction-form pointer mixed with the vocabulary, see
``NanoLogic.copy_log_probs``). The original's DeepNorm α in a pre-norm stack is left out: with RMSNorm before every
sublayer it only damps sublayer j by α^-j (see README).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class BeamMask(Protocol):
    """A constraint on :meth:`NanoLogic.beam_search`, e.g. :class:`nanologic.grammar.BeamGrammarMask`."""

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        """float32 [beams, V] scores with the tokens each beam may not write next at -inf."""

    def advance(self, parents: Sequence[int], tokens: Sequence[int]) -> None:
        """Beam i of the next step continues beam ``parents[i]`` with ``tokens[i]``."""


@dataclass(frozen=True)
class NanoLogicConfig:
    vocab_size: int = 8000  # BPE vocabulary incl. the 10 special tokens
    hidden_size: int = 512  # model width d
    num_layers: int = 8  # transformer blocks
    num_heads: int = 8  # query heads
    num_kv_heads: int = 2  # key/value heads (GQA); must divide num_heads
    intermediate_size: int = 1408  # SwiGLU width: a multiple of 64 near 8/3·d (quantisation-friendly)
    max_seq_len: int = 1024  # longest sequence (RoPE table size)
    dropout: float = 0.1  # dropout on attention output and FFN output
    rope_theta: float = 10000.0  # RoPE base
    rope_layout: str = "interleaved"  # "interleaved" (adjacent pairs, seed/GPT-J) or "half" (HF/NeoX)
    rms_norm_eps: float = 1e-5  # RMSNorm epsilon
    qk_norm: bool = True  # RMSNorm over head_dim on q and k before RoPE
    embed_scale: bool = True  # multiply embeddings by √d (init compensates: std 1/√d)
    head_scale: bool = True  # learnable scalar on the logits, init 1
    attn_softcap: float = 0.0  # tanh soft-cap on attention scores (0 = off; needs the eager path)
    final_softcap: float = 30.0  # tanh soft-cap on output logits (0 = off)
    z_loss: float = 1e-4  # weight of mean(logsumexp²) (PaLM)
    stochastic_depth: float = 0.1  # drop rate of the last block, linear from 0 at the first
    differential_attention: bool = False  # softmax(q1k1) − λ·softmax(q2k2) (not runnable in llama.cpp)
    gate_residual: bool = False  # SwiGLU + α·up with α init 0 (not runnable in llama.cpp)
    tie_embeddings: bool = True  # LM head shares the embedding matrix
    copy_head: bool = False  # mix a pointer to earlier tokens into the output (not runnable in llama.cpp)
    bos_token_id: int = 1  # <|bos|>: starts each document (delimits the copy head's source)
    copy_until_token_id: int = 5  # the copy head copies only tokens before this one (<|output|>); -1: any
    # The model writes each atom's polarity mark (nanologic.data.literal_polarity) and decoding
    # gives the formula's literals those signs. False for runs trained before the marks.
    polarity_marks: bool = False
    init_std: float = 0.02  # std of linear weights; residual outputs get init_std/√(2·layers)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} not divisible by num_kv_heads {self.num_kv_heads}")
        if self.head_dim % 2 or (self.differential_attention and self.head_dim % 4):
            raise ValueError(
                f"head_dim {self.head_dim} must be even (a multiple of 4 with differential attention)"
            )
        if self.rope_layout not in ("interleaved", "half"):
            raise ValueError(f"rope_layout must be 'interleaved' or 'half', got {self.rope_layout!r}")
        for name in ("dropout", "stochastic_depth"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")
        if min(self.vocab_size, self.num_layers, self.intermediate_size, self.max_seq_len) <= 0:
            raise ValueError("sizes must be positive")
        if self.attn_softcap < 0 or self.final_softcap < 0 or self.z_loss < 0:
            raise ValueError("soft-caps and z_loss must be >= 0")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def to_dict(self) -> dict:
        return asdict(self)


# The original's ~20M configuration (512 wide, 8 layers, 8 heads, 2 KV heads, FFN 1408), for a GPU.
_SEED_SIZE = dict(hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=2, intermediate_size=1408)

_CPU_SIZE = dict(
    hidden_size=192,
    num_layers=4,
    num_heads=6,
    num_kv_heads=2,
    intermediate_size=512,
    max_seq_len=256,
    dropout=0.0,
    qk_norm=False,
    final_softcap=0.0,
    stochastic_depth=0.0,
)

PRESETS: dict[str, dict] = {
    # The original's size with all of its stable tricks on, and the copy head.
    "base": dict(_SEED_SIZE, copy_head=True),
    # The original's configuration with its llama.cpp-incompatible options too.
    "base-full": dict(
        _SEED_SIZE, attn_softcap=50.0, differential_attention=True, gate_residual=True, copy_head=True
    ),
    # The original's size without QK-norm, attention soft-cap or copy head: exports to llama.cpp.
    "base-export": dict(_SEED_SIZE, qk_norm=False),
    # CPU default: trains in minutes on 2 cores. The copy head is what makes it read the sentence
    # (README: equivalence 0.13 -> 0.34 on the synthetic test with the same budget).
    "cpu": dict(_CPU_SIZE, copy_head=True),
    # The CPU size as a plain llama: exports to llama.cpp (and compares with transformers' Llama).
    "cpu-export": dict(_CPU_SIZE),
    # For tests: a few seconds per step on one core (with the copy head, as the default).
    "tiny": dict(
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=128,
        max_seq_len=256,
        dropout=0.0,
        stochastic_depth=0.0,
        copy_head=True,
    ),
}


class RMSNorm(nn.Module):
    """x / rms(x) · γ, computed in fp32 (bf16/fp16 squares overflow or lose precision)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).type_as(x)


def rope_cache(head_dim: int, max_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # [T, hd/2]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: str) -> torch.Tensor:
    """Rotate x [B, H, T, hd] by position; cos/sin are [B, 1, T, hd/2]."""
    x32 = x.float()
    if layout == "interleaved" and torch.compiler.is_compiling():
        # The same rotation in real arithmetic (the same products and sums, so the same floats):
        # Inductor cannot generate code for complex tensors, and fused it made the compiled fp32
        # CPU training step 1.45x eager, against 1.21x with the complex form (issue 16).
        even, odd = x32.unflatten(-1, (-1, 2)).unbind(-1)
        out = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)
    elif layout == "interleaved":
        # Adjacent pairs as complex numbers times e^{iθ} (LLaMA's reference form): in eager mode
        # ~3x faster on the CPU than the real form above, which stacks and re-interleaves lanes.
        pairs = torch.view_as_complex(x32.unflatten(-1, (-1, 2)).contiguous())
        out = torch.view_as_real(pairs * torch.complex(cos, sin)).flatten(-2)
    else:
        x1, x2 = x32.chunk(2, dim=-1)
        out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: NanoLogicConfig, layer_index: int) -> None:
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_heads * hd, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * hd, cfg.hidden_size, bias=False)
        qk_dim = hd // 2 if cfg.differential_attention else hd
        self.q_norm = RMSNorm(qk_dim, cfg.rms_norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(qk_dim, cfg.rms_norm_eps) if cfg.qk_norm else None
        if cfg.differential_attention:
            # λ = exp(λq1·λk1) − exp(λq2·λk2) + λ_init, λ_init depending on depth (paper's schedule).
            self.lambda_init = 0.8 - 0.6 * math.exp(-0.3 * layer_index)
            self.lambda_params = nn.Parameter(torch.randn(4, hd // 4) * 0.1)
            self.diff_norm = RMSNorm(hd, cfg.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        cfg = self.cfg
        B, T, _ = x.shape
        hd = cfg.head_dim
        q = self.q_proj(x).view(B, T, cfg.num_heads, hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, cfg.num_kv_heads, hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, cfg.num_kv_heads, hd).transpose(1, 2)
        if cfg.differential_attention:
            # Two half-width query/key maps per head: [B, H, T, 2, hd/2] -> [B, 2H, T, hd/2].
            q = (
                q.view(B, cfg.num_heads, T, 2, hd // 2)
                .transpose(2, 3)
                .reshape(B, 2 * cfg.num_heads, T, hd // 2)
            )
            k = (
                k.view(B, cfg.num_kv_heads, T, 2, hd // 2)
                .transpose(2, 3)
                .reshape(B, 2 * cfg.num_kv_heads, T, hd // 2)
            )
        if self.q_norm is not None and self.k_norm is not None:  # both or neither (cfg.qk_norm)
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q, cos, sin, cfg.rope_layout)
        k = apply_rope(k, cos, sin, cfg.rope_layout)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        present = (k, v)
        if cfg.differential_attention:
            out = self._differential(q, k, v, mask)
        elif cfg.attn_softcap > 0:
            out = self._eager(q, k, v, mask)
        else:
            if mask is None and past is not None and T > 1:
                # A chunk after a cache: causal within the chunk, everything before it visible.
                mask = torch.ones(T, k.size(2), dtype=torch.bool, device=x.device).tril(k.size(2) - T)
            # Without a mask: causal for a whole sequence (one token alone is trivially so), none for
            # one token after a cache. Not written with T > 1, which is a SymBool under a
            # shape-generic compile that SDPA refuses (the whole forward then fell back to eager).
            is_causal = mask is None and past is None
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=cfg.num_kv_heads != cfg.num_heads
            )
        out = out.transpose(1, 2).reshape(B, T, cfg.num_heads * hd)
        return self.o_proj(out), present

    def _scores(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        groups = q.size(1) // k.size(1)
        k = k.repeat_interleave(groups, dim=1)
        scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(q.size(-1))
        if self.cfg.attn_softcap > 0:
            scores = self.cfg.attn_softcap * torch.tanh(scores / self.cfg.attn_softcap)
        Tq, Tk = q.size(2), k.size(2)
        if mask is None:
            mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(Tk - Tq)
        return scores.masked_fill(~mask, float("-inf")).softmax(-1)

    def _eager(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        probs = self._scores(q, k, mask).type_as(v)
        return probs @ v.repeat_interleave(q.size(1) // v.size(1), dim=1)

    def _differential(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        cfg = self.cfg
        B, _, T, _ = q.shape
        probs = self._scores(q, k, mask).view(B, cfg.num_heads, 2, T, -1)
        lq1, lk1, lq2, lk2 = self.lambda_params.float()
        lam = torch.exp((lq1 * lk1).sum()) - torch.exp((lq2 * lk2).sum()) + self.lambda_init
        diff = (probs[:, :, 0] - lam * probs[:, :, 1]).type_as(v)
        out = diff @ v.repeat_interleave(cfg.num_heads // cfg.num_kv_heads, dim=1)
        return self.diff_norm(out) * (1.0 - self.lambda_init)


class SwiGLU(nn.Module):
    def __init__(self, cfg: NanoLogicConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.gate_alpha = nn.Parameter(torch.zeros(())) if cfg.gate_residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.up_proj(x)
        hidden = F.silu(self.gate_proj(x)) * up
        if self.gate_alpha is not None:
            hidden = hidden + self.gate_alpha * up
        return self.down_proj(hidden)


class Block(nn.Module):
    def __init__(self, cfg: NanoLogicConfig, layer_index: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer_index)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        # Stochastic depth: linear in depth, 0 for the first block.
        self.drop_rate = cfg.stochastic_depth * layer_index / max(1, cfg.num_layers - 1)

    def _branch(self, y: torch.Tensor) -> torch.Tensor:
        y = self.dropout(y)
        if self.training and self.drop_rate > 0:
            keep = torch.rand(y.size(0), 1, 1, device=y.device) >= self.drop_rate
            y = y * keep.to(y.dtype) / (1.0 - self.drop_rate)  # inverted: nothing to do at inference
        return y

    def forward(self, x, cos, sin, mask, past):
        attn, present = self.self_attn(self.input_layernorm(x), cos, sin, mask, past)
        x = x + self._branch(attn)
        x = x + self._branch(self.mlp(self.post_attention_layernorm(x)))
        return x, present


class _LogPartition(torch.autograd.Function):
    """``(logsumexp(logits, -1), logits[n, targets[n]])`` from one fused ``log_softmax``, with a
    backward of two passes over [N, V]: ``exp(log_softmax) · g_lse``, then ``g_target`` added at
    each target (a scatter).

    Autograd's form of the same loss (``log_softmax``, a gather for the target, a second gather for
    the z-loss's log-partition) allocated and filled two zero [N, V] gradients for the gathers and
    added them to log_softmax's, and ``torch.logsumexp`` takes four passes (max, subtraction,
    exponential, sum): the loss was a fifth of an eager CPU training step (README, *Speed against
    transformers*: 0.92x transformers' Llama before, 1.04x after; compiled, 1.04x and 1.11x). The
    log-partition is the target's logit minus its log-probability. Checked against autograd by
    ``gradcheck`` (tests/test_model.py).

    Args (forward): logits float [N, V]; targets int64 [N].
    Returns: (lse float [N], target_logit float [N]).
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs = logits.log_softmax(-1)
        target_logit = logits.gather(1, targets[:, None]).squeeze(1)
        lse = target_logit - log_probs.gather(1, targets[:, None]).squeeze(1)
        ctx.save_for_backward(log_probs, targets)
        return lse, target_logit

    @staticmethod
    def backward(ctx: Any, grad_lse: torch.Tensor | None, grad_target: torch.Tensor | None):
        log_probs, targets = ctx.saved_tensors
        if grad_lse is None:
            grad = torch.zeros_like(log_probs)
        else:
            grad = log_probs.exp().mul_(grad_lse[:, None])  # d lse / d logits = softmax
        if grad_target is not None:
            grad.scatter_add_(1, targets[:, None], grad_target[:, None].to(grad.dtype))
        return grad, None


def _mixture(
    log_vocab: torch.Tensor, copied: torch.Tensor, gate: torch.Tensor, has_source: torch.Tensor
) -> torch.Tensor:
    """log(σ(gate)·p_vocab + σ(−gate)·p_copy), elementwise and broadcasting: the copy head's
    output distribution, for one target token (the loss) or the whole vocabulary (decoding).
    Where ``has_source`` is False (nothing earlier to point at) the vocabulary alone counts."""
    mixed = torch.logaddexp(
        F.logsigmoid(gate) + log_vocab, F.logsigmoid(-gate) + copied.clamp_min(1e-30).log()
    )
    return torch.where(has_source, mixed, log_vocab)


class NanoLogic(nn.Module):
    rope_cos: torch.Tensor  # [max_seq_len, rope_dim/2] float32 buffer (not saved)
    rope_sin: torch.Tensor

    def __init__(self, cfg: NanoLogicConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.head_scale = nn.Parameter(torch.ones(())) if cfg.head_scale else None
        if cfg.copy_head:
            self.copy_query = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
            self.copy_key = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
            self.copy_gate = nn.Linear(cfg.hidden_size, 1)
        cos, sin = rope_cache(
            cfg.head_dim // 2 if cfg.differential_attention else cfg.head_dim, cfg.max_seq_len, cfg.rope_theta
        )
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.gradient_checkpointing = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        cfg = self.config
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=cfg.init_std)
        for block in self.layers:
            assert isinstance(block, Block)
            for proj in (block.self_attn.o_proj, block.mlp.down_proj):
                nn.init.normal_(proj.weight, std=cfg.init_std / math.sqrt(2 * cfg.num_layers))
        # With the √d scale, std 1/√d gives unit-variance inputs and, tied, unit-scale logits at
        # init (the original's N(0,1)·√d gave logits of std ≈ 23 and a soft-cap binding from step 0).
        std = 1.0 / math.sqrt(cfg.hidden_size) if cfg.embed_scale else cfg.init_std
        nn.init.normal_(self.embed_tokens.weight, std=std)
        if cfg.copy_head:
            nn.init.zeros_(self.copy_gate.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def logits_from_hidden(self, h: torch.Tensor) -> torch.Tensor:
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        if self.head_scale is not None:
            # (s·h)Wᵀ = s·(hWᵀ): scaling the d-wide hidden state instead of the V-wide logits
            # made the CPU training step 8 % faster at d = 192, V = 2.3 k.
            h = h * self.head_scale
        logits = F.linear(h, weight)
        if self.config.final_softcap > 0:
            cap = self.config.final_softcap
            logits = cap * torch.tanh(logits / cap)
        return logits

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: list | None = None,
        use_cache: bool = False,
        label_smoothing: float = 0.0,
        logits_to_keep: int = 0,
    ) -> dict:
        """Run the decoder; with ``labels``, also the loss.

        Args:
            input_ids: token ids, int64 [B, T].
            labels: int64 [B, T], ``labels[b, t]`` is the target of position t (-100 = ignored); the
                head only runs on the positions that have a target, which halves the cost when
                only the output is trained.
            position_ids: int64 [B, T] RoPE positions (default: continuing the cache).
            attention_mask: bool [B, Tq, Tk] or [B, 1, Tq, Tk], True = may attend (Tk counts the
                cached positions too); None = causal.
            past_key_values: the ``past_key_values`` of the previous call: one (k, v) pair per
                layer, each [B, num_kv_heads, Tp, head_dim] in the compute dtype (k is
                [B, 2·num_kv_heads, Tp, head_dim/2] with differential attention), then, with the
                copy head, its keys [B, Tp, d] and token ids int64 [B, Tp].
            use_cache: return ``past_key_values`` for the next call.
            label_smoothing: cross-entropy smoothing in [0, 1) (not with the copy head).
            logits_to_keep: without labels, compute the logits of the last this many positions
                only (0: all; decoding needs the last one, and the prompt's [B, T, V] logits and
                copy mixture cost more than its decoder layers).

        Returns:
            A dict with ``past_key_values`` (a list as the argument describes, or None without
            ``use_cache``) and, without labels, ``logits`` [B, T, V] (T = ``logits_to_keep`` when
            set) in the compute dtype (with the copy head, float32 log-probabilities of the mixed
            distribution, which rank tokens the same way); with labels, ``loss`` (float32 scalar: cross-entropy in nats per target
            token plus the weighted z-loss, with its graph), ``ce_loss`` and ``z_loss`` (detached
            float32 scalars) and ``n_targets`` (an int).

        Raises:
            ValueError: a position beyond ``max_seq_len``, or label smoothing with the copy head.
        """
        cfg = self.config
        B, T = input_ids.shape
        past_len = past_key_values[0][0].size(2) if past_key_values else 0
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + T, device=input_ids.device).expand(B, T)
        # Reading the maximum synchronises and breaks a torch.compile graph; compiled training
        # batches were checked by the data pipeline (and an index past the table still fails).
        if not torch.compiler.is_compiling() and int(position_ids.max()) >= cfg.max_seq_len:
            raise ValueError(f"sequence longer than max_seq_len={cfg.max_seq_len}")
        cos = self.rope_cos[position_ids].unsqueeze(1)
        sin = self.rope_sin[position_ids].unsqueeze(1)
        mask = (
            attention_mask.unsqueeze(1)
            if attention_mask is not None and attention_mask.dim() == 3
            else attention_mask
        )
        x = self.embed_tokens(input_ids)
        if cfg.embed_scale:
            x = x * math.sqrt(cfg.hidden_size)
        presents = []
        for i, block in enumerate(self.layers):
            past = past_key_values[i] if past_key_values else None
            if self.gradient_checkpointing and self.training:
                x, present = checkpoint(block, x, cos, sin, mask, past, use_reentrant=False)
            else:
                x, present = block(x, cos, sin, mask, past)
            presents.append(present)
        h = self.norm(x)
        pointer = None
        if cfg.copy_head:
            past_copy = past_key_values[cfg.num_layers] if past_key_values else None
            pointer = self._pointer(h, input_ids, mask, past_copy)
            presents.append(pointer[2])
        out: dict = {"past_key_values": presents if use_cache else None}
        if labels is None:
            if logits_to_keep > 0:
                h = h[:, -logits_to_keep:]
                if pointer is not None:
                    pointer = (pointer[0][:, -logits_to_keep:], *pointer[1:])
            logits = self.logits_from_hidden(h)
            out["logits"] = logits if pointer is None else self.copy_log_probs(logits, h, *pointer[:2])
            return out
        out.update(self._loss(h, labels, pointer, label_smoothing))
        return out

    def _loss(
        self,
        h: torch.Tensor,
        labels: torch.Tensor,
        pointer: tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None,
        label_smoothing: float,
    ) -> dict:
        """The loss of :meth:`forward` from the final hidden states.

        Args:
            h: final hidden states (after the last norm), [B, T, d].
            labels: int64 [B, T] targets, -100 = ignored; the head runs on the other positions only.
            pointer: the copy head's :meth:`_pointer` output, or None without the copy head.
            label_smoothing: cross-entropy smoothing in [0, 1) (not with the copy head).

        Returns:
            ``loss``, ``ce_loss``, ``z_loss`` and ``n_targets``, as :meth:`forward` describes them.

        Raises:
            ValueError: label smoothing with the copy head.
        """
        cfg = self.config
        # One index of the target positions, then index_select: each boolean-mask index is a
        # data-dependent shape, where torch.compile splits the graph (seven splits before).
        rows = (labels != -100).flatten().nonzero().squeeze(1)  # [N] flat positions with a target
        h = h.flatten(0, 1).index_select(0, rows)  # [N, d]
        logits = self.logits_from_hidden(h).float()
        targets = labels.flatten().index_select(0, rows)
        # eager and compiled alike: Inductor's own fusion of torch.logsumexp was 0.93x as fast
        lse, target_logit = _LogPartition.apply(logits, targets)
        target_log_prob = target_logit - lse
        if pointer is not None:
            if label_smoothing > 0:
                raise ValueError("label smoothing is not supported with the copy head")
            weights, source_ids, _ = pointer
            batch_of_row = torch.div(rows, weights.size(1), rounding_mode="floor")
            weights = weights.flatten(0, 1).index_select(0, rows)  # [N, Tk]
            sources = source_ids.index_select(0, batch_of_row)  # [N, Tk]: the tokens each key proposes
            copied = (weights * (sources == targets[:, None])).sum(-1)
            gate = self.copy_gate(h).float().squeeze(-1)
            ce = -_mixture(target_log_prob, copied, gate, weights.sum(-1) > 0).mean()
        elif label_smoothing > 0:
            ce = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
        else:
            ce = -target_log_prob.mean()  # F.cross_entropy's value, from the log-probabilities above
        z = lse.pow(2).mean() if cfg.z_loss > 0 else logits.new_zeros(())
        return dict(loss=ce + cfg.z_loss * z, ce_loss=ce.detach(), z_loss=z.detach(), n_targets=rows.numel())

    def _pointer(
        self,
        h: torch.Tensor,
        input_ids: torch.Tensor,
        mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The copy head's pointer: position t attends to an earlier position j < t of its own
        document and proposes the token that followed j, ``x[j + 1]``, when that token is part of
        the document's prompt (before ``copy_until_token_id``).

        This is the induction-head form of copying (Olsson et al. 2022): the query at "… p: Juan"
        finds the earlier "Juan" of the sentence by content and proposes the word after it. The
        keys are projections of the final hidden states (as the pointer sentinel mixture model,
        Merity et al. 2016, keys on its RNN states).

        Args:
            h: final hidden states of the new positions, [B, T, d].
            input_ids: their token ids, int64 [B, T].
            mask: the decoder's attention mask [B, 1, T, Tk] (True = may attend) or None (causal).
            past: (keys [B, Tp, d], token ids int64 [B, Tp]) of the earlier positions, or None.

        Returns:
            (weights float32 [B, T, Tk], proposed token ids int64 [B, Tk], the new (keys, ids)).
            A row with no earlier position (a document's first token) is all zeros, and there the
            vocabulary alone gives the distribution.
        """
        keys = self.copy_key(h)
        ids = input_ids
        if past is not None:
            keys = torch.cat([past[0], keys], dim=1)
            ids = torch.cat([past[1], ids], dim=1)
        T, Tk = h.size(1), keys.size(1)
        scores = (self.copy_query(h) @ keys.transpose(1, 2)).float() / math.sqrt(h.size(-1))
        query_pos = torch.arange(Tk - T, Tk, device=h.device)
        allowed = torch.arange(Tk, device=h.device)[None, :] < query_pos[:, None]  # [T, Tk]
        if mask is not None:
            allowed = allowed & mask[:, 0]
        allowed = allowed.expand_as(scores)
        if self.config.copy_until_token_id >= 0:
            # Only the prompt is a source: pointing into its own output let the head loop on what
            # it had just written ("llovivivivi…"). A position is in a prompt while its document
            # (counted by <|bos|>) has not reached its <|output|> yet; packed rows hold several.
            documents = (ids == self.config.bos_token_id).cumsum(1)
            outputs = (ids == self.config.copy_until_token_id).cumsum(1)
            in_prompt = outputs < documents
            source = torch.cat([in_prompt[:, 1:], torch.zeros_like(in_prompt[:, :1])], dim=1)
            allowed = allowed & source[:, None, :]
        # A finite fill, not -inf, keeps empty rows NaN-free; they are zeroed after the softmax.
        weights = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min).softmax(-1) * allowed
        # The key at j proposes x[j + 1]; the newest key's next token is not known yet (never allowed).
        proposed = torch.cat([ids[:, 1:], torch.zeros_like(ids[:, :1])], dim=1)
        return weights, proposed, (keys, ids)

    def copy_log_probs(
        self, logits: torch.Tensor, h: torch.Tensor, weights: torch.Tensor, proposed: torch.Tensor
    ) -> torch.Tensor:
        """log(g · softmax(logits) + (1 − g) · copy), the pointer-generator mixture (See et al. 2017).

        Args:
            logits: vocabulary logits [B, T, V]; h: final hidden states [B, T, d] (for the gate g);
            weights, proposed: the pointer of :meth:`_pointer`.

        Returns:
            float32 [B, T, V] log-probabilities.
        """
        gate = self.copy_gate(h).float()
        copy = torch.zeros(logits.shape, dtype=torch.float32, device=logits.device)
        copy.scatter_add_(2, proposed.unsqueeze(1).expand_as(weights), weights)
        return _mixture(logits.float().log_softmax(-1), copy, gate, weights.sum(-1, keepdim=True) > 0)

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        *,
        pad_id: int = 0,
        stop_ids: tuple[int, ...] = (),
        use_cache: bool = True,
        processors: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> list[list[int]]:
        """Greedy decoding of a batch of prompts of any lengths (left-padded), with a KV cache.

        Args:
            prompts: B token-id lists, of any lengths (each at least one token); they are
                left-padded into one int64 [B, T0] batch on the model's device.
            max_new_tokens: the most tokens generated per row; T0 plus it must stay within
                ``max_seq_len``.
            pad_id: the token id of the left padding (masked out, never attended to).
            stop_ids: token ids that end a row (kept as its last token).
            use_cache: decode with the KV cache (else each step re-runs the whole sequence; same
                tokens, for checking the cache).
            processors: ``processors(sequence int64 [B, T0 + t], logits float32 [B, V]) -> logits``, run
                before each argmax (e.g. a grammar mask, :mod:`nanologic.grammar`); ``sequence``
                starts with the padded prompts.

        Returns:
            Only the new tokens of each row, as B lists of ints, each up to and including its
            first stop token.

        Raises:
            ValueError: a position beyond ``max_seq_len`` (from :meth:`forward`).
        """
        from lm_shared.sampling import generate as lm_generate

        device = self.embed_tokens.weight.device
        T0 = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), T0), pad_id, dtype=torch.long, device=device)
        valid = torch.zeros(len(prompts), T0, dtype=torch.bool, device=device)
        for i, p in enumerate(prompts):
            ids[i, T0 - len(p) :] = torch.tensor(p, device=device)
            valid[i, T0 - len(p) :] = True
        start = T0 - valid.sum(1)  # first real position of each row

        def step(input_ids: torch.Tensor, cache: list | None) -> tuple[torch.Tensor, list]:
            T = input_ids.size(1)
            past_len = cache[0][0].size(2) if cache else 0
            key_pos = torch.arange(past_len + T, device=device)
            query_pos = torch.arange(past_len, past_len + T, device=device)
            # Keys must be real (not left padding) and not in the future.
            mask = (key_pos[None, None, :] >= start[:, None, None]) & (
                key_pos[None, None, :] <= query_pos[None, :, None]
            )
            # Padding queries see themselves, so no softmax row is empty (NaN would leak through V).
            mask = mask | (key_pos[None, None, :] == query_pos[None, :, None])
            positions = (query_pos[None, :] - start[:, None]).clamp(min=0)
            out = self(
                input_ids,
                position_ids=positions,
                attention_mask=mask,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            return out["logits"], out["past_key_values"]

        def step_nocache(input_ids: torch.Tensor, cache: None) -> tuple[torch.Tensor, None]:
            logits, _ = step(input_ids, None)
            return logits, None

        seq = lm_generate(
            step if use_cache else step_nocache,
            ids,
            max_new_tokens,
            stop_token_ids=stop_ids,
            use_cache=use_cache,
            processors=processors,
        )
        results = []
        for row in seq[:, T0:].tolist():
            for j, tok in enumerate(row):
                if tok in stop_ids:
                    row = row[: j + 1]
                    break
            results.append(row)
        return results

    @torch.no_grad()
    def beam_search(
        self,
        prompt: list[int],
        max_new_tokens: int,
        beam_size: int,
        *,
        stop_ids: tuple[int, ...],
        mask: BeamMask | None = None,
        length_penalty: float = 1.0,
    ) -> list[tuple[list[int], float]]:
        """Beam search over one prompt's answers, with a KV cache (beams are the batch).

        Each step extends every live beam by the ``beam_size`` best tokens of the model's
        log-probabilities (those ``mask`` allows) and keeps the ``beam_size`` best continuations;
        a continuation ending in a stop token is a finished hypothesis. The search ends when
        ``beam_size`` hypotheses are finished (they cannot be bettered without a length bonus,
        ``early_stopping=True`` in transformers' terms), no beam is left, or after
        ``max_new_tokens``.

        Args:
            prompt: the prompt's token ids (at least one).
            max_new_tokens: the most tokens of an answer; len(prompt) plus it must stay within
                ``max_seq_len``.
            beam_size: beams kept per step (1 is greedy decoding).
            stop_ids: token ids that end an answer (kept as its last token).
            mask: the constraint, e.g. :class:`nanologic.grammar.BeamGrammarMask`: ``mask(scores
                float32 [beams, V]) -> scores`` with forbidden tokens at -inf, and
                ``mask.advance(parents, tokens)`` after each step.
            length_penalty: a hypothesis' score is its summed log-probability divided by
                ``length ** length_penalty`` (Wu et al. 2016's normalisation; 0 = the plain sum,
                which favours short answers).

        Returns:
            The finished hypotheses (or, if none finished, the live beams), best first: each a pair
            (the answer's token ids, its score).

        Raises:
            ValueError: ``beam_size < 1``, or a position beyond ``max_seq_len`` (from :meth:`forward`).
        """
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        device = self.embed_tokens.weight.device
        out = self(torch.tensor([prompt], device=device), use_cache=True, logits_to_keep=1)
        cache, logits = out["past_key_values"], out["logits"][:, -1]
        beams: list[list[int]] = [[]]
        sums = torch.zeros(1, device=device)
        finished: list[tuple[list[int], float]] = []
        for _ in range(max_new_tokens):
            log_probs = logits.float().log_softmax(-1)  # idempotent on the copy head's log-probs
            if mask is not None:
                log_probs = mask(log_probs)
            totals = (sums[:, None] + log_probs).view(-1)
            values, indices = totals.topk(min(2 * beam_size, totals.numel()))
            parents, tokens, kept = [], [], []
            for value, index in zip(values.tolist(), indices.tolist()):
                if value == float("-inf"):
                    break
                parent, token = divmod(index, log_probs.size(1))
                answer = beams[parent] + [token]
                if token in stop_ids:
                    finished.append((answer, value / len(answer) ** length_penalty))
                else:
                    parents.append(parent)
                    tokens.append(token)
                    kept.append(value)
                if len(kept) == beam_size:
                    break
            if len(finished) >= beam_size or not kept:
                break
            beams = [beams[p] + [t] for p, t in zip(parents, tokens)]
            sums = torch.tensor(kept, device=device)
            index = torch.tensor(parents, device=device)
            cache = [tuple(x.index_select(0, index) for x in entry) for entry in cache]
            if mask is not None:
                mask.advance(parents, tokens)
            out = self(torch.tensor(tokens, device=device)[:, None], past_key_values=cache, use_cache=True)
            cache, logits = out["past_key_values"], out["logits"][:, -1]
        if not finished:
            finished = [(b, s / max(len(b), 1) ** length_penalty) for b, s in zip(beams, sums.tolist())]
        return sorted(finished, key=lambda hypothesis: -hypothesis[1])


def build_config(preset: str, vocab_size: int, **overrides) -> NanoLogicConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    # A model built now learns today's sequence format, which writes the polarity marks.
    return NanoLogicConfig(vocab_size=vocab_size, **{"polarity_marks": True, **PRESETS[preset], **overrides})
