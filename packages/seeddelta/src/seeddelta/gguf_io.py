"""GGUF I/O: export a tiny checkpoint, load a llama GGUF (dense, quantized or SeedΔ) into PyTorch,
rebuild its tokenizer, and copy a GGUF with extra SeedΔ tensors and keys (the builder's writer).

SeedΔ tensors follow the fork (``sd_write.cpp``): ``blk.N.ffn_{gate,up,down}.d_idx`` /
``.d_val`` (COO) or ``.b_idx`` / ``.b_val`` (1-D blocks), ``.d_row_scale`` (F16), and for the
xor base ``.base_d1``/``.base_d2``/``.base_d3`` (d1 = d3 = 1) with ``.base_perm1``. The cyclic
base is an extension the fork has no runtime for: ``.base_cyc`` (the first column of each
circulant block) with ``seeddelta.base.kind = 2``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lm_shared.gguf import (
    GGUFError,
    LlamaGGUFConfig,
    gguf_to_hf_names,
    permute_interleaved_to_rotate_half,
    read_gguf,
    write_llama_gguf,
)
from lm_shared.tokenization import BPETokenizer
from seeddelta.bases import Base
from seeddelta.delta import SeedDeltaTensor
from seeddelta.errors import SeedDeltaError
from seeddelta.evaluate import BOS_ID, EOS_ID, PAD_ID
from seeddelta.linear import SeedDeltaLinear
from seeddelta.model import ModelConfig, TinyLlama

FFN_KINDS = ("ffn_gate", "ffn_up", "ffn_down")
HF_MLP = {"ffn_gate": "gate_proj", "ffn_up": "up_proj", "ffn_down": "down_proj"}
_REQUIRED_KEYS = ("block_count", "embedding_length", "feed_forward_length", "attention.head_count")


def export_checkpoint(run_dir: Path, out: Path, dtype: str = "f16") -> Path:
    """``tiny export``: write a llama-arch GGUF of a ``tiny train`` run (tied output)."""
    from seeddelta.train import load_checkpoint

    model, tok, cfg = load_checkpoint(run_dir)
    return write_model_gguf(model, tok, out, dtype)


def gguf_config(cfg: ModelConfig, name: str = "seeddelta-tiny") -> LlamaGGUFConfig:
    return LlamaGGUFConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        num_kv_heads=cfg.num_heads,
        context_length=cfg.max_position,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_theta=cfg.rope_theta,
        name=name,
    )


def write_model_gguf(
    model: TinyLlama, tok: BPETokenizer, out: Path, dtype: str = "f16", **kwargs: Any
) -> Path:
    """Write any TinyLlama (SeedΔ layers are materialised to dense weights) as a stock llama GGUF."""
    state = {}
    for name, value in model.state_dict().items():
        if name == "lm_head.weight" or not name.endswith(".weight"):
            continue
        state[name] = value.detach().float()
    for name, module in model.named_modules():
        if isinstance(module, SeedDeltaLinear):
            state[f"{name}.weight"] = module.dense_weight().float()
    return write_llama_gguf(
        out,
        state,
        gguf_config(model.cfg),
        tok,
        dtype=dtype,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        pad_id=PAD_ID,
        # Samples are "<s>" + prompt text: llama.cpp adds the bos itself to a text prompt.
        add_bos=True,
        **kwargs,
    )


# ------------------------------------------------------------------------------------ reading
def dequantize(array: np.ndarray, type_name: str, name: str) -> np.ndarray:
    """A tensor of any GGML type as float32 (F32/F16 directly, block types through gguf-py)."""
    import gguf

    if type_name in ("F32", "F16", "F64", "BF16") and array.dtype != np.uint8:
        return array.astype(np.float32)
    try:
        qtype = gguf.GGMLQuantizationType[type_name]
        return np.asarray(gguf.quants.dequantize(array, qtype), dtype=np.float32)
    except (KeyError, NotImplementedError) as exc:
        raise SeedDeltaError(f"tensor {name}: cannot dequantize GGML type {type_name} ({exc})") from None


def _meta(md: Mapping[str, Any], arch: str, key: str, path: Path, default: Any = None) -> Any:
    full = f"{arch}.{key}"
    if full in md:
        return md[full]
    if default is None:
        raise SeedDeltaError(f"{path}: metadata key {full!r} is missing")
    return default


def read_checked(path: Path, load_tensors: bool = True) -> Any:
    """read_gguf with the package's error type."""
    try:
        return read_gguf(path, load_tensors=load_tensors)
    except GGUFError as exc:
        raise SeedDeltaError(str(exc)) from None


def model_config_from_metadata(md: Mapping[str, Any], path: Path) -> ModelConfig:
    arch = md.get("general.architecture")
    if arch != "llama":
        raise SeedDeltaError(f"{path}: general.architecture is {arch!r}, expected 'llama'")
    tokens = md.get("tokenizer.ggml.tokens")
    if tokens is None:
        raise SeedDeltaError(f"{path}: metadata key 'tokenizer.ggml.tokens' is missing")
    hidden = int(_meta(md, arch, "embedding_length", path))
    heads = int(_meta(md, arch, "attention.head_count", path))
    kv = int(md.get(f"{arch}.attention.head_count_kv", heads))
    if kv != heads:
        raise SeedDeltaError(
            f"{path}: grouped-query attention (head_count_kv={kv}) is not supported by the tiny model"
        )
    return ModelConfig(
        vocab_size=len(tokens),
        hidden_size=hidden,
        intermediate_size=int(_meta(md, arch, "feed_forward_length", path)),
        num_layers=int(_meta(md, arch, "block_count", path)),
        num_heads=heads,
        max_position=int(_meta(md, arch, "context_length", path)),
        rms_norm_eps=float(_meta(md, arch, "attention.layer_norm_rms_epsilon", path)),
        rope_theta=float(md.get(f"{arch}.rope.freq_base", 10000.0)),
    )


def tokenizer_from_metadata(md: Mapping[str, Any], path: Path) -> BPETokenizer:
    """Rebuild the byte-level BPE (lm_shared's pipeline: NFC, ByteLevel) from ``tokenizer.ggml.*``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

    if md.get("tokenizer.ggml.model") != "gpt2":
        raise SeedDeltaError(
            f"{path}: tokenizer.ggml.model is {md.get('tokenizer.ggml.model')!r}, expected 'gpt2'"
        )
    tokens = list(md["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in md.get("tokenizer.ggml.merges", [])]
    types = list(md.get("tokenizer.ggml.token_type", [1] * len(tokens)))
    hf = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    hf.normalizer = normalizers.NFC()
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    # CONTROL (3) and USER_DEFINED (4) tokens are the tokenizer's special tokens.
    hf.add_special_tokens([AddedToken(t, special=True) for t, ty in zip(tokens, types) if ty in (3, 4)])
    return BPETokenizer(hf)


_SD_SUFFIXES = (
    "d_idx",
    "d_val",
    "b_idx",
    "b_val",
    "d_row_scale",
    "base_d1",
    "base_d2",
    "base_d3",
    "base_perm1",
    "base_cyc",
)


def seeddelta_tensors(
    tensors: Mapping[str, np.ndarray], md: Mapping[str, Any], path: Path
) -> dict[str, SeedDeltaTensor]:
    """``blk.N.ffn_*`` -> SeedDeltaTensor for every tensor a SeedΔ file encodes."""
    out: dict[str, SeedDeltaTensor] = {}
    groups: dict[str, dict[str, np.ndarray]] = {}
    for name, arr in tensors.items():
        m = re.match(r"^(blk\.\d+\.ffn_(?:gate|up|down))\.(\w+)$", name)
        if m and m.group(2) in _SD_SUFFIXES:
            groups.setdefault(m.group(1), {})[m.group(2)] = arr
    block = int(md.get("seeddelta.resid.block", 32))
    for prefix, g in groups.items():
        dense_name = prefix + ".weight"
        kind = prefix.split(".")[-1]
        arch = md.get("general.architecture", "llama")
        hidden = int(md.get(f"{arch}.embedding_length", 0))
        ff = int(md.get(f"{arch}.feed_forward_length", 0))
        n_out, n_in = (ff, hidden) if kind in ("ffn_gate", "ffn_up") else (hidden, ff)
        if dense_name in tensors and tensors[dense_name].dtype != np.uint8:
            n_out, n_in = tensors[dense_name].shape
        if "d_idx" in g:
            if "d_val" not in g:
                raise SeedDeltaError(f"{path}: tensor {prefix}.d_val is missing (its d_idx is present)")
            enc = SeedDeltaTensor(n_in, n_out, "coo", block, d_idx=g["d_idx"], d_val=g["d_val"])
            shape_ok = g["d_idx"].shape == g["d_val"].shape and g["d_idx"].shape[0] == n_out
        elif "b_idx" in g:
            if "b_val" not in g:
                raise SeedDeltaError(f"{path}: tensor {prefix}.b_val is missing (its b_idx is present)")
            block = int(g["b_val"].shape[2])
            enc = SeedDeltaTensor(n_in, n_out, "block", block, b_idx=g["b_idx"], b_val=g["b_val"])
            shape_ok = g["b_idx"].shape[0] == n_out
        else:
            raise SeedDeltaError(f"{path}: tensor {prefix}.d_idx (or .b_idx) is missing")
        if not shape_ok:
            raise SeedDeltaError(f"{path}: tensor {prefix}.d_idx/d_val shapes do not match n_out={n_out}")
        idx = g["d_idx"] if "d_idx" in g else g["b_idx"]
        if idx.size and int(idx.max()) >= (n_in if "d_idx" in g else -(-n_in // block)):
            raise SeedDeltaError(f"{path}: tensor {prefix} has an index beyond n_in={n_in}")
        if "d_row_scale" in g:
            enc.row_scale = g["d_row_scale"]
        if "base_d2" in g:
            if "base_perm1" not in g:
                raise SeedDeltaError(f"{path}: tensor {prefix}.base_perm1 is missing (base_d2 is present)")
            d2 = g["base_d2"].astype(np.float64)
            for extra in ("base_d1", "base_d3"):
                if extra in g:
                    d2 = d2 * g[extra].astype(np.float64)  # d1 = d3 = 1 in the fork; fold them in if not
            Bn, L = d2.shape
            enc.base = Base("xor", n_in, n_out, L, Bn, d2, g["base_perm1"].astype(np.int64))
        elif "base_cyc" in g:
            h = g["base_cyc"].astype(np.float64)
            Bn, L = h.shape
            enc.base = Base("cyclic", n_in, n_out, L, Bn, h, np.tile(np.arange(L), (Bn, 1)))
        out[prefix] = enc
    return out


def load_gguf_model(path: str | os.PathLike[str]) -> tuple[TinyLlama, BPETokenizer, dict[str, Any]]:
    """A llama GGUF (F32/F16/quantized, optionally SeedΔ) as a TinyLlama in eval mode.

    Quantized weights are dequantized; SeedΔ tensors become ``SeedDeltaLinear`` modules (they are
    used even when the dense weight is still present, as the fork's runtime does).
    """
    path = Path(path)
    contents = read_checked(path)
    md, tensors, types = contents.metadata, contents.tensors, contents.tensor_types
    cfg = model_config_from_metadata(md, path)
    tok = tokenizer_from_metadata(md, path)
    sd = seeddelta_tensors(tensors, md, path)
    model = TinyLlama(cfg)
    state: dict[str, torch.Tensor] = {}

    def get(name: str) -> np.ndarray:
        if name not in tensors:
            raise SeedDeltaError(f"{path}: tensor {name!r} is missing")
        return dequantize(tensors[name], types[name], name)

    def put(hf: str, arr: np.ndarray, shape: tuple[int, ...], gname: str) -> None:
        if tuple(arr.shape) != shape:
            raise SeedDeltaError(f"{path}: tensor {gname!r} has shape {tuple(arr.shape)}, expected {shape}")
        state[hf] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))

    expected = model.state_dict()
    head_dim = cfg.hidden_size // cfg.num_heads
    for gname, hf in gguf_to_hf_names(cfg.num_layers).items():
        if hf == "lm_head.weight":
            continue  # tied unless the file has output.weight (below)
        kind = gname.split(".")[2] if gname.startswith("blk.") else ""
        if kind.startswith("ffn_") and kind != "ffn_norm":
            if gname.removesuffix(".weight") in sd:
                state[hf] = torch.zeros(expected[hf].shape)  # replaced by SeedDeltaLinear below
                continue
            if gname not in tensors and md.get("seeddelta.strip_dense"):
                raise SeedDeltaError(f"{path}: tensor {gname} is stripped but no SeedΔ tensors replace it")
        arr = get(gname)
        if kind in ("attn_q", "attn_k"):  # llama.cpp's adjacent-pair RoPE layout back to rotate-half
            arr = permute_interleaved_to_rotate_half(arr, arr.shape[0] // head_dim)
        put(hf, arr, tuple(expected[hf].shape), gname)
    missing = model.load_state_dict(state, strict=False)
    if "output.weight" in tensors:
        model.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        model.lm_head.weight.data = torch.from_numpy(get("output.weight").astype(np.float32))
    bad = [k for k in missing.missing_keys if k != "lm_head.weight"]
    if bad:
        raise SeedDeltaError(f"{path}: could not fill {bad[:3]}")
    for prefix, enc in sd.items():
        layer, kind = int(prefix.split(".")[1]), prefix.split(".")[2]
        setattr(model.model.layers[layer].mlp, HF_MLP[kind], SeedDeltaLinear(enc))
    model.eval()
    return model, tok, {"metadata": md, "seeddelta": sorted(sd), "tensor_types": types}
