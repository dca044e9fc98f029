import time

import pytest
import torch
import torch.nn.functional as F

from lm_shared.profiling import (
    CATEGORIES,
    _op_category,
    matmul_peak_flops,
    measured_training_flops,
    model_flops_utilization,
    profile_training_step,
    split_table,
    transformer_training_flops_per_token,
)


def _toy_step():
    torch.manual_seed(0)
    qkv = torch.nn.Linear(64, 192)
    norm = torch.nn.LayerNorm(64)
    params = [*qkv.parameters(), *norm.parameters()]
    opt = torch.optim.AdamW(params)

    def forward_backward(x):
        q, k, v = qkv(norm(x)).view(2, 32, 3, 4, 16).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y.square().mean().backward()

    def optimizer_step():
        opt.step()
        opt.zero_grad(set_to_none=True)

    return forward_backward, optimizer_step, params


def test_split_attributes_each_phase_and_adds_up():
    forward_backward, optimizer_step, params = _toy_step()
    prof = profile_training_step(
        forward_backward,
        optimizer_step,
        data=lambda: (time.sleep(0.02), torch.randn(2, 32, 64))[1],
        health=lambda: (time.sleep(0.03), torch.nn.utils.clip_grad_norm_(params, 1.0)),
        steps=2,
    )
    assert set(prof.split_ms) == set(CATEGORIES)
    assert prof.split_ms["python_data"] >= 18  # the data phase's sleep
    assert prof.split_ms["logging_health"] >= 28  # the health phase's sleep
    assert prof.split_ms["matmul"] > 0 and prof.split_ms["attention"] > 0
    assert prof.split_ms["optimizer"] > 0
    # Backward ops (run by the autograd engine) are attributed to forward/backward too.
    assert any("backward" in name for name in prof.top_ops)
    assert sum(prof.split_ms.values()) == pytest.approx(prof.step_ms, rel=0.05)
    assert sum(prof.fractions().values()) == pytest.approx(1.0, rel=0.05)
    table = split_table(
        "t", {"toy": prof.as_dict(), "again": prof.as_dict()}, mfu={"toy": 0.25, "again": 0.5}
    )
    assert [c.header for c in table.columns] == ["category", "toy", "again"]
    assert table.row_count == len(CATEGORIES) + 1  # a row per category, then MFU
    assert split_table("t", {"compiled": None}).row_count == 0  # no split taken: no category rows
    assert set(prof.as_dict()) == {"step_ms", "split_ms", "split_fraction", "top_ops_ms"}


def test_op_categories():
    assert _op_category("aten::addmm") == "matmul"
    assert _op_category("aten::_scaled_dot_product_flash_attention_for_cpu_backward") == "attention"
    assert _op_category("aten::_softmax") == "attention"
    assert _op_category("aten::_log_softmax") == "norm_elementwise"  # the loss, not attention
    assert _op_category("aten::native_layer_norm") == "norm_elementwise"


def test_profile_rejects_bad_counts():
    forward_backward, optimizer_step, _ = _toy_step()
    with pytest.raises(ValueError, match="steps"):
        profile_training_step(forward_backward, optimizer_step, steps=0)


def test_matmul_peak_and_mfu():
    torch.set_num_threads(1)
    peak = matmul_peak_flops("float32", size=128, repeats=3)
    assert peak > 1e8  # any CPU of this decade does > 0.1 GFLOP/s
    with pytest.raises(ValueError, match="unknown dtype"):
        matmul_peak_flops("float33")
    # 6·N + 12·L·H·T, PaLM appendix B.
    assert transformer_training_flops_per_token(1_000_000, 4, 256, 128) == 6e6 + 12 * 4 * 256 * 128
    assert model_flops_utilization(1000.0, 1e6, 4e9) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        model_flops_utilization(1.0, 1.0, 0.0)


def test_measured_flops_match_the_matmul_count():
    lin = torch.nn.Linear(64, 32, bias=False)
    x = torch.randn(8, 64, requires_grad=False)
    # forward 2·8·64·32; backward needs only the weight gradient (input needs none): the same again.
    assert measured_training_flops(lambda: lin(x).sum().backward()) == 2 * (2 * 8 * 64 * 32)
