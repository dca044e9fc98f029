"""`tiny train --compile`: auto falls back to eager, `on` refuses in one line, checkpoints stay plain."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from torch._dynamo.exc import TorchDynamoException

import lm_shared.runtime as runtime
import seeddelta.train as train_module
from lm_shared.runs import TrainingInterrupted
from seeddelta.cli import main
from seeddelta.errors import SeedDeltaError
from seeddelta.train import TrainConfig, train

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
        checkpoint_every=2,
        compile="off",
    )
    return TrainConfig(**{**base, **changes})


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt", weights_only=True)


def _failing_compile(model, **kwargs):
    def forward(*args, **kw):
        raise TorchDynamoException("InvalidCxxCompiler: No working C++ compiler found\nmore detail")

    return forward


def test_auto_trains_on_eagerly_on_the_same_batch_when_compiling_fails(tmp_path, monkeypatch, capsys):
    train(tmp_path / "eager", _cfg(), SHAPE, progress=False)
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
    assert len(err) == 1 and "torch.compile failed at step 0" in err[0] and "--compile off" in err[0]
    with pytest.raises(SeedDeltaError, match="compile must be one of auto, on, off"):
        _cfg(compile="yes")


@pytest.mark.skipif(runtime.compile_backend("cpu") is None, reason="no C++ compiler for torch.compile")
def test_a_compiled_run_matches_eager_and_its_checkpoint_resumes_without_compile(tmp_path, monkeypatch):
    train(tmp_path / "eager", _cfg(), SHAPE, progress=False)

    real_batch, calls = train_module._batch, {"n": 0}

    def batch_then_sigint(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # during step 3: the loop saves after it and stops
            os.kill(os.getpid(), signal.SIGINT)
        return real_batch(*args, **kwargs)

    monkeypatch.setattr(train_module, "_batch", batch_then_sigint)
    with pytest.raises(TrainingInterrupted):
        train(tmp_path / "run", _cfg(compile="on"), SHAPE, progress=False)
    monkeypatch.setattr(train_module, "_batch", real_batch)
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert not any("_orig_mod" in key for key in saved["model"])  # plain keys, loadable without compile

    report = train(tmp_path / "run", _cfg(compile="off"), SHAPE, progress=False, resume=True)
    assert report["resumed_from_step"] == 4 and report["compiled"] is False
    ref, got = _weights(tmp_path / "eager"), _weights(tmp_path / "run")
    for name in ref:  # Inductor's fused kernels sum in another order: equal to float tolerance
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-5)
