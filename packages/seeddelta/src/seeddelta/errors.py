"""The package's user-facing error type."""


class SeedDeltaError(ValueError):
    """A user error (bad file, bad option, bad policy): printed as ``error: ...`` by the CLI."""
