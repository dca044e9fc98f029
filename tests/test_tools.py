"""Repo-level scripts stay in step with the workspace."""

from __future__ import annotations

import importlib.util

import pytest
from workspace_facts import MEMBERS, ROOT


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_all_knows_every_member_and_its_cli():
    bench_all = load("bench_all")
    assert bench_all.MEMBERS == {dist: cli for dist, (_, cli) in MEMBERS.items()}
    assert bench_all.machine()["cpu_count"] >= 1


def test_bench_all_rejects_unknown_members(capsys):
    bench_all = load("bench_all")
    with pytest.raises(SystemExit) as exc:
        bench_all.main(["--only", "nope"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
