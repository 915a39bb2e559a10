"""The single producer of the run report: monitor measurements → schema dicts (docs/report-schema.md).

The monitor hands out typed measurements in base units (``monitor.measure``); ``report.window``
turns one window's into metric dicts (GiB, rounding, the "unavailable because …" words and the notes
on derived values), and this module assembles the stages, totals and timeline into the report — for one process (``build_report``) and for the ranks of a
multi-GPU run (``merge_rank_reports``). Nothing else builds report dicts.
"""

from __future__ import annotations

import statistics
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from ..stages import CFG_EXCHANGE, DENOISING, TOTAL, WARMUP, is_step, step_index
from .gpu_state import gpu_state_dict, run_gpu_state
from .schema import SCHEMA, SCHEMA_VERSION, STATUSES
from .tree import add_remainders
from .values import Metric, metric, sig, unavailable, value_of
from .window import GIB, activity_dicts, flops_dicts, host_dicts, join_notes, memory_dicts, power_energy_dicts

if TYPE_CHECKING:  # keep the report package free of the torch import
    from ..monitor.measure import RunMeasurement, StageMeasurement


def stage_dict(s: StageMeasurement, run: RunMeasurement) -> dict[str, Any]:
    """One schema stage object."""
    r, w = s.record, s.window
    dur = w.end_s - w.start_s
    d: dict[str, Any] = {
        "name": r.name, "parent": r.parent, "depth": r.depth, "comment": r.comment,
        "index": r.index, "parent_index": r.parent_index,
        "start_s": round(r.start_s, 6), "end_s": round(w.end_s, 6), "duration_s": round(dur, 6),
        "memory": memory_dicts(r.mem, w.nvml_used_bytes, run.memory_reason),
    }
    d.update(activity_dicts(w, run.device_facts.sm_reason))
    d.update(power_energy_dicts(w))
    d.update(flops_dicts(s.flops, s.flops_sources, dur, run.peak_tflops, run.peak_note))
    d.update(host_dicts(w))
    d["gpu_state"] = gpu_state_dict(w)
    d["failed"] = r.failed
    d["incomplete"] = r.incomplete or r.end_s is None
    if r.error_type:
        d["error_type"] = r.error_type
    return d


def stage_dicts(run: RunMeasurement) -> list[dict[str, Any]]:
    """Every stage as a schema stage object, in opening order; parents carry ``children_s`` and their
    ``untracked_s`` remainder."""
    out = [stage_dict(s, run) for s in run.stages]
    add_remainders(out)
    return out


def timeline_dict(run: RunMeasurement, ndigits: int = 3) -> dict[str, Any]:
    """The sampled timeline for charts: time, SM %, allocated memory, power (+ GPM extras)."""
    samples = run.samples

    def col(attr: str, scale: float = 1.0) -> list[float | None]:
        return [None if getattr(s, attr) is None else round(getattr(s, attr) / scale, ndigits) for s in samples]

    return {
        "t_s": [round(s.t1, ndigits) for s in samples],
        "sm_percent": col("sm"),
        "sm_source": run.device_facts.sm_source,
        "memory_gb": col("allocated_bytes", GIB),
        "power_w": col("power_w"),
        "interval_s": run.device_facts.interval_s,
        "sm_occupancy": col("sm_occupancy"),
        "tensor_util": col("tensor_util"),
        "dram_util": col("dram_util"),
        "nvml_used_gb": col("nvml_used_bytes", GIB),
        "host_rss_gb": col("rss_bytes", GIB),
        "sm_clock_mhz": col("sm_clock_mhz"),
        "mem_clock_mhz": col("mem_clock_mhz"),
        "temperature_c": col("temperature_c"),
        "power_limit_w": col("power_limit_w"),
        "clock_reasons": [s.clock_reasons for s in samples],  # NVML clock-event bitmask at each read
    }


# ------------------------------------------------------------------ the run

def steps_of(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``[{"index", "duration_s"}]`` for the stages named ``Step_<i>``, in the order they ran."""
    out = []
    for s in sorted(stages, key=lambda s: s.get("start_s", 0.0)):
        i = step_index(str(s.get("name", "")))
        if i is not None:
            out.append({"index": i, "duration_s": s.get("duration_s")})
    return out


def _error_obj(error: Any, failed_stage: str | None) -> dict[str, Any] | None:
    if error is None:
        return None
    if isinstance(error, BaseException):
        msg = str(error).strip().splitlines()
        return {"stage": failed_stage, "type": type(error).__name__, "message": (msg[0] if msg else repr(error))[:2000]}
    if isinstance(error, dict):
        out = dict(error)  # extra keys (e.g. saved_latents) are kept
        out["stage"] = error.get("stage") or failed_stage
        out["type"] = str(error.get("type", "Error"))
        out["message"] = str(error.get("message", ""))
        return out
    return {"stage": failed_stage, "type": "Error", "message": str(error)}


def _step_totals(steps: list[dict[str, Any]]) -> dict[str, Metric]:
    durs = [s["duration_s"] for s in steps if isinstance(s.get("duration_s"), int | float)]
    if not durs:
        return {k: unavailable("s", "no Step_<i> stages") for k in ("s_per_step", "first_step_s", "mean_rest_step_s")}
    return {"s_per_step": metric(sig(sum(durs) / len(durs), 6), "s", "computed", f"mean of {len(durs)} steps"),
            "first_step_s": metric(durs[0], "s", "timer", None),
            "mean_rest_step_s": (metric(sig(sum(durs[1:]) / len(durs[1:]), 6), "s", "computed",
                                        f"mean of steps 2..{len(durs)}") if len(durs) > 1
                                 else unavailable("s", "only one step"))}


def warm_totals(steps: list[dict[str, Any]], warmup_s: float | None, wall_s: float | None) -> dict[str, Metric]:
    """``steady_s_per_step``, ``cold_start_s`` and ``video_s_warm``: the first call's host work taken apart.

    The steady step is the median of the steps after the first (of all steps when a ``Warmup`` forward ran
    and there is only one). The cold start is what the first call cost beyond steady work: ``Warmup`` +
    ``Step_0`` − steady × (2 with a warm-up forward, which does a step's DiT work, else 1). The warm video
    time is the run without that excess and without the warm-up forward: wall − (``Warmup`` + ``Step_0`` −
    steady).
    """
    durs = [float(s["duration_s"]) for s in steps if isinstance(s.get("duration_s"), int | float)]
    missing = "no Step_<i> stages" if not durs else "only one step and no Warmup stage: no steady step to compare with"
    if len(durs) > 1:
        steady = metric(sig(statistics.median(durs[1:]), 6), "s", "computed", f"median of steps 2..{len(durs)}")
    elif durs and warmup_s is not None:
        steady = metric(durs[0], "s", "timer", "the one step, after the Warmup forward")
    else:
        return {k: unavailable("s", missing) for k in ("steady_s_per_step", "cold_start_s", "video_s_warm")}
    st = float(steady["value"])  # type: ignore[arg-type]
    warm = warmup_s or 0.0
    units = 2 if warmup_s is not None else 1
    cold = warm + durs[0] - units * st
    how = ("Warmup + Step_0 − 2 × steady step" if warmup_s is not None else "Step_0 − steady step")
    out = {"steady_s_per_step": steady,
           "cold_start_s": metric(sig(cold, 6), "s", "computed",
                                  f"{how}: the first call's compile, kernel build and lazy set-up (host work)")}
    if wall_s is None:
        out["video_s_warm"] = unavailable("s", "no wall time")
    else:
        minus = "Warmup + Step_0 − steady step" if warmup_s is not None else "Step_0 − steady step"
        out["video_s_warm"] = metric(
            sig(wall_s - (warm + durs[0] - st), 6), "s", "computed",
            f"wall − ({minus}): this job with its first step at steady speed; a fresh process on a machine with warm "
            "compile caches still pays part of cold_start_s (tracing, guards)")
    return out


def _steady_rate(stages: list[dict[str, Any]], steady: Metric | None, run: RunMeasurement) -> dict[str, Metric]:
    """TFLOP/s and MFU of one steady denoising step (a step's FLOPs ÷ ``steady_s_per_step``)."""
    step = next((s for s in stages if is_step(str(s.get("name"))) and value_of(s.get("flops")) is not None), None)
    sv = value_of(steady)
    if step is None or sv is None or sv <= 0:
        why = "no FLOPs recorded for the steps" if step is None else (steady or {}).get("reason") or "no steady step"
        return {"steady_tflops_per_s": unavailable("TFLOP/s", why), "steady_mfu": unavailable("%", why)}
    fm = flops_dicts(value_of(step["flops"]), {str(step["flops"].get("source"))}, sv, run.peak_tflops, run.peak_note)
    rate = dict(fm["tflops_per_s"], reason="one step's FLOPs ÷ steady_s_per_step")
    m = dict(fm["mfu"])
    if m["value"] is not None:
        m["reason"] = "one steady step; " + (m["reason"] or "")
    return {"steady_tflops_per_s": rate, "steady_mfu": m}


def totals_dict(run: RunMeasurement, stages: list[dict[str, Any]], steps: list[dict[str, Any]],
                root_stage: str = TOTAL.name, denoise_stage: str = DENOISING.name) -> dict[str, Metric]:
    """The schema's ``totals``: wall time, steps, memory, SM, compute load, energy, FLOPs/MFU, host."""
    root = next((s for s in stages if s.get("name") == root_stage and s.get("depth") == 0), None)
    den = next((s for s in stages if s.get("name") == denoise_stage), None)
    sync_note = "CUDA-synchronized" if run.is_cuda else "host clock"
    wall = root["duration_s"] if root else run.run.end_s
    t: dict[str, Metric] = {
        "wall_s": metric(round(wall, 6), "s", "timer", f"{sync_note}; {'stage ' + root_stage if root else 'monitor start → stop'}"),
        "denoise_s": (metric(den["duration_s"], "s", "timer", f"{sync_note}; stage {denoise_stage}") if den
                      else unavailable("s", f"no {denoise_stage!r} stage")),
    }
    t.update(_step_totals(steps))
    warmup = next((s for s in stages if s.get("name") == WARMUP.name), None)
    t.update(warm_totals(steps, warmup["duration_s"] if warmup else None, wall))
    run_mem = memory_dicts(run.run_mem, run.run.nvml_used_bytes, run.memory_reason)
    t["peak_memory_gb"] = dict(run_mem["peak_gb"], reason=run_mem["peak_gb"]["reason"] or "max allocated over the run")
    t["peak_reserved_gb"] = dict(run_mem["peak_reserved_gb"], reason=run_mem["peak_reserved_gb"]["reason"]
                                 or "max reserved by the caching allocator over the run")
    peak = value_of(run_mem["peak_gb"])
    if den is not None and value_of(den["memory"]["start_gb"]) is not None:
        static = value_of(den["memory"]["start_gb"])
        t["static_memory_gb"] = metric(static, "GiB", "torch.cuda", f"allocated at start of {denoise_stage}")
        t["dynamic_memory_gb"] = metric(None if peak is None else round(peak - static, 4), "GiB", "computed",  # type: ignore[operator]
                                        "run peak − static")
    else:
        why = run.memory_reason or f"no {denoise_stage!r} stage"
        t["static_memory_gb"] = unavailable("GiB", why)
        t["dynamic_memory_gb"] = unavailable("GiB", why)
    run_win = dict(activity_dicts(run.run, run.device_facts.sm_reason), **power_energy_dicts(run.run))
    scope = den or root
    sm = dict(scope["sm"]) if scope else dict(run_win["sm"])
    if sm["value"] is not None:
        sm["reason"] = join_notes(f"over {scope['name']}" if scope else "over the run", sm.get("reason"))
    t["mean_sm_percent"] = sm
    whole = root or run_win
    t["compute_load"] = dict(whole["compute_load"])
    t["energy_j"] = dict(whole["energy_j"])
    total, srcs = run.total_flops, run.total_flops_sources
    t["flops"] = (metric(total, "FLOP", "+".join(sorted(srcs)), "all FLOPs recorded in the run")
                  if total else unavailable("FLOP", "no FLOPs recorded"))
    if den is not None and value_of(den["flops"]) is not None:
        incl = "incl. the warm-up forward" if warmup else "incl. the first step's compile"
        t["scope_flops"] = dict(den["flops"], reason=f"FLOPs of {denoise_stage}: the scope of tflops_per_s and mfu")
        t["tflops_per_s"] = dict(den["tflops_per_s"],
                                 reason=f"{denoise_stage}'s FLOPs ÷ its {den['duration_s']:.4g} s ({incl})")
        scope = f"over {denoise_stage} ({incl})"
        t["mfu"] = dict(den["mfu"])
        if t["mfu"]["value"] is not None:
            t["mfu"]["reason"] = f"{scope}; " + (t["mfu"]["reason"] or "")
    else:
        fm = flops_dicts(total, srcs, wall, run.peak_tflops, run.peak_note, "no FLOPs recorded")
        t["scope_flops"] = dict(fm["flops"], reason="all FLOPs of the run: the scope of tflops_per_s and mfu")
        t["tflops_per_s"], t["mfu"] = fm["tflops_per_s"], fm["mfu"]
    t.update(_steady_rate(stages, t.get("steady_s_per_step"), run))
    t.update(host_dicts(run.run))  # extra: cpu_percent, host_rss_peak_gb over the run
    return t


def report_from(run: RunMeasurement, *, run_info: dict[str, Any], weights: dict[str, Any],
                outputs: dict[str, Any] | None = None, status: str = "ok", error: Any = None,
                system: dict[str, Any] | None = None, root_stage: str = TOTAL.name,
                denoise_stage: str = DENOISING.name, journal: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report object for a run's measurements (see ``build_report``); ``journal``: the journal's
    ``info`` (the process, the last stage written, how many writes and their time)."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
    stages = stage_dicts(run)
    steps = steps_of(stages)
    out = {"video": None, "frames": None, "width": None, "height": None}
    out.update(outputs or {})
    w = {"kind": None, "source": None, "note": ""}
    w.update(weights or {})
    dev = run.device_facts
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": status,
        "error": _error_obj(error, run.failed_stage),
        "system": system,
        "run": dict(run_info),
        "weights": w,
        "monitor": {"device": run.device, "started": run.started_at, "sample_interval_s": dev.interval_s,
                    "sm_source": dev.sm_source, "sm_reason": dev.sm_reason, "sampler_errors": run.sampler_errors,
                    "energy": dev.energy_note or None,
                    "memory_unit": "GiB (2^30 bytes)"},
        "stages": stages,
        "steps": steps,
        "totals": totals_dict(run, stages, steps, root_stage, denoise_stage),
        "gpu_state": run_gpu_state(stages, gpu_state_dict(run.run)),
        "timeline": timeline_dict(run),
        "outputs": out,
        "journal": journal,
    }


class MeasuredMonitor(Protocol):
    """What ``build_report`` needs of a monitor (``wan_enhanced.monitor.Monitor``; no import of it here,
    so that the report does not depend on the monitor's implementation)."""

    device: Any

    def stop(self) -> None: ...

    def measure(self) -> RunMeasurement: ...


def build_report(monitor: MeasuredMonitor, *, run: dict[str, Any], weights: dict[str, Any],
                 outputs: dict[str, Any] | None = None, status: str = "ok", error: Any = None,
                 system: dict[str, Any] | None = None, root_stage: str = TOTAL.name,
                 denoise_stage: str = DENOISING.name, journal: dict[str, Any] | None = None) -> dict[str, Any]:
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
    return report_from(monitor.measure(), run_info=run, weights=weights, outputs=outputs, status=status,
                       error=error, system=system, root_stage=root_stage, denoise_stage=denoise_stage,
                       journal=journal)


# ------------------------------------------------------------------ multi-GPU: the ranks' reports

def merge_rank_reports(main: dict[str, Any], reports: list[dict[str, Any]], *, world_size: int,
                       ulysses_size: int, cfg_parallel: bool) -> dict[str, Any]:
    """Rank 0's report plus, per rank, its stage times, memory and SM%, and the measured communication."""
    ranks = []
    for r, rep in enumerate(reports):
        stages = rep.get("stages", [])
        comm = [s["duration_s"] for s in stages if s["name"] == CFG_EXCHANGE.name]
        ranks.append({
            "rank": r,
            "status": rep.get("status"),
            "gpu": (rep.get("system", {}).get("gpu") or {}).get("name"),
            "stages": [{"name": s["name"], "parent": s.get("parent"), "duration_s": s["duration_s"],
                        "peak_gb": s.get("memory", {}).get("peak_gb"), "sm": s.get("sm")} for s in stages
                       if not is_step(s["name"]) and s["name"] != CFG_EXCHANGE.name],
            "totals": rep.get("totals", {}),
            "communication_s": sum(comm) if comm else None,
        })
    comm_note = (f"{CFG_EXCHANGE.name} stages: all-gather of the two noise predictions, "
                 "including waiting for the partner" if cfg_parallel else None)
    main["parallel"] = {
        "world_size": world_size, "ulysses_size": ulysses_size, "cfg_parallel": cfg_parallel,
        "communication": {
            "cfg_exchange": comm_note or "no CFG parallel",
            "ulysses_all_to_all": ("unavailable: runs inside each attention call on the compute stream; "
                                   "not separable without a profiler trace") if ulysses_size > 1 else "none",
        },
        "ranks": ranks,
    }
    totals = main.setdefault("totals", {})
    n = len(reports)
    for key, how in (("flops", sum), ("energy_j", sum), ("tflops_per_s", sum), ("mfu", lambda v: sum(v) / len(v))):
        vals = [((rep.get("totals") or {}).get(key) or {}).get("value") for rep in reports]
        unit = (totals.get(key) or {}).get("unit", "")
        if any(v is None for v in vals):
            totals[key] = unavailable(unit, f"not available on every one of the {n} ranks")
        else:
            what = "sum" if how is sum else "mean"
            totals[key] = metric(how(vals), unit, f"{what} over {n} ranks", (totals.get(key) or {}).get("reason"))
    gpu = (main.get("system") or {}).get("gpu")
    if gpu:
        gpu["count"] = world_size  # GPUs this run used (one per rank)
    return main
