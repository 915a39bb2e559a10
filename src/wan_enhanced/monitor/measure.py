"""What the monitor hands out: typed measurements of windows, computed from the sampled timeline.

``measure_window`` is pure: samples + the window's edges + what the device can read → a
``WindowMeasurement`` of ``Metric`` objects in base units. Energy of a window is the difference of
the total-energy counter read at its two edges (Zeus' begin/end-window way); a window shorter than
``ENERGY_COUNTER_MIN_S`` (the counter updates only about every 100 ms, so an edge difference is mostly
quantization) takes mean sampled power × duration, and a window without edge readings falls back to
the counter interpolated along the sampler's timeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .gpu_state import GpuStateMeasurement, measure_gpu_state
from .memory import MemFrame
from .metrics import NEEDS_GPM, NO_SAMPLE, OPEN_WINDOW, Metric
from .sampler import ENERGY_COUNTER_MIN_S, Sample, around_max, counter_energy, overlap_mean

#: how a window's energy was had
ENERGY_EDGES = "counter-edges"  # counter read at the window's begin and end
ENERGY_TIMELINE = "counter-timeline"  # counter interpolated between the sampler's reads
ENERGY_POWER_SHORT = "power-x-time-short"  # window < ENERGY_COUNTER_MIN_S: mean power × duration
ENERGY_POWER_NO_COUNTER = "power-x-time"  # no counter reading: mean power × duration
ENERGY_NONE = ""

GPM_EXTRAS = ("sm_occupancy", "tensor_util", "dram_util")


@dataclass(frozen=True)
class DeviceFacts:
    """What the device can read, and why not (the backend's words)."""

    sm_source: str  # gpm | nvml_util | unavailable
    sm_reason: str | None
    power_reason: str | None
    host_reason: str | None  # why host RSS cannot be read (psutil missing)
    interval_s: float
    state_reason: str | None = None  # why clocks / clock-event reasons cannot be read
    energy_note: str = ""  # how stage energy is had (edges or the sampler's timeline) and why


@dataclass
class StageRecord:
    """One stage window as the monitor records it. Times are seconds since the monitor started."""

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
    energy_start_j: float | None = None  # total-energy counter at begin (J), where the device has one
    energy_end_j: float | None = None
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


@dataclass(frozen=True)
class WindowMeasurement:
    """Sampled quantities over ``[start_s, end_s]`` (seconds since the monitor started)."""

    start_s: float
    end_s: float
    interval_s: float
    sm: Metric
    sm_covered_s: float
    sm_occupancy: Metric
    tensor_util: Metric
    dram_util: Metric
    power_w: Metric
    energy_j: Metric
    energy_method: str
    nvml_used_bytes: Metric  # max NVML used memory sampled in and around the window
    rss_peak_bytes: Metric  # max host RSS sampled in and around the window
    cpu_s: Metric  # process CPU time over the window
    gpu_state: GpuStateMeasurement | None = None  # clocks, temperature, power limit, clock-event reasons

    @property
    def duration_s(self) -> float:
        """Length of the window (≥ 0)."""
        return max(0.0, self.end_s - self.start_s)

    @property
    def short(self) -> bool:
        """Shorter than one sampling interval: sampled values come from samples extending beyond it."""
        return self.duration_s < self.interval_s


@dataclass(frozen=True)
class StageMeasurement:
    """One stage: its record (name, parent, times, memory frame, CPU, flags) and what was measured over it."""

    record: StageRecord
    window: WindowMeasurement
    flops: float  # own + descendants'
    flops_sources: frozenset[str]


@dataclass(frozen=True)
class RunMeasurement:
    """Everything the monitor measured in one run, in stage-opening order."""

    device: str
    is_cuda: bool
    started_at: str | None
    device_facts: DeviceFacts
    sampler_errors: int
    memory_reason: str | None  # why torch memory is not tracked (``None``: it is)
    peak_tflops: float | None
    peak_note: str
    failed_stage: str | None
    stages: list[StageMeasurement]
    run: WindowMeasurement
    run_mem: MemFrame
    total_flops: float
    total_flops_sources: frozenset[str]
    samples: list[Sample] = field(default_factory=list)


def _energy(samples: list[Sample], start: float, end: float, power: Metric,
            edges: tuple[float | None, float | None]) -> tuple[Metric, str]:
    dur = max(0.0, end - start)
    if dur >= ENERGY_COUNTER_MIN_S:
        e0, e1 = edges
        if e0 is not None and e1 is not None and e1 >= e0:
            return Metric(e1 - e0, "J", "nvml_energy"), ENERGY_EDGES
        e = counter_energy(samples, start, end)
        if e is not None:
            return Metric(e, "J", "nvml_energy"), ENERGY_TIMELINE
    if power.value is not None:
        how = ENERGY_POWER_SHORT if dur < ENERGY_COUNTER_MIN_S else ENERGY_POWER_NO_COUNTER
        return Metric(power.value * dur, "J", "nvml_power"), how
    return Metric.missing("J", NO_SAMPLE), ENERGY_NONE


def measure_window(samples: list[Sample], start: float, end: float, dev: DeviceFacts, *,
                   energy_edges: tuple[float | None, float | None] = (None, None),
                   cpu_edges: tuple[float | None, float | None] = (None, None)) -> WindowMeasurement:
    """Measure ``[start, end]`` from the timeline, the energy counter at the edges and the CPU clock at the edges."""
    covered = 0.0
    src = dev.sm_source
    if src == "unavailable":
        why = dev.sm_reason or "no CUDA device"
        sm = Metric.missing("%", why)
        extras = {k: Metric.missing("%", why) for k in GPM_EXTRAS}
    else:
        v, covered = overlap_mean(samples, start, end, "sm")
        sm = Metric.of(v, "%", src)
        extras = {}
        for k in GPM_EXTRAS:
            if src != "gpm":
                extras[k] = Metric.missing("%", NEEDS_GPM)
            else:
                extras[k] = Metric.of(overlap_mean(samples, start, end, k)[0], "%", "gpm")
    if dev.power_reason is not None:
        power = Metric.missing("W", dev.power_reason)
        energy, how = Metric.missing("J", dev.power_reason), ENERGY_NONE
    else:
        power = Metric.of(overlap_mean(samples, start, end, "power_w")[0], "W", "nvml_power")
        energy, how = _energy(samples, start, end, power, energy_edges)
    if src == "unavailable":
        nvml = Metric.missing("B", dev.sm_reason or "NVML unavailable")
    else:
        nvml = Metric.of(around_max(samples, start, end, "nvml_used_bytes"), "B", "nvml")
    rss = (Metric.missing("B", dev.host_reason) if dev.host_reason
           else Metric.of(around_max(samples, start, end, "rss_bytes"), "B", "psutil"))
    c0, c1 = cpu_edges
    cpu = Metric.missing("s", OPEN_WINDOW) if c0 is None or c1 is None else Metric(c1 - c0, "s", "process_time")
    state = measure_gpu_state(samples, start, end, dev.state_reason)
    return WindowMeasurement(start, end, dev.interval_s, sm, covered, extras["sm_occupancy"], extras["tensor_util"],
                             extras["dram_util"], power, energy, how, nvml, rss, cpu, state)
