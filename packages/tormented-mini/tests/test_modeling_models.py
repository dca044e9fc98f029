"""Whole-model tests: presets, logical layer indices, loss at init, HF save/load and heads."""

import math

import pytest
import torch

from tormented_mini.modeling_tormented import (
    STABLE_PATTERN,
    ConfigError,
    TormentedBertConfig,
    TormentedBertForMaskedLM,
    TormentedBertForSequenceClassification,
    TormentedBertFrankenstein,
    TormentedBertMini,
    UltraConfig,
)


def test_presets_match_the_issue():
    mini = UltraConfig.mini()
    assert (mini.hidden_size, mini.num_layers, mini.num_loops, mini.num_heads) == (384, 6, 2, 6)
    assert mini.layer_pattern == ("retnet", "titan_attn", "retnet", "mamba", "titan_attn", "ode")
    assert mini.norm_type == "derf" and mini.use_factorized_embedding and mini.embedding_size == 128
    frank = UltraConfig.frankenstein()
    assert (frank.hidden_size, frank.num_layers, frank.num_loops) == (1024, 12, 2)
    assert (
        UltraConfig.frankenstein_cpu().hidden_size < 1024
        and UltraConfig.mini_cpu().layer_pattern == STABLE_PATTERN
    )


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (dict(layer_pattern=("retnet", "transformer")), "layer_pattern[1]"),
        (dict(norm_type="batchnorm"), "norm_type"),
        (dict(hidden_size=30, num_heads=4), "not divisible"),
        (dict(top_k_experts=5, num_experts=4), "top_k_experts"),
        (dict(hope_damping=0.9), "hope_damping"),
    ],
)
def test_bad_configs_name_the_field(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        UltraConfig(**overrides)


def test_every_layer_gets_its_logical_index(tiny_config):
    model = TormentedBertMini(tiny_config())
    seen = []
    for layer in model.tormented.layers:
        layer.register_forward_pre_hook(
            lambda mod, args, kwargs: seen.append((mod.layer_idx, kwargs["logical_layer_idx"])),
            with_kwargs=True,
        )
    model(torch.randint(5, 97, (1, 6)))
    assert [idx for _, idx in seen] == list(range(12))
    assert all(logical % 6 == physical for physical, logical in seen)


def test_logical_index_changes_the_computation(tiny_config):
    """The loop embedding makes pass 2 of a layer differ from pass 1 on the same input."""
    torch.manual_seed(0)
    model = TormentedBertMini(tiny_config()).eval()
    layer = model.tormented.layers[0]
    x = torch.randn(1, 5, 32)
    mask = torch.ones(1, 5)
    first, _ = layer(x, mask, logical_layer_idx=0)
    second, _ = layer(x, mask, logical_layer_idx=6)
    assert not torch.allclose(first, second)
    with pytest.raises(ValueError, match="logical_layer_idx"):
        layer(x, mask, logical_layer_idx=1)


def test_initial_loss_is_near_log_vocab(tiny_config):
    torch.manual_seed(0)
    model = TormentedBertFrankenstein(
        tiny_config(model_family="frankenstein", use_factorized_embedding=False)
    )
    ids = torch.randint(5, 97, (4, 16))
    out = model(ids, labels=ids)
    assert abs(out.mlm_loss.item() - math.log(97)) < 0.3
    assert out.aux_loss.item() > 0 and torch.isfinite(out.loss)


def test_mlm_head_is_tied_to_the_factorised_embedding(tiny_config):
    model = TormentedBertMini(tiny_config())
    assert model.mlm_head.decoder.weight is model.tormented.embeddings.word_embeddings.weight
    assert model.tormented.embeddings.word_embeddings.weight.shape == (97, 16)


def test_factorised_embedding_has_fewer_parameters_than_dense():
    dense = TormentedBertForMaskedLM(
        TormentedBertConfig.from_ultra(UltraConfig.mini_cpu(use_factorized_embedding=False))
    )
    fact = TormentedBertForMaskedLM(TormentedBertConfig.from_ultra(UltraConfig.mini_cpu()))
    n = lambda m: sum(p.numel() for p in m.tormented.embeddings.parameters())  # noqa: E731
    assert n(fact) < n(dense)


def test_titan_memory_switch(tiny_config):
    off = TormentedBertMini(tiny_config())
    on = TormentedBertMini(tiny_config(use_titan_memory=True))
    assert not any("memory" in name for name, _ in off.named_parameters())
    assert any("memory" in name for name, _ in on.named_parameters())
    ids = torch.randint(5, 97, (2, 12))
    assert torch.isfinite(on(ids, labels=ids).loss)


def test_whole_model_padding_isolation_and_mini_requires_family(tiny_config):
    torch.manual_seed(0)
    model = TormentedBertMini(tiny_config(use_titan_memory=True)).eval()
    ids = torch.randint(5, 97, (1, 10))
    padded = torch.cat([ids, torch.zeros(1, 6, dtype=torch.long)], dim=1)
    short = model(ids).logits
    long = model(padded, attention_mask=(padded != 0).long()).logits
    torch.testing.assert_close(long[:, :10], short, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="model_family"):
        TormentedBertMini(tiny_config(model_family="frankenstein"))


def test_save_and_load_with_trust_remote_code(tiny_config, tmp_path):
    """A fresh interpreter that never imports tormented_mini loads the folder through auto_map."""
    import subprocess
    import sys

    torch.manual_seed(0)
    model = TormentedBertForMaskedLM(TormentedBertConfig.from_ultra(tiny_config(), pad_token_id=0)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "modeling_tormented.py").is_file()
    ids = torch.randint(5, 97, (2, 9))
    torch.save({"ids": ids, "logits": model(ids).logits.detach()}, tmp_path / "reference.pt")
    script = f"""
import sys, torch
from transformers import AutoModelForMaskedLM
model = AutoModelForMaskedLM.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
assert "tormented_mini" not in sys.modules, "loaded the installed package instead of the folder's code"
ref = torch.load({str(tmp_path / "reference.pt")!r})
torch.testing.assert_close(model(ref["ids"]).logits, ref["logits"])
assert model.mlm_head.decoder.weight is model.tormented.embeddings.word_embeddings.weight
print(type(model).__module__)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "transformers_modules" in done.stdout


def test_sequence_classification_trains(tiny_config):
    torch.manual_seed(0)
    model = TormentedBertForSequenceClassification(
        TormentedBertConfig.from_ultra(tiny_config(), num_labels=3)
    )
    ids = torch.randint(5, 97, (4, 8))
    labels = torch.tensor([0, 1, 2, 1])
    out = model(ids, labels=labels)
    assert out.logits.shape == (4, 3)
    out.loss.backward()
    assert model.classifier.weight.grad is not None
