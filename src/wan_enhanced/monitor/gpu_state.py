"""The GPU's own state over a window: clocks, temperature, power limit, and what held the clocks back.

NVML's clock-event reasons (formerly "throttle reasons") say why the SM clock is below its maximum at
the moment of a read. Each sample's bitmask is taken for the interval it closes, so a window's share of
a reason is the overlap-weighted share of its sampled time during which that bit was set. ``GpuIdle``
is not a hold-back (nothing to run); every other reason is one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .sampler import Sample, overlap_mean

#: NVML clock-event reason bits (nvml.h ``nvmlClocksEventReason*``): bit → (key, words)
CLOCK_EVENT_REASONS: dict[int, tuple[str, str]] = {
    0x1: ("gpu_idle", "GPU idle"),
    0x2: ("applications_clocks_setting", "application clocks setting"),
    0x4: ("sw_power_cap", "software power cap"),
    0x8: ("hw_slowdown", "hardware slowdown"),
    0x10: ("sync_boost", "sync boost"),
    0x20: ("sw_thermal_slowdown", "software thermal slowdown"),
    0x40: ("hw_thermal_slowdown", "hardware thermal slowdown"),
    0x80: ("hw_power_brake_slowdown", "hardware power brake"),
    0x100: ("display_clock_setting", "display clock setting"),
}
NOT_HELD_BACK = frozenset({"gpu_idle"})
WORDS = {key: words for key, words in CLOCK_EVENT_REASONS.values()}


def reason_keys(mask: int) -> list[str]:
    """The reason keys set in an NVML clock-event bitmask (unknown bits as ``bit_0x…``)."""
    out = [key for bit, (key, _) in CLOCK_EVENT_REASONS.items() if mask & bit]
    rest = mask & ~sum(CLOCK_EVENT_REASONS)
    b = 1
    while rest:
        if rest & b:
            out.append(f"bit_{b:#x}")
            rest &= ~b
        b <<= 1
    return out


@dataclass(frozen=True)
class GpuStateMeasurement:
    """The GPU's state over one window (``None`` fields: not read; ``reason`` says why)."""

    sm_clock_mhz: float | None
    sm_clock_min_mhz: float | None
    mem_clock_mhz: float | None
    temperature_max_c: float | None
    power_limit_w: float | None
    covered_s: float  # sampled time with a reasons mask
    any_held_share: float = 0.0  # share of covered_s with any hold-back reason set
    reason_shares: dict[str, float] = field(default_factory=dict)  # reason key → share of covered time
    reason: str | None = None  # why the state is unavailable

    @property
    def held_back_share(self) -> float | None:
        """Share of the covered time during which any hold-back reason was set (``None``: not read)."""
        return None if self.reason is not None or self.covered_s <= 0 else self.any_held_share

    @property
    def held_back(self) -> dict[str, float]:
        """The hold-back reasons seen, with their shares (idle excluded)."""
        return {k: v for k, v in self.reason_shares.items() if k not in NOT_HELD_BACK and v > 0}


def _min_over(samples: list[Sample], start: float, end: float, attr: str) -> float | None:
    vals = [getattr(s, attr) for s in samples
            if getattr(s, attr) is not None and min(s.t1, end) - max(s.t0, start) > 0]
    return min(vals) if vals else None


def measure_gpu_state(samples: list[Sample], start: float, end: float, reason: str | None) -> GpuStateMeasurement:
    """The state over ``[start, end]``; ``reason`` (the backend's) marks it unavailable."""
    if reason is not None:
        return GpuStateMeasurement(None, None, None, None, None, 0.0, 0.0, {}, reason)
    sm, _ = overlap_mean(samples, start, end, "sm_clock_mhz")
    mem, _ = overlap_mean(samples, start, end, "mem_clock_mhz")
    limit, _ = overlap_mean(samples, start, end, "power_limit_w")
    temps = [s.temperature_c for s in samples if s.temperature_c is not None and s.t0 <= end and s.t1 >= start]
    covered = 0.0
    shares: dict[str, float] = {}
    held = 0.0
    for s in samples:
        if s.clock_reasons is None or s.t1 <= s.t0:
            continue
        w = min(s.t1, end) - max(s.t0, start)
        if w <= 0:
            continue
        covered += w
        keys = reason_keys(s.clock_reasons)
        for k in keys:
            shares[k] = shares.get(k, 0.0) + w
        if any(k not in NOT_HELD_BACK for k in keys):
            held += w
    if covered > 0:
        shares = {k: v / covered for k, v in shares.items()}
        held /= covered
    return GpuStateMeasurement(sm, _min_over(samples, start, end, "sm_clock_mhz"), mem,
                               max(temps) if temps else None, limit, covered, held, shares,
                               None if covered > 0 or sm is not None else "no GPU-state sample overlaps this window")
