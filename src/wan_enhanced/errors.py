"""User-facing errors: each one is printed as a single line and exits with status 2."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user (flag, file, config). The CLI prints ``error: <message>``, exit 2."""

    exit_code = 2


class ConfigError(UserError):
    """A run flag or config field has a value that is not allowed."""


class WeightsError(UserError):
    """A checkpoint file or key is missing, unreadable, or does not fit the architecture."""


class ReportError(UserError):
    """A report file is missing, not JSON, or of another schema version."""
