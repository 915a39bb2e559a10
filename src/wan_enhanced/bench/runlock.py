"""One runner per run directory, and case processes that die with their runner.

- :class:`RunLock`: an exclusive ``flock`` on ``<run dir>/.runner.lock`` while a runner owns the directory; the
  kernel drops it when the runner dies (SIGKILL included), so a stale lock never blocks a resume.
- :func:`die_with_parent`: the ``preexec_fn`` of a case process — Linux ``PR_SET_PDEATHSIG`` = SIGKILL, so a
  case never outlives a killed runner and writes into the run directory later.
- :func:`live_case_process`: a case process recorded by an earlier runner that is still alive (a resume then
  refuses instead of running a second copy beside it).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
from pathlib import Path
from typing import Any

from ..errors import ConfigError

LOCK_NAME = ".runner.lock"
PR_SET_PDEATHSIG = 1


class RunLock:
    """``with RunLock(run_dir):`` — refuses (one ``ConfigError`` line naming the PID) when another runner owns it."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(f"run {self.path.parent.name}: in use by the runner with PID {owner}; wait for it to "
                              f"finish or stop it (kill {owner})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the lock
            self._fd = None


def die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the runner dies (Linux); elsewhere a no-op."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the runner's own handlers still stop its cases
        return
    if os.getppid() == 1:  # the runner died before prctl took effect
        os._exit(1)


def live_case_process(entry: dict[str, Any], run_dir: Path) -> int | None:
    """The PID of ``entry``'s case process if it is still running (its command line names the case's report)."""
    pid = entry.get("pid")
    if not isinstance(pid, int) or pid <= 0 or entry.get("status") not in ("running", "pending", "interrupted"):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    return pid if str(run_dir / str(entry.get("report") or "")) in cmdline else None
