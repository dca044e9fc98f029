"""Real signals in a child process: Ctrl-C saves a resumable checkpoint and exits 130 with one line;
SIGKILL in the middle of a checkpoint write leaves the previous ``last.ckpt`` readable."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import torch

from tormented_mini.cli import main

TINY_MODEL = dict(
    hidden_size=32,
    num_heads=2,
    retention_heads=2,
    embedding_size=16,
    num_experts=2,
    mamba_state_size=4,
    ode_steps=1,
)
TINY_ARGS = ["--size", "cpu", "--batch-size", "4", "--seq-len", "32", "--vocab-size", "400", "--threads", "1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def steps_logged(out):
    path = out / "stability.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def test_ctrl_c_saves_a_checkpoint_exits_130_and_resume_continues_the_log(tmp_path, capsys):
    model_config = tmp_path / "tiny.json"
    model_config.write_text(json.dumps(TINY_MODEL))
    out = tmp_path / "run"
    args = [*TINY_ARGS, "--model-config", str(model_config), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tormented_mini.cli",
            "train",
            *args,
            "--max-steps",
            "500",
            "--eval-every",
            "100",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.monotonic() + 600
    while len(steps_logged(out)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert (
        last.startswith("SIGINT: stopped at step")
        and f"continue with: tormented-mini train --out {out} --resume" in last
    )
    saved = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    k = saved["global_step"]
    assert steps_logged(out) == list(range(1, k + 1))
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    # Resuming continues with true step numbers and no duplicates; --data is not needed.
    # Every save after the resume overwrites last.ckpt, the file the next resume reads: they had
    # gone to last-v1.ckpt, last-v2.ckpt, ... while last.ckpt stayed at the Ctrl-C.
    resumed = ["train", "--out", str(out), "--resume", "--max-steps", str(k + 2), "--eval-every", "1"]
    capsys.readouterr()
    assert main([*resumed, "--no-progress"]) == 0
    said = f"resuming at step {k} of {k + 2} from {out / 'checkpoints' / 'last.ckpt'}"
    err = capsys.readouterr().err
    assert "".join(said.split()) in "".join(err.split()), err  # rich wraps long lines
    assert steps_logged(out) == list(range(1, k + 3))
    assert sorted(p.name for p in (out / "checkpoints").glob("*.ckpt")) == ["last.ckpt"]
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == k + 2


KILL_DURING_WRITE = """
import os, signal, sys, torch
from tormented_mini.train import MLMTrainer, TrainConfig
real_save, calls = torch.save, {"n": 0}
def save(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and "tormented" in obj:
        calls["n"] += 1
        if calls["n"] == 3:  # the third checkpoint: write half of it, then die mid-write
            import io
            buffer = io.BytesIO()
            real_save(obj, buffer)
            with open(f, "wb") as fh:
                fh.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
torch.save = save
cfg = TrainConfig(**{config})
MLMTrainer(cfg, progress=False).run()
"""


def test_a_kill_during_a_checkpoint_write_leaves_a_readable_last_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    config = dict(
        out=str(out), size="cpu", max_steps=4, eval_every=1, eval_batches=1, batch_size=4, seq_len=32,
        vocab_size=400, warmup_steps=1, threads=1, model_overrides=TINY_MODEL,
    )  # fmt: skip
    script = textwrap.dedent(KILL_DURING_WRITE).replace("{config}", repr(config))
    done = subprocess.run(
        [sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    saved = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 2  # the checkpoint before the interrupted write
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert steps_logged(out) == [1, 2, 3, 4]
    # A finished run says so instead of training again.
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 2
    assert "already finished" in capsys.readouterr().err
