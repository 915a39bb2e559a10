"""The GPU's state in the report: per-stage clocks / temperature / power limit / hold-back, and the run's verdict.

A stage is *held back* when, during part of its sampled time, NVML said the clocks were limited by
something other than idleness (power cap, thermal slowdown, sync boost, application clocks …); the
report gives each stage the share of its time and the reasons, and the run a verdict naming the stages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..monitor.gpu_state import WORDS
from ..stages import is_step
from .values import metric, unavailable, value_of

if TYPE_CHECKING:
    from ..monitor.measure import WindowMeasurement


def _words(reasons: dict[str, float]) -> str:
    return ", ".join(f"{WORDS.get(k, k)} {100 * v:.0f} %" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))


def gpu_state_dict(w: WindowMeasurement) -> dict[str, Any]:
    """The stage's ``gpu_state`` object: clock, temperature and power-limit metrics and ``held_back``."""
    g = w.gpu_state
    if g is None or g.reason is not None:
        why = "no GPU state read" if g is None else g.reason
        keys = (("sm_clock_mhz", "MHz"), ("sm_clock_min_mhz", "MHz"), ("mem_clock_mhz", "MHz"),
                ("temperature_max_c", "°C"), ("power_limit_w", "W"))
        out: dict[str, Any] = {k: unavailable(u, why) for k, u in keys}
        out["held_back"] = {"share": None, "reasons": {}, "reason": why}
        return out
    def m(v: float | None, unit: str, note: str | None = None) -> dict[str, Any]:
        return metric(None if v is None else round(v, 1), unit, "nvml", note) if v is not None else unavailable(
            unit, "not read on this GPU")
    share = g.held_back_share
    held = g.held_back
    return {
        "sm_clock_mhz": m(g.sm_clock_mhz, "MHz", "time-weighted mean"),
        "sm_clock_min_mhz": m(g.sm_clock_min_mhz, "MHz"),
        "mem_clock_mhz": m(g.mem_clock_mhz, "MHz", "time-weighted mean"),
        "temperature_max_c": m(g.temperature_max_c, "°C"),
        "power_limit_w": m(g.power_limit_w, "W", "enforced limit"),
        "held_back": {"share": None if share is None else round(share, 4),
                      "reasons": {k: round(v, 4) for k, v in held.items()},
                      "reason": None if share is not None else "no clock-event reasons sampled in this window",
                      "covered_s": round(g.covered_s, 3)},
    }


def held_back_text(stage: dict[str, Any]) -> str | None:
    """``held back 12 %: software power cap 12 %`` for a held-back stage, else ``None``."""
    hb = (stage.get("gpu_state") or {}).get("held_back") if isinstance(stage.get("gpu_state"), dict) else None
    if not isinstance(hb, dict) or not hb.get("share"):
        return None
    return f"held back {100 * float(hb['share']):.0f} %: {_words(hb.get('reasons') or {})}"


def run_gpu_state(stages: list[dict[str, Any]], run_window: dict[str, Any]) -> dict[str, Any]:
    """The report's ``gpu_state``: the whole run's state, the held-back stages and a one-line verdict.

    The steps are taken together (their held-back time summed over their sampled time); other stages
    count one by one, containers (stages with children) only through their children.
    """
    parents = {s.get("parent_index") for s in stages}
    groups: dict[str, list[dict[str, Any]]] = {}
    for s in stages:
        if s.get("index") in parents or not s.get("parent"):
            continue
        groups.setdefault("Step_*" if is_step(str(s.get("name"))) else str(s.get("name")), []).append(s)
    held_stages = []
    read_any = False
    for label, group in groups.items():
        covered = held = 0.0
        reasons: dict[str, float] = {}
        for s in group:
            hb = (s.get("gpu_state") or {}).get("held_back") or {}
            c = float(hb.get("covered_s") or 0.0)
            if hb.get("share") is None or c <= 0:
                continue
            read_any = True
            covered += c
            held += c * float(hb["share"])
            for k, v in (hb.get("reasons") or {}).items():
                reasons[k] = reasons.get(k, 0.0) + c * float(v)
        if covered > 0 and held > 0:
            held_stages.append({"stage": label, "stages": len(group), "share": round(held / covered, 4),
                                "reasons": {k: round(v / covered, 4) for k, v in reasons.items()},
                                "seconds": round(sum(float(s.get("duration_s") or 0.0) for s in group), 3)})
    if not read_any:
        why = ((run_window.get("held_back") or {}).get("reason") or "clock-event reasons were not read")
        verdict = f"unavailable: {why}"
    elif not held_stages:
        verdict = "not held back: no clock-event reason other than idle in any stage"
    else:
        held_stages.sort(key=lambda h: -h["share"] * h["seconds"])
        verdict = "held back in " + "; ".join(
            f"{h['stage']} ({100 * h['share']:.0f} % of its time: {_words(h['reasons'])})" for h in held_stages[:6])
        if len(held_stages) > 6:
            verdict += f"; and {len(held_stages) - 6} more stages"
    out = dict(run_window)
    out["held_back_stages"] = held_stages
    out["verdict"] = verdict
    return out


def state_value(stage: dict[str, Any], key: str) -> float | None:
    """One number of a stage's ``gpu_state`` (``None`` when absent)."""
    g = stage.get("gpu_state")
    return value_of(g.get(key)) if isinstance(g, dict) else None
