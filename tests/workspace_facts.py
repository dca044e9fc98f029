"""Facts about the workspace that the cross-package tests share (imported, not a conftest)."""

from __future__ import annotations

import tomllib
from pathlib import Path

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
