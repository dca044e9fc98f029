"""seeddelta under the run-folder policy: no silent overwrite, resume, interrupt, non-finite stop."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch._dynamo.exc import TorchDynamoException

import lm_shared.runtime as runtime
import seeddelta.train as train_module
from lm_shared.errors import UserError
from lm_shared.runs import RunFolderError, TrainingInterrupted
from seeddelta.cli import main
from seeddelta.errors import SeedDeltaError
from seeddelta.train import TrainConfig, train

# Keys a policy file uses, so generated objects reach past the top-level checks.
KEYS = [
    "version",
    "defaults",
    "ranges",
    "layers",
    "stack_guard",
    "K",
    "tensors",
    "enabled",
    "scheme",
    "gate",
    "up",
]
SHAPE = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2}


def _cfg(**changes) -> TrainConfig:
    base = dict(
        steps=6,
        docs_per_step=2,
        seq_len=80,
        val_samples=3,
        tokenizer_samples=200,
        vocab_size=300,
        precision="32-true",
        threads=1,
        warmup_steps=2,
        log_every=1,
        checkpoint_every=2,
    )
    return TrainConfig(**{**base, **changes})


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt", weights_only=True)


def _train_until_sigint_in_step_3(run: Path, cfg: TrainConfig, monkeypatch) -> None:
    """Train into ``run`` with a SIGINT while step 3 draws its batch: the loop saves after it and stops."""
    real_batch, calls = train_module._batch, {"n": 0}

    def batch_then_sigint(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return real_batch(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "_batch", batch_then_sigint)
        train(run, cfg, SHAPE, progress=False)


def test_sigint_then_resume_reaches_the_uninterrupted_weights_and_log(tmp_path, monkeypatch) -> None:
    train(tmp_path / "ref", _cfg(), SHAPE, progress=False)
    with pytest.raises(TrainingInterrupted, match="at step 4/6.*--resume"):
        _train_until_sigint_in_step_3(tmp_path / "run", _cfg(), monkeypatch)
    assert (tmp_path / "run" / "checkpoint.pt").exists() and not (tmp_path / "run" / "model.pt").exists()
    with pytest.raises(RunFolderError, match="interrupted run.*--resume"):
        train(tmp_path / "run", _cfg(), SHAPE, progress=False)
    with pytest.raises(RunFolderError, match="train.lr"):
        train(tmp_path / "run", _cfg(lr=1e-3), SHAPE, progress=False, resume=True)

    report = train(tmp_path / "run", _cfg(threads=2), SHAPE, progress=False, resume=True)
    assert report["resumed_from_step"] == 4 and report["steps_done"] == 6
    ref, got = _weights(tmp_path / "ref"), _weights(tmp_path / "run")
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=0, atol=1e-6)
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(6))
    ref_losses = [
        json.loads(x)["loss"] for x in (tmp_path / "ref" / "train_log.jsonl").read_text().splitlines()
    ]
    got_losses = [
        json.loads(x)["loss"] for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    ]
    assert got_losses == pytest.approx(ref_losses, abs=1e-6)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_finished_run_is_never_rewritten_without_force(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    train(run, _cfg(steps=2), SHAPE, progress=False)
    config_before = (run / "config.json").read_bytes()
    argv = ["tiny", "train", "--out", str(run), "--steps", "2", "--docs-per-step", "2", "--quiet"]
    argv += ["--hidden-size", "64", "--num-layers", "1", "--num-heads", "2", "--intermediate-size", "128"]
    assert main(argv) == 2
    assert "finished run" in capsys.readouterr().err
    assert (run / "config.json").read_bytes() == config_before  # the failing re-run wrote nothing

    gguf = tmp_path / "m.gguf"
    assert main(["tiny", "export", "--checkpoint", str(run), "--out", str(gguf), "--dtype", "f32"]) == 0
    first = gguf.read_bytes()
    assert main(["tiny", "export", "--checkpoint", str(run), "--out", str(gguf)]) == 2
    assert "--force" in capsys.readouterr().err and gguf.read_bytes() == first
    assert main(["tiny", "export", "--checkpoint", str(run), "--out", str(gguf), "--force"]) == 0
    out = tmp_path / "sd.gguf"
    out.write_bytes(b"keep me")
    assert main(["build", "-i", str(gguf), "-o", str(out), "--quiet"]) == 2
    assert out.read_bytes() == b"keep me"


def test_nan_lr_is_refused_before_any_work_and_damaged_weights_are_named(tmp_path, capsys) -> None:
    with pytest.raises(SeedDeltaError, match="lr"):
        _cfg(lr=float("nan"))
    assert main(["tiny", "train", "--out", str(tmp_path / "x"), "--lr", "nan"]) == 2
    assert "lr" in capsys.readouterr().err and not (tmp_path / "x").exists()
    run = tmp_path / "run"
    train(run, _cfg(steps=1), SHAPE, progress=False)
    (run / "model.pt").write_bytes((run / "model.pt").read_bytes()[:100])
    assert main(["tiny", "export", "--checkpoint", str(run), "--out", str(tmp_path / "m.gguf")]) == 2
    err = capsys.readouterr().err
    assert "model.pt" in err and err.count("\n") == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(KEYS), c, max_size=4),
            max_leaves=12,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_policy_reader_raises_only_user_errors(tmp_path_factory, data: bytes) -> None:
    from seeddelta.policy import Policy

    path = tmp_path_factory.mktemp("p") / "policy.json"
    path.write_bytes(data)
    with contextlib.suppress(UserError):
        Policy.load(path)


def test_the_printed_resume_command_continues_with_the_runs_own_settings(tmp_path, monkeypatch, capsys):
    # A user's trial: after Ctrl-C the printed `... tiny train --out RUN --resume` was refused
    # because every option left out was compared at its default (hidden_size=192 vs 32).
    run = tmp_path / "run"
    argv = ["tiny", "train", "--out", str(run), "--steps", "6", "--docs-per-step", "2", "--val-samples", "3"]
    argv += ["--hidden-size", "32", "--intermediate-size", "64", "--num-layers", "1", "--num-heads", "2"]
    argv += ["--precision", "32-true", "--threads", "1", "--quiet"]
    real_batch = train_module._batch
    calls = {"n": 0}

    def batch_then_sigint(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real_batch(*args, **kwargs)

    monkeypatch.setattr(train_module, "_batch", batch_then_sigint)
    assert main(argv) == 130
    err = capsys.readouterr().err
    hint = err[err.index("continue with: ") + len("continue with: ") :].strip()
    assert hint == f"uv run --package seeddelta seeddelta tiny train --out {run} --resume"
    monkeypatch.setattr(train_module, "_batch", real_batch)
    # An option typed again must still match the run's own value.
    assert main(["tiny", "train", "--out", str(run), "--resume", "--quiet", "--lr", "0.001"]) == 2
    assert "train.lr" in capsys.readouterr().err
    assert (
        main(hint.split()[5:] + ["--quiet"]) == 0
    )  # the printed command after `uv run --package seeddelta seeddelta`
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["hidden_size"] == 32 and saved["train"]["steps"] == 6
    steps = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 5


# `tiny train --compile`: auto falls back to eager, `on` refuses in one line, checkpoints stay plain.
def _failing_compile(model, **kwargs):
    def forward(*args, **kw):
        raise TorchDynamoException("InvalidCxxCompiler: No working C++ compiler found\nmore detail")

    return forward


def test_auto_trains_on_eagerly_on_the_same_batch_when_compiling_fails(tmp_path, monkeypatch, capsys):
    train(tmp_path / "eager", _cfg(compile="off"), SHAPE, progress=False)
    monkeypatch.setattr(
        train_module, "compile_choice", lambda *a, **k: runtime.CompileChoice(True, "auto: test")
    )
    monkeypatch.setattr(torch, "compile", _failing_compile)
    report = train(tmp_path / "fallback", _cfg(compile="auto"), SHAPE, progress=False)
    assert (
        "torch.compile failed (InvalidCxxCompiler: No working C++ compiler found)" in capsys.readouterr().err
    )
    assert report["compiled"] is False and "compiling failed" in report["compile_reason"]
    ref, got = _weights(tmp_path / "eager"), _weights(tmp_path / "fallback")
    for name in ref:  # no batch was skipped or drawn twice, no gradient left over
        torch.testing.assert_close(got[name], ref[name], rtol=0, atol=0)


def test_compile_on_refuses_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "compile_backend", lambda device: None)
    with pytest.raises(SeedDeltaError, match="needs a working C\\+\\+ compiler.*use --compile off"):
        train(tmp_path / "none", _cfg(compile="on"), SHAPE, progress=False)
    assert not (tmp_path / "none").exists()  # refused before the run folder was made

    monkeypatch.setattr(runtime, "compile_backend", lambda device: "g++")
    monkeypatch.setattr(torch, "compile", _failing_compile)
    args = ["tiny", "train", "--out", str(tmp_path / "cli"), "--quiet", "--compile", "on", "--steps", "2"]
    args += [
        "--val-samples",
        "3",
        "--tokenizer-samples",
        "200",
        "--vocab-size",
        "300",
        "--docs-per-step",
        "2",
    ]
    args += ["--hidden-size", "32", "--intermediate-size", "64", "--num-layers", "1", "--num-heads", "2"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "torch.compile failed at step 0" in err[0]
        and "continue with --resume --compile off" in err[0]
    )
    with pytest.raises(SeedDeltaError, match="compile must be one of auto, on, off"):
        _cfg(compile="yes")


@pytest.mark.skipif(runtime.compile_backend("cpu") is None, reason="no C++ compiler for torch.compile")
def test_a_compiled_run_matches_eager_and_its_checkpoint_resumes_without_compile(tmp_path, monkeypatch):
    train(tmp_path / "eager", _cfg(compile="off"), SHAPE, progress=False)
    with pytest.raises(TrainingInterrupted):
        _train_until_sigint_in_step_3(tmp_path / "run", _cfg(compile="on"), monkeypatch)
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert not any("_orig_mod" in key for key in saved["model"])  # plain keys, loadable without compile

    report = train(tmp_path / "run", _cfg(compile="off"), SHAPE, progress=False, resume=True)
    assert report["resumed_from_step"] == 4 and report["compiled"] is False
    ref, got = _weights(tmp_path / "eager"), _weights(tmp_path / "run")
    for name in ref:  # Inductor's fused kernels sum in another order: equal to float tolerance
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-5)
