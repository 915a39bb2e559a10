"""One timing helper for the benchmark scripts: median and spread of repeated calls.

On a CUDA device each repeat is timed with CUDA events (GPU time between two points of the stream);
elsewhere with ``torch.utils.benchmark.Timer`` (one call per measurement, so repeats give a spread; the
Timer itself runs two untimed calls before each measurement). The
first call is timed apart — synchronized wall clock — since it pays compile, autotune and lazy
initialisation, and a benchmark must say so rather than fold it into the median.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Timing:
    """Repeated timings of one callable (seconds)."""

    median_s: float
    min_s: float
    max_s: float
    iqr_s: float | None  # interquartile range, from 4 repeats on
    first_s: float  # the first (warm-up) call, synchronized wall clock
    times_s: list[float] = field(default_factory=list)
    method: str = ""

    @property
    def spread(self) -> str:
        """``min–max`` (and IQR) in words."""
        iqr = "" if self.iqr_s is None else f", IQR {self.iqr_s:.4g} s"
        return f"{self.min_s:.4g}–{self.max_s:.4g} s over {len(self.times_s)} repeats{iqr}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"median_s": self.median_s, "min_s": self.min_s, "max_s": self.max_s, "iqr_s": self.iqr_s,
                "first_s": self.first_s, "times_s": list(self.times_s), "method": self.method}


def summarize(times: list[float], first_s: float, method: str) -> Timing:
    """Median, min, max and IQR (4+ repeats) of ``times``."""
    if not times:
        raise ValueError("no timings")
    iqr = None
    if len(times) >= 4:
        q = statistics.quantiles(times, n=4)
        iqr = q[2] - q[0]
    return Timing(statistics.median(times), min(times), max(times), iqr, first_s, list(times), method)


def time_fn(fn: Callable[[], Any], repeats: int, warmup: int = 1, device: torch.device | str | None = None) -> Timing:
    """Time ``fn``: one timed first call, ``warmup - 1`` untimed ones, then ``repeats`` measured calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1 (got {repeats})")
    dev = torch.device(device) if device is not None else (
        torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        fn()
    times: list[float] = []
    if cuda:
        for _ in range(repeats):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        return summarize(times, first, "CUDA events")
    from torch.utils.benchmark import Timer

    timer = Timer(stmt="fn()", globals={"fn": fn})
    for _ in range(repeats):
        times.append(float(timer.timeit(1).times[0]))
    return summarize(times, first, "torch.utils.benchmark.Timer")


def errors(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Max abs error and relative L2 error of ``out`` against ``ref``."""
    o, r = out.float(), ref.float()
    return {"max_abs": float((o - r).abs().max()), "rel_l2": float((o - r).norm() / r.norm())}
