import numpy as np
import pytest
import torch

from infinito_iit.model import InfinitoConfig, InfinitoLM
from infinito_iit.phi_proxy import (
    lagged_joint_covariance,
    leading_components,
    minimum_bipartition,
    model_phi_proxy,
    phi_ar,
    phi_proxy_from_series,
)


def var_process(coupling: np.ndarray, n_seq=40, t=200, seed=0) -> np.ndarray:
    """Simulate x_t = A x_{t-1} + noise for each sequence."""
    rng = np.random.default_rng(seed)
    k = coupling.shape[0]
    x = np.zeros((n_seq, t, k))
    for i in range(1, t):
        x[:, i] = x[:, i - 1] @ coupling.T + rng.standard_normal((n_seq, k))
    return x[:, 20:]


def block_covariance() -> np.ndarray:
    """Exact lagged covariance of two independent 2-variable blocks (present, past)."""
    rng = np.random.default_rng(1)
    blocks = []
    for _ in range(2):
        m = rng.standard_normal((4, 4))
        blocks.append(m @ m.T + 4 * np.eye(4))  # joint cov of (a_t, b_t, a_{t-1}, b_{t-1}) for one block
    cov = np.zeros((8, 8))
    # Variable order in the full matrix: present (0, 1, 2, 3), past (4, 5, 6, 7); block 1 = vars 0, 1.
    for b, vars_ in enumerate(([0, 1], [2, 3])):
        idx = vars_ + [v + 4 for v in vars_]
        cov[np.ix_(idx, idx)] = blocks[b]
    return cov


def test_phi_is_exactly_zero_for_independent_blocks():
    cov = block_covariance()
    assert abs(phi_ar(cov, [0, 1], [2, 3])) < 1e-9
    best = minimum_bipartition(cov)
    assert abs(best.phi) < 1e-9 and {best.part_a, best.part_b} == {(0, 1), (2, 3)}
    assert best.total_mi > 0.05


def test_sampled_independent_blocks_near_zero_and_cross_coupled_system_positive():
    a = np.array([[0.8, 0.0, 0.0, 0.0], [0.5, 0.3, 0.0, 0.0], [0.0, 0.0, 0.7, 0.2], [0.0, 0.0, 0.0, 0.6]])
    independent = phi_proxy_from_series(var_process(a))
    # Each variable is driven only by the other one's past: no part predicts itself, the whole does.
    cross = phi_proxy_from_series(var_process(np.array([[0.0, 0.8], [0.8, 0.0]])))
    assert abs(independent.phi) < 0.01 and independent.total_mi > 0.3
    assert cross.phi > 0.3 and cross.phi == pytest.approx(cross.total_mi, rel=0.05)


def test_invariant_to_rescaling_activations():
    series = var_process(np.array([[0.6, 0.3, 0.0], [0.2, 0.5, 0.3], [0.3, 0.0, 0.4]]))
    base = phi_proxy_from_series(series)
    scaled = phi_proxy_from_series(series * np.array([1e3, 0.01, 7.0]))
    assert base.phi == pytest.approx(scaled.phi, rel=1e-6)
    assert base.total_mi == pytest.approx(scaled.total_mi, rel=1e-6)
    states = np.random.default_rng(0).standard_normal((6, 30, 16)).cumsum(axis=1)
    for pcs in (leading_components(states, 4), leading_components(states * 50.0, 4)):
        assert pcs.shape == (6, 30, 4)
    p1 = phi_proxy_from_series(leading_components(states, 4)).phi
    p2 = phi_proxy_from_series(leading_components(states * 50.0, 4)).phi
    assert p1 == pytest.approx(p2, rel=1e-6)


def test_greedy_search_beyond_exhaustive_limit_finds_the_independent_split():
    k = 14
    a = np.zeros((k, k))
    a[:7, :7] = 0.08
    a[7:, 7:] = 0.08
    best = minimum_bipartition(lagged_joint_covariance(var_process(a, n_seq=30, t=300)))
    assert "greedy" in best.search
    assert {best.part_a, best.part_b} == {tuple(range(7)), tuple(range(7, 14))}


def test_bootstrap_interval_contains_estimate():
    series = var_process(np.array([[0.6, 0.3], [0.3, 0.5]]))
    report = phi_proxy_from_series(series, n_bootstrap=30)
    lo, hi = report.phi_ci
    assert lo <= report.phi <= hi and report.n_bootstrap == 30


def test_model_proxy_reports_nulls_and_does_not_train():
    torch.manual_seed(0)
    cfg = InfinitoConfig(
        vocab_size=40, max_seq_len=32, hidden_size=32, num_layers=2, num_heads=4, memory_slots=8
    )
    model, null = InfinitoLM(cfg), InfinitoLM(cfg)
    ids = torch.randint(0, 40, (16, 32))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = model_phi_proxy(model, ids, k=4, n_bootstrap=5, null_model=null)
    assert model.training  # mode restored
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"proxy changed {k}"
    assert set(report.nulls) == {"time_shuffled", "shuffled_tokens", "random_init"}
    assert np.isfinite(report.phi) and report.k == 4 and report.n_pairs == 16 * 31
    assert report.nulls["time_shuffled"]["total_mi"] < report.total_mi
