"""The check behind every member's help test: each option of a command is described.

(The help's style, each default shown once, is :class:`lm_shared.config_cli.ConfigHelpFormatter`'s.)
"""

from __future__ import annotations

import argparse


def options_without_help(parser: argparse.ArgumentParser, only: tuple[str, ...] = ()) -> list[str]:
    """List the options that ``--help`` would show without a description.

    Every member's help test asserts this is empty.

    Args:
        parser: the command's parser.
        only: subcommands to descend into (recursively); the others are not inspected.

    Returns:
        Each undocumented option by its last option string, ``"--flag"``, or
        ``"subcommand --flag"`` for one of a subcommand in ``only``; empty when all are described.
    """
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if name in only:
                    missing += [f"{name} {option}" for option in options_without_help(sub, only)]
        elif action.option_strings and not action.help:
            missing.append(action.option_strings[-1])
    return missing
