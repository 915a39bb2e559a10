"""``OneLineParser``: argparse whose bad-flag errors are one line, for every command line of the package.

Kept in its own module (no torch, no config import) so the light tools — ``format_report.py``,
``wan-enhanced bench``/``compare`` — can use it without importing the generation stack.
"""

from __future__ import annotations

import argparse

from .errors import ConfigError


class OneLineParser(argparse.ArgumentParser):
    """argparse that raises ``ConfigError`` (a ``UserError``: printed as ``error: ...``, exit 2) instead
    of printing the usage block and exiting; the caller's ``except UserError`` reports it."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Raise instead of printing usage."""
        raise ConfigError(message)
