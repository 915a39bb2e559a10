"""The run report (docs/report-schema.md): build it from a ``Monitor``, write it atomically, load it.

``build_report`` is the single producer; ``load_report`` is what every consumer calls, and it
refuses — with one ``ReportError`` line naming the path — missing files, non-JSON and other
schemas or schema versions.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ReportError
from ..monitor.metrics import Metric, metric, sig, unavailable, value_of
from ..stages import DENOISING, TOTAL, step_index

if TYPE_CHECKING:  # keep this module (and format_report.py) free of the torch import
    from ..monitor.core import Monitor

SCHEMA = "wan-enhanced/report"
SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "oom")

__all__ = ["SCHEMA", "SCHEMA_VERSION", "build_report", "gpus_used", "load_report", "metric", "peak_memory",
           "peak_memory_gb", "unavailable", "write_json_atomic", "write_report"]


def _find(stages: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((s for s in stages if s.get("name") == name), None)


def steps_of(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``[{"index", "duration_s"}]`` for the stages named ``Step_<i>``, in the order they ran."""
    out = []
    for s in sorted(stages, key=lambda s: s.get("start_s", 0.0)):
        i = step_index(str(s.get("name", "")))
        if i is not None:
            out.append({"index": i, "duration_s": s.get("duration_s")})
    return out


def _error_obj(error: Any, monitor: Monitor) -> dict[str, Any] | None:
    if error is None:
        return None
    if isinstance(error, BaseException):
        msg = str(error).strip().splitlines()
        return {"stage": monitor.failed_stage, "type": type(error).__name__,
                "message": (msg[0] if msg else repr(error))[:2000]}
    if isinstance(error, dict):
        out = dict(error)  # extra keys (e.g. saved_latents) are kept
        out["stage"] = error.get("stage") or monitor.failed_stage
        out["type"] = str(error.get("type", "Error"))
        out["message"] = str(error.get("message", ""))
        return out
    return {"stage": monitor.failed_stage, "type": "Error", "message": str(error)}


def _totals(monitor: Monitor, stages: list[dict[str, Any]], steps: list[dict[str, Any]],
            root_stage: str, denoise_stage: str) -> dict[str, Metric]:
    root = next((s for s in stages if s.get("name") == root_stage and s.get("depth") == 0), None)
    den = _find(stages, denoise_stage)
    timer = "timer"
    sync_note = "CUDA-synchronized" if monitor.is_cuda else "host clock"
    wall = root["duration_s"] if root else monitor.now_s()
    t: dict[str, Metric] = {
        "wall_s": metric(round(wall, 6), "s", timer,
                         f"{sync_note}; {'stage ' + root_stage if root else 'monitor start → stop'}"),
        "denoise_s": (metric(den["duration_s"], "s", timer, f"{sync_note}; stage {denoise_stage}") if den
                      else unavailable("s", f"no {denoise_stage!r} stage")),
    }
    durs = [s["duration_s"] for s in steps if isinstance(s.get("duration_s"), int | float)]
    if durs:
        t["s_per_step"] = metric(sig(sum(durs) / len(durs), 6), "s", "computed", f"mean of {len(durs)} steps")
        t["first_step_s"] = metric(durs[0], "s", timer, None)
        t["mean_rest_step_s"] = (metric(sig(sum(durs[1:]) / len(durs[1:]), 6), "s", "computed",
                                        f"mean of steps 2..{len(durs)}") if len(durs) > 1
                                 else unavailable("s", "only one step"))
    else:
        for k in ("s_per_step", "first_step_s", "mean_rest_step_s"):
            t[k] = unavailable("s", "no Step_<i> stages")
    run_mem = monitor.run_memory()
    t["peak_memory_gb"] = dict(run_mem["peak_gb"], reason=run_mem["peak_gb"]["reason"] or "max allocated over the run")
    t["peak_reserved_gb"] = dict(run_mem["peak_reserved_gb"], reason=run_mem["peak_reserved_gb"]["reason"]
                                 or "max reserved by the caching allocator over the run")
    peak = value_of(run_mem["peak_gb"])
    if den is not None and value_of(den["memory"]["start_gb"]) is not None:
        static = value_of(den["memory"]["start_gb"])
        t["static_memory_gb"] = metric(static, "GiB", "torch.cuda", f"allocated at start of {denoise_stage}")
        t["dynamic_memory_gb"] = metric(None if peak is None else round(peak - static, 4), "GiB", "computed",
                                        "run peak − static")
    elif not monitor.memory.available:
        t["static_memory_gb"] = unavailable("GiB", monitor.memory.reason or "no CUDA device")
        t["dynamic_memory_gb"] = unavailable("GiB", monitor.memory.reason or "no CUDA device")
    else:
        t["static_memory_gb"] = unavailable("GiB", f"no {denoise_stage!r} stage")
        t["dynamic_memory_gb"] = unavailable("GiB", f"no {denoise_stage!r} stage")
    run_win = monitor.window_metrics(0.0, monitor.now_s())
    scope = den or root
    sm = dict(scope["sm"]) if scope else dict(run_win["sm"])
    if sm["value"] is not None:
        where = f"over {scope['name']}" if scope else "over the run"
        sm["reason"] = "; ".join(x for x in (where, sm.get("reason")) if x)
    t["mean_sm_percent"] = sm
    whole = root or run_win
    t["compute_load"] = dict(whole["compute_load"])
    t["energy_j"] = dict(whole["energy_j"])
    total_flops, srcs = monitor.total_flops()
    t["flops"] = (metric(total_flops, "FLOP", "+".join(sorted(srcs)), "all FLOPs recorded in the run")
                  if total_flops else unavailable("FLOP", "no FLOPs recorded"))
    if den is not None and value_of(den["flops"]) is not None:
        t["tflops_per_s"] = dict(den["tflops_per_s"], reason=f"over {denoise_stage}")
        t["mfu"] = dict(den["mfu"])
        if t["mfu"]["value"] is not None:
            t["mfu"]["reason"] = f"over {denoise_stage}; " + (t["mfu"]["reason"] or "")
    else:
        fm = monitor.flops_metrics(total_flops, srcs, wall, "no FLOPs recorded")
        t["tflops_per_s"], t["mfu"] = fm["tflops_per_s"], fm["mfu"]
    t.update(monitor.run_host())  # extra: cpu_percent, host_rss_peak_gb over the run
    return t


def build_report(monitor: Monitor, *, run: dict[str, Any], weights: dict[str, Any],
                 outputs: dict[str, Any] | None = None, status: str = "ok", error: Any = None,
                 system: dict[str, Any] | None = None, root_stage: str = TOTAL.name,
                 denoise_stage: str = DENOISING.name) -> dict[str, Any]:
    """The report object for a run. Stops the monitor first (closing open stages as incomplete).

    ``error`` may be an exception (its type, first message line and the monitor's failed stage are
    recorded) or a ``{"stage", "type", "message"}`` dict. ``system`` defaults to
    ``collect_system_info(monitor.device)``.
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
    if system is None:
        from ..monitor.system import collect_system_info

        system = collect_system_info(monitor.device)
    monitor.stop()
    stages = monitor.stage_dicts()
    steps = steps_of(stages)
    out = {"video": None, "frames": None, "width": None, "height": None}
    out.update(outputs or {})
    w = {"kind": None, "source": None, "note": ""}
    w.update(weights or {})
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": status,
        "error": _error_obj(error, monitor),
        "system": system,
        "run": dict(run),
        "weights": w,
        "monitor": {"device": str(monitor.device), "started": monitor.started_at,
                    "sample_interval_s": monitor.sample_interval_s, "sm_source": monitor.backend.sm_source,
                    "sm_reason": monitor.backend.sm_reason, "sampler_errors": monitor.sampler.errors,
                    "memory_unit": "GiB (2^30 bytes)"},
        "stages": stages,
        "steps": steps,
        "totals": _totals(monitor, stages, steps, root_stage, denoise_stage),
        "timeline": monitor.timeline(),
        "outputs": out,
    }


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` with NaN/inf floats as ``None`` (JSON has no NaN; a report must not be lost)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def _umask() -> int:
    """The process umask: from /proc on Linux (no change to process state), else set-and-restore."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, indent: int = 1) -> Path:
    """Write ``obj`` as JSON atomically (temp file in the same folder + ``os.replace``).

    The file gets the mode a plain ``open()`` would give it (``0o666 & ~umask``), not mkstemp's
    0600. NaN/inf become ``null``; objects JSON cannot hold are written as their ``str``.
    """
    text = json.dumps(json_safe(obj), ensure_ascii=False, indent=indent, allow_nan=False, default=str) + "\n"
    return write_text_atomic(path, text)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) atomically: temp file in the same folder, fsync, ``os.replace``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
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
    return check_report(data, str(p))
