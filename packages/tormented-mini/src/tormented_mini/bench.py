"""``tormented-mini bench``: Mini vs Frankenstein training-step time and peak memory, and the
forward+backward time of every block type, at one batch size and sequence length.

Each model is measured in a fresh process so that peak memory is its own: on CUDA
``max_memory_allocated``; on CPU the rise of the process's peak RSS during the timed steps
(activations, gradients, optimizer state). Times are medians; ratios are taken in the same run.
Each model's step is also profiled (``torch.profiler``: matmuls, attention, norms/elementwise,
optimizer, Python and data, the gradient clipping) and its FLOPs counted by PyTorch's
``FlopCounterMode`` (weights shared across loops, routed experts and the ODE solver's evaluations
counted as run), which with this machine's matmul peak, measured in the same run, gives its MFU.
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tormented_mini.errors import TormentedError
from tormented_mini.options import BenchOptions

if TYPE_CHECKING:
    from rich.console import Console

BLOCK_NAMES = (
    "retnet",
    "titan_attn",
    "titan_attn_no_hope",
    "titan_attn_memory",
    "mamba",
    "ode",
    "moe_ffn",
    "dense_ffn",
)


def _presets(size: str, device: str) -> tuple[str, str]:
    full = size == "full" or (size == "auto" and device == "cuda")
    return ("mini", "frankenstein") if full else ("mini-cpu", "frankenstein-cpu")


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def measure_model(
    preset: str,
    batch_size: int,
    seq_len: int,
    steps: int,
    threads: int,
    precision: str,
    device: str = "cpu",
    compile: bool = False,
) -> dict[str, Any]:
    """Median seconds per AdamW training step and peak memory of one preset (run in a child process).

    With ``compile`` the timed steps run ``torch.compile(model)``; the FLOPs are counted on the
    eager model and no profile split is taken (compiled kernels are not aten ops)."""
    import torch

    from lm_shared.runtime import autocast_dtype, seed_everything
    from tormented_mini.modeling_tormented import PRESETS, TormentedBertConfig, TormentedBertForMaskedLM

    torch.set_num_threads(threads)
    seed_everything(0)
    config = PRESETS[preset](max_position_embeddings=max(seq_len, 128))
    eager = TormentedBertForMaskedLM(TormentedBertConfig.from_ultra(config, pad_token_id=0))
    # PreTrainedModel.to is wrapped with functools.wraps, which mypy reads as an unbound method.
    eager = eager.to(device)  # type: ignore[arg-type]
    model = torch.compile(eager) if compile else eager  # the compiled wrapper shares eager's parameters
    optimizer = torch.optim.AdamW(eager.parameters(), lr=1e-4)
    ids = torch.randint(5, config.vocab_size, (batch_size, seq_len), device=device)
    labels = torch.where(torch.rand(ids.shape, device=device) < 0.15, ids, torch.full_like(ids, -100))
    dtype = autocast_dtype(precision)

    def step() -> None:
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(eager.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()  # warm-up (allocates optimizer state)
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    if device == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024  # ru_maxrss is KiB
    return {
        "step_s": statistics.median(times),
        "peak_mb": peak_mb,
        "params_m": sum(p.numel() for p in eager.parameters()) / 1e6,
        "device": device,
        **_profile_and_count(eager, optimizer, ids, labels, device, dtype, profile=not compile),
    }


def _profile_and_count(
    model, optimizer, ids, labels, device: str, dtype, profile: bool = True
) -> dict[str, Any]:  # noqa: ANN001
    """The step's profile split and its FLOPs (after the timed steps, so peak memory is unaffected)."""
    import torch

    from lm_shared.profiling import measured_training_flops, profile_training_step

    def forward_backward(_batch: object = None) -> None:
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(ids, labels=labels).loss
        loss.backward()

    def optimizer_step() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    split = None
    if profile:
        split = profile_training_step(
            forward_backward,
            optimizer_step,
            health=lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0),
            steps=2,
            warmup=0,
            device=device,
        ).as_dict()
    flops = measured_training_flops(forward_backward)
    optimizer.zero_grad(set_to_none=True)
    return {"profile": split, "flops_per_step": flops}


def measure_blocks(
    preset: str, batch_size: int, seq_len: int, repeats: int, device: str = "cpu"
) -> dict[str, float]:
    """Median forward+backward seconds of each block type at the preset's width."""
    import torch

    from lm_shared.runtime import seed_everything
    from tormented_mini.modeling_tormented import (
        PRESETS,
        BiMamba,
        DenseFeedForward,
        MoEFeedForward,
        MultiScaleRetention,
        ODEBlock,
        TitanAttention,
    )

    seed_everything(0)
    config = PRESETS[preset]()
    builders = {
        "retnet": lambda: MultiScaleRetention(config),
        "titan_attn": lambda: TitanAttention(config),
        "titan_attn_no_hope": lambda: TitanAttention(config.replace(use_hope=False)),
        "titan_attn_memory": lambda: TitanAttention(config.replace(use_titan_memory=True)),
        "mamba": lambda: BiMamba(config),
        "ode": lambda: ODEBlock(config),
        "moe_ffn": lambda: MoEFeedForward(config),
        "dense_ffn": lambda: DenseFeedForward(config),
    }
    x = torch.randn(batch_size, seq_len, config.hidden_size, device=device, requires_grad=True)
    mask = torch.ones(batch_size, seq_len, dtype=torch.long, device=device)
    results = {}
    for name in BLOCK_NAMES:
        block = builders[name]().to(device)
        times = []
        for i in range(repeats + 1):
            _sync(device)
            start = time.perf_counter()
            out = block(x, mask)
            out = out[0] if isinstance(out, tuple) else out
            out.float().square().mean().backward()
            _sync(device)
            if i:  # the first call is a warm-up
                times.append(time.perf_counter() - start)
        results[name] = statistics.median(times)
    return results


def _in_child(fn, *args: Any) -> Any:  # noqa: ANN001
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def run(args: BenchOptions) -> int:
    """Time Mini's and Frankenstein's training steps (each in a fresh process) and every block
    type, write the JSON report to ``args.out`` and print the tables.

    Raises:
        TormentedError: a non-positive size, or ``--out`` not a ``.json`` file.
        lm_shared.errors.UserError: ``--device cuda`` without a visible GPU.
    """
    import torch
    from rich.console import Console

    from lm_shared.runtime import detect_precision, resolve_device

    if args.batch_size < 1 or args.seq_len < 2 or args.steps < 1:
        raise TormentedError("--batch-size, --steps must be >= 1 and --seq-len >= 2")
    out = Path(args.out)
    if out.suffix != ".json":
        raise TormentedError(f"--out must be a .json file, got {out}")
    device = resolve_device(args.device)
    if args.compile:
        from lm_shared.runtime import require_compile_backend

        require_compile_backend(device)
    mini, frank = _presets(args.size, device)
    precision = detect_precision(device)
    console = Console()
    console.print(
        f"bench on {device}, precision {precision}, batch {args.batch_size} x {args.seq_len}, {args.threads} threads"
    )
    results = _measure_training(args, (mini, frank), precision, device, console)
    peak32, peak_bf16 = _matmul_peaks(args.threads, device)
    with console.status("per-block forward+backward"):
        torch.set_num_threads(args.threads)
        blocks = measure_blocks(mini, args.batch_size, args.seq_len, max(2, args.steps), device)
    report = _report(args, device, precision, (mini, frank), results, blocks, (peak32, peak_bf16))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    _print_tables(console, report, results, peak32)
    console.print(f"wrote {out}")
    return 0


def _measure_training(
    args: BenchOptions, presets: tuple[str, str], precision: str, device: str, console: Console
) -> dict[str, dict[str, Any]]:
    """:func:`measure_model` of Mini and Frankenstein (and, with ``--bf16`` on the CPU, Mini under
    bf16 autocast as ``mini_bf16``), each in a fresh process."""
    mini, frank = presets
    compile = args.compile
    common = (args.batch_size, args.seq_len, args.steps, args.threads)
    results: dict[str, Any] = {}
    with console.status("Mini training steps"):
        results["mini"] = _in_child(measure_model, mini, *common, precision, device, compile)
    with console.status("Frankenstein training steps"):
        results["frankenstein"] = _in_child(measure_model, frank, *common, precision, device, compile)
    if args.bf16 and device == "cpu":
        with console.status("Mini with bf16 autocast"):
            results["mini_bf16"] = _in_child(measure_model, mini, *common, "bf16-mixed", device, compile)
    return results


def _matmul_peaks(threads: int, device: str) -> tuple[float, float | None]:
    """This machine's fp32 and (where native) bf16 matmul peaks in FLOP/s, with ``threads`` threads."""
    import torch

    from lm_shared.profiling import matmul_peak_flops
    from lm_shared.runtime import cpu_has_native_bf16

    torch.set_num_threads(threads)
    peak32 = matmul_peak_flops("float32", device=device)
    peak_bf16 = (
        matmul_peak_flops("bfloat16", device=device) if device == "cuda" or cpu_has_native_bf16() else None
    )
    return peak32, peak_bf16


def _report(
    args: BenchOptions,
    device: str,
    precision: str,
    presets: tuple[str, str],
    results: dict[str, dict[str, Any]],
    blocks: dict[str, float],
    peaks: tuple[float, float | None],
) -> dict[str, Any]:
    """The JSON report: step times, peak memory, sizes, block times, and each model's FLOPs, MFU
    (against the bf16 peak when training in bf16 and it is known) and profile split."""
    from lm_shared.profiling import model_flops_utilization

    mini, frank = presets
    peak32, peak_bf16 = peaks
    bf16 = results.get("mini_bf16")
    report = {
        "device": device,
        "precision": precision,
        "compile": args.compile,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "mini_preset": mini,
        "frankenstein_preset": frank,
        "mini_step_s": results["mini"]["step_s"],
        "frankenstein_step_s": results["frankenstein"]["step_s"],
        "mini_peak_mb": results["mini"]["peak_mb"],
        "frankenstein_peak_mb": results["frankenstein"]["peak_mb"],
        "mini_params_m": results["mini"]["params_m"],
        "frankenstein_params_m": results["frankenstein"]["params_m"],
        "frankenstein_over_mini_step": results["frankenstein"]["step_s"] / results["mini"]["step_s"],
        "mini_bf16_autocast_step_s": bf16["step_s"] if bf16 else None,
        "mini_bf16_over_fp32_step": bf16["step_s"] / results["mini"]["step_s"] if bf16 else None,
        "block_fwd_bwd_s": blocks,
        "block_width": mini,
        "matmul_peak_fp32_gflops": round(peak32 / 1e9, 1),
        "matmul_peak_bf16_gflops": round(peak_bf16 / 1e9, 1) if peak_bf16 else None,
    }
    for name in ("mini", "frankenstein"):
        r = results[name]
        tokens_per_s = args.batch_size * args.seq_len / r["step_s"]
        flops_per_token = r["flops_per_step"] / (args.batch_size * args.seq_len)
        peak = peak_bf16 if precision.startswith("bf16") and peak_bf16 else peak32
        report[f"{name}_flops_per_step"] = r["flops_per_step"]
        report[f"{name}_mfu"] = round(model_flops_utilization(tokens_per_s, flops_per_token, peak), 4)
        report[f"{name}_profile"] = r["profile"]
    return report


def _print_tables(
    console: Console, report: dict[str, Any], results: dict[str, dict[str, Any]], peak32: float
) -> None:
    """The training-step, per-block and profile-split tables."""
    from rich.table import Table

    from lm_shared.profiling import split_table

    mini, bf16 = report["mini_preset"], results.get("mini_bf16")
    table = Table(
        title=f"training step ({report['device']}, {report['precision']}, "
        f"batch {report['batch_size']} x {report['seq_len']})"
    )
    for column in ("model", "preset", "params (M)", "step (s)", "peak (MB)"):
        table.add_column(column)
    for name, preset in (("mini", mini), ("frankenstein", report["frankenstein_preset"])):
        r = results[name]
        table.add_row(name, preset, f"{r['params_m']:.2f}", f"{r['step_s']:.3f}", f"{r['peak_mb']:.0f}")
    if bf16:
        table.add_row(
            "mini (bf16 autocast)",
            mini,
            f"{bf16['params_m']:.2f}",
            f"{bf16['step_s']:.3f}",
            f"{bf16['peak_mb']:.0f}",
        )
    console.print(table)
    blocks = report["block_fwd_bwd_s"]
    block_table = Table(title=f"block forward+backward ({mini} width)")
    block_table.add_column("block")
    block_table.add_column("seconds")
    block_table.add_column("x retnet")
    for name, seconds in blocks.items():
        block_table.add_row(name, f"{seconds:.4f}", f"{seconds / blocks['retnet']:.1f}")
    console.print(block_table)
    models = ("mini", "frankenstein")
    console.print(
        split_table(
            f"where one training step's time goes (ms, torch.profiler; matmul peak {peak32 / 1e9:.0f} GFLOP/s fp32)",
            {m: report[f"{m}_profile"] for m in models},
            mfu={m: report[f"{m}_mfu"] for m in models},
        )
    )
