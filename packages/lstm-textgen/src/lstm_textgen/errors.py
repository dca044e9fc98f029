"""The one error class for problems the user can fix (bad file, bad option, bad prompt)."""


class TextgenError(Exception):
    """A user-facing error: the CLI prints ``error: <message>`` and exits with status 2."""
