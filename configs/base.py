"""What every config section and every stemdl package share: the strict model base and the
error base.

This is the bottom layer: it imports nothing from stemdl, and everything else imports it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StemdlError(Exception):
    """Base of the errors meant for users: bad input (a config, a store, a checkpoint, a
    launch environment) or a state the user can change. The command line prints their message
    without a traceback; anything else is a bug and keeps its traceback."""


class ConfigError(StemdlError, ValueError):
    """A config file that cannot be used; the message names the file and the field."""


class UsageError(StemdlError, ValueError):
    """An argument out of its range (a command-line option, a count of workers, ranks or
    nodes); the message names it and the range."""


class StrictModel(BaseModel):
    """Base for every config section: unknown keys (typos) are errors, models are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
