"""Per-stage torch memory with peaks that stay right for nested stages.

torch keeps one peak counter per device. At every stage event (begin or end) the tracker reads
that peak, folds it into the running peak of every open frame — the interval since the previous
event lies inside all of them — and resets it. So a parent's peak is the max over its children
and its own time, and no stage's reset hides a peak from an enclosing stage.

The tracker owns ``torch.cuda.reset_peak_memory_stats`` for its device while it runs: code that
reads ``max_memory_allocated`` itself should read stage peaks from the monitor instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MemFrame:
    """Memory of one open (or closed) window, in bytes."""

    start: int | None = None
    end: int | None = None
    peak: int | None = None
    peak_reserved: int | None = None


class MemoryTracker:
    """Allocated/reserved memory of one CUDA device; on other devices every value is ``None``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.available = device.type == "cuda" and torch.cuda.is_available()
        self.reason: str | None = None if self.available else "no CUDA device"
        self._open: list[MemFrame] = []

    def allocated(self) -> int | None:
        """Bytes allocated by torch tensors now (cheap; safe from the sampler thread)."""
        return int(torch.cuda.memory_allocated(self.device)) if self.available else None

    def _fold(self) -> None:
        if not self.available:
            return
        peak = int(torch.cuda.max_memory_allocated(self.device))
        peak_r = int(torch.cuda.max_memory_reserved(self.device))
        for f in self._open:
            f.peak = peak if f.peak is None else max(f.peak, peak)
            f.peak_reserved = peak_r if f.peak_reserved is None else max(f.peak_reserved, peak_r)
        torch.cuda.reset_peak_memory_stats(self.device)

    def push(self) -> MemFrame:
        """Open a frame: record the allocation now as its start."""
        self._fold()
        frame = MemFrame()
        if self.available:
            frame.start = self.allocated()
            frame.peak = frame.start
            frame.peak_reserved = int(torch.cuda.memory_reserved(self.device))
        self._open.append(frame)
        return frame

    def pop(self, frame: MemFrame) -> MemFrame:
        """Close ``frame`` (must be the innermost open one): its peak and end are final."""
        if not self._open or self._open[-1] is not frame:
            raise RuntimeError("memory frames must be closed innermost first")
        self._fold()
        self._open.pop()
        if self.available:
            frame.end = self.allocated()
        return frame
