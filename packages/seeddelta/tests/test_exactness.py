"""The exactness contract (issue 15) for seeddelta's plain PyTorch loop.

seeddelta keeps a small loop instead of Lightning, so the shared kit's Lightning adapter does not
apply; these tests check the same points with the kit's state comparison
(``lm_shared.testing.state_differences``): (a) a NaN/Inf gradient is skipped and the whole
training state is unchanged, the skip logged; (c) the LR halving lasts under the warmup-cosine
``LambdaLR``; (d) the schedule advances once per applied update; (e) ``kill -9`` then ``--resume``
ends with the uninterrupted run's weights and logged losses; (g) a kill during a checkpoint write
leaves a readable checkpoint. (b) needs fp16 with a GradScaler, which seeddelta does not use (bf16 or
fp32); (f) needs ``--compile``, which its trainer does not have.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lm_shared.runs import NonFiniteError
from lm_shared.testing import state_differences
from seeddelta.train import CHECKPOINT, TrainConfig, lr_at, train

SHAPE = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2}
BASE = dict(
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
    phase1_fraction=0.0,
)


def _cfg(**changes) -> TrainConfig:
    return TrainConfig(**{**BASE, **changes})


def _state(s: dict) -> dict:
    return {
        "model": copy.deepcopy(s["model"].state_dict()),
        "optimizer": copy.deepcopy(s["optimizer"].state_dict()),
        "scheduler": copy.deepcopy(s["scheduler"].state_dict()),
    }


class PoisonGradients:
    """From the end of step ``start - 1`` to the end of step ``stop - 1``, every gradient is
    multiplied by ``value`` (NaN or Inf); records the training state at the end of every step."""

    def __init__(self, start: int, stop: int, value: float) -> None:
        self.start, self.stop, self.value = start, stop, value
        self.states: dict[int, dict] = {}
        self.records: dict[int, object] = {}
        self.handles: list = []

    def __call__(self, step: int, s: dict) -> None:
        self.states[step] = _state(s)
        self.records[step] = s["record"]
        if step == self.start - 1:
            self.handles = [p.register_hook(lambda g: g * self.value) for p in s["model"].parameters()]
        if step == self.stop - 1:
            for handle in self.handles:
                handle.remove()


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_nonfinite_gradient_is_skipped_and_nothing_changes(tmp_path, value) -> None:
    hook = PoisonGradients(start=3, stop=4, value=value)
    train(tmp_path / "run", _cfg(), SHAPE, progress=False, on_step_end=hook)
    diffs = state_differences(hook.states[2], hook.states[3])
    assert diffs == [], diffs  # parameters, AdamW moments and step counts, LambdaLR all unchanged
    assert hook.records[3].repair_action == "skip"
    assert state_differences(hook.states[3], hook.states[4]) != []  # the next step trains again
    logged = {r["step"]: r for r in _log(tmp_path / "run")}
    assert logged[3]["repair_action"] == "skip" and logged[4].get("repair_action") in (None, "clip")


def test_c_d_lr_halving_lasts_and_the_schedule_counts_applied_updates(tmp_path) -> None:
    hook = PoisonGradients(start=2, stop=4, value=float("nan"))  # steps 2 and 3 are non-finite
    train(tmp_path / "run", _cfg(steps=8), SHAPE, progress=False, on_step_end=hook)
    assert [hook.records[s].repair_action for s in (2, 3)] == ["skip", "lr_halved"]
    cfg = _cfg(steps=8)
    for step in range(4, 8):
        applied = step - 2  # two skipped steps did not advance the schedule
        assert hook.states[step]["scheduler"]["last_epoch"] == applied + 1
        # The rate used at the next step is the schedule's, halved, however far the cosine went.
        lr_next = hook.states[step]["optimizer"]["param_groups"][0]["lr"]
        assert lr_next == pytest.approx(0.5 * lr_at(applied + 1, cfg), rel=1e-6)


def test_three_nonfinite_steps_in_a_row_stop_training_without_a_model(tmp_path) -> None:
    hook = PoisonGradients(start=2, stop=99, value=float("nan"))
    with pytest.raises(NonFiniteError, match="3 steps in a row at step 4.*checkpoint"):
        train(tmp_path / "run", _cfg(), SHAPE, progress=False, on_step_end=hook)
    assert not (tmp_path / "run" / "model.pt").exists()


KILLER = textwrap.dedent(
    """
    import os, signal, sys, torch
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_exactness import SHAPE, _cfg
    from seeddelta.train import train

    mode, at = sys.argv[1], int(sys.argv[2])
    if mode == "step":
        def on_step_end(step, state):
            if step == at:
                os.kill(os.getpid(), signal.SIGKILL)
    else:  # die half-way through the at-th checkpoint write
        on_step_end = None
        real_save, calls = torch.save, {{"n": 0}}
        def dying_save(obj, f, *args, **kwargs):
            if isinstance(obj, dict) and "optimizer" in obj:
                calls["n"] += 1
                if calls["n"] == at:
                    with open(f, "wb") as fh:
                        fh.write(b"half a checkpoint")
                    os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *args, **kwargs)
        torch.save = dying_save
    train(Path(sys.argv[3]), _cfg(), SHAPE, progress=False, on_step_end=on_step_end)
    """
)


def _killed_run(tmp_path: Path, mode: str, at: int) -> Path:
    run = tmp_path / f"run-{mode}"
    script = KILLER.format(tests=str(Path(__file__).parent))
    proc = subprocess.run(
        [sys.executable, "-c", script, mode, str(at), str(run)], capture_output=True, text=True
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    return run


def _same_as_uninterrupted(ref: Path, run: Path) -> None:
    ref_w = torch.load(ref / "model.pt", weights_only=True)
    got_w = torch.load(run / "model.pt", weights_only=True)
    assert state_differences(ref_w, got_w, atol=1e-6) == []
    assert [r["step"] for r in _log(run)] == list(range(6))
    assert [r["loss"] for r in _log(run)] == pytest.approx([r["loss"] for r in _log(ref)], abs=1e-6)


@pytest.mark.slow
def test_e_kill9_mid_run_then_resume_matches_the_uninterrupted_run(tmp_path) -> None:
    train(tmp_path / "ref", _cfg(), SHAPE, progress=False)
    run = _killed_run(tmp_path, "step", at=3)  # checkpoint after step 2 (checkpoint_every=2)
    report = train(run, _cfg(), SHAPE, progress=False, resume=True)
    assert report["resumed_from_step"] == 2
    _same_as_uninterrupted(tmp_path / "ref", run)
    with pytest.raises(Exception, match="finished"):
        train(run, _cfg(), SHAPE, progress=False, resume=True)


@pytest.mark.slow
def test_g_kill_during_a_checkpoint_write_leaves_the_previous_one_readable(tmp_path) -> None:
    train(tmp_path / "ref", _cfg(), SHAPE, progress=False)
    run = _killed_run(tmp_path, "save", at=2)  # dies writing the step-4 checkpoint
    state = torch.load(run / CHECKPOINT, weights_only=False)
    assert state["step"] == 2  # the step-2 checkpoint, whole
    report = train(run, _cfg(), SHAPE, progress=False, resume=True)
    assert report["resumed_from_step"] == 2
    _same_as_uninterrupted(tmp_path / "ref", run)
