"""Issue 17: mypy passes on lm_shared (bodies of unannotated functions included) and on every
member at the basic level, with the configuration in the root pyproject.toml (CI's jobs run the
same checks member by member)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from workspace_facts import MEMBERS, ROOT


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_mypy_passes_on_shared_and_every_member():
    sources = ["shared/src", *(f"packages/{member}/src" for member in sorted(MEMBERS))]
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", *sources], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.stdout.startswith("Success"), proc.stdout
