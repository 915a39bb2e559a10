"""The run report's schema (docs/report-schema.md): its identity, atomic writing, loading and readers.

``report.build`` is the single producer; ``load_report`` is what every consumer calls, and it
refuses — with one ``ReportError`` line naming the path — missing files, non-JSON and other
schemas or schema versions. ``peak_memory`` and ``gpus_used`` are the shared readers.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..atomic import atomic_output
from ..errors import ReportError
from .validate import check_structure
from .values import Metric, metric, unavailable, value_of

SCHEMA = "wan-enhanced/report"
SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "oom", "incomplete")  # incomplete: a journal snapshot of a run not (yet) finished

__all__ = ["SCHEMA", "SCHEMA_VERSION", "STATUSES", "gpus_used", "load_report", "metric", "peak_memory",
           "peak_memory_gb", "unavailable", "write_json_atomic", "write_report"]


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` with NaN/inf floats as ``None`` (JSON has no NaN; a report must not be lost)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, indent: int = 1) -> Path:
    """Write ``obj`` as JSON atomically (temp file in the same folder + ``os.replace``).

    The file gets the mode a plain ``open()`` would give it (``0o666 & ~umask``), not mkstemp's
    0600. NaN/inf become ``null``; objects JSON cannot hold are written as their ``str``.
    """
    text = json.dumps(json_safe(obj), ensure_ascii=False, indent=indent, allow_nan=False, default=str) + "\n"
    return write_text_atomic(path, text)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) atomically: temporary file beside ``path``, fsync, rename (``atomic.atomic_output``)."""
    p = Path(path)
    with atomic_output(p) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return p


def write_report(path: str | os.PathLike[str], report: dict[str, Any]) -> Path:
    """Write ``report`` as JSON atomically (``write_json_atomic``)."""
    return write_json_atomic(path, report, indent=1)


# Which totals / stage-memory keys hold each kind of peak memory.
PEAK_KEYS = {"allocated": ("peak_memory_gb", "peak_gb"), "reserved": ("peak_reserved_gb", "peak_reserved_gb")}


def peak_memory(report: dict[str, Any], kind: str) -> Metric:
    """The run's peak GPU memory (GiB) of ``kind`` as a metric object — the one definition every consumer uses.

    ``"allocated"``: max bytes held by tensors (``totals.peak_memory_gb``). ``"reserved"``: max bytes
    held by PyTorch's caching allocator (``totals.peak_reserved_gb``) — what the card must have room
    for, so the memory-fit checks use it. Reports written before ``totals.peak_reserved_gb`` existed
    fall back to the max over their stages. For a multi-GPU run it is the max over the ranks (per card).
    """
    if kind not in PEAK_KEYS:
        raise ValueError(f"kind must be one of {tuple(PEAK_KEYS)}, not {kind!r}")
    total_key, stage_key = PEAK_KEYS[kind]
    m = (report.get("totals") or {}).get(total_key)
    if value_of(m) is None:
        vals = [value_of((s.get("memory") or {}).get(stage_key)) for s in report.get("stages") or []
                if isinstance(s, dict)]
        vals = [v for v in vals if v is not None]
        if vals:
            m = metric(max(vals), "GiB", "torch.cuda", f"max of the stages' {stage_key} (no totals.{total_key})")
    ranks = [r for r in ((report.get("parallel") or {}).get("ranks") or []) if isinstance(r, dict)]
    rank_vals = [v for v in (value_of((r.get("totals") or {}).get(total_key)) for r in ranks) if v is not None]
    if rank_vals and (value_of(m) is None or max(rank_vals) > value_of(m)):  # type: ignore[operator]
        m = metric(max(rank_vals), "GiB", "torch.cuda", f"max over {len(ranks)} ranks (per GPU)")
    return m if isinstance(m, dict) else unavailable("GiB", f"no totals.{total_key} in the report")


def peak_memory_gb(report: dict[str, Any], kind: str) -> float | None:
    """The value of ``peak_memory(report, kind)`` (None when not measured, e.g. a CPU run)."""
    return value_of(peak_memory(report, kind))


def gpus_used(report: dict[str, Any]) -> int:
    """GPUs the run used: ``parallel.world_size`` when present, else ``run.ulysses_size`` × (2 with
    ``run.cfg_parallel``). Not the number of GPUs in the host (``system.gpu.host_count``)."""
    world = (report.get("parallel") or {}).get("world_size")
    if isinstance(world, int) and not isinstance(world, bool) and world >= 1:
        return world
    run = report.get("run") or {}
    ulysses = run.get("ulysses_size")
    n = ulysses if isinstance(ulysses, int) and not isinstance(ulysses, bool) and ulysses >= 1 else 1
    return n * (2 if run.get("cfg_parallel") else 1)


def check_report(report: Any, where: str = "report") -> dict[str, Any]:
    """Raise ``ReportError`` unless ``report`` is a schema-1 wan-enhanced report object."""
    if not isinstance(report, dict):
        raise ReportError(f"{where}: not a wan-enhanced report (top level is {type(report).__name__}, not an object)")
    if report.get("schema") != SCHEMA:
        raise ReportError(f"{where}: not a wan-enhanced report (schema={report.get('schema')!r}, expected {SCHEMA!r})")
    if report.get("schema_version") != SCHEMA_VERSION:
        raise ReportError(f"{where}: unsupported schema_version {report.get('schema_version')!r} "
                          f"(this tool reads {SCHEMA_VERSION})")
    for key, typ in (("stages", list), ("totals", dict)):
        if not isinstance(report.get(key), typ):
            raise ReportError(f"{where}: malformed report: {key!r} missing or not a {typ.__name__}")
    return report


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a report file; ``ReportError`` (one line, naming the path) when it is unusable."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"report file not found: {p}") from None
    except IsADirectoryError:
        raise ReportError(f"report path is a directory, not a file: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read report {p}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{p}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    return check_structure(check_report(data, str(p)), str(p), STATUSES)
