"""A folder's files of one kind packed into one tar file, and unpacked elsewhere without touching what is there.

Used to carry a kernel cache that torch's portable artifacts do not hold (FlashAttention-4's CuTe DSL objects)
next to those artifacts. Packing reads the files under a folder whose names end with a suffix; unpacking writes
each member whole (a temporary name, then a rename: a reader never sees half a file), skips files already present
and refuses anything that is not a plain file with a relative path inside the folder.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .atomic import atomic_output


@dataclass(frozen=True)
class BundleCount:
    """What a pack or unpack did: files written (or packed), files already there, files refused, bytes written."""

    written: int = 0
    present: int = 0
    refused: int = 0
    bytes: int = 0


def pack(folder: Path, suffix: str, dest: Path) -> BundleCount | None:
    """Pack ``folder``'s files ending with ``suffix`` (any depth) into the tar ``dest``; ``None`` when there are none."""
    files = sorted(p for p in folder.rglob(f"*{suffix}") if p.is_file() and not p.name.startswith(".")) \
        if folder.is_dir() else []
    if not files:
        return None
    with atomic_output(dest) as tmp, tarfile.open(tmp, "w") as tar:
        for p in files:
            tar.add(p, arcname=p.relative_to(folder).as_posix(), recursive=False)
    return BundleCount(written=len(files), bytes=sum(p.stat().st_size for p in files))


def _safe(name: str, suffix: str) -> bool:
    path = PurePosixPath(name)
    return (bool(name) and not path.is_absolute() and ".." not in path.parts and name.endswith(suffix)
            and not path.name.startswith("."))


def unpack(src: Path, folder: Path, suffix: str) -> BundleCount:
    """Write the tar ``src``'s plain ``suffix`` files under ``folder``, keeping every file already there."""
    written = present = refused = size = 0
    with tarfile.open(src, "r:") as tar:
        for m in tar:
            if not (m.isfile() and _safe(m.name, suffix)):
                refused += 1
                continue
            target = folder / PurePosixPath(m.name)
            if target.exists():
                present += 1
                continue
            data = tar.extractfile(m)
            if data is None:
                refused += 1
                continue
            with atomic_output(target) as tmp:
                tmp.write_bytes(data.read())
            written, size = written + 1, size + m.size
    return BundleCount(written=written, present=present, refused=refused, bytes=size)
