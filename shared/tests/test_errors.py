"""Every user-facing error type in the workspace is a ``lm_shared.errors.UserError``."""

from __future__ import annotations

import importlib

import pytest

from lm_shared.errors import UserError

ERROR_TYPES = [
    ("lm_shared.tokenization", "TokenizerError"),
    ("lm_shared.gguf", "GGUFError"),
    ("nanologic.data", "NanologicError"),
    ("nanologic.logic", "FormulaError"),
    ("tormented_mini.errors", "TormentedError"),
    ("infinito_iit.errors", "InfinitoError"),
    ("lstm_textgen.errors", "TextgenError"),
    ("seeddelta.errors", "SeedDeltaError"),
]


@pytest.mark.parametrize(("module", "name"), ERROR_TYPES)
def test_member_errors_are_user_errors(module: str, name: str) -> None:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        pytest.skip(f"{module} is not installed in this environment")
    assert issubclass(getattr(mod, name), UserError)


def test_options_without_help_names_undescribed_flags_of_chosen_subcommands():
    import argparse

    from lm_shared.cli_help import options_without_help

    parser = argparse.ArgumentParser(prog="x")
    parser.add_argument("--ok", help="described")
    parser.add_argument("-b", "--bare")
    sub = parser.add_subparsers()
    train = sub.add_parser("train")
    train.add_argument("--lr")
    other = sub.add_parser("other")
    other.add_argument("--skipped")
    assert options_without_help(parser) == ["--bare"]
    assert options_without_help(parser, ("train",)) == ["--bare", "train --lr"]
