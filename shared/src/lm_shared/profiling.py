"""Where one training step's time goes, the machine's matmul peak, and model FLOP utilisation.

Every member's ``bench`` uses these three pieces so that their reports read the same way:

- :func:`profile_training_step` runs a few training steps under ``torch.profiler`` with each phase
  (data, forward + backward, optimizer, health checks/logging) in its own ``record_function`` and
  splits the step into the six categories of :data:`CATEGORIES`;
- :func:`matmul_peak_flops` measures what this machine's matmul reaches in a given dtype, in the
  same process and with the same thread count as the bench;
- :func:`transformer_training_flops_per_token` and :func:`model_flops_utilization` turn a measured
  throughput into MFU, the fraction of that peak the model's own arithmetic uses (PaLM,
  Chowdhery et al. 2022, appendix B: 6·N + 12·L·H·T training FLOPs per token, attention included).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

CATEGORIES = ("matmul", "attention", "norm_elementwise", "optimizer", "python_data", "logging_health")

# aten ops whose self time is dense matrix multiplication (forward and backward use the same ops).
_MATMUL_OPS = frozenset(
    {
        "aten::mm",
        "aten::addmm",
        "aten::bmm",
        "aten::baddbmm",
        "aten::addbmm",
        "aten::matmul",
        "aten::linear",
        "aten::_addmm_activation",
        "aten::mv",
        "aten::dot",
        "aten::addmv",
    }
)
_PHASES = ("data", "forward_backward", "optimizer", "health")
_PHASE_PREFIX = "lm_shared.step::"


def _op_category(name: str) -> str:
    """Category of one aten op met inside the forward/backward phase."""
    if name in _MATMUL_OPS:
        return "matmul"
    # SDPA (any backend, forward and backward) and an explicit attention's softmax; the loss's
    # log_softmax is not attention.
    if "attention" in name or ("softmax" in name and "log_softmax" not in name):
        return "attention"
    return "norm_elementwise"


@dataclass
class StepProfile:
    """The split of one training step, averaged over the profiled steps.

    Attributes:
        step_ms: milliseconds per step under the profiler (the phases' wall time, slightly above an
            unprofiled step): the sum of ``split_ms``.
        split_ms: milliseconds per step in each of :data:`CATEGORIES`; they add up to ``step_ms``.
            ``matmul``, ``attention`` and ``norm_elementwise`` are the self times of the aten ops
            run by forward + backward (on CUDA their device times); ``optimizer`` and
            ``logging_health`` are those phases' wall times; ``python_data`` is the data phase plus
            the forward/backward wall time no aten op accounts for (Python, autograd bookkeeping,
            dispatch).
        top_ops: the ten aten ops with the largest self time in forward + backward, in ms per step.
    """

    step_ms: float
    split_ms: dict[str, float]
    top_ops: dict[str, float] = field(default_factory=dict)

    def fractions(self) -> dict[str, float]:
        """Each category's share of ``step_ms`` (0-1)."""
        total = self.step_ms or 1.0
        return {name: self.split_ms[name] / total for name in CATEGORIES}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``step_ms``, ``split_ms``, ``split_fraction`` and ``top_ops_ms``, rounded."""
        return {
            "step_ms": round(self.step_ms, 3),
            "split_ms": {k: round(v, 3) for k, v in self.split_ms.items()},
            "split_fraction": {k: round(v, 4) for k, v in self.fractions().items()},
            "top_ops_ms": {k: round(v, 3) for k, v in self.top_ops.items()},
        }


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence file descriptor 2 while the profiler starts and stops.

    Kineto prints ``USDT ... profiler_start`` and, on a CUDA build without a GPU, ``ERROR ...
    gpuGetDeviceCount failed`` from C++ every time; a user reading a bench should not see them. Only
    the start and stop are wrapped, never the profiled steps.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _phase_of(event: Any) -> str | None:
    """The ``lm_shared.step::`` phase enclosing a profiler event (walks up its CPU parents)."""
    node = event
    while node is not None:
        if node.name.startswith(_PHASE_PREFIX):
            return node.name[len(_PHASE_PREFIX) :]
        node = node.cpu_parent
    return None


def profile_training_step(
    forward_backward: Callable[[Any], Any],
    optimizer_step: Callable[[], Any],
    data: Callable[[], Any] | None = None,
    health: Callable[[], Any] | None = None,
    steps: int = 3,
    warmup: int = 1,
    device: str = "cpu",
) -> StepProfile:
    """Profile ``steps`` training steps (after ``warmup`` unprofiled ones) and split their time.

    One step is: ``batch = data()`` (or ``None``), ``forward_backward(batch)`` (forward, loss,
    ``backward()``), ``optimizer_step()`` (step and ``zero_grad``) and ``health()`` (gradient
    statistics, logging), each in its own ``record_function`` so that every aten op is attributed
    to its phase. On CUDA each phase ends with a synchronisation, so phase wall times are device
    times, and op times are the kernels' device times.

    Args:
        forward_backward: called with the batch; must run the backward pass.
        optimizer_step: the optimizer step, including ``zero_grad``.
        data: returns the next batch (data loading, host-to-device copies).
        health: gradient-health checks and logging done every step.
        steps: profiled steps (>= 1); the split is their mean.
        warmup: unprofiled steps first (allocations, autotuning, lazy optimizer state).
        device: ``"cpu"`` or ``"cuda"``: which clock the op times come from.

    Returns:
        A :class:`StepProfile` in milliseconds per step.

    Raises:
        ValueError: ``steps`` < 1 or ``warmup`` < 0.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    cuda = device == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    phases: dict[str, Callable[[Any], Any]] = {
        "data": (lambda _: data()) if data is not None else (lambda _: None),
        "forward_backward": forward_backward,
        "optimizer": lambda _: optimizer_step(),
        "health": (lambda _: health()) if health is not None else (lambda _: None),
    }

    def one_step() -> None:
        batch = None
        for name in _PHASES:
            with record_function(_PHASE_PREFIX + name):
                result = phases[name](batch)
                sync()
            if name == "data":
                batch = result

    for _ in range(warmup):
        one_step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync()
    prof = profile(activities=activities)
    with _quiet_native_stderr():
        prof.start()
    try:
        for _ in range(steps):
            one_step()
    finally:
        with _quiet_native_stderr():
            prof.stop()

    phase_ms = dict.fromkeys(_PHASES, 0.0)
    op_ms = dict.fromkeys(("matmul", "attention", "norm_elementwise"), 0.0)
    per_op: dict[str, float] = {}
    for event in prof.events():
        if event.name.startswith(_PHASE_PREFIX) and event.cpu_parent is None:
            phase_ms[event.name[len(_PHASE_PREFIX) :]] += event.cpu_time_total / 1e3
            continue
        if not event.name.startswith("aten::") or _phase_of(event) != "forward_backward":
            continue
        self_us = event.self_device_time_total if cuda else event.self_cpu_time_total
        op_ms[_op_category(event.name)] += self_us / 1e3
        per_op[event.name] = per_op.get(event.name, 0.0) + self_us / 1e3
    phase_ms = {k: v / steps for k, v in phase_ms.items()}
    op_ms = {k: v / steps for k, v in op_ms.items()}
    fb_ops = sum(op_ms.values())
    split = {
        **op_ms,
        "optimizer": phase_ms["optimizer"],
        "python_data": phase_ms["data"] + max(0.0, phase_ms["forward_backward"] - fb_ops),
        "logging_health": phase_ms["health"],
    }
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:10]
    return StepProfile(step_ms=sum(split.values()), split_ms=split, top_ops={k: v / steps for k, v in top})


def matmul_peak_flops(
    dtype: str = "float32", device: str = "cpu", size: int | None = None, repeats: int = 10
) -> float:
    """Best measured FLOP/s of a square ``size`` x ``size`` matmul in ``dtype`` on ``device``.

    Uses the calling process's torch thread count, so call it with the bench's threads. The best of
    ``repeats`` timed calls (after one warm-up) is the peak this machine reaches in practice, the
    denominator of MFU. ``2·size³`` FLOPs per call.

    Args:
        dtype: a torch dtype name (``"float32"``, ``"bfloat16"``, ``"float16"``).
        device: ``"cpu"``, ``"cuda"`` or ``"mps"``.
        size: matrix side; default 8192 on CUDA, 1024 elsewhere. A GPU needs the large side: on an
            H200 a 1024 or 4096 bf16 product is too short to reach the peak (95 and 745 TFLOP/s
            against 798 at 8192 in one run; 61-76 at 1024 and 560 at 4096 in the benches' runs).
        repeats: timed calls.

    Returns:
        FLOP/s (float).

    Raises:
        ValueError: an unknown dtype name, ``size`` < 1 or ``repeats`` < 1.
    """
    import torch

    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; expected e.g. float32, bfloat16, float16")
    if size is None:
        size = 8192 if device == "cuda" else 1024
    if size < 1 or repeats < 1:
        raise ValueError(f"size and repeats must be >= 1, got {size}, {repeats}")
    a = torch.randn(size, size, device=device).to(torch_dtype)
    b = torch.randn(size, size, device=device).to(torch_dtype)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    torch.mm(a, b)
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def transformer_training_flops_per_token(
    n_params: int, num_layers: int, hidden_size: int, seq_len: int
) -> float:
    """Training FLOPs per token of a transformer: ``6·N + 12·L·H·T`` (PaLM, appendix B).

    ``6·N`` is forward (2·N) plus backward (4·N) through every weight matrix; ``12·L·H·T`` adds the
    attention scores and the weighted sum (``2·T·H`` each per token and layer, forward, times three
    for the backward), counted for the full T x T square as PaLM does (a causal kernel skips half).

    Args:
        n_params: parameters used in matmuls; with tied embeddings the whole count (the output head
            is the embedding matrix), otherwise leave the input embedding out.
        num_layers: attention layers (L).
        hidden_size: model width (H = heads · head size).
        seq_len: tokens per sequence (T).

    Returns:
        FLOPs per trained token.
    """
    return 6.0 * n_params + 12.0 * num_layers * hidden_size * seq_len


def measured_training_flops(forward_backward: Callable[[], Any]) -> int:
    """FLOPs of one call of ``forward_backward`` as counted by ``torch.utils.flop_counter``.

    PyTorch's ``FlopCounterMode`` counts matmuls, convolutions and attention (SDPA) forward and
    backward, not elementwise ops, which is MFU's convention. Prefer it to the 6·N formula for
    models whose FLOPs are not proportional to their parameters: weights shared across loops,
    mixture-of-experts routing, an ODE solver's repeated evaluations.

    Args:
        forward_backward: runs one forward pass, the loss and ``backward()``.

    Returns:
        Total FLOPs (int).
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        forward_backward()
    return int(counter.get_total_flops())


def model_flops_utilization(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    """MFU: the model's FLOP/s (``tokens_per_s · flops_per_token``) as a fraction of ``peak_flops``.

    Model FLOP utilisation as PaLM defines it (Chowdhery et al., 2022, appendix B): only the
    model's own arithmetic counts, not recomputation or framework overhead.

    Args:
        tokens_per_s: measured training throughput, tokens per second.
        flops_per_token: e.g. :func:`transformer_training_flops_per_token`, or
            :func:`measured_training_flops` divided by the tokens of that call.
        peak_flops: the machine's peak FLOP/s, e.g. :func:`matmul_peak_flops`.

    Returns:
        The fraction (0-1 for a sound peak; above 1 means the peak was underestimated).

    Raises:
        ValueError: ``peak_flops <= 0``.
    """
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be positive, got {peak_flops}")
    return tokens_per_s * flops_per_token / peak_flops


def split_table(
    title: str, profiles: Mapping[str, Mapping[str, Any] | None], mfu: Mapping[str, float] | None = None
) -> Table:
    """The step-split table every bench prints: one row per category, one column per profile.

    Args:
        title: the table's title.
        profiles: column name -> :meth:`StepProfile.as_dict` output (what the benches keep in
            their JSON), or ``None`` when no split was taken (e.g. with ``--compile``); the
            category rows are shown only when every column has a profile.
        mfu: column name -> MFU as a fraction; adds an ``MFU`` row (shown as a percentage).

    Returns:
        A ``rich.table.Table`` whose cells read ``ms (share)``, in milliseconds per step.
    """
    from rich.table import Table

    table = Table(title=title)
    table.add_column("category")
    for name in profiles:
        table.add_column(name, justify="right")
    if all(prof is not None for prof in profiles.values()):
        for category in CATEGORIES:
            table.add_row(
                category,
                *(
                    f"{prof['split_ms'][category]:.1f} ({prof['split_fraction'][category]:.0%})"  # type: ignore[index]
                    for prof in profiles.values()
                ),
            )
    if mfu is not None:
        table.add_row("MFU", *(f"{mfu[name]:.1%}" for name in profiles))
    return table
