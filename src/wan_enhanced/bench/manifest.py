"""The suite manifest: a run dir's ``suite.json``, written by the runner, read by every report.

``runner`` writes it after every case (so a stopped suite resumes); ``markdown`` and ``compare``
read it. This module knows the file's name, schema tag and reading/writing, and what a finished
manifest's cases add up to; it runs nothing and imports no other ``bench`` module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..report.schema import write_json_atomic

SUITE_SCHEMA = "wan-enhanced/suite"
MANIFEST = "suite.json"


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Write ``run_dir/suite.json`` atomically (a reader never sees half a file)."""
    write_json_atomic(run_dir / MANIFEST, manifest, indent=2)


def load_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The run dir's ``suite.json``, or None when absent/unreadable."""
    p = run_dir / MANIFEST
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == SUITE_SCHEMA else None


def latest_run(reports_dir: Path) -> Path | None:
    """The most recently updated run dir (one with a manifest) under ``reports_dir``."""
    best: tuple[float, Path] | None = None
    if not reports_dir.is_dir():
        return None
    for d in reports_dir.iterdir():
        m = d / MANIFEST
        if d.is_dir() and m.is_file():
            t = m.stat().st_mtime
            if best is None or t > best[0]:
                best = (t, d)
    return best[1] if best else None


def summarize(manifest: dict[str, Any]) -> dict[str, int]:
    """Count of cases per status."""
    counts: dict[str, int] = {}
    for c in manifest.get("cases", []):
        counts[c.get("status", "pending")] = counts.get(c.get("status", "pending"), 0) + 1
    return counts


def suite_exit_code(manifest: dict[str, Any]) -> int:
    """0 when every case is ok or an OOM under its memory budget; else 1."""
    for c in manifest.get("cases", []):
        status = c.get("status")
        if status == "ok":
            continue
        if status == "oom" and (c.get("flags") or {}).get("memory_budget_gb") is not None:
            continue
        return 1
    return 0
