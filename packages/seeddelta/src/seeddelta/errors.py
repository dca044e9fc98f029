"""The package's user-facing error type."""

from lm_shared.errors import UserError


class SeedDeltaError(UserError, ValueError):
    """A user error (bad file, bad option, bad policy): printed as ``error: ...`` by the CLI."""
