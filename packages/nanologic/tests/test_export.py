import pytest
import torch

from nanologic.data import EOS, SPECIAL_TOKENS, prompt_text
from nanologic.export import export_model, hf_llama_state_dict, unsupported_features
from nanologic.generator import generate
from nanologic.llamacpp import POLARITY_MARKS_KEY, read_checked_metadata
from nanologic.model import NanoLogic, build_config


@pytest.fixture(scope="module")
def tokenizer():
    from lm_shared.tokenization import train_bpe

    texts = [e["natural_language_input"] for e in generate(200, seed=1)]
    return train_bpe(texts, 600, SPECIAL_TOKENS)


def test_refusals_name_the_features():
    cfg = build_config("base-full", 100)
    problems = " ".join(unsupported_features(cfg))
    for word in ("QK-norm", "differential attention", "gate-residual", "attention soft-cap", "final logit"):
        assert word in problems
    assert unsupported_features(build_config("cpu-export", 100)) == []
    assert unsupported_features(build_config("base-export", 100), allow_final_softcap=True) == []


def test_folded_scales_reproduce_the_logits(tokenizer):
    """HF Llama with the exported weights gives our logits (embedding scale, head scale folded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = build_config(
        "tiny", tokenizer.vocab_size, qk_norm=False, final_softcap=0.0, copy_head=False, rope_layout="half"
    )
    model = NanoLogic(cfg).eval()
    with torch.no_grad():
        model.head_scale.fill_(1.7)
    hf = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_kv_heads,
            rms_norm_eps=cfg.rms_norm_eps,
            rope_theta=cfg.rope_theta,
            tie_word_embeddings=True,
            max_position_embeddings=cfg.max_seq_len,
        )
    ).eval()
    hf.load_state_dict(hf_llama_state_dict(model), strict=False)
    hf.tie_weights()
    ids = torch.randint(10, cfg.vocab_size, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids)["logits"], atol=1e-4, rtol=1e-4)


@pytest.mark.llamacpp
def test_llamacpp_greedy_equals_torch(tokenizer, tmp_path):
    pytest.importorskip("llama_cpp")
    from lm_shared.gguf import compare_with_llamacpp

    torch.manual_seed(0)
    cfg = build_config("tiny", tokenizer.vocab_size, qk_norm=False, final_softcap=0.0, copy_head=False)
    model = NanoLogic(cfg).eval()
    path = export_model(model, tokenizer, tmp_path / "m.gguf")
    assert read_checked_metadata(path)[POLARITY_MARKS_KEY] is True  # llama.cpp's formaliser applies them

    def reference(ids):
        with torch.no_grad():
            return model(torch.tensor([ids]))["logits"][0].double().numpy()

    sentences = [
        "Si llueve y no llevo paraguas, entonces me mojo.",
        "El servidor no responde a tiempo salvo que haya backup.",
        "O bien los tests pasan, o bien el build se rompe.",
        "Ni hace frío ni nieva.",
    ]
    for s in sentences:
        ids = tokenizer.encode(prompt_text(s))
        result = compare_with_llamacpp(
            path, reference, ids, n_greedy=16, stop_ids=[tokenizer.token_to_id(EOS)]
        )
        assert result["greedy_equal"], (s, result)
        assert result["max_abs_diff"] < 1e-3


def test_transformers_loads_our_gguf_with_the_same_logits(tokenizer, tmp_path):
    """A second consumer: transformers' GGUF loader (un-permutes Q/K itself) gives our logits."""
    pytest.importorskip("accelerate")  # transformers needs it for gguf_file=
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = build_config("tiny", tokenizer.vocab_size, qk_norm=False, final_softcap=0.0, copy_head=False)
    model = NanoLogic(cfg).eval()
    path = export_model(model, tokenizer, tmp_path / "m.gguf")
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32).eval()
    for sentence in ("Si llueve, me mojo.", "El error 500 aparece cada 27 días."):
        ids = torch.tensor([tokenizer.encode(prompt_text(sentence))])
        with torch.no_grad():
            torch.testing.assert_close(hf(ids).logits, model(ids)["logits"], atol=1e-4, rtol=1e-4)
