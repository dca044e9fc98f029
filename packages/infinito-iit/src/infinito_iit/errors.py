"""The package's one user-facing error class: ``main`` prints it as ``error: ...`` and exits 2."""

from lm_shared.errors import UserError


class InfinitoError(UserError):
    """A problem with the user's input (file, flag, config, checkpoint) rather than a bug."""
