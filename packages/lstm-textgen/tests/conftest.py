"""Shared fixtures: tiny corpora written to tmp_path, and small model sizes so tests stay fast."""

from __future__ import annotations

from pathlib import Path

import pytest

from lstm_textgen.text import embedded_corpus


@pytest.fixture()
def corpus_file(tmp_path: Path) -> Path:
    """The embedded sonnets as a UTF-8 file with a byte-order mark (which must be tolerated)."""
    path = tmp_path / "sonnets.txt"
    path.write_bytes(b"\xef\xbb\xbf" + embedded_corpus().encode("utf-8"))
    return path


@pytest.fixture(scope="session")
def tiny_train_args() -> list[str]:
    """CLI options for a seconds-long training run (small model, short windows, few steps)."""
    return [
        "--seq-len",
        "32",
        "--lstm-units",
        "32",
        "--embedding-dim",
        "16",
        "--epochs",
        "2",
        "--steps-per-epoch",
        "3",
    ]
