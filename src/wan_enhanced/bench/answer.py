"""The answer first: the standard job on each GPU — seconds per video, fit, and what a video costs.

The standard job is Wan2.2 TI2V-5B text→video at 1280×704, 121 frames, 50 steps, CFG 5 (any seed or
prompt). A measured GPU's row comes from our runs of that job on it (the median of its runs, min–max
as the band; a run of fewer steps is extrapolated and says from how many); every other GPU asked for is
projected (:mod:`.projection`) from the measured runs, one projection per source run, and the row shows
the one that fits best and then runs fastest, with the flags of its source run and the validation's
error band. Nothing here measures or formats.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from . import cost_model as cm
from . import perf_model as pm
from .compare_inputs import Measured
from .projection import (
    JOB_STEPS,
    WARMUP_PART,
    Projection,
    ProjectionError,
    fit_verdict,
    profile_from_report,
    project,
)

STANDARD_JOB = {"task": "ti2v-5B", "size": "1280*704", "frame_num": 121, "sample_guide_scale": 5.0}
JOB_TITLE = "Wan2.2 TI2V-5B T2V, 1280×704, 121 frames (5 s @ 24 fps), 50 steps, CFG 5"
DEFAULT_TARGETS = ("rtx-4090", "rtx-pro-6000-blackwell")
_FIT_ORDER = {"fits": 0, "marginal": 1, "unknown": 2, "does not fit": 3}


def is_standard_job(report: dict[str, Any]) -> bool:
    """True for a single-GPU text→video run of the standard job (steps may be fewer: extrapolated)."""
    run = report.get("run") or {}
    return (all(run.get(k) == v for k, v in STANDARD_JOB.items()) and not run.get("image")
            and int(run.get("ulysses_size") or 1) == 1 and not run.get("cfg_parallel"))


@dataclass
class AnswerRow:
    """One GPU's answer for the standard job."""

    key: str
    name: str
    basis: str  # "measured" | "extrapolated from N steps" | "projected"
    seconds: float
    band: tuple[float, float]  # low, high seconds
    band_note: str
    source: str  # the run(s) it comes from
    flags: str
    fit: str
    need_gb: float | None
    memory_gb: float | None
    videos_per_h_per_1k: float | None
    usd_per_video: tuple[float, float] | None
    wh_per_video: float | None
    notes: list[str] = field(default_factory=list)
    projection: Projection | None = None
    warm_seconds: float | None = None  # the same job without the first call's cold start (warm caches)

    @property
    def projected(self) -> bool:
        """True for a projected row."""
        return self.basis == "projected"


def _costs(row: AnswerRow, entry: dict[str, Any]) -> None:
    v, why = cm.videos_per_hour_per_1k(row.seconds, entry)
    row.videos_per_h_per_1k = v
    if v is None:
        row.notes.append(f"videos/h per $1k: unavailable ({why})")
    d, dwhy = cm.dollars_per_video(row.seconds, entry)
    row.usd_per_video = d
    if d is None:
        row.notes.append(f"$ per video: unavailable ({dwhy})")


def measured_row(entry: dict[str, Any], runs: list[Measured], context_gb: float) -> AnswerRow:
    """A measured GPU's row from its standard-job runs (default flags preferred)."""
    profiles = []
    for m in runs:
        try:
            profiles.append((m, profile_from_report(m.report, entry, source=str(m.path), job_steps=JOB_STEPS)))
        except ProjectionError:
            continue
    if not profiles:
        raise ProjectionError(f"{entry['key']}: no complete standard-job run")
    most = max(p.timed_steps for _, p in profiles)
    groups: dict[tuple[str, str], list[tuple[Measured, Any]]] = {}
    for m, p in profiles:
        if p.timed_steps == most:  # the longest runs: measured rather than extrapolated where there are any
            groups.setdefault((p.flags, p.kernel), []).append((m, p))
    # the fastest configuration a user can run (its flags are shown), by its median
    default = min(groups.values(), key=lambda g: statistics.median(p.job_seconds() for _, p in g))
    secs = [p.job_seconds() for _, p in default]
    kinds = sorted({p.job_kind for _, p in default})
    med = statistics.median(secs)
    m0, p0 = min(default, key=lambda mp: abs(mp[1].job_seconds() - med))
    fit, need = fit_verdict(max((p.peak_reserved_gb or 0.0) for _, p in default) or None,
                            float(entry["memory_gb"]), context_gb)
    row = AnswerRow(
        key=str(entry["key"]), name=str(entry.get("name") or entry["key"]),
        basis="measured" if kinds == ["measured"] else ", ".join(kinds), seconds=med, band=(min(secs), max(secs)),
        band_note=(f"min–max of {len(secs)} runs" if len(secs) > 1 else "single run: no spread measured"),
        source=", ".join(str(m.path) for m, _ in default), flags=f"{p0.flags}; {p0.kernel}", fit=fit, need_gb=need,
        memory_gb=float(entry["memory_gb"]), videos_per_h_per_1k=None, usd_per_video=None, wh_per_video=None)
    wh = []
    for m, p in default:
        e = p.energy_j
        measured_s = m.total_s
        if e and measured_s:
            wh.append(e / 3600.0 * p.job_seconds() / measured_s)
    row.warm_seconds = statistics.median(p.job_seconds() - max(0.0, p.first_step_s - p.steady_step_s)
                                         for _, p in default)
    row.wh_per_video = statistics.median(wh) if wh else None
    if not wh:
        row.notes.append("Wh per video: unavailable (no energy counter reading in the runs)")
    elif kinds != ["measured"]:
        row.notes.append("Wh per video scaled from the timed steps to the job")
    _costs(row, entry)
    return row


def projected_row(target: dict[str, Any], sources: list[tuple[Measured, dict[str, Any]]], *, host_scale: float,
                  context_gb: float) -> AnswerRow:
    """The best projection of ``target`` over the measured standard-job runs (fits first, then fastest)."""
    best: tuple[tuple[int, float], Projection, Measured, dict[str, Any]] | None = None
    for m, src in sources:
        try:
            prof = profile_from_report(m.report, src, source=str(m.path), job_steps=JOB_STEPS)
            p = project(prof, src, target, host_scale=host_scale, context_gb=context_gb)
        except ProjectionError:
            continue
        rank = (_FIT_ORDER.get(p.fit, 2), p.total_s)
        if best is None or rank < best[0]:
            best = (rank, p, m, src)
    if best is None:
        raise ProjectionError(f"{target['key']}: no measured standard-job run to project from")
    _, p, m, src = best
    band = p.band_pct
    lo, hi = (p.total_s * (1 - band / 100), p.total_s * (1 + band / 100)) if band is not None else (p.total_s, p.total_s)
    row = AnswerRow(
        key=str(target["key"]), name=str(target.get("name") or target["key"]), basis="projected",
        seconds=p.total_s, band=(lo, hi),
        band_note=(f"±{band:g} %: validation, {'same' if src.get('arch') == target.get('arch') else 'cross'}-"
                   "architecture" if band is not None else "no validation band recorded"),
        source=f"{m.path} ({src.get('name')}, {p.profile.job_kind})", flags=f"{p.profile.flags}; {p.kernel}", fit=p.fit,
        need_gb=p.need_gb, memory_gb=p.target_memory_gb, videos_per_h_per_1k=None, usd_per_video=None,
        wh_per_video=None, projection=p,
        # as the measured rows (and the report's video_s_warm): only the first step's excess; Prepare_DiT (FA4's
        # activation, the compile wrappers) is paid by every process, warm caches or not
        warm_seconds=p.total_s - sum(x.projected_s for x in p.parts if x.name == WARMUP_PART))
    wh, why = cm.projected_wh(p.total_s, p.profile.energy_j, m.total_s, src, target)
    row.wh_per_video = wh
    row.notes.append(f"Wh per video {why}" if wh is not None else f"Wh per video: unavailable ({why})")
    row.notes.append(f"attention on the target: {p.kernel_why}; band: {p.band_source}")
    _costs(row, target)
    return row


def answer_rows(runs: list[Measured], catalog: list[dict[str, Any]], targets: list[str] | None, *,
                host_scale: float = 1.0, context_gb: float = 1.0) -> tuple[list[AnswerRow], list[str]]:
    """Rows for every measured GPU and every target (default: measured GPUs + RTX 4090 + RTX PRO 6000)."""
    notes: list[str] = []
    std = [m for m in runs if m.status == "ok" and m.entry is not None and is_standard_job(m.report)]
    by_gpu: dict[str, list[Measured]] = {}
    for m in std:
        by_gpu.setdefault(str(m.entry["key"]), []).append(m)  # type: ignore[index]
    cat = {str(e["key"]): e for e in catalog}
    wanted = list(targets) if targets else list(by_gpu) + [k for k in DEFAULT_TARGETS if k not in by_gpu]
    rows: list[AnswerRow] = []
    sources = [(m, m.entry) for m in std if m.entry is not None and _projectable(m.entry)]
    for key in wanted:
        entry = cat[key]
        try:
            if key in by_gpu:
                rows.append(measured_row(entry, by_gpu[key], context_gb))
            else:
                pm.check_entry(entry)
                rows.append(projected_row(entry, sources, host_scale=host_scale, context_gb=context_gb))  # type: ignore[arg-type]
        except ProjectionError as exc:
            notes.append(str(exc))
    return rows, notes


def _projectable(entry: dict[str, Any]) -> bool:
    try:
        pm.check_entry(entry)
    except Exception:  # noqa: BLE001 - an entry the model cannot use is simply not a source
        return False
    return True
