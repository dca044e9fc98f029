"""The CI workflow is valid (actionlint) and has one self-contained job per member."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workspace_facts import MEMBERS, ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _actionlint() -> str | None:
    candidate = Path(sys.executable).parent / "actionlint"
    return str(candidate) if candidate.exists() else shutil.which("actionlint")


def test_actionlint_accepts_the_workflows():
    exe = _actionlint()
    if exe is None:
        pytest.skip("actionlint is not installed")
    assert WORKFLOWS
    proc = subprocess.run([exe, "-no-color", *map(str, WORKFLOWS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_rejects_a_broken_workflow(tmp_path):
    exe = _actionlint()
    if exe is None:
        pytest.skip("actionlint is not installed")
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n"
    )
    assert subprocess.run([exe, str(bad)], capture_output=True).returncode != 0


def test_one_job_per_member_syncing_only_itself():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8"))
    jobs = wf["jobs"]
    for dist in [*MEMBERS, "shared"]:
        job = jobs[dist]
        runs = " ".join(step.get("run", "") for step in job["steps"])
        pkg = "lm-shared" if dist == "shared" else dist
        assert f"uv sync --package {pkg}" in runs, dist
        # issue 17: a type checker in CI, lm_shared fully and every member at the basic level
        checked = "shared/src" if dist == "shared" else f"packages/{dist}/src"
        typecheck = jobs["typecheck"] if dist == "shared" else job
        assert any("mypy" in step.get("run", "") for step in typecheck["steps"]), dist
        assert dist == "shared" or f"mypy {checked}" in runs, dist
        assert job["if"] == f"needs.changes.outputs.{dist} == 'true'"
    filters = yaml.safe_load(jobs["changes"]["steps"][1]["with"]["filters"])
    for dist in MEMBERS:
        # paths-filter flattens the nested list that the `*root` alias produces
        patterns = [p for item in filters[dist] for p in (item if isinstance(item, list) else [item])]
        assert "shared/**" in patterns and "pyproject.toml" in patterns
        assert f"packages/{dist}/**" in patterns
    aggregate = jobs["all-green"]
    assert aggregate["if"] == "always()"
    assert set(aggregate["needs"]) >= {*MEMBERS, "shared"}


def test_ci_script_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "uv run pytest" in readme
    assert script.strip().splitlines()[-1] == "uv run pytest"
