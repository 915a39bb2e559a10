"""Outputs that appear whole or not at all: write to a temporary name beside the target, then rename.

A kill (SIGKILL, power loss) while writing leaves at most a hidden ``.<name>.<random>.tmp<suffix>`` file
next to the target, never a truncated file at the path the user asked for. ``os.replace`` within one
directory is atomic on POSIX file systems.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def file_mode() -> int:
    """The mode a plain ``open()`` would give a new file (``0o666 & ~umask``; mkstemp's is 0600)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: set and restore
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; on success it replaces ``path``, on failure it is removed.

    ``suffix`` ends the temporary name (default: ``path``'s own suffix, so tools that pick a format by the
    extension, such as ffmpeg, still see it). The parent directory is created when missing.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + (final.suffix if suffix is None else suffix),
                               dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, file_mode())
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
