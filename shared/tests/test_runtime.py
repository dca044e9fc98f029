from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch

from lm_shared.runtime import (
    autocast_dtype,
    cpu_has_native_bf16,
    detect_device,
    detect_precision,
    load_config,
    make_run_dir,
    save_config,
    seed_everything,
)


def test_seed_everything_reproduces_all_generators():
    seed_everything(123)
    a = (random.random(), np.random.rand(), torch.rand(3))
    seed_everything(123)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    with pytest.raises(ValueError):
        seed_everything(-1)


def test_device_and_precision_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("CPU-only expectations")
    assert detect_device() in {"cpu", "mps"}
    assert detect_precision("cpu") == "32-true"
    expected = "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    assert detect_precision("cpu", cpu_bf16=True) == expected
    assert autocast_dtype("bf16-mixed") == torch.bfloat16
    assert autocast_dtype("32-true") is None
    with pytest.raises(ValueError):
        autocast_dtype("8-bit")


def test_precision_rules_for_gpu_generations(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cases = {(8, 6): (True, "bf16-mixed"), (7, 5): (False, "16-mixed"), (6, 1): (False, "32-true")}
    for cap, (bf16, expected) in cases.items():
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, c=cap: c)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, b=bf16: b)
        assert detect_precision("cuda") == expected, cap


@dataclasses.dataclass
class Inner:
    width: int = 8


@dataclasses.dataclass
class Outer:
    name: str = "x"
    inner: Inner = dataclasses.field(default_factory=Inner)


def test_run_dir_and_config(tmp_path):
    first = make_run_dir(tmp_path)
    second = make_run_dir(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
    path = save_config(Outer(), first / "config.json")
    assert json.loads(path.read_text()) == {"inner": {"width": 8}, "name": "x"}
    assert load_config(path)["inner"]["width"] == 8
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1,\n oops}')
    with pytest.raises(ValueError, match=r"bad.json:2"):
        load_config(bad)


def test_cpu_bf16_flags():
    x86 = "processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"
    old = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n"
    assert cpu_has_native_bf16(x86) and cpu_has_native_bf16(arm)
    assert not cpu_has_native_bf16(old) and not cpu_has_native_bf16("")


def test_resolve_device_refuses_what_the_machine_lacks(monkeypatch):
    import torch

    from lm_shared.errors import UserError
    from lm_shared.runtime import detect_device, resolve_device

    assert resolve_device("auto") == detect_device()
    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="--device cuda: no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(UserError, match="expected auto, cpu, cuda or mps"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda") == "cuda"


def test_cpu_threads_leaves_busy_cores_alone_and_honours_an_explicit_count():
    from lm_shared.runtime import cpu_threads

    assert cpu_threads(3, preferred=2).threads == 3  # explicit wins, even above preferred
    idle = cpu_threads(0, preferred=2, busy_cores=0.1, cores=2)
    assert idle.threads == 2 and idle.reason == "auto: 2 free cores"
    busy = cpu_threads(0, preferred=2, busy_cores=1.2, cores=2)
    assert busy.threads == 1 and "--threads N" in busy.reason
    assert cpu_threads(0, preferred=2, busy_cores=7.9, cores=2).threads == 1  # never below one
    assert cpu_threads(0, preferred=4, busy_cores=0.0, cores=2).threads == 2  # never above the cores
    assert cpu_threads(0, preferred=2, busy_cores=1.0, cores=8).threads == 2
    assert 1 <= cpu_threads(0, preferred=2).threads <= 2  # measured on this machine
    with pytest.raises(ValueError, match="threads"):
        cpu_threads(-1)


def test_compile_choice_compiles_only_where_a_backend_exists_and_the_run_repays_it(monkeypatch):
    import lm_shared.runtime as runtime

    monkeypatch.setattr(runtime, "compile_backend", lambda device: "g++" if device == "cpu" else None)
    assert runtime.compile_choice("auto", "cpu", 3000) == runtime.CompileChoice(
        True, "auto: g++ found and 3000 steps to run"
    )
    short = runtime.compile_choice("auto", "cpu", 999)
    assert not short.enabled and "too few" in short.reason
    assert not runtime.compile_choice("auto", "mps", 3000).enabled
    assert not runtime.compile_choice("off", "cpu", 3000).enabled
    assert runtime.compile_choice("on", "cpu", 1).enabled  # asked for: even a short run
    with pytest.raises(
        ValueError, match=r"cannot build kernels on cuda \(it needs Triton\); use --compile off"
    ):
        runtime.compile_choice("on", "cuda", 3000)
    with pytest.raises(ValueError, match="one of auto, on, off"):
        runtime.compile_choice("yes", "cpu", 3000)


def test_compile_backend_runs_inductors_own_compiler_search():
    import torch._inductor.config as inductor_config

    from lm_shared.runtime import compile_backend

    assert compile_backend("mps") is None
    # A "compiler" that exists but fails is no backend: the search runs it, not just finds it.
    # (torch's own patch: pytest's monkeypatch leaves a config entry deleted on undo.)
    with inductor_config.patch({"cpp.cxx": ("/bin/false",)}):
        assert compile_backend("cpu") is None


def test_compile_module_draws_eager_dropout_masks_on_the_cpu():
    from lm_shared.runtime import compile_backend, compile_module

    if compile_backend("cpu") is None:
        pytest.skip("no C++ compiler for Inductor on this machine")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Dropout(0.5)).train()
    x = torch.randn(4, 16)
    compiled = compile_module(module, "cpu")
    torch.manual_seed(1)
    eager_out = module(x)
    torch.manual_seed(1)
    compiled_out = compiled(x)
    # The same seed gives the same dropout mask: Inductor called eager PyTorch's random kernel.
    assert torch.equal(compiled_out == 0, eager_out == 0)
    torch.testing.assert_close(compiled_out, eager_out)


def test_a_bench_compile_without_a_backend_is_one_line(monkeypatch):
    from lm_shared import runtime
    from lm_shared.errors import UserError

    monkeypatch.setattr(runtime, "compile_backend", lambda device: None)
    with pytest.raises(
        UserError, match=r"^--compile: torch.compile cannot build kernels on cpu .*; run without --compile$"
    ):
        runtime.require_compile_backend("cpu")
    monkeypatch.setattr(runtime, "compile_backend", lambda device: "g++")
    assert runtime.require_compile_backend("cpu") == "g++"


def test_compile_mode_reads_a_saved_switch_as_on_or_off():
    from lm_shared.runtime import compile_mode

    assert (compile_mode(True), compile_mode(False)) == ("on", "off")
    assert [compile_mode(m) for m in ("auto", "on", "off", "bogus")] == ["auto", "on", "off", "bogus"]
