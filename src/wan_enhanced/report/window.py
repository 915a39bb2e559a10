"""Metric dicts of one measured window: activity, power/energy, FLOPs/MFU, memory, host.

Turns the monitor's ``Metric`` measurements (base units, cause codes) into the report's metric
objects: GiB, rounding, and the words for why a value is unavailable or how it was derived.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..monitor.backend import NVML_UTIL_NOTE
from ..monitor.flops import mfu
from ..monitor.metrics import NEEDS_GPM, NO_SAMPLE
from ..monitor.metrics import Metric as Measured
from ..monitor.sampler import ENERGY_COUNTER_MIN_S
from .values import Metric, metric, sig, unavailable

if TYPE_CHECKING:
    from ..monitor.measure import WindowMeasurement
    from ..monitor.memory import MemFrame

GIB = float(1 << 30)


def gib(b: float | None) -> float | None:
    """Bytes → GiB, 4 decimals."""
    return None if b is None else round(b / GIB, 4)


def join_notes(*notes: str | None) -> str | None:
    """The non-empty notes joined by ``; `` (``None`` when there are none)."""
    return "; ".join(n for n in notes if n) or None


def activity_dicts(w: WindowMeasurement, sm_reason: str | None) -> dict[str, Any]:
    """``short_window``, SM / occupancy / tensor / DRAM activity and compute load of a window."""
    dur, short, interval = w.duration_s, w.short, w.interval_s
    out: dict[str, Any] = {"short_window": short}
    src = w.sm.source if w.sm.available else None
    if w.sm.reason not in (None, NO_SAMPLE):  # the device has no SM activity: its reason for all four
        for k in ("sm", "sm_occupancy", "tensor_util", "dram_util"):
            out[k] = unavailable("%", w.sm.reason)
        out["compute_load"] = unavailable("%·s", f"SM activity unavailable: {w.sm.reason}")
        return out
    short_note = (f"stage shorter than the {interval:g} s sampling window: value of the "
                  "overlapping sample(s), which extend beyond the stage") if short else None
    if src is None:
        why = (f"stage shorter than the {interval:g} s sampling window and no sample overlaps it"
               if short else "no SM sample overlaps this window")
        out["sm"] = unavailable("%", why)
        out["compute_load"] = unavailable("%·s", f"SM activity unavailable: {why}")
    else:
        note = join_notes(NVML_UTIL_NOTE if src == "nvml_util" else None, short_note)
        if not short and dur > 0 and w.sm_covered_s < 0.9 * dur:
            note = join_notes(note, f"samples cover {100 * w.sm_covered_s / dur:.0f}% of it")
        sm = float(w.sm.value)  # type: ignore[arg-type]
        out["sm"] = metric(round(sm, 2), "%", src, note)
        cl_note = "duration × utilization.gpu (not SM activity)" if src == "nvml_util" else None
        out["compute_load"] = metric(sig(dur * sm), "%·s", "computed", join_notes(cl_note, "short window" if short else None))
    for k in ("sm_occupancy", "tensor_util", "dram_util"):
        m: Measured = getattr(w, k)
        if m.reason == NEEDS_GPM:
            out[k] = unavailable("%", "needs GPM (Hopper or newer); " + (sm_reason or ""))
        elif m.available:
            out[k] = metric(round(float(m.value), 2), "%", "gpm", short_note)  # type: ignore[arg-type]
        else:
            out[k] = unavailable("%", "no GPM sample overlaps this window")
    return out


def power_energy_dicts(w: WindowMeasurement) -> dict[str, Metric]:
    """Mean power and energy of a window."""
    p, e = w.power_w, w.energy_j
    if not p.available and p.reason != NO_SAMPLE:  # the device reads no power
        return {"power_w": unavailable("W", str(p.reason)), "energy_j": unavailable("J", str(p.reason))}
    out = {"power_w": metric(round(float(p.value), 2), "W", "nvml_power", None) if p.available  # type: ignore[arg-type]
           else unavailable("W", "no power sample overlaps this window")}
    if e.available and e.source == "nvml_energy":
        out["energy_j"] = metric(sig(e.value), "J", "nvml_energy", None)
    elif e.available:
        why = (f"stage < {ENERGY_COUNTER_MIN_S:g} s: the energy counter updates only every ~100 ms, so "
               "mean power × duration" if w.duration_s < ENERGY_COUNTER_MIN_S
               else "energy counter unavailable: mean power × duration")
        out["energy_j"] = metric(sig(e.value), "J", "nvml_power", why)
    else:
        out["energy_j"] = unavailable("J", "no power or energy sample overlaps this window")
    return out


def flops_dicts(flops: float | None, sources: frozenset[str] | set[str], dur: float | None,
                peak_tflops: float | None, peak_note: str,
                no_flops_reason: str = "no FLOPs recorded for this stage") -> dict[str, Metric]:
    """FLOPs, achieved TFLOP/s and MFU (vs the catalog's dense bf16 peak) for a window."""
    if not flops:
        why = no_flops_reason
        return {"flops": unavailable("FLOP", why), "tflops_per_s": unavailable("TFLOP/s", why),
                "mfu": unavailable("%", why)}
    src = "+".join(sorted(sources)) or "analytic"
    out = {"flops": metric(float(flops), "FLOP", src, None)}
    if not dur or dur <= 0:
        out["tflops_per_s"] = unavailable("TFLOP/s", "zero-length window")
        out["mfu"] = unavailable("%", "zero-length window")
        return out
    out["tflops_per_s"] = metric(sig(flops / dur / 1e12), "TFLOP/s", "computed", f"{src} FLOPs / wall time")
    # mfu is None without a catalog peak: then unavailable, with the catalog's reason
    out["mfu"] = metric(sig(mfu(flops, dur, peak_tflops)), "%", "catalog", peak_note)
    return out


def memory_dicts(mem: MemFrame, nvml_used: Measured, memory_reason: str | None) -> dict[str, Metric]:
    """The schema's memory block for a window (GiB); unavailable with a reason off CUDA."""
    if memory_reason is not None:
        keys = ("start_gb", "end_gb", "peak_gb", "peak_reserved_gb", "nvml_used_gb", "static_gb", "dynamic_gb")
        return {k: unavailable("GiB", memory_reason) for k in keys}
    dyn = None if mem.peak is None or mem.start is None else mem.peak - mem.start
    if nvml_used.available:
        nv = metric(gib(int(nvml_used.value)), "GiB", "nvml",  # type: ignore[arg-type]
                    "max NVML used memory sampled in and around the stage (all processes, CUDA context included)")
    elif nvml_used.reason != NO_SAMPLE:
        nv = unavailable("GiB", str(nvml_used.reason))
    else:
        nv = unavailable("GiB", "no NVML memory sample in or around the stage")
    return {
        "start_gb": metric(gib(mem.start), "GiB", "torch.cuda", None),
        "end_gb": metric(gib(mem.end), "GiB", "torch.cuda", None if mem.end is not None else "stage open"),
        "peak_gb": metric(gib(mem.peak), "GiB", "torch.cuda", None),
        "peak_reserved_gb": metric(gib(mem.peak_reserved), "GiB", "torch.cuda", None),
        "nvml_used_gb": nv,
        "static_gb": metric(gib(mem.start), "GiB", "torch.cuda", "allocated at stage start"),
        "dynamic_gb": metric(gib(dyn), "GiB", "torch.cuda", "peak − start"),
    }


def host_dicts(w: WindowMeasurement) -> dict[str, Metric]:
    """Process CPU % (of one core) and peak RSS (sampled) over a window."""
    dur = w.duration_s
    if not w.cpu_s.available or dur <= 0:
        cpu = unavailable("%", "zero-length or open window")
    else:
        cpu = metric(round(100 * float(w.cpu_s.value) / dur, 1), "% of one core", "process_time",  # type: ignore[arg-type]
                     "process user+system CPU time / wall time")
    rss = w.rss_peak_bytes
    if not rss.available and rss.reason != NO_SAMPLE:
        return {"cpu_percent": cpu, "host_rss_peak_gb": unavailable("GiB", str(rss.reason))}
    return {"cpu_percent": cpu,
            "host_rss_peak_gb": metric(gib(rss.value), "GiB", "psutil", "max RSS of the samples in and around the stage"
                                       if rss.available else "no RSS sample in or around the stage")}
