"""Repeated runs of one suite case: grouping, and each metric's median with its spread.

A case with ``repeats`` N runs N times (``<case>.r<k>.json``); every table shows the median of its ok runs
with min–max, and the interquartile range from 4 runs on. A case that ran once says so: one run has no
spread. Nothing here measures.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..report.values import fmt_num
from . import reportdata as rd

IQR_FROM = 4


@dataclass(frozen=True)
class Spread:
    """Median, min–max and (from 4 values) the interquartile range of one metric over a case's runs."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        """Number of values."""
        return len(self.values)

    @property
    def median(self) -> float:
        """The median."""
        return statistics.median(self.values)

    @property
    def lo(self) -> float:
        """The smallest value."""
        return min(self.values)

    @property
    def hi(self) -> float:
        """The largest value."""
        return max(self.values)

    @property
    def iqr(self) -> float | None:
        """Q3 − Q1 (``statistics.quantiles``, exclusive method) from ``IQR_FROM`` values on, else ``None``."""
        if self.n < IQR_FROM:
            return None
        q = statistics.quantiles(self.values, n=4)
        return q[2] - q[0]

    def text(self, digits: int = 2, scale: float = 1.0) -> str:
        """``median [min–max]`` (+ ``IQR x``), or the value alone for a single run."""
        med = fmt_num(self.median * scale, digits)
        if self.n == 1:
            return med
        out = f"{med} [{fmt_num(self.lo * scale, digits)}–{fmt_num(self.hi * scale, digits)}"
        iqr = self.iqr
        return out + (f", IQR {fmt_num(iqr * scale, digits)}]" if iqr is not None else "]")


def spread(values: list[float | None]) -> Spread | None:
    """The spread of the known values (``None`` when none is known)."""
    known = tuple(float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool))
    return Spread(known) if known else None


@dataclass
class CaseRuns:
    """One case of a suite and its runs (manifest entries with their reports)."""

    name: str
    entries: list[dict[str, Any]] = field(default_factory=list)
    reports: list[dict[str, Any] | None] = field(default_factory=list)

    @property
    def ok(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(entry, report) of the runs that finished ok."""
        return [(e, r) for e, r in zip(self.entries, self.reports, strict=True) if e.get("status") == "ok" and r]

    @property
    def repeats(self) -> int:
        """Runs the config asked for."""
        return int(self.entries[0].get("repeats") or 1) if self.entries else 0

    def status_text(self) -> str:
        """``ok``, ``ok ×3``, or ``2 ok, 1 failed``."""
        counts: dict[str, int] = {}
        for e in self.entries:
            counts[e.get("status") or "pending"] = counts.get(e.get("status") or "pending", 0) + 1
        if list(counts) == ["ok"]:
            return "ok" if counts["ok"] == 1 else f"ok ×{counts['ok']}"
        return ", ".join(f"{v} {k}" for k, v in counts.items())

    def representative(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The ok run whose wall time is nearest the median (else the first run): its tables and charts are shown."""
        ok = self.ok
        if not ok:
            return self.entries[0], self.reports[0]
        walls = [rd.wall_s(r) or 0.0 for _, r in ok]
        med = statistics.median(walls)
        return min(ok, key=lambda er: abs((rd.wall_s(er[1]) or 0.0) - med))

    def spread_of(self, get: Callable[[dict[str, Any]], float | None]) -> Spread | None:
        """The spread of ``get(report)`` over the ok runs."""
        return spread([get(r) for _, r in self.ok])


def group_cases(entries: list[dict[str, Any]], reports: dict[str, dict[str, Any] | None]) -> list[CaseRuns]:
    """The manifest's entries grouped by case name, in first-appearance order (``reports`` by entry id)."""
    groups: dict[str, CaseRuns] = {}
    for e in entries:
        g = groups.setdefault(str(e.get("name")), CaseRuns(str(e.get("name"))))
        g.entries.append(e)
        g.reports.append(reports.get(entry_id(e)))
    for g in groups.values():
        order = sorted(range(len(g.entries)), key=lambda i: int(g.entries[i].get("repeat") or 1))
        g.entries = [g.entries[i] for i in order]
        g.reports = [g.reports[i] for i in order]
    return list(groups.values())


def entry_id(entry: dict[str, Any]) -> str:
    """A manifest entry's run id: ``<case>`` for a single run, ``<case>.r<k>`` for repeat k."""
    return str(entry.get("id") or entry.get("name"))
