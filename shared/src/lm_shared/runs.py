"""One run-folder policy for every member: lock, finished/interrupted runs, atomic writes, signals.

The contract (the root README's table says the same per member):

- **Lock.** A training holds ``RUN/.lock`` (an OS file lock plus the holder's pid and host) for
  its whole life; a second writer is refused with the holder's pid. The OS drops the lock when its
  holder dies, so a lock left by a killed process is taken over. Under ``torchrun`` or a Lightning
  DDP launch only global rank 0 opens the folder; the other ranks never write to it.
- **Finished runs are never overwritten.** ``RUN/run.json`` records the run's status. Training
  into a finished run is refused unless ``force``; a forced re-run is built in a hidden sibling
  folder and swapped in only when it finishes, so a crash leaves the old run intact.
- **Interrupted runs are continued, not restarted.** A run that did not finish is continued with
  ``resume`` or refused with that advice. ``resume`` compares the run's saved settings with the new
  request and refuses a mismatch, naming the field.
- **Atomic writes.** :func:`atomic_write_bytes` / :func:`atomic_write_text` /
  :func:`atomic_write_json` and :func:`atomic_path` write to a temporary name in the same folder,
  fsync and rename: a reader sees the old file or the new one, never a torn one.
- **Signals.** :class:`StopSignal` turns the first SIGINT/SIGTERM into a request the loop honours
  at the next step boundary (save a resumable checkpoint, then raise :class:`TrainingInterrupted`);
  a second signal stops at once.
- **One line per user error.** :func:`guard_cli` prints a :class:`~lm_shared.errors.UserError` as
  ``error: ...`` (exit 2) and an interrupt as one line (exit 130), never a traceback.
- **Non-finite training stops.** :func:`check_finite_loss` and :func:`check_finite_parameters`
  raise :class:`NonFiniteError`; callers check parameters before saving, so no NaN model is saved.

Only the standard library and NumPy-free code here: TensorFlow-only members import it too.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import functools
import json
import math
import os
import secrets
import shutil
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm_shared.errors import UserError

RUN_STATE_FILE = "run.json"
LOCK_FILE = ".lock"
STATUS_RUNNING = "running"
STATUS_INTERRUPTED = "interrupted"
STATUS_FINISHED = "finished"
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


# ---------------------------------------------------------------------------------------- errors


class RunFolderError(UserError):
    """A run folder cannot be used as asked (locked, finished, interrupted, another member's)."""


class RunLockedError(RunFolderError):
    """Another live process holds the run folder's lock."""


class ConfigMismatchError(RunFolderError):
    """``--resume`` asked for settings that differ from the run's saved ones."""


class NonFiniteError(UserError):
    """Training produced a NaN/Inf loss or parameter; nothing non-finite is saved."""


class TrainingInterrupted(Exception):  # noqa: N818 - it is an outcome, not a fault
    """SIGINT/SIGTERM stopped training after saving a resumable checkpoint (exit status 130)."""

    exit_code = EXIT_INTERRUPTED


# --------------------------------------------------------------------------------- atomic writes


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it onto ``path``.

    For writers that want a file name (``torch.save``, ``safetensors.save_file``, Keras
    ``model.save``): the temporary name keeps ``path``'s suffix, so format checks by extension
    pass. On an exception the temporary file is removed and ``path`` is untouched.

    Args:
        path: the file to (re)place; its parent directories are created.

    Yields:
        The temporary file (already created, empty, mode from the umask) to write; the final file
        keeps that mode whatever the writer did to it (``safetensors`` makes its files 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would stick to the final file; this one follows the umask.
    while True:
        tmp = path.parent / f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    mode = stat.S_IMODE(os.stat(tmp).st_mode)
    try:
        yield tmp
        # safetensors >= 0.8.1 writes through its own 0600 temporary file (safetensors#782), so the
        # model would be unreadable to other users beside 0644 configs: give back the umask's mode.
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary name in the same folder, fsync, rename).

    Args:
        path: the file to write; its parent directories are created.
        data: the whole new content.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`).

    Args:
        path: the file to write; its parent directories are created.
        text: the whole new content.
        encoding: how ``text`` is encoded.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(
    path: str | os.PathLike[str],
    obj: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    allow_nan: bool = True,
) -> Path:
    """Write ``obj`` as UTF-8 JSON (non-ASCII kept, trailing newline) to ``path`` atomically.

    Args:
        path: the file to write; its parent directories are created.
        obj: anything ``json.dumps`` encodes.
        indent: ``json.dumps``' indent (``None``: one line).
        sort_keys: sort object keys.
        allow_nan: write NaN/Infinity (not strict JSON); False refuses them.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``obj`` holds something JSON cannot encode (nothing is written).
        ValueError: ``obj`` holds NaN/Inf and ``allow_nan`` is False (nothing is written).
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False, allow_nan=allow_nan)
    return atomic_write_text(path, text + "\n")


def read_json_file(path: str | os.PathLike[str], what: str = "JSON file") -> Any:
    """Read a JSON file, turning every way it can be unusable into a one-line user error.

    Args:
        path: the file.
        what: what the file is, for the message (e.g. ``"run state"``).

    Returns:
        The decoded JSON value.

    Raises:
        lm_shared.errors.UserError: the file is missing, unreadable, not UTF-8, malformed (with
            line and column) or nested too deeply.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}:{exc.colno}: malformed {what}: {exc.msg}") from None
    except RecursionError:
        raise UserError(f"{path}: malformed {what}: nested too deeply") from None


# ----------------------------------------------------------------------------------- process rank


_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "PMI_RANK", "OMPI_COMM_WORLD_RANK")


def is_global_rank_zero(environ: Mapping[str, str] | None = None) -> bool:
    """True unless a launcher (torchrun, Lightning DDP, SLURM, MPI) says this is not global rank 0.

    Lightning's own DDP launcher re-runs the script with ``LOCAL_RANK``/``NODE_RANK`` set;
    torchrun sets ``RANK``; SLURM sets ``SLURM_PROCID``; MPI ``PMI_RANK`` or
    ``OMPI_COMM_WORLD_RANK``. Any of them set and not ``"0"`` means a follower.

    Args:
        environ: the environment to read; default ``os.environ``.
    """
    env = os.environ if environ is None else environ
    for name in _RANK_VARIABLES:
        value = env.get(name)
        if value not in (None, "", "0"):
            return False
    return True


# ------------------------------------------------------------------------------------------ lock


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _describe_holder(info: Mapping[str, Any]) -> str:
    pid = info.get("pid", "?")
    host = info.get("host")
    started = info.get("started")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    when = f", since {started}" if started else ""
    return f"pid {pid}{where}{when}"


class RunLock:
    """An exclusive, non-blocking lock on ``folder/.lock`` that names its holder.

    On POSIX it is an ``flock`` on the lock file, released by the OS when the holder exits or is
    killed; the file also records ``{"pid", "host", "started"}`` for the refusal message. Where
    ``fcntl`` is missing (Windows) the file itself is the lock, and a lock whose pid is dead on
    this host is taken over. Usable as a context manager (acquire on entry, release on exit).

    Args:
        folder: the run folder; the lock file is ``folder/.lock``.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def holder(self) -> dict[str, Any]:
        """The recorded holder (possibly stale), or ``{}``."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def acquire(self) -> None:
        """Take the lock without waiting, and record this process as its holder.

        Raises:
            RunLockedError: another process holds it (the message names its pid, and its host
                when that is another machine), or the lock file kept being replaced under us.
            OSError: ``flock`` failed for another reason than contention.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            self._acquire_pidfile()
            return
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise RunLockedError(self._locked_message()) from None
            # The holder before us may have unlinked the file between our open and flock: then
            # we locked an orphan inode and must try again on the current file.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                self._write_holder()
                return
            os.close(fd)
        raise RunLockedError(f"{self.path.parent}: could not take the run lock {self.path}")

    def _acquire_pidfile(self) -> None:  # pragma: no cover - Windows
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                info = self.holder()
                same_host = info.get("host") in (None, socket.gethostname())
                if same_host and not _pid_alive(int(info.get("pid", -1))):
                    with contextlib.suppress(OSError):
                        self.path.unlink()
                    continue
                raise RunLockedError(self._locked_message()) from None
            self._fd = fd
            self._write_holder()
            return
        raise RunLockedError(self._locked_message())

    def _write_holder(self) -> None:
        assert self._fd is not None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        data = (json.dumps(info) + "\n").encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0) if hasattr(os, "pwrite") else os.write(self._fd, data)
        os.fsync(self._fd)

    def _locked_message(self) -> str:
        # The holder writes its pid right after taking the lock: give it a moment to appear.
        holder = self.holder()
        for _ in range(20):
            if "pid" in holder:
                break
            time.sleep(0.05)
            holder = self.holder()
        return (
            f"{self.path.parent}: another training ({_describe_holder(holder)}) is writing "
            "this run folder; wait for it to finish or choose another --out"
        )

    def release(self) -> None:
        """Remove the lock file (only if it is still ours) and drop the lock; no-op when not held."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            # Only our own file: after a staged run's swap the name may belong to someone else.
            if os.path.samestat(os.fstat(self._fd), os.stat(self.path)):
                self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# ------------------------------------------------------------------------------------ run folder


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


def _jsonable(config: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(config, default=str))


def read_run_state(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Read the folder's run state (``run.json``).

    Args:
        folder: the run folder.

    Returns:
        The state (it has a ``status`` key), or ``None`` when the folder has no ``run.json``.

    Raises:
        RunFolderError: ``run.json`` exists but is unreadable, malformed or has no ``status``.
    """
    path = Path(folder) / RUN_STATE_FILE
    if not path.exists():
        return None
    try:
        state = read_json_file(path, "run state")
    except UserError as exc:
        raise RunFolderError(f"{exc} (delete the folder or pass --force to start over)") from None
    if not isinstance(state, dict) or "status" not in state:
        raise RunFolderError(f"{path}: not a run state (expected an object with 'status')")
    return state


def require_run_of(folder: str | os.PathLike[str], package: str, *, finished: bool = True) -> dict:
    """Check ``folder`` is a run of ``package`` (and finished) before reading its artifacts.

    Folders written before run states existed (no ``run.json``) pass, so old runs stay usable.

    Args:
        folder: the run folder.
        package: the member that must have written it (its distribution name).
        finished: also require the status ``finished``.

    Returns:
        The run state, ``{}`` for a folder without ``run.json``.

    Raises:
        RunFolderError: the folder is missing, belongs to another member, is not finished (when
            required) or has an unreadable ``run.json``; the message names the folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RunFolderError(f"{folder}: no such run folder")
    state = read_run_state(folder) or {}
    owner = state.get("package")
    if owner and owner != package:
        raise RunFolderError(f"{folder}: a {owner} run folder, not a {package} one")
    if finished and state and state.get("status") != STATUS_FINISHED:
        raise RunFolderError(
            f"{folder}: the run is {state.get('status')}, not finished; continue it with --resume"
        )
    return state


@dataclass
class RunFolder:
    """An open run folder (see :func:`open_run_dir`); as a context manager, see :meth:`__exit__`.

    Attributes:
        path: where this run writes: a hidden staging sibling of ``final_path`` during a forced
            re-run, swapped in by :meth:`finish`.
        final_path: the folder the user named.
        package: the member that owns the run.
        resumed: True when continuing an interrupted run.
        is_writer: False on non-zero ranks, which must not write.
        saved_config: the config the run was started with (what ``resume`` reuses for anything
            not given).
        state: the contents of ``run.json`` as last written.
    """

    path: Path
    final_path: Path
    package: str
    resumed: bool = False
    is_writer: bool = True
    saved_config: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    _lock: RunLock | None = None
    _staged: bool = False

    # -- state ------------------------------------------------------------------------------
    def _write_state(self, **changes: Any) -> None:
        if not self.is_writer:
            return
        self.state.update(changes)
        self.state["updated"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        atomic_write_json(self.path / RUN_STATE_FILE, self.state)

    def update(self, **fields: Any) -> None:
        """Record extra fields in ``run.json`` (e.g. ``step``, ``checkpoint``)."""
        self._write_state(**fields)

    def mark_interrupted(self, **fields: Any) -> None:
        """Record that the run stopped before finishing and can be continued with ``--resume``."""
        self._write_state(status=STATUS_INTERRUPTED, **fields)

    def finish(self, **fields: Any) -> Path:
        """Mark the run finished, swap a staged re-run into place, release the lock.

        Args:
            **fields: more fields to record in ``run.json``.

        Returns:
            The final run folder (``final_path``).
        """
        self._write_state(status=STATUS_FINISHED, **fields)
        if self._staged and self.is_writer:
            _swap_into_place(self.path, self.final_path)
            self.path = self.final_path
            self._staged = False
        self.release()
        return self.final_path

    def release(self) -> None:
        """Release the run lock (the folder stays as it is); no-op when not held."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        """Leave the run resumable on any failure (status ``interrupted``) and release the lock."""
        if exc_type is not None and self.is_writer and self.state.get("status") == STATUS_RUNNING:
            with contextlib.suppress(OSError):
                self.mark_interrupted(error=f"{exc_type.__name__}: {exc}"[:300])
        self.release()

    # -- helpers ----------------------------------------------------------------------------
    def check_config(self, config: Mapping[str, Any], *, ignore: Iterable[str] = ()) -> None:
        """Refuse a ``resume`` whose settings differ from the saved ones.

        Args:
            config: the requested settings. Keys whose value is ``None`` mean "not given": they
                are not compared (callers take them from :attr:`saved_config`).
            ignore: keys (dotted for nested ones) that may change on resume, e.g. the number of
                epochs to extend a run.

        Raises:
            ConfigMismatchError: naming the first differing key with both values (see
                :func:`config_mismatch`).
        """
        mismatch = config_mismatch(self.saved_config, config, ignore=ignore)
        if mismatch is not None:
            key, old, new = mismatch
            raise ConfigMismatchError(
                f"{self.final_path}: --resume asks for {key}={json.dumps(new)}, but the run was "
                f"started with {key}={json.dumps(old)}; drop the option to continue, or start a "
                "new run (another --out, or --force)"
            )


def config_mismatch(
    saved: Mapping[str, Any], requested: Mapping[str, Any], *, ignore: Iterable[str] = ()
) -> tuple[str, Any, Any] | None:
    """Find the first requested setting that differs from the saved one.

    Both mappings are compared as JSON (tuples as lists, other values via ``str``) and flattened
    to dotted keys.

    Args:
        saved: the settings a run was started with.
        requested: the new request; ``None`` values and keys absent from ``saved`` (fields added
            since) are not compared.
        ignore: dotted keys (and everything under them) that may differ.

    Returns:
        ``(dotted key, saved value, requested value)``, or ``None`` when nothing differs.
    """
    old = _flatten(_jsonable(saved))
    new = _flatten(_jsonable(requested))
    skip = set(ignore)
    for key, value in new.items():
        if value is None or key in skip or any(key.startswith(s + ".") for s in skip):
            continue
        if key not in old:
            continue  # a field added since the run started: nothing to compare against
        if old[key] != value:
            return key, old[key], value
    return None


def _staging_path(final: Path) -> Path:
    return final.parent / f".{final.name}.new"


def _trash_path(final: Path) -> Path:
    return final.parent / f".{final.name}.old"


def _swap_into_place(staged: Path, final: Path) -> None:
    trash = _trash_path(final)
    if trash.exists():
        shutil.rmtree(trash)
    if final.exists():
        os.replace(final, trash)
    os.replace(staged, final)
    _fsync_dir(final.parent)
    shutil.rmtree(trash, ignore_errors=True)


def _recover_swap(final: Path) -> None:
    """Finish a swap that was killed between its two renames (the old run is put back)."""
    trash = _trash_path(final)
    if not final.exists() and trash.exists():
        os.replace(trash, final)
    elif trash.exists():
        shutil.rmtree(trash, ignore_errors=True)


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and all(entry.name == LOCK_FILE for entry in path.iterdir())


def open_run_dir(
    path: str | os.PathLike[str],
    *,
    package: str,
    resume: bool = False,
    force: bool = False,
    config: Mapping[str, Any] | None = None,
    resume_may_change: Iterable[str] = (),
    resume_hint: str = "--resume",
    force_hint: str = "--force",
    run_files: Iterable[str] = (),
) -> RunFolder:
    """Open ``path`` for a training of ``package`` under the run-folder policy (module docstring).

    - new or empty folder: a new run (``resume`` is refused: nothing to continue);
    - a finished run: refused unless ``force`` (then the new run is staged and swapped in by
      :meth:`RunFolder.finish`); ``resume`` says it has finished;
    - an unfinished run: refused unless ``resume`` (continue: ``config`` is checked against the
      saved one, see :meth:`RunFolder.check_config`) or ``force`` (start over, staged);
    - a folder with files but no ``run.json``: refused, unless ``resume`` (folders written
      before run states existed can be continued) or ``force`` when it holds one of
      ``run_files`` (names an older run of this member always has): ``force`` never replaces a
      folder that is not a run, e.g. a mistyped ``--out .``;
    - another member's run: refused;
    - locked by a live process: refused with its pid.

    Non-zero ranks (:func:`is_global_rank_zero`) get a read-only view: no lock, no checks, no
    writes; rank 0 enforces the policy and the launcher stops the others if it refuses.

    Args:
        path: the run folder (``--out``); created when missing.
        package: the member training into it (recorded in ``run.json``).
        resume: continue an interrupted run.
        force: replace a finished or interrupted run (staged, swapped in when it finishes).
        config: the run's settings, saved in ``run.json`` (JSON-able; others are stored as str).
        resume_may_change: dotted config keys a resume may change (see
            :meth:`RunFolder.check_config`).
        resume_hint: the resume flag as the member spells it, named in the advice.
        force_hint: the force flag as the member spells it (e.g. ``--overwrite``).
        run_files: file names an older run of this member always has (see above).

    Returns:
        The open :class:`RunFolder`, holding the lock on rank 0; use it as a context manager.

    Raises:
        RunFolderError: the policy refuses the request (see above); the message says what the
            folder holds and which flag to use.
        RunLockedError: a live process holds the folder's lock.
        ConfigMismatchError: ``resume`` with settings that differ from the saved ones.
    """
    final = Path(path)
    config = dict(config or {})
    if not is_global_rank_zero():
        state = read_run_state(final) if (final / RUN_STATE_FILE).exists() else None
        saved = dict((state or {}).get("config") or {})
        staged = _staging_path(final)
        where = staged if staged.exists() and not (final / RUN_STATE_FILE).exists() else final
        return RunFolder(
            where, final, package, resumed=resume, is_writer=False, saved_config=saved, state=state or {}
        )
    if final.exists() and not final.is_dir():
        raise RunFolderError(f"{final}: exists and is not a folder")
    _recover_swap(final)
    final.mkdir(parents=True, exist_ok=True)
    lock = RunLock(final)
    lock.acquire()
    try:
        return _open_locked(
            final, lock, package, resume, force, config, resume_may_change, resume_hint, force_hint, run_files
        )
    except BaseException:
        lock.release()
        raise


def _open_locked(
    final: Path,
    lock: RunLock,
    package: str,
    resume: bool,
    force: bool,
    config: dict[str, Any],
    resume_may_change: Iterable[str],
    resume_hint: str,
    force_hint: str,
    run_files: Iterable[str],
) -> RunFolder:
    staged = _staging_path(final)
    state = read_run_state(final)
    if state is not None and state.get("package") not in (None, package):
        raise RunFolderError(
            f"{final}: a {state['package']} run folder, not a {package} one; choose another --out"
        )
    staged_state = read_run_state(staged) if (staged / RUN_STATE_FILE).exists() else None
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")

    def new_run(where: Path, is_staged: bool) -> RunFolder:
        if is_staged and where.exists():
            shutil.rmtree(where)
        where.mkdir(parents=True, exist_ok=True)
        run = RunFolder(where, final, package, saved_config=_jsonable(config), _lock=lock, _staged=is_staged)
        run.state = {"package": package, "status": STATUS_RUNNING, "created": now, "config": run.saved_config}
        run._write_state(pid=os.getpid(), argv=sys.argv)
        return run

    def continue_run(where: Path, saved_state: dict[str, Any], is_staged: bool) -> RunFolder:
        run = RunFolder(
            where,
            final,
            package,
            resumed=True,
            saved_config=dict(saved_state.get("config") or {}),
            state=dict(saved_state),
            _lock=lock,
            _staged=is_staged,
        )
        run.check_config(config, ignore=resume_may_change)
        run._write_state(status=STATUS_RUNNING, pid=os.getpid(), resumed_at=now)
        return run

    if resume and force:
        raise RunFolderError(f"{resume_hint} and {force_hint} exclude each other")
    if resume:
        if staged_state is not None and staged_state.get("status") != STATUS_FINISHED:
            return continue_run(staged, staged_state, True)  # an interrupted forced re-run
        if state is None:
            if _is_empty_dir(final):
                raise RunFolderError(f"{final}: nothing to resume (no run there yet); drop {resume_hint}")
            # A folder from before run states: continue it, recording the request from now on.
            run = RunFolder(final, final, package, resumed=True, saved_config=_jsonable(config), _lock=lock)
            run.state = {
                "package": package,
                "status": STATUS_RUNNING,
                "created": now,
                "config": run.saved_config,
            }
            run._write_state(pid=os.getpid(), resumed_at=now)
            return run
        if state["status"] == STATUS_FINISHED:
            raise RunFolderError(
                f"{final}: the run has already finished; nothing to resume "
                f"(pass {force_hint} to train it again from scratch)"
            )
        return continue_run(final, state, False)
    if force:
        if _is_empty_dir(final):
            return new_run(final, False)
        if state is None and not any((final / name).exists() for name in run_files):
            raise RunFolderError(
                f"{final}: holds files but is not a {package} run folder; {force_hint} only "
                "replaces run folders: choose another --out"
            )
        return new_run(staged, True)
    if staged.exists():
        shutil.rmtree(staged, ignore_errors=True)  # a forced re-run that never finished
    if state is None:
        if _is_empty_dir(final):
            return new_run(final, False)
        raise RunFolderError(
            f"{final}: already holds files but no {RUN_STATE_FILE}; choose a new --out, "
            f"{resume_hint} to continue it, or {force_hint} to replace it"
        )
    if state["status"] == STATUS_FINISHED:
        raise RunFolderError(
            f"{final}: holds a finished run; choose a new --out or pass {force_hint} to replace it"
        )
    where = f" (last checkpoint at step {state['step']})" if "step" in state else ""
    raise RunFolderError(
        f"{final}: holds an interrupted run{where}; continue it with {resume_hint}, "
        f"or start over with {force_hint}"
    )


# --------------------------------------------------------------------------------------- signals


class StopSignal:
    """Turn SIGINT/SIGTERM into a stop request that a training loop honours at a step boundary.

    Use as a context manager around the loop; check :attr:`requested` after each optimizer step,
    save a resumable checkpoint, mark the run interrupted and raise :class:`TrainingInterrupted`
    (see :meth:`interrupted`). A second signal raises ``KeyboardInterrupt`` at once. Outside the
    main thread signals cannot be caught, and the manager does nothing. The previous handlers are
    restored on exit.

    Args:
        signals: the signals to catch.
        quiet: do not print the one-line notice on stderr when the first signal arrives.
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM), quiet: bool = False) -> None:
        self.signals = tuple(signals)
        self.quiet = quiet
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a signal arrived: stop at the next step boundary."""
        return self.received is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum
        if not self.quiet:
            name = signal.Signals(signum).name
            print(
                f"{name}: stopping after this step and saving a resumable checkpoint "
                "(send it again to stop at once)",
                file=sys.stderr,
                flush=True,
            )

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def interrupted(self, where: str, resume_command: str) -> TrainingInterrupted:
        """Build the exception to raise once the checkpoint is saved (one line for the user).

        Args:
            where: where training stopped, e.g. ``"at step 120"``.
            resume_command: the command that continues the run.

        Returns:
            A :class:`TrainingInterrupted` whose message names the signal, ``where`` and the
            command.
        """
        name = signal.Signals(self.received).name if self.received else "interrupt"
        return TrainingInterrupted(f"{name}: stopped {where}; continue with: {resume_command}")


# ------------------------------------------------------------------------------------ non-finite


def check_finite_loss(loss: Any, step: int, hint: str = "lower --lr or check the data") -> None:
    """Stop a diverged training: raise when the loss is NaN or Inf.

    Args:
        loss: a float or a 0-d tensor (read with one host sync).
        step: the step, named in the message.
        hint: the advice appended to the message.

    Raises:
        NonFiniteError: ``loss`` is NaN or Inf.
    """
    value = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
    if not math.isfinite(value):
        raise NonFiniteError(f"training diverged: the loss is {value} at step {step} ({hint})")


def first_non_finite(named_tensors: Iterable[tuple[str, Any]]) -> str | None:
    """Find the first floating-point tensor that holds a NaN or Inf.

    Args:
        named_tensors: ``(name, tensor)`` pairs, e.g. ``model.named_parameters()``; PyTorch
            tensors and NumPy arrays (float or complex) are checked, anything else is skipped.

    Returns:
        That tensor's name, or ``None`` when all are finite.
    """
    for name, tensor in named_tensors:
        if hasattr(tensor, "is_floating_point"):
            if tensor.is_floating_point() and not bool(tensor.detach().isfinite().all()):
                return name
        elif hasattr(tensor, "dtype") and getattr(tensor.dtype, "kind", "") in "fc":
            import numpy as np

            if not bool(np.isfinite(tensor).all()):
                return name
    return None


def check_finite_parameters(named_tensors: Iterable[tuple[str, Any]], what: str = "the model") -> None:
    """Refuse to save a diverged model; call it before saving.

    Args:
        named_tensors: ``(name, tensor)`` pairs (see :func:`first_non_finite`).
        what: the model, named in the message.

    Raises:
        NonFiniteError: naming the first tensor that holds NaN/Inf.
    """
    bad = first_non_finite(named_tensors)
    if bad is not None:
        raise NonFiniteError(
            f"training diverged: parameter {bad!r} of {what} holds NaN/Inf; not saved "
            "(lower --lr or check the data)"
        )


# ------------------------------------------------------------------------------------------- CLI


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_guarded(action: Callable[[], int | None]) -> int:
    """Run a CLI action and turn its expected failures into one line on stderr and an exit status.

    Args:
        action: the command's body; returns its exit status (``None`` = 0).

    Returns:
        The action's status; for a :class:`~lm_shared.errors.UserError` its ``exit_code``
        (2) after ``error: <first line>``; 130 after one line for :class:`TrainingInterrupted`
        or ``KeyboardInterrupt``; 0 when stdout's reader went away (``cmd | head``). Any other
        exception propagates with its traceback.
    """
    try:
        return int(action() or 0)
    except UserError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return int(getattr(exc, "exit_code", EXIT_USER_ERROR))
    except TrainingInterrupted as exc:
        print(_one_line(exc), file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `cmd | head`: not an error
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps interpreter exit quiet
        return 0


def guard_cli(main: Callable[..., int | None]) -> Callable[..., int]:
    """Decorate a CLI's ``main(argv) -> int | None`` to run under :func:`run_guarded`.

    Args:
        main: the entry point.

    Returns:
        A wrapper with ``main``'s signature that returns the exit status (int).
    """

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        return run_guarded(lambda: main(*args, **kwargs))

    return wrapper
