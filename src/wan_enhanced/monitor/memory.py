"""Per-stage torch memory with peaks that stay right for nested stages.

torch keeps one peak counter per device. At every stage event (begin or end) the tracker reads
that peak, folds it into the running peak of every open frame — the interval since the previous
event lies inside all of them — and resets it. So a parent's peak is the max over its children
and its own time, and no stage's reset hides a peak from an enclosing stage.

The tracker owns ``torch.cuda.reset_peak_memory_stats`` for its device while it runs: code that
reads ``max_memory_allocated`` itself should read stage peaks from the monitor instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

#: (allocated now, allocated peak, reserved now, reserved peak) in bytes
Stats = tuple[int, int, int, int]


@dataclass
class MemFrame:
    """Memory of one open (or closed) window, in bytes."""

    start: int | None = None
    end: int | None = None
    peak: int | None = None
    peak_reserved: int | None = None


def _public_stats(device: torch.device) -> Stats:
    return (int(torch.cuda.memory_allocated(device)), int(torch.cuda.max_memory_allocated(device)),
            int(torch.cuda.memory_reserved(device)), int(torch.cuda.max_memory_reserved(device)))


def fast_stats_fn(device: torch.device) -> Callable[[], Stats]:
    """One allocator-stats call per read. ``torch.cuda.memory_allocated`` & co. each flatten the whole
    stats dict in Python (~0.1 ms); the nested dict from ``torch._C._cuda_memoryStats`` is read once."""
    raw = getattr(torch._C, "_cuda_memoryStats", None)
    index = device.index if device.index is not None else 0
    if raw is None:
        return lambda: _public_stats(device)

    def stats() -> Stats:
        try:
            s = raw(index)
            a, r = s["allocated_bytes"]["all"], s["reserved_bytes"]["all"]
            return int(a["current"]), int(a["peak"]), int(r["current"]), int(r["peak"])
        except (KeyError, TypeError):
            return _public_stats(device)

    return stats


class MemoryTracker:
    """Allocated/reserved memory of one CUDA device; on other devices every value is ``None``.

    ``stats_fn``/``reset_fn`` read and reset the allocator counters; tests replace them.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.available = device.type == "cuda" and torch.cuda.is_available()
        self.reason: str | None = None if self.available else "no CUDA device"
        self.stats_fn: Callable[[], Stats] = (fast_stats_fn(device) if self.available
                                              else lambda: _public_stats(device))
        self.reset_fn: Callable[[], None] = lambda: torch.cuda.reset_peak_memory_stats(device)
        self._open: list[MemFrame] = []

    def allocated(self) -> int | None:
        """Bytes allocated by torch tensors now (safe from the sampler thread)."""
        return self.stats_fn()[0] if self.available else None

    def _event(self) -> Stats | None:
        """Read the counters once, fold the peak since the last event into every open frame, reset."""
        if not self.available:
            return None
        stats = self.stats_fn()
        _, peak, _, peak_r = stats
        for f in self._open:
            f.peak = peak if f.peak is None else max(f.peak, peak)
            f.peak_reserved = peak_r if f.peak_reserved is None else max(f.peak_reserved, peak_r)
        self.reset_fn()
        return stats

    def push(self) -> MemFrame:
        """Open a frame: record the allocation now as its start."""
        stats = self._event()
        frame = MemFrame()
        if stats is not None:
            frame.start = frame.peak = stats[0]
            frame.peak_reserved = stats[2]
        self._open.append(frame)
        return frame

    def pop(self, frame: MemFrame) -> MemFrame:
        """Close ``frame`` (must be the innermost open one): its peak and end are final."""
        if not self._open or self._open[-1] is not frame:
            raise RuntimeError("memory frames must be closed innermost first")
        stats = self._event()
        self._open.pop()
        if stats is not None:
            frame.end = stats[0]
        return frame
