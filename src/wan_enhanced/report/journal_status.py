"""Reading a journal snapshot: is the run that wrote an ``incomplete`` report still running?"""

from __future__ import annotations

import os
import socket
from typing import Any


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def journal_state(report: dict[str, Any]) -> str | None:
    """For an ``incomplete`` report: ``running`` / ``not running`` / ``unknown (other host)``; else ``None``."""
    j = report.get("journal")
    if report.get("status") != "incomplete" or not isinstance(j, dict):
        return None
    pid = j.get("pid")
    if j.get("host") != socket.gethostname() or not isinstance(pid, int):
        return "unknown (written on another host)"
    return "running" if process_alive(pid) else "not running"
