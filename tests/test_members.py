"""Every member has the same shape: README, tests, entry points, typed package."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest
from workspace_facts import MEMBERS, ROOT, member_dir, pyproject


@pytest.mark.parametrize("dist", sorted(MEMBERS))
def test_member_layout(dist):
    import_name, cli = MEMBERS[dist]
    base = member_dir(dist)
    readme = base / "README.md"
    assert readme.is_file() and len(readme.read_text(encoding="utf-8").split()) > 50, "README too thin"
    assert (base / "src" / import_name / "__init__.py").is_file()
    assert (base / "src" / import_name / "py.typed").is_file()
    assert list((base / "tests").glob("test_*.py")), "no tests"
    project = pyproject(dist)["project"]
    assert project["name"] == dist
    assert project["scripts"][cli] == f"{import_name}.cli:main"
    assert project["requires-python"] == ">=3.11"


def test_shared_package_layout():
    assert (ROOT / "shared" / "README.md").is_file()
    assert (ROOT / "shared" / "src" / "lm_shared" / "py.typed").is_file()


def _modules(import_name: str) -> list[str]:
    package = importlib.import_module(import_name)
    names = [import_name]
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{import_name}."):
        names.append(info.name)
    return names


ALL_MODULES = [m for imp in ["lm_shared"] + [v[0] for v in MEMBERS.values()] for m in _modules(imp)]


@pytest.mark.parametrize("module", ALL_MODULES)
def test_every_module_imports(module):
    importlib.import_module(module)


def test_no_member_imports_another_member():
    for dist in MEMBERS:
        others = [v[0] for d, v in MEMBERS.items() if d != dist]
        pattern = re.compile(rf"^\s*(from|import)\s+({'|'.join(others)})\b", re.MULTILINE)
        for path in (member_dir(dist) / "src").rglob("*.py"):
            match = pattern.search(path.read_text(encoding="utf-8"))
            assert match is None, f"{path} imports another member: {match.group(0).strip()}"


def _imported_modules(path, package: str) -> set[str]:
    """Absolute names of the modules a source file imports (relative imports resolved)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = f"{package}.{base}" if base else package
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("dist", sorted(MEMBERS))
def test_no_module_imports_its_own_cli(dist):
    """The CLI sits on top: a module that imports it back makes an import circle (issue 17)."""
    import_name = MEMBERS[dist][0]
    src = member_dir(dist) / "src" / import_name
    cli_module = f"{import_name}.cli"
    offenders = [
        path.name
        for path in src.rglob("*.py")
        if path.name not in ("cli.py", "__main__.py") and cli_module in _imported_modules(path, import_name)
    ]
    assert not offenders, f"{dist}: {offenders} import {cli_module}"


def test_cli_import_check_sees_relative_and_absolute_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from . import cli\nfrom pkg.cli import main\n", encoding="utf-8")
    assert "pkg.cli" in _imported_modules(module, "pkg")
    module.write_text("from pkg.data import cli_options\n", encoding="utf-8")
    assert "pkg.cli" not in _imported_modules(module, "pkg")


@pytest.mark.parametrize("dist", sorted(MEMBERS))
def test_readme_names_the_original_project_first(dist):
    """Issue 17: each README names the project it rebuilds in one line near its title."""
    head = (member_dir(dist) / "README.md").read_text(encoding="utf-8").splitlines()[:4]
    line = next((text for text in head if text.startswith("Original project: ")), None)
    assert line is not None, f"{dist}: no 'Original project:' line under the title"
    assert "https://github.com/" in line or "no public repository" in line, line
