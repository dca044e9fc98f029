"""``seeddelta bench``: builder throughput and SeedDeltaLinear forward time relative to dense.

The matrix is 2048 x 5632 (a LLaMA-style ffn_gate/up: n_in = 2048, n_out = 5632), Gaussian. The
builder runs the fork's best configuration (COO, K=32, xor base, row scale, f16/i16) and also
plain magnitude selection (no base). Forward times compare SeedDeltaLinear (CSR Δ + fast base +
row scale) with ``x @ W.T`` in the same dtype, same thread count, same run: ratios < 1 mean
SeedΔ is faster. Timings are medians of repeated runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from seeddelta.delta import DeltaConfig, encode
from seeddelta.linear import SeedDeltaLinear


def _median_time(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def run_bench(
    n_in: int = 2048,
    n_out: int = 5632,
    ks: tuple[int, ...] = (16, 64, 256),
    tokens: tuple[int, ...] = (1, 64),
    repeats: int = 20,
    threads: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)
    out: dict[str, Any] = {
        "n_in": n_in,
        "n_out": n_out,
        "threads": threads,
        "repeats": repeats,
        "torch": torch.__version__,
        "precision": "fp32 (Δ values f16 stored, computed in fp32)",
    }
    t0 = time.perf_counter()
    encode(W, DeltaConfig(K=32, base="xor", row_scale=True), rng=rng)
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    encode(W, DeltaConfig(K=32), rng=rng)
    t_plain = time.perf_counter() - t0
    out["build_weights_per_s"] = n_in * n_out / t_base
    out["build_weights_per_s_nobase"] = n_in * n_out / t_plain
    out["build_seconds"] = t_base
    dense = torch.from_numpy(W)
    dense_bf16 = dense.to(torch.bfloat16)
    for n_tok in tokens:
        x = torch.randn(n_tok, n_in)
        with torch.no_grad():
            t_dense = _median_time(lambda x=x: x @ dense.T, repeats)
            t_dense_bf16 = _median_time(lambda x=x: x.to(torch.bfloat16) @ dense_bf16.T, repeats)
        out[f"dense_ms_t{n_tok}"] = 1e3 * t_dense
        out[f"dense_bf16_ms_t{n_tok}"] = 1e3 * t_dense_bf16
        for k in ks:
            for label, cfg in (
                ("", DeltaConfig(K=k, base="xor", row_scale=True)),
                ("_nobase", DeltaConfig(K=k)),
            ):
                lin = SeedDeltaLinear(encode(W, cfg, rng=rng))
                with torch.no_grad():
                    t = _median_time(lambda x=x, lin=lin: lin(x), repeats)
                out[f"seeddelta{label}_ms_k{k}_t{n_tok}"] = 1e3 * t
                out[f"forward_ratio_k{k}{label}_t{n_tok}"] = t / t_dense
    # headline keys: single-token decode (the fork's use: generation on CPU), full SeedΔ layer
    for k in ks:
        out[f"forward_ratio_k{k}"] = out[f"forward_ratio_k{k}_t{tokens[0]}"]
    return out
