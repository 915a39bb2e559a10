"""One peer's measured run, reduced to what the side-by-side table needs, and its job estimate.

A peer run (ours, diffusers, the official Wan code) is recorded as stage dicts — from our monitor
where it could wrap the peer's calls, else from CUDA-synchronized timers — and reduced here to
top-level stage seconds, per-step seconds and peak memory. A run of N < ``job_steps`` steps is
extrapolated to the whole job: first step + (job_steps − 1) × median of the later steps, labelled
``extrapolated from N steps``. Nothing here measures.
"""

from __future__ import annotations

import statistics
from typing import Any

from .. import stages as st

#: stages that make up "denoise + decode" in the ratio table
CORE = (st.DENOISING.name, st.VAE_DECODING.name)


def _value(x: Any) -> float | None:
    if isinstance(x, dict):
        x = x.get("value")
    return float(x) if isinstance(x, (int, float)) else None


def _peak(stage: dict[str, Any], memory_key: str, flat_key: str) -> float | None:
    """A stage's peak memory (GiB): from our schema's ``memory`` block, else a flat ``flat_key``."""
    v = _value((stage.get("memory") or {}).get(memory_key))
    return v if v is not None else _value(stage.get(flat_key))


def record_from_stages(peer: str, stage_dicts: list[dict[str, Any]], *, flags: dict[str, Any], job_steps: int,
                       label: str, notes: list[str] | None = None) -> dict[str, Any]:
    """A peer record from stage dicts (our report schema: name, parent, duration_s, memory)."""
    top = [s for s in stage_dicts if s.get("parent") == st.TOTAL.name]
    steps = [s for s in stage_dicts if st.is_step(str(s.get("name")))]
    steps.sort(key=lambda s: st.step_index(str(s["name"])) or 0)
    peaks_a = [_peak(s, "peak_gb", "peak_allocated_gb") for s in stage_dicts]
    peaks_r = [_peak(s, "peak_reserved_gb", "peak_reserved_gb") for s in stage_dicts]
    peaks_a = [p for p in peaks_a if p is not None]
    peaks_r = [p for p in peaks_r if p is not None]
    total = next((s for s in stage_dicts if s.get("name") == st.TOTAL.name), None)
    rec = {
        "peer": peer,
        "label": label,
        "flags": flags,
        "stages": {str(s["name"]): float(s["duration_s"]) for s in top if s.get("duration_s") is not None},
        "stage_peaks_gb": {str(s["name"]): _peak(s, "peak_gb", "peak_allocated_gb") for s in top},
        "steps_s": [float(s["duration_s"]) for s in steps],
        "total_s": float(total["duration_s"]) if total and total.get("duration_s") is not None else None,
        "peak_allocated_gb": max(peaks_a) if peaks_a else None,
        "peak_reserved_gb": max(peaks_r) if peaks_r else None,
        "job_steps": job_steps,
        "notes": list(notes or []),
    }
    rec["estimate"] = job_estimate(rec)
    return rec


def job_estimate(rec: dict[str, Any]) -> dict[str, Any]:
    """Seconds of the whole job (``job_steps`` steps) from a record of N timed steps.

    ``kind`` is ``measured`` when all steps ran, else ``extrapolated from N steps``. Stages other than
    Denoising are taken as measured; Denoising = first step + (job − 1) × median later step + the loop's
    time outside its steps (scheduler set-up), as measured.
    """
    steps = list(rec.get("steps_s") or [])
    job = int(rec["job_steps"])
    stages = dict(rec.get("stages") or {})
    n = len(steps)
    if n == 0:
        return {"kind": "unavailable", "reason": "no steps recorded"}
    first = steps[0]
    steady = statistics.median(steps[1:]) if n > 1 else first
    loop_rest = max(0.0, stages.get(st.DENOISING.name, sum(steps)) - sum(steps))
    denoise = first + (job - 1) * steady + loop_rest if n < job else stages.get(st.DENOISING.name, sum(steps))
    kind = "measured" if n >= job else f"extrapolated from {n} steps"
    out_stages = dict(stages)
    out_stages[st.DENOISING.name] = denoise
    core = sum(out_stages.get(k, 0.0) for k in CORE)
    measured_total = rec.get("total_s")
    outside = (measured_total - sum(stages.values())) if measured_total is not None else 0.0
    total = sum(out_stages.values()) + max(0.0, outside)
    load = sum(v for k, v in out_stages.items() if st.bound_of(k) == st.HOST_LOAD or k == "Load")
    return {
        "kind": kind, "timed_steps": n, "job_steps": job, "first_step_s": first, "steady_step_s": steady,
        "denoise_s": denoise, "decode_s": out_stages.get(st.VAE_DECODING.name), "core_s": core,
        "total_s": total, "total_without_load_s": total - load, "stages_s": out_stages,
    }


def ratio_rows(ours: dict[str, Any], peers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Peer seconds ÷ our seconds (> 1: ours is faster) for denoise + decode and end to end, per peer."""
    o = ours["estimate"]
    rows = []
    for p in peers:
        e = p["estimate"]
        if e.get("kind") == "unavailable" or o.get("kind") == "unavailable":
            rows.append({"peer": p["peer"], "label": p["label"], "unavailable": e.get("reason") or o.get("reason")})
            continue
        rows.append({
            "peer": p["peer"], "label": p["label"], "kind": e["kind"],
            "peer_core_s": e["core_s"], "ours_core_s": o["core_s"], "core_ratio": e["core_s"] / o["core_s"],
            "peer_total_s": e["total_s"], "ours_total_s": o["total_s"], "total_ratio": e["total_s"] / o["total_s"],
            "peer_total_wo_load_s": e["total_without_load_s"], "ours_total_wo_load_s": o["total_without_load_s"],
            "total_wo_load_ratio": e["total_without_load_s"] / o["total_without_load_s"],
            "peer_steady_step_s": e["steady_step_s"], "ours_steady_step_s": o["steady_step_s"],
            "peer_peak_reserved_gb": p.get("peak_reserved_gb"), "ours_peak_reserved_gb": ours.get("peak_reserved_gb"),
        })
    return rows
