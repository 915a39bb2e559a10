"""The metric object of the report: ``{"value", "unit", "source", "reason"}``.

A value that cannot be had is ``None`` with source ``"unavailable"`` and a reason — never 0.
``reason`` may also carry a short note on an available value (e.g. how it was derived).
"""

from __future__ import annotations

import math
from typing import Any

Metric = dict[str, Any]

UNAVAILABLE = "unavailable"


def metric(value: float | int | None, unit: str, source: str, reason: str | None = None) -> Metric:
    """Build a metric object; a ``None``/NaN/inf value becomes source ``unavailable`` with a reason."""
    if value is not None and isinstance(value, float) and not math.isfinite(value):
        value = None
    if value is None:
        return {"value": None, "unit": unit, "source": UNAVAILABLE, "reason": reason or "not measured"}
    if isinstance(value, bool):
        value = int(value)
    return {"value": value, "unit": unit, "source": source, "reason": reason}


def unavailable(unit: str, reason: str) -> Metric:
    """A metric that cannot be had, with the reason why."""
    return metric(None, unit, UNAVAILABLE, reason)


def value_of(m: Metric | None) -> float | None:
    """The numeric value of a metric object (``None`` when unavailable or absent)."""
    if not isinstance(m, dict):
        return None
    v = m.get("value")
    return v if isinstance(v, int | float) and not isinstance(v, bool) else None


def sig(x: float | None, digits: int = 5) -> float | None:
    """Round to ``digits`` significant figures (keeps tiny values readable); ``None`` passes through."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")
