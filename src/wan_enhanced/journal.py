"""The run's journal: the report file rewritten atomically at the end of each top-level stage.

A run killed where nothing can be written any more (SIGKILL, the OOM killer, power loss) still leaves a
readable report: status ``incomplete``, every stage that had ended complete, the open ones marked
incomplete, and ``journal`` naming the process and the last stage written. The final report replaces it.
The time the writes take is counted (``journal.seconds``) and lies in ``Total``'s ``(untracked)`` remainder.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("wan_enhanced")


class Journal:
    """Writes ``snapshot(last_stage)`` to ``path`` whenever a stage of ``depth`` ends (see the module docstring)."""

    def __init__(self, path: str, snapshot: Callable[[str, dict[str, Any]], dict[str, Any]], depth: int = 1,
                 write: Callable[[str, dict[str, Any]], Any] | None = None) -> None:
        if write is None:
            from .report.schema import write_report

            write = write_report
        self.path = path
        self.snapshot = snapshot
        self.depth = depth
        self._write = write
        self.writes = 0
        self.seconds = 0.0
        self.last_stage: str | None = None
        self.failed: str | None = None

    def info(self, final: bool) -> dict[str, Any]:
        """The report's ``journal`` object."""
        return {"pid": os.getpid(), "host": socket.gethostname(), "last_stage": self.last_stage,
                "writes": self.writes, "seconds": round(self.seconds, 4), "final": final,
                "failed": self.failed}

    def on_stage_end(self, rec: Any) -> None:
        """Monitor listener: rewrite the report after a top-level stage (never raises)."""
        if rec.depth != self.depth or self.failed is not None:
            return
        t0 = time.perf_counter()
        self.last_stage = rec.name
        try:
            self._write(self.path, self.snapshot(rec.name, self.info(final=False)))
            self.writes += 1
        except Exception as exc:  # noqa: BLE001 - the run goes on; the final report is still written
            self.failed = f"{type(exc).__name__}: {exc}"
            log.warning("journal: could not rewrite %s (%s); the final report will still be written",
                        self.path, self.failed)
        self.seconds += time.perf_counter() - t0
