"""Test doubles for the monitor: a settable clock, a scripted NVML backend, a fake CUDA allocator."""

from __future__ import annotations

from collections.abc import Callable

from wan_enhanced.monitor.backend import NVML_UTIL_NOTE, Reading


class FakeClock:
    """A clock the test advances by hand."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class FakeBackend:
    """Scripted device counters: ``sm_at(t)`` gives the SM % of the interval ending at clock time t.

    ``reasons_at(t)``: the NVML clock-event reasons bitmask read at t (with a scripted SM clock, temperature
    and power limit); without it the fake reads no GPU state.
    Power is constant ``power_w``; the energy counter integrates it exactly (J since t=0 of the clock),
    or is ``energy_at(t)`` when given. ``edge_energy=False``: the cheap counter read at window edges
    (``energy_j()``) fails, only the sampler's reads have it; ``energy_counter=False``: no counter at all.
    """

    def __init__(self, clock: Callable[[], float], sm_at: Callable[[float], float | None],
                 sm_source: str = "gpm", power_w: float | None = 100.0, used_bytes: int = 3 << 30,
                 min_interval_s: float = 0.0, energy_at: Callable[[float], float] | None = None,
                 edge_energy: bool = True, energy_counter: bool = True,
                 reasons_at: Callable[[float], int | None] | None = None, sm_clock_at: Callable[[float], float] | None = None,
                 temperature_c: float = 55.0, power_limit_w: float = 700.0) -> None:
        self.clock = clock
        self.sm_at = sm_at
        self.sm_source = sm_source
        self.sm_reason = NVML_UTIL_NOTE if sm_source == "nvml_util" else None
        self.power_reason = None if power_w is not None else "power not supported (fake)"
        self.power_w = power_w
        self.used_bytes = used_bytes
        self.min_interval_s = min_interval_s
        self.energy_at = energy_at or (lambda t: (self.power_w or 0.0) * t)
        self.edge_energy = edge_energy
        self.energy_counter = energy_counter
        # GPU state: the clock-event reasons bitmask and SM clock at clock time t (None: not supported)
        self.reasons_at = reasons_at
        self.sm_clock_at = sm_clock_at or (lambda t: 1980.0)
        self.temperature_c = temperature_c
        self.power_limit_w = power_limit_w
        self.state_reason = None if reasons_at is not None else "clock-event reasons not supported (fake)"
        self.energy_reads = 0
        self.reads = 0
        self.closed = False
        self._primed = False

    def read(self) -> Reading:
        self.reads += 1
        t = self.clock()
        r = Reading(power_w=self.power_w, nvml_used_bytes=self.used_bytes)
        if self.power_w is not None and self.energy_counter:
            r.energy_j = self.energy_at(t)
        if self.reasons_at is not None:
            r.clock_reasons = self.reasons_at(t)
            r.sm_clock_mhz, r.mem_clock_mhz = self.sm_clock_at(t), 2619.0
            r.temperature_c, r.power_limit_w = self.temperature_c, self.power_limit_w
        if self._primed:
            sm = self.sm_at(t)
            r.sm = sm
            if self.sm_source == "gpm" and sm is not None:
                r.sm_occupancy, r.tensor_util, r.dram_util = sm / 2, sm / 4, 10.0
        self._primed = True
        return r

    def memory_used_bytes(self) -> int | None:
        return self.used_bytes

    def energy_j(self) -> float | None:
        """The counter read at a window's edge (None when the fake has no counter or edge reads fail)."""
        self.energy_reads += 1
        if self.power_w is None or not self.energy_counter or not self.edge_energy:
            return None
        return self.energy_at(self.clock())

    def close(self) -> None:
        self.closed = True


class FakeAllocator:
    """Stands in for torch.cuda's allocated/peak counters (install with ``install(monkeypatch)``)."""

    def __init__(self) -> None:
        self.allocated = 0
        self.peak = 0
        self.resets = 0

    def alloc(self, n: int) -> None:
        self.allocated += n
        self.peak = max(self.peak, self.allocated)

    def free(self, n: int) -> None:
        self.allocated -= n

    def reset(self) -> None:
        self.resets += 1
        self.peak = self.allocated

    def stats(self) -> tuple[int, int, int, int]:
        """(allocated, peak, reserved, reserved peak) like the tracker's ``stats_fn``."""
        return self.allocated, self.peak, self.allocated + 7, self.peak + 7

    def install(self, tracker) -> None:  # type: ignore[no-untyped-def]
        """Make a ``MemoryTracker`` read these counters as if it were on a CUDA device."""
        tracker.available = True
        tracker.reason = None
        tracker.stats_fn = self.stats
        tracker.reset_fn = self.reset
