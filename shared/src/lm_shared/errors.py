"""The workspace's one user-error base class.

Every member's own error type (``NanologicError``, ``TormentedError``, ``InfinitoError``,
``TextgenError``, ``SeedDeltaError``) and the shared ``TokenizerError``/``GGUFError`` subclass
:class:`UserError`, so one guard per CLI (:func:`lm_shared.runs.guard_cli`) turns any of them
into a single ``error: ...`` line on stderr and exit status 2, with no traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: a bad file, flag, field, config or run folder.

    The message is one line that names the file (and line or field where known) and what was
    expected, e.g. ``data.jsonl:3: missing field 'output'``. Raise it (or a subclass) for
    anything a user can get wrong; let genuine bugs raise their own types so they keep their
    traceback.
    """

    exit_code: int = 2
