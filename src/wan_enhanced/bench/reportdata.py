"""Read-only helpers over the per-run JSON report (``docs/report-schema.md``) for the bench tools.

Nothing here measures; it only reads metric objects (``{"value", "unit", "source", "reason"}``),
walks the stage tree and names the GPU a report was measured on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..report.schema import gpus_used, peak_memory, peak_memory_gb
from ..report.values import value_of
from ..stages import UNTRACKED

__all__ = ["GpuId", "duration", "gpu_of", "mreason", "msource", "peak_memory", "peak_memory_gb",
           "read_report", "roots", "stages", "text_report", "top_stage_seconds", "top_stages", "total", "value_of",
           "wall_s"]


def read_report(path: str | Path) -> dict[str, Any]:
    """Load one report JSON (``wan_enhanced.report.schema.load_report``); ``ReportError`` if unusable."""
    from ..report.schema import load_report

    return load_report(path)


def text_report(report: dict[str, Any]) -> str:
    """The seed-style text table of a report (``wan_enhanced.report.text.format_report``)."""
    from ..report.text import format_report

    return format_report(report)


def mreason(metric: Any, default: str = "not recorded") -> str:
    """Why a metric has no value (its ``reason``), or ``default``."""
    if isinstance(metric, dict) and metric.get("reason"):
        return str(metric["reason"])
    return default


def msource(metric: Any) -> str | None:
    """The ``source`` of a metric object."""
    return metric.get("source") if isinstance(metric, dict) else None


def total(report: dict[str, Any], key: str) -> dict[str, Any] | None:
    """``report["totals"][key]`` (a metric object) or None."""
    totals = report.get("totals") or {}
    m = totals.get(key)
    return m if isinstance(m, dict) else None


def stages(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's stages, in recorded order."""
    return [s for s in (report.get("stages") or []) if isinstance(s, dict) and "name" in s]


def roots(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Stages without a parent (normally just ``Total``)."""
    return [s for s in stages(report) if not s.get("parent")]


def top_stages(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The pipeline's main stages: children of the root(s), or the roots when they have none."""
    root_names = {s["name"] for s in roots(report)}
    kids = [s for s in stages(report) if s.get("parent") in root_names]
    return kids or roots(report)


def top_stage_seconds(report: dict[str, Any]) -> dict[str, float]:
    """Seconds of each main stage plus the root's ``(untracked)`` remainder: they add up to the root (``Total``)."""
    from ..report.tree import rows_with_remainders

    out = {str(s["name"]): duration(s) for s in top_stages(report)}
    rs = roots(report)
    if len(rs) == 1 and out and rs[0]["name"] not in out:
        rows = rows_with_remainders(stages(report))
        rem = next((r for r in rows if r.get("remainder") and r.get("parent") == rs[0]["name"]), None)
        if rem is not None and isinstance(rem.get("duration_s"), int | float):
            out[UNTRACKED] = float(rem["duration_s"])
    return out


def duration(stage: dict[str, Any]) -> float:
    """A stage's duration in seconds (0.0 when absent)."""
    d = stage.get("duration_s")
    if isinstance(d, (int, float)) and not isinstance(d, bool):
        return float(d)
    start, end = stage.get("start_s"), stage.get("end_s")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        return float(end) - float(start)
    return 0.0


def wall_s(report: dict[str, Any]) -> float | None:
    """End-to-end seconds: ``totals.wall_s``, else the root stages' durations."""
    v = value_of(total(report, "wall_s"))
    if v is not None:
        return v
    rs = roots(report)
    return sum(duration(s) for s in rs) if rs else None


@dataclass(frozen=True)
class GpuId:
    """The device a report was measured on."""

    key: str | None  # catalog key, None when not in the catalog
    name: str  # as reported (or "CPU ...")
    count: int = 1

    @property
    def label(self) -> str:
        """Human label, with the card count when > 1."""
        return f"{self.count}× {self.name}" if self.count > 1 else self.name


def gpu_of(report: dict[str, Any], catalog: list[dict[str, Any]] | None = None) -> GpuId:
    """Identify the GPU of a report: a catalog match of ``system.gpu.name`` (else its ``catalog_key``).

    ``count`` is the number of cards the run used (``report.schema.gpus_used``: ``parallel.world_size``,
    else ``ulysses_size`` × 2 with ``cfg_parallel``), not the number of cards in the host.
    """
    system = report.get("system") or {}
    gpu = system.get("gpu")
    if not gpu:
        cpu = (system.get("cpu") or {}).get("model") or "CPU"
        return GpuId(None, f"CPU ({cpu})", 1)
    name = str(gpu.get("name") or "unknown GPU")
    count = gpus_used(report)
    key = None
    if catalog is not None:
        from .gpus import match_entry

        entry = match_entry(name, catalog)
        if entry is None and gpu.get("catalog_key"):
            entry = match_entry(str(gpu["catalog_key"]), catalog)
        key = str(entry["key"]) if entry else None
    else:
        key = gpu.get("catalog_key")
    return GpuId(key, name, count)
