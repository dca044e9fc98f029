"""Facts about the workspace that the cross-package tests share (imported, not a conftest)."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]

# distribution name -> (import name, namespaced CLI name)
MEMBERS = {
    "nanologic": ("nanologic", "nanologic"),
    "tormented-mini": ("tormented_mini", "tormented-mini"),
    "lstm-textgen": ("lstm_textgen", "lstm-textgen"),
    "infinito-iit": ("infinito_iit", "infinito"),
    "seeddelta": ("seeddelta", "seeddelta"),
}


def member_dir(dist: str) -> Path:
    return ROOT / "packages" / dist


def pyproject(dist: str) -> dict:
    return tomllib.loads((member_dir(dist) / "pyproject.toml").read_text(encoding="utf-8"))


def load_tool(name: str) -> ModuleType:
    """Import ``tools/<name>.py`` once, registered under ``name`` (dataclasses look their module
    up by name)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
