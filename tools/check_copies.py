"""Check that code declared ``# Copied from <module.Name>`` still matches its original (issue 17).

    uv run python tools/check_copies.py [--fix] [--root DIR]

The convention is Hugging Face transformers' (``utils/check_copies.py``): a comment line directly
above a ``def`` or ``class`` (above its decorators, if any) names the original by import path,
optionally with renames applied to the original's text before comparing::

    # Copied from lm_shared.gguf.LlamaGGUFConfig.head_dim
    # Copied from seeddelta.model.RMSNorm with RMSNorm->LayerScale,eps->epsilon

Every marker under ``packages/*/src`` and ``shared/src`` is checked. The original is found without
importing anything (no torch): ``pkg.module.Name`` maps to ``packages/*/src/pkg/module.py`` or
``shared/src/pkg/module.py`` (or a package's ``__init__.py``), and ``Name`` (``Class.method`` for
a method) is looked up in that file's syntax tree. Its source, renames applied, and the copy's
source are dedented and compared as text; the marker line itself is not part of the copy.

Exit status 0 with a one-line summary when every copy matches; otherwise one
``path:line: Name differs from original`` line and a short unified diff per copy, or one
``path:line: error: ...`` line per marker that cannot be checked, and exit status 1. ``--fix``
overwrites each differing copy with its (renamed) original, at the copy's indentation.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import io
import re
import sys
import textwrap
import tokenize
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MARKER = re.compile(r"^(?P<indent>[ \t]*)# Copied from\b(?P<spec>.*)$")
SPEC = re.compile(r"^\s+(?P<target>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?:\s+with\s+(?P<renames>\S.*?))?\s*$")

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class CopyError(Exception):
    """A marker that cannot be checked: malformed, misplaced, or naming an original that is missing."""


@dataclass(frozen=True)
class Marker:
    """One ``# Copied from`` comment and the copy below it."""

    path: Path
    line: int  # 1-based line of the marker comment
    spec: str  # what follows ``# Copied from``: ``module.Name [with Old->New, ...]``


@dataclass(frozen=True)
class Mismatch:
    """A copy whose text differs from its (renamed) original."""

    marker: Marker
    original: str  # the original's import path
    name: str  # the copy's name
    start: int  # 1-based first line of the copy (its first decorator or its def/class)
    end: int  # 1-based last line of the copy
    indent: str  # the copy's indentation
    expected: str  # the renamed original, dedented
    observed: str  # the copy, dedented


@dataclass
class Result:
    """What a run found: how many markers, which copies differ, and the markers that failed."""

    markers: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def source_roots(root: Path) -> list[Path]:
    """The folders whose packages markers may name: ``shared/src`` and every ``packages/*/src``.

    Args:
        root: The workspace root.

    Returns:
        The existing source folders, shared first.
    """
    return [p for p in [root / "shared" / "src", *sorted(root.glob("packages/*/src"))] if p.is_dir()]


def parse_spec(spec: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Parse what follows ``# Copied from``: the original's import path and the renames.

    Args:
        spec: E.g. `` seeddelta.model.RMSNorm with RMSNorm->Norm, eps->epsilon``.

    Returns:
        The import path and the (old, new) pairs in the order written.

    Raises:
        CopyError: When the import path is missing or a replacement is not ``Old->New`` with a
            non-empty ``Old``.
    """
    match = SPEC.match(spec)
    if match is None:
        raise CopyError("expected '# Copied from package.module.Name [with Old->New, ...]'")
    if match["renames"] is None:
        return match["target"], ()
    pairs = []
    for item in match["renames"].split(","):
        old, arrow, new = item.strip().partition("->")
        if not arrow or not old.strip() or "->" in new:
            raise CopyError(f"replacement {item.strip()!r} is not of the form Old->New")
        pairs.append((old.strip(), new.strip()))
    return match["target"], tuple(pairs)


def apply_renames(code: str, renames: Sequence[tuple[str, str]]) -> str:
    """Replace each ``old`` with ``new`` in ``code``, one pair after another.

    Args:
        code: The original's source.
        renames: The (old, new) pairs of the marker.

    Returns:
        The renamed source.
    """
    for old, new in renames:
        code = code.replace(old, new)
    return code


def find_markers(path: Path, text: str) -> list[Marker]:
    """The ``# Copied from`` comments of one file (text in strings and docstrings does not count).

    Args:
        path: The file, for the markers' locations.
        text: Its source.

    Returns:
        The markers, top to bottom, their specs not yet parsed.
    """
    lines = text.splitlines()
    markers = []
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type != tokenize.COMMENT:
            continue
        row, col = token.start
        match = MARKER.match(lines[row - 1])
        if match is not None and col == len(match["indent"]):
            markers.append(Marker(path, row, match["spec"]))
    return markers


def _span(node: ast.AST) -> tuple[int, int]:
    """First line (its first decorator, if any) and last line of a def or class."""
    decorators = getattr(node, "decorator_list", [])
    start = min([node.lineno, *(d.lineno for d in decorators)])
    return start, node.end_lineno or node.lineno


def _parse(path: Path, text: str) -> ast.Module:
    try:
        return ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise CopyError(f"{path} does not parse: {exc.msg} (line {exc.lineno})") from None


def resolve_module(dotted: str, roots: Sequence[Path]) -> tuple[Path, list[str]]:
    """Map an import path to the file of its longest module prefix and the names left over.

    Args:
        dotted: An import path such as ``seeddelta.model.Attention.forward``.
        roots: The source folders to look in.

    Returns:
        The module's file and the object's qualified name inside it, as parts.

    Raises:
        CopyError: When no prefix of ``dotted`` is a module in ``roots`` or nothing is left over.
    """
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        for src in roots:
            base = src.joinpath(*parts[:cut])
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                if candidate.is_file():
                    return candidate, parts[cut:]
    raise CopyError(f"no module for {dotted} under packages/*/src or shared/src")


def original_source(dotted: str, roots: Sequence[Path]) -> str:
    """The dedented source of the object an import path names (decorators included).

    Args:
        dotted: The original's import path, e.g. ``lm_shared.gguf.LlamaGGUFConfig.head_dim``.
        roots: The source folders to look in.

    Returns:
        Its source text, dedented, without a trailing newline.

    Raises:
        CopyError: When the module or the object in it cannot be found.
    """
    path, names = resolve_module(dotted, roots)
    text = path.read_text(encoding="utf-8")
    body: list[ast.stmt] = _parse(path, text).body
    node: ast.AST | None = None
    for name in names:
        node = next((n for n in body if isinstance(n, _DEFS) and n.name == name), None)
        if node is None:
            raise CopyError(f"{dotted}: no def or class {name!r} in {path.name}")
        body = node.body
    assert node is not None  # resolve_module leaves at least one name
    start, end = _span(node)
    return textwrap.dedent("\n".join(text.splitlines()[start - 1 : end]))


def _copy_below(tree: ast.Module, marker: Marker) -> ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef:
    for node in ast.walk(tree):
        if isinstance(node, _DEFS) and _span(node)[0] == marker.line + 1:
            return node
    raise CopyError("'# Copied from' must sit directly above a def or class (or its decorators)")


def _display(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def check_file(path: Path, root: Path) -> Result:
    """Compare every marked copy in one file with its original.

    Args:
        path: A Python file.
        root: The workspace root (for finding originals and for the paths in messages).

    Returns:
        The file's marker count, mismatches and ``path:line: error: ...`` messages.
    """
    result = Result()
    shown = _display(path, root)
    text = path.read_text(encoding="utf-8")
    if "# Copied from" not in text:
        return result
    lines = text.splitlines()
    try:
        tree = _parse(path, text)
    except CopyError as exc:
        result.errors.append(f"{shown}:1: error: {exc}")
        return result
    markers = find_markers(path, text)
    roots = source_roots(root)
    result.markers = len(markers)
    for marker in markers:
        try:
            original, renames = parse_spec(marker.spec)
            copy = _copy_below(tree, marker)
            expected = apply_renames(original_source(original, roots), renames)
        except CopyError as exc:
            result.errors.append(f"{shown}:{marker.line}: error: {exc}")
            continue
        start, end = _span(copy)
        block = lines[start - 1 : end]
        indent = block[0][: len(block[0]) - len(block[0].lstrip())]
        observed = textwrap.dedent("\n".join(block))
        if observed != expected:
            result.mismatches.append(
                Mismatch(marker, original, copy.name, start, end, indent, expected, observed)
            )
    return result


def check_tree(root: Path = ROOT) -> Result:
    """Check every marker under ``packages/*/src`` and ``shared/src``.

    Args:
        root: The workspace root.

    Returns:
        All markers' results together.
    """
    total = Result()
    for src in source_roots(root):
        for path in sorted(src.rglob("*.py")):
            found = check_file(path, root)
            total.markers += found.markers
            total.mismatches.extend(found.mismatches)
            total.errors.extend(found.errors)
    return total


def fix_file(path: Path, root: Path) -> list[Mismatch]:
    """Overwrite the file's differing copies with their renamed originals.

    Copies are rewritten one at a time, the lowest in the file first, and the file is checked
    again after each, so that line numbers stay right and nested copies settle.

    Args:
        path: A Python file.
        root: The workspace root.

    Returns:
        The mismatches that were fixed (as found before each rewrite).
    """
    fixed: list[Mismatch] = []
    for _ in range(len(check_file(path, root).mismatches) * 2):
        mismatches = check_file(path, root).mismatches
        if not mismatches:
            break
        last = max(mismatches, key=lambda m: m.start)
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        replacement = textwrap.indent(last.expected, last.indent) + "\n"
        lines[last.start - 1 : last.end] = [replacement]
        path.write_text("".join(lines), encoding="utf-8")
        fixed.append(last)
    return fixed


def _report(mismatch: Mismatch, root: Path) -> str:
    where = f"{_display(mismatch.marker.path, root)}:{mismatch.start}"
    diff = difflib.unified_diff(
        mismatch.expected.splitlines(),
        mismatch.observed.splitlines(),
        fromfile=mismatch.original,
        tofile=where,
        n=1,
        lineterm="",
    )
    return "\n".join([f"{where}: {mismatch.name} differs from {mismatch.original}", *diff])


def main(argv: Sequence[str] | None = None) -> int:
    """Check (or with ``--fix``, repair) the declared copies; print what was found.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        0 when every copy matches (or was fixed), 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fix", action="store_true", help="overwrite differing copies with their originals")
    parser.add_argument("--root", type=Path, default=ROOT, help="workspace root (default: this repository)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.fix:
        for path in sorted({m.marker.path for m in check_tree(root).mismatches}):
            for mismatch in fix_file(path, root):
                print(
                    f"{_display(path, root)}:{mismatch.start}: fixed {mismatch.name} from {mismatch.original}"
                )
    result = check_tree(root)
    for error in result.errors:
        print(error, file=sys.stderr)
    for mismatch in result.mismatches:
        print(_report(mismatch, root))
    if result.errors or result.mismatches:
        if result.mismatches and not args.fix:
            print("run `uv run python tools/check_copies.py --fix` to copy the originals over them")
        return 1
    if result.markers == 1:
        print("check_copies: 1 declared copy matches its original")
    else:
        print(f"check_copies: {result.markers} declared copies match their originals")
    return 0


if __name__ == "__main__":
    sys.exit(main())
