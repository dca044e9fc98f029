"""GGUF export for llama.cpp (``llama`` architecture) through :mod:`lm_shared.gguf`.

Folded exactly into the weights (every sublayer and the head only see RMSNorm(residual)):
the √d embedding scale goes into ``token_embd``; with a tied head, ``output_norm`` is multiplied by
head_scale/√d so the head's logits are unchanged; an untied head takes head_scale alone.
Stochastic depth and dropout are identities at inference. Refused: QK-norm, differential
attention, the gate-residual FFN and the attention soft-cap (llama.cpp's llama graph has no
such operations), and the final soft-cap (it changes the logits; greedy output is unchanged, so
``allow_final_softcap=True`` exports without it).

Text: the file uses llama.cpp's ``gpt-2`` pre-tokenizer (the split of our byte-level BPE) and
writes the section markers (``<|input|>`` … ``<|formula|>``) as USER_DEFINED tokens, so
``llama-cli`` prints them; llama.cpp applies no Unicode normaliser, so text must be NFC
(``nanologic.data.normalize_text``) before it is tokenized, as our front-ends do.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from nanologic.data import BOS, EOS, PAD, SPECIAL_TOKENS, UNK
from nanologic.errors import NanologicError
from nanologic.model import NanoLogic, NanoLogicConfig

RENDERED_SPECIALS = tuple(t for t in SPECIAL_TOKENS if t not in (PAD, BOS, EOS, UNK))


def unsupported_features(cfg: NanoLogicConfig, allow_final_softcap: bool = False) -> list[str]:
    problems = []
    if cfg.qk_norm:
        problems.append("QK-norm (qk_norm=true; llama.cpp has it only in the qwen3 architecture)")
    if cfg.differential_attention:
        problems.append("differential attention")
    if cfg.gate_residual:
        problems.append("the gate-residual FFN")
    if cfg.copy_head:
        problems.append("the copy head (a pointer over earlier tokens; llama.cpp has no such output)")
    if cfg.attn_softcap > 0:
        problems.append(f"the attention soft-cap ({cfg.attn_softcap})")
    if cfg.final_softcap > 0 and not allow_final_softcap:
        problems.append(
            f"the final logit soft-cap ({cfg.final_softcap}; pass --allow-final-softcap to drop it)"
        )
    return problems


def hf_llama_state_dict(model: NanoLogic) -> dict[str, torch.Tensor]:
    """Our weights under HF ``LlamaForCausalLM`` names, with the scales folded in."""
    cfg = model.config
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    scale = math.sqrt(cfg.hidden_size) if cfg.embed_scale else 1.0
    head_scale = float(model.head_scale.detach()) if model.head_scale is not None else 1.0
    out: dict[str, torch.Tensor] = {"model.embed_tokens.weight": sd["embed_tokens.weight"] * scale}
    for i in range(cfg.num_layers):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out[f"model.layers.{i}.self_attn.{proj}.weight"] = sd[f"layers.{i}.self_attn.{proj}.weight"]
        for proj in ("gate_proj", "up_proj", "down_proj"):
            out[f"model.layers.{i}.mlp.{proj}.weight"] = sd[f"layers.{i}.mlp.{proj}.weight"]
        for norm in ("input_layernorm", "post_attention_layernorm"):
            out[f"model.layers.{i}.{norm}.weight"] = sd[f"layers.{i}.{norm}.weight"]
    if cfg.tie_embeddings:
        # The tied head reads the scaled token_embd: undo the √d there and apply head_scale.
        out["model.norm.weight"] = sd["norm.weight"] * head_scale / scale
    else:
        out["model.norm.weight"] = sd["norm.weight"] * head_scale
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out


def gguf_config(cfg: NanoLogicConfig):
    """The llama GGUF hyper-parameters of a nanologic config."""
    from lm_shared.gguf import LlamaGGUFConfig

    return LlamaGGUFConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        num_kv_heads=cfg.num_kv_heads,
        context_length=cfg.max_seq_len,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_theta=cfg.rope_theta,
        name="nanologic",
    )


def export_model(
    model: NanoLogic, tokenizer, path: str | Path, *, dtype: str = "f32", allow_final_softcap: bool = False
) -> Path:
    from lm_shared.gguf import write_llama_gguf
    from nanologic.grammar import answer_grammar
    from nanologic.llamacpp import GRAMMAR_KEY, POLARITY_MARKS_KEY

    cfg = model.config
    problems = unsupported_features(cfg, allow_final_softcap)
    if problems:
        raise NanologicError(
            "cannot export to llama.cpp's llama architecture: this model uses "
            + "; ".join(problems)
            + ". Train with an exportable preset (cpu-export or base-export)."
        )
    gguf_cfg = gguf_config(cfg)
    return write_llama_gguf(
        path,
        hf_llama_state_dict(model),
        gguf_cfg,
        tokenizer,
        dtype=dtype,
        # Our "interleaved" RoPE is llama.cpp's native (NORM) layout: no Q/K permutation needed.
        rope_layout="interleaved" if cfg.rope_layout == "interleaved" else "half",
        bos_id=tokenizer.token_to_id(BOS),
        eos_id=tokenizer.token_to_id(EOS),
        pad_id=tokenizer.token_to_id(PAD),
        # The section markers are the visible answer format: rendered (USER_DEFINED) so llama.cpp
        # prints them by default; pad/bos/eos/unk stay CONTROL (hidden).
        rendered_specials=RENDERED_SPECIALS,
        extra_metadata={GRAMMAR_KEY: answer_grammar(), POLARITY_MARKS_KEY: cfg.polarity_marks},
    )


def export_gguf(
    run_dir: str | Path, out: str | Path, *, dtype: str = "f32", allow_final_softcap: bool = False
) -> Path:
    from nanologic.inference import load_run

    model, tokenizer = load_run(run_dir)
    path = export_model(model, tokenizer, out, dtype=dtype, allow_final_softcap=allow_final_softcap)
    write_grammar_file(path)
    return path


def write_grammar_file(gguf_path: str | Path) -> Path:
    """The answer grammar beside the GGUF (``model.gguf`` -> ``model.gbnf``), for ``llama-cli
    --grammar-file``; the same text is stored in the GGUF under ``nanologic.answer_grammar``."""
    from nanologic.grammar import answer_grammar

    path = Path(gguf_path).with_suffix(".gbnf")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(answer_grammar(), encoding="utf-8")
    tmp.replace(path)
    return path
