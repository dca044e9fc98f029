"""Structured bases W0 for SeedΔ: the fork's XOR-circulant (dyadic) base and a cyclic-circulant one.

Both bases tile W into ``B`` square ``L x L`` blocks along the longer side of W:

* tall (``n_out >= n_in``, the FFN gate/up layout): block ``b`` produces output rows
  ``[bL, (b+1)L)`` from the zero-padded input;
* wide (``n_in > n_out``, the FFN down layout): block ``b`` reads input columns ``[bL, (b+1)L)``
  and the ``B`` block outputs are summed, then truncated to ``n_out``.

XOR-circulant (the fork's ``base_kind = "xor_circulant"``): ``L = next_pow2(min(n_in, n_out))``,
``W0_b[r, c] = h_b[r XOR perm_b^-1(c)]``. With the unnormalised Walsh-Hadamard matrix ``H``
(``H @ H = L I``) the block is ``H diag(d2) H P1`` where ``d2 = WHT(h) / L`` and ``P1`` is the gather
``tmp[j] = x[perm[j]]``; so it costs ``2 L log2 L`` adds instead of ``L^2`` multiply-adds.

Cyclic-circulant (an extension, not in the fork): ``L = min(n_in, n_out)``,
``W0_b[r, c] = h_b[(r - c) mod L]`` applied by FFT, so a circulant W is represented exactly
(the fork's "circulant base" test A4 cannot pass with the dyadic base).

Fitting is the weighted least-squares projection: ``h_b[u]`` is the mean of the W entries on the
(XOR or cyclic) diagonal ``u``, each entry weighted by ``ws[col]**2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from seeddelta.errors import SeedDeltaError

BASE_KINDS = ("none", "xor", "cyclic")


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def fwht(x: np.ndarray) -> np.ndarray:
    """Unnormalised fast Walsh-Hadamard transform along the last axis (length a power of two)."""
    y = np.array(x, dtype=np.result_type(x.dtype, np.float32), copy=True)
    n = y.shape[-1]
    if n & (n - 1):
        raise SeedDeltaError(f"fwht needs a power-of-two length, got {n}")
    lead = y.shape[:-1]
    h = 1
    while h < n:
        v = y.reshape(*lead, n // (2 * h), 2, h)
        a = v[..., 0, :].copy()
        b = v[..., 1, :]
        v[..., 0, :] = a + b
        v[..., 1, :] = a - b
        h *= 2
    return y


def hadamard(n: int) -> np.ndarray:
    """The dense unnormalised Sylvester-Hadamard matrix (for tests and small checks)."""
    return fwht(np.eye(n))


@dataclass
class Base:
    """A fitted base W0 for an ``n_out x n_in`` weight.

    ``kind`` is ``"xor"`` or ``"cyclic"``. For ``"xor"``, ``diag`` holds ``d2`` (shape ``(B, L)``)
    and ``perm`` the gather permutation of each block; for ``"cyclic"``, ``diag`` holds the
    first column ``h_b`` of each circulant block and ``perm`` is the identity.
    """

    kind: str
    n_in: int
    n_out: int
    L: int
    B: int
    diag: np.ndarray  # (B, L): d2 for xor, h for cyclic
    perm: np.ndarray  # (B, L) int64 gather permutation (identity for cyclic)

    @property
    def tall(self) -> bool:
        return self.n_out >= self.n_in

    def with_dtype(self, dtype: np.dtype | type) -> Base:
        """The same base with its stored values rounded to ``dtype`` (what a file holds)."""
        return Base(self.kind, self.n_in, self.n_out, self.L, self.B, self.diag.astype(dtype), self.perm)

    def block_kernels(self) -> np.ndarray:
        """The generating vector h_b of each block, shape (B, L), in float64."""
        d = self.diag.astype(np.float64)
        return fwht(d) if self.kind == "xor" else d

    def dense(self) -> np.ndarray:
        """W0 as a dense ``(n_out, n_in)`` float64 matrix."""
        h = self.block_kernels()
        L = self.L
        r = np.arange(L)[:, None]
        c = np.arange(L)[None, :]
        blocks = []
        for b in range(self.B):
            if self.kind == "xor":
                pinv = np.argsort(self.perm[b])
                blocks.append(h[b][r ^ pinv[c]])
            else:
                blocks.append(h[b][(r - c) % L])
        if self.tall:
            return np.concatenate(blocks, axis=0)[: self.n_out, : self.n_in]
        return np.concatenate(blocks, axis=1)[: self.n_out, : self.n_in]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """W0 @ x for ``x`` of shape (..., n_in), through the fast transforms (float64)."""
        x = np.asarray(x, dtype=np.float64)
        lead = x.shape[:-1]
        L, B = self.L, self.B
        if self.tall:
            xb = np.zeros((*lead, 1, L))
            xb[..., 0, : self.n_in] = x
            xb = np.broadcast_to(xb, (*lead, B, L))
        else:
            xp = np.zeros((*lead, B * L))
            xp[..., : self.n_in] = x
            xb = xp.reshape(*lead, B, L)
        if self.kind == "xor":
            g = np.take_along_axis(xb, np.broadcast_to(self.perm, xb.shape), axis=-1)
            y = fwht(fwht(g) * self.diag.astype(np.float64))
        else:
            y = np.fft.irfft(
                np.fft.rfft(xb, axis=-1) * np.fft.rfft(self.diag.astype(np.float64), axis=-1), n=L
            )
        if self.tall:
            return y.reshape(*lead, B * L)[..., : self.n_out]
        return y.sum(axis=-2)[..., : self.n_out]

    def ops(self) -> int:
        """Multiply-add count of one application, with the fork's formula ``B(2L log2 L + 3L)``."""
        return int(self.B * (2 * self.L * math.log2(max(self.L, 2)) + 3 * self.L))


def base_geometry(kind: str, n_in: int, n_out: int) -> tuple[int, int]:
    """(L, B) for a base of ``kind`` on an ``n_out x n_in`` weight."""
    small, large = min(n_in, n_out), max(n_in, n_out)
    L = next_pow2(small) if kind == "xor" else small
    return L, math.ceil(large / L)


def _block_view(W: np.ndarray, b: int, L: int, tall: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns (both local to the block) and values of block ``b`` of W."""
    n_out, n_in = W.shape
    if tall:
        rows = np.arange(b * L, min(n_out, (b + 1) * L))
        cols = np.arange(n_in)
        return rows - b * L, cols, W[rows][:, cols]
    rows = np.arange(n_out)
    cols = np.arange(b * L, min(n_in, (b + 1) * L))
    return rows, cols - b * L, W[rows][:, cols]


def fit_base(
    W: np.ndarray,
    kind: str,
    ws: np.ndarray | None = None,
    *,
    max_samples: int = 2048,
    perm_trials: int = 1,
    rng: np.random.Generator | None = None,
) -> Base:
    """Weighted least-squares fit of a base of ``kind`` ("xor" or "cyclic") to ``W``.

    ``ws`` weights input columns (mean-1 importance; ones without an importance matrix).
    ``max_samples`` caps the rows of each block used for the fit (sampled at random, as the fork's
    ``--base-max-samples``). ``perm_trials`` (xor only): trial 0 is the identity permutation and
    later trials random ones; each block keeps the trial with the lowest weighted SSE.
    """
    if kind not in ("xor", "cyclic"):
        raise SeedDeltaError(f"base kind must be 'xor' or 'cyclic', got {kind!r}")
    if max_samples < 1 or perm_trials < 1:
        raise SeedDeltaError("base max_samples and perm_trials must be >= 1")
    W = np.asarray(W, dtype=np.float64)
    n_out, n_in = W.shape
    rng = rng if rng is not None else np.random.default_rng(1234)
    ws = np.ones(n_in) if ws is None else np.asarray(ws, dtype=np.float64)
    L, B = base_geometry(kind, n_in, n_out)
    tall = n_out >= n_in
    diags = np.zeros((B, L))
    perms = np.tile(np.arange(L), (B, 1))
    for b in range(B):
        rows, cols, vals = _block_view(W, b, L, tall)
        if len(rows) > max_samples:
            pick = np.sort(rng.choice(len(rows), size=max_samples, replace=False))
            rows, vals = rows[pick], vals[pick]
        col_w = (ws[cols] if tall else ws[cols + b * L]) ** 2
        wgt = np.broadcast_to(col_w[None, :], vals.shape)
        best: tuple[float, np.ndarray | None, np.ndarray | None] = (np.inf, None, None)
        trials = perm_trials if kind == "xor" else 1
        for t in range(trials):
            perm = np.arange(L) if t == 0 else rng.permutation(L)
            pinv = np.argsort(perm)
            if kind == "xor":
                u = rows[:, None] ^ pinv[cols][None, :]
            else:
                u = (rows[:, None] - cols[None, :]) % L
            num = np.bincount(u.ravel(), weights=(vals * wgt).ravel(), minlength=L)
            den = np.bincount(u.ravel(), weights=wgt.ravel(), minlength=L)
            h = np.divide(num, den, out=np.zeros(L), where=den > 0)
            sse = float((wgt * (vals - h[u]) ** 2).sum())
            if sse < best[0]:
                best = (sse, h, perm)
        _, best_h, best_perm = best
        assert best_h is not None and best_perm is not None  # trial 0 beats inf whenever W is finite
        diags[b] = fwht(best_h) / L if kind == "xor" else best_h
        perms[b] = best_perm
    return Base(kind, n_in, n_out, L, B, diags, perms)
