"""Seeding, device and precision detection, and run directories.

Torch is optional here so that TensorFlow-only packages can use the same seeding and run-directory
helpers; every torch-specific function imports it lazily.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

# Compute capability of cards whose fp16 throughput is a small fraction of fp32 (Pascal GP102/GP104,
# e.g. the P40/P4/GTX 10xx): mixed fp16 there is slower than fp32.
_SLOW_FP16_CAPABILITIES = {(6, 1)}


def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed Python, NumPy and (when installed) PyTorch and TensorFlow from one integer.

    Also sets ``PYTHONHASHSEED`` (for child processes). TensorFlow is seeded only when the caller
    already imported it.

    Args:
        seed: in [0, 2**32).
        deterministic: also ask PyTorch for deterministic kernels (slower, and ops without a
            deterministic implementation raise); sets ``CUBLAS_WORKSPACE_CONFIG`` unless set.

    Returns:
        ``seed``, so callers can log it.

    Raises:
        ValueError: ``seed`` is outside [0, 2**32).
    """
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:
        pass
    else:
        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
    import sys

    # Only seed TensorFlow if the caller already imported it: importing it here would cost seconds.
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        tf.random.set_seed(seed)
    return seed


def detect_device() -> str:
    """Return ``"cuda"``, ``"mps"`` or ``"cpu"``, the best available for PyTorch."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_device(requested: str = "auto") -> str:
    """The device a ``--device`` flag asks for: ``auto`` is :func:`detect_device`.

    Args:
        requested: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.

    Returns:
        ``"cpu"``, ``"cuda"`` or ``"mps"``.

    Raises:
        lm_shared.errors.UserError: an unknown name, or ``cuda``/``mps`` on a machine without it
            (one line, so a CLI's guard prints it without a traceback).
    """
    from lm_shared.errors import UserError

    if requested == "auto":
        return detect_device()
    if requested not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device: expected auto, cpu, cuda or mps, got {requested!r}")
    if requested != "cpu":
        import torch

        mps = getattr(torch.backends, "mps", None)
        available = torch.cuda.is_available() if requested == "cuda" else bool(mps and mps.is_available())
        if not available:
            raise UserError(f"--device {requested}: no {requested.upper()} device is visible to PyTorch here")
    return requested


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU has bf16 matrix instructions (x86 AVX512-BF16 or AMX-BF16, Arm BF16).

    Args:
        cpuinfo: the text of a ``/proc/cpuinfo``; default: this machine's (Linux), and False
            where it cannot be read.

    Returns:
        Whether the ``flags``/``Features`` lines list ``avx512_bf16``, ``amx_bf16`` or ``bf16``.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


@dataclasses.dataclass(frozen=True)
class ThreadChoice:
    """How many CPU threads torch gets, and why (see :func:`cpu_threads`)."""

    threads: int
    reason: str  # one line for the run header, e.g. "auto: 2 free cores"


def cpu_threads(
    requested: int = 0, preferred: int = 2, busy_cores: float | None = None, cores: int | None = None
) -> ThreadChoice:
    """The intra-op thread count for torch: ``requested`` if > 0, else up to ``preferred`` free cores.

    PyTorch's OpenMP threads spin-wait for each other at the end of every parallel operation, so
    when another process holds one of the cores a thread waits for a descheduled partner: on a
    2-core machine with one busy process, nanologic's CPU training step ran at 1,321 tokens/s
    with 2 threads against 5,492 with 1 (10,527 with 2 on the idle machine; tormented-mini's
    Mini step 5-45 s against 1.0 s). ``requested = 0`` (auto) therefore counts the cores other
    processes keep busy and leaves them alone. Thread count changes float summation order, so a
    run's exact numbers depend on it: the choice is printed and saved with the run, and passing
    it explicitly reproduces a run.

    Args:
        requested: a thread count (> 0) or 0 for auto.
        preferred: the most threads auto picks (members size it to their ops: more threads do not
            pay for small matrices).
        busy_cores: cores' worth of CPU other processes use (default: measured over 0.25 s with
            psutil, niced processes included; this process is idle while it measures).
        cores: usable cores (default: this process's CPU affinity).

    Returns:
        The :class:`ThreadChoice`; at least 1 thread.

    Raises:
        ValueError: ``requested`` or ``preferred`` is negative / below 1.
    """
    if requested < 0 or preferred < 1:
        raise ValueError(f"threads must be >= 0 (0 = auto) and preferred >= 1, got {requested}, {preferred}")
    if requested > 0:
        return ThreadChoice(requested, "as asked")
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if busy_cores is None:
        import psutil

        # Niced work counts too: a `nice -n 19` busy loop in this session cost the 2-thread step only
        # 8 % (9,252 vs 10,016 tokens/s), but across sessions Linux's autogroups (on by default on
        # desktops) give it a full share again, and then it halves the step like any other process.
        before = psutil.cpu_times()
        time.sleep(0.25)
        delta = {k: v - getattr(before, k) for k, v in psutil.cpu_times()._asdict().items()}
        total = sum(v for k, v in delta.items() if k not in ("guest", "guest_nice"))  # in user already
        busy = sum(delta.get(k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal"))
        busy_cores = busy / total * (os.cpu_count() or 1) if total > 0 else 0.0
    free = max(1, cores - int(busy_cores + 0.5))
    threads = min(preferred, free)
    if free >= min(preferred, cores):
        return ThreadChoice(threads, f"auto: {free} free core{'s' if free > 1 else ''}")
    return ThreadChoice(
        threads,
        f"auto: other processes keep {busy_cores:.1f} of {cores} cores busy, and threads that share "
        "a core wait for each other; --threads N forces N",
    )


def detect_precision(device: str | None = None, cpu_bf16: bool = False) -> str:
    """Pick a Lightning precision string for ``device``.

    bf16-mixed on GPUs with native bf16 (Ampere and newer), 16-mixed on older GPUs with fast fp16
    (Volta/Turing, e.g. the T4), and 32-true on cards whose fp16 is slow (the P40). On the CPU
    32-true, unless ``cpu_bf16`` is set and the CPU has native bf16 instructions (bf16 autocast
    then runs matmuls about twice as fast); callers opt in after checking their model trains in it.

    Args:
        device: ``"cuda"``, ``"mps"`` or ``"cpu"``; default :func:`detect_device`. On CUDA the
            current device's capability decides.
        cpu_bf16: allow bf16-mixed on a CPU with native bf16 (:func:`cpu_has_native_bf16`).

    Returns:
        ``"bf16-mixed"``, ``"16-mixed"`` or ``"32-true"`` (``"32-true"`` on MPS).
    """
    import torch

    device = device or detect_device()
    if device != "cuda":
        return "bf16-mixed" if device == "cpu" and cpu_bf16 and cpu_has_native_bf16() else "32-true"
    major, minor = torch.cuda.get_device_capability()
    if torch.cuda.is_bf16_supported() and major >= 8:
        return "bf16-mixed"
    if (major, minor) in _SLOW_FP16_CAPABILITIES or major < 6:
        return "32-true"
    return "16-mixed"


@dataclasses.dataclass(frozen=True)
class CompileChoice:
    """Whether a training model is ``torch.compile``d, and why (see :func:`compile_choice`)."""

    enabled: bool
    reason: str  # one line for the run header and report, e.g. "auto: g++ found and 3000 steps to run"


COMPILE_MODES = ("auto", "on", "off")


def compile_mode(value: str | bool) -> str | bool:
    """A config's ``compile`` field, with a bool read as one of ``COMPILE_MODES``.

    ``True``/``False`` (configs saved when ``--compile`` was a switch) become ``"on"``/``"off"``;
    anything else is returned as it is, for the config's own check to accept or refuse.
    """
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


def compile_backend(device: str) -> str | None:
    """What Inductor (``torch.compile``'s default backend) needs to build kernels for ``device``.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"mps"``.

    Returns:
        The C++ compiler Inductor found on the CPU (its own search, which runs ``CXX --version``:
        a compiler that answers but cannot build is caught only when compiling fails),
        ``"triton"`` on CUDA when Triton imports, ``None`` when nothing usable was found (and
        always on MPS, which Inductor does not target here).
    """
    if device == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            return str(get_cpp_compiler())
        except Exception:  # InvalidCxxCompiler or an Inductor that cannot load: no backend
            return None
    if device == "cuda":
        try:
            from torch.utils._triton import has_triton

            return "triton" if has_triton() else None
        except ImportError:
            return None
    return None


def compile_choice(requested: str, device: str, steps: int, min_steps: int = 1000) -> CompileChoice:
    """Decide whether to ``torch.compile`` a model for a training run.

    ``auto`` compiles when Inductor can build kernels on ``device`` (:func:`compile_backend`) and
    the run is long enough to repay the compilation: on a 2-core CPU compiling seeddelta's tiny
    model took about a minute and made its step ~1.27x faster, so the cost is repaid after
    ~1,000 steps (``min_steps``). ``on`` compiles (or refuses), ``off`` never does.

    Args:
        requested: ``"auto"``, ``"on"`` or ``"off"``.
        device: the training device (``"cpu"``, ``"cuda"``, ``"mps"``).
        steps: optimizer steps the run has left.
        min_steps: the shortest run ``auto`` compiles.

    Returns:
        The :class:`CompileChoice`.

    Raises:
        ValueError: ``requested`` is not one of ``COMPILE_MODES``, or ``on`` where ``device`` has
            no compiler backend (the message says what is missing).
    """
    if requested not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {requested!r}")
    if requested == "off":
        return CompileChoice(False, "off: as asked")
    if requested == "auto" and steps < min_steps:  # decided without running the compiler search
        return CompileChoice(False, f"auto: {steps} steps are too few to repay compiling, eager")
    backend = compile_backend(device)
    if requested == "on":
        if backend is None:
            raise ValueError(_no_backend_message("compile on", device, "use --compile off"))
        return CompileChoice(True, f"on: as asked ({backend})")
    if backend is None:
        return CompileChoice(False, f"auto: no compiler backend for {device}, eager")
    return CompileChoice(True, f"auto: {backend} found and {steps} steps to run")


def _no_backend_message(what: str, device: str, instead: str) -> str:
    need = {"cpu": "a working C++ compiler (g++ or clang++; $CXX if set)", "cuda": "Triton"}.get(device, "")
    return (
        f"{what}: torch.compile cannot build kernels on {device}"
        + (f" (it needs {need})" if need else "")
        + f"; {instead}"
    )


def require_compile_backend(device: str) -> str:
    """The compiler backend of ``device`` (:func:`compile_backend`), for a bench's ``--compile``.

    Raises:
        lm_shared.errors.UserError: none found (one line: a bench's ``--compile`` otherwise fails
            deep inside Inductor with a long traceback).
    """
    from lm_shared.errors import UserError

    backend = compile_backend(device)
    if backend is None:
        raise UserError(_no_backend_message("--compile", device, "run without --compile"))
    return backend


def compile_module(module: Any, device: str) -> Any:
    """``torch.compile(module)`` (Inductor) with eager PyTorch's random numbers on the CPU.

    Inductor generates its own random numbers for dropout and ``randn_like`` by default, and on
    the CPU they are slower than eager PyTorch's: infinito-iit's baseline step (dropout 0.15, 2
    cores) took 379 ms compiled that way against 284 ms eager, and 263 ms compiled with
    Inductor's ``fallback_random`` option, which calls the eager random kernels instead. With that
    option the compiled module also draws the same numbers as the eager one from the same seed.
    On CUDA Inductor's fused (Philox) random numbers are the fast path, so they stay.

    Args:
        module: an ``nn.Module`` (or a function) to compile.
        device: the device type it runs on (``"cpu"``, ``"cuda"``, ``"mps"``).

    Returns:
        The ``torch.compile`` wrapper; compilation itself happens at the first call.
    """
    import torch

    return torch.compile(module, options={"fallback_random": True} if device == "cpu" else None)


def autocast_dtype(precision: str) -> Any:
    """The ``torch.autocast`` dtype for a Lightning precision string.

    Args:
        precision: a Lightning precision such as ``"bf16-mixed"``, ``"16-mixed"`` or
            ``"32-true"`` (only the prefix is read).

    Returns:
        ``torch.bfloat16``, ``torch.float16``, or ``None`` for full fp32 (no autocast).

    Raises:
        ValueError: a precision that starts with none of ``bf16``, ``16``, ``32``.
    """
    import torch

    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    if precision.startswith("32"):
        return None
    raise ValueError(f"unknown precision {precision!r}; expected bf16-mixed, 16-mixed or 32-true")


def make_run_dir(root: str | os.PathLike[str], name: str | None = None) -> Path:
    """Create a run directory ``root/name`` and return it.

    Args:
        root: the parent folder (created when missing).
        name: the run's name; default a UTC timestamp ``YYYYmmdd-HHMMSS``, suffixed ``-2``,
            ``-3``... when taken, so saved work is never overwritten. A given name may exist.

    Returns:
        The directory.
    """
    root = Path(root)
    if name is None:
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
        name = stamp
        suffix = 1
        while (root / name).exists():
            suffix += 1
            name = f"{stamp}-{suffix}"
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save_config(config: Any, path: str | os.PathLike[str]) -> Path:
    """Write a dataclass (nested ones too) or a mapping as indented JSON, atomically.

    Args:
        config: a dataclass instance or mapping; paths become strings, tuples lists and NumPy
            scalars Python numbers; keys are sorted.
        path: the ``.json`` file to write.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: a value JSON cannot encode (nothing is written).
    """
    from lm_shared.runs import atomic_write_text

    return atomic_write_text(path, json.dumps(_to_jsonable(config), indent=2, sort_keys=True) + "\n")


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON config written by :func:`save_config`.

    Args:
        path: the ``.json`` file.

    Returns:
        The decoded JSON (a dict for a file :func:`save_config` wrote).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid JSON (the message gives line and column).
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: config file not found") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON config: {exc.msg}") from None
