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
    """Options of ``parser`` (and of its subcommands named in ``only``) that ``--help`` shows
    without a description, as ``"--flag"`` or ``"subcommand --flag"``; every member's help test
    asserts this is empty."""
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
    """``--device auto|cpu|cuda`` and ``--compile``, the two flags every PyTorch ``bench`` takes
    (``tools/gpu_check.py`` passes them); resolve the device with
    :func:`lm_shared.runtime.resolve_device`."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help=device_help)
    parser.add_argument("--compile", action="store_true", help=compile_help)
