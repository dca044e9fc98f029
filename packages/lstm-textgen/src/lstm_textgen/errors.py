"""The one error class for problems the user can fix (bad file, bad option, bad prompt)."""

from lm_shared.errors import UserError


class TextgenError(UserError):
    """A user-facing error: the CLI prints ``error: <message>`` and exits with status 2."""
