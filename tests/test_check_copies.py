"""tools/check_copies.py: code declared '# Copied from X' matches X (issue 17)."""

from __future__ import annotations

import textwrap

import pytest
from workspace_facts import ROOT, load_tool

check_copies = load_tool("check_copies")


def test_the_repository_copies_match_their_originals():
    result = check_copies.check_tree(ROOT)
    assert result.errors == [] and result.mismatches == []
    assert result.markers >= 1


ORIGINAL = '''\
import torch


class Norm(torch.nn.Module):
    """Scales by the width."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x / self.dim  # the width
'''

COPY = '''\
"""A member model; the docstring's own '# Copied from nowhere.X' is not a marker."""

import torch


# Copied from base.layers.Norm with Norm->LayerNorm, dim->width
class LayerNorm(torch.nn.Module):
    """Scales by the width."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width

    def forward(self, x):
        return x / self.width  # the width


class Outer:
    # Copied from base.layers.Norm.forward with dim->scale
    def forward(self, x):
        return x / self.scale  # the width
'''


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "shared" / "src" / "base").mkdir(parents=True)
    (tmp_path / "shared" / "src" / "base" / "layers.py").write_text(ORIGINAL)
    (tmp_path / "packages" / "member" / "src" / "member").mkdir(parents=True)
    copy = tmp_path / "packages" / "member" / "src" / "member" / "model.py"
    copy.write_text(COPY)
    return tmp_path, copy


def test_renamed_copies_match(tree, capsys):
    root, _ = tree
    assert check_copies.main(["--root", str(root)]) == 0
    assert capsys.readouterr().out == "check_copies: 2 declared copies match their originals\n"


def test_a_changed_copy_is_reported_at_its_line_and_fix_repairs_it(tree, capsys):
    root, copy = tree
    copy.write_text(COPY.replace("return x / self.width", "return x * self.width"))
    assert check_copies.main(["--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "packages/member/src/member/model.py:7: LayerNorm differs from base.layers.Norm\n" in out
    assert "-        return x / self.width  # the width" in out
    assert "+        return x * self.width  # the width" in out
    assert "model.py:20" not in out  # the method copy still matches

    assert check_copies.main(["--root", str(root), "--fix"]) == 0
    assert "model.py:7: fixed LayerNorm from base.layers.Norm" in capsys.readouterr().out
    assert copy.read_text() == COPY


def test_renames_are_honoured(tree, capsys):
    root, copy = tree
    # Without the rename the method copy no longer matches; --fix writes the original's names.
    copy.write_text(COPY.replace(".Norm.forward with dim->scale", ".Norm.forward"))
    assert check_copies.main(["--root", str(root)]) == 1
    assert "model.py:20: forward differs from base.layers.Norm.forward" in capsys.readouterr().out
    assert check_copies.main(["--root", str(root), "--fix"]) == 0
    assert "return x / self.dim  # the width" in copy.read_text().split("class Outer")[1]


def test_fix_keeps_the_copy_indentation_and_rest_of_file(tree):
    root, copy = tree
    broken = COPY.replace("return x / self.scale", "return x - self.scale").replace(
        "self.width = width", "self.width = 2 * width"
    )
    copy.write_text(broken)
    assert check_copies.main(["--root", str(root), "--fix"]) == 0
    assert copy.read_text() == COPY


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("# Copied from base.layers.Missing", "base.layers.Missing: no def or class 'Missing' in layers.py"),
        (
            "# Copied from nowhere.mod.Name",
            "no module for nowhere.mod.Name under packages/*/src or shared/src",
        ),
        ("# Copied from base.layers.Norm with Norm", "replacement 'Norm' is not of the form Old->New"),
        ("# Copied from Norm", "expected '# Copied from package.module.Name [with Old->New, ...]'"),
    ],
)
def test_a_marker_that_cannot_be_checked_is_one_line(tree, capsys, marker, message):
    root, copy = tree
    copy.write_text(COPY.replace("# Copied from base.layers.Norm with Norm->LayerNorm, dim->width", marker))
    assert check_copies.main(["--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert err == f"packages/member/src/member/model.py:6: error: {message}\n"


def test_a_marker_must_sit_directly_above_a_def_or_class(tree, capsys):
    root, copy = tree
    copy.write_text(COPY + "\n\n# Copied from base.layers.Norm\n\nVALUE = 1\n")
    assert check_copies.main(["--root", str(root)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith("error: '# Copied from' must sit directly above a def or class (or its decorators)")
    assert "\n" not in err


def test_the_original_may_be_a_decorated_method(tmp_path):
    src = tmp_path / "shared" / "src" / "base"
    src.mkdir(parents=True)
    body = textwrap.dedent(
        """\
        class Config:
            hidden: int = 4

            @property
            def half(self) -> int:
                return self.hidden // 2


        class Other:
            hidden: int = 6

            # Copied from base.conf.Config.half
            @property
            def half(self) -> int:
                return self.hidden // 2
        """
    )
    (src / "conf.py").write_text(body)
    assert check_copies.main(["--root", str(tmp_path)]) == 0
    (src / "conf.py").write_text(body[: body.rindex("//")] + "// 3\n")
    assert check_copies.main(["--root", str(tmp_path)]) == 1
