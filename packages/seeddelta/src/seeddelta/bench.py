"""``seeddelta bench``: builder throughput and SeedDeltaLinear forward time relative to dense.

The matrix is 2048 x 5632 (a LLaMA-style ffn_gate/up: n_in = 2048, n_out = 5632), Gaussian. The
builder runs the fork's best configuration (COO, K=32, xor base, row scale, f16/i16) and also
plain magnitude selection (no base). Forward times compare SeedDeltaLinear (CSR Δ + fast base +
row scale) with ``x @ W.T`` in the same dtype, same thread count, same run: ratios < 1 mean
SeedΔ is faster. Timings are medians of repeated runs.

The tiny model's training step (``seeddelta tiny train``'s defaults: 48 packed samples in rows of
128 tokens, fp32) is profiled as well: the ``torch.profiler`` split (matmuls, attention,
norms/elementwise, optimizer, Python and batch building, gradient clipping), its FLOPs counted by
PyTorch's ``FlopCounterMode``, this machine's fp32 matmul peak and the step's MFU.
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


def measure_tiny_training(
    threads: int, steps: int = 3, device: str = "cpu", compile: bool = False
) -> dict[str, Any]:
    """Profile split, step time, FLOPs and MFU of one default ``tiny train`` step in fp32.

    On ``cuda`` the step runs there (fp32, the matrices' home is the CPU in the rest of the bench);
    with ``compile`` the model is ``torch.compile``d and the step is timed without a profile split.
    """
    from lm_shared.profiling import (
        matmul_peak_flops,
        measured_training_flops,
        model_flops_utilization,
        profile_training_step,
    )
    from lm_shared.runtime import seed_everything
    from seeddelta.model import ModelConfig, TinyLlama
    from seeddelta.tasks import training_stream
    from seeddelta.train import TrainConfig, _batch, _optimizer, train_tokenizer

    torch.set_num_threads(threads)
    cfg = TrainConfig()
    seed_everything(cfg.seed)
    tok = train_tokenizer(cfg.seed, 500, cfg.vocab_size)
    eager = TinyLlama(ModelConfig(vocab_size=tok.vocab_size)).to(device)
    model: Callable[..., Any] = torch.compile(eager) if compile else eager
    opt = _optimizer(eager, cfg)[0]  # the trainer's own AdamW (groups, fused kernel)
    stream = training_stream(cfg.seed, set(), cfg.task_cycle())
    batches = [_batch(tok, stream, cfg.docs_per_step, cfg.seq_len) for _ in range(steps + 2)]
    tokens = [int(b[0].numel()) for b in batches]
    it = iter(batches)

    def forward_backward(batch: tuple[torch.Tensor, ...], model: Callable[..., Any] = model) -> None:
        ids, pos, mask, tmask = (t.to(device) for t in batch)
        logits, _ = model(ids, pos, mask)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1][tmask[:, 1:]], ids[:, 1:][tmask[:, 1:]])
        loss.backward()

    def optimizer_step() -> None:
        opt.step()
        opt.zero_grad(set_to_none=True)

    def health() -> None:
        torch.nn.utils.clip_grad_norm_(eager.parameters(), cfg.clip_norm)

    def whole_step() -> None:
        forward_backward(next(it))
        optimizer_step()
        health()

    if compile:
        for batch in batches[:2]:  # warm-up: compilation
            forward_backward(batch)
            optimizer_step()
        step_s = _median_time(whole_step, steps, warmup=0)
        split = None
    else:
        profile = profile_training_step(
            forward_backward,
            optimizer_step,
            # The trainer builds each batch (tokenise, pack, masks) inside the step.
            data=lambda: next(it),
            health=health,
            steps=steps,
            device=device,
        )
        step_s, split = profile.step_ms / 1e3, profile.as_dict()
    flops = measured_training_flops(lambda: forward_backward(batches[-1], eager))
    opt.zero_grad(set_to_none=True)
    peak = matmul_peak_flops("float32", device=device)
    tokens_per_step = float(np.mean(tokens))
    return {
        "tiny_train_device": device,
        "tiny_train_compile": compile,
        "tiny_train_step_ms_profiled": round(step_s * 1e3, 2),
        "tiny_train_tokens_per_step": tokens_per_step,
        "tiny_train_flops_per_step": flops,
        "tiny_train_profile": split,
        "matmul_peak_fp32_gflops": round(peak / 1e9, 1),
        "tiny_train_mfu_fp32": round(
            model_flops_utilization(tokens_per_step / step_s, flops / tokens_per_step, peak), 4
        ),
    }


def run_bench(
    n_in: int = 2048,
    n_out: int = 5632,
    ks: tuple[int, ...] = (16, 64, 256),
    tokens: tuple[int, ...] = (1, 64),
    repeats: int = 20,
    threads: int = 2,
    seed: int = 0,
    device: str = "auto",
    compile: bool = False,
) -> dict[str, Any]:
    """Builder and forward measurements on the CPU, then the tiny model's training step on
    ``device`` (``auto``: CUDA when visible). Raises ``UserError`` for ``cuda`` without a GPU."""
    from lm_shared.runtime import resolve_device

    device = resolve_device(device)
    if compile:
        from lm_shared.runtime import require_compile_backend

        require_compile_backend(device)
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

        def dense_fp32(x: torch.Tensor = x) -> torch.Tensor:
            return x @ dense.T

        def dense_bf16_cast(x: torch.Tensor = x) -> torch.Tensor:
            return x.to(torch.bfloat16) @ dense_bf16.T

        with torch.no_grad():
            t_dense = _median_time(dense_fp32, repeats)
            t_dense_bf16 = _median_time(dense_bf16_cast, repeats)
        out[f"dense_ms_t{n_tok}"] = 1e3 * t_dense
        out[f"dense_bf16_ms_t{n_tok}"] = 1e3 * t_dense_bf16
        for k in ks:
            for label, cfg in (
                ("", DeltaConfig(K=k, base="xor", row_scale=True)),
                ("_nobase", DeltaConfig(K=k)),
            ):
                lin = SeedDeltaLinear(encode(W, cfg, rng=rng))

                def seeddelta_forward(x: torch.Tensor = x, lin: SeedDeltaLinear = lin) -> torch.Tensor:
                    return lin(x)

                with torch.no_grad():
                    t = _median_time(seeddelta_forward, repeats)
                out[f"seeddelta{label}_ms_k{k}_t{n_tok}"] = 1e3 * t
                out[f"forward_ratio_k{k}{label}_t{n_tok}"] = t / t_dense
    # headline keys: single-token decode (the fork's use: generation on CPU), full SeedΔ layer
    for k in ks:
        out[f"forward_ratio_k{k}"] = out[f"forward_ratio_k{k}_t{tokens[0]}"]
    out.update(measure_tiny_training(threads, steps=max(1, min(3, repeats)), device=device, compile=compile))
    return out
