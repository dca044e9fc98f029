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
