"""The fork's per-tensor report metrics (``sd_eval.cpp``), plus the same on real activations.

All metrics are computed on ``eval_cols`` randomly sampled output rows (all rows when it is 0 or
larger than n_out). Weight space (``plain`` and ``_w``): per row ``rel_l2 = ||w - sŵ|| / ||w||``,
cosine and ``norm_ratio = ||sŵ|| / ||w||`` (``_w``: both vectors multiplied by ws), summarised as
mean, rel_l2 p95, cos p05 and mean norm ratio. Functional (``_x``, ``_x_w``): for each of ``eval_x``
inputs x ~ N(0, I) (``_x_w``: x_i ~ N(0, ws_i^2)) compare ``W x`` with ``Ŵ x`` on the sampled rows;
summarised the same way across the x vectors. Percentiles are linearly interpolated
(``numpy.percentile``'s default, the fork's interpolation). ``_act`` does the functional metric
on captured activations instead of Gaussian x.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seeddelta.delta import SeedDeltaTensor

_EPS = 1e-30


def _row_stats(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rel_l2, cos and norm_ratio of b against a, per row (last axis)."""
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    nd = np.linalg.norm(a - b, axis=-1)
    both_zero = (na <= _EPS) & (nb <= _EPS)
    rel = np.where(both_zero, 0.0, nd / np.maximum(na, _EPS))
    cos = np.where(both_zero, 1.0, (a * b).sum(-1) / np.maximum(na * nb, _EPS))
    ratio = np.where(both_zero, 1.0, nb / np.maximum(na, _EPS))
    return rel, np.clip(cos, -1.0, 1.0), ratio


def _summary(rel: np.ndarray, cos: np.ndarray, ratio: np.ndarray, suffix: str) -> dict[str, float]:
    return {
        f"rel_l2_mean{suffix}": float(rel.mean()),
        f"rel_l2_p95{suffix}": float(np.percentile(rel, 95)),
        f"cos_mean{suffix}": float(cos.mean()),
        f"cos_p05{suffix}": float(np.percentile(cos, 5)),
        f"norm_ratio_mean{suffix}": float(ratio.mean()),
    }


def sample_rows(n_out: int, eval_cols: int, rng: np.random.Generator) -> np.ndarray:
    if eval_cols <= 0 or eval_cols >= n_out:
        return np.arange(n_out)
    return np.sort(rng.choice(n_out, size=eval_cols, replace=False))


def weight_metrics(W: np.ndarray, W_hat: np.ndarray, ws: np.ndarray, rows: np.ndarray) -> dict[str, float]:
    """Weight-space metrics (plain and ``_w``) on the given rows."""
    a, b = W[rows], W_hat[rows]
    out = _summary(*_row_stats(a, b), "")
    out.update(_summary(*_row_stats(a * ws, b * ws), "_w"))
    return out


def functional_metrics(
    W: np.ndarray, W_hat: np.ndarray, X: np.ndarray, rows: np.ndarray, suffix: str
) -> dict[str, float]:
    """Functional metrics for the inputs ``X`` (n_x, n_in): one sample per x vector."""
    Y = X @ W[rows].T
    Y_hat = X @ W_hat[rows].T
    return _summary(*_row_stats(Y, Y_hat), suffix)


def tensor_metrics(
    W: np.ndarray,
    enc: SeedDeltaTensor,
    *,
    ws: np.ndarray | None = None,
    eval_cols: int = 0,
    eval_x: int = 0,
    activations: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """Every metric of the fork's report for one tensor, plus ``_act`` ones when activations are given."""
    W = np.asarray(W, dtype=np.float64)
    rng = rng if rng is not None else np.random.default_rng(1234)
    n_out, n_in = W.shape
    ws = np.ones(n_in) if ws is None else ws
    W_hat = enc.dense()
    rows = sample_rows(n_out, eval_cols, rng)
    out: dict[str, Any] = weight_metrics(W, W_hat, ws, rows)
    if eval_x > 0:
        X = rng.standard_normal((eval_x, n_in))
        out.update(functional_metrics(W, W_hat, X, rows, "_x"))
        out.update(functional_metrics(W, W_hat, X * ws, rows, "_x_w"))
    if activations is not None and len(activations):
        out.update(functional_metrics(W, W_hat, np.asarray(activations, dtype=np.float64), rows, "_act"))
    out.update(cost(enc))
    out["ffn_score"] = ffn_score(out)
    return out


def ffn_score(m: dict[str, Any]) -> float | None:
    """``min(cos_mean, cos_p05)`` preferring the x_w, then x, then w, then plain variants."""
    for suffix in ("_x_w", "_x", "_w", ""):
        if f"cos_mean{suffix}" in m:
            return float(min(m[f"cos_mean{suffix}"], m[f"cos_p05{suffix}"]))
    return None


def cost(enc: SeedDeltaTensor) -> dict[str, float]:
    """The fork's op counts: dense 2·n_in·n_out, delta 2·K·n_out, base B(2L log2 L + 3L)."""
    ops_dense = 2 * enc.n_in * enc.n_out
    ops_delta = 2 * enc.K * enc.n_out
    ops_base = enc.base.ops() if enc.base is not None else 0
    return {
        "ops_dense": ops_dense,
        "ops_delta": ops_delta,
        "ops_base": ops_base,
        "ops_ratio": (ops_delta + ops_base) / ops_dense,
        "base_L": enc.base.L if enc.base is not None else 0,
        "base_B": enc.base.B if enc.base is not None else 0,
    }


def ffn_proxy(
    W_gate: np.ndarray,
    W_up: np.ndarray,
    W_down: np.ndarray,
    which: str,
    W_hat: np.ndarray,
    *,
    eval_cols: int,
    eval_x: int,
    rng: np.random.Generator,
) -> dict[str, float]:
    """The fork's ``ffn_proxy``: replace gate or up by ``W_hat`` (row scale ignored) and compare the
    FFN output ``Σ_h W_down[:, h] silu(g_h) u_h`` over sampled hidden units h, for unweighted x."""
    n_ff, n_in = W_gate.shape
    hidden = sample_rows(n_ff, eval_cols, rng)
    X = rng.standard_normal((eval_x, n_in))
    g, u = X @ W_gate[hidden].T, X @ W_up[hidden].T
    if which == "gate":
        g_hat, u_hat = X @ W_hat[hidden].T, u
    else:
        g_hat, u_hat = g, X @ W_hat[hidden].T

    def silu(z: np.ndarray) -> np.ndarray:
        return z / (1.0 + np.exp(-z))

    Wd = W_down[:, hidden]
    y = (silu(g) * u) @ Wd.T
    y_hat = (silu(g_hat) * u_hat) @ Wd.T
    rel, cos, ratio = _row_stats(y, y_hat)
    l2 = np.linalg.norm(y - y_hat, axis=-1)
    lognr = np.log(np.maximum(ratio, _EPS))
    return {
        "ffn_proxy_cos_mean": float(cos.mean()),
        "ffn_proxy_cos_p05": float(np.percentile(cos, 5)),
        "ffn_proxy_l2_mean": float(l2.mean()),
        "ffn_proxy_l2_p95": float(np.percentile(l2, 95)),
        "ffn_proxy_log_norm_ratio_mean": float(lognr.mean()),
        "ffn_proxy_log_norm_ratio_p95": float(np.percentile(lognr, 95)),
        "ffn_proxy_score": float(
            max(1 - np.percentile(cos, 5), np.percentile(l2, 95), abs(np.percentile(lognr, 95)))
        ),
    }


def dropped_mass_prediction(W: np.ndarray, enc: SeedDeltaTensor) -> np.ndarray:
    """Per-row rel_l2 predicted from the residual mass Δ did not keep (exact when s = 1 and values exact)."""
    R = np.asarray(W, dtype=np.float64) - enc.base_dense()
    kept = enc.delta_dense()
    dropped = np.linalg.norm(R - kept, axis=1)
    norms = np.linalg.norm(W, axis=1)
    return np.where(norms > 0, dropped / np.maximum(norms, _EPS), 0.0)


def bits_per_weight(enc: SeedDeltaTensor) -> float:
    return 8.0 * enc.n_bytes() / (enc.n_in * enc.n_out)


__all__ = [
    "bits_per_weight",
    "cost",
    "dropped_mass_prediction",
    "ffn_proxy",
    "ffn_score",
    "functional_metrics",
    "sample_rows",
    "tensor_metrics",
    "weight_metrics",
]
