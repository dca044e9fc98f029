"""The run-folder policy: atomic writes, the lock, finished/interrupted runs, signals, guards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lm_shared.errors import UserError
from lm_shared.runs import (
    LOCK_FILE,
    RUN_STATE_FILE,
    ConfigMismatchError,
    NonFiniteError,
    RunFolderError,
    RunLock,
    RunLockedError,
    StopSignal,
    TrainingInterrupted,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_finite_loss,
    check_finite_parameters,
    guard_cli,
    is_global_rank_zero,
    open_run_dir,
    read_json_file,
    require_run_of,
)

SHARED_SRC = str(Path(__file__).resolve().parents[1] / "src")


def _python(code: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=SHARED_SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


# ------------------------------------------------------------------------------- atomic writes


def test_atomic_writes_replace_whole_files_and_leave_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "config.json"
    atomic_write_json(target, {"name": "señal", "n": 1})
    assert json.loads(target.read_text(encoding="utf-8")) == {"name": "señal", "n": 1}
    assert "señal" in target.read_text(encoding="utf-8")  # non-ASCII kept readable
    atomic_write_text(target, "x\n")
    assert target.read_text() == "x\n"
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["config.json"]


def test_atomic_write_follows_the_umask_not_mkstemp_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "a")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_safetensors_file_written_atomically_follows_the_umask(tmp_path: Path) -> None:
    # safetensors >= 0.8.1 makes its files 0600 (safetensors#782): a trained model.safetensors
    # was unreadable to any other user of the machine, beside 0644 configs.
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "model.safetensors") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp))
    finally:
        os.umask(old)
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_atomic_path_keeps_the_suffix_and_keeps_the_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "model.keras"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.suffix == ".keras" and tmp.parent == tmp_path
        tmp.write_text("half")
        raise RuntimeError("writer crashed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_atomic_write_json_rejects_unencodable_objects_before_writing(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    target.write_text('{"ok": 1}\n')
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    with pytest.raises(ValueError):
        atomic_write_json(target, {"loss": float("nan")}, allow_nan=False)
    assert json.loads(target.read_text()) == {"ok": 1}


def test_kill_9_during_an_atomic_write_leaves_the_old_file_intact(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    old = b"old checkpoint " * 1000
    target.write_bytes(old)
    child = _python(
        """
        import sys, time
        from lm_shared.runs import atomic_path
        with atomic_path(sys.argv[1]) as tmp:
            with open(tmp, "wb") as fh:
                for _ in range(10_000):
                    fh.write(b"new" * 100_000)
                    fh.flush()
                    time.sleep(0.01)
        """,
        str(target),
    )
    try:
        _wait_for(
            lambda: any(p.name.endswith(".tmp.ckpt") and p.stat().st_size > 0 for p in tmp_path.iterdir())
        )
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert target.read_bytes() == old
    atomic_write_bytes(target, b"next")  # a leftover temporary never blocks the next write
    assert target.read_bytes() == b"next"


# ------------------------------------------------------------------------------------------ lock


def test_second_writer_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    run = open_run_dir(tmp_path / "run", package="demo")
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        open_run_dir(tmp_path / "run", package="demo", resume=True)
    run.release()
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_two_processes_competing_for_the_lock_exactly_one_wins(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    start = time.time() + 1.5
    code = """
        import sys, time
        from lm_shared.runs import RunLock, RunLockedError
        lock = RunLock(sys.argv[1])
        time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
        try:
            lock.acquire()
        except RunLockedError as exc:
            print("REFUSED", exc)
            sys.exit(3)
        print("WON")
        time.sleep(2.0)
        lock.release()
        """
    children = [_python(code, str(folder), str(start)) for _ in range(2)]
    results = [(c.wait(timeout=60), c.stdout.read(), c.pid) for c in children]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 3], results
    winner = next(pid for rc, _, pid in results if rc == 0)
    refused = next(out for rc, out, _ in results if rc == 3)
    assert f"pid {winner}" in refused


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    child = _python(
        """
        import sys, time
        from lm_shared.runs import RunLock
        RunLock(sys.argv[1]).acquire()
        print("locked", flush=True)
        time.sleep(60)
        """,
        str(folder),
    )
    assert child.stdout.readline().strip() == "locked"
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == child.pid
    with pytest.raises(RunLockedError):
        RunLock(folder).acquire()
    child.kill()
    child.wait()
    lock = RunLock(folder)
    lock.acquire()  # the dead holder's lock file is still there: taken over
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


# ------------------------------------------------------------------------------- run folders


def test_new_run_records_its_state_and_finish_marks_it(tmp_path: Path) -> None:
    run = open_run_dir(tmp_path / "run", package="demo", config={"lr": 0.1, "model": {"layers": 2}})
    assert run.path == tmp_path / "run" and not run.resumed and run.is_writer
    state = json.loads((run.path / RUN_STATE_FILE).read_text())
    assert state["status"] == "running" and state["package"] == "demo"
    assert state["config"] == {"lr": 0.1, "model": {"layers": 2}}
    assert run.finish(step=10) == tmp_path / "run"
    state = json.loads((tmp_path / "run" / RUN_STATE_FILE).read_text())
    assert state["status"] == "finished" and state["step"] == 10


def test_finished_run_is_refused_without_force_and_resume_says_it_finished(tmp_path: Path) -> None:
    open_run_dir(tmp_path / "run", package="demo").finish()
    with pytest.raises(RunFolderError, match="finished run.*--force"):
        open_run_dir(tmp_path / "run", package="demo")
    with pytest.raises(RunFolderError, match="already finished"):
        open_run_dir(tmp_path / "run", package="demo", resume=True)


def test_forced_rerun_is_staged_and_a_crash_leaves_the_old_run_intact(tmp_path: Path) -> None:
    final = tmp_path / "run"
    run = open_run_dir(final, package="demo", config={"lr": 1})
    (run.path / "model.bin").write_text("old model")
    run.finish()
    with (
        pytest.raises(RuntimeError),
        open_run_dir(final, package="demo", force=True, config={"lr": 2}) as rerun,
    ):
        assert rerun.path != final
        (rerun.path / "model.bin").write_text("half-written new model")
        raise RuntimeError("killed")
    assert (final / "model.bin").read_text() == "old model"
    assert json.loads((final / RUN_STATE_FILE).read_text())["status"] == "finished"
    rerun = open_run_dir(final, package="demo", force=True, config={"lr": 2})
    (rerun.path / "model.bin").write_text("new model")
    assert rerun.finish() == final
    assert (final / "model.bin").read_text() == "new model"
    assert json.loads((final / RUN_STATE_FILE).read_text())["config"] == {"lr": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_interrupted_forced_rerun_can_be_resumed(tmp_path: Path) -> None:
    final = tmp_path / "run"
    open_run_dir(final, package="demo").finish()
    with pytest.raises(KeyboardInterrupt), open_run_dir(final, package="demo", force=True) as rerun:
        (rerun.path / "ckpt").write_text("step 5")
        raise KeyboardInterrupt
    resumed = open_run_dir(final, package="demo", resume=True)
    assert resumed.resumed and (resumed.path / "ckpt").read_text() == "step 5"
    assert resumed.finish() == final and (final / "ckpt").exists()


def test_a_swap_killed_between_its_renames_is_undone(tmp_path: Path) -> None:
    final = tmp_path / "run"
    open_run_dir(final, package="demo").finish()
    os.replace(final, tmp_path / ".run.old")  # the first rename happened, the second did not
    with pytest.raises(RunFolderError, match="finished"):
        open_run_dir(final, package="demo")
    assert json.loads((final / RUN_STATE_FILE).read_text())["status"] == "finished"


def test_interrupted_run_needs_resume_and_resume_checks_the_config(tmp_path: Path) -> None:
    final = tmp_path / "run"
    config = {"lr": 0.1, "data": "a.jsonl", "epochs": 3, "model": {"layers": 2}}
    with pytest.raises(KeyboardInterrupt), open_run_dir(final, package="demo", config=config) as run:
        run.update(step=7)
        raise KeyboardInterrupt
    with pytest.raises(RunFolderError, match=r"interrupted run \(last checkpoint at step 7\).*--resume"):
        open_run_dir(final, package="demo", config=config)
    with pytest.raises(ConfigMismatchError, match=r"model\.layers=4.*model\.layers=2"):
        open_run_dir(final, package="demo", resume=True, config={**config, "model": {"layers": 4}})
    changed = {"lr": 0.1, "data": None, "epochs": 5, "model": {"layers": 2}}
    run = open_run_dir(final, package="demo", resume=True, config=changed, resume_may_change=["epochs"])
    assert run.resumed and run.saved_config["data"] == "a.jsonl"
    run.release()


def test_resume_and_force_on_empty_other_and_foreign_folders(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match="nothing to resume"):
        open_run_dir(tmp_path / "empty", package="demo", resume=True)
    with pytest.raises(RunFolderError, match="exclude each other"):
        open_run_dir(tmp_path / "x", package="demo", resume=True, force=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="no run.json"):
        open_run_dir(other, package="demo")
    with pytest.raises(RunFolderError, match="not a demo run folder"):
        open_run_dir(other, package="demo", force=True)
    assert (other / "notes.txt").read_text() == "mine"
    (other / "model.safetensors").write_text("legacy run")
    open_run_dir(other, package="demo", force=True, run_files=["model.safetensors"]).finish()
    assert not (other / "notes.txt").exists()
    open_run_dir(tmp_path / "seed", package="seeddelta").finish()
    with pytest.raises(RunFolderError, match="a seeddelta run folder, not a demo one"):
        open_run_dir(tmp_path / "seed", package="demo", force=True)
    with pytest.raises(RunFolderError, match="a seeddelta run folder, not a demo one"):
        require_run_of(tmp_path / "seed", "demo")
    assert require_run_of(tmp_path / "seed", "seeddelta")["status"] == "finished"


def test_non_zero_ranks_neither_lock_nor_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_global_rank_zero({}) and is_global_rank_zero({"RANK": "0", "LOCAL_RANK": "0"})
    assert not is_global_rank_zero({"RANK": "1"}) and not is_global_rank_zero({"LOCAL_RANK": "1"})
    leader = open_run_dir(tmp_path / "run", package="demo", config={"lr": 1})
    monkeypatch.setenv("RANK", "1")
    follower = open_run_dir(tmp_path / "run", package="demo", config={"lr": 1})
    assert not follower.is_writer and follower.path == leader.path
    follower.update(step=3)
    follower.finish()
    assert json.loads((leader.path / RUN_STATE_FILE).read_text())["status"] == "running"
    assert (leader.path / LOCK_FILE).exists()  # the leader's lock is untouched
    leader.finish()


def test_a_damaged_run_state_is_a_one_line_user_error(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / RUN_STATE_FILE).write_bytes(b'{"status": "runn')
    with pytest.raises(RunFolderError, match=r"run\.json:1:\d+: malformed run state"):
        open_run_dir(tmp_path / "run", package="demo")


# -------------------------------------------------------------------------------------- signals


def test_first_signal_is_a_request_the_second_stops_at_once() -> None:
    before = signal.getsignal(signal.SIGINT)
    with StopSignal(quiet=True) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_for(lambda: stop.requested, timeout=5)
        assert stop.received == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        exc = stop.interrupted("at step 4 (checkpoint run/last.ckpt)", "demo train --resume")
    assert isinstance(exc, TrainingInterrupted)
    assert (
        str(exc)
        == "SIGTERM: stopped at step 4 (checkpoint run/last.ckpt); continue with: demo train --resume"
    )
    assert signal.getsignal(signal.SIGINT) is before


# ---------------------------------------------------------------------------------- guard, NaN


def test_guard_cli_prints_one_line_and_sets_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    @guard_cli
    def main(kind: str) -> int:
        if kind == "user":
            raise UserError("data.jsonl:3: missing field 'output'\nsecond line")
        if kind == "interrupt":
            raise KeyboardInterrupt
        if kind == "stopped":
            raise TrainingInterrupted("SIGINT: stopped at step 3; continue with: x --resume")
        if kind == "bug":
            raise ZeroDivisionError
        return 0

    assert main("ok") == 0
    assert main("user") == 2
    assert capsys.readouterr().err == "error: data.jsonl:3: missing field 'output'\n"
    assert main("interrupt") == 130
    assert capsys.readouterr().err == "interrupted\n"
    assert main("stopped") == 130
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        main("bug")


def test_non_finite_checks() -> None:
    import numpy as np
    import torch

    check_finite_loss(torch.tensor(1.5), step=1)
    with pytest.raises(NonFiniteError, match="loss is nan at step 7"):
        check_finite_loss(torch.tensor(float("nan")), step=7)
    with pytest.raises(NonFiniteError, match="loss is inf"):
        check_finite_loss(float("inf"), step=1)
    model = torch.nn.Linear(2, 2)
    check_finite_parameters(model.named_parameters())
    with torch.no_grad():
        model.bias[1] = float("nan")
    with pytest.raises(NonFiniteError, match="'bias'"):
        check_finite_parameters(model.named_parameters())
    with pytest.raises(NonFiniteError, match="'w'"):
        check_finite_parameters([("i", np.arange(3)), ("w", np.array([1.0, np.inf]))])
    assert issubclass(NonFiniteError, UserError)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_read_json_file_raises_only_user_errors_on_arbitrary_bytes(tmp_path_factory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("j") / "x.json"
    path.write_bytes(data)
    try:
        read_json_file(path)
    except UserError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
