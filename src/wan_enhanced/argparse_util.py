"""``OneLineParser`` and ``guarded``: the one error boundary of every command line of the package.

Kept in its own module (no torch, no config import) so the light tools — ``format_report.py``,
``wan-enhanced bench``/``compare`` — can use it without importing the generation stack.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .errors import ConfigError, UserError


class OneLineParser(argparse.ArgumentParser):
    """argparse that raises ``ConfigError`` (a ``UserError``: printed as ``error: ...``, exit 2) instead
    of printing the usage block and exiting; the caller's ``except UserError`` reports it."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Raise instead of printing usage."""
        raise ConfigError(message)


def error_line(exc: BaseException) -> str:
    """``error: <message>`` on one line."""
    return "error: " + " ".join(str(exc).split("\n")).strip()


def guarded(fn: Callable[[], int], *, interrupted: str | None = None) -> int:
    """Run ``fn`` and return its exit code; a ``UserError`` prints one ``error: …`` line and returns 2.

    With ``interrupted``, Ctrl-C prints that line and returns 130 (else it propagates).
    ``--help`` (argparse's ``SystemExit``) returns its code.
    """
    try:
        return fn()
    except UserError as exc:
        print(error_line(exc), file=sys.stderr, flush=True)
        return exc.exit_code
    except SystemExit as exc:  # argparse --help / --version
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        raise
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        print(interrupted, file=sys.stderr, flush=True)
        return 130
