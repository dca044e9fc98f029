"""GGUF writing and the llama.cpp round trip on a tiny random LLaMA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lm_shared.gguf import (
    GGUFError,
    LlamaGGUFConfig,
    gguf_to_hf_names,
    hf_to_gguf_name,
    permute_interleaved_to_rotate_half,
    permute_rotate_half_to_interleaved,
    read_gguf,
    write_llama_gguf,
)
from lm_shared.tokenization import train_bpe

SPECIALS = ["<pad>", "<s>", "</s>"]
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "el veloz murciélago hindú comía feliz cardillo y kiwi",
    "0123456789 + - * / = ( ) [ ] { }",
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(CORPUS, vocab_size=320, special_tokens=SPECIALS)


def tiny_llama(vocab_size: int, tie: bool):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights so a mix-up between norms would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    gcfg = LlamaGGUFConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=96,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        context_length=128,
    )
    return model, gcfg


def test_permutation_moves_rows_within_each_head():
    w = np.arange(8 * 3).reshape(8, 3)  # 2 heads of head_dim 4
    p = permute_rotate_half_to_interleaved(w, n_heads=2)
    # head 0 rows [0,1,2,3] -> [0,2,1,3]; head 1 rows [4,5,6,7] -> [4,6,5,7]
    assert [int(r[0]) // 3 for r in p] == [0, 2, 1, 3, 4, 6, 5, 7]
    assert np.array_equal(permute_interleaved_to_rotate_half(p, n_heads=2), w)
    with pytest.raises(GGUFError, match="even size"):
        permute_interleaved_to_rotate_half(w[:6], n_heads=2)


def test_tensor_names_come_from_gguf_py_and_invert():
    assert hf_to_gguf_name("model.embed_tokens.weight") == "token_embd.weight"
    assert hf_to_gguf_name("lm_head.weight") == "output.weight"
    assert hf_to_gguf_name("model.layers.70.self_attn.k_proj.weight") == "blk.70.attn_k.weight"
    assert hf_to_gguf_name("model.layers.0.post_attention_layernorm.weight") == "blk.0.ffn_norm.weight"
    names = gguf_to_hf_names(2)
    assert len(names) == 3 + 2 * 9
    assert names["blk.1.ffn_down.weight"] == "model.layers.1.mlp.down_proj.weight"
    assert all(hf_to_gguf_name(hf) == g for g, hf in names.items())
    for not_llama in ("model.layers.0.self_attn.rotary_emb.inv_freq", "model.layers.0.foo.weight", "bert.x"):
        with pytest.raises(GGUFError, match="no llama GGUF equivalent"):
            hf_to_gguf_name(not_llama)


def test_write_and_read_back(tmp_path, tokenizer):
    model, gcfg = tiny_llama(tokenizer.vocab_size, tie=True)
    sd = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    out = write_llama_gguf(
        tmp_path / "m.gguf",
        sd,
        gcfg,
        tokenizer,
        bos_id=1,
        eos_id=2,
        pad_id=0,
        extra_metadata={"test.flag": True, "test.k": 7},
    )
    contents = read_gguf(out)
    md = contents.metadata
    assert md["general.architecture"] == "llama"
    assert md["llama.block_count"] == 2
    assert md["llama.attention.head_count_kv"] == 2
    assert md["tokenizer.ggml.model"] == "gpt2"
    assert md["tokenizer.ggml.tokens"][:3] == SPECIALS
    assert md["tokenizer.ggml.eos_token_id"] == 2
    assert md["test.k"] == 7 and md["test.flag"] is True
    assert "output.weight" not in contents.tensors  # tied
    emb = model.state_dict()["model.embed_tokens.weight"].numpy()
    np.testing.assert_array_equal(contents.tensors["token_embd.weight"], emb)
    v = model.state_dict()["model.layers.1.self_attn.v_proj.weight"].numpy()
    np.testing.assert_array_equal(contents.tensors["blk.1.attn_v.weight"], v)


def test_f16_keeps_norms_f32(tmp_path, tokenizer):
    model, gcfg = tiny_llama(tokenizer.vocab_size, tie=False)
    out = write_llama_gguf(tmp_path / "h.gguf", model.state_dict(), gcfg, tokenizer, dtype="f16")
    types = read_gguf(out).tensor_types
    assert types["blk.0.attn_q.weight"] == "F16"
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert types["output.weight"] == "F16"


def test_bad_inputs_are_named(tmp_path, tokenizer):
    model, gcfg = tiny_llama(tokenizer.vocab_size, tie=True)
    sd = dict(model.state_dict())
    del sd["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(GGUFError, match="model.layers.1.mlp.up_proj.weight"):
        write_llama_gguf(tmp_path / "x.gguf", sd, gcfg, tokenizer)
    assert not (tmp_path / "x.gguf").exists()
    sd = dict(model.state_dict())
    sd["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(3, 3)
    with pytest.raises(GGUFError, match=r"q_proj.weight.*shape"):
        write_llama_gguf(tmp_path / "x.gguf", sd, gcfg, tokenizer)
    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 40)
    with pytest.raises(GGUFError, match="corrupt.gguf"):
        read_gguf(bad)


@pytest.mark.llamacpp
@pytest.mark.parametrize("tie", [True, False])
def test_llamacpp_round_trip_f32(tmp_path, tokenizer, tie):
    pytest.importorskip("llama_cpp")
    from lm_shared.gguf import compare_with_llamacpp, load_llamacpp

    model, gcfg = tiny_llama(tokenizer.vocab_size, tie=tie)
    sd = dict(model.state_dict())
    if tie:
        sd.pop("lm_head.weight", None)
    path = write_llama_gguf(tmp_path / "m.gguf", sd, gcfg, tokenizer, bos_id=1, eos_id=2, pad_id=0)

    def reference(ids: list[int]) -> np.ndarray:
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0].double().numpy()

    text = "the lazy murciélago jumps 42"
    ids = tokenizer.encode(text)
    # llama.cpp's own tokenizer agrees with ours on the same text
    llm = load_llamacpp(path)
    assert llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) == ids
    rng = np.random.default_rng(0)
    probe = ids + rng.integers(3, tokenizer.vocab_size, size=24).tolist()
    result = compare_with_llamacpp(path, reference, probe, n_greedy=12)
    assert result["max_abs_diff"] < 1e-4, result
    assert result["argmax_agreement"] == 1.0
    assert result["greedy_equal"], result
