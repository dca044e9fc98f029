"""Tormented-BERT: a hybrid, looped, bidirectional masked-LM encoder, in one file.

Read top to bottom: configuration, the building blocks (BitLinear, norms, HoPE, the four token mixers,
the Titans memory, MoE), the looped encoder, and the Hugging Face wrappers. The file imports only
torch and transformers so that ``save_pretrained`` can copy it next to the weights and
``AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True)`` can load it anywhere.

Every mixer is bidirectional and takes a padding mask (``attention_mask``: 1 = token, 0 = pad):
a real token's output never depends on what sits in padded positions.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers import initialization as hf_init
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput
from transformers.utils import ModelOutput

LAYER_TYPES = ("retnet", "titan_attn", "mamba", "ode")
NORM_TYPES = ("layernorm", "dyt", "dynamic_tanh", "derf")
ODE_SOLVERS = ("rk4", "euler")
MAMBA_SCANS = ("sequential", "parallel")
# The original's "stable" pattern, used by Mini and by the original's trained run.
STABLE_PATTERN = ("retnet", "titan_attn", "retnet", "mamba", "titan_attn", "ode")
MODEL_FAMILIES = ("frankenstein", "mini")


class ConfigError(ValueError):
    """A model configuration that cannot be built (names the field and what was expected)."""


# ==================================================================================== configuration
@dataclass
class UltraConfig:
    """Architecture of a Tormented-BERT encoder. ``UltraConfig()`` is the original's trained size."""

    model_family: str = "frankenstein"  # "frankenstein" | "mini"; checked when resuming a checkpoint
    vocab_size: int = 50_000  # tokenizer vocabulary (the original: SentencePiece BPE, 50k)
    hidden_size: int = 1024  # residual stream width
    num_layers: int = 12  # physical layers; the stack is run num_loops times with shared weights
    num_loops: int = 2  # logical depth = num_layers * num_loops (Universal-Transformer style)
    num_heads: int = 16  # heads of titan_attn and of the ODE vector field
    retention_heads: int = 8  # heads of retnet (one decay rate per head)
    layer_pattern: tuple[str, ...] = STABLE_PATTERN  # layer types, repeated to fill num_layers
    norm_type: str = "dynamic_tanh"  # "layernorm" | "dyt" | "dynamic_tanh" (the original's) | "derf"
    use_bitnet: bool = True  # BitLinear b1.58 projections (False: nn.Linear)
    use_factorized_embedding: bool = False  # vocab -> embedding_size -> hidden (ALBERT)
    embedding_size: int = 128  # factorised embedding width (ignored when not factorised)
    embedding_conv: bool = True  # depthwise-free Conv1d(k=3) before the embedding projection
    use_moe: bool = True  # mixture-of-experts FFN (False: one dense FFN)
    num_experts: int = 4  # experts per MoE layer
    top_k_experts: int = 2  # experts per token, weights renormalised over the chosen k
    ffn_multiplier: int = 2  # FFN (and expert) inner width = ffn_multiplier * hidden_size
    moe_aux_loss_coef: float = 0.01  # Switch load-balancing loss weight
    router_z_loss_coef: float = 0.001  # ST-MoE router z-loss weight
    ode_solver: str = "rk4"  # "rk4" (classic 1/6-1/3-1/3-1/6) | "euler"
    ode_steps: int = 4  # fixed solver steps over t in [0, 1]
    mamba_state_size: int = 16  # N, the SSM state per channel
    mamba_expand: int = 2  # d_inner = mamba_expand * hidden_size
    mamba_conv_kernel: int = 4  # causal depthwise conv before the scan
    mamba_scan: str = "sequential"  # "sequential" (low memory) | "parallel" (log-depth, more memory)
    use_hope: bool = True  # HoPE on titan_attn's q and k (False: no positional signal there)
    hope_base: float = 10_000.0  # theta_i = hope_base ** (-2i / head_dim), as RoPE
    hope_damping: float = 1.05  # theta' of Dai et al.; must exceed max theta_i = 1 for decay
    use_titan_memory: bool = False  # add the gated delta-rule memory branch to titan_attn
    titan_memory_chunk: int = 32  # chunk length of the chunkwise-parallel delta rule
    dropout: float = 0.0  # residual dropout (Cramming and ModernBERT pre-train without it)
    max_position_embeddings: int = 512  # longest sequence the tokenizer pipeline will produce
    initializer_range: float = 0.02  # std of the normal init of linear and embedding weights
    norm_eps: float = 1e-6  # epsilon of LayerNorm, RMS and per-token standardisation

    def __post_init__(self) -> None:
        self.layer_pattern = tuple(self.layer_pattern)
        positive = (
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_loops",
            "num_heads",
            "retention_heads",
            "embedding_size",
            "num_experts",
            "top_k_experts",
            "ffn_multiplier",
            "ode_steps",
            "mamba_state_size",
            "mamba_expand",
            "mamba_conv_kernel",
            "titan_memory_chunk",
            "max_position_embeddings",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.model_family not in MODEL_FAMILIES:
            raise ConfigError(f"model_family must be one of {MODEL_FAMILIES}, got {self.model_family!r}")
        if not self.layer_pattern:
            raise ConfigError("layer_pattern must name at least one layer type")
        for i, kind in enumerate(self.layer_pattern):
            if kind not in LAYER_TYPES:
                raise ConfigError(
                    f"layer_pattern[{i}] is {kind!r}; known layer types: {', '.join(LAYER_TYPES)}"
                )
        if self.norm_type not in NORM_TYPES:
            raise ConfigError(f"norm_type must be one of {', '.join(NORM_TYPES)}, got {self.norm_type!r}")
        if self.ode_solver not in ODE_SOLVERS:
            raise ConfigError(f"ode_solver must be one of {ODE_SOLVERS}, got {self.ode_solver!r}")
        if self.mamba_scan not in MAMBA_SCANS:
            raise ConfigError(f"mamba_scan must be one of {MAMBA_SCANS}, got {self.mamba_scan!r}")
        for name in ("num_heads", "retention_heads"):
            heads = getattr(self, name)
            if self.hidden_size % heads:
                raise ConfigError(f"hidden_size={self.hidden_size} is not divisible by {name}={heads}")
        uses_hope = "titan_attn" in self.layer_pattern or "ode" in self.layer_pattern
        if uses_hope and (self.hidden_size // self.num_heads) % 2:
            raise ConfigError(
                f"head dim hidden_size/num_heads = {self.hidden_size // self.num_heads} must be even "
                "(HoPE acts on pairs of dimensions)"
            )
        if (self.hidden_size // self.retention_heads) % 2:
            raise ConfigError("head dim hidden_size/retention_heads must be even (RetNet rotates pairs)")
        if self.top_k_experts > self.num_experts:
            raise ConfigError(f"top_k_experts={self.top_k_experts} exceeds num_experts={self.num_experts}")
        if not self.hope_damping > 1.0:
            raise ConfigError(
                f"hope_damping must be > 1 (the largest HoPE frequency) for decay, got {self.hope_damping}"
            )
        if self.hope_base <= 1.0:
            raise ConfigError(f"hope_base must be > 1, got {self.hope_base}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("moe_aux_loss_coef", "router_z_loss_coef"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")

    def layer_types(self) -> list[str]:
        """The type of each physical layer: the pattern repeated (and cut) to num_layers."""
        return [self.layer_pattern[i % len(self.layer_pattern)] for i in range(self.num_layers)]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["layer_pattern"] = list(self.layer_pattern)
        return data

    def replace(self, **changes: Any) -> UltraConfig:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ presets
    @classmethod
    def frankenstein(cls, **overrides: Any) -> UltraConfig:
        """The original's trained size (main.py): 1024 wide, 12 layers x 2 loops, 4 experts."""
        return cls(**overrides)

    @classmethod
    def frankenstein_cpu(cls, **overrides: Any) -> UltraConfig:
        """The Frankenstein design at CPU size, in the original's proportion to Mini.

        The original's Frankenstein is 2.7x wider and 2x deeper than its Mini (1024 x 12 vs
        384 x 6); this preset is 1.5x wider and 2x deeper than ``mini_cpu`` (192 x 12 vs 128 x 6),
        with the same pattern, loops and CPU-sized Mamba/ODE settings, so Mini stays the cheaper
        model at CPU size as it is at full size.
        """
        base = dict(
            vocab_size=2048,
            hidden_size=192,
            num_layers=12,
            num_loops=2,
            num_heads=6,
            retention_heads=6,
            ode_steps=1,  # one RK4 step = four attention evaluations
            mamba_expand=1,
            mamba_state_size=8,
            max_position_embeddings=128,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def mini(cls, **overrides: Any) -> UltraConfig:
        """The original's Tormented-BERT-Mini: 384 wide, 6 layers x 2 loops, Derf, factorised embedding."""
        base = dict(
            model_family="mini",
            hidden_size=384,
            num_layers=6,
            num_loops=2,
            num_heads=6,
            retention_heads=6,
            layer_pattern=STABLE_PATTERN,
            norm_type="derf",
            use_factorized_embedding=True,
            embedding_size=128,
            embedding_conv=True,
            ode_steps=2,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def mini_cpu(cls, **overrides: Any) -> UltraConfig:
        """Mini's design at CPU size (the default of ``train``)."""
        base = dict(
            vocab_size=2048,
            hidden_size=128,
            num_heads=4,
            retention_heads=4,
            embedding_size=64,
            ode_steps=1,  # one RK4 step = four attention evaluations
            mamba_expand=1,
            mamba_state_size=8,
            max_position_embeddings=128,
        )
        return cls.mini(**{**base, **overrides})


PRESETS = {
    "frankenstein": UltraConfig.frankenstein,
    "frankenstein-cpu": UltraConfig.frankenstein_cpu,
    "mini": UltraConfig.mini,
    "mini-cpu": UltraConfig.mini_cpu,
}


# ==================================================================================== BitLinear
class BitLinear(nn.Linear):
    """BitNet b1.58 linear layer (Ma et al., arXiv:2402.17764, and the training-tips note).

    Input: RMS-normalised (no affine), then per-token absmax int8 fake-quantisation, both in float32
    whatever the input dtype: in fp16 the normalisation's gradient overflows for small-norm tokens
    (``(mean x^2 + eps)^-1.5`` passes 65504 below a mean square of about 1e-3), which made every
    fp16 step non-finite. Weights: absmean ternary {-1, 0, 1} * mean|W|. Both use a straight-through
    estimator, so the full-precision latent weights receive the gradients.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, eps: float = 1e-5) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.eps = eps

    def quantized_weight(self) -> torch.Tensor:
        w = self.weight
        scale = w.abs().mean().clamp(min=self.eps)
        return (w / scale).round().clamp(-1, 1) * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        act_scale = 127.0 / x.abs().amax(-1, keepdim=True).clamp(min=self.eps)
        x_q = (x * act_scale).round().clamp(-128, 127) / act_scale
        x = x + (x_q - x).detach()
        w = self.weight + (self.quantized_weight() - self.weight).detach()
        return F.linear(x.to(dtype), w, self.bias)


def make_linear(in_features: int, out_features: int, use_bitnet: bool, bias: bool = False) -> nn.Linear:
    """A projection ``[..., in_features] -> [..., out_features]``.

    Args:
        in_features: input width.
        out_features: output width.
        use_bitnet: a :class:`BitLinear` (ternary weights, 8-bit activations in the forward)
            instead of an ``nn.Linear``.
        bias: add a learned bias.

    Returns:
        The layer (a :class:`BitLinear` is an ``nn.Linear`` subclass).
    """
    return (
        BitLinear(in_features, out_features, bias=bias)
        if use_bitnet
        else nn.Linear(in_features, out_features, bias=bias)
    )


# ==================================================================================== norms
class DyT(nn.Module):
    """Dynamic Tanh (Zhu et al., arXiv:2503.10622): gamma * tanh(alpha x) + beta, scalar alpha0 = 0.5."""

    def __init__(self, dim: int, alpha_init: float = 0.5) -> None:
        super().__init__()
        self.alpha_init = alpha_init
        self.alpha = nn.Parameter(torch.full((1,), alpha_init))
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def reset_parameters(self) -> None:
        hf_init.constant_(self.alpha, self.alpha_init)
        hf_init.ones_(self.weight)
        hf_init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * torch.tanh(self.alpha * x) + self.bias


class Derf(nn.Module):
    """Dynamic erf (Chen et al., arXiv:2512.10938): gamma * erf(alpha x + s) + beta, alpha0 = 0.5, s0 = 0."""

    def __init__(self, dim: int, alpha_init: float = 0.5) -> None:
        super().__init__()
        self.alpha_init = alpha_init
        self.alpha = nn.Parameter(torch.full((1,), alpha_init))
        self.shift = nn.Parameter(torch.zeros(1))
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def reset_parameters(self) -> None:
        hf_init.constant_(self.alpha, self.alpha_init)
        hf_init.zeros_(self.shift)
        hf_init.ones_(self.weight)
        hf_init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * torch.erf(self.alpha * x + self.shift) + self.bias


class DynamicTanhNorm(nn.Module):
    """The original's ``dynamic_tanh``: per-token standardisation, then tanh(alpha * x_hat + beta).

    Per-channel alpha = 1 and beta = 0, no output affine. It is not DyT (it still computes token
    statistics); kept so the ablation can compare it with DyT and Derf.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.alpha = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def reset_parameters(self) -> None:
        hf_init.ones_(self.alpha)
        hf_init.zeros_(self.beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True, unbiased=False)
        x_hat = (x - mean) * torch.rsqrt(var + self.eps)
        return torch.tanh(self.alpha * x_hat + self.beta)


def build_norm(config: UltraConfig, dim: int | None = None) -> nn.Module:
    """The normalisation layer ``config.norm_type`` names, over the last dimension.

    Args:
        config: gives ``norm_type`` (``layernorm``, ``dyt``, ``dynamic_tanh`` or ``derf``) and
            ``norm_eps``.
        dim: the normalised width (default ``config.hidden_size``).

    Returns:
        A module mapping ``[..., dim]`` to ``[..., dim]`` in the input's dtype.

    Raises:
        ConfigError: an unknown ``norm_type``.
    """
    dim = dim or config.hidden_size
    if config.norm_type == "layernorm":
        return nn.LayerNorm(dim, eps=config.norm_eps)
    if config.norm_type == "dyt":
        return DyT(dim)
    if config.norm_type == "dynamic_tanh":
        return DynamicTanhNorm(dim, eps=config.norm_eps)
    if config.norm_type == "derf":
        return Derf(dim)
    raise ConfigError(f"unknown norm_type {config.norm_type!r}")


def rms_norm_heads(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-head RMS normalisation without affine: RetNet's GroupNorm with one group per head.

    Args:
        x: per-head values ``[..., head_dim]`` (any float dtype; the mean square is float32).
        eps: added to the mean square.

    Returns:
        ``x / rms(x)`` over the last dimension, same shape and dtype.
    """
    return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps).to(x.dtype)


def key_padding_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive attention bias that hides padded keys.

    Args:
        attention_mask: ``[B, L]`` (int or bool), 1 for tokens and 0 for pads.
        dtype: the dtype of the attention scores.

    Returns:
        ``[B, 1, 1, L]`` in ``dtype``: 0 for tokens, ``dtype``'s most negative finite value for pads.
    """
    bias = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device)
    bias = bias.masked_fill(attention_mask == 0, torch.finfo(dtype).min)
    return bias[:, None, None, :]


# ==================================================================================== HoPE
class HoPE(nn.Module):
    """Hyperbolic rotary position scores (Dai et al., arXiv:2509.05218), symmetric for an encoder.

    The paper boosts q_m by e^{-m theta'} B(m theta_i) and k_n by e^{n theta'} B(-n theta_i), where
    B(phi) = [[cosh, sinh], [sinh, cosh]], so that q~_m . k~_n = e^{-(m-n) theta'} q_m^T B((m-n) theta_i) k_n.
    Materialising e^{+-n theta'} overflows past a few hundred tokens, and the causal form grows for
    n > m. We compute the same relative kernel directly in the log domain with the damping on |m-n|:

        B(d theta) e^{-|d| theta'} = 1/2 [e^{d theta - |d| theta'} P+ + e^{-d theta - |d| theta'} P-]

    with the light-cone split q.B k = 1/2 [(q1+q2)(k1+k2) e^{x} + (q1-q2)(k1-k2) e^{-x}]. Both
    exponents are <= -(theta' - theta_i)|d| <= 0, so every factor lies in (0, 1]: scores are
    relative (shift invariant), finite at any length and decay monotonically with |m-n| in both
    directions.

    Computing every (m, n, i) factor (:meth:`reference_scores`) is O(L^2 * head_dim) elementwise
    work, ~16x plain attention. :meth:`forward` gets the same scores from matmuls: on one side of
    the diagonal (m >= n) each exponent is (m - n) r_i with a rate r_i <= 0, which splits as
    (m - c) r_i + (c - n) r_i around any anchor n <= c <= m, so with c the start of m's block of
    ``block_size`` positions, scores of a query block against an earlier key block are
    (q_m e^{(m-c) r}) diag(e^{(c-c') r}) (k_n e^{(c'-n) r})^T (c' the end of the key block): every
    factor in (0, 1]. Inside a diagonal block the key factor is at most e^{block_size * max|r|}
    (e^{33} for 16 and damping 1.05), within float32's range, so the scores are computed in
    float32 whatever the autocast dtype. m < n is the mirror image. Equal to the reference within
    float32 rounding (tested); O(L^2 * head_dim) multiply-adds in batched matmuls.
    """

    def __init__(
        self,
        head_dim: int,
        base: float = 10_000.0,
        damping: float = 1.05,
        pair_chunk: int = 8,
        block_size: int = 16,
    ) -> None:
        super().__init__()
        if head_dim % 2:
            raise ConfigError(f"HoPE needs an even head dim, got {head_dim}")
        self.head_dim = head_dim
        self.base = base
        self.damping = damping
        self.pair_chunk = pair_chunk
        # Diagonal-block key factors reach e^{block_size (1 + damping)} (the largest rate is
        # theta_0 + theta' = 1 + damping): at most e^40, well inside float32.
        self.block_size = max(1, min(block_size, int(40.0 // (1.0 + damping))))

    def frequencies(self, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        i = torch.arange(self.head_dim // 2, device=device, dtype=dtype)
        return self.base ** (-2.0 * i / self.head_dim)

    def relative_factors(
        self, positions: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[L] positions -> (f_plus, f_minus), each [L, L, head_dim/2] in (0, 1/2], in ``dtype``."""
        theta = self.frequencies(positions.device, dtype)
        delta = (positions[:, None] - positions[None, :]).to(dtype)
        x = delta[..., None] * theta
        damp = delta.abs()[..., None] * self.damping
        return self._half_exp(x - damp), self._half_exp(-x - damp)

    @staticmethod
    def _half_exp(log_factor: torch.Tensor) -> torch.Tensor:
        # Factors below e^-30 (1e-13, under float32 resolution next to the e^0 diagonal) become
        # exact zeros: multiplied by small q.k they would produce denormals, ~100x slower on CPUs.
        return (0.5 * torch.exp(log_factor)).masked_fill(log_factor < -30.0, 0.0)

    def reference_scores(
        self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores from the explicit (m, n, i) factors: q, k [B, H, L, D] -> [B, H, L, L].

        ``positions`` ([L], any integers, default 0..L-1) are used as given; the definition
        :meth:`forward` is tested against. Factors below e^-30 are exact zeros."""
        length = q.shape[-2]
        if positions is None:
            positions = torch.arange(length, device=q.device)
        exact = torch.float64 if q.dtype == torch.float64 else torch.float32
        f_plus, f_minus = self.relative_factors(positions, exact)
        f_plus, f_minus = f_plus.to(q.dtype), f_minus.to(q.dtype)
        q1, q2 = q[..., 0::2], q[..., 1::2]
        k1, k2 = k[..., 0::2], k[..., 1::2]
        qp, qm, kp, km = q1 + q2, q1 - q2, k1 + k2, k1 - k2
        scores = q.new_zeros(*q.shape[:-1], length)
        for start in range(0, self.head_dim // 2, self.pair_chunk):
            sl = slice(start, start + self.pair_chunk)
            plus = qp[..., :, None, sl] * kp[..., None, :, sl]  # [B, H, L, L, chunk]
            minus = qm[..., :, None, sl] * km[..., None, :, sl]
            scores = scores + (plus * f_plus[..., sl] + minus * f_minus[..., sl]).sum(-1)
        return scores

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Unscaled scores: q, k [B, H, L, D] (any float dtype) -> [B, H, L, L] in q's dtype.

        Positions 0..L-1 (the default) take the blocked matmul form; explicit ``positions`` (shift
        tests, packed inputs) use :meth:`reference_scores`."""
        if positions is not None:
            return self.reference_scores(q, k, positions)
        work = torch.float64 if q.dtype == torch.float64 else torch.float32
        return _BlockedHoPEScores.apply(self, q.to(work), k.to(work)).to(q.dtype)

    def blocked_scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The blocked matmul form in q's dtype (float32 or float64): [B, H, L, D] -> [B, H, L, L]."""
        batch, heads, length, _ = q.shape
        b = self.block_size
        pad = (-length) % b
        qf, kf = F.pad(q, (0, 0, 0, pad)), F.pad(k, (0, 0, 0, pad))
        n_blocks = (length + pad) // b
        pairs = self.head_dim // 2
        theta = self.frequencies(q.device, q.dtype)
        q1, q2, k1, k2 = qf[..., 0::2], qf[..., 1::2], kf[..., 0::2], kf[..., 1::2]
        qp, qm, kp, km = (
            t.reshape(batch, heads, n_blocks, b, pairs) for t in (q1 + q2, q1 - q2, k1 + k2, k1 - k2)
        )
        # m >= n: exponents (m-n)(theta - theta') and -(m-n)(theta + theta'); m < n: the mirror.
        lower = self._one_side(qp, qm, kp, km, theta - self.damping, -(theta + self.damping), strict=False)
        upper = self._one_side(kp, km, qp, qm, -(theta + self.damping), theta - self.damping, strict=True)
        blocks = 0.5 * (lower + upper.transpose(2, 3).transpose(-1, -2))
        scores = blocks.permute(0, 1, 2, 4, 3, 5).reshape(batch, heads, length + pad, length + pad)
        return scores[..., :length, :length]

    def _one_side(
        self,
        ap: torch.Tensor,
        am: torch.Tensor,
        bp: torch.Tensor,
        bm: torch.Tensor,
        rate_p: torch.Tensor,
        rate_m: torch.Tensor,
        strict: bool,
    ) -> torch.Tensor:
        """Blocks [B, H, nb, nb, b, b] of sum_i ap_i(m) bp_i(n) e^{(m-n) rate_p_i} + am bm e^{(m-n) rate_m_i}
        for m >= n (m > n if ``strict``), zero elsewhere; inputs [B, H, nb, b, D/2], rates <= 0."""
        batch, heads, n_blocks, b, _ = ap.shape
        rate = torch.cat([rate_p, rate_m])
        offset = torch.arange(b, device=ap.device, dtype=rate.dtype)[:, None]
        query = torch.cat([ap, am], -1) * torch.exp(offset * rate)  # e^{(m - c) r}, in (0, 1]
        keys = torch.cat([bp, bm], -1)
        same_block = keys * torch.exp(-offset * rate)  # e^{(c - n) r}, in [1, e^{b max|r|})
        earlier_block = keys * torch.exp((b - offset) * rate)  # e^{(c' - n) r}, in (0, 1)
        tri = torch.ones(b, b, dtype=torch.bool, device=ap.device).tril(-1 if strict else 0)
        # diagonals[s] holds the blocks (I, I - s): built one block-diagonal at a time.
        diagonals = [(query @ same_block.transpose(-1, -2)).masked_fill(~tri, 0.0)]
        for gap in range(n_blocks - 1):
            between = torch.exp(b * gap * rate)  # e^{(c - c') r} for key blocks gap + 1 before
            band = (query[:, :, gap + 1 :] * between) @ earlier_block[:, :, : n_blocks - gap - 1].transpose(
                -1, -2
            )
            diagonals.append(torch.cat([band.new_zeros(batch, heads, gap + 1, b, b), band], dim=2))
        skew = torch.stack(diagonals, dim=3)
        i = torch.arange(n_blocks, device=ap.device)
        gaps = i[:, None] - i[None, :]
        rows = i[:, None].expand(n_blocks, n_blocks)
        return skew[:, :, rows, gaps.clamp(min=0)] * (gaps >= 0)[:, :, None, None]


class _BlockedHoPEScores(torch.autograd.Function):
    """:meth:`HoPE.blocked_scores` with autocast off in the backward pass as well.

    On the CPU the backward runs in the caller's thread, inside its autocast region (Lightning's
    training step), which would redo the backward matmuls in fp16, where the diagonal blocks' key
    factors (up to e^{33}) overflow. The backward recomputes the scores with autocast off and
    differentiates them (the forward keeps only q and k, like activation checkpointing).
    """

    @staticmethod
    def forward(ctx: Any, hope: HoPE, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        ctx.hope = hope
        ctx.save_for_backward(q, k)
        with torch.no_grad(), torch.autocast(q.device.type, enabled=False):
            return hope.blocked_scores(q, k)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, torch.Tensor]:
        q, k = ctx.saved_tensors
        with torch.enable_grad(), torch.autocast(q.device.type, enabled=False):
            q, k = q.detach().requires_grad_(), k.detach().requires_grad_()
            scores = ctx.hope.blocked_scores(q, k)
            grad_q, grad_k = torch.autograd.grad(scores, (q, k), grad.to(scores.dtype))
        return None, grad_q, grad_k


# ==================================================================================== Titans memory
def delta_rule_recurrent(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_alpha: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """Reference gated delta rule, one step at a time (used to test the chunked form).

    S_t = S_{t-1} alpha_t (I - beta_t k_t k_t^T) + beta_t v_t k_t^T, o_t = S_t q_t, with the state
    S ``[B, H, Dv, Dk]`` starting at zero.

    Args:
        q: queries ``[B, H, L, Dk]``.
        k: keys ``[B, H, L, Dk]`` (L2-normalised keeps the update contractive).
        v: values ``[B, H, L, Dv]``.
        log_alpha: log of the decay alpha_t in (0, 1] ``[B, H, L]`` (<= 0).
        beta: write strengths in [0, 1] ``[B, H, L]``.

    Returns:
        The outputs o_t ``[B, H, L, Dv]``, in the inputs' dtype.
    """
    b, h, length, dk = k.shape
    state = k.new_zeros(b, h, v.shape[-1], dk)
    outs = []
    for t in range(length):
        kt, vt, qt = k[:, :, t], v[:, :, t], q[:, :, t]
        alpha = log_alpha[:, :, t].exp()[..., None, None]
        bt = beta[:, :, t][..., None, None]
        state = (
            alpha * (state - bt * (state @ kt[..., None]) @ kt[..., None, :])
            + bt * vt[..., None] @ kt[..., None, :]
        )
        outs.append((state @ qt[..., None]).squeeze(-1))
    return torch.stack(outs, dim=2)


def delta_rule_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_alpha: torch.Tensor,
    beta: torch.Tensor,
    chunk: int = 32,
) -> torch.Tensor:
    """Chunkwise-parallel gated delta rule (Yang et al., arXiv:2412.06464, WY/UT form).

    Same maths as :func:`delta_rule_recurrent`; inside a chunk the updates become one triangular
    solve and matrix products, so the Python loop runs L/chunk times instead of L. Decays enter as
    exp of differences of cumulative log-decays (<= 0), never as e^{+sum}.

    Args:
        q: queries ``[B, H, L, Dk]``.
        k: keys ``[B, H, L, Dk]``.
        v: values ``[B, H, L, Dv]``.
        log_alpha: log-decays ``[B, H, L]`` (<= 0).
        beta: write strengths in [0, 1] ``[B, H, L]``.
        chunk: steps per chunk; L is padded to a multiple with steps that keep the state.

    Returns:
        The outputs ``[B, H, L, Dv]``, in the inputs' dtype (equal to the recurrent form's up to
        rounding).
    """
    b, h, length, dk = k.shape
    dv = v.shape[-1]
    pad = (-length) % chunk
    if pad:
        # Padded steps keep the state (alpha = 1, beta = 0) and are dropped from the output.
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        log_alpha, beta = F.pad(log_alpha, (0, pad)), F.pad(beta, (0, pad))
    n = (length + pad) // chunk
    q, k, v = (t.reshape(b, h, n, chunk, t.shape[-1]) for t in (q, k, v))
    log_alpha = log_alpha.reshape(b, h, n, chunk)
    beta = beta.reshape(b, h, n, chunk)

    g = log_alpha.cumsum(-1)  # cumulative log decay inside each chunk
    lower = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    decay = torch.exp((g[..., :, None] - g[..., None, :]).masked_fill(~lower, -float("inf")))
    k_beta = k * beta[..., None]
    v_beta = v * beta[..., None]
    strict = ((k_beta @ k.transpose(-1, -2)) * decay).tril(-1)
    eye = torch.eye(chunk, dtype=q.dtype, device=q.device)
    # T = (I + strictly-lower(diag(beta) K K^T * decay))^{-1}: the UT transform of the chunk.
    transform = torch.linalg.solve_triangular(
        eye + strict, eye.expand_as(strict), upper=False, unitriangular=True
    )
    u = transform @ v_beta  # pseudo-values
    w = transform @ (k_beta * g.exp()[..., None])  # decayed pseudo-keys
    state = q.new_zeros(b, h, dv, dk)
    outs = []
    for i in range(n):
        qi, ki, gi = q[:, :, i], k[:, :, i], g[:, :, i]
        new_values = u[:, :, i] - w[:, :, i] @ state.transpose(-1, -2)
        intra = (qi @ ki.transpose(-1, -2)) * decay[:, :, i]
        out = (qi * gi.exp()[..., None]) @ state.transpose(-1, -2) + intra @ new_values
        outs.append(out)
        last = gi[..., -1:]
        state = (
            state * last.exp()[..., None] + (new_values * (last - gi).exp()[..., None]).transpose(-1, -2) @ ki
        )
    out = torch.stack(outs, dim=2).reshape(b, h, n * chunk, dv)
    return out[:, :, :length]


class TitansMemory(nn.Module):
    """Titans-style neural memory with the original's delta-rule update, run in both directions.

    M_t = M_{t-1}(alpha_t I - eta_t k_t k_t^T) + eta_t v_t k_t^T with eta_t = alpha_t beta_t, i.e. the
    gated delta rule on alpha-scaled values. alpha_t = sigmoid(.) and beta_t = sigmoid(.) are
    data-dependent gates; keys and queries are L2-normalised, which keeps the update contractive.
    Pads get alpha = 1 and beta = 0, so they neither write to nor erase the memory.
    """

    def __init__(self, config: UltraConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_heads
        self.head_dim = d // config.num_heads
        self.chunk = config.titan_memory_chunk
        self.qkv = make_linear(d, 3 * d, config.use_bitnet)
        self.gates = nn.Linear(d, 2 * config.num_heads)  # alpha and beta logits per head
        self.out_gate = nn.Linear(d, d)
        self.out_proj = make_linear(d, d, config.use_bitnet)

    def reset_parameters(self) -> None:
        # Start with slow forgetting (alpha ~ 0.98) and moderate writes (beta ~ 0.5).
        hf_init.zeros_(self.gates.weight)
        bias = torch.cat([torch.full((self.num_heads,), 4.0), torch.zeros(self.num_heads)])
        hf_init.copy_(self.gates.bias, bias)

    def _scan(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_alpha: torch.Tensor, beta: torch.Tensor
    ) -> torch.Tensor:
        return delta_rule_chunked(q, k, v, log_alpha, beta, chunk=self.chunk)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        alpha_logit, beta_logit = self.gates(x).float().view(b, length, 2, self.num_heads).permute(2, 0, 3, 1)
        real = attention_mask[:, None, :].to(torch.bool)
        log_alpha = F.logsigmoid(alpha_logit).masked_fill(~real, 0.0).to(x.dtype)
        beta = torch.sigmoid(beta_logit).masked_fill(~real, 0.0).to(x.dtype)
        v = v * log_alpha.exp()[..., None]  # eta_t = alpha_t * beta_t on the write term (the original's form)
        forward_out = self._scan(q, k, v, log_alpha, beta)
        reverse = [t.flip(2) for t in (q, k, v, log_alpha, beta)]
        backward_out = self._scan(*reverse).flip(2)
        out = (0.5 * (forward_out + backward_out)).transpose(1, 2).reshape(b, length, d)
        return self.out_proj(out * torch.sigmoid(self.out_gate(x)))


# ==================================================================================== mixers
class TitanAttention(nn.Module):
    """Bidirectional multi-head attention with HoPE on q and k, and the optional Titans memory."""

    def __init__(self, config: UltraConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_heads
        self.head_dim = d // config.num_heads
        self.q_proj = make_linear(d, d, config.use_bitnet)
        self.k_proj = make_linear(d, d, config.use_bitnet)
        self.v_proj = make_linear(d, d, config.use_bitnet)
        self.out_proj = make_linear(d, d, config.use_bitnet)
        self.hope = HoPE(self.head_dim, config.hope_base, config.hope_damping) if config.use_hope else None
        self.memory = TitansMemory(config) if config.use_titan_memory else None
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        shape = (b, length, self.num_heads, self.head_dim)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        bias = key_padding_bias(attention_mask, q.dtype)
        if self.hope is not None:
            scores = self.hope(q, k) / math.sqrt(self.head_dim) + bias
            probs = F.dropout(scores.softmax(-1), self.dropout, self.training)
            out = probs @ v
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0
            )
        out = self.out_proj(out.transpose(1, 2).reshape(b, length, d))
        if self.memory is not None:
            out = out + self.memory(x, attention_mask)
        return out


class MultiScaleRetention(nn.Module):
    """RetNet retention (Sun et al., arXiv:2307.08621) in its bidirectional parallel form.

    Scores (Q K^T / sqrt(d)) * D with D_nm = gamma_h^|n-m| (RMT's encoder form), gamma_h = 1 - 2^{-5-h};
    q and k rotate by e^{i n theta} (xPos without the scale). The paper's normalisations: D rows
    divided by sqrt(sum D) over real keys, scores divided by max(|row sum|, 1), then a per-head
    GroupNorm and a swish gate.
    """

    def __init__(self, config: UltraConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.retention_heads
        self.head_dim = d // config.retention_heads
        self.q_proj = make_linear(d, d, config.use_bitnet)
        self.k_proj = make_linear(d, d, config.use_bitnet)
        self.v_proj = make_linear(d, d, config.use_bitnet)
        self.g_proj = make_linear(d, d, config.use_bitnet)
        self.out_proj = make_linear(d, d, config.use_bitnet)

    def log_decays(self, device: torch.device) -> torch.Tensor:
        return torch.log1p(
            -(2.0 ** (-5.0 - torch.arange(self.num_heads, device=device, dtype=torch.float32)))
        )

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-2]
        inv_freq = 1.0 / (10_000 ** torch.linspace(0, 1, self.head_dim // 2, device=x.device))
        angle = torch.arange(length, device=x.device, dtype=torch.float32)[:, None] * inv_freq
        cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        shape = (b, length, self.num_heads, self.head_dim)
        q = self.rotate(self.q_proj(x).view(shape).transpose(1, 2))
        k = self.rotate(self.k_proj(x).view(shape).transpose(1, 2)) * self.head_dim**-0.5
        v = self.v_proj(x).view(shape).transpose(1, 2)
        pos = torch.arange(length, device=x.device, dtype=torch.float32)
        distance = (pos[:, None] - pos[None, :]).abs()
        decay = torch.exp(self.log_decays(x.device)[:, None, None] * distance)  # [H, L, L]
        decay = decay[None] * attention_mask[:, None, None, :].float()  # pads are never read
        decay = decay / decay.sum(-1, keepdim=True).sqrt()
        scores = (q @ k.transpose(-1, -2)) * decay.to(q.dtype)
        scores = scores / scores.detach().abs().sum(-1, keepdim=True).clamp(min=1.0)
        out = rms_norm_heads(scores @ v).transpose(1, 2).reshape(b, length, d)
        return self.out_proj(F.silu(self.g_proj(x)) * out)


def selective_scan(
    delta_a: torch.Tensor, delta_bx: torch.Tensor, c: torch.Tensor, mode: str = "sequential"
) -> torch.Tensor:
    """The selective-SSM recurrence h_t = delta_a_t * h_{t-1} + delta_bx_t, y_t = <h_t, c_t> (h_0 = 0).

    Args:
        delta_a: the discretised per-step decays ``[B, L, D, N]``.
        delta_bx: the discretised inputs ``[B, L, D, N]``.
        c: the output projections ``[B, L, N]``.
        mode: ``sequential`` keeps one state in memory per step; ``parallel`` is a Hillis-Steele
            scan in log2(L) vectorised steps (faster on a GPU, log2(L) times the memory).

    Returns:
        y ``[B, L, D]``, in the inputs' dtype (the caller passes float32).
    """
    if mode == "parallel":
        a, h = delta_a, delta_bx
        offset = 1
        length = a.shape[1]
        while offset < length:
            h = h + a * F.pad(h, (0, 0, 0, 0, offset, 0))[:, :length]
            a = a * F.pad(a, (0, 0, 0, 0, offset, 0), value=1.0)[:, :length]
            offset *= 2
        return (h * c[:, :, None, :]).sum(-1)
    # unbind (not [:, t] indexing): its backward is one stack, where indexing would allocate and
    # fill a full-size zero gradient for every step.
    state = delta_bx.new_zeros(delta_bx.shape[0], delta_bx.shape[2], delta_bx.shape[3])
    states = []
    for a_t, bx_t in zip(delta_a.unbind(1), delta_bx.unbind(1)):
        state = a_t * state + bx_t
        states.append(state)
    return (torch.stack(states, dim=1) * c[:, :, None, :]).sum(-1)


class MambaDirection(nn.Module):
    """One direction of a selective SSM (Gu & Dao, arXiv:2312.00752): conv, input-dependent Δ, B, C."""

    def __init__(self, d_inner: int, state_size: int, conv_kernel: int, dt_rank: int, scan: str) -> None:
        super().__init__()
        self.state_size = state_size
        self.dt_rank = dt_rank
        self.scan = scan
        self.conv = nn.Conv1d(d_inner, d_inner, conv_kernel, groups=d_inner, padding=conv_kernel - 1)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * state_size, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner)
        self.A_log = nn.Parameter(torch.zeros(d_inner, state_size))
        self.D = nn.Parameter(torch.ones(d_inner))

    def reset_parameters(self) -> None:
        d_inner = self.D.shape[0]
        a = torch.arange(1, self.state_size + 1, dtype=torch.float32).repeat(d_inner, 1)
        hf_init.copy_(self.A_log, torch.log(a))
        hf_init.ones_(self.D)
        # Δ = softplus(bias) starts log-uniform in [1e-3, 1e-1] (the Mamba init).
        dt = torch.exp(torch.rand(d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        hf_init.copy_(self.dt_proj.bias, dt + torch.log(-torch.expm1(-dt)))
        hf_init.uniform_(self.dt_proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)

    def forward(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """x: [B, L, D] with pads zeroed; real: [B, L, 1] float (1 = token)."""
        length = x.shape[1]
        x = F.silu(self.conv(x.transpose(1, 2))[..., :length].transpose(1, 2))
        dt, b, c = self.x_proj(x).split([self.dt_rank, self.state_size, self.state_size], dim=-1)
        # Δ = 0 on pads: exp(ΔA) = 1 and ΔBx = 0, so the state passes pads unchanged.
        delta = F.softplus(self.dt_proj(dt).float()) * real
        a = -torch.exp(self.A_log.float())
        delta_a = torch.exp(delta[..., None] * a)
        delta_bx = (delta * x.float())[..., None] * b.float()[:, :, None, :]
        y = selective_scan(delta_a, delta_bx, c.float(), self.scan)
        return (y + x.float() * self.D).to(x.dtype)


class BiMamba(nn.Module):
    """Bidirectional Mamba (Vim / Caduceus style): shared in/out projections, one SSM per direction."""

    def __init__(self, config: UltraConfig) -> None:
        super().__init__()
        d = config.hidden_size
        d_inner = config.mamba_expand * d
        dt_rank = math.ceil(d / 16)
        self.in_proj = make_linear(d, 2 * d_inner, config.use_bitnet)
        self.forward_ssm = MambaDirection(
            d_inner, config.mamba_state_size, config.mamba_conv_kernel, dt_rank, config.mamba_scan
        )
        self.backward_ssm = MambaDirection(
            d_inner, config.mamba_state_size, config.mamba_conv_kernel, dt_rank, config.mamba_scan
        )
        self.out_proj = make_linear(d_inner, d, config.use_bitnet)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        real = attention_mask[..., None].to(x.dtype)
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        xs = xs * real  # pads never reach a real token's convolution window
        y_forward = self.forward_ssm(xs, real)
        y_backward = self.backward_ssm(xs.flip(1), real.flip(1)).flip(1)
        return self.out_proj(0.5 * (y_forward + y_backward) * F.silu(z))


class ODEBlock(nn.Module):
    """dz/dt = f(z), f = multi-head attention on norm(z), integrated over t in [0, 1] (Chen et al. 2018).

    Classic RK4 (1/6, 1/3, 1/3, 1/6; torchdiffeq's "rk4" is the 3/8 variant) or Euler with fixed
    steps; gradients flow through the solver. Euler with one step is an ordinary residual block.
    """

    def __init__(self, config: UltraConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_heads
        self.head_dim = d // config.num_heads
        self.solver = config.ode_solver
        self.steps = config.ode_steps
        self.norm = build_norm(config)
        self.qkv = make_linear(d, 3 * d, config.use_bitnet)
        self.out_proj = make_linear(d, d, config.use_bitnet)

    def vector_field(self, z: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, length, d = z.shape
        q, k, v = (
            self.qkv(self.norm(z)).view(b, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        )
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.out_proj(out.transpose(1, 2).reshape(b, length, d))

    def forward(self, z: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        bias = key_padding_bias(attention_mask, z.dtype)
        h = 1.0 / self.steps
        for _ in range(self.steps):
            k1 = self.vector_field(z, bias)
            if self.solver == "euler":
                z = z + h * k1
                continue
            k2 = self.vector_field(z + 0.5 * h * k1, bias)
            k3 = self.vector_field(z + 0.5 * h * k2, bias)
            k4 = self.vector_field(z + h * k3, bias)
            z = z + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
        return z


# ==================================================================================== FFN / MoE
class FeedForward(nn.Module):
    """The original's expert: Linear(d, m*d) -> SiLU -> Linear(m*d, d)."""

    def __init__(self, config: UltraConfig) -> None:
        super().__init__()
        inner = config.ffn_multiplier * config.hidden_size
        self.up = make_linear(config.hidden_size, inner, config.use_bitnet)
        self.down = make_linear(inner, config.hidden_size, config.use_bitnet)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.up(x)))


class MoEFeedForward(nn.Module):
    """Top-k mixture of experts with renormalised weights (Mixtral), Switch load balancing and the
    ST-MoE router z-loss. The router stays full precision; pads are neither routed nor counted."""

    def __init__(self, config: UltraConfig) -> None:
        super().__init__()
        self.num_experts = config.num_experts
        self.top_k = config.top_k_experts
        self.aux_coef = config.moe_aux_loss_coef
        self.z_coef = config.router_z_loss_coef
        self.router = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(config) for _ in range(config.num_experts))

    @staticmethod
    def balance_loss(probs: torch.Tensor, chosen: torch.Tensor, num_experts: int) -> torch.Tensor:
        """Switch loss E * sum_i f_i P_i, f_i = share of routing slots to expert i; 1.0 when balanced."""
        counts = torch.zeros(num_experts, device=probs.device, dtype=probs.dtype)
        counts = counts.scatter_add(
            0, chosen.reshape(-1), torch.ones_like(chosen.reshape(-1), dtype=probs.dtype)
        )
        fraction = counts / chosen.numel()
        return num_experts * (fraction * probs.mean(0)).sum()

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        keep = attention_mask.reshape(-1).bool()
        tokens = flat[keep]
        out = torch.zeros_like(flat)
        if tokens.shape[0] == 0:
            return out.view(shape), x.new_zeros(())
        logits = self.router(tokens).float()
        probs = logits.softmax(-1)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        routed = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            rows, slot = (chosen == e).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            contribution = expert(tokens[rows]) * weights[rows, slot, None].to(tokens.dtype)
            routed = routed.index_add(0, rows, contribution)
        out = out.masked_scatter(keep[:, None], routed)
        z_loss = torch.logsumexp(logits, -1).pow(2).mean()
        aux = self.aux_coef * self.balance_loss(probs, chosen, self.num_experts) + self.z_coef * z_loss
        return out.view(shape), aux


class DenseFeedForward(FeedForward):
    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return super().forward(x), x.new_zeros(())


# ==================================================================================== layers
class HybridLayer(nn.Module):
    """Pre-norm residual layer: step embedding, one mixer, then the (MoE) FFN.

    ``logical_layer_idx`` (0 .. num_layers*num_loops-1) selects a learned loop embedding added to
    the residual stream (Universal Transformers' timestep embedding), so the shared weights know
    which pass they are in.
    """

    def __init__(self, config: UltraConfig, layer_idx: int, layer_type: str) -> None:
        super().__init__()
        if layer_type not in LAYER_TYPES:
            raise ConfigError(f"unknown layer type {layer_type!r}; known: {', '.join(LAYER_TYPES)}")
        self.layer_idx = layer_idx
        self.layer_type = layer_type
        self.num_layers = config.num_layers
        self.loop_embedding = nn.Embedding(config.num_loops, config.hidden_size)
        self.mixer_norm = build_norm(config)
        if layer_type == "retnet":
            self.mixer: nn.Module = MultiScaleRetention(config)
        elif layer_type == "titan_attn":
            self.mixer = TitanAttention(config)
        elif layer_type == "mamba":
            self.mixer = BiMamba(config)
        else:
            self.mixer = ODEBlock(config)
        self.ffn_norm = build_norm(config)
        self.ffn = MoEFeedForward(config) if config.use_moe else DenseFeedForward(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, attention_mask: torch.Tensor, logical_layer_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loop, physical = divmod(logical_layer_idx, self.num_layers)
        if physical != self.layer_idx:
            raise ValueError(
                f"layer {self.layer_idx} called with logical_layer_idx={logical_layer_idx} (physical {physical})"
            )
        x = x + self.loop_embedding.weight[loop]
        if self.layer_type == "ode":
            # The ODE solution z(1) already contains the identity path z(0) = x.
            x = self.mixer(x, attention_mask)
        else:
            x = x + self.dropout(self.mixer(self.mixer_norm(x), attention_mask))
        ffn_out, aux = self.ffn(self.ffn_norm(x), attention_mask)
        return x + self.dropout(ffn_out), aux


class FactorizedEmbedding(nn.Module):
    """ALBERT-style embedding: vocab -> embedding_size [-> Conv1d(k=3)] -> hidden (BitLinear or Linear)."""

    def __init__(self, config: UltraConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        self.conv = (
            nn.Conv1d(config.embedding_size, config.embedding_size, kernel_size=3, padding=1)
            if config.embedding_conv
            else None
        )
        self.projection = make_linear(config.embedding_size, config.hidden_size, config.use_bitnet, bias=True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids) * attention_mask[..., None].to(self.word_embeddings.weight.dtype)
        if self.conv is not None:
            # Pads were zeroed above, so they add nothing to a neighbour's window; the conv is residual.
            x = x + self.conv(x.transpose(1, 2)).transpose(1, 2)
        return self.projection(x)


class DenseEmbedding(nn.Module):
    def __init__(self, config: UltraConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.word_embeddings(input_ids)


class MLMHead(nn.Module):
    """hidden -> dense -> GELU -> LayerNorm (embedding width) -> decoder tied to the input embedding."""

    def __init__(self, config: UltraConfig) -> None:
        super().__init__()
        width = config.embedding_size if config.use_factorized_embedding else config.hidden_size
        self.dense = nn.Linear(config.hidden_size, width)
        self.norm = nn.LayerNorm(width, eps=config.norm_eps)
        self.decoder = nn.Linear(width, config.vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(F.gelu(self.dense(hidden))))


# ==================================================================================== Hugging Face
class TormentedBertConfig(PretrainedConfig):
    """Hugging Face configuration: every :class:`UltraConfig` field, validated by UltraConfig."""

    model_type = "tormented-bert"
    attribute_map = {"num_hidden_layers": "num_layers", "num_attention_heads": "num_heads"}

    def __init__(self, **kwargs: Any) -> None:
        names = {f.name for f in dataclasses.fields(UltraConfig)}
        ultra = UltraConfig(**{k: kwargs.pop(k) for k in list(kwargs) if k in names})
        for name, value in ultra.to_dict().items():
            setattr(self, name, value)
        self.mask_token_id = kwargs.pop("mask_token_id", None)
        kwargs.setdefault("tie_word_embeddings", True)
        super().__init__(**kwargs)
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            if name not in self.__dict__:
                setattr(self, name, None)  # transformers 5 no longer defines these on the base config

    @classmethod
    def from_ultra(cls, ultra: UltraConfig, **kwargs: Any) -> TormentedBertConfig:
        return cls(**ultra.to_dict(), **kwargs)

    def to_ultra(self) -> UltraConfig:
        return UltraConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(UltraConfig)})


@dataclass
class TormentedMaskedLMOutput(ModelOutput):
    """MaskedLMOutput plus the parts of the loss: ``loss = mlm_loss + aux_loss``."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class TormentedBaseOutput(BaseModelOutput):
    aux_loss: torch.Tensor | None = None


class TormentedBertPreTrainedModel(PreTrainedModel):
    config_class = TormentedBertConfig
    base_model_prefix = "tormented"
    supports_gradient_checkpointing = False
    _no_split_modules = ["HybridLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            hf_init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                hf_init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            hf_init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            hf_init.ones_(module.weight)
            hf_init.zeros_(module.bias)
        if hasattr(module, "reset_parameters") and isinstance(
            module, (DyT, Derf, DynamicTanhNorm, MambaDirection, TitansMemory)
        ):
            module.reset_parameters()


class TormentedBertModel(TormentedBertPreTrainedModel):
    """The encoder: embedding, num_layers physical layers run num_loops times, final norm."""

    def __init__(self, config: TormentedBertConfig) -> None:
        super().__init__(config)
        ultra = config.to_ultra()
        self.ultra = ultra
        self.embeddings = (
            FactorizedEmbedding(ultra) if ultra.use_factorized_embedding else DenseEmbedding(ultra)
        )
        self.layers = nn.ModuleList(HybridLayer(ultra, i, kind) for i, kind in enumerate(ultra.layer_types()))
        self.final_norm = build_norm(ultra)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        if not isinstance(value, nn.Embedding):  # the embedding scale and the tied decoder read .weight
            raise TypeError(f"the input embeddings must be an nn.Embedding, got {type(value).__name__}")
        self.embeddings.word_embeddings = value

    def default_attention_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.config.pad_token_id is None:
            return torch.ones_like(input_ids)
        return (input_ids != self.config.pad_token_id).long()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> TormentedBaseOutput:
        """Encode ``input_ids`` (every position sees the whole sequence; pads are hidden as keys).

        Args:
            input_ids: token ids ``[B, L]`` (int64).
            attention_mask: ``[B, L]``, 1 for tokens and 0 for pads; ``None``: every token that is
                not ``config.pad_token_id`` (all of them without one).
            output_hidden_states: also return the embedding output and every layer's output.
            return_dict: accepted for transformers' API; the output is always a
                :class:`TormentedBaseOutput`.
            **kwargs: other transformers arguments, ignored.

        Returns:
            ``last_hidden_state`` ``[B, L, hidden_size]`` after the final norm (the weights' dtype,
            or autocast's); with ``output_hidden_states``, ``hidden_states``: the embedding output
            and each layer's output over all loops (``1 + num_loops * num_layers`` tensors
            ``[B, L, hidden_size]``); ``aux_loss``: float32 scalar, the MoE layers' weighted
            load-balancing and router z-losses summed (0 without MoE).
        """
        if attention_mask is None:
            attention_mask = self.default_attention_mask(input_ids)
        attention_mask = attention_mask.to(input_ids.device)
        x = self.embeddings(input_ids, attention_mask)
        aux = x.new_zeros((), dtype=torch.float32)
        hidden_states: list[torch.Tensor] = [x] if output_hidden_states else []
        for loop in range(self.ultra.num_loops):
            for i, layer in enumerate(self.layers):
                x, layer_aux = layer(x, attention_mask, logical_layer_idx=loop * self.ultra.num_layers + i)
                aux = aux + layer_aux.float()
                if output_hidden_states:
                    hidden_states.append(x)
        x = self.final_norm(x)
        # transformers annotates its outputs as the legacy FloatTensor type; these are Tensors.
        hidden = cast("tuple[torch.FloatTensor, ...]", tuple(hidden_states)) if output_hidden_states else None
        return TormentedBaseOutput(last_hidden_state=x, hidden_states=hidden, aux_loss=aux)


class TormentedBertForMaskedLM(TormentedBertPreTrainedModel):
    """Masked LM with the decoder tied to the (factorised) input embedding, ALBERT-style."""

    _tied_weights_keys = {"mlm_head.decoder.weight": "tormented.embeddings.word_embeddings.weight"}

    def __init__(self, config: TormentedBertConfig) -> None:
        super().__init__(config)
        self.tormented = TormentedBertModel(config)
        self.mlm_head = MLMHead(config.to_ultra())
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.mlm_head.decoder = new_embeddings

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> TormentedMaskedLMOutput:
        """Masked-token logits for every position and, with ``labels``, the training loss.

        Args:
            input_ids: token ids ``[B, L]`` (int64), with ``[MASK]`` where a token is to be predicted.
            attention_mask: ``[B, L]``, 1 for tokens and 0 for pads (default as
                :meth:`TormentedBertModel.forward`).
            labels: ``[B, L]`` (int64), the original token at each position to predict and -100
                elsewhere; ``None``: no loss.
            output_hidden_states: also return the encoder's hidden states.
            return_dict: accepted for transformers' API; the output is always a
                :class:`TormentedMaskedLMOutput`.
            **kwargs: other transformers arguments, ignored.

        Returns:
            ``logits`` ``[B, L, vocab_size]`` (the weights' dtype, or autocast's) and ``aux_loss``
            (float32 scalar); with ``labels``, ``mlm_loss`` (float32 scalar, nats per predicted
            token) and ``loss = mlm_loss + aux_loss``; ``hidden_states`` as the encoder's.
        """
        out = self.tormented(
            input_ids, attention_mask=attention_mask, output_hidden_states=output_hidden_states
        )
        logits = self.mlm_head(out.last_hidden_state)
        mlm_loss = loss = None
        if labels is not None:
            # Loss only where labels != -100 (the masked positions); aux keeps the experts balanced.
            mlm_loss = F.cross_entropy(
                logits.float().view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100
            )
            loss = mlm_loss + out.aux_loss
        return TormentedMaskedLMOutput(
            loss=loss,
            logits=logits,
            mlm_loss=mlm_loss,
            aux_loss=out.aux_loss,
            hidden_states=out.hidden_states,
        )


class TormentedBertForSequenceClassification(TormentedBertPreTrainedModel):
    """First-token ([CLS]) pooler -> tanh -> classifier; CE, MSE or BCE by ``problem_type``."""

    def __init__(self, config: TormentedBertConfig) -> None:
        super().__init__(config)
        if config.num_labels is None:  # transformers' configs have 2 unless id2label was removed
            raise ValueError("the config needs num_labels (or id2label)")
        self.num_labels = config.num_labels
        self.tormented = TormentedBertModel(config)
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden_size, self.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        """Class logits from the first ([CLS]) position and, with ``labels``, the loss.

        Args:
            input_ids: token ids ``[B, L]`` (int64), starting with ``[CLS]``.
            attention_mask: ``[B, L]``, 1 for tokens and 0 for pads (default as
                :meth:`TormentedBertModel.forward`).
            labels: ``[B]`` int64 class ids (single-label), ``[B, num_labels]`` float 0/1 targets
                (multi-label) or ``[B]`` float targets (regression, ``num_labels == 1``). When
                ``config.problem_type`` is unset, the first call with labels sets it from these.
                ``None``: no loss.
            output_hidden_states: also return the encoder's hidden states.
            return_dict: accepted for transformers' API; the output is always a
                ``SequenceClassifierOutput``.
            **kwargs: other transformers arguments, ignored.

        Returns:
            ``logits`` ``[B, num_labels]`` (the weights' dtype, or autocast's); with ``labels``,
            ``loss``: float32 scalar, cross-entropy (nats), MSE or BCE by ``problem_type``, plus
            the encoder's ``aux_loss``; ``hidden_states`` as the encoder's.
        """
        out = self.tormented(
            input_ids, attention_mask=attention_mask, output_hidden_states=output_hidden_states
        )
        pooled = torch.tanh(self.pooler(out.last_hidden_state[:, 0]))
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            if self.config.problem_type is None:
                if self.num_labels == 1:
                    self.config.problem_type = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    self.config.problem_type = "single_label_classification"
                else:
                    self.config.problem_type = "multi_label_classification"
            if self.config.problem_type == "regression":
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            elif self.config.problem_type == "single_label_classification":
                loss = F.cross_entropy(logits.float(), labels.view(-1))
            else:
                loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
            loss = loss + out.aux_loss
        # transformers annotates its outputs as the legacy FloatTensor type; the loss is a Tensor.
        return SequenceClassifierOutput(
            loss=cast("torch.FloatTensor | None", loss), logits=logits, hidden_states=out.hidden_states
        )


# ==================================================================================== named models
def _as_hf_config(
    config: UltraConfig | TormentedBertConfig | None, default: UltraConfig
) -> TormentedBertConfig:
    if config is None:
        config = default
    if isinstance(config, UltraConfig):
        return TormentedBertConfig.from_ultra(config)
    return config


class TormentedBertFrankenstein(TormentedBertForMaskedLM):
    """The original's model name: accepts an :class:`UltraConfig` (default: the original's trained size)."""

    def __init__(self, config: UltraConfig | TormentedBertConfig | None = None) -> None:
        super().__init__(_as_hf_config(config, UltraConfig.frankenstein()))


class TormentedBertMini(TormentedBertForMaskedLM):
    """The original's Mini: 384 wide, 6 physical x 2 loops, pattern STABLE_PATTERN, Derf, factorised embedding."""

    def __init__(self, config: UltraConfig | TormentedBertConfig | None = None) -> None:
        hf_config = _as_hf_config(config, UltraConfig.mini())
        if hf_config.model_family != "mini":
            raise ConfigError(f"TormentedBertMini needs model_family='mini', got {hf_config.model_family!r}")
        super().__init__(hf_config)


TormentedBertConfig.register_for_auto_class()
TormentedBertModel.register_for_auto_class("AutoModel")
TormentedBertForMaskedLM.register_for_auto_class("AutoModelForMaskedLM")
TormentedBertForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "BitLinear",
    "ConfigError",
    "Derf",
    "DyT",
    "DynamicTanhNorm",
    "FactorizedEmbedding",
    "HoPE",
    "HybridLayer",
    "MultiScaleRetention",
    "BiMamba",
    "MoEFeedForward",
    "ODEBlock",
    "TitanAttention",
    "TitansMemory",
    "TormentedBertConfig",
    "TormentedBertForMaskedLM",
    "TormentedBertForSequenceClassification",
    "TormentedBertFrankenstein",
    "TormentedBertMini",
    "TormentedBertModel",
    "UltraConfig",
    "PRESETS",
]
