"""``infinito bench``: what the IIT features cost in training throughput, and what the Φ proxy costs.

Baseline and IIT steps are interleaved round by round and the median step time is kept, so a
machine shared with other jobs slows both alike; the ratio is the number to read, not the
absolute tokens/s. fp32 and, on CPUs with native bf16, bf16 autocast are both measured. The
baseline's and the full IIT model's steps are also profiled (``torch.profiler`` split: matmuls,
attention, norms/elementwise, optimizer, Python and data, the health check) and their FLOPs
counted by PyTorch's ``FlopCounterMode``; with this machine's matmul peak, measured in the same
run, that gives each one's MFU.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from lm_shared.runtime import compile_module, cpu_has_native_bf16, save_config, seed_everything

from .model import InfinitoConfig, InfinitoLM
from .phi_proxy import model_phi_proxy


def _step_fn(
    model: Callable[..., Any],
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    dtype: torch.dtype | None,
    device: str,
) -> Callable[[], None]:
    """One training step of ``model`` (an :class:`InfinitoLM` or its ``torch.compile`` wrapper)."""

    def step() -> None:
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            out = model(x[:, :-1], labels=x[:, 1:])
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure_training(
    configs: dict[str, InfinitoConfig],
    seq_len: int,
    batch_size: int,
    steps: int,
    dtype: torch.dtype | None,
    device: str,
    compile: bool = False,
    eager_too: tuple[str, ...] = (),
) -> dict[str, dict[str, float]]:
    """Median seconds per training step for each config, interleaved round-robin (each model
    ``torch.compile``d first with ``compile``, by :func:`lm_shared.runtime.compile_module`). With
    ``compile``, the configs named in ``eager_too`` are also timed uncompiled, in the same rounds,
    as ``<name>_eager``."""
    seed_everything(0)
    x = torch.randint(
        0, min(c.vocab_size for c in configs.values()), (batch_size, seq_len + 1), device=device
    )
    if compile:
        # Every variant is a new module whose forward Dynamo guards separately; without a reset the
        # second precision's variants pass the recompile limit (8) and silently run eager.
        torch._dynamo.reset()
    timed_configs = [(name, cfg, compile) for name, cfg in configs.items()]
    if compile:
        timed_configs += [(f"{name}_eager", configs[name], False) for name in eager_too]
    fns = {}
    for name, cfg, compiled in timed_configs:
        model = InfinitoLM(cfg).to(device).train()
        timed = compile_module(model, device) if compiled else model
        fns[name] = _step_fn(timed, torch.optim.AdamW(model.parameters(), lr=1e-4), x, dtype, device)
        fns[name]()  # warm-up (allocations, autocast caches)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    tokens = batch_size * seq_len
    return {
        name: {"median_step_s": statistics.median(t), "tokens_per_s": tokens / statistics.median(t)}
        for name, t in times.items()
    }


def measure_where_time_goes(
    configs: dict[str, InfinitoConfig], seq_len: int, batch_size: int, device: str, profile: bool = True
) -> dict[str, dict[str, Any]]:
    """Per config (fp32): the profile split of one training step (None without ``profile``) and
    its counted FLOPs."""
    from lm_shared.profiling import measured_training_flops, profile_training_step
    from lm_shared.stability import grad_health

    seed_everything(0)
    x = torch.randint(
        0, min(c.vocab_size for c in configs.values()), (batch_size, seq_len + 1), device=device
    )
    out = {}
    for name, cfg in configs.items():
        model = InfinitoLM(cfg).to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def forward_backward(_batch: object = None, model: InfinitoLM = model) -> None:
            model(x[:, :-1], labels=x[:, 1:]).loss.backward()

        def optimizer_step(optimizer: torch.optim.Optimizer = optimizer) -> None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def health(model: InfinitoLM = model) -> Any:  # what the trainer runs per step
            return grad_health(model.parameters())

        split = None
        if profile:
            split = profile_training_step(
                forward_backward,
                optimizer_step,
                health=health,
                steps=2,
                device=device,
            ).as_dict()
        flops = measured_training_flops(forward_backward)
        out[name] = {"profile": split, "flops_per_step": flops}
    return out


def measure_proxy(
    config: InfinitoConfig, seq_len: int, n_sequences: int, ks: tuple[int, ...], repeats: int = 3
) -> dict[str, Any]:
    """Median seconds for one Φ-proxy evaluation per K: forward passes (model and shuffled-token
    null), PCA, exhaustive bipartition search and the time-shuffled null; plus a 20-replicate
    bootstrap and, for scale, one forward pass over the same sequences."""
    seed_everything(0)
    model = InfinitoLM(config).eval()
    ids = torch.randint(0, config.vocab_size, (n_sequences, seq_len))

    def timed(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    with torch.no_grad():
        out: dict[str, Any] = {"forward_only_s": timed(lambda: model(ids))}
    for k in ks:
        report = model_phi_proxy(model, ids, k=k)
        out[f"k{k}"] = {
            "seconds": timed(lambda k=k: model_phi_proxy(model, ids, k=k)),
            "search": report.search,
            "n_pairs": report.n_pairs,
        }
    out[f"k{ks[0]}_bootstrap20_s"] = timed(lambda: model_phi_proxy(model, ids, k=ks[0], n_bootstrap=20))
    return out


def measure_generation(config: InfinitoConfig, seq_len: int, repeats: int = 3) -> dict[str, Any]:
    """Greedy decoding of one sequence (a 16-token prompt filled to ``seq_len``) with and without the
    KV cache, interleaved, median seconds; the tokens must agree."""
    from .generate import DecodingConfig, decode

    seed_everything(0)
    model = InfinitoLM(config).eval()
    prompt = torch.randint(0, config.vocab_size, (1, 16))
    cfg = DecodingConfig(max_new_tokens=max(1, min(seq_len, config.max_seq_len) - 16), do_sample=False)
    times: dict[bool, list[float]] = {True: [], False: []}
    outputs = {}
    for _ in range(repeats):
        for use_cache in (False, True):
            start = time.perf_counter()
            outputs[use_cache] = decode(model, prompt, cfg, use_cache=use_cache)
            times[use_cache].append(time.perf_counter() - start)
    no_cache, cached = statistics.median(times[False]), statistics.median(times[True])
    return {
        "new_tokens": cfg.max_new_tokens,
        "no_cache_s": no_cache,
        "kv_cache_s": cached,
        "no_cache_tokens_per_s": cfg.max_new_tokens / no_cache,
        "kv_cache_tokens_per_s": cfg.max_new_tokens / cached,
        "kv_cache_speedup": no_cache / cached,
        "same_tokens": bool(torch.equal(outputs[True], outputs[False])),
    }


def _bench_variants(model_config: InfinitoConfig) -> tuple[InfinitoConfig, dict[str, InfinitoConfig]]:
    """The full IIT model (``model_config``, or its IIT version when every feature is off) and the
    variants timed against it."""
    iit = (
        model_config
        if model_config.uses_iit
        else replace(model_config, iit_metrics=True, memory=True, lambda_phi=0.1, noise_std=0.05)
    )
    configs = {
        "baseline": iit.baseline(),
        "iit_metrics_only": replace(iit.baseline(), iit_metrics=True),
        "iit_full": iit,
        # Where the full model's extra cost goes: each feature switched off in turn.
        "iit_full_no_memory": replace(iit, memory=False),
        "iit_full_no_noise": replace(iit, noise_std=0.0),
        "iit_full_no_phi_loss": replace(iit, lambda_phi=0.0),
    }
    return iit, configs


def _bench_precisions(device: str) -> dict[str, torch.dtype | None]:
    """Lightning precision name -> autocast dtype (``None`` = fp32) of each precision to time."""
    from lm_shared.runtime import detect_precision

    precisions: dict[str, torch.dtype | None] = {"32-true": None}
    # bf16 only where it is native: without AVX512-BF16/AMX a CPU emulates it ~4-20x slower.
    if (device == "cuda" and torch.cuda.is_bf16_supported()) or (device == "cpu" and cpu_has_native_bf16()):
        precisions["bf16-mixed"] = torch.bfloat16
    if device == "cuda" and detect_precision(device) == "16-mixed":
        precisions["16-mixed"] = torch.float16
    return precisions


def _overhead_ratios(training: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Step-time ratios of the IIT variants to the baseline (and of each feature to the full model)."""
    fp32 = training["32-true"]
    ratios: dict[str, Any] = {
        "iit_overhead_ratio": fp32["iit_full"]["median_step_s"] / fp32["baseline"]["median_step_s"],
        "iit_metrics_overhead_ratio": fp32["iit_metrics_only"]["median_step_s"]
        / fp32["baseline"]["median_step_s"],
    }
    if "bf16-mixed" in training:
        bf = training["bf16-mixed"]
        ratios["iit_overhead_ratio_bf16"] = bf["iit_full"]["median_step_s"] / bf["baseline"]["median_step_s"]
        ratios["bf16_speedup_baseline"] = fp32["baseline"]["median_step_s"] / bf["baseline"]["median_step_s"]
    if "baseline_eager" in fp32:  # a --compile bench: each model at its faster of compiled and eager
        step = {name: fp32[name]["median_step_s"] for name in fp32}
        ratios["iit_overhead_ratio_best"] = min(step["iit_full"], step["iit_full_eager"]) / min(
            step["baseline"], step["baseline_eager"]
        )
        ratios["compile_speedup"] = {
            name: step[f"{name}_eager"] / step[name] for name in ("baseline", "iit_full")
        }
    full = fp32["iit_full"]["median_step_s"]
    ratios["iit_overhead_split"] = {
        "metrics_and_attention_stats": fp32["iit_metrics_only"]["median_step_s"]
        / fp32["baseline"]["median_step_s"],
        "memory": full / fp32["iit_full_no_memory"]["median_step_s"],
        "noise": full / fp32["iit_full_no_noise"]["median_step_s"],
        "phi_loss": full / fp32["iit_full_no_phi_loss"]["median_step_s"],
    }
    return ratios


def _profile_and_mfu(
    configs: dict[str, InfinitoConfig],
    fp32: dict[str, dict[str, float]],
    seq_len: int,
    batch_size: int,
    device: str,
    *,
    bf16: bool,
    compile: bool,
) -> dict[str, Any]:
    """The baseline's and the full model's profile split, FLOPs and fp32 MFU against this
    machine's matmul peak (GFLOP/s, measured here; bf16's too with ``bf16``)."""
    from lm_shared.profiling import matmul_peak_flops, model_flops_utilization

    where = measure_where_time_goes(
        {"baseline": configs["baseline"], "iit_full": configs["iit_full"]},
        seq_len,
        batch_size,
        device,
        profile=not compile,
    )
    peak32 = matmul_peak_flops("float32", device=device)
    results: dict[str, Any] = {
        "matmul_peak_fp32_gflops": round(peak32 / 1e9, 1),
        "matmul_peak_bf16_gflops": (
            round(matmul_peak_flops("bfloat16", device=device) / 1e9, 1) if bf16 else None
        ),
    }
    for name, measured in where.items():
        tokens_per_s = fp32[name]["tokens_per_s"]
        flops_per_token = measured["flops_per_step"] / (batch_size * seq_len)
        results[f"profile_{name}"] = measured["profile"]
        results[f"flops_per_step_{name}"] = measured["flops_per_step"]
        results[f"mfu_fp32_{name}"] = round(model_flops_utilization(tokens_per_s, flops_per_token, peak32), 4)
    return results


def run_bench(
    model_config: InfinitoConfig,
    out: Path,
    *,
    seq_len: int = 128,
    batch_size: int = 16,
    steps: int = 10,
    device: str = "auto",
    compile: bool = False,
) -> dict[str, Any]:
    """Measure every variant, print the tables and write the JSON report to ``out``.

    ``device`` is ``auto`` (CUDA when visible), ``cpu`` or ``cuda``; fp32 is always measured, plus
    bf16 autocast where the hardware has it natively and, on a GPU whose auto precision is fp16
    (T4), fp16 autocast. ``compile`` times ``torch.compile``d models (no profile split then).

    Raises:
        lm_shared.errors.UserError: ``--device cuda`` without a visible GPU.
    """
    from lm_shared.runtime import resolve_device

    device = resolve_device(device)
    if compile:
        from lm_shared.runtime import require_compile_backend

        require_compile_backend(device)
    seq_len = min(seq_len, model_config.max_seq_len)
    iit, configs = _bench_variants(model_config)
    precisions = _bench_precisions(device)
    results: dict[str, Any] = {
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "compile": compile,
        "seq_len": seq_len,
        "batch_size": batch_size,
        "steps": steps,
        "model_config": asdict(iit),
        "note": "median step time, configs interleaved per round; taken on a shared machine, read the ratios",
        "training": {},
    }
    for precision, dtype in precisions.items():
        results["training"][precision] = measure_training(
            configs, seq_len, batch_size, steps, dtype, device, compile, eager_too=("baseline", "iit_full")
        )
    fp32 = results["training"]["32-true"]
    results.update(_overhead_ratios(results["training"]))
    results.update(
        _profile_and_mfu(
            configs, fp32, seq_len, batch_size, device, bf16="bf16-mixed" in precisions, compile=compile
        )
    )
    results["generation"] = measure_generation(iit, seq_len)
    results["kv_cache_speedup"] = results["generation"]["kv_cache_speedup"]
    results["phi_proxy"] = measure_proxy(iit, seq_len, 32, (8, 12))
    proxy_s = results["phi_proxy"]["k8"]["seconds"]
    results["phi_proxy_cost_in_training_steps"] = proxy_s / fp32["iit_full"]["median_step_s"]
    out.parent.mkdir(parents=True, exist_ok=True)
    save_config(results, out)
    _print(results, out)
    return results


def _print(results: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from lm_shared.profiling import split_table

    table = Table(title=f"infinito bench ({results['device']}, {results['torch_threads']} threads) -> {out}")
    for col in ("precision", "variant", "tokens/s", "ms/step", "vs baseline"):
        table.add_column(col, justify="right")
    for precision, variants in results["training"].items():
        base = variants["baseline"]["median_step_s"]
        for name, v in variants.items():
            table.add_row(
                precision,
                name,
                f"{v['tokens_per_s']:.0f}",
                f"{1000 * v['median_step_s']:.1f}",
                f"{v['median_step_s'] / base:.2f}x",
            )
    console = Console()
    console.print(table)
    proxy = results["phi_proxy"]
    split = results["iit_overhead_split"]
    gen = results["generation"]
    variants = ("baseline", "iit_full")
    console.print(
        split_table(
            f"where one fp32 training step's time goes (ms, torch.profiler; matmul peak "
            f"{results['matmul_peak_fp32_gflops']:.0f} GFLOP/s)",
            {v: results[f"profile_{v}"] for v in variants},
            mfu={v: results[f"mfu_fp32_{v}"] for v in variants},
        )
    )
    console.print(
        "IIT overhead split (step-time ratios, fp32): " + ", ".join(f"{k} {v:.2f}x" for k, v in split.items())
    )
    console.print(
        f"generation ({gen['new_tokens']} greedy tokens): KV cache {gen['kv_cache_tokens_per_s']:.0f} tok/s vs "
        f"{gen['no_cache_tokens_per_s']:.0f} without, speed-up {gen['kv_cache_speedup']:.2f}x "
        f"(same tokens: {gen['same_tokens']})"
    )
    if "iit_overhead_ratio_best" in results:
        speedup = results["compile_speedup"]
        console.print(
            f"compiled/eager speed-up (fp32): baseline {speedup['baseline']:.2f}x, iit_full "
            f"{speedup['iit_full']:.2f}x; iit_overhead_ratio_best (each at its faster) = "
            f"{results['iit_overhead_ratio_best']:.2f}x"
        )
    console.print(
        f"iit_overhead_ratio (fp32) = {results['iit_overhead_ratio']:.2f}x; Φ proxy per evaluation: "
        f"K=8 {proxy['k8']['seconds']:.2f}s, K=12 {proxy['k12']['seconds']:.2f}s "
        f"({results['phi_proxy_cost_in_training_steps']:.1f} training steps for K=8)"
    )
