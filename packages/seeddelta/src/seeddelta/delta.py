"""The SeedΔ codec for one weight: ``W ≈ s ⊙ (W0 + Δ)``.

Δ keeps, per output row, the ``K`` residual entries ``r = w - w0`` with the largest ``|r| * ws``
(COO scheme), or the ``ceil(K / block)`` 1-D input blocks with the largest ``Σ (r * ws)^2`` (block
scheme). Values are the exact residuals rounded to the value dtype (no refit, as in the fork;
:func:`refit_values` adds the activation-aware least-squares refit). The optional per-row scale is
the weighted least-squares ``s_o = <w, ŵ>_D / <ŵ, ŵ>_D`` with ``D = diag(ws^2)``; without a base it
is exactly 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from seeddelta.bases import Base, fit_base
from seeddelta.errors import SeedDeltaError

VAL_TYPES: dict[str, type[np.floating]] = {"f16": np.float16, "f32": np.float32}
IDX_TYPES: dict[str, type[np.signedinteger]] = {"i16": np.int16, "i32": np.int32}
SCHEMES = ("coo", "block")


def importance_weights(
    imatrix: np.ndarray | None, n_in: int, eps: float = 1e-8, power: float = 1.0
) -> np.ndarray:
    """Column weights ``ws_i = max(imatrix_i, eps)^(power/2)`` normalised to mean 1 (ones without one)."""
    if imatrix is None:
        return np.ones(n_in)
    imatrix = np.asarray(imatrix, dtype=np.float64).reshape(-1)
    if imatrix.shape[0] != n_in:
        raise SeedDeltaError(f"importance matrix has {imatrix.shape[0]} entries, expected n_in={n_in}")
    ws = np.maximum(imatrix, eps) ** (power / 2.0)
    return ws / ws.mean()


@dataclass
class DeltaConfig:
    """How to encode one weight (the fork's builder options that act per tensor)."""

    K: int = 32  # kept residuals per output row (COO) or budget rounded up to blocks (block)
    scheme: str = "coo"  # "coo" (per-entry top-K) or "block" (1-D input blocks of `block`)
    block: int = 32  # block length of the block scheme
    idx_type: str = "i16"  # index storage: i16 (n_in <= 32767) or i32
    val_type: str = "f16"  # value storage: f16 or f32
    row_scale: bool = False  # fit the per-row weighted least-squares scale
    base: str = "none"  # "none" (W0 = 0), "xor" (the fork's dyadic base) or "cyclic" (FFT)
    base_max_samples: int = 2048  # rows per block sampled to fit the base
    base_perm_trials: int = 1  # permutation trials of the xor base (trial 0 = identity)
    delta_norm_clamp: float | None = None  # rescale Δ so that ||Δ|| <= F ||W|| (the fork's down clamp)

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise SeedDeltaError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if self.val_type not in VAL_TYPES:
            raise SeedDeltaError(f"val-type must be one of {sorted(VAL_TYPES)}, got {self.val_type!r}")
        if self.idx_type not in IDX_TYPES:
            raise SeedDeltaError(f"idx-type must be one of {sorted(IDX_TYPES)}, got {self.idx_type!r}")
        if self.base not in ("none", "xor", "cyclic"):
            raise SeedDeltaError(f"base must be none, xor or cyclic, got {self.base!r}")
        if self.K < 0 or self.block < 1:
            raise SeedDeltaError(f"K must be >= 0 and block >= 1 (got K={self.K}, block={self.block})")


@dataclass
class SeedDeltaTensor:
    """One encoded weight. Exactly one of (d_idx, d_val) or (b_idx, b_val) is set.

    d_idx (n_out, K) int, -1 = padding; d_val (n_out, K); b_idx (n_out, nb) block index (offset
    = idx * block); b_val (n_out, nb, block); row_scale (n_out,) float16 or None; base or None.
    """

    n_in: int
    n_out: int
    scheme: str
    block: int
    d_idx: np.ndarray | None = None
    d_val: np.ndarray | None = None
    b_idx: np.ndarray | None = None
    b_val: np.ndarray | None = None
    row_scale: np.ndarray | None = None
    base: Base | None = None

    def coo_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(d_idx, d_val)`` of a COO tensor; raises ``SeedDeltaError`` when they are not set."""
        if self.d_idx is None or self.d_val is None:
            raise SeedDeltaError(f"this {self.scheme} tensor has no d_idx/d_val")
        return self.d_idx, self.d_val

    def block_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(b_idx, b_val)`` of a block tensor; raises ``SeedDeltaError`` when they are not set."""
        if self.b_idx is None or self.b_val is None:
            raise SeedDeltaError(f"this {self.scheme} tensor has no b_idx/b_val")
        return self.b_idx, self.b_val

    @property
    def K(self) -> int:
        """Effective entries per row (block scheme: blocks x block length)."""
        if self.scheme == "coo":
            return int(self.coo_arrays()[0].shape[1])
        return int(self.block_arrays()[0].shape[1] * self.block)

    def coo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, cols, values) of Δ's stored non-padding entries (block scheme expanded)."""
        if self.scheme == "coo":
            d_idx, d_val = self.coo_arrays()
            rows = np.repeat(np.arange(self.n_out), d_idx.shape[1])
            cols = d_idx.astype(np.int64).ravel()
            vals = d_val.astype(np.float64).ravel()
        else:
            b_idx, b_val = self.block_arrays()
            nb = b_idx.shape[1]
            rows = np.repeat(np.arange(self.n_out), nb * self.block)
            cols = (b_idx.astype(np.int64)[:, :, None] * self.block + np.arange(self.block)).ravel()
            vals = b_val.astype(np.float64).ravel()
            cols = np.where(np.repeat(b_idx.ravel() < 0, self.block), -1, cols)
        keep = (cols >= 0) & (cols < self.n_in)
        return rows[keep], cols[keep], vals[keep]

    def delta_dense(self) -> np.ndarray:
        out = np.zeros((self.n_out, self.n_in))
        rows, cols, vals = self.coo()
        np.add.at(out, (rows, cols), vals)
        return out

    def base_dense(self) -> np.ndarray:
        return self.base.dense() if self.base is not None else np.zeros((self.n_out, self.n_in))

    def scale(self) -> np.ndarray:
        return self.row_scale.astype(np.float64) if self.row_scale is not None else np.ones(self.n_out)

    def dense(self) -> np.ndarray:
        """The reconstructed weight ``s ⊙ (W0 + Δ)`` in float64."""
        return self.scale()[:, None] * (self.base_dense() + self.delta_dense())

    def n_bytes(self) -> int:
        """Bytes this encoding stores (indices, values, scale, base)."""
        arrays = [self.d_idx, self.d_val, self.b_idx, self.b_val, self.row_scale]
        total = sum(a.nbytes for a in arrays if a is not None)
        if self.base is not None:
            # d2 plus the fork's all-ones d1/d3 (f16) and the int16/int32 permutation
            perm_bytes = 2 if self.base.L <= 32768 else 4
            total += self.base.diag.nbytes + 2 * self.base.diag.size * 2 + self.base.perm.size * perm_bytes
        return int(total)


def check_index_type(idx_type: str, n_in: int, name: str = "tensor") -> None:
    """Raise when ``idx_type`` cannot address ``n_in`` inputs."""
    limit = np.iinfo(IDX_TYPES[idx_type]).max
    if n_in - 1 > limit:
        raise SeedDeltaError(
            f"{name}: idx-type {idx_type} holds indices up to {limit} but n_in={n_in}; use --idx-type i32"
        )


def encode(
    W: np.ndarray,
    config: DeltaConfig,
    *,
    imatrix: np.ndarray | None = None,
    imatrix_eps: float = 1e-8,
    imatrix_power: float = 1.0,
    rng: np.random.Generator | None = None,
    name: str = "tensor",
) -> SeedDeltaTensor:
    """Encode one weight with SeedΔ: fit the base, select Δ, clamp it, fit the row scale.

    Args:
        W: the weight [n_out, n_in], any real dtype (computed in float64).
        config: scheme, K, storage dtypes, base and row scale.
        imatrix: per-input importance [n_in] (llama.cpp imatrix), or None for uniform weights.
        imatrix_eps: floor on the importance before the power.
        imatrix_power: column weights are ``importance^(power / 2)``, normalised to mean 1.
        rng: draws the base's sampled rows and permutation trials (default seed 1234).
        name: labels errors only.

    Returns:
        The encoding; its arrays are in ``config``'s index and value dtypes, the row scale float16.

    Raises:
        SeedDeltaError: ``W`` is not 2-D or not finite, ``K > n_in``, the index type cannot
            address ``n_in``, or the importance matrix has the wrong length.
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise SeedDeltaError(f"{name}: expected a 2-D weight, got shape {W.shape}")
    if not np.isfinite(W).all():
        raise SeedDeltaError(f"{name}: weight has non-finite values")
    n_out, n_in = W.shape
    if n_in < config.K:
        raise SeedDeltaError(f"{name}: K={config.K} is larger than n_in={n_in}")
    check_index_type(config.idx_type, n_in, name)
    rng = rng if rng is not None else np.random.default_rng(1234)
    ws = importance_weights(imatrix, n_in, imatrix_eps, imatrix_power)
    vdt = VAL_TYPES[config.val_type]
    idt = IDX_TYPES[config.idx_type]

    base = None
    W0 = np.zeros_like(W)
    if config.base != "none":
        base = fit_base(
            W,
            config.base,
            ws,
            max_samples=config.base_max_samples,
            perm_trials=config.base_perm_trials,
            rng=rng,
        ).with_dtype(vdt)
        W0 = base.dense()
    R = W - W0
    out = SeedDeltaTensor(n_in=n_in, n_out=n_out, scheme=config.scheme, block=config.block, base=base)
    if config.scheme == "coo":
        idx, vals = _top_k_entries(R, ws, config.K)
        out.d_idx = idx.astype(idt)
        out.d_val = vals.astype(vdt)
    else:
        bidx, bvals = _top_blocks(R, ws, config.K, config.block)
        out.b_idx = bidx.astype(idt)
        out.b_val = bvals.astype(vdt)
    if config.delta_norm_clamp is not None:
        _clamp_delta_norm(out, W, config.delta_norm_clamp, vdt)
    if config.row_scale:
        out.row_scale = np.ones(n_out, dtype=np.float16) if base is None else _row_scale(W, W0, out, ws)
    return out


def _top_k_entries(R: np.ndarray, ws: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """COO selection: per row the ``K`` residuals with the largest ``|r| * ws``, in column order.

    Returns int64 indices [n_out, K] (-1 where the residual is exactly zero: no storage slot
    needed) and their float64 values (0 at the padding).
    """
    n_out, n_in = R.shape
    score = np.abs(R) * ws[None, :]
    if K == 0:
        idx = np.zeros((n_out, 0), dtype=np.int64)
    elif n_in == K:
        idx = np.tile(np.arange(n_in), (n_out, 1))
    else:
        idx = np.sort(np.argpartition(-score, K - 1, axis=1)[:, :K], axis=1)
    vals = np.take_along_axis(R, idx, axis=1)
    # an exactly-zero residual needs no storage slot: mark it as padding (-1, value 0)
    pad = vals == 0
    return np.where(pad, -1, idx), vals


def _top_blocks(R: np.ndarray, ws: np.ndarray, K: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Block selection: per row the ``ceil(K / block)`` input blocks with the most ``Σ (r * ws)^2``.

    Returns int64 block indices [n_out, nb] and their float64 residuals [n_out, nb, block]
    (zero-padded past ``n_in``).
    """
    n_out, n_in = R.shape
    nb_total = math.ceil(n_in / block)
    nb = min(nb_total, math.ceil(K / block)) if K > 0 else 0
    Rp = np.zeros((n_out, nb_total * block))
    Rp[:, :n_in] = R
    wsp = np.zeros(nb_total * block)
    wsp[:n_in] = ws
    energy = ((Rp * wsp) ** 2).reshape(n_out, nb_total, block).sum(axis=2)
    if nb == nb_total:
        bidx = np.tile(np.arange(nb_total), (n_out, 1))
    else:
        bidx = np.sort(np.argpartition(-energy, max(nb - 1, 0), axis=1)[:, :nb], axis=1)
    bvals = np.take_along_axis(Rp.reshape(n_out, nb_total, block), bidx[:, :, None], axis=1)
    return bidx, bvals


def _clamp_delta_norm(out: SeedDeltaTensor, W: np.ndarray, clamp: float, vdt: type[np.floating]) -> None:
    """Rescale Δ's stored values in place so that ``||Δ|| <= clamp * ||W||`` (the fork's down clamp)."""
    d_norm = np.linalg.norm(out.delta_dense())
    limit = clamp * np.linalg.norm(W)
    if d_norm > limit > 0:
        factor = limit / d_norm
        if out.d_val is not None:
            out.d_val = (out.d_val.astype(np.float64) * factor).astype(vdt)
        else:
            out.b_val = (out.block_arrays()[1].astype(np.float64) * factor).astype(vdt)


def _row_scale(W: np.ndarray, W0: np.ndarray, out: SeedDeltaTensor, ws: np.ndarray) -> np.ndarray:
    """The weighted least-squares row scale ``s_o = <w, ŵ>_D / <ŵ, ŵ>_D`` as float16 [n_out]."""
    What = W0 + out.delta_dense()
    D = ws[None, :] ** 2
    num = (W * What * D).sum(axis=1)
    den = (What * What * D).sum(axis=1)
    return np.divide(num, den, out=np.ones(W.shape[0]), where=den > 0).astype(np.float16)


def refit_values(enc: SeedDeltaTensor, W: np.ndarray, X: np.ndarray, ridge: float = 1e-6) -> SeedDeltaTensor:
    """Activation-aware refit: keep Δ's support, choose its values by least squares on activations.

    For each output row o with support S_o, minimise ``||X w_o - X (s_o (w0_o + δ))||^2`` over the
    values δ on S_o, where ``X`` (N x n_in) are calibration inputs of this layer. With ``G = X^T X``
    the normal equations are ``G[S,S] δ = G[S,:] (w_o / s_o - w0_o)`` (a small ridge keeps them
    well posed). Only COO tensors are refit; the result keeps the value dtype.
    """
    if enc.scheme != "coo":
        raise SeedDeltaError("refit supports the coo scheme only")
    W = np.asarray(W, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    G = X.T @ X / max(len(X), 1)
    lam = ridge * max(float(np.trace(G)) / G.shape[0], 1e-12)
    W0 = enc.base_dense()
    s = enc.scale()
    target = W / np.where(s == 0, 1.0, s)[:, None] - W0
    d_idx, d_val = enc.coo_arrays()
    new_vals = d_val.astype(np.float64).copy()
    idx = d_idx.astype(np.int64)
    for o in range(enc.n_out):
        valid = idx[o] >= 0
        S = idx[o][valid]
        if S.size == 0:
            continue
        A = G[np.ix_(S, S)] + lam * np.eye(S.size)
        rhs = G[S] @ target[o]
        new_vals[o, valid] = np.linalg.solve(A, rhs)
    return replace(enc, d_val=new_vals.astype(d_val.dtype))
