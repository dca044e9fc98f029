"""Harness A: the original's A1-A5 with the errors they must give."""

import json

import numpy as np
import pytest

from seeddelta.cli import main
from seeddelta.toy import ToyConfig, make_pattern, run_toy

F32_TOL = 1e-6
F16_TOL = 2e-3


def _rel(pattern: str, base: str, K: int, val_type: str = "f32", **kw) -> dict:
    return run_toy(ToyConfig(pattern=pattern, base=base, K=K, val_type=val_type, **kw))


@pytest.mark.parametrize("base", ["none", "xor", "cyclic"])
@pytest.mark.parametrize("K", [1, 8])
def test_a1_identity_exact(base: str, K: int) -> None:
    for val_type in ("f16", "f32"):
        r = _rel("identity", base, K, val_type)
        assert r["rel_l2_mean"] < F32_TOL
        assert r["cos_mean"] > 1 - F32_TOL


@pytest.mark.parametrize("base", ["none", "xor"])
def test_a2_diag_exact_up_to_value_dtype(base: str) -> None:
    # with the xor base and the identity permutation W0 = mean(s) I and Δ holds the diagonal rest;
    # random permutation trials can lower the base's SSE while spreading W0 off the diagonal
    assert _rel("diag", base, 1, "f32", perm_trials=1)["rel_l2_mean"] < F32_TOL
    r16 = _rel("diag", base, 1, "f16", perm_trials=1)
    assert 0 < r16["rel_l2_mean"] < F16_TOL  # f16 rounding of the stored values, nothing more


def test_block_exact_with_xor_base_not_without() -> None:
    assert _rel("block", "xor", 1)["rel_l2_mean"] < F32_TOL
    assert _rel("block", "none", 8)["rel_l2_mean"] < F32_TOL  # K = block keeps every nonzero
    assert _rel("block", "none", 1)["rel_l2_mean"] > 0.5


@pytest.mark.parametrize("shape", [(64, 64), (48, 96), (96, 48)])
def test_a4_circulant_exact_with_cyclic_base_only(shape: tuple[int, int]) -> None:
    n_out, n_in = shape
    assert _rel("circulant", "cyclic", 1, n_out=n_out, n_in=n_in)["rel_l2_mean"] < 1e-5
    xor = _rel("circulant", "xor", 1, n_out=n_out, n_in=n_in)["rel_l2_mean"]
    assert xor > 0.5  # the fork's dyadic base cannot represent a cyclic circulant


def test_a3_lowrank_error_controlled_by_k_and_rank() -> None:
    errs = [_rel("lowrank", "none", K, rank=4)["rel_l2_mean"] for K in (1, 4, 16, 32, 64)]
    assert all(a > b for a, b in zip(errs, errs[1:]))
    assert errs[-1] < F32_TOL  # K = n_in keeps everything
    # the doc's numpy anchor: about 0.95 at K=1 and 0.71 at K=8 for rank 4, n=64
    assert 0.88 < errs[0] < 0.97
    assert 0.6 < _rel("lowrank", "none", 8, rank=4)["rel_l2_mean"] < 0.78
    # rank 1 rows are scaled copies of one vector: same sparsity pattern, same relative error
    r1 = run_toy(ToyConfig(pattern="lowrank", K=8, rank=1, val_type="f32"))
    assert r1["rel_l2_p95"] - r1["rel_l2_mean"] < 1e-9


@pytest.mark.parametrize("pattern", ["lowrank", "circulant", "block", "diag"])
@pytest.mark.parametrize("base", ["none", "xor"])
def test_a5_error_predicted_by_dropped_mass(pattern: str, base: str) -> None:
    for K in (1, 3, 8):
        r = _rel(pattern, base, K)
        assert abs(r["rel_l2_mean"] - r["predicted_rel_l2_mean"]) < 1e-6


def test_make_pattern_is_deterministic() -> None:
    a = make_pattern(ToyConfig(pattern="lowrank", seed=3))
    b = make_pattern(ToyConfig(pattern="lowrank", seed=3))
    np.testing.assert_array_equal(a, b)


def test_cli_toy_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["toy", "--pattern", "block", "--base", "xor", "--K", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rel_l2_mean"] < F16_TOL and report["cos_mean"] > 1 - F16_TOL
    for key in ("rel_l2_p95", "cos_p05", "norm_ratio_mean", "rel_l2_mean_w", "cos_mean_x", "cos_mean_x_w"):
        assert key in report


def test_cli_toy_bad_k(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["toy", "--K", "65", "--json"]) == 2
    assert "K=65 is larger than n_in=64" in capsys.readouterr().err
