"""User-facing errors: ``main`` prints them as ``error: ...`` and exits with status 2."""

from __future__ import annotations

from lm_shared.errors import UserError
from tormented_mini.modeling_tormented import ConfigError


class TormentedError(UserError, ValueError):
    """Bad user input (file, flag, checkpoint): the message names it and what was expected."""


class DataError(TormentedError):
    """An unreadable, missing or empty corpus."""


class CheckpointError(TormentedError):
    """A checkpoint that is missing, corrupt, or of another model."""


USER_ERRORS = (TormentedError, ConfigError)
