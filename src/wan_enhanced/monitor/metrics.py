"""``Metric``: one typed measurement — value, unit, source, reason.

A value that cannot be had is ``None`` with source ``"unavailable"`` and a reason — never 0. The
monitor's reasons are device facts (the backend's own words, e.g. ``"no CUDA device"``) or one of the
terse cause codes below; the report (``wan_enhanced.report.build``) turns codes into sentences and adds
the notes on how an available value was derived. Values are raw, in base units (bytes, seconds, %,
W, J, FLOP): rounding and unit conversion are the report's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

UNAVAILABLE = "unavailable"

#: cause codes (not prose): no sample of the timeline overlaps the window
NO_SAMPLE = "no-sample"
#: the quantity needs NVML GPM (SM occupancy, tensor and DRAM activity) and the device has none
NEEDS_GPM = "needs-gpm"
#: the window is still open, so an end reading is missing
OPEN_WINDOW = "open-window"


@dataclass(frozen=True)
class Metric:
    """One measurement. ``source`` names where the value came from, or is ``"unavailable"``."""

    value: float | None
    unit: str
    source: str
    reason: str | None = None

    def __post_init__(self) -> None:
        v = self.value
        if isinstance(v, bool):
            object.__setattr__(self, "value", int(v))
        elif isinstance(v, float) and not math.isfinite(v):
            v = None
            object.__setattr__(self, "value", None)
        if v is None and self.source != UNAVAILABLE:
            object.__setattr__(self, "source", UNAVAILABLE)

    @property
    def available(self) -> bool:
        """Whether there is a value."""
        return self.value is not None

    @classmethod
    def missing(cls, unit: str, reason: str) -> Metric:
        """A metric that cannot be had, with the reason why (a device fact or a cause code)."""
        return cls(None, unit, UNAVAILABLE, reason)

    @classmethod
    def of(cls, value: float | None, unit: str, source: str, reason_if_missing: str = NO_SAMPLE) -> Metric:
        """``value`` from ``source``; ``None`` (or NaN/inf) gives an unavailable metric with ``reason_if_missing``."""
        m = cls(value, unit, source)
        return m if m.value is not None else cls.missing(unit, reason_if_missing)
