"""``Monitor``: nested, CUDA-synchronized stage timing with memory, SM activity, power and FLOPs.

Knows nothing of Wan: stage names are the caller's (the pipeline's come from
``wan_enhanced.stages``; the ones below are only an example). Usage::

    mon = Monitor("cuda")            # sampler thread starts on start() / the first stage
    with mon.stage("Total"):
        with mon.stage("Denoising", comment="50 steps"):
            for i in range(n):
                mon.begin_window(f"Step_{i}")
                ...
                mon.add_flops(2 * dit_flops)        # to the innermost open stage
                mon.end_window(f"Step_{i}")
    mon.stop()
    stages = mon.stage_dicts()       # schema stage objects (docs/report-schema.md)

Stage begin/end synchronize the monitored CUDA device, read the clock, torch's memory counters and
the process CPU time/RSS, and (at end) NVML's used memory — nothing else; SM activity, power and
energy come from the sampler's timeline when the dicts are built.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import torch

from .backend import NVML_UTIL_NOTE, GpuBackend, make_backend
from .catalog import match_gpu, peak_bf16_tflops
from .flops import mfu
from .memory import MemFrame, MemoryTracker
from .metrics import Metric, metric, sig, unavailable
from .sampler import ENERGY_COUNTER_MIN_S, Sample, Sampler, around_max, counter_energy, overlap_mean

GIB = float(1 << 30)


class MonitorError(RuntimeError):
    """Misuse of the monitor, e.g. ending a stage that is not open."""


def _gib(b: int | float | None) -> float | None:
    return None if b is None else round(b / GIB, 4)


@dataclass
class StageRecord:
    """One stage window. Times are seconds since the monitor started."""

    name: str
    comment: str
    index: int
    parent: str | None
    parent_index: int | None
    depth: int
    start_s: float
    end_s: float | None = None
    mem: MemFrame = field(default_factory=MemFrame)
    cpu_start: float | None = None
    cpu_end: float | None = None
    own_flops: float = 0.0
    flops_sources: set[str] = field(default_factory=set)
    failed: bool = False
    incomplete: bool = False
    error_type: str | None = None

    @property
    def duration_s(self) -> float | None:
        """Wall time of the window (``None`` while open)."""
        return None if self.end_s is None else self.end_s - self.start_s

    @property
    def is_open(self) -> bool:
        """Whether the window has not ended yet."""
        return self.end_s is None


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
        self.unattributed_flops = 0.0
        self.failed_stage: str | None = None

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
                          depth=len(self._open), start_s=t, mem=mem, cpu_start=self._host.cpu_time())
        self._records.append(rec)
        self._open.append(rec)
        return rec

    def end_window(self, name: str) -> StageRecord:
        """Close the innermost open stage, which must be ``name``; returns its record.

        Timing and memory are final at return; SM/power/energy are computed from the timeline when
        ``stage_dicts()`` is called (best after ``stop()``, which takes a final sample).
        """
        if not self._open or all(r.name != name for r in self._open):
            open_names = ", ".join(r.name for r in self._open) or "none"
            raise MonitorError(f"cannot end stage {name!r}: it is not open (open stages: {open_names})")
        if self._open[-1].name != name:
            raise MonitorError(f"cannot end stage {name!r}: inner stage {self._open[-1].name!r} "
                               "is still open (end it first)")
        return self._end(self._open[-1])

    def _end(self, rec: StageRecord, failing: bool = False) -> StageRecord:
        try:
            self._sync()
        except Exception:
            if not failing:
                raise
        rec.end_s = self._rel_clock()
        self.memory.pop(rec.mem)
        rec.cpu_end = self._host.cpu_time()
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

    def _no_gpu_reason(self) -> str:
        return self.backend.sm_reason or "no CUDA device"

    def window_metrics(self, start: float, end: float, samples: list[Sample] | None = None) -> dict[str, Any]:
        """SM/occupancy/tensor/DRAM activity, compute load, power and energy over ``[start, end]``."""
        samples = self.sampler.samples() if samples is None else samples
        dur = max(0.0, end - start)
        interval = self.sampler.interval_s
        short = dur < interval
        out: dict[str, Any] = {"short_window": short}
        src = self.backend.sm_source
        if src == "unavailable":
            reason = self._no_gpu_reason()
            for k in ("sm", "sm_occupancy", "tensor_util", "dram_util"):
                out[k] = unavailable("%", reason)
            out["compute_load"] = unavailable("%·s", f"SM activity unavailable: {reason}")
        else:
            short_note = (f"stage shorter than the {interval:g} s sampling window: value of the "
                          "overlapping sample(s), which extend beyond the stage") if short else None
            base_note = NVML_UTIL_NOTE if src == "nvml_util" else None
            note = "; ".join(n for n in (base_note, short_note) if n) or None
            sm, covered = overlap_mean(samples, start, end, "sm")
            if sm is None:
                why = (f"stage shorter than the {interval:g} s sampling window and no sample overlaps it"
                       if short else "no SM sample overlaps this window")
                out["sm"] = unavailable("%", why)
                out["compute_load"] = unavailable("%·s", f"SM activity unavailable: {why}")
            else:
                if not short and dur > 0 and covered < 0.9 * dur:
                    note = "; ".join(n for n in (note, f"samples cover {100 * covered / dur:.0f}% of it") if n)
                out["sm"] = metric(round(sm, 2), "%", src, note)
                cl_note = "duration × utilization.gpu (not SM activity)" if src == "nvml_util" else None
                if short:
                    cl_note = "; ".join(n for n in (cl_note, "short window") if n)
                out["compute_load"] = metric(sig(dur * sm), "%·s", "computed", cl_note)
            for k in ("sm_occupancy", "tensor_util", "dram_util"):
                if src != "gpm":
                    out[k] = unavailable("%", "needs GPM (Hopper or newer); " + (self.backend.sm_reason or ""))
                    continue
                v, _ = overlap_mean(samples, start, end, k)
                out[k] = metric(None if v is None else round(v, 2), "%", "gpm",
                                short_note if v is not None else "no GPM sample overlaps this window")
        out.update(self._power_energy(samples, start, end, dur))
        return out

    def _power_energy(self, samples: list[Sample], start: float, end: float, dur: float) -> dict[str, Metric]:
        preason = self.backend.power_reason
        if preason is not None:
            return {"power_w": unavailable("W", preason), "energy_j": unavailable("J", preason)}
        p, _ = overlap_mean(samples, start, end, "power_w")
        out = {"power_w": metric(None if p is None else round(p, 2), "W", "nvml_power",
                                 None if p is not None else "no power sample overlaps this window")}
        e = counter_energy(samples, start, end) if dur >= ENERGY_COUNTER_MIN_S else None
        if e is not None:
            out["energy_j"] = metric(sig(e), "J", "nvml_energy", None)
        elif p is not None:
            why = (f"stage < {ENERGY_COUNTER_MIN_S:g} s: the energy counter updates only every ~100 ms, so "
                   "mean power × duration" if dur < ENERGY_COUNTER_MIN_S
                   else "energy counter unavailable: mean power × duration")
            out["energy_j"] = metric(sig(p * dur), "J", "nvml_power", why)
        else:
            out["energy_j"] = unavailable("J", "no power or energy sample overlaps this window")
        return out

    def flops_metrics(self, flops: float | None, sources: set[str], dur: float | None,
                      no_flops_reason: str = "no FLOPs recorded for this stage") -> dict[str, Metric]:
        """FLOPs, achieved TFLOP/s and MFU (vs the catalog's dense bf16 peak) for a window."""
        if not flops:
            why = no_flops_reason
            return {"flops": unavailable("FLOP", why), "tflops_per_s": unavailable("TFLOP/s", why),
                    "mfu": unavailable("%", why)}
        src = "+".join(sorted(sources)) or "analytic"
        out = {"flops": metric(float(flops), "FLOP", src, None)}
        if not dur or dur <= 0:
            out["tflops_per_s"] = unavailable("TFLOP/s", "zero-length window")
            out["mfu"] = unavailable("%", "zero-length window")
            return out
        out["tflops_per_s"] = metric(sig(flops / dur / 1e12), "TFLOP/s", "computed", f"{src} FLOPs / wall time")
        # flops.mfu is None without a catalog peak: then unavailable, with the catalog's reason
        out["mfu"] = metric(sig(mfu(flops, dur, self.peak_tflops)), "%", "catalog", self.peak_note)
        return out

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

    def memory_metrics(self, mem: MemFrame, nvml_used: int | None) -> dict[str, Metric]:
        """The schema's memory block for a window (GiB); unavailable with a reason off CUDA."""
        if not self.memory.available:
            why = self.memory.reason or "no CUDA device"
            keys = ("start_gb", "end_gb", "peak_gb", "peak_reserved_gb", "nvml_used_gb", "static_gb", "dynamic_gb")
            return {k: unavailable("GiB", why) for k in keys}
        dyn = None if mem.peak is None or mem.start is None else mem.peak - mem.start
        if nvml_used is not None:
            nv = metric(_gib(nvml_used), "GiB", "nvml",
                        "max NVML used memory sampled in and around the stage (all processes, CUDA context included)")
        elif self.backend.sm_source == "unavailable":
            nv = unavailable("GiB", self.backend.sm_reason or "NVML unavailable")
        else:
            nv = unavailable("GiB", "no NVML memory sample in or around the stage")
        return {
            "start_gb": metric(_gib(mem.start), "GiB", "torch.cuda", None),
            "end_gb": metric(_gib(mem.end), "GiB", "torch.cuda", None if mem.end is not None else "stage open"),
            "peak_gb": metric(_gib(mem.peak), "GiB", "torch.cuda", None),
            "peak_reserved_gb": metric(_gib(mem.peak_reserved), "GiB", "torch.cuda", None),
            "nvml_used_gb": nv,
            "static_gb": metric(_gib(mem.start), "GiB", "torch.cuda", "allocated at stage start"),
            "dynamic_gb": metric(_gib(dyn), "GiB", "torch.cuda", "peak − start"),
        }

    def host_metrics(self, cpu0: float | None, cpu1: float | None, dur: float,
                     samples: list[Sample], start: float, end: float) -> dict[str, Metric]:
        """Process CPU % (of one core) and peak RSS (sampled) over a window."""
        if cpu0 is None or cpu1 is None or dur <= 0:
            cpu = unavailable("%", "zero-length or open window")
        else:
            cpu = metric(round(100 * (cpu1 - cpu0) / dur, 1), "% of one core", "process_time",
                         "process user+system CPU time / wall time")
        if self._host.reason:
            return {"cpu_percent": cpu, "host_rss_peak_gb": unavailable("GiB", self._host.reason)}
        rss = around_max(samples, start, end, "rss_bytes")
        return {"cpu_percent": cpu,
                "host_rss_peak_gb": metric(_gib(rss), "GiB", "psutil", "max RSS of the samples in and around the stage"
                                           if rss is not None else "no RSS sample in or around the stage")}

    def stage_dicts(self) -> list[dict[str, Any]]:
        """Every stage as a schema stage object (docs/report-schema.md), in opening order."""
        samples = self.sampler.samples()
        flops = self.subtree_flops()
        now = self.now_s()
        out = []
        for r in self._records:
            end = r.end_s if r.end_s is not None else now
            dur = end - r.start_s
            nv = around_max(samples, r.start_s, end, "nvml_used_bytes")
            d: dict[str, Any] = {
                "name": r.name, "parent": r.parent, "depth": r.depth, "comment": r.comment,
                "index": r.index, "parent_index": r.parent_index,
                "start_s": round(r.start_s, 6), "end_s": round(end, 6), "duration_s": round(dur, 6),
                "memory": self.memory_metrics(r.mem, None if nv is None else int(nv)),
            }
            d.update(self.window_metrics(r.start_s, end, samples))
            f, srcs = flops[r.index]
            d.update(self.flops_metrics(f, srcs, dur))
            d.update(self.host_metrics(r.cpu_start, r.cpu_end, dur, samples, r.start_s, end))
            d["failed"] = r.failed
            d["incomplete"] = r.incomplete or r.end_s is None
            if r.error_type:
                d["error_type"] = r.error_type
            out.append(d)
        return out

    def run_memory(self) -> dict[str, Metric]:
        """Memory over the whole monitored run (start → stop)."""
        mem = self._root_mem or MemFrame()
        samples = self.sampler.samples()
        nv = around_max(samples, 0.0, self.now_s(), "nvml_used_bytes")
        return self.memory_metrics(mem, int(nv) if nv is not None else None)

    def run_host(self) -> dict[str, Metric]:
        """CPU % and peak RSS over the whole run."""
        samples = self.sampler.samples()
        now = self.now_s()
        cpu1 = self._cpu_end if self.end_s is not None else self._host.cpu_time()
        return self.host_metrics(self._cpu_start, cpu1, now, samples, 0.0, now)

    def timeline(self, ndigits: int = 3) -> dict[str, Any]:
        """The sampled timeline for charts: time, SM %, allocated memory, power (+ GPM extras)."""
        samples = self.sampler.samples()

        def col(attr: str, scale: float = 1.0) -> list[float | None]:
            return [None if getattr(s, attr) is None else round(getattr(s, attr) / scale, ndigits)
                    for s in samples]

        return {
            "t_s": [round(s.t1, ndigits) for s in samples],
            "sm_percent": col("sm"),
            "sm_source": self.backend.sm_source,
            "memory_gb": col("allocated_bytes", GIB),
            "power_w": col("power_w"),
            "interval_s": self.sampler.interval_s,
            "sm_occupancy": col("sm_occupancy"),
            "tensor_util": col("tensor_util"),
            "dram_util": col("dram_util"),
            "nvml_used_gb": col("nvml_used_bytes", GIB),
            "host_rss_gb": col("rss_bytes", GIB),
        }
