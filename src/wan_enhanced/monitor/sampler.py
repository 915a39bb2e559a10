"""Background sampler: one thread reads the device counters every ``interval_s`` into a timeline.

Each ``Sample`` covers the interval ``[t0, t1]`` since the previous sample (times on the monitor's
clock, seconds since its start). Stage metrics are then computed from the timeline by the window
functions below (overlap-weighted means, energy-counter differences), so the hot path — a stage
begin/end — never calls NVML beyond one cheap read.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .backend import GpuBackend, Reading

#: stages shorter than this take their energy from power × time: the NVML energy counter
#: only updates about every 100 ms.
ENERGY_COUNTER_MIN_S = 1.0


@dataclass
class Sample:
    """Counters read at ``t1``; activity and power describe ``[t0, t1]``."""

    t0: float
    t1: float
    sm: float | None = None
    sm_occupancy: float | None = None
    tensor_util: float | None = None
    dram_util: float | None = None
    power_w: float | None = None
    energy_j: float | None = None
    nvml_used_bytes: int | None = None
    allocated_bytes: int | None = None
    rss_bytes: int | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    temperature_c: float | None = None
    power_limit_w: float | None = None
    clock_reasons: int | None = None  # clock-event reasons bitmask read at t1, taken for [t0, t1]


class Sampler:
    """Reads ``backend`` every ``interval_s`` on a daemon thread (or on ``tick()`` when driven by hand)."""

    def __init__(self, backend: GpuBackend, interval_s: float, clock: Callable[[], float],
                 allocated_fn: Callable[[], int | None] | None = None,
                 rss_fn: Callable[[], int | None] | None = None) -> None:
        self.backend = backend
        self.interval_s = max(float(interval_s), backend.min_interval_s, 0.001)
        self._clock = clock
        self._allocated_fn = allocated_fn or (lambda: None)
        self._rss_fn = rss_fn or (lambda: None)
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t_prev: float | None = None
        self.errors = 0

    def prime(self) -> None:
        """First read: primes GPM and records the counters at the start (a zero-width sample)."""
        t = self._clock()
        self._append(t, t, self._safe_read())

    def _safe_read(self) -> Reading:
        try:
            return self.backend.read()
        except Exception:  # a failed read is a gap in the timeline
            self.errors += 1
            return Reading()

    def _append(self, t0: float, t1: float, r: Reading) -> None:
        try:
            alloc = self._allocated_fn()
        except Exception:
            alloc = None
        try:
            rss = self._rss_fn()
        except Exception:
            rss = None
        s = Sample(t0, t1, _finite(r.sm), _finite(r.sm_occupancy), _finite(r.tensor_util), _finite(r.dram_util),
                   _finite(r.power_w), _finite(r.energy_j), r.nvml_used_bytes, alloc, rss, _finite(r.sm_clock_mhz),
                   _finite(r.mem_clock_mhz), _finite(r.temperature_c), _finite(r.power_limit_w), r.clock_reasons)
        with self._lock:
            self._samples.append(s)
        self._t_prev = t1

    def tick(self) -> None:
        """Take one sample now (what the thread does every interval)."""
        if self._t_prev is None:
            self.prime()
            return
        t0 = self._t_prev
        r = self._safe_read()
        self._append(t0, self._clock(), r)

    def _run(self) -> None:
        nxt = time.perf_counter() + self.interval_s
        while not self._stop.wait(max(0.0, nxt - time.perf_counter())):
            self.tick()
            nxt += self.interval_s
            now = time.perf_counter()
            if nxt < now:  # fell behind (GIL, suspended VM): skip, don't burst
                nxt = now + self.interval_s

    def start(self, thread: bool = True) -> None:
        """Prime the counters and (unless ``thread=False``) start the sampling thread."""
        self.prime()
        if thread:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="wan-enhanced-sampler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and take a final sample, so the timeline covers up to now."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._t_prev is not None:
            # GPM needs its two samples ≥ 100 ms apart: wait out the rest of that before the last one
            wait = self.backend.min_interval_s - (self._clock() - self._t_prev)
            if 0 < wait <= 1.0:
                time.sleep(wait)
            self.tick()

    def samples(self) -> list[Sample]:
        """A copy of the timeline so far."""
        with self._lock:
            return list(self._samples)


# ---------------------------------------------------------------- window functions (pure)

def _finite(v: float | None) -> float | None:
    """``None`` for missing, NaN or infinite readings (a gap, never a number)."""
    return None if v is None or not math.isfinite(v) else float(v)


def overlap_mean(samples: list[Sample], start: float, end: float, attr: str) -> tuple[float | None, float]:
    """Mean of an interval quantity over ``[start, end]``, weighted by each sample's overlap.

    Returns ``(value, covered_s)``; ``value`` is ``None`` when no sample with a value overlaps. A
    zero-length window takes the samples whose interval contains the point.
    """
    num = 0.0
    den = 0.0
    point: list[float] = []
    for s in samples:
        v = getattr(s, attr)
        if v is None or s.t1 <= s.t0:
            continue
        w = min(s.t1, end) - max(s.t0, start)
        if w > 0:
            num += w * v
            den += w
        elif end <= start and s.t0 <= start <= s.t1:
            point.append(v)
    if den > 0:
        return num / den, den
    if point:
        return sum(point) / len(point), 0.0
    return None, 0.0


def around_max(samples: list[Sample], start: float, end: float, attr: str) -> float | None:
    """Max of a point quantity over the samples read in ``[start, end]`` and the first one after it
    (whose interval covers the end) — or, for a window between two reads, the read just after it."""
    vals = []
    after: Sample | None = None
    for s in samples:
        v = getattr(s, attr)
        if v is None:
            continue
        if start <= s.t1 <= end:
            vals.append(v)
        elif s.t1 > end and (after is None or s.t1 < after.t1):
            after = s
    if after is not None:
        vals.append(getattr(after, attr))
    return max(vals) if vals else None


def _interp(pts: list[tuple[float, float]], t: float) -> float | None:
    if not pts or t < pts[0][0] or t > pts[-1][0]:
        return None
    for (ta, va), (tb, vb) in zip(pts, pts[1:], strict=False):
        if ta <= t <= tb:
            return va if tb == ta else va + (vb - va) * (t - ta) / (tb - ta)
    return pts[-1][1] if t == pts[-1][0] else None


def counter_energy(samples: list[Sample], start: float, end: float) -> float | None:
    """Energy in J over ``[start, end]`` from the cumulative NVML counter, linearly interpolated."""
    pts = [(s.t1, s.energy_j) for s in samples if s.energy_j is not None]
    a, b = _interp(pts, start), _interp(pts, end)
    if a is None or b is None or b < a:
        return None
    return b - a
