"""The package's one user-facing error class: ``main`` prints it as ``error: ...`` and exits 2.

Formula syntax errors are :class:`nanologic.logic.FormulaError`, a ``UserError`` too.
"""

from lm_shared.errors import UserError


class NanologicError(UserError):
    """A user-facing error: bad input file, bad option, missing checkpoint. Printed without traceback."""
