"""Write decoded frames to an mp4 (H.264 through imageio-ffmpeg), whole or not at all.

The video is written under a hidden temporary name beside the target (``.<name>.<random>.tmp.mp4``:
ffmpeg picks the container from the extension) and renamed onto it (``os.replace``) when ffmpeg has
finished cleanly; on any failure, an interrupt included, the temporary file is removed, so
``--save_file`` never holds a truncated video.

ffmpeg runs with its terminal log off and its errors written to a private log (``FFREPORT``), so that a
failure is one ``OSError`` line with the real reason: the OS's error when the folder vanished or stopped
accepting files, else ffmpeg's own error line — not a broken pipe and a page of ffmpeg output.

While frames stream in (:class:`Mp4Stream`), the encoder thread and the ffmpeg process it starts run at a lower
CPU priority (``nice`` +10 on Linux, ``WAN_ENHANCED_ENCODER_NICE``): x264 on every core otherwise takes CPU time
from the thread that launches the VAE's kernels. Priority changes who waits, not what x264 computes: its thread
count comes from the number of cores, so the file is the same.
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
ENCODER_NICE_ENV = "WAN_ENHANCED_ENCODER_NICE"
ENCODER_NICE_DEFAULT = 10


def encoder_nice() -> int:
    """How much ``nice`` the streaming encoder adds to its thread and ffmpeg (``WAN_ENHANCED_ENCODER_NICE``, 0–19).

    Raises a one-line ``ConfigError`` for any other value (``config.validate`` calls it before weights load).
    """
    value = os.environ.get(ENCODER_NICE_ENV)
    if value is None:
        return ENCODER_NICE_DEFAULT
    if value.strip().isdigit() and 0 <= int(value) <= 19:
        return int(value)
    from .errors import ConfigError

    raise ConfigError(f"{ENCODER_NICE_ENV}: {value!r} is not allowed; allowed: an integer from 0 (the same priority "
                      f"as the run) to 19 (default {ENCODER_NICE_DEFAULT})")


def lower_thread_priority(increment: int) -> int:
    """Add ``increment`` to the calling thread's nice value (Linux: per thread; its child processes inherit it).

    Returns the increment applied: 0 where threads have no nice value of their own (not Linux) or the call fails.
    """
    import sys
    import threading

    if increment <= 0 or not sys.platform.startswith("linux"):
        return 0
    tid = threading.get_native_id()
    try:
        now = os.getpriority(os.PRIO_PROCESS, tid)
        target = min(19, now + increment)
        os.setpriority(os.PRIO_PROCESS, tid, target)
    except OSError:
        return 0
    return target - now


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


class Mp4Stream:
    """An mp4 written while its frames arrive: :meth:`put` hands frames to a thread that feeds ffmpeg.

    So the H.264 encoding overlaps whatever produces the frames (the VAE decoding them chunk by chunk); the
    file is the same as :func:`save_mp4` of all frames at once — same frames, same order, same encoder
    settings. :meth:`finish` waits for the encoder, checks its result and renames the hidden temporary
    file onto ``path``; :meth:`abort` (or any failure) removes it. ``VideoWriteError`` (one line) on failure.
    """

    def __init__(self, path: str | Path, fps: int = 24) -> None:
        import queue
        import threading

        self.final = Path(path)
        self.fps = fps
        self.frames_written = 0
        self.nice = encoder_nice()  # the increment asked for; ``nice_applied`` is what the thread got
        self.nice_applied: int | None = None
        self._stack = contextlib.ExitStack()
        try:
            self._log_dir = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="wan-ffmpeg-")))
            self.tmp = self._stack.enter_context(atomic_output(self.final))
            self._stack.enter_context(_ffmpeg_report(self._log_dir / "ffmpeg.log"))
        except OSError as exc:
            self._stack.close()
            raise _error(self.final, os_reason(exc), exc) from None
        except BaseException:
            self._stack.close()
            raise
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue()
        self._error: BaseException | None = None
        self._writer: object | None = None
        self._thread = threading.Thread(target=self._run, name="wan-mp4-encoder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import imageio.v2 as imageio

        try:
            self.nice_applied = lower_thread_priority(self.nice)  # before ffmpeg starts: it inherits the value
            self._writer = imageio.get_writer(self.tmp, fps=self.fps, codec="libx264", quality=8,
                                              macro_block_size=1, ffmpeg_log_level="quiet")
            while (chunk := self._queue.get()) is not None:
                for frame in chunk:
                    self._writer.append_data(frame)  # type: ignore[attr-defined]
                    self.frames_written += 1
        except BaseException as exc:  # noqa: BLE001 - raised by finish(), in the caller's thread
            self._error = exc
            while self._queue.get() is not None:  # drain: put() never blocks on a dead encoder
                pass
        finally:
            if self._writer is not None:
                with contextlib.suppress(Exception):
                    self._writer.close()  # type: ignore[attr-defined]  # ffmpeg exits: no file held open

    def put(self, frames: np.ndarray) -> None:
        """Queue frames (F, H, W, 3) uint8 for the encoder (returns at once)."""
        self._queue.put(frames if frames.dtype == np.uint8 else
                        (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8))

    def _join(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def finish(self) -> Path:
        """Wait for the encoder, then make the file whole at ``path``; returns the path."""
        try:
            self._join()
            errors = ffmpeg_errors(self._log_dir / "ffmpeg.log")
            if self._error is not None and not isinstance(self._error, Exception):
                raise self._error  # an interrupt stays an interrupt
            if self._error is not None:
                raise _failure(self.final, self.tmp, errors, self._error)
            if errors or not self.tmp.is_file() or self.tmp.stat().st_size == 0:  # ffmpeg can fail silently
                raise _failure(self.final, self.tmp, errors, None)
        except BaseException as exc:
            self._stack.__exit__(type(exc), exc, exc.__traceback__)  # removes the temporary file
            raise
        try:
            self._stack.close()  # the rename onto ``path``
        except OSError as exc:
            raise _error(self.final, os_reason(exc), exc) from None
        return self.final

    def abort(self) -> None:
        """Stop the encoder and remove the temporary file (nothing is left at ``path``)."""
        self._join()
        err = RuntimeError("aborted")
        with contextlib.suppress(Exception):
            self._stack.__exit__(RuntimeError, err, None)


def save_mp4(frames: np.ndarray, path: str | Path, fps: int = 24) -> Path:
    """Save ``frames`` (F, H, W, 3) floats in [0, 1] or uint8 as an mp4 at ``fps``; returns the path.

    Atomic: ``path`` ends up holding the complete video or is left as it was (the temporary file is
    removed on any failure, an interrupt included). A failure raises :class:`VideoWriteError` (an
    ``OSError``), one line naming ``path`` and the reason.
    """
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    stream = Mp4Stream(path, fps)
    try:
        stream.put(frames)
    except BaseException:
        stream.abort()
        raise
    return stream.finish()
