"""Two-process DDP on the CPU (gloo) against one process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

TINY = [
    "--d-model",
    "32",
    "--n-layers",
    "1",
    "--n-heads",
    "2",
    "--max-seq-len",
    "32",
    "--seq-len",
    "32",
    "--vocab-size",
    "300",
    "--max-steps",
    "4",
    "--eval-every",
    "2",
    "--proxy-k",
    "0",
    "--memory-slots",
    "8",
    "--memory-writes",
    "2",
    "--dropout",
    "0",
    "--noise-std",
    "0",
]


def train_cli(cwd, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "infinito_iit.cli", "train", *TINY, "--out", str(cwd), *extra]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    single = train_cli(one, "--run-name", "r", "--batch-size", "4", "--devices", "1")
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = train_cli(two, "--run-name", "r", "--batch-size", "2", "--devices", "2", "--strategy", "ddp")
    assert ddp.returncode == 0, ddp.stderr[-2000:]

    metrics = json.loads((two / "r" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_agree"]  # all ranks ended with the same weights
    # Only rank 0 wrote: one run folder, one TensorBoard event file, nothing else in the working dir.
    assert sorted(p.name for p in two.iterdir()) == ["r"]
    assert len(list((two / "r").rglob("events.out.tfevents.*"))) == 1
    steps = [json.loads(line)["step"] for line in (two / "r" / "grad_health.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]

    def losses(run):
        return [e["loss"] for e in json.loads((run / "history.json").read_text())["train"]]

    assert losses(two / "r") == pytest.approx(losses(one / "r"), rel=1e-4)
    wa, wb = load_file(one / "r" / "model.safetensors"), load_file(two / "r" / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
