from __future__ import annotations

import pytest

from lm_shared import dispatch


def test_package_from_uv_cmdline():
    f = dispatch.package_from_uv_cmdline
    assert f(["/usr/bin/uv", "run", "--package", "nanologic", "train"]) == "nanologic"
    assert f(["uv", "run", "--package=seeddelta", "train", "--help"]) == "seeddelta"
    assert f(["uv", "run", "train"]) is None
    assert f(["python", "--package", "x"]) is None


def test_env_override_and_unknown_package(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(
        dispatch, "registered_trainers", lambda: {"alpha": lambda: lambda argv: calls.append(argv) or 0}
    )
    monkeypatch.setenv("LM_PACKAGE", "alpha")
    assert dispatch.train(["--x"]) == 0 and calls == [["--x"]]
    monkeypatch.setenv("LM_PACKAGE", "beta")
    assert dispatch.train([]) == 2
    assert "unknown package 'beta'" in capsys.readouterr().err


def test_the_only_installed_member_needs_no_name(monkeypatch, capsys, tmp_path):
    """`.venv/bin/train` in an environment synced for one member had said "no package given"."""
    calls = []
    one = {"alpha": lambda: lambda argv: calls.append(argv) or 0}
    monkeypatch.delenv("LM_PACKAGE", raising=False)
    monkeypatch.setattr(dispatch, "_parent_uv_package", lambda: None)
    monkeypatch.chdir(tmp_path)  # no member's pyproject.toml above it
    monkeypatch.setattr(dispatch, "registered_trainers", lambda: one)
    assert dispatch.train(["--y"]) == 0 and calls == [["--y"]]
    monkeypatch.setattr(dispatch, "registered_trainers", lambda: {**one, "beta": one["alpha"]})
    assert dispatch.train([]) == 2 and calls == [["--y"]]
    assert "no package given" in capsys.readouterr().err


def test_all_members_register_a_trainer():
    names = set(dispatch.registered_trainers())
    expected = {"nanologic", "tormented-mini", "lstm-textgen", "infinito-iit", "seeddelta"}
    if not expected <= names:
        pytest.skip(f"not every member is installed here: {sorted(names)}")
    assert expected <= names
