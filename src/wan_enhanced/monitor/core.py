"""``Monitor``: nested, CUDA-synchronized stage timing with memory, SM activity, power, energy and FLOPs.

Why this module is long (~380 lines): the stage state machine (begin, end, failure, stop closing open stages),
the edge readings and the measurement of every window share one set of records; the pure window arithmetic is
in ``measure.py``, the sampler in ``sampler.py``, the GPU state in ``gpu_state.py``.

Knows nothing of Wan nor of the report: stage names are the caller's (the pipeline's come from
``wan_enhanced.stages``; the ones below are only an example), and what it hands out are typed
measurements (``monitor.measure``) that ``wan_enhanced.report.build`` turns into the JSON report. Usage::

    mon = Monitor("cuda")            # sampler thread starts on start() / the first stage
    with mon.stage("Total"):
        with mon.stage("Denoising", comment="50 steps"):
            for i in range(n):
                mon.begin_window(f"Step_{i}")
                ...
                mon.add_flops(2 * dit_flops)        # to the innermost open stage
                mon.end_window(f"Step_{i}")
    mon.stop()
    run = mon.measure()              # RunMeasurement: StageMeasurement per stage + the whole run

Stage begin/end synchronize the monitored CUDA device, read the clock, torch's memory counters, the
process CPU time and (where the device has one) the total-energy counter — nothing else; SM
activity, power and memory seen by NVML come from the sampler's timeline when measured.
"""

from __future__ import annotations

import bisect
import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import torch

from .backend import GpuBackend, make_backend
from .catalog import match_gpu, peak_bf16_tflops
from .measure import (
    DeviceFacts,
    RunMeasurement,
    StageMeasurement,
    StageRecord,
    WindowMeasurement,
    measure_window,
)
from .memory import MemFrame, MemoryTracker
from .sampler import Sample, Sampler

#: an energy-counter read slower than this stays off the stage edges (the sampler thread reads it)
EDGE_READ_MAX_S = 200e-6


class MonitorError(RuntimeError):
    """Misuse of the monitor, e.g. ending a stage that is not open."""


class _Host:
    """Process CPU time (``time.process_time``, ~1 µs) and RSS via psutil (sampler thread only)."""

    def __init__(self) -> None:
        try:
            import psutil

            self._proc: Any = psutil.Process()
            self.reason: str | None = None
        except Exception as exc:
            self._proc = None
            self.reason = f"psutil unavailable: {exc}"

    def cpu_time(self) -> float | None:
        return time.process_time()

    def rss(self) -> int | None:
        return None if self._proc is None else int(self._proc.memory_info().rss)


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


class Monitor:
    """Per-stage performance monitor of one device (see the module docstring)."""

    def __init__(self, device: str | torch.device | None = None, sample_interval_s: float = 0.1,
                 sampler: bool = True, *, backend: GpuBackend | None = None,
                 clock: Callable[[], float] | None = None, sampler_thread: bool = True,
                 catalog: dict[str, Any] | None = None, device_name: str | None = None) -> None:
        """Create a monitor of ``device`` (default: the current CUDA device, else CPU).

        ``sample_interval_s``: sampling window of the background thread (GPM needs ≥ 0.1 s).
        ``sampler=False``: no thread and no NVML (GPU activity/power then unavailable).
        Test hooks: ``backend`` (a ``GpuBackend``), ``clock``, ``sampler_thread=False`` (drive
        ``monitor.sampler.tick()`` by hand), ``catalog`` (a loaded GPU catalog), ``device_name``
        (overrides the detected name for the catalog match).
        """
        self.device = _resolve_device(device)
        self.is_cuda = self.device.type == "cuda" and torch.cuda.is_available()
        self._clock = clock or time.perf_counter
        self.device_name: str | None = device_name or (
            torch.cuda.get_device_name(self.device) if self.is_cuda else None)
        if backend is None:
            backend = make_backend(self.device.type if self.is_cuda else "cpu", self.device.index, sampler)
        self.backend: GpuBackend = backend
        self.sampler_on = sampler
        self.memory = MemoryTracker(self.device)
        self._host = _Host()
        self.sampler = Sampler(backend, sample_interval_s, self._rel_clock,
                               allocated_fn=self.memory.allocated, rss_fn=self._host.rss)
        self._sampler_thread = sampler_thread
        self.catalog_entry = match_gpu(self.device_name, catalog) if self.device_name else None
        self.peak_tflops, self.peak_note = peak_bf16_tflops(self.device_name, catalog)
        self._t0: float | None = None
        self.started_at: str | None = None
        self.end_s: float | None = None
        self._records: list[StageRecord] = []
        self._open: list[StageRecord] = []
        self._root_mem: MemFrame | None = None
        self._cpu_start: float | None = None
        self._cpu_end: float | None = None
        self._energy_start: float | None = None
        self._energy_end: float | None = None
        self.unattributed_flops = 0.0
        self.failed_stage: str | None = None
        #: called with each stage's record when it ends normally (e.g. a journal that rewrites the report)
        self.on_stage_end: list[Callable[[StageRecord], None]] = []
        self._edges = self.energy_at_edges

    # ------------------------------------------------------------------ lifecycle
    def _rel_clock(self) -> float:
        return self._clock() - (self._t0 or 0.0)

    @property
    def started(self) -> bool:
        """Whether ``start()`` has run."""
        return self._t0 is not None

    @property
    def sample_interval_s(self) -> float:
        """The sampling window actually used (GPM needs ≥ 0.1 s)."""
        return self.sampler.interval_s

    def _sync(self) -> None:
        if self.is_cuda:
            torch.cuda.synchronize(self.device)

    def start(self) -> Monitor:
        """Start the clock and the sampler thread (idempotent; the first stage calls it)."""
        if self._t0 is not None:
            return self
        self._sync()
        self._t0 = self._clock()
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._root_mem = self.memory.push()
        self._cpu_start = self._host.cpu_time()
        self._energy_start = self._energy_now()
        # Off CUDA the thread still samples host RSS (and torch memory) for the timeline.
        self.sampler.start(thread=self._sampler_thread and self.sampler_on)
        return self

    def stop(self) -> None:
        """Close any open stage (marked incomplete), stop the sampler; idempotent."""
        if self._t0 is None or self.end_s is not None:
            return
        while self._open:
            rec = self._open[-1]
            rec.incomplete = True
            self._end(rec)
        self._sync()
        self.end_s = self._rel_clock()
        self._cpu_end = self._host.cpu_time()
        self._energy_end = self._energy_now()
        if self._root_mem is not None:
            self.memory.pop(self._root_mem)
        self.sampler.stop()
        self.backend.close()

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ stages
    def begin_window(self, name: str, comment: str = "") -> StageRecord:
        """Open a stage nested under the innermost open one; returns its (live) record."""
        if self.end_s is not None:
            raise MonitorError(f"cannot begin stage {name!r}: the monitor was stopped")
        self.start()
        parent = self._open[-1] if self._open else None
        self._sync()
        t = self._rel_clock()
        mem = self.memory.push()
        rec = StageRecord(name=name, comment=comment, index=len(self._records),
                          parent=parent.name if parent else None,
                          parent_index=parent.index if parent else None,
                          depth=len(self._open), start_s=t, mem=mem, cpu_start=self._host.cpu_time(),
                          energy_start_j=self._energy_now())
        self._records.append(rec)
        self._open.append(rec)
        return rec

    def end_window(self, name: str) -> StageRecord:
        """Close the innermost open stage, which must be ``name``; returns its record.

        Timing, memory, CPU time and the energy-counter edges are final at return; SM activity and power
        are computed from the timeline by ``measure()`` (best after ``stop()``, which takes a final sample).
        """
        if not self._open or all(r.name != name for r in self._open):
            open_names = ", ".join(r.name for r in self._open) or "none"
            raise MonitorError(f"cannot end stage {name!r}: it is not open (open stages: {open_names})")
        if self._open[-1].name != name:
            raise MonitorError(f"cannot end stage {name!r}: inner stage {self._open[-1].name!r} "
                               "is still open (end it first)")
        rec = self._end(self._open[-1])
        for listener in self.on_stage_end:
            listener(rec)
        return rec

    def _end(self, rec: StageRecord, failing: bool = False) -> StageRecord:
        try:
            self._sync()
        except Exception:
            if not failing:
                raise
        rec.end_s = self._rel_clock()
        self.memory.pop(rec.mem)
        rec.cpu_end = self._host.cpu_time()
        rec.energy_end_j = self._energy_now()
        self._open.remove(rec)
        return rec

    @contextlib.contextmanager
    def stage(self, name: str, comment: str = "") -> Iterator[StageRecord]:
        """Context manager form of ``begin_window``/``end_window``; an exception marks it failed."""
        rec = self.begin_window(name, comment)
        try:
            yield rec
        except BaseException as exc:
            rec.failed = True
            rec.error_type = type(exc).__name__
            if self.failed_stage is None:
                self.failed_stage = self._open[-1].name if self._open else name
            while self._open and self._open[-1] is not rec:
                inner = self._open[-1]
                inner.incomplete = True
                self._end(inner, failing=True)
            if rec.is_open:
                self._end(rec, failing=True)
            raise
        else:
            if rec.is_open:
                self.end_window(name)

    @property
    def open_stages(self) -> list[str]:
        """Names of the open stages, outermost first."""
        return [r.name for r in self._open]

    @property
    def records(self) -> list[StageRecord]:
        """All stage records in the order they were opened."""
        return list(self._records)

    def add_flops(self, flops: float, source: str = "analytic") -> None:
        """Attribute ``flops`` to the innermost open stage (and so to its ancestors' sums)."""
        if self._open:
            rec = self._open[-1]
            rec.own_flops += float(flops)
            rec.flops_sources.add(source)
        else:
            self.unattributed_flops += float(flops)

    # ------------------------------------------------------------------ derived metrics
    def now_s(self) -> float:
        """Seconds since start (the stop time once stopped)."""
        return self.end_s if self.end_s is not None else self._rel_clock()

    @property
    def device_facts(self) -> DeviceFacts:
        """What the device can read (and why not), for the window measurements."""
        b = self.backend
        cost = getattr(b, "energy_read_s", None)
        if self._edges:
            note = "energy-counter reads at each stage's edges"
        else:
            note = (f"energy counter read by the sampler thread and interpolated: one read costs {cost * 1e3:.1f} ms "
                    "here, too slow for the stage edges")
        return DeviceFacts(b.sm_source, b.sm_reason, b.power_reason, self._host.reason, self.sampler.interval_s,
                           getattr(b, "state_reason", "the backend reads no GPU state"), note)

    @property
    def energy_at_edges(self) -> bool:
        """Whether stage edges read the energy counter: only where a read is cheap (≤ ``EDGE_READ_MAX_S``).

        On an H200 VM one read costs ~3 ms, spent with the GPU idle between a stage's synchronize and the next
        launch (+6 % on 30 stages of 100 ms); there the sampler thread's reads (interpolated) give the energy.
        """
        cost = getattr(self.backend, "energy_read_s", 0.0)
        return cost is None or cost <= EDGE_READ_MAX_S

    def _energy_now(self) -> float | None:
        """The total-energy counter now (J), or ``None`` where the device has none or a read is too slow."""
        if self.backend.power_reason is not None or not self._edges:
            return None
        read = getattr(self.backend, "energy_j", None)
        if read is None:
            return None
        try:
            return read()
        except Exception:  # a failed read: the window falls back to the timeline
            return None

    def subtree_flops(self) -> dict[int, tuple[float, set[str]]]:
        """Per record index: (own + descendants' FLOPs, their sources)."""
        totals = {r.index: [r.own_flops, set(r.flops_sources)] for r in self._records}
        for r in sorted(self._records, key=lambda r: -r.depth):
            if r.parent_index is not None:
                tot = totals[r.parent_index]
                tot[0] += totals[r.index][0]
                tot[1] |= totals[r.index][1]
        return {k: (v[0], v[1]) for k, v in totals.items()}

    def total_flops(self) -> tuple[float, set[str]]:
        """All FLOPs added (attributed or not) and their sources."""
        srcs: set[str] = set()
        for r in self._records:
            srcs |= r.flops_sources
        if self.unattributed_flops:
            srcs.add("analytic")
        return sum(r.own_flops for r in self._records) + self.unattributed_flops, srcs

    def samples(self) -> list[Sample]:
        """The sampled timeline so far."""
        return self.sampler.samples()

    def measure_window(self, start: float, end: float, samples: list[Sample] | None = None) -> WindowMeasurement:
        """Sampled quantities over an arbitrary ``[start, end]`` (no edge readings: timeline only)."""
        return measure_window(self.sampler.samples() if samples is None else samples, start, end, self.device_facts)

    def measure_stage(self, rec: StageRecord, samples: list[Sample] | None = None,
                      flops: tuple[float, set[str]] | None = None, t1s: list[float] | None = None) -> StageMeasurement:
        """One stage's measurement (an open stage is measured up to now).

        ``t1s``: the samples' end times, when the caller has them: the window then looks only at the samples
        around it (the journal measures every stage at each top-level stage end, so this keeps it linear).
        """
        samples = self.sampler.samples() if samples is None else samples
        end = rec.end_s if rec.end_s is not None else self.now_s()
        if t1s is not None:
            lo = bisect.bisect_left(t1s, rec.start_s)
            hi = bisect.bisect_right(t1s, end)
            samples = samples[max(0, lo - 1):hi + 2]  # one on each side: interpolation and the read after
        win = measure_window(samples, rec.start_s, end, self.device_facts,
                             energy_edges=(rec.energy_start_j, rec.energy_end_j),
                             cpu_edges=(rec.cpu_start, rec.cpu_end))
        f, srcs = flops if flops is not None else self.subtree_flops()[rec.index]
        return StageMeasurement(rec, win, f, frozenset(srcs))

    def measure(self) -> RunMeasurement:
        """Everything measured so far (best after ``stop()``, which takes a final sample)."""
        samples = self.sampler.samples()
        flops = self.subtree_flops()
        t1s = [s.t1 for s in samples]
        stages = [self.measure_stage(r, samples, flops[r.index], t1s) for r in self._records]
        now = self.now_s()
        cpu1 = self._cpu_end if self.end_s is not None else self._host.cpu_time()
        e1 = self._energy_end if self.end_s is not None else self._energy_now()
        run = measure_window(samples, 0.0, now, self.device_facts, energy_edges=(self._energy_start, e1),
                             cpu_edges=(self._cpu_start, cpu1))
        total, srcs = self.total_flops()
        return RunMeasurement(
            device=str(self.device), is_cuda=self.is_cuda, started_at=self.started_at,
            device_facts=self.device_facts, sampler_errors=self.sampler.errors,
            memory_reason=None if self.memory.available else (self.memory.reason or "no CUDA device"),
            peak_tflops=self.peak_tflops, peak_note=self.peak_note, failed_stage=self.failed_stage,
            stages=stages, run=run, run_mem=self._root_mem or MemFrame(), total_flops=total,
            total_flops_sources=frozenset(srcs), samples=samples)
