"""The harness-B model: a small LLaMA (RMSNorm, rotate-half RoPE, SwiGLU, tied embeddings).

Parameter names follow Hugging Face ``LlamaForCausalLM`` (``model.layers.N.mlp.gate_proj.weight``
...), so the state dict goes straight to ``lm_shared.gguf.write_llama_gguf`` and stock llama.cpp
computes the same function. The MLP projections are plain ``nn.Linear`` modules that
:func:`seeddelta.apply.apply_seeddelta` swaps for ``SeedDeltaLinear``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

KVCache = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ModelConfig:
    """Defaults are the original's proposal v1 (8 layers, 192 wide, FFN 768, 6 heads)."""

    vocab_size: int = 512  # tokenizer size (lm_shared BPE trained on the tasks)
    hidden_size: int = 192  # model width
    intermediate_size: int = 768  # SwiGLU hidden width
    num_layers: int = 8  # transformer blocks
    num_heads: int = 6  # attention heads (head_dim 32)
    max_position: int = 256  # longest sequence (the fork's max positions)
    rms_norm_eps: float = 1e-5  # RMSNorm epsilon (llama.cpp reads it from the GGUF)
    rope_theta: float = 10000.0  # RoPE base
    init_std: float = 0.02  # normal init of all matrices, as HF Llama

    def __post_init__(self) -> None:
        for key in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "max_position",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"ModelConfig.{key} must be >= 1")
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ValueError("hidden_size / num_heads must be an even integer (RoPE pairs)")

    # Copied from lm_shared.gguf.LlamaGGUFConfig.head_dim
    @property
    def head_dim(self) -> int:
        """Width of one attention head, ``hidden_size // num_heads`` (also RoPE's dimension count)."""
        return self.hidden_size // self.num_heads


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Root-mean-square normalise the last dim (computed in float32) and scale it.

        Args:
            x: activations [..., dim], any float dtype.

        Returns:
            The normalised activations [..., dim], cast back to ``x``'s dtype before the weight
            multiplies them (the result takes the promoted dtype of the two).
        """
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def rope_tables(cfg: ModelConfig, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for rotate-half RoPE.

    Args:
        cfg: gives ``head_dim`` and ``rope_theta``.
        position_ids: integer positions [B, T].

    Returns:
        ``(cos, sin)``, each float32 [B, 1, T, head_dim] (the 1 broadcasts over heads).
    """
    inv = 1.0 / cfg.rope_theta ** (
        torch.arange(0, cfg.head_dim, 2, device=position_ids.device).float() / cfg.head_dim
    )
    freqs = position_ids.float()[..., None] * inv
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``(a, b) -> (-b, a)`` on the two halves of the last dim (HF Llama's RoPE layout).

    Args:
        x: queries or keys [..., head_dim], head_dim even.

    Returns:
        A tensor of ``x``'s shape and dtype.
    """
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Multi-head self-attention with RoPE over the cached and the new positions.

        Args:
            x: normalised hidden states [B, T, hidden_size].
            cos: RoPE cosines [B, 1, T, head_dim] in ``x``'s dtype (``rope_tables``).
            sin: RoPE sines, same shape and dtype.
            mask: bool [B, T, T_past + T], True = may attend, or None: causal (with a cache and
                T > 1, causal after the cached keys).
            past: this layer's cached ``(k, v)``, each [B, num_heads, T_past, head_dim], or None.

        Returns:
            ``(out, (k, v))``: the attention output [B, T, hidden_size] in ``x``'s dtype and the
            updated cache, each [B, num_heads, T_past + T, head_dim].
        """
        B, T, _ = x.shape
        H, hd = self.cfg.num_heads, self.cfg.head_dim
        q = self.q_proj(x).view(B, T, H, hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, H, hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, H, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if past is not None:
            k = torch.cat((past[0], k), dim=2)
            v = torch.cat((past[1], v), dim=2)
        if mask is None and past is not None and T > 1:
            # new queries sit after the cached keys: query i may see keys up to past_len + i
            offset = k.shape[2] - T
            mask = torch.ones(T, k.shape[2], dtype=torch.bool, device=x.device).tril(offset).expand(B, T, -1)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
        return self.o_proj(out.transpose(1, 2).reshape(B, T, H * hd)), (k, v)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """SwiGLU: ``down(silu(gate(x)) * up(x))``.

        Args:
            x: normalised hidden states [..., hidden_size].

        Returns:
            [..., hidden_size] in ``x``'s dtype.
        """
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One pre-norm block: ``x + attn(norm(x))``, then ``+ mlp(norm(.))``.

        Args:
            x: hidden states [B, T, hidden_size].
            cos: RoPE cosines [B, 1, T, head_dim] in ``x``'s dtype.
            sin: RoPE sines, same shape and dtype.
            mask: bool [B, T, T_past + T] (True = may attend) or None for causal attention.
            past: this layer's cached ``(k, v)`` [B, num_heads, T_past, head_dim] each, or None.

        Returns:
            ``(x, (k, v))``: the new hidden states [B, T, hidden_size] and the layer's updated
            cache [B, num_heads, T_past + T, head_dim] each.
        """
        h, new = self.self_attn(self.input_layernorm(x), cos, sin, mask, past)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), new


class LlamaBody(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class TinyLlama(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = LlamaBody(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.lm_head.weight = (
            self.model.embed_tokens.weight
        )  # tied, as llama.cpp reads a missing output.weight
        self.apply(self._init)
        # GPT-2 style scaled init of the residual projections keeps early training stable
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=cfg.init_std / math.sqrt(2 * cfg.num_layers))

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=self.cfg.init_std)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        past: KVCache | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """Next-token logits for every position, and the KV cache to continue from.

        Args:
            input_ids: token ids, int64 [B, T].
            position_ids: RoPE positions, integer [B, T]; default ``T_past .. T_past + T - 1``
                (0 .. T - 1 without a cache). Packed rows restart them at each document.
            attn_mask: bool [B, T, T_past + T], True = may attend; needed for packed or padded
                batches. None: plainly causal.
            past: the previous call's cache, or None.

        Returns:
            ``(logits, cache)``: unnormalised logits [B, T, vocab_size] in the parameters' dtype
            (float32 by default; bfloat16 under bf16 autocast); the cache is one ``(k, v)`` per
            layer, each [B, num_heads, T_past + T, head_dim].
        """
        B, T = input_ids.shape
        if position_ids is None:
            start = 0 if past is None else past[0][0].shape[2]
            position_ids = torch.arange(start, start + T, device=input_ids.device).expand(B, T)
        cos, sin = rope_tables(self.cfg, position_ids)
        x = self.model.embed_tokens(input_ids)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        new_cache: KVCache = []
        for i, layer in enumerate(self.model.layers):
            x, kv = layer(x, cos, sin, attn_mask, None if past is None else past[i])
            new_cache.append(kv)
        return self.lm_head(self.model.norm(x)), new_cache
