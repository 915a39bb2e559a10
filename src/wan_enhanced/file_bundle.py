"""A folder's files of one kind packed into one tar file, and unpacked elsewhere without touching what is there.

Used to carry a kernel cache that torch's portable artifacts do not hold (FlashAttention-4's CuTe DSL objects)
next to those artifacts. Packing reads the plain files (not links) under a folder whose names end with a suffix.
Unpacking writes each member whole — streamed to a temporary name beside it, then hard-linked into place, which fails
rather than replace a file that appeared meanwhile — skips files already present, refuses anything that is not a
plain file with a relative path that stays inside the folder (also through links already in the folder), and stops
at a size limit. What a bundle holds is trusted as much as the cache it came from: the files are loaded as they are.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from .atomic import file_mode

#: the most a bundle may write (a kernel cache holds a few MB; a larger one is not what we packed)
MAX_BYTES = 2 * 2**30


@dataclass(frozen=True)
class BundleCount:
    """What a pack or unpack did: files written (or packed), files already there, files refused, bytes written."""

    written: int = 0
    present: int = 0
    refused: int = 0
    bytes: int = 0


class BundleError(Exception):
    """A bundle that could not be read whole; ``count`` says what was written before the failure."""

    def __init__(self, message: str, count: BundleCount) -> None:
        super().__init__(message)
        self.count = count


def pack(folder: Path, suffix: str, dest: Path) -> BundleCount | None:
    """Pack ``folder``'s plain files ending with ``suffix`` (any depth) into the tar ``dest``; ``None`` when none.

    ``dest`` appears whole or not at all (written under a temporary name, then renamed).
    """
    from .atomic import atomic_output

    files = sorted(p for p in folder.rglob(f"*{suffix}")
                   if p.is_file() and not p.is_symlink() and not p.name.startswith(".")) if folder.is_dir() else []
    if not files:
        return None
    size = 0
    with atomic_output(dest) as tmp, tarfile.open(tmp, "w") as tar:
        for p in files:
            info = tar.gettarinfo(str(p), arcname=p.relative_to(folder).as_posix())
            with open(p, "rb") as f:
                tar.addfile(info, f)
            size += info.size
    return BundleCount(written=len(files), bytes=size)


def _safe(name: str, suffix: str) -> bool:
    path = PurePosixPath(name)
    return (bool(name) and not path.is_absolute() and ".." not in path.parts and name.endswith(suffix)
            and not path.name.startswith("."))


def _inside(target: Path, folder: Path) -> bool:
    """True when ``target``'s parent, links resolved, is ``folder`` or below it."""
    try:
        return target.parent.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def _place(data: IO[bytes], target: Path) -> bool:
    """Stream ``data`` to a temporary file beside ``target`` and link it there; False if ``target`` exists by then."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(data, f)
        os.chmod(tmp, file_mode())
        try:
            os.link(tmp, target)  # never replaces: fails if the file appeared meanwhile
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


def unpack(src: Path, folder: Path, suffix: str, max_bytes: int = MAX_BYTES) -> BundleCount:
    """Write the tar ``src``'s plain ``suffix`` files under ``folder``, keeping every file already there.

    Raises :class:`BundleError` (with what was written so far) for a bundle that cannot be read whole or would
    write more than ``max_bytes``.
    """
    written = present = refused = size = 0

    def count() -> BundleCount:
        return BundleCount(written=written, present=present, refused=refused, bytes=size)

    folder.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(src, "r:") as tar:
            for m in tar:
                target = folder / PurePosixPath(m.name)
                if not (m.isfile() and _safe(m.name, suffix) and _inside(target, folder)):
                    refused += 1
                    continue
                if target.exists() or target.is_symlink():
                    present += 1
                    continue
                if size + m.size > max_bytes:
                    raise BundleError(f"{src}: more than {max_bytes} bytes", count())
                data = tar.extractfile(m)
                if data is None:
                    refused += 1
                    continue
                if _place(data, target):
                    written, size = written + 1, size + m.size
                else:
                    present += 1
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise BundleError(f"{type(exc).__name__}: {str(exc)[:160]}", count()) from exc
    return count()
