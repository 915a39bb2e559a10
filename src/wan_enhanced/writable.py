"""Can a file be written at this path? Asked of the file system itself, not of ``os.access``.

``os.access`` answers for the permission bits only: it says yes to root everywhere and to virtual
file systems (``/proc``, ``/sys``) that refuse every new file. The probe here does what the writer
will do — create a file (or, where the folder is still missing, a folder) in the nearest existing
directory — and removes it at once, so it leaves nothing behind and creates no missing folder.
Every output here is written under a temporary name and renamed (``wan_enhanced.atomic``), which
needs exactly this: the right to create a file in the target's folder.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

PROBE_PREFIX = ".wan-enhanced-probe-"


def os_reason(exc: OSError) -> str:
    """An ``OSError`` as ``[Errno N] text``, without the (temporary) file name Python appends."""
    if exc.errno is not None and exc.strerror:
        return f"[Errno {exc.errno}] {exc.strerror}"
    return str(exc) or type(exc).__name__


def probe_directory(directory: str | os.PathLike[str], kind: str = "file") -> None:
    """Create and remove a temporary ``kind`` (``"file"`` or ``"folder"``) in ``directory``; ``OSError`` if refused."""
    if kind == "folder":
        os.rmdir(tempfile.mkdtemp(prefix=PROBE_PREFIX, dir=directory))
        return
    fd, name = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=directory)
    os.close(fd)
    os.unlink(name)


def nearest_existing(path: Path) -> Path:
    """``path`` itself when it exists, else its nearest existing ancestor (``.`` for a relative path)."""
    cur = path
    while not os.path.lexists(cur):
        if cur.parent == cur:
            break
        cur = cur.parent
    return cur


def output_problem(value: str) -> str | None:
    """What stops a file being written at ``value``, as the rest of a sentence about it, or ``None``.

    E.g. ``"cannot be written (creating a file in /proc fails: [Errno 2] No such file or directory)"``.
    Refused: a directory at ``value``; an existing entry that is neither a regular file nor a symlink
    (a device, a pipe: renaming the output over it would replace it); a folder that does not accept
    new files, tried for real (``probe_directory``). A missing folder is not created: its nearest
    existing ancestor must accept a new folder.
    """
    path = Path(value)
    if path.is_dir():
        return "is a directory; give a file path"
    if os.path.lexists(path):
        mode = os.lstat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            return "cannot be written (it exists and is not a regular file)"
    parent = path.parent if str(path.parent) else Path(".")
    base = nearest_existing(parent)
    if not base.is_dir():
        return f"cannot be written ({base} is not a writable directory)"
    kind = "file" if base == parent else "folder"
    try:
        probe_directory(base, kind)
    except OSError as exc:
        return f"cannot be written (creating a {kind} in {base} fails: {os_reason(exc)})"
    return None
