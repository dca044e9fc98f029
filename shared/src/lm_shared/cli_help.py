"""One ``--help`` style for every member's commands: each option described, its default shown.

:class:`DefaultsHelpFormatter` is argparse's ``ArgumentDefaultsHelpFormatter`` that leaves alone a
help text which already speaks of its default ("default: the embedded corpus", "%(default)s"), so
no option says its default twice.
"""

from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Append ``(default: X)`` to an option's help unless the help already mentions its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if "default" in help_text.lower():
            return help_text
        return super()._get_help_string(action)


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


def add_bench_device_arguments(
    parser: argparse.ArgumentParser,
    *,
    device_help: str = "where to measure (auto: CUDA when visible)",
    compile_help: str = "torch.compile the models before timing them",
) -> None:
    """Add ``--device auto|cpu|cuda`` and ``--compile``, the two flags every PyTorch ``bench`` takes.

    ``tools/gpu_check.py`` passes them to each bench. Resolve the parsed device with
    :func:`lm_shared.runtime.resolve_device`.

    Args:
        parser: the bench's parser; gains ``args.device`` (str, default ``"auto"``) and
            ``args.compile`` (bool, default False).
        device_help: help text of ``--device``.
        compile_help: help text of ``--compile``.
    """
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help=device_help)
    parser.add_argument("--compile", action="store_true", help=compile_help)
