"""Bases, Δ selection, row scale, metrics and SeedDeltaLinear."""

import numpy as np
import pytest
import torch

from seeddelta.bases import fit_base, fwht, hadamard
from seeddelta.delta import DeltaConfig, encode, importance_weights, refit_values
from seeddelta.errors import SeedDeltaError
from seeddelta.linear import SeedDeltaLinear, fwht_torch
from seeddelta.metrics import tensor_metrics

SHAPES = [(64, 64), (96, 40), (40, 96), (70, 33)]


def test_fwht_matches_hadamard_and_is_self_inverse() -> None:
    x = np.random.default_rng(0).standard_normal((3, 16))
    H = hadamard(16)
    np.testing.assert_allclose(fwht(x), x @ H.T, atol=1e-12)
    np.testing.assert_allclose(fwht(fwht(x)) / 16, x, atol=1e-12)
    np.testing.assert_allclose(fwht_torch(torch.from_numpy(x)).numpy(), fwht(x), atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["xor", "cyclic"])
def test_fast_base_equals_dense_form(shape: tuple[int, int], kind: str) -> None:
    rng = np.random.default_rng(1)
    W = rng.standard_normal(shape)
    base = fit_base(W, kind, perm_trials=3, rng=rng)
    x = rng.standard_normal((4, shape[1]))
    np.testing.assert_allclose(base.apply(x), x @ base.dense().T, atol=1e-10)


def test_xor_base_is_hdh_form() -> None:
    rng = np.random.default_rng(2)
    base = fit_base(rng.standard_normal((32, 32)), "xor", perm_trials=2, rng=rng)
    H = hadamard(32)
    P = np.eye(32)[base.perm[0]]  # gather: (P x)[j] = x[perm[j]]
    np.testing.assert_allclose(H @ np.diag(base.diag[0]) @ H @ P, base.dense(), atol=1e-10)


def test_xor_fit_is_weighted_least_squares() -> None:
    rng = np.random.default_rng(3)
    W = rng.standard_normal((16, 16))
    ws = rng.uniform(0.2, 2.0, 16)
    h = fwht(fit_base(W, "xor", ws).diag[0])
    u = np.arange(16)[:, None] ^ np.arange(16)[None, :]
    for k in (0, 5, 11):
        m = u == k
        wgt = np.broadcast_to(ws**2, W.shape)[m]
        assert h[k] == pytest.approx((W[m] * wgt).sum() / wgt.sum())


def test_perm_trials_never_worse() -> None:
    rng = np.random.default_rng(4)
    W = rng.standard_normal((64, 64))
    e1 = np.linalg.norm(W - fit_base(W, "xor", perm_trials=1).dense())
    e8 = np.linalg.norm(W - fit_base(W, "xor", perm_trials=8).dense())
    assert e8 <= e1 + 1e-12


def test_topk_ranks_by_importance_weighted_residual() -> None:
    W = np.array([[1.0, -3.0, 2.0, 0.5]])
    enc = encode(W, DeltaConfig(K=2, val_type="f32"))
    assert enc.d_idx.tolist() == [[1, 2]]
    imat = np.array([100.0, 1.0, 1e-4, 1.0])
    enc_w = encode(W, DeltaConfig(K=2, val_type="f32"), imatrix=imat)
    assert enc_w.d_idx.tolist() == [[0, 1]]
    assert enc_w.d_val.tolist() == [[1.0, -3.0]]  # exact residuals, no refit


def test_importance_weights_mean_one() -> None:
    ws = importance_weights(np.array([4.0, 1.0, 0.0]), 3)
    assert ws.mean() == pytest.approx(1.0)
    assert ws[0] / ws[1] == pytest.approx(2.0)  # sqrt(imatrix)
    with pytest.raises(SeedDeltaError, match="expected n_in=4"):
        importance_weights(np.ones(3), 4)


def test_zero_residuals_are_padded() -> None:
    enc = encode(np.eye(4), DeltaConfig(K=3, val_type="f32", idx_type="i32"))
    assert enc.d_idx.dtype == np.int32
    assert (enc.d_idx == -1).sum(axis=1).tolist() == [2, 2, 2, 2]
    np.testing.assert_array_equal(enc.dense(), np.eye(4))


def test_block_scheme_rounds_k_up_and_keeps_energetic_blocks() -> None:
    W = np.zeros((2, 10))
    W[0, 4:6] = 5.0
    W[1, 8:10] = 1.0
    enc = encode(W, DeltaConfig(K=3, scheme="block", block=2, val_type="f32"))
    assert enc.K == 4 and enc.b_idx.shape == (2, 2) and enc.b_val.shape == (2, 2, 2)
    assert 2 in enc.b_idx[0] and 4 in enc.b_idx[1]
    np.testing.assert_allclose(enc.dense(), W)


def test_row_scale_is_one_without_base_and_lsq_with_base() -> None:
    rng = np.random.default_rng(5)
    W = rng.standard_normal((32, 32))
    enc = encode(W, DeltaConfig(K=4, row_scale=True))
    assert np.all(enc.row_scale == 1.0)
    enc_b = encode(W, DeltaConfig(K=4, row_scale=True, base="xor", val_type="f32"))
    W_hat = enc_b.base_dense() + enc_b.delta_dense()
    s = (W * W_hat).sum(1) / (W_hat * W_hat).sum(1)
    np.testing.assert_allclose(enc_b.row_scale, s.astype(np.float16))
    assert enc_b.row_scale.dtype == np.float16


def test_k_and_index_type_errors() -> None:
    with pytest.raises(SeedDeltaError, match="K=9 is larger than n_in=8"):
        encode(np.ones((2, 8)), DeltaConfig(K=9), name="blk.0.ffn_up")
    with pytest.raises(SeedDeltaError, match="idx-type i16.*n_in=40000"):
        encode(np.ones((1, 40000)), DeltaConfig(K=1, idx_type="i16"))


@pytest.mark.parametrize("base", ["none", "xor", "cyclic"])
@pytest.mark.parametrize("scheme", ["coo", "block"])
@pytest.mark.parametrize("shape", SHAPES)
def test_seeddelta_linear_matches_dense(base: str, scheme: str, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(6)
    W = rng.standard_normal(shape)
    enc = encode(W, DeltaConfig(K=5, base=base, scheme=scheme, block=4, val_type="f32", row_scale=True))
    lin = SeedDeltaLinear(enc, torch.float64)
    x = torch.randn(2, 3, shape[1], dtype=torch.float64)
    ref = x @ torch.from_numpy(enc.dense()).T
    torch.testing.assert_close(lin(x), ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(lin.dense_weight(), torch.from_numpy(enc.dense()), atol=1e-10, rtol=0)


def test_metrics_perfect_and_percentiles() -> None:
    W = np.eye(8)
    enc = encode(W, DeltaConfig(K=1))
    m = tensor_metrics(W, enc, eval_x=4)
    assert m["rel_l2_mean"] == 0 and m["cos_p05"] == 1 and m["cos_mean_x_w"] == pytest.approx(1)
    assert m["ffn_score"] == pytest.approx(1.0)
    assert m["ops_ratio"] == pytest.approx(1 / 8)


def test_metrics_interpolated_percentile() -> None:
    rng = np.random.default_rng(7)
    W = rng.standard_normal((11, 20))
    enc = encode(W, DeltaConfig(K=3, val_type="f32"))
    m = tensor_metrics(W, enc)
    rel = np.linalg.norm(W - enc.dense(), axis=1) / np.linalg.norm(W, axis=1)
    srt = np.sort(rel)
    pos = 0.95 * (len(rel) - 1)
    expect = srt[int(pos)] + (pos - int(pos)) * (srt[int(pos) + 1] - srt[int(pos)])
    assert m["rel_l2_p95"] == pytest.approx(expect)


def test_refit_beats_magnitude_selection_on_activations() -> None:
    rng = np.random.default_rng(8)
    n_in = 48
    # correlated activations, as real hidden states are
    X = rng.standard_normal((512, 8)) @ rng.standard_normal((8, n_in)) + 0.1 * rng.standard_normal(
        (512, n_in)
    )
    W = rng.standard_normal((16, n_in))
    enc = encode(W, DeltaConfig(K=8, val_type="f32"))
    ref = refit_values(enc, W, X)
    err = np.linalg.norm(X @ (W - enc.dense()).T)
    err_refit = np.linalg.norm(X @ (W - ref.dense()).T)
    assert err_refit < 0.7 * err
    assert (ref.d_idx == enc.d_idx).all()
