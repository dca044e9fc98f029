"""`uv run --package X train` runs X's trainer, whatever member was installed or run before.

uv workspaces share one environment, so same-named console scripts overwrite each other
(uv #12891). Every member's `train` points at lm_shared.dispatch, which picks the trainer from
`uv run --package X`. This test runs the real command in alternating order.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from workspace_facts import MEMBERS, ROOT, pyproject

ORDER = [
    "nanologic",
    "seeddelta",
    "nanologic",
    "tormented-mini",
    "lstm-textgen",
    "seeddelta",
    "infinito-iit",
    "tormented-mini",
    "lstm-textgen",
    "infinito-iit",
]


def test_every_member_points_train_at_the_dispatcher():
    for dist in MEMBERS:
        scripts = pyproject(dist)["project"]["scripts"]
        assert scripts["train"] == "lm_shared.dispatch:train", dist
        group = pyproject(dist)["project"]["entry-points"]["lm_shared.train"]
        assert list(group) == [dist]


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not on PATH")
def test_uv_run_package_train_help_in_alternating_order():
    env = {k: v for k, v in os.environ.items() if k not in {"LM_PACKAGE", "VIRTUAL_ENV"}}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    for dist in ORDER:
        proc = subprocess.run(
            ["uv", "run", "--package", dist, "train", "--help"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, f"{dist}: {proc.stderr[-2000:]}"
        first_line = next(line for line in proc.stdout.splitlines() if line.strip())
        cli = MEMBERS[dist][1]
        assert dist in first_line or f"{cli} train" in first_line, (
            f"`uv run --package {dist} train --help` answered: {first_line!r}"
        )
        others = [MEMBERS[m][1] for m in MEMBERS if m != dist]
        assert not any(f"{o} train" in first_line for o in others), first_line


def test_dispatcher_without_a_package_lists_the_members():
    env = {k: v for k, v in os.environ.items() if k != "LM_PACKAGE"}
    proc = subprocess.run(
        [sys.executable, "-m", "lm_shared.dispatch", "--help"],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "no package given" in proc.stderr
    for dist in MEMBERS:
        assert dist in proc.stderr
