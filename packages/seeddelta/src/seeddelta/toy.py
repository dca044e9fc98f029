"""Harness A: synthetic matrices whose SeedΔ error is known in advance (the original's A1-A5).

Patterns (``n_out x n_in``):

* ``identity``: the identity (rectangular: ones on the main diagonal). A1: exact for any K >= 1.
* ``diag``: a random diagonal. A2: exact for any K >= 1.
* ``lowrank``: ``U V^T / sqrt(rank)`` with Gaussian factors. A3: no structured base fits it; the
  error is the residual mass outside the top-K entries per row, falling with K, 0 at K = n_in.
* ``circulant``: a cyclic-circulant matrix (blocks ``W[o, i] = h[(o - i) mod L]``). A4: exact with
  the cyclic base at any K; the fork's dyadic xor base cannot fit it.
* ``block``: block-diagonal with ``block x block`` dyadic blocks ``v[(o mod b) XOR (i mod b)]``
  (``block`` a power of two). Exact with the xor base at K >= 1, and without a base at K >= block.

A5 is the general statement: with exact (f32) values and ``s = 1``, the per-row rel_l2 equals the
norm of the residual mass Δ did not keep, divided by the row norm (``predicted_rel_l2_mean``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from seeddelta.bases import Base, base_geometry
from seeddelta.delta import DeltaConfig, encode
from seeddelta.errors import SeedDeltaError
from seeddelta.metrics import bits_per_weight, dropped_mass_prediction, tensor_metrics

PATTERNS = ("identity", "diag", "lowrank", "circulant", "block")


@dataclass
class ToyConfig:
    """One harness-A case (defaults are the fork's toy defaults)."""

    pattern: str = "identity"  # one of PATTERNS
    base: str = "none"  # none | xor | cyclic
    K: int = 1  # kept residuals per row
    n_in: int = 64  # columns of W
    n_out: int = 64  # rows of W
    rank: int = 4  # rank of the lowrank pattern
    block: int = 8  # block size of the block pattern (a power of two)
    seed: int = 1  # seeds the pattern, base permutation trials and Gaussian x
    perm_trials: int = 4  # xor base permutation trials (the fork's toy uses 4)
    eval_x: int = 32  # Gaussian x vectors for the functional metrics
    val_type: str = "f16"  # Δ and base value storage
    scheme: str = "coo"  # coo | block (Δ scheme)
    row_scale: bool = False  # fit the row scale (the fork's toy has none)

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise SeedDeltaError(f"--pattern must be one of {', '.join(PATTERNS)}, got {self.pattern!r}")
        if self.n_in < 1 or self.n_out < 1:
            raise SeedDeltaError("--n-in and --n-out must be >= 1")
        if not 1 <= self.rank <= min(self.n_in, self.n_out):
            raise SeedDeltaError(f"--rank must be in [1, min(n_in, n_out)], got {self.rank}")
        if self.block < 1 or self.block & (self.block - 1):
            raise SeedDeltaError(f"--block must be a power of two, got {self.block}")


def make_pattern(cfg: ToyConfig) -> np.ndarray:
    rng = np.random.default_rng(cfg.seed)
    n_out, n_in = cfg.n_out, cfg.n_in
    if cfg.pattern == "identity":
        return np.eye(n_out, n_in)
    if cfg.pattern == "diag":
        return (
            np.eye(n_out, n_in) * rng.uniform(0.5, 2.0, size=n_in)[None, :] * rng.choice([-1, 1], size=n_in)
        )
    if cfg.pattern == "lowrank":
        U = rng.standard_normal((n_out, cfg.rank))
        V = rng.standard_normal((n_in, cfg.rank))
        return U @ V.T / np.sqrt(cfg.rank)
    if cfg.pattern == "circulant":
        L, B = base_geometry("cyclic", n_in, n_out)
        h = rng.standard_normal((B, L))
        return Base("cyclic", n_in, n_out, L, B, h, np.tile(np.arange(L), (B, 1))).dense()
    b = cfg.block
    v = rng.standard_normal(b)
    o = np.arange(n_out)[:, None]
    i = np.arange(n_in)[None, :]
    return np.where(o // b == i // b, v[(o % b) ^ (i % b)], 0.0)


def run_toy(cfg: ToyConfig) -> dict[str, Any]:
    """Encode the pattern and return the report (weight, functional and predicted errors)."""
    W = make_pattern(cfg)
    dcfg = DeltaConfig(
        K=cfg.K,
        scheme=cfg.scheme,
        block=cfg.block,
        idx_type="i32" if cfg.n_in > 32767 else "i16",
        val_type=cfg.val_type,
        row_scale=cfg.row_scale,
        base=cfg.base,
        base_perm_trials=cfg.perm_trials,
    )
    rng = np.random.default_rng(cfg.seed)
    enc = encode(W, dcfg, rng=rng, name=f"toy:{cfg.pattern}")
    report: dict[str, Any] = {"config": asdict(cfg)}
    report.update(asdict(cfg))
    report.update(tensor_metrics(W, enc, eval_cols=0, eval_x=cfg.eval_x, rng=rng))
    pred = dropped_mass_prediction(W, enc)
    report["predicted_rel_l2_mean"] = float(pred.mean())
    report["K_eff"] = enc.K
    report["bits_per_weight"] = bits_per_weight(enc)
    report["base_energy_fraction"] = float(
        1 - np.linalg.norm(W - enc.base_dense()) ** 2 / max(float(np.linalg.norm(W)) ** 2, 1e-300)
    )
    return report
