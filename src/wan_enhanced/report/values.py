"""The report's metric object ``{"value", "unit", "source", "reason"}`` and its number formatting.

A value that cannot be had is ``None`` with source ``"unavailable"`` and a reason — never 0.
``reason`` may also carry a short note on an available value (e.g. how it was derived).
Light on purpose (no torch): the text formatter and the bench tools import it.
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


def value_of(m: Metric | float | None) -> float | None:
    """The numeric value of a metric object, or of a bare number; ``None`` when unavailable or absent.

    The one accessor for metric values (report building, the text report and the bench tools): a
    missing, non-numeric, boolean or non-finite value is ``None``, never 0.
    """
    v = m.get("value") if isinstance(m, dict) else m
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def sig(x: float | None, digits: int = 5) -> float | None:
    """Round to ``digits`` significant figures (keeps tiny values readable); ``None`` passes through."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def fmt_num(v: float, digits: int) -> str:
    """``v`` with ``digits`` decimals, or 2 significant digits when that would round a non-zero value to 0.

    So a small real value (e.g. TFLOP/s or Wh of a CPU run) never prints as ``0.0``.
    """
    if v != 0 and abs(v) < 10 ** (-digits):
        return f"{v:.2g}"
    return f"{v:.{digits}f}"
