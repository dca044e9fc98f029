"""``SeedDeltaLinear``: a drop-in ``nn.Module`` computing ``y = s ⊙ (W0 x + Δ x)`` without a dense W.

W0 runs through its fast transform (Walsh-Hadamard for the xor base, FFT for the cyclic base) and
Δ through a sparse CSR matmul (only the kept entries are stored and multiplied). ``dense_weight``
rebuilds the dense matrix for checks and for materialising to a stock GGUF.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from seeddelta.delta import SeedDeltaTensor


def fwht_torch(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised fast Walsh-Hadamard transform along the last dim (power-of-two length)."""
    n = x.shape[-1]
    lead = x.shape[:-1]
    h = 1
    while h < n:
        v = x.reshape(*lead, n // (2 * h), 2, h)
        a, b = v[..., 0, :], v[..., 1, :]
        x = torch.stack((a + b, a - b), dim=-2).reshape(*lead, n)
        h *= 2
    return x


class SeedDeltaLinear(nn.Module):
    """Linear layer stored as SeedΔ (base + sparse residual + row scale); no bias, like LLaMA's MLP."""

    # Buffers registered in __init__ (nn.Module's __getattr__ would type them Tensor | Module).
    crow: torch.Tensor  # CSR row pointers of Δ, int64 [out_features + 1]
    cols: torch.Tensor  # CSR column indices of Δ, int64 [nnz]
    vals: torch.Tensor  # CSR values of Δ, [nnz] in the layer's dtype
    row_scale: torch.Tensor | None  # per-row scale s, [out_features], or None
    base_diag: torch.Tensor  # base diagonals, [B, L] (xor and cyclic bases)
    base_perm: torch.Tensor  # base input permutations, int64 [B, L]
    base_fft: torch.Tensor  # rfft of the cyclic base's diagonals, complex128 [B, L // 2 + 1]

    def __init__(self, enc: SeedDeltaTensor, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.in_features = enc.n_in
        self.out_features = enc.n_out
        rows, cols, vals = enc.coo()
        order = torch.from_numpy(rows * enc.n_in + cols).argsort()
        crow = torch.zeros(enc.n_out + 1, dtype=torch.int64)
        crow[1:] = torch.bincount(torch.from_numpy(rows), minlength=enc.n_out).cumsum(0)
        self.register_buffer("crow", crow)
        self.register_buffer("cols", torch.from_numpy(cols)[order].contiguous())
        self.register_buffer("vals", torch.from_numpy(vals)[order].to(dtype).contiguous())
        self.register_buffer(
            "row_scale", torch.from_numpy(enc.scale()).to(dtype) if enc.row_scale is not None else None
        )
        self.base_kind = enc.base.kind if enc.base is not None else "none"
        if enc.base is not None:
            self.L, self.B = enc.base.L, enc.base.B
            self.register_buffer("base_diag", torch.from_numpy(enc.base.diag.astype("float64")).to(dtype))
            self.register_buffer("base_perm", torch.from_numpy(enc.base.perm.astype("int64")))
            if self.base_kind == "cyclic":
                self.register_buffer("base_fft", torch.fft.rfft(self.base_diag.double(), dim=-1))

    def extra_repr(self) -> str:
        k = self.vals.numel() / max(self.out_features, 1)
        return f"in={self.in_features}, out={self.out_features}, nnz/row={k:.1f}, base={self.base_kind}"

    def _delta(self, x2: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            # CSR is "beta" in PyTorch; the layout is built by us and valid by construction
            warnings.simplefilter("ignore", UserWarning)
            csr = torch.sparse_csr_tensor(
                self.crow,
                self.cols,
                self.vals.to(x2.dtype),
                size=(self.out_features, self.in_features),
                check_invariants=False,
            )
            return (csr @ x2.T).T

    def _base(self, x2: torch.Tensor) -> torch.Tensor:
        n, L, B = x2.shape[0], self.L, self.B
        tall = self.out_features >= self.in_features
        if tall:
            xb = torch.nn.functional.pad(x2, (0, L - self.in_features)).unsqueeze(1).expand(n, B, L)
        else:
            xb = torch.nn.functional.pad(x2, (0, B * L - self.in_features)).reshape(n, B, L)
        if self.base_kind == "xor":
            g = torch.gather(xb, 2, self.base_perm.unsqueeze(0).expand(n, B, L))
            y = fwht_torch(fwht_torch(g) * self.base_diag.to(x2.dtype))
        else:
            spec = torch.fft.rfft(xb.double(), dim=-1) * self.base_fft
            y = torch.fft.irfft(spec, n=L, dim=-1).to(x2.dtype)
        y = y.reshape(n, B * L) if tall else y.sum(dim=1)
        return y[:, : self.out_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``y = s ⊙ (W0 x + Δ x)`` without a dense weight.

        Args:
            x: inputs [..., in_features]; float16/bfloat16 are computed in float32.

        Returns:
            [..., out_features] in ``x``'s dtype.
        """
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        compute = torch.float32 if x2.dtype in (torch.float16, torch.bfloat16) else x2.dtype
        x2c = x2.to(compute)
        y = self._delta(x2c)
        if self.base_kind != "none":
            y = y + self._base(x2c)
        if self.row_scale is not None:
            y = y * self.row_scale.to(compute)
        return y.to(x.dtype).reshape(*lead, self.out_features)

    @torch.no_grad()
    def dense_weight(self) -> torch.Tensor:
        """The reconstructed ``(out, in)`` weight, computed by applying the layer to the identity."""
        eye = torch.eye(self.in_features, dtype=self.vals.dtype, device=self.vals.device)
        return self.forward(eye).T.contiguous()
