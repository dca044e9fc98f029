"""Re-run issue 19's user trials: the real CLIs, as a new user would type them, on tiny sizes.

    uv run python tools/user_trials.py [--out trials.json] [--only SUBSTRING ...] [--list]

Every trial runs the members' own commands as subprocesses (the virtual environment's console
scripts, or ``uv run --package <member> ...`` with ``--launcher uv``) in a temporary folder, with
each member's smallest sizes (a few optimizer steps, tiny models, small generated text), and
states what a user should see: an exit status, one ``error: ...`` line on stderr and no
traceback, a finished file left byte for byte as it was, a second training refused naming the
first one's pid, exit 130 and a resumable checkpoint after Ctrl-C, true step numbers in the logs
after a resume, no NaN model saved. It prints a table (trial, member, kind, expected,
PASS/FAIL, detail) and writes it as JSON (``--out``). ``--only`` keeps the trials whose name,
member or ``kind<N>`` contains one of the given substrings. Nothing here needs a network.

The kinds are issue 19's eight: 1 finished work overwritten, 2 no lock on a run folder,
3 interrupted runs restarted or resumed on other data, 4 Ctrl-C, 5 logs after a resume,
6 NaN hyperparameters, 7 tracebacks for user errors, 8 help and first-run noise.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# distribution -> (console script, short name used in trial names)
MEMBERS = {
    "nanologic": ("nanologic", "nanologic"),
    "tormented-mini": ("tormented-mini", "tormented"),
    "lstm-textgen": ("lstm-textgen", "lstm"),
    "infinito-iit": ("infinito", "infinito"),
    "seeddelta": ("seeddelta", "seeddelta"),
}
KINDS = {
    1: "finished work overwritten",
    2: "no lock on a run folder",
    3: "interrupted run restarted",
    4: "Ctrl-C",
    5: "logs after a resume",
    6: "NaN hyperparameters",
    7: "traceback for a user error",
    8: "help and first-run noise",
}
# Lines a CPU run must not print (CUDA probing, TensorFlow/XLA/absl start-up chatter).
NOISE = re.compile(
    r"(cuda|cudnn|cufft|cublas|tensorflow|oneDNN|TF_ENABLE|absl::|computation placer|litlogger|"
    r"^[EWI]\d{4} \d\d:\d\d)",
    re.IGNORECASE,
)


# ------------------------------------------------------------------------------------- results


class TrialFailed(Exception):
    """A trial's expectation did not hold; the message is the table's detail."""


def expect(condition: object, message: str) -> None:
    if not condition:
        raise TrialFailed(message)


@dataclass
class Result:
    """One finished command."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def tail(self, n: int = 3) -> str:
        lines = [line for line in self.output.strip().splitlines() if line.strip()]
        return " | ".join(lines[-n:])[-300:]


def has_traceback(res: Result) -> bool:
    return "Traceback (most recent call last)" in res.output


def error_lines(res: Result) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.startswith("error:")]


def expect_user_error(res: Result, *needles: str, code: int = 2) -> str:
    """Exit ``code``, no traceback, exactly one ``error:`` line on stderr containing ``needles``."""
    expect(not has_traceback(res), f"traceback (exit {res.returncode}): {res.tail()}")
    lines = error_lines(res)
    expect(res.returncode == code, f"exit {res.returncode}, expected {code}: {res.tail()}")
    expect(len(lines) == 1, f"{len(lines)} 'error:' lines on stderr: {res.tail()}")
    line = lines[0]
    for needle in needles:
        expect(needle.lower() in line.lower(), f"error line does not name {needle!r}: {line}")
    return line


def expect_ok(res: Result, what: str = "command") -> None:
    expect(res.returncode == 0 and not has_traceback(res), f"{what}: exit {res.returncode}: {res.tail()}")


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(folder: Path, skip: Iterable[str] = (".lock",)) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``folder`` (the lock file left out)."""
    skipped = set(skip)
    return {
        str(p.relative_to(folder)): file_digest(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skipped
    }


def expect_unchanged(before: dict[str, str], folder: Path, what: str = "the finished run") -> None:
    after = tree_digest(folder)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    expect(not changed, f"{what} changed: {', '.join(changed[:4])}")


def steps_of(records: Sequence[dict], key: str = "step") -> list[int]:
    return [int(r[key]) for r in records if key in r]


def expect_true_steps(steps: Sequence[int], last: int, what: str, every: int = 1) -> str:
    """Step numbers strictly increasing (no repeat, no renumbering) and ending at ``last``."""
    expect(steps, f"{what}: no step records")
    repeats = sorted({s for s in steps if steps.count(s) > 1})
    expect(not repeats, f"{what}: steps repeated after the resume: {repeats[:5]}")
    expect(all(b > a for a, b in zip(steps, steps[1:])), f"{what}: steps renumbered: {list(steps)[:12]}")
    expect(steps[-1] == last, f"{what}: last step {steps[-1]}, expected {last}")
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    expect(not gaps or max(gaps) <= every, f"{what}: steps missing (largest gap {max(gaps, default=0)})")
    return f"{what}: {len(steps)} records, steps {steps[0]}..{steps[-1]}"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ------------------------------------------------------------------------------------- the lab


class Lab:
    """Runs the members' commands in a scratch folder and caches the fixtures trials share."""

    def __init__(self, work: Path, launcher: str = "venv", verbose: bool = False) -> None:
        self.work = work
        self.launcher = launcher
        self.verbose = verbose
        self.bin = Path(sys.executable).parent
        self._fixtures: dict[str, object] = {}
        self.env = dict(os.environ)
        # Nothing here may reach a network: a member that tries fails instead of hanging.
        self.env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        self.env.pop("LM_PACKAGE", None)
        self.corpus = write_corpus(work / "data" / "corpus.txt")

    # -- commands ---------------------------------------------------------------------------
    def cli(self, member: str, *args: object) -> list[str]:
        """``<cli> args...`` of ``member``."""
        script = MEMBERS[member][0]
        if self.launcher == "uv":
            return ["uv", "run", "--package", member, script, *map(str, args)]
        return [str(self.bin / script), *map(str, args)]

    def train(self, member: str, *args: object) -> tuple[list[str], dict[str, str]]:
        """The workspace's ``train`` for ``member`` (``uv run --package <member> train``)."""
        if self.launcher == "uv":
            return ["uv", "run", "--package", member, "train", *map(str, args)], {}
        return [str(self.bin / "train"), *map(str, args)], {"LM_PACKAGE": member}

    def python(self, *args: object) -> list[str]:
        return [sys.executable, *map(str, args)]

    def _argv(self, argv: Sequence[str]) -> list[str]:
        return [str(self.corpus) if a == CORPUS else a for a in argv]

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        env = dict(self.env)
        env.update(extra or {})
        return env

    def run(
        self,
        argv: Sequence[str] | tuple[list[str], dict[str, str]],
        *,
        env: dict[str, str] | None = None,
        timeout: float = 900,
        cwd: Path | None = None,
        stdin: str | None = None,
    ) -> Result:
        argv, extra = argv if isinstance(argv, tuple) else (list(argv), {})
        extra = {**extra, **(env or {})}
        argv = self._argv(argv)
        if self.verbose:
            print(f"    $ {' '.join(argv)}", flush=True)
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                argv,
                cwd=cwd or self.work,
                env=self._env(extra),
                input=stdin if stdin is not None else "",
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                # no controlling terminal: a background runner's child that touches the terminal
                # (TensorFlow does) would be stopped by SIGTTOU instead of running
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout or ""
            err = exc.stderr or ""
            return Result(
                list(argv),
                -9,
                out if isinstance(out, str) else out.decode(errors="replace"),
                (err if isinstance(err, str) else err.decode(errors="replace")) + "\n[timed out]",
                time.perf_counter() - start,
            )
        return Result(list(argv), proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start)

    def start(
        self, argv: Sequence[str] | tuple[list[str], dict[str, str]], *, env: dict[str, str] | None = None
    ) -> Running:
        argv, extra = argv if isinstance(argv, tuple) else (list(argv), {})
        extra = {**extra, **(env or {})}
        argv = self._argv(argv)
        if self.verbose:
            print(f"    $ {' '.join(argv)} &", flush=True)
        return Running(list(argv), self.work, self._env(extra))

    # -- fixtures ---------------------------------------------------------------------------
    def fixture(self, name: str, make: Callable[[], object]) -> object:
        """``make()`` once per session; a failure is remembered and re-raised to every user."""
        if name not in self._fixtures:
            try:
                self._fixtures[name] = make()
            except TrialFailed as exc:
                self._fixtures[name] = TrialFailed(f"fixture {name}: {exc}")
        value = self._fixtures[name]
        if isinstance(value, TrialFailed):
            raise value
        return value

    def fresh(self, name: str) -> Path:
        """A new, not yet existing path under the scratch folder."""
        path = self.work / name
        n = 1
        while path.exists():
            n += 1
            path = self.work / f"{name}-{n}"
        return path

    def copy_run(self, src: Path, name: str) -> Path:
        dst = self.fresh(name)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
        return dst


class Running:
    """A command started in the background (its own process group, output to files)."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.argv = argv
        self._out = tempfile.TemporaryFile(mode="w+", errors="replace")  # noqa: SIM115 - closed in finish()
        self._err = tempfile.TemporaryFile(mode="w+", errors="replace")  # noqa: SIM115
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            text=True,
            start_new_session=True,
            # as from a terminal: a parent started with nohup or `&` would pass on an ignored SIGINT
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready()`` until true; fail if the command ends or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError, KeyError):
                if ready():
                    return
            if not self.alive():
                res = self.finish(0)
                raise TrialFailed(f"ended (exit {res.returncode}) before {what}: {res.tail()}")
            if time.monotonic() > deadline:
                self.kill()
                res = self.finish(10)
                raise TrialFailed(f"no {what} after {timeout:.0f}s: {res.tail()}")
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the command's process group, as a terminal's Ctrl-C does."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def finish(self, timeout: float = 600) -> Result:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = self.proc.wait()
        self._out.seek(0)
        self._err.seek(0)
        res = Result(self.argv, rc, self._out.read(), self._err.read(), time.perf_counter() - self.start)
        self._out.close()
        self._err.close()
        return res


# ------------------------------------------------------------------------------------ test data


WORDS = tuple(
    [
        "the",
        "a",
        "river",
        "stone",
        "light",
        "morning",
        "sings",
        "under",
        "over",
        "quiet",
        "green",
        "old",
        "new",
        "city",
        "night",
        "road",
        "walks",
        "falls",
        "rises",
        "bright",
        "cold",
        "warm",
        "small",
        "wide",
        "long",
        "field",
        "rain",
        "wind",
        "sea",
        "hill",
    ]
)


def write_corpus(path: Path, paragraphs: int = 60, seed: int = 0) -> Path:
    """A small English-like text: ``paragraphs`` blank-line separated paragraphs of 6 sentences."""
    import random

    rng = random.Random(seed)
    lines = []
    for _ in range(paragraphs):
        for _ in range(6):
            words = [rng.choice(WORDS) for _ in range(rng.randint(5, 12))]
            lines.append(" ".join(words).capitalize() + ".")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut ``path`` to ``keep`` of its bytes, as a full disk or a killed copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])


# ------------------------------------------------------------------------------------- members


@dataclass
class Member:
    """How one member is trained with its smallest sizes, resumed and read back."""

    dist: str
    tiny: list[str]  # a run that finishes in seconds
    long: list[str]  # a run long enough to be interrupted, locked or killed mid-way
    checkpoint: str  # the resumable checkpoint, relative to the run folder
    weights: str  # the finished model, relative to the run folder
    force: str = "--force"
    data_flag: bool = True  # trains on --data FILE
    lock_extra: tuple[str, ...] = ()  # makes `long` long enough to outlive a second command's start

    @property
    def short(self) -> str:
        return MEMBERS[self.dist][1]

    def out_args(self, run: Path) -> list[str]:
        return ["--out", str(run)]

    def train_argv(self, lab: Lab, run: Path, size: str = "tiny", *extra: object):
        args = self.tiny if size == "tiny" else self.long
        return lab.train(self.dist, *self.out_args(run), *args, *extra)

    def resume_argv(self, lab: Lab, run: Path, size: str = "long", *extra: object):
        return self.train_argv(lab, run, size, "--resume", *extra)

    def started(self, run: Path) -> bool:
        """The run has finished at least one optimizer step (its checkpoint or log shows it)."""
        return (run / self.checkpoint).is_file()

    def interrupted_step(self, run: Path) -> int:
        state = json.loads((run / "run.json").read_text(encoding="utf-8"))
        return int(state.get("step", 0))


class Nanologic(Member):
    # Lightning logs every 10 steps: a resume 12 steps long logs at least once.
    resume_steps = 12

    def started(self, run: Path) -> bool:
        return (run / self.checkpoint).is_file()

    def resume_argv(self, lab: Lab, run: Path, size: str = "long", *extra: object):
        step = self.interrupted_step(run)
        return self.train_argv(lab, run, size, "--resume", "--max-steps", step + self.resume_steps, *extra)


class Tormented(Member):
    def resume_argv(self, lab: Lab, run: Path, size: str = "long", *extra: object):
        step = self.interrupted_step(run)
        return lab.train(
            self.dist, "--out", run, "--resume", "--max-steps", step + 3, "--no-progress", *extra
        )


class Lstm(Member):
    def started(self, run: Path) -> bool:
        history = run / "history.csv"
        return history.is_file() and len(history.read_text().splitlines()) >= 2

    def interrupted_step(self, run: Path) -> int:
        return len((run / "history.csv").read_text().splitlines()) - 1


class Infinito(Member):
    def out_args(self, run: Path) -> list[str]:
        return ["--out", str(run.parent), "--run-name", run.name]

    def resume_argv(self, lab: Lab, run: Path, size: str = "long", *extra: object):
        step = self.interrupted_step(run)
        return lab.train(self.dist, "--resume", run, "--max-steps", step + 3, *extra)


class Seeddelta(Member):
    def started(self, run: Path) -> bool:
        log = run / "train_log.jsonl"
        return log.is_file() and log.read_text().strip() != ""


CORPUS = "{corpus}"  # replaced by the lab's generated text file

SPECS: dict[str, Member] = {
    "nanologic": Nanologic(
        "nanologic",
        tiny=[
            "--preset",
            "tiny",
            "--n-generate",
            "300",
            "--max-per-complexity",
            "30",
            "--max-steps",
            "3",
            "--batch-size",
            "8",
            "--eval-limit",
            "4",
            "--threads",
            "1",
            "--vocab-size",
            "300",
        ],
        long=[
            "--preset",
            "tiny",
            "--n-generate",
            "300",
            "--max-per-complexity",
            "30",
            "--max-steps",
            "400",
            "--epochs",
            "50",
            "--checkpoint-every",
            "1",
            "--batch-size",
            "8",
            "--eval-limit",
            "4",
            "--threads",
            "1",
            "--vocab-size",
            "300",
        ],
        checkpoint="checkpoints/phase2/last.ckpt",
        weights="model.safetensors",
        data_flag=False,
    ),
    "tormented-mini": Tormented(
        "tormented-mini",
        tiny=[
            "--size",
            "cpu",
            "--max-steps",
            "3",
            "--eval-every",
            "2",
            "--batch-size",
            "4",
            "--seq-len",
            "32",
            "--vocab-size",
            "300",
            "--no-progress",
            "--data",
            CORPUS,
        ],
        long=[
            "--size",
            "cpu",
            "--max-steps",
            "400",
            "--eval-every",
            "1",
            "--batch-size",
            "4",
            "--seq-len",
            "32",
            "--vocab-size",
            "300",
            "--no-progress",
            "--data",
            CORPUS,
        ],
        checkpoint="checkpoints/last.ckpt",
        weights="model.safetensors",
    ),
    "lstm-textgen": Lstm(
        "lstm-textgen",
        tiny=[
            "--data",
            CORPUS,
            "--epochs",
            "2",
            "--steps-per-epoch",
            "3",
            "--lstm-units",
            "16",
            "--embedding-dim",
            "8",
            "--lstm-layers",
            "1",
            "--seq-len",
            "16",
            "--batch-size",
            "8",
            "--jit-compile",
            "off",
        ],
        long=[
            "--data",
            CORPUS,
            "--epochs",
            "20",
            "--steps-per-epoch",
            "3",
            "--lstm-units",
            "16",
            "--embedding-dim",
            "8",
            "--lstm-layers",
            "1",
            "--seq-len",
            "16",
            "--batch-size",
            "8",
            "--jit-compile",
            "off",
        ],
        checkpoint="backup",
        weights="model.keras",
        force="--overwrite",
        lock_extra=("--epochs", "2000"),
    ),
    "infinito-iit": Infinito(
        "infinito-iit",
        tiny=[
            "--data",
            CORPUS,
            "--max-steps",
            "3",
            "--eval-every",
            "2",
            "--d-model",
            "32",
            "--n-layers",
            "1",
            "--n-heads",
            "2",
            "--seq-len",
            "32",
            "--max-seq-len",
            "32",
            "--batch-size",
            "4",
            "--vocab-size",
            "300",
            "--proxy-k",
            "0",
        ],
        long=[
            "--data",
            CORPUS,
            "--max-steps",
            "400",
            "--eval-every",
            "1",
            "--d-model",
            "32",
            "--n-layers",
            "1",
            "--n-heads",
            "2",
            "--seq-len",
            "32",
            "--max-seq-len",
            "32",
            "--batch-size",
            "4",
            "--vocab-size",
            "300",
            "--proxy-k",
            "0",
        ],
        checkpoint="checkpoints/last.ckpt",
        weights="model.safetensors",
        lock_extra=("--max-steps", "5000", "--patience", "1000"),
    ),
    "seeddelta": Seeddelta(
        "seeddelta",
        tiny=[
            "--steps",
            "3",
            "--num-layers",
            "1",
            "--hidden-size",
            "32",
            "--intermediate-size",
            "64",
            "--num-heads",
            "2",
            "--docs-per-step",
            "4",
            "--val-samples",
            "8",
            "--quiet",
        ],
        long=[
            "--steps",
            "60",
            "--num-layers",
            "1",
            "--hidden-size",
            "32",
            "--intermediate-size",
            "64",
            "--num-heads",
            "2",
            "--docs-per-step",
            "4",
            "--val-samples",
            "8",
            "--quiet",
        ],
        checkpoint="checkpoint.pt",
        weights="model.pt",
        data_flag=False,
        lock_extra=("--steps", "5000"),
    ),
}


# ------------------------------------------------------------------------------------- fixtures


def finished_run(lab: Lab, member: str) -> tuple[Path, Result]:
    """A finished tiny run of ``member`` (shared by the trials that only read it or copy it)."""

    def make() -> tuple[Path, Result]:
        spec = SPECS[member]
        run = lab.fresh(f"{spec.short}-finished")
        res = lab.run(spec.train_argv(lab, run, "tiny"))
        expect_ok(res, f"tiny {spec.short} training")
        return run, res

    return lab.fixture(f"finished:{member}", make)  # type: ignore[return-value]


def interrupt_run(lab: Lab, member: str, run: Path, argv, signum: int = signal.SIGINT) -> Result:
    """Start ``argv``, wait for its first optimizer step, send ``signum`` (Ctrl-C), wait for it."""
    spec = SPECS[member]
    proc = lab.start(argv)
    proc.wait_for(lambda: spec.started(run), 600, "a first training step")
    proc.signal(signum)
    return proc.finish(600)


def interrupted_run(lab: Lab, member: str) -> tuple[Path, Result]:
    """A run stopped by Ctrl-C after its first steps (the result is the interrupted command's)."""

    def make() -> tuple[Path, Result]:
        spec = SPECS[member]
        run = lab.fresh(f"{spec.short}-interrupted")
        return run, interrupt_run(lab, member, run, spec.train_argv(lab, run, "long"))

    return lab.fixture(f"interrupted:{member}", make)  # type: ignore[return-value]


def resumed_run(lab: Lab, member: str) -> tuple[Path, Result, int]:
    """A copy of the interrupted run continued with --resume to a few steps past the interruption."""

    def make() -> tuple[Path, Result, int]:
        spec = SPECS[member]
        src, _ = interrupted_run(lab, member)
        expect((src / "run.json").is_file(), "the interrupted run has no run.json")
        run = lab.copy_run(src, f"{spec.short}-resumed")
        step = spec.interrupted_step(run)
        res = lab.run(spec.resume_argv(lab, run))
        return run, res, step

    return lab.fixture(f"resumed:{member}", make)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------- trials


@dataclass
class Trial:
    name: str
    member: str
    kind: int
    expected: str
    check: Callable[[Lab], str | None]


@dataclass
class Outcome:
    name: str
    member: str
    kind: int
    expected: str
    status: str
    detail: str
    seconds: float


TRIALS: list[Trial] = []


def trial(name: str, member: str, kind: int, expected: str):
    def register(check: Callable[[Lab], str | None]) -> Callable[[Lab], str | None]:
        TRIALS.append(Trial(name, member, kind, expected, check))
        return check

    return register


def each_member(members: Iterable[str] = tuple(SPECS)):
    """Decorator factory: register ``make(member)`` once per member."""

    def register(make: Callable[[str], tuple[str, int, str, Callable[[Lab], str | None]]]):
        for member in members:
            name, kind, expected, check = make(member)
            TRIALS.append(Trial(name, member, kind, expected, check))
        return make

    return register


# -- kind 1: finished work is never overwritten -------------------------------------------------


@each_member()
def _rerun_finished(member: str):
    spec = SPECS[member]

    def check(lab: Lab) -> str:
        src, _ = finished_run(lab, member)
        run = lab.copy_run(src, f"{spec.short}-rerun")
        before = tree_digest(run)
        res = lab.run(spec.train_argv(lab, run, "tiny"))
        line = expect_user_error(res, "finished", spec.force)
        expect_unchanged(before, run)
        return line

    return (
        f"{spec.short}-rerun-finished",
        1,
        f"train twice into one --out: refused (exit 2, names {spec.force}), the first run unchanged",
        check,
    )


@each_member()
def _failing_force(member: str):
    spec = SPECS[member]

    def check(lab: Lab) -> str:
        src, _ = finished_run(lab, member)
        run = lab.copy_run(src, f"{spec.short}-failing-force")
        before = tree_digest(run)
        if member == "seeddelta":
            bad = ["--init-from", str(lab.work / "no-such-run")]
        elif member == "nanologic":
            empty = lab.fresh("nl-empty-data")
            empty.mkdir()
            for split in ("train", "val", "test"):
                (empty / f"{split}.jsonl").write_text("")
            bad = ["--data", str(empty)]
        else:
            empty = lab.fresh("empty.txt")
            empty.write_text("")
            bad = ["--data", str(empty)]
        argv, env = spec.train_argv(lab, run, "tiny", spec.force)
        # the bad input replaces the run's own --data (argparse keeps the last value)
        res = lab.run((argv + bad, env))
        expect_user_error(res)
        expect_unchanged(before, run)
        return f"{error_lines(res)[0]}; finished run unchanged"

    return (
        f"{spec.short}-failing-force",
        1,
        f"a {spec.force} re-run that fails (bad input) leaves the finished run byte for byte (config.json too)",
        check,
    )


@each_member()
def _killed_force(member: str):
    spec = SPECS[member]

    def check(lab: Lab) -> str:
        src, _ = finished_run(lab, member)
        run = lab.copy_run(src, f"{spec.short}-killed-force")
        before = tree_digest(run)
        staged = run.parent / f".{run.name}.new"
        proc = lab.start(spec.train_argv(lab, run, "long", spec.force))
        proc.wait_for(lambda: spec.started(staged), 600, "a first step of the forced re-run")
        proc.kill()
        proc.finish(60)
        expect_unchanged(before, run, "the old run after the killed re-run")
        detail = "killed mid-run: the old run is whole"
        if member == "lstm-textgen":
            res = lab.run(
                lab.cli(member, "sample", "--model", run, "--max-new-tokens", "5", "--prompt", "The")
            )
            expect_ok(res, "sample from the old run")
            detail += ", `sample` works"
        return detail

    return (
        f"{spec.short}-killed-force",
        1,
        f"a {spec.force} re-run killed mid-training leaves the old run whole (and usable)",
        check,
    )


def seeddelta_gguf(lab: Lab) -> Path:
    def make() -> Path:
        run, _ = finished_run(lab, "seeddelta")
        gguf = lab.work / "seeddelta-tiny.gguf"
        res = lab.run(lab.cli("seeddelta", "tiny", "export", "--checkpoint", run, "--out", gguf))
        expect_ok(res, "seeddelta tiny export")
        return gguf

    return lab.fixture("seeddelta-gguf", make)  # type: ignore[return-value]


@trial(
    "seeddelta-export-existing", "seeddelta", 1, "`tiny export --out EXISTING.gguf`: refused, file unchanged"
)
def _export_existing(lab: Lab) -> str:
    run, _ = finished_run(lab, "seeddelta")
    gguf = seeddelta_gguf(lab)
    before = file_digest(gguf)
    res = lab.run(lab.cli("seeddelta", "tiny", "export", "--checkpoint", run, "--out", gguf))
    line = expect_user_error(res, "--force")
    expect(file_digest(gguf) == before, "the existing GGUF changed")
    return line


@trial("seeddelta-build-existing", "seeddelta", 1, "`build -o EXISTING.gguf`: refused, file unchanged")
def _build_existing(lab: Lab) -> str:
    gguf = seeddelta_gguf(lab)
    target = lab.fresh("existing.gguf")
    target.write_bytes(b"precious")
    res = lab.run(lab.cli("seeddelta", "build", "-i", gguf, "-o", target, "--quiet"))
    line = expect_user_error(res, "--force")
    expect(target.read_bytes() == b"precious", "the existing file changed")
    return line


# -- kind 2: one training per run folder --------------------------------------------------------


def _descendants(pid: int) -> set[int]:
    found = {pid}
    for _ in range(3):
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                parts = stat.read_text().rsplit(")", 1)[1].split()
                if int(parts[1]) in found:
                    found.add(int(stat.parent.name))
    return found


@each_member()
def _lock(member: str):
    spec = SPECS[member]

    def check(lab: Lab) -> str:
        run = lab.fresh(f"{spec.short}-locked")
        first = lab.start(spec.train_argv(lab, run, "long", *spec.lock_extra))
        try:
            first.wait_for(lambda: (run / "run.json").is_file(), 600, "the first training's run.json")
            pids = _descendants(first.pid)
            second = lab.run(spec.train_argv(lab, run, "tiny"))
            alive = first.alive()
        finally:
            first.kill()
            ended = first.finish(60)
        expect(
            alive, f"the first training ended (exit {ended.returncode}) while the second ran: {ended.tail()}"
        )
        line = expect_user_error(second, "pid")
        named = {int(n) for n in re.findall(r"pid (\d+)", line)}
        expect(named & pids, f"names pid {named}, the first training is {sorted(pids)[:3]}")
        return line

    return (
        f"{spec.short}-lock",
        2,
        "a second training into a running one's --out: refused (exit 2) naming the first one's pid",
        check,
    )


@trial(
    "nanologic-torchrun",
    "nanologic",
    2,
    "`torchrun --nproc_per_node 2 -m nanologic.cli train --devices 2 --strategy ddp` (gloo, CPU): "
    "exit 0, one training in the folder (one run, one log version, finished)",
)
def _torchrun(lab: Lab) -> str:
    spec = SPECS["nanologic"]
    run = lab.fresh("nanologic-torchrun")
    argv = lab.python(
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master-port",
        str(29500 + os.getpid() % 1000),
        "-m",
        "nanologic.cli",
        "train",
        "--out",
        run,
        *spec.tiny,
        "--devices",
        "2",
        "--strategy",
        "ddp",
    )
    res = lab.run(argv, timeout=1200)
    expect_ok(res, "torchrun")
    state = json.loads((run / "run.json").read_text())
    expect(state.get("status") == "finished", f"run.json status {state.get('status')!r}")
    versions = sorted(p.name for p in (run / "tensorboard" / "phase2").iterdir())
    expect(versions == ["version_0"], f"log versions {versions} (more than one training wrote here)")
    expect(not list(run.parent.glob(f".{run.name}.*")), "a staging folder was left beside the run")
    expect(res.output.count("Run directory:") >= 1, "no run directory printed")
    return f"exit 0 in {res.seconds:.0f}s, status finished, one log version, world size 2"


# -- kind 3: an interrupted run is continued, never restarted or moved to other data -----------


@each_member()
def _rerun_interrupted(member: str):
    spec = SPECS[member]

    def check(lab: Lab) -> str:
        src, _ = interrupted_run(lab, member)
        run = lab.copy_run(src, f"{spec.short}-rerun-interrupted")
        before = tree_digest(run)
        res = lab.run(spec.train_argv(lab, run, "long"))
        line = expect_user_error(res, "interrupted", "--resume")
        expect_unchanged(before, run, "the interrupted run")
        return line

    return (
        f"{spec.short}-rerun-interrupted",
        3,
        "re-run of an interrupted run without --resume: refused with the advice to --resume, checkpoint kept",
        check,
    )


def _saved_data(member: str, run: Path) -> str | None:
    state = json.loads((run / "run.json").read_text(encoding="utf-8"))
    config = state.get("config") or {}
    if member == "lstm-textgen":
        return (config.get("data") or {}).get("data")
    if member == "infinito-iit":
        return (config.get("train") or {}).get("data")
    if member == "nanologic":
        return config.get("data")
    return config.get("data")


@each_member(["tormented-mini", "lstm-textgen", "infinito-iit"])
def _resume_keeps_data(member: str):
    spec = SPECS[member]

    def check(lab: Lab) -> str:
        src, _ = interrupted_run(lab, member)
        # another --data on resume: refused, naming the field
        run = lab.copy_run(src, f"{spec.short}-resume-other-data")
        other = write_corpus(lab.fresh("other.txt"), paragraphs=30, seed=1)
        argv, env = spec.resume_argv(lab, run)
        res = lab.run((argv + ["--data", str(other)], env))
        expect_user_error(res, "data")
        # no --data on resume: the run's own data, not the embedded corpus
        run = lab.copy_run(src, f"{spec.short}-resume-no-data")
        argv, env = spec.resume_argv(lab, run)
        argv = [
            a for i, a in enumerate(argv) if a != CORPUS and not (a == "--data" and argv[i + 1] == CORPUS)
        ]
        res = lab.run((argv, env))
        expect_ok(res, "resume without --data")
        saved = _saved_data(member, run)
        expect(saved and Path(saved).name == "corpus.txt", f"the resumed run's data is {saved!r}")
        expect("embedded" not in res.output.lower(), f"the resume mentions the embedded corpus: {res.tail()}")
        files = {
            "tormented-mini": "train_config.json",
            "infinito-iit": "config.json",
            "lstm-textgen": "config.json",
        }
        text = (run / files[member]).read_text(encoding="utf-8")
        expect("corpus.txt" in text, f"{files[member]} no longer names corpus.txt")
        return f"other --data refused; without --data it continued on {Path(saved).name}"

    return (
        f"{spec.short}-resume-keeps-data",
        3,
        "--resume without --data continues on the run's own data; another --data is refused naming it",
        check,
    )


@trial(
    "nanologic-resume-keeps-data",
    "nanologic",
    3,
    "--resume without --data continues on the run's own --data DIR (no new dataset generated); another is refused",
)
def _nl_resume_keeps_data(lab: Lab) -> str:
    spec = SPECS["nanologic"]
    src, _ = finished_run(lab, "nanologic")
    data = lab.fresh("nl-data")
    shutil.copytree(src / "data", data)
    run = lab.fresh("nanologic-own-data")
    res = interrupt_run(lab, "nanologic", run, spec.train_argv(lab, run, "long", "--data", data))
    expect(res.returncode == 130, f"Ctrl-C: exit {res.returncode}: {res.tail()}")
    other = lab.copy_run(run, "nanologic-other-data")
    argv, env = spec.resume_argv(lab, other)
    expect_user_error(lab.run((argv + ["--data", str(src / "data")], env)), "data")
    res = lab.run(spec.resume_argv(lab, run))
    expect_ok(res, "resume without --data")
    saved = _saved_data("nanologic", run)
    expect(saved and Path(saved) == data.resolve(), f"the resumed run's data is {saved!r}")
    expect(not (run / "data").exists(), "a new dataset was generated in the run folder")
    return f"other --data refused; without --data it continued on {data.name}"


# -- kind 4: Ctrl-C saves a resumable checkpoint and says so in one line ------------------------


@each_member()
def _ctrl_c(member: str):
    spec = SPECS[member]

    def check(lab: Lab) -> str:
        run, res = interrupted_run(lab, member)
        expect(not has_traceback(res), f"traceback after Ctrl-C: {res.tail()}")
        expect(res.returncode == 130, f"exit {res.returncode} after Ctrl-C, expected 130: {res.tail()}")
        expect((run / spec.checkpoint).exists(), f"no {spec.checkpoint} after Ctrl-C")
        state = json.loads((run / "run.json").read_text(encoding="utf-8"))
        expect(state.get("status") == "interrupted", f"run.json status {state.get('status')!r}")
        expect("resume" in res.stderr.lower(), f"no word on how to continue: {res.tail()}")
        _, resumed, step = resumed_run(lab, member)
        expect_ok(resumed, "--resume after Ctrl-C")
        last = [line for line in res.stderr.splitlines() if line.strip()][-1]
        return f"exit 130 at step {step}: {last[:140]}; --resume finished"

    return (
        f"{spec.short}-ctrl-c",
        4,
        "Ctrl-C mid-training: exit 130, one line saying how to continue, a resumable checkpoint; --resume finishes",
        check,
    )


# -- kind 5: step numbers after a resume -------------------------------------------------------


def _tb_steps(folder: Path) -> dict[str, list[tuple[str, int]]]:
    """``{version folder: [(tag, step), ...]}`` from TensorBoard event files (no TensorFlow needed)."""
    import struct

    sys.modules.setdefault("tensorboard.compat.notf", type(sys)("tensorboard.compat.notf"))
    from tensorboard.compat.proto import event_pb2

    found: dict[str, list[tuple[str, int]]] = {}
    for events in sorted(folder.rglob("events.out.tfevents.*")):
        data = events.read_bytes()
        pos = 0
        items = found.setdefault(str(events.parent.relative_to(folder)), [])
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            record = data[pos + 12 : pos + 12 + length]
            pos += 12 + length + 4
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                items.append((value.tag, int(event.step)))
    return found


def _log_check(member: str, run: Path, step: int, final: int) -> str:
    if member == "tormented-mini":
        records = read_jsonl(run / "stability.jsonl")
        return expect_true_steps(steps_of(records), final, "stability.jsonl")
    if member == "infinito-iit":
        records = read_jsonl(run / "grad_health.jsonl")
        return expect_true_steps(steps_of(records), final, "grad_health.jsonl")
    if member == "seeddelta":
        records = read_jsonl(run / "train_log.jsonl")
        steps = steps_of(records)
        return expect_true_steps(steps, final - 1, "train_log.jsonl", every=max(1, final))
    if member == "lstm-textgen":
        rows = (run / "history.csv").read_text().splitlines()[1:]
        epochs = [int(r.split(",")[0]) for r in rows]
        detail = expect_true_steps(epochs, final - 1, "history.csv epochs")
        metrics = json.loads((run / "metrics.json").read_text())
        expect(
            metrics.get("epochs_run") == final,
            f"metrics.json epochs_run {metrics.get('epochs_run')}, expected {final}",
        )
        return detail + f"; metrics.json epochs_run {final}"
    # nanologic: Lightning's global_step in TensorBoard, per log version (one per session)
    versions = _tb_steps(run / "tensorboard" / "phase2")
    expect(len(versions) >= 2, f"log versions {sorted(versions)}: expected one per session")
    resumed = versions[sorted(versions)[-1]]
    expect(resumed, "the resumed session logged nothing")
    low = min(s for _, s in resumed)
    expect(low >= step - 1, f"the resumed session logs from step {low}, the checkpoint was at {step}")
    pairs = [p for v in versions.values() for p in v if p[0] != "epoch"]
    repeats = sorted({p for p in pairs if pairs.count(p) > 1})
    expect(not repeats, f"(tag, step) logged twice: {repeats[:3]}")
    return f"resumed session logs steps {low}..{max(s for _, s in resumed)} (checkpoint at {step})"


@each_member()
def _logs_after_resume(member: str):
    spec = SPECS[member]

    def check(lab: Lab) -> str:
        run, res, step = resumed_run(lab, member)
        expect_ok(res, "--resume")
        if member in ("lstm-textgen", "seeddelta"):
            final = int(spec.long[spec.long.index("--epochs" if member == "lstm-textgen" else "--steps") + 1])
        else:
            final = step + 3
        return _log_check(member, run, step, final)

    return (
        f"{spec.short}-logs-after-resume",
        5,
        "after Ctrl-C + --resume the logs hold each step once, numbered as in an uninterrupted run",
        check,
    )


# -- kind 6: NaN hyperparameters and non-finite models -----------------------------------------


@each_member()
def _lr_nan(member: str):
    spec = SPECS[member]

    def check(lab: Lab) -> str:
        run = lab.fresh(f"{spec.short}-lr-nan")
        res = lab.run(spec.train_argv(lab, run, "tiny", "--lr", "nan"))
        line = expect_user_error(res, "lr")
        left = [p.name for p in run.iterdir() if p.name != ".lock"] if run.exists() else []
        expect(not left, f"refused only after work began ({', '.join(sorted(left)[:4])} written): {line}")
        return line

    return (
        f"{spec.short}-lr-nan",
        6,
        "--lr nan: refused before any work (exit 2, names --lr), no model saved",
        check,
    )


# -- kind 7: a user error is one line, never a traceback ---------------------------------------


def _nl_raw(lab: Lab) -> Path:
    """`nanologic generate` output (raw JSON in the original's schema), the pipeline's first stage."""

    def make() -> Path:
        raw = lab.work / "nl-raw.json"
        expect_ok(lab.run(lab.cli("nanologic", "generate", "--n", "40", "--out", raw)), "nanologic generate")
        return raw

    return lab.fixture("nl-raw", make)  # type: ignore[return-value]


def _user_error_trial(
    name: str,
    member: str,
    expected: str,
    argv: Callable[[Lab], object],
    needles: Sequence[str] = (),
    absent: Callable[[Lab], Iterable[Path]] = lambda lab: (),
) -> None:
    """A command that must fail with one ``error:`` line naming ``needles`` and write nothing in ``absent``."""

    def check(lab: Lab) -> str:
        res = lab.run(argv(lab))
        line = expect_user_error(res, *needles)
        for path in absent(lab):
            expect(
                not path.exists() or (path.is_dir() and not any(path.iterdir())), f"{path.name} was written"
            )
        return line

    TRIALS.append(Trial(name, member, 7, expected, check))


def _latin1(lab: Lab, name: str) -> Path:
    path = lab.work / name
    path.write_bytes("Si llueve, me mojo. El niño canta canción.\n".encode("latin-1") * 40)
    return path


def _empty(lab: Lab, name: str) -> Path:
    path = lab.work / name
    path.write_text("")
    return path


def _out(lab: Lab, name: str) -> Path:
    return lab.work / "out" / name


_user_error_trial(
    "nanologic-non-utf8",
    "nanologic",
    "`clean` on a Latin-1 file: one line naming the file and the byte",
    lambda lab: lab.cli(
        "nanologic", "clean", _latin1(lab, "nl-latin1.json"), "--out", _out(lab, "nl-l1.json")
    ),
    ["nl-latin1.json"],
    lambda lab: [_out(lab, "nl-l1.json")],
)
_user_error_trial(
    "nanologic-skipped-stage",
    "nanologic",
    "`augment` on raw `generate` output (clean skipped): one line naming the file and the stage",
    lambda lab: lab.cli(
        "nanologic", "augment", _nl_raw_without_output(lab), "--out", _out(lab, "nl-aug.json")
    ),
    ["nl-raw-no-output.json"],
    lambda lab: [_out(lab, "nl-aug.json")],
)


def _nl_raw_without_output(lab: Lab) -> Path:
    raw = json.loads(_nl_raw(lab).read_text(encoding="utf-8"))
    rows = raw if isinstance(raw, list) else raw.get("examples", raw)
    stripped = [{k: v for k, v in row.items() if k != "output"} for row in rows]
    path = lab.work / "nl-raw-no-output.json"
    path.write_text(json.dumps(stripped, ensure_ascii=False), encoding="utf-8")
    return path


for _stage in ("clean", "preprocess"):
    _user_error_trial(
        f"nanologic-empty-{_stage}",
        "nanologic",
        f"`{_stage}` on an empty file: refused in one line, no empty output written",
        lambda lab, s=_stage: lab.cli(
            "nanologic", s, _empty(lab, f"nl-empty-{s}.json"), "--out", _out(lab, f"nl-{s}")
        ),
        ["nl-empty-"],
        lambda lab, s=_stage: [_out(lab, f"nl-{s}")],
    )


def _nl_finished(lab: Lab) -> Path:
    return finished_run(lab, "nanologic")[0]


_user_error_trial(
    "nanologic-empty-formalize",
    "nanologic",
    "`formalize --input EMPTY.jsonl`: refused in one line, no empty output written",
    lambda lab: lab.cli(
        "nanologic",
        "formalize",
        "--checkpoint",
        _nl_finished(lab),
        "--input",
        _empty(lab, "nl-empty.jsonl"),
        "--output",
        _out(lab, "nl-formalized.jsonl"),
    ),
    ["nl-empty.jsonl"],
    lambda lab: [_out(lab, "nl-formalized.jsonl")],
)


def _damaged_copy(lab: Lab, member: str, relative: str, *, interrupted: bool = False) -> Path:
    src = interrupted_run(lab, member)[0] if interrupted else finished_run(lab, member)[0]
    run = lab.copy_run(src, f"{SPECS[member].short}-damaged")
    truncate(run / relative)
    return run


def _damaged_trial(
    name: str,
    member: str,
    relative: str,
    what: str,
    use: Callable[[Lab, Path], object],
    interrupted: bool = False,
) -> None:
    def check(lab: Lab) -> str:
        run = _damaged_copy(lab, member, relative, interrupted=interrupted)
        res = lab.run(use(lab, run))
        return expect_user_error(res, Path(relative).name)

    TRIALS.append(Trial(name, member, 7, f"{what}: one line naming {Path(relative).name}", check))


_damaged_trial(
    "nanologic-truncated-weights",
    "nanologic",
    "model.safetensors",
    "`formalize` with a truncated model.safetensors",
    lambda lab, run: lab.cli("nanologic", "formalize", "--checkpoint", run, "Si llueve, me mojo."),
)
_damaged_trial(
    "nanologic-truncated-tokenizer",
    "nanologic",
    "tokenizer/tokenizer.json",
    "`formalize` with a truncated tokenizer.json",
    lambda lab, run: lab.cli("nanologic", "formalize", "--checkpoint", run, "Si llueve, me mojo."),
)
_damaged_trial(
    "nanologic-truncated-last-ckpt",
    "nanologic",
    "checkpoints/phase2/last.ckpt",
    "`train --resume` with a truncated last.ckpt",
    lambda lab, run: SPECS["nanologic"].resume_argv(lab, run),
    interrupted=True,
)


@trial(
    "nanologic-truncated-cache",
    "nanologic",
    7,
    "`train --resume` with a truncated token cache: rebuilt, resume finishes",
)
def _nl_cache(lab: Lab) -> str:
    src, _ = interrupted_run(lab, "nanologic")
    run = lab.copy_run(src, "nanologic-damaged-cache")
    caches = sorted((run / "cache").glob("*.pt"))
    expect(caches, "the interrupted run has no token cache")
    for cache in caches:
        truncate(cache)
    res = lab.run(SPECS["nanologic"].resume_argv(lab, run))
    expect_ok(res, "resume with a damaged cache")
    return f"{len(caches)} truncated cache files rebuilt; resume exit 0"


_user_error_trial(
    "nanologic-other-member-run",
    "nanologic",
    "`formalize --checkpoint <a seeddelta run>`: one line naming the other member",
    lambda lab: lab.cli(
        "nanologic", "formalize", "--checkpoint", finished_run(lab, "seeddelta")[0], "Llueve."
    ),
    ["seeddelta"],
)

for _flag, _value, _field in (
    ("--max-steps", "-5", "--max-steps"),
    ("--batch-size", "0", "--batch-size"),
    ("--epochs", "0", "--epochs"),
    ("--precision", "fp64", "--precision"),
    ("--vocab-size", "10", "--vocab-size"),
    ("--model-config", '{"bogus": 1}', "bogus"),
):
    _user_error_trial(
        f"nanologic-bad{_flag[1:]}",
        "nanologic",
        f"`train {_flag} {_value}`: refused before any work (no data, no tokenizer), one line naming {_field}",
        lambda lab, f=_flag, v=_value: SPECS["nanologic"].train_argv(
            lab, _out(lab, f"nl-bad{f}"), "tiny", f, v
        ),
        [_field],
        lambda lab, f=_flag: [_out(lab, f"nl-bad{f}")],
    )


# the same kinds in the other members
for _member, _name in (("tormented-mini", "tm"), ("lstm-textgen", "lstm"), ("infinito-iit", "inf")):
    _short = SPECS[_member].short
    _user_error_trial(
        f"{_short}-non-utf8",
        _member,
        "train --data LATIN1.txt: one line naming the file",
        lambda lab, m=_member, n=_name: SPECS[m].train_argv(
            lab, _out(lab, f"{n}-l1"), "tiny", "--data", _latin1(lab, f"{n}-latin1.txt")
        ),
        [f"{_name}-latin1.txt"],
        lambda lab, m=_member, n=_name: [_out(lab, f"{n}-l1") / SPECS[m].weights],
    )
    _user_error_trial(
        f"{_short}-empty-data",
        _member,
        "train --data EMPTY.txt: one line naming the file, no run left",
        lambda lab, m=_member, n=_name: SPECS[m].train_argv(
            lab, _out(lab, f"{n}-empty"), "tiny", "--data", _empty(lab, f"{n}-empty.txt")
        ),
        [f"{_name}-empty.txt"],
        lambda lab, m=_member, n=_name: [_out(lab, f"{n}-empty") / SPECS[m].weights],
    )

_damaged_trial(
    "tormented-truncated-weights",
    "tormented-mini",
    "model.safetensors",
    "`fill-mask` with a truncated model.safetensors",
    lambda lab, run: lab.cli("tormented-mini", "fill-mask", run, "the river [MASK] under the hill"),
)
_damaged_trial(
    "tormented-truncated-last-ckpt",
    "tormented-mini",
    "checkpoints/last.ckpt",
    "`train --resume` with a truncated last.ckpt",
    lambda lab, run: SPECS["tormented-mini"].resume_argv(lab, run),
    interrupted=True,
)
_damaged_trial(
    "lstm-truncated-model",
    "lstm-textgen",
    "model.keras",
    "`sample` with a truncated model.keras",
    lambda lab, run: lab.cli("lstm-textgen", "sample", "--model", run, "--max-new-tokens", "5"),
)
_damaged_trial(
    "infinito-truncated-weights",
    "infinito-iit",
    "model.safetensors",
    "`generate` with a truncated model.safetensors",
    lambda lab, run: lab.cli("infinito-iit", "generate", run, "--num-samples", "1", "--max-new-tokens", "4"),
)
_damaged_trial(
    "infinito-truncated-tokenizer",
    "infinito-iit",
    "tokenizer.json",
    "`generate` with a truncated tokenizer.json",
    lambda lab, run: lab.cli("infinito-iit", "generate", run, "--num-samples", "1", "--max-new-tokens", "4"),
)
_damaged_trial(
    "infinito-truncated-last-ckpt",
    "infinito-iit",
    "checkpoints/last.ckpt",
    "`train --resume` with a truncated last.ckpt",
    lambda lab, run: SPECS["infinito-iit"].resume_argv(lab, run),
    interrupted=True,
)
_damaged_trial(
    "seeddelta-truncated-weights",
    "seeddelta",
    "model.pt",
    "`tiny export` with a truncated model.pt",
    lambda lab, run: lab.cli(
        "seeddelta", "tiny", "export", "--checkpoint", run, "--out", lab.fresh("sd-damaged.gguf")
    ),
)
_damaged_trial(
    "seeddelta-truncated-checkpoint",
    "seeddelta",
    "checkpoint.pt",
    "`train --resume` with a truncated checkpoint.pt",
    lambda lab, run: SPECS["seeddelta"].resume_argv(lab, run),
    interrupted=True,
)

for _member, _argv in (
    ("tormented-mini", lambda lab, other: lab.cli("tormented-mini", "fill-mask", other, "a [MASK] b")),
    ("lstm-textgen", lambda lab, other: lab.cli("lstm-textgen", "sample", "--model", other)),
    ("infinito-iit", lambda lab, other: lab.cli("infinito-iit", "generate", other, "--num-samples", "1")),
    (
        "seeddelta",
        lambda lab, other: lab.cli(
            "seeddelta", "tiny", "export", "--checkpoint", other, "--out", lab.fresh("x.gguf")
        ),
    ),
):
    _user_error_trial(
        f"{SPECS[_member].short}-other-member-run",
        _member,
        "given a nanologic run folder as its model: one line naming the other member",
        lambda lab, a=_argv: a(lab, _nl_finished(lab)),
        ["nanologic"],
    )

for _member, _bad in (
    ("tormented-mini", [("--max-steps", "-5"), ("--batch-size", "0"), ("--vocab-size", "10")]),
    ("lstm-textgen", [("--epochs", "0"), ("--batch-size", "0"), ("--vocab-size", "3")]),
    ("infinito-iit", [("--max-steps", "-5"), ("--batch-size", "0"), ("--vocab-size", "10")]),
    ("seeddelta", [("--steps", "-5"), ("--docs-per-step", "0"), ("--hidden-size", "0")]),
):

    def _bad_numbers(lab: Lab, member: str = _member, bad=tuple(_bad)) -> str:
        spec = SPECS[member]
        lines = []
        for flag, value in bad:
            run = _out(lab, f"{spec.short}-bad{flag}")
            res = lab.run(spec.train_argv(lab, run, "tiny", flag, value))
            try:
                line = expect_user_error(res)
                field_name = flag[2:].replace("-", "_")
                expect(flag in line or field_name in line, f"does not name {flag}: {line}")
            except TrialFailed as exc:
                raise TrialFailed(f"{flag} {value}: {exc}") from None
            lines.append(line)
            expect(not (run / spec.weights).exists(), f"{flag} {value}: a model was saved")
        return " / ".join(line[:70] for line in lines)

    TRIALS.append(
        Trial(
            f"{SPECS[_member].short}-bad-numbers",
            _member,
            7,
            " ".join(f"{f} {v}" for f, v in _bad) + ": each refused in one line naming the flag",
            _bad_numbers,
        )
    )


# -- kind 8: help text and first-run noise -----------------------------------------------------

_OPTION = re.compile(r"^  (-\S.*?)(?:  +(\S.*))?$")


def help_problems(text: str) -> list[str]:
    """Options in an argparse ``--help`` without a description, or taking a value without a default shown.

    An option that takes a value shows its default in its description (``default``), unless it is
    required (listed without brackets in the usage) or says what happens without it ("(default:
    ...)", "default: ...").
    """
    lines = text.splitlines()
    usage = " ".join(
        line.strip() for line in lines[: next((i for i, line in enumerate(lines) if not line.strip()), 0)]
    )
    problems = []
    i = 0
    while i < len(lines):
        match = _OPTION.match(lines[i])
        if not match:
            i += 1
            continue
        spec, desc = match.group(1), match.group(2) or ""
        j = i + 1
        while j < len(lines) and lines[j].startswith(" " * 6) and not _OPTION.match(lines[j]):
            desc += " " + lines[j].strip()
            j += 1
        i = j
        flags = [part.split()[0] for part in spec.split(", ")]
        long = max(flags, key=len)
        if long in ("-h", "--help"):
            continue
        takes_value = any(len(part.split()) > 1 for part in spec.split(", "))
        required = re.search(rf"(^|[\s(|]){re.escape(long)}( |$)", usage) and not re.search(
            rf"\[{re.escape(long)}[\] ]", usage
        )
        if not desc.strip():
            problems.append(f"{long}: no help")
        elif takes_value and not required and "default" not in desc.lower():
            problems.append(f"{long}: no default shown")
    return problems


_HELP_COMMANDS = {
    "nanologic": [
        ["train"],
        ["generate"],
        ["clean"],
        ["verify"],
        ["augment"],
        ["preprocess"],
        ["train-tokenizer"],
    ],
    "tormented-mini": [["train"]],
    "lstm-textgen": [["train"]],
    "infinito-iit": [["train"]],
    "seeddelta": [["tiny", "train"], ["tiny", "export"]],
}


@each_member()
def _help(member: str):
    spec = SPECS[member]
    commands = _HELP_COMMANDS[member]

    def check(lab: Lab) -> str:
        problems = []
        for words in commands:
            res = lab.run(lab.cli(member, *words, "--help"))
            expect_ok(res, f"{' '.join(words)} --help")
            problems += [f"{' '.join(words)} {p}" for p in help_problems(res.stdout)]
        expect(not problems, f"{len(problems)} options: " + "; ".join(problems[:6]))
        return f"{len(commands)} commands: every option described, defaults shown"

    names = ", ".join(" ".join(w) for w in commands)
    return (f"{spec.short}-help", 8, f"`{names} --help`: every option has help and shows its default", check)


@each_member()
def _noise(member: str):
    spec = SPECS[member]

    def check(lab: Lab) -> str:
        _, res = finished_run(lab, member)
        noisy = [line.strip() for line in res.output.splitlines() if NOISE.search(line)]
        expect(not noisy, f"{len(noisy)} noise lines: {noisy[0][:160] if noisy else ''}")
        return f"a CPU training printed no CUDA/TensorFlow/tip lines ({len(res.output.splitlines())} lines)"

    return (
        f"{spec.short}-cpu-noise",
        8,
        "a CPU training prints no CUDA, TensorFlow or advertising lines",
        check,
    )


@trial(
    "nanologic-no-tensorflow",
    "nanologic",
    8,
    "nanologic (data, training, formalize) never imports TensorFlow",
)
def _nl_no_tf(lab: Lab) -> str:
    run = _nl_finished(lab)
    res = lab.run(
        lab.python("-X", "importtime", "-m", "nanologic.cli", "formalize", "--checkpoint", run, "Llueve.")
    )
    expect_ok(res, "formalize")
    imported = [line for line in res.stderr.splitlines() if re.search(r"\|\s+(tensorflow|keras)\b", line)]
    expect(not imported, f"imports {imported[0].split('|')[-1].strip() if imported else ''}")
    return "formalize imports neither tensorflow nor keras"


@trial(
    "lstm-hints",
    "lstm-textgen",
    8,
    "README commands and printed hints run as written (`uv run --package lstm-textgen lstm-textgen ...`)",
)
def _lstm_hints(lab: Lab) -> str:
    _, res = finished_run(lab, "lstm-textgen")
    bare = re.compile(r"(?<![\w-])(?<!--package )lstm-textgen (train|sample|evaluate|eda|bench)\b")
    hint_lines = [
        line
        for line in res.output.splitlines()
        if bare.search(line.replace("uv run --package lstm-textgen lstm-textgen", ""))
    ]
    expect(not hint_lines, f"bare command in the output: {hint_lines[0][:140] if hint_lines else ''}")
    readme = (ROOT / "packages" / "lstm-textgen" / "README.md").read_text(encoding="utf-8")
    in_code = re.findall(r"```.*?```", readme, flags=re.S) + re.findall(r"`[^`\n]+`", readme)
    bad = [c for c in in_code if bare.search(c.replace("uv run --package lstm-textgen lstm-textgen", ""))]
    expect(not bad, f"README: {len(bad)} bare commands, e.g. {bad[0][:100] if bad else ''}")
    return "the hint and every README command use `uv run --package lstm-textgen lstm-textgen`"


# ---------------------------------------------------------------------------------------- main


def select(trials: Sequence[Trial], only: Sequence[str] | None) -> list[Trial]:
    """Trials whose name, member or ``kind<N>`` contains one of ``only`` (all when empty)."""
    if not only:
        return list(trials)
    keys = [o.lower() for o in only]
    return [
        t
        for t in trials
        if any(k in t.name.lower() or k == t.member.lower() or k == f"kind{t.kind}" for k in keys)
    ]


def run_trial(lab: Lab, t: Trial) -> Outcome:
    start = time.perf_counter()
    try:
        detail = t.check(lab) or ""
        status = "PASS"
    except TrialFailed as exc:
        status, detail = "FAIL", str(exc)
    except Exception as exc:  # a bug in the trial itself, or an unexpected file layout
        status, detail = "FAIL", f"trial error: {type(exc).__name__}: {exc}"
    return Outcome(
        t.name, t.member, t.kind, t.expected, status, detail, round(time.perf_counter() - start, 1)
    )


def table(outcomes: Sequence[Outcome], width: int = 90) -> str:
    rows = [("trial", "member", "kind", "expected", "result", "detail")]
    for o in outcomes:
        rows.append((o.name, o.member, str(o.kind), o.expected[:width], o.status, o.detail[:width]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("trials.json"), help="JSON report")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="SUBSTRING",
        default=None,
        help="run the trials whose name contains one of these (or member name, or kind<N>)",
    )
    parser.add_argument("--list", action="store_true", help="list the trials and exit")
    parser.add_argument(
        "--launcher",
        choices=("venv", "uv"),
        default="venv",
        help="venv: this environment's console scripts; uv: `uv run --package <member> ...`",
    )
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--verbose", action="store_true", help="print every command")
    args = parser.parse_args(argv)
    chosen = select(TRIALS, args.only)
    if args.list:
        for t in chosen:
            print(f"{t.name:36} {t.member:15} kind {t.kind}  {t.expected}")
        print(f"{len(chosen)} of {len(TRIALS)} trials")
        return 0
    if not chosen:
        print(f"no trial matches {args.only}", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="user-trials-"))
    work.mkdir(parents=True, exist_ok=True)
    lab = Lab(work.resolve(), launcher=args.launcher, verbose=args.verbose)
    started = dt.datetime.now(dt.UTC)
    outcomes: list[Outcome] = []
    print(f"{len(chosen)} trials in {work}", flush=True)
    try:
        for n, t in enumerate(chosen, 1):
            print(f"[{n}/{len(chosen)}] {t.name} ({t.member}, kind {t.kind}) ...", end=" ", flush=True)
            outcome = run_trial(lab, t)
            outcomes.append(outcome)
            print(f"{outcome.status} {outcome.seconds:.0f}s  {outcome.detail[:150]}", flush=True)
    finally:
        if not (args.keep or args.work):
            shutil.rmtree(work, ignore_errors=True)
    passed = sum(o.status == "PASS" for o in outcomes)
    print()
    print(table(outcomes))
    print(f"\n{passed}/{len(outcomes)} PASS")
    report = {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join(["tools/user_trials.py", *(argv if argv is not None else sys.argv[1:])]),
        "launcher": args.launcher,
        "passed": passed,
        "total": len(outcomes),
        "trials": [asdict(o) for o in outcomes],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"report: {args.out}")
    return 0 if passed == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
