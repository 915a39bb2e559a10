"""Write decoded frames to an mp4 (H.264 through imageio-ffmpeg), whole or not at all.

The video is written under a hidden temporary name beside the target (``.<name>.<random>.tmp.mp4``:
ffmpeg picks the container from the extension) and renamed onto it (``os.replace``) when ffmpeg has
finished cleanly; on any failure, an interrupt included, the temporary file is removed, so
``--save_file`` never holds a truncated video.

ffmpeg runs with its terminal log off and its errors written to a private log (``FFREPORT``), so that a
failure is one ``OSError`` line with the real reason: the OS's error when the folder vanished or stopped
accepting files, else ffmpeg's own error line — not a broken pipe and a page of ffmpeg output.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .atomic import atomic_output
from .writable import os_reason, probe_directory

FFMPEG_LOG_LEVEL = 16  # "error": the report log holds ffmpeg's error lines only
_LOG_NOISE = re.compile(r"^(ffmpeg started on|Report written to|Command line:|Log level:)")
_LOG_PREFIX = re.compile(r"^\[[^\]]*@ 0x[0-9a-f]+\] ")  # "[out#0/mp4 @ 0x55d…] "


@contextlib.contextmanager
def _ffmpeg_report(log: Path) -> Iterator[None]:
    """ffmpeg processes started inside write their error lines to ``log`` (the ``FFREPORT`` variable)."""
    old = os.environ.get("FFREPORT")
    escaped = str(log).replace("\\", "\\\\").replace(":", "\\:")  # ":" separates FFREPORT's options
    os.environ["FFREPORT"] = f"file={escaped}:level={FFMPEG_LOG_LEVEL}"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FFREPORT", None)
        else:
            os.environ["FFREPORT"] = old


def ffmpeg_errors(log: Path) -> list[str]:
    """ffmpeg's error lines in a report ``log`` (header lines and the command line dropped)."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    out: list[str] = []
    skip_next = False
    for line in lines:
        if skip_next:  # the line after "Command line:" is the command itself
            skip_next = False
            continue
        if line.startswith("Command line:"):
            skip_next = True
            continue
        if line.strip() and not _LOG_NOISE.match(line):
            out.append(_LOG_PREFIX.sub("", line.strip()))
    return out


class VideoWriteError(OSError):
    """A video that could not be written; the message is one line naming the file and the reason."""


def _error(final: Path, why: str, cause: OSError | None = None) -> VideoWriteError:
    err = VideoWriteError(f"cannot write video {final}: {why}")
    if cause is not None:
        err.errno = cause.errno  # strerror stays unset: str(err) is the message above
    return err


def _failure(final: Path, tmp: Path, errors: list[str], exc: BaseException | None) -> VideoWriteError:
    """The error of a failed write: the folder's own error first, then ffmpeg's, then ``exc``'s first line."""
    folder = final.parent
    try:
        probe_directory(folder)
    except OSError as probe_exc:
        return _error(final, f"{folder} no longer accepts files: {os_reason(probe_exc)}", probe_exc)
    if errors:
        return _error(final, "ffmpeg: " + errors[0].replace(str(tmp), final.name))
    if exc is not None:
        return _error(final, (str(exc).strip().splitlines() or [type(exc).__name__])[0])
    return _error(final, "ffmpeg wrote nothing")


def _encode(frames: np.ndarray, tmp: Path, final: Path, fps: int, log: Path) -> None:
    """ffmpeg writes ``frames`` to ``tmp``; ``VideoWriteError`` when it fails, with or without raising.

    The writer is closed on every path (imageio leaves it open when the block fails), so ffmpeg has
    exited — and holds no file — before the temporary file is judged or removed.
    """
    import imageio.v2 as imageio

    with _ffmpeg_report(log):
        try:
            writer = imageio.get_writer(tmp, fps=fps, codec="libx264", quality=8, macro_block_size=1,
                                        ffmpeg_log_level="quiet")
            try:
                for frame in frames:
                    writer.append_data(frame)
            except BaseException:
                with contextlib.suppress(Exception):
                    writer.close()
                raise
            writer.close()
        except Exception as exc:  # noqa: BLE001 - every writer failure becomes one line
            raise _failure(final, tmp, ffmpeg_errors(log), exc) from None
    errors = ffmpeg_errors(log)
    if errors or not tmp.is_file() or tmp.stat().st_size == 0:  # ffmpeg can fail without raising
        raise _failure(final, tmp, errors, None)


def save_mp4(frames: np.ndarray, path: str | Path, fps: int = 24) -> Path:
    """Save ``frames`` (F, H, W, 3) floats in [0, 1] or uint8 as an mp4 at ``fps``; returns the path.

    Atomic: ``path`` ends up holding the complete video or is left as it was (the temporary file is
    removed on any failure, an interrupt included). A failure raises :class:`VideoWriteError` (an
    ``OSError``), one line naming ``path`` and the reason.
    """
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    final = Path(path)
    with tempfile.TemporaryDirectory(prefix="wan-ffmpeg-") as log_dir:
        try:
            with atomic_output(final) as tmp:  # removed on any failure, renamed onto ``final`` when whole
                _encode(frames, tmp, final, fps, Path(log_dir) / "ffmpeg.log")
        except VideoWriteError:
            raise
        except OSError as exc:  # the folder refused the temporary file, or the rename failed
            raise _error(final, os_reason(exc), exc) from None
    return final
