"""One `train` command for the whole workspace.

uv workspaces install every member into one shared environment, so when several members declare a
console script with the same name the last one installed silently wins (uv #12891). Every member
therefore points its `train` script at :func:`train` here, which is identical whichever member
wrote it, and each member registers its real trainer in the ``lm_shared.train`` entry-point group.

Which trainer runs is decided, in order, by:
1. the ``LM_PACKAGE`` environment variable (explicit override, also used by tests);
2. the ``--package X`` option of the ``uv run`` process that started us (read from the parent
   process command line, which is what ``uv run --package X train`` leaves behind);
3. the workspace member whose directory contains the current working directory;
4. the only member installed, where there is one (`uv run --package X` syncs X alone, so its
   environment's `train` needs no name).
If none applies, the command lists the members and exits with status 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path

ENTRY_POINT_GROUP = "lm_shared.train"


def registered_trainers() -> dict[str, Callable[[], Callable[[list[str]], int | None]]]:
    """Map each installed member's distribution name to its trainer's loader.

    Returns:
        Entry-point name -> ``load()`` of the ``lm_shared.train`` entry point; calling it
        imports the member and returns its trainer, ``trainer(argv) -> exit status | None``.
    """
    return {ep.name: ep.load for ep in entry_points(group=ENTRY_POINT_GROUP)}


def package_from_uv_cmdline(cmdline: Sequence[str]) -> str | None:
    """Return the value of ``--package`` in a ``uv run`` command line, if there is one.

    Args:
        cmdline: a process's argv, e.g. ``["uv", "run", "--package", "nanologic", "train"]``;
            only one whose program is named ``uv`` (or ``uv.exe``) is read.

    Returns:
        The package name (``--package X`` or ``--package=X``), else ``None``.
    """
    args = list(cmdline)
    if not args or Path(args[0]).name not in {"uv", "uv.exe"}:
        return None
    for i, arg in enumerate(args):
        if arg == "--package" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--package="):
            return arg.split("=", 1)[1]
    return None


def _parent_uv_package() -> str | None:
    """Walk up the process tree (a shell or `python -m` may sit between) looking for `uv run`."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a declared dependency
        return None
    try:
        proc = psutil.Process().parent()
        for _ in range(4):
            if proc is None:
                break
            found = package_from_uv_cmdline(proc.cmdline())
            if found:
                return found
            proc = proc.parent()
    except (psutil.Error, OSError):
        return None
    return None


def _package_from_cwd(names: Sequence[str]) -> str | None:
    cwd = Path.cwd().resolve()
    for parent in (cwd, *cwd.parents):
        pyproject = parent / "pyproject.toml"
        if pyproject.is_file():
            for name in names:
                if f'name = "{name}"' in pyproject.read_text(encoding="utf-8"):
                    return name
    return None


def resolve_package(names: Sequence[str]) -> str | None:
    """Decide which member's trainer to run (see the module docstring for the order).

    Args:
        names: the installed members' names, matched against the ``name = "..."`` line of the
            nearest ``pyproject.toml`` above the working directory.

    Returns:
        The member's name, or ``None`` when nothing names one. ``LM_PACKAGE`` and ``uv run
        --package`` are returned as given, even when not in ``names``.
    """
    explicit = os.environ.get("LM_PACKAGE")
    if explicit:
        return explicit
    return _parent_uv_package() or _package_from_cwd(names)


def train(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point shared by every member's `train`.

    Args:
        argv: the trainer's arguments; default ``sys.argv[1:]``.

    Returns:
        The trainer's exit status (``None`` from it is 0), or 2 after listing the installed
        members on stderr when none or an unknown one was chosen.
    """
    trainers = registered_trainers()
    name = resolve_package(sorted(trainers))
    if name is None and len(trainers) == 1:
        (name,) = trainers
    if name is None or name not in trainers:
        known = ", ".join(sorted(trainers)) or "(none installed)"
        what = f"unknown package {name!r}" if name else "no package given"
        print(
            f"train: {what}. Run `uv run --package <name> train`, `<name> train`, or set "
            f"LM_PACKAGE=<name>. Installed: {known}",
            file=sys.stderr,
        )
        return 2
    trainer = trainers[name]()
    result = trainer(list(sys.argv[1:] if argv is None else argv))
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(train())
