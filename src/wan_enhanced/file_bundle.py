"""A cache folder's files packed into one tar file, and unpacked elsewhere without touching what is there.

Used to carry compiler caches next to torch's portable artifacts (FlashAttention-4's CuTe DSL objects, which those
artifacts do not hold, and inductor's and Triton's own folders). Packing reads the plain files (not links) under a
folder — those whose names end with a suffix, or every cache file — and leaves out what is one machine's state:
hidden files, lock files, temporaries (``*.tmp``, Triton's ``tmp.pid_*`` folders) and Python's ``__pycache__``.
Unpacking writes each member whole — streamed to a temporary name beside it, then hard-linked into place, which fails
rather than replace a file that appeared meanwhile — skips files already present, refuses anything that is not a
plain file with a relative path that stays inside the folder (also through links already in the folder), and stops
at a size limit. What a bundle holds is trusted as much as the cache it came from: the files are loaded as they are.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from .atomic import file_mode

#: the most a bundle may write (the H200 job's caches were 5.6 MB in all; callers pass lower caps for whole folders)
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


#: file names that are one machine's state, never a cache entry
_LOCAL_ENDINGS = (".lock", ".tmp")


def wanted(name: str, suffix: str | None) -> bool:
    """Is the relative path ``name`` a cache file that travels (ending with ``suffix``; ``None``: any ending)?"""
    path = PurePosixPath(name)
    return (bool(name) and not path.is_absolute() and ".." not in path.parts
            and not any(part.startswith((".", "tmp.pid_")) or part == "__pycache__" for part in path.parts)
            and not name.endswith(_LOCAL_ENDINGS) and (suffix is None or name.endswith(suffix)))


def pack(folder: Path, suffix: str | None, dest: Path, max_bytes: int = MAX_BYTES) -> BundleCount | None:
    """Pack ``folder``'s plain cache files (any depth; ending with ``suffix`` unless it is ``None``) into the tar
    ``dest``; ``None`` when there are none.

    ``dest`` appears whole or not at all (written under a temporary name, then renamed). Raises
    :class:`BundleError` (and writes nothing) when the files come to more than ``max_bytes``.
    """
    from .atomic import atomic_output

    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()
                   and wanted(p.relative_to(folder).as_posix(), suffix)) if folder.is_dir() else []
    if not files:
        return None
    total = sum(p.stat().st_size for p in files)
    if total > max_bytes:
        raise BundleError(f"{folder}: {total} bytes, more than {max_bytes}", BundleCount())
    size = n = 0
    with atomic_output(dest) as tmp, tarfile.open(tmp, "w") as tar:
        for p in files:
            try:
                f = open(p, "rb")  # noqa: SIM115 - closed below; a file removed since the listing is skipped
            except FileNotFoundError:
                continue
            with f:  # the size read from the open file: a file replaced meanwhile is packed whole, as opened
                info = tar.gettarinfo(arcname=p.relative_to(folder).as_posix(), fileobj=f)
                tar.addfile(info, f)
            size, n = size + info.size, n + 1
    return BundleCount(written=n, bytes=size)


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


def unpack(src: Path, folder: Path, suffix: str | None, max_bytes: int = MAX_BYTES,
           rewrite: Callable[[str], Callable[[bytes], bytes] | None] | None = None) -> BundleCount:
    """Write the tar ``src``'s plain cache files (see :func:`wanted`) under ``folder``, keeping every file there.

    ``rewrite(name)`` may return a function that turns a member's bytes into what is written (e.g. a cache index
    holding absolute paths of the machine it came from); members it returns None for are written as they are.

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
                if not (m.isfile() and wanted(m.name, suffix) and _inside(target, folder)):
                    refused += 1
                    continue
                if target.exists() or target.is_symlink():
                    present += 1
                    continue
                if size + m.size > max_bytes:
                    raise BundleError(f"{src}: more than {max_bytes} bytes", count())
                data: IO[bytes] | None = tar.extractfile(m)
                if data is None:
                    refused += 1
                    continue
                change = rewrite(m.name) if rewrite is not None else None
                if change is not None:
                    data = io.BytesIO(change(data.read()))
                if _place(data, target):
                    written, size = written + 1, size + m.size
                else:
                    present += 1
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise BundleError(f"{type(exc).__name__}: {str(exc)[:160]}", count()) from exc
    return count()
