"""Repo-level scripts stay in step with the workspace."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from workspace_facts import MEMBERS, ROOT, load_tool


def test_bench_all_knows_every_member_and_its_cli():
    bench_all = load_tool("bench_all")
    assert bench_all.MEMBERS == {dist: cli for dist, (_, cli) in MEMBERS.items()}
    assert bench_all.machine()["cpu_count"] >= 1


def test_bench_all_rejects_unknown_members(capsys):
    bench_all = load_tool("bench_all")
    with pytest.raises(SystemExit) as exc:
        bench_all.main(["--only", "nope"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# ------------------------------------------------------------------ tools/gpu_check.py (issue 16)

PYTORCH_MEMBERS = {dist: cli for dist, (_, cli) in MEMBERS.items() if dist != "lstm-textgen"}


def test_gpu_check_runs_every_pytorch_member_eager_and_compiled(tmp_path):
    import subprocess

    gpu_check = load_tool("gpu_check")
    assert gpu_check.MEMBERS == PYTORCH_MEMBERS
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        out = cmd[cmd.index("--out") + 1]
        if "seeddelta" in cmd and "--compile" in cmd:  # one failure, to see it reported
            return subprocess.CompletedProcess(cmd, 1, "", "Traceback ...\nRuntimeError: boom\n")
        with open(out, "w") as f:
            f.write('{"ok": 1}')
        return subprocess.CompletedProcess(cmd, 0, "", "")

    snapshots = []
    results = gpu_check.run_plan(
        list(PYTORCH_MEMBERS),
        "cuda",
        False,
        60,
        tmp_path,
        runner=fake_run,
        on_result=lambda r: snapshots.append(sum(len(s) for s in r.values())),
    )
    assert len(calls) == 2 * len(PYTORCH_MEMBERS)
    for cmd in calls:
        assert (
            cmd[cmd.index("--device") + 1] == "cuda"
            and cmd[cmd.index("bench") - 1] in PYTORCH_MEMBERS.values()
        )
    # every eager bench first, so a run cut short loses compiled results, not eager ones
    assert ["--compile" in cmd for cmd in calls] == [False] * len(PYTORCH_MEMBERS) + [True] * len(
        PYTORCH_MEMBERS
    )
    assert snapshots == list(range(1, len(calls) + 1))  # the report is rewritten after each bench
    assert results["nanologic"]["compile"]["result"] == {"ok": 1}
    assert "boom" in results["seeddelta"]["compile"]["stderr_tail"]


def test_gpu_check_python_launcher_runs_each_cli_module_with_this_interpreter():
    import sys

    gpu_check = load_tool("gpu_check")
    for dist in PYTORCH_MEMBERS:
        cmd = gpu_check.bench_command(dist, Path("o.json"), "cuda", True, False, launcher="python")
        assert cmd[:3] == [sys.executable, "-m", f"{dist.replace('-', '_')}.cli"]
        assert cmd[3:] == ["bench", "--device", "cuda", "--out", "o.json", "--compile"]
        module = importlib.import_module(cmd[2])
        assert callable(module.main)


def test_gpu_check_refuses_without_a_gpu(monkeypatch, capsys):
    import torch

    gpu_check = load_tool("gpu_check")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", "never.json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no CUDA device") and "\n" not in err


@pytest.mark.parametrize("dist", sorted(PYTORCH_MEMBERS))
def test_every_pytorch_bench_takes_the_flags_gpu_check_passes(dist):
    import subprocess
    import sys

    # as --launcher python runs it: `python -m <package>.cli`, which needs the module's main guard
    help_text = subprocess.run(
        [sys.executable, "-m", f"{dist.replace('-', '_')}.cli", "bench", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in ("--device", "--compile", "--out"):
        assert flag in help_text


# ------------------------------------------------------------------ tools/user_trials.py (issue 19)


def test_user_trials_cover_every_member_and_kind():
    trials = load_tool("user_trials")
    assert set(trials.SPECS) == set(MEMBERS)
    assert {dist: cli for dist, (cli, _) in trials.MEMBERS.items()} == {d: c for d, (_, c) in MEMBERS.items()}
    names = [t.name for t in trials.TRIALS]
    assert len(names) == len(set(names)) >= 60
    for kind in range(1, 9):
        assert any(t.kind == kind for t in trials.TRIALS), kind
    for kind in (1, 2, 3, 4, 5, 6, 8):  # the kinds issue 19 asks of every member
        assert {t.member for t in trials.TRIALS if t.kind == kind} == set(MEMBERS), kind
    assert [t.name for t in trials.select(trials.TRIALS, ["kind2"])] == [
        t.name for t in trials.TRIALS if t.kind == 2
    ]
    assert {t.member for t in trials.select(trials.TRIALS, ["seeddelta"])} == {"seeddelta"}


def test_user_trials_one_line_error_check():
    trials = load_tool("user_trials")
    ok = trials.Result(["x"], 2, "", "some warning\nerror: data.txt: not UTF-8 (byte 3)\n", 0.1)
    assert trials.expect_user_error(ok, "data.txt").startswith("error: data.txt")
    traceback = trials.Result(
        ["x"], 1, "", "Traceback (most recent call last):\n  ...\nKeyError: 'output'\n", 0.1
    )
    two = trials.Result(["x"], 2, "", "error: a\nerror: b\n", 0.1)
    for bad in (traceback, two, trials.Result(["x"], 0, "", "error: a\n", 0.1)):
        with pytest.raises(trials.TrialFailed):
            trials.expect_user_error(bad)
    with pytest.raises(trials.TrialFailed, match="does not name"):
        trials.expect_user_error(ok, "model.safetensors")


def test_user_trials_step_log_check():
    trials = load_tool("user_trials")
    assert "4 records" in trials.expect_true_steps([1, 2, 3, 4], 4, "log")
    for steps, message in (
        ([1, 2, 2, 3, 4], "repeated"),
        ([1, 2, 3, 1, 2], "repeated"),
        ([1, 2, 4], "missing"),
    ):
        with pytest.raises(trials.TrialFailed, match=message):
            trials.expect_true_steps(steps, 4, "log")
    with pytest.raises(trials.TrialFailed, match="last step"):
        trials.expect_true_steps([1, 2, 3], 4, "log")


def test_user_trials_help_check_and_digests(tmp_path):
    import argparse

    trials = load_tool("user_trials")
    parser = argparse.ArgumentParser(prog="x", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0, help="a seed")
    parser.add_argument("--quiet", action="store_true")
    text = parser.format_help()
    assert trials.help_problems(text) == ["--lr: no help", "--quiet: no help"]
    plain = argparse.ArgumentParser(prog="x")
    plain.add_argument("--steps", type=int, default=3, help="optimizer steps")
    assert trials.help_problems(plain.format_help()) == ["--steps: no default shown"]

    run = tmp_path / "run"
    (run / "sub").mkdir(parents=True)
    (run / "a.json").write_text("{}")
    (run / "sub" / "b.bin").write_bytes(b"\0" * 10)
    (run / ".lock").write_text("pid")
    before = trials.tree_digest(run)
    assert sorted(before) == ["a.json", "sub/b.bin"]
    (run / ".lock").write_text("another pid")
    trials.expect_unchanged(before, run)
    (run / "a.json").write_text('{"changed": 1}')
    with pytest.raises(trials.TrialFailed, match="a.json"):
        trials.expect_unchanged(before, run)


@pytest.mark.slow
def test_user_trials_fast_ones_pass(tmp_path):
    """The real CLIs, as a user runs them: a few quick trials of tools/user_trials.py pass."""
    import json
    import subprocess
    import sys

    out = tmp_path / "trials.json"
    only = ["nanologic-bad-epochs", "seeddelta-lr-nan", "lstm-help"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "user_trials.py"), "--only", *only, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["total"] == 3, proc.stdout[-2000:]
    failed = [(t["name"], t["detail"]) for t in report["trials"] if t["status"] != "PASS"]
    assert not failed, failed
    assert proc.returncode == 0 and "3/3 PASS" in proc.stdout
