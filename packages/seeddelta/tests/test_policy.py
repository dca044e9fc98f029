"""Policy merge order, thresholds, stack guard and stack cost."""

import pytest

from seeddelta.policy import (
    Policy,
    StackState,
    TensorPolicy,
    gate_value,
    parse_layers,
    resolve,
    stack_cost,
    thresholds,
)


def test_parse_layers() -> None:
    assert parse_layers("10-11,14", "x") == {10, 11, 14}
    assert parse_layers(" 3 ", "x") == {3}


def test_merge_order_later_wins() -> None:
    p = Policy.from_dict(
        {
            "version": 1,
            "defaults": {"K": 16, "strip_dense": True, "tensors": {"ffn_down": {"K": 99}}},
            "ranges": [
                {"layers": "0-3", "K": {"gate": 20, "up": 21, "down": 22}},
                {"layers": "2", "K_gate": 30},
            ],
            "layers": {"2": {"block": 8, "tensors": {"ffn_gate": {"K": 40}}}},
        }
    )
    cli = TensorPolicy(K=8)
    assert resolve(p, cli, 5, "ffn_gate").K == 16
    assert resolve(p, cli, 1, "ffn_up").K == 21
    assert resolve(p, cli, 1, "ffn_down").K == 99  # tensors[T] applies after ranges
    r = resolve(p, cli, 2, "ffn_gate")
    assert r.K == 40 and r.block == 8 and r.strip_dense
    assert resolve(None, cli, 2, "ffn_gate").K == 8


def test_baseline_thresholds_and_disable() -> None:
    assert thresholds(TensorPolicy(), "ffn_gate") == (0.45, 0.30)
    assert thresholds(TensorPolicy(), "ffn_down") == (0.25, 0.15)
    p = Policy.from_dict({"version": 1, "defaults": {"gating": {"min_mean": {"down": -1}, "min_p05": 0.2}}})
    assert thresholds(resolve(p, TensorPolicy(), 0, "ffn_down"), "ffn_down") == (-1.0, 0.2)


def test_stack_guard_tightens_then_floors() -> None:
    s = StackState({"direction": "tighten", "after": 3, "step": 0.05, "floor_after": 8}, cap=float("inf"))
    assert s.guarded("ffn_gate", (0.45, 0.30)) == (0.45, 0.30)
    s.passes["gate_up"] = 3
    assert s.guarded("ffn_up", (0.45, 0.30)) == pytest.approx((0.50, 0.35))
    assert s.guarded("ffn_down", (0.25, 0.15)) == (0.25, 0.15)  # groups count separately
    s.passes["gate_up"] = 8
    assert s.guarded("ffn_gate", (0.45, 0.30)) == pytest.approx((0.60, 0.45))
    off = StackState({"direction": "off"}, cap=1.0)
    off.passes["gate_up"] = 10
    assert off.guarded("ffn_gate", (0.45, 0.30)) == (0.45, 0.30)


def test_stack_cost_is_nonzero_for_passing_tensors() -> None:
    # the fork's max(0, tau - m) is 0 whenever the tensor passed; ours measures the error it adds
    assert stack_cost(0.9, 0.8) == pytest.approx(0.3)
    assert stack_cost(1.0, 1.0) == 0.0


def test_forced_metric_for_gate_up_with_eval_x() -> None:
    m = {"cos_mean_x_w": 0.8, "cos_p05_x_w": 0.6, "cos_mean": 0.9, "cos_p05": 0.85}
    assert gate_value(m, "cos", "ffn_gate", eval_x=4) == (0.6, 0.6, "ffn_score_x_w_forced")
    assert gate_value(m, "cos", "ffn_down", eval_x=4) == (0.9, 0.85, "cos")
    assert gate_value(m, "cos_x", "ffn_down", eval_x=0)[0] is None
