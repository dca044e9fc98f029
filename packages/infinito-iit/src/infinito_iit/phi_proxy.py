"""A Gaussian integrated-information proxy (Φ_AR) for the residual stream, as a diagnostic.

System: the K leading principal components of the residual stream after one layer, treated as a
K-variable process over token time t -> t+1 (the only loop a causal LM has). Following Barrett &
Seth (2011, PLoS CB 7:e1001052), for a Gaussian process

    I(S) = I(S_t ; S_{t-1}) = 1/2 [log det Σ(S_t) + log det Σ(S_{t-1}) - log det Σ(S_t, S_{t-1})]

is the time-lagged mutual information of a set of variables S, and for a bipartition {A, B}

    Φ_AR(A, B) = I(A ∪ B) - I(A) - I(B).

The proxy is the minimum of Φ_AR over bipartitions (exhaustive up to ``EXHAUSTIVE_MAX_K``
components, otherwise a greedy search stated in the result), reported with the whole-system
mutual information, bootstrap confidence intervals over sequences, and nulls. It is invariant to
rescaling any component (log-determinant ratios), exactly 0 for independent blocks in population,
and it is *not* IIT 3.0's Φ: a transformer forward pass is feed-forward. No consciousness claim.
Φ_AR can be negative when the parts predict themselves better than their share of the whole
(Barrett & Seth discuss this); the value is reported as computed, never clipped.
Unlike the partition search of Barrett & Seth we do not normalise by part entropies (that
normalisation is not scale-invariant); the bipartition with the smallest raw Φ_AR is reported.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .model import InfinitoLM

EXHAUSTIVE_MAX_K = 12
"""Up to this many components every bipartition is scored (2**(K-1) - 1 of them)."""


def lagged_joint_covariance(series: np.ndarray) -> np.ndarray:
    """Covariance ``[2K, 2K]`` of (x_t, x_{t-1}) pairs pooled over sequences.

    ``series`` is ``[n_sequences, T, K]``; pairs never cross a sequence boundary.
    """
    if series.ndim != 3 or series.shape[1] < 2:
        raise ValueError(f"series must be [n_sequences, T>=2, K], got shape {series.shape}")
    present = series[:, 1:].reshape(-1, series.shape[2])
    past = series[:, :-1].reshape(-1, series.shape[2])
    joint = np.concatenate([present, past], axis=1).astype(np.float64)
    joint -= joint.mean(axis=0, keepdims=True)
    return joint.T @ joint / max(joint.shape[0] - 1, 1)


def _logdet(matrix: np.ndarray) -> float:
    sign, value = np.linalg.slogdet(matrix)
    if sign <= 0:
        raise np.linalg.LinAlgError("covariance is not positive definite")
    return float(value)


def lagged_mutual_information(cov: np.ndarray, subset: Sequence[int]) -> float:
    """I(S_t ; S_{t-1}) in nats for the variables ``subset`` of a lagged joint covariance."""
    k = cov.shape[0] // 2
    idx = np.asarray(subset, dtype=int)
    both = np.concatenate([idx, idx + k])
    # A ridge relative to the diagonal keeps near-singular blocks finite and stays scale-invariant.
    block = cov[np.ix_(both, both)]
    block = block + 1e-9 * np.diag(np.diag(block))
    n = len(idx)
    return 0.5 * (_logdet(block[:n, :n]) + _logdet(block[n:, n:]) - _logdet(block))


def phi_ar(cov: np.ndarray, part_a: Sequence[int], part_b: Sequence[int]) -> float:
    """Φ_AR for one bipartition: I(whole) - I(A) - I(B)."""
    whole = sorted([*part_a, *part_b])
    return (
        lagged_mutual_information(cov, whole)
        - lagged_mutual_information(cov, part_a)
        - lagged_mutual_information(cov, part_b)
    )


@dataclass
class Bipartition:
    phi: float  # Φ_AR at the minimum bipartition (nats)
    total_mi: float  # whole-system I(X_t; X_{t-1}) (nats)
    part_a: tuple[int, ...]
    part_b: tuple[int, ...]
    search: str  # how the minimum was searched


def minimum_bipartition(cov: np.ndarray, *, seed: int = 0, restarts: int = 8) -> Bipartition:
    """Minimise Φ_AR over bipartitions of the K variables of ``cov`` (``[2K, 2K]``).

    Exhaustive for K <= ``EXHAUSTIVE_MAX_K`` (each subset's MI is computed once and shared);
    beyond that, greedy single-variable moves from ``restarts`` random bipartitions (a local
    minimum, stated in ``search``).
    """
    k = cov.shape[0] // 2
    if k < 2:
        raise ValueError("Φ needs at least 2 components")
    whole = tuple(range(k))
    total = lagged_mutual_information(cov, whole)
    cache: dict[tuple[int, ...], float] = {}

    def mi(subset: tuple[int, ...]) -> float:
        if subset not in cache:
            cache[subset] = lagged_mutual_information(cov, subset)
        return cache[subset]

    def score(part_a: tuple[int, ...]) -> float:
        part_b = tuple(i for i in whole if i not in part_a)
        return total - mi(part_a) - mi(part_b)

    if k <= EXHAUSTIVE_MAX_K:
        # Fix variable 0 in part A so each bipartition is visited once.
        candidates = (
            (0, *rest) for size in range(0, k - 1) for rest in itertools.combinations(range(1, k), size)
        )
        best = min(candidates, key=score)
        search = f"exhaustive over {2 ** (k - 1) - 1} bipartitions"
    else:
        rng = np.random.default_rng(seed)
        best, best_score = (0,), float("inf")
        for _ in range(restarts):
            in_a = rng.random(k) < 0.5
            in_a[0], in_a[-1] = True, False
            improved = True
            while improved:
                improved = False
                current = score(tuple(np.flatnonzero(in_a)))
                for i in range(k):
                    in_a[i] = not in_a[i]
                    if 0 < in_a.sum() < k and (s := score(tuple(np.flatnonzero(in_a)))) < current - 1e-12:
                        current, improved = s, True
                    else:
                        in_a[i] = not in_a[i]
            if current < best_score:
                best, best_score = tuple(int(i) for i in np.flatnonzero(in_a)), current
        search = f"greedy single-variable moves from {restarts} random starts (local minimum, K > {EXHAUSTIVE_MAX_K})"
    part_b = tuple(i for i in whole if i not in best)
    return Bipartition(phi=score(best), total_mi=total, part_a=tuple(best), part_b=part_b, search=search)


def leading_components(states: np.ndarray, k: int) -> np.ndarray:
    """Project ``[n_seq, T, D]`` states on their ``k`` leading principal components -> ``[n_seq, T, k]``."""
    n, t, d = states.shape
    if not 2 <= k <= d:
        raise ValueError(f"k must be in [2, {d}] for {d}-dimensional states, got {k}")
    flat = states.reshape(-1, d).astype(np.float64)
    flat = flat - flat.mean(axis=0, keepdims=True)
    eigval, eigvec = np.linalg.eigh(flat.T @ flat)
    top = eigvec[:, np.argsort(eigval)[::-1][:k]]
    return (flat @ top).reshape(n, t, k)


@dataclass
class PhiProxyReport:
    """The proxy for one set of activations, with its bootstrap interval."""

    phi: float
    total_mi: float
    part_a: tuple[int, ...]
    part_b: tuple[int, ...]
    search: str
    k: int
    n_pairs: int
    phi_ci: tuple[float, float] | None = None  # 95% percentile bootstrap over sequences
    total_mi_ci: tuple[float, float] | None = None
    n_bootstrap: int = 0
    nulls: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def phi_proxy_from_series(series: np.ndarray, *, n_bootstrap: int = 0, seed: int = 0) -> PhiProxyReport:
    """Proxy for a ``[n_seq, T, K]`` series, with a bootstrap over sequences when asked."""
    start = time.perf_counter()
    best = minimum_bipartition(lagged_joint_covariance(series), seed=seed)
    report = PhiProxyReport(
        phi=best.phi,
        total_mi=best.total_mi,
        part_a=best.part_a,
        part_b=best.part_b,
        search=best.search,
        k=series.shape[2],
        n_pairs=series.shape[0] * (series.shape[1] - 1),
    )
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        phis, mis = [], []
        for _ in range(n_bootstrap):
            rows = rng.integers(0, series.shape[0], series.shape[0])
            sample = minimum_bipartition(lagged_joint_covariance(series[rows]), seed=seed)
            phis.append(sample.phi)
            mis.append(sample.total_mi)
        report.phi_ci = (float(np.percentile(phis, 2.5)), float(np.percentile(phis, 97.5)))
        report.total_mi_ci = (float(np.percentile(mis, 2.5)), float(np.percentile(mis, 97.5)))
        report.n_bootstrap = n_bootstrap
    report.seconds = time.perf_counter() - start
    return report


@torch.no_grad()
def residual_states(
    model: InfinitoLM, input_ids: torch.Tensor, layer: int, batch_size: int = 32
) -> np.ndarray:
    """Residual stream ``[n_seq, T, D]`` after block ``layer`` (0 = embeddings), in eval mode."""
    num_layers = model.config.num_layers
    if not 0 <= layer <= num_layers:
        raise ValueError(f"layer must be in [0, {num_layers}], got {layer}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    try:
        for i in range(0, input_ids.shape[0], batch_size):
            out = model(input_ids[i : i + batch_size].to(device), output_hidden_states=True)
            chunks.append(out.hidden_states[layer].float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(chunks)


@torch.no_grad()
def model_phi_proxy(
    model: InfinitoLM,
    input_ids: torch.Tensor,
    *,
    k: int = 8,
    layer: int | None = None,
    n_bootstrap: int = 0,
    null_model: InfinitoLM | None = None,
    seed: int = 0,
) -> PhiProxyReport:
    """The Gaussian Φ proxy of ``model`` on ``input_ids`` (``[n_seq, T]``), with nulls.

    Nulls (same K, layer and sequences): ``time_shuffled`` permutes the time steps of each
    sequence's activations (destroys the lag structure: Φ and MI should drop to ~0);
    ``shuffled_tokens`` feeds the same tokens in a random order within each sequence;
    ``random_init`` uses ``null_model`` (an untrained model of the same config) when given.
    """
    layer = model.config.num_layers if layer is None else layer
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    series = leading_components(residual_states(model, input_ids, layer), k)
    report = phi_proxy_from_series(series, n_bootstrap=n_bootstrap, seed=seed)

    def summary(s: np.ndarray) -> dict[str, float]:
        best = minimum_bipartition(lagged_joint_covariance(s), seed=seed)
        return {"phi": best.phi, "total_mi": best.total_mi}

    time_perm = np.stack([rng.permutation(series.shape[1]) for _ in range(series.shape[0])])
    report.nulls["time_shuffled"] = summary(np.take_along_axis(series, time_perm[:, :, None], axis=1))
    token_perm = torch.stack(
        [torch.randperm(input_ids.shape[1], generator=gen) for _ in range(input_ids.shape[0])]
    )
    shuffled = input_ids.gather(1, token_perm.to(input_ids.device))
    report.nulls["shuffled_tokens"] = summary(leading_components(residual_states(model, shuffled, layer), k))
    if null_model is not None:
        report.nulls["random_init"] = summary(
            leading_components(residual_states(null_model, input_ids, layer), k)
        )
    return report
