"""``format_report``: the seed's "[Execution Trace Analysis]" table, a summary and metric sources.

Unavailable values print as ``n/a`` (never 0); the sources section says where each number came
from and why the missing ones are missing. ``report_main`` is ``format_report.py REPORT.json``.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from ..errors import ReportError
from .schema import STEP_RE, load_report

NA = "n/a"
COLLAPSE_STEPS_OVER = 20
KEEP_HEAD, KEEP_TAIL = 3, 2


def _v(m: Any) -> float | None:
    if isinstance(m, dict):
        v = m.get("value")
        return v if isinstance(v, int | float) and not isinstance(v, bool) else None
    return None


def _f(v: float | None, width: int, prec: int = 2) -> str:
    return f"{NA:>{width}}" if v is None else f"{v:>{width}.{prec}f}"


def _secs(v: float | None) -> str:
    return NA if v is None else f"{v:.2f} s"


def _human_flops(v: float | None) -> str:
    if v is None:
        return NA
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if abs(v) >= scale:
            return f"{v / scale:.2f} {unit}"
    return f"{v:.0f} FLOP"


def _human_energy(v: float | None) -> str:
    if v is None:
        return NA
    if v >= 3.6e6:
        return f"{v / 3.6e6:.3f} kWh"
    if v >= 1e3:
        return f"{v / 1e3:.2f} kJ"
    return f"{v:.1f} J"


def _row(stage: dict[str, Any], name_w: int) -> str:
    mem = stage.get("memory") or {}
    ms, me, mp = _v(mem.get("start_gb")), _v(mem.get("end_gb")), _v(mem.get("peak_gb"))
    delta = me - ms if ms is not None and me is not None else None
    sm = _v(stage.get("sm"))
    short = bool(stage.get("short_window")) and sm is not None
    sm_s = _f(sm, 5, 1) + "*" if short else _f(sm, 6, 1)
    name = "  " * int(stage.get("depth") or 0) + str(stage.get("name", "?"))
    comment = str(stage.get("comment") or "")
    flags = [x for x in ("failed", "incomplete") if stage.get(x)]
    if flags:
        comment = (comment + " " if comment else "") + "[" + ", ".join(flags) + "]"
    dur = stage.get("duration_s")
    dur = dur if isinstance(dur, int | float) else None
    return (f"{name:<{name_w}} | {_f(dur, 8)} | {sm_s} | {_f(_v(stage.get('compute_load')), 8, 1)} | "
            f"{_f(ms, 9)} | {_f(me, 9)} | {_f(mp, 9)} | {_f(delta, 9)} | {comment}")


def _collapse(stages: list[dict[str, Any]], limit: int) -> list[dict[str, Any] | str]:
    """Replace the middle of long runs of sibling ``Step_<i>`` rows by one summary line."""
    steps = [i for i, s in enumerate(stages) if STEP_RE.match(str(s.get("name", "")))]
    if len(steps) <= limit:
        return list(stages)
    hidden = set(steps[KEEP_HEAD:len(steps) - KEEP_TAIL])
    hidden_stages = [stages[i] for i in sorted(hidden)]
    durs = [s["duration_s"] for s in hidden_stages if isinstance(s.get("duration_s"), int | float)]
    sms = [_v(s.get("sm")) for s in hidden_stages if _v(s.get("sm")) is not None]
    depth = int(hidden_stages[0].get("depth") or 0)
    summary = (f"{'  ' * depth}... {len(hidden)} steps collapsed ({hidden_stages[0]['name']} … "
               f"{hidden_stages[-1]['name']}): ")
    if durs:
        summary += f"mean {sum(durs) / len(durs):.3f} s, min {min(durs):.3f}, max {max(durs):.3f}"
    summary += f", mean SM {sum(sms) / len(sms):.1f} %" if sms else ", SM n/a"
    out: list[dict[str, Any] | str] = []
    for i, s in enumerate(stages):
        if i in hidden:
            if i == min(hidden):
                out.append(summary)
            continue
        out.append(s)
    return out


def format_table(report: dict[str, Any], collapse_over: int = COLLAPSE_STEPS_OVER) -> str:
    """The "[Execution Trace Analysis]" table alone."""
    stages = list(report.get("stages") or [])
    name_w = max([25] + [2 * int(s.get("depth") or 0) + len(str(s.get("name", ""))) for s in stages])
    header = (f"{'Stage Name':<{name_w}} | Time (s) | {'SM %':>6} | {'Load':>8} | {'Mem Start':>9} | "
              f"{'Mem End':>9} | {'Peak Mem':>9} | {'Mem Δ':>9} | Comment")
    rule = "-" * (len(header) + 20)
    lines = ["[Execution Trace Analysis]", rule, header, rule]
    rows = _collapse(stages, collapse_over)
    for r in rows:
        lines.append((r if isinstance(r, str) else _row(r, name_w)).rstrip())
    lines.append(rule)
    on_gpu = str((report.get("monitor") or {}).get("device", "")).startswith("cuda")
    notes = [f"Time = {'CUDA-synchronized ' if on_gpu else ''}wall time. Load = compute load = Time × SM % "
             "(%·s). Memory in GiB (torch allocated); Mem Δ = end − start."]
    if any(s.get("short_window") and _v(s.get("sm")) is not None for s in stages):
        interval = (report.get("timeline") or {}).get("interval_s")
        win = f"{interval:g} s " if isinstance(interval, int | float) else ""
        notes.append(f"* stage shorter than the {win}sampling window: SM % of the overlapping sample(s).")
    if not stages:
        notes.append("(no stages recorded)")
    lines += notes
    return "\n".join(lines)


def _line(label: str, text: str, width: int = 18) -> str:
    return f"{label:<{width}}: {text}"


def _mtxt(m: Any, fmt: str = "{:.2f}", unit: str = "") -> str:
    """A metric as text: formatted value (+ unit), or ``n/a (reason)``."""
    v = _v(m)
    if v is None:
        reason = m.get("reason") if isinstance(m, dict) else None
        return f"{NA} ({reason})" if reason else NA
    return fmt.format(v) + (f" {unit}" if unit else "")


def format_summary(report: dict[str, Any]) -> str:
    """The "[Summary]" block: totals, steps, memory, FLOPs/MFU, energy, weights, system."""
    t = report.get("totals") or {}
    lines = ["[Summary]", _line("Status", str(report.get("status", "?")))]
    err = report.get("error")
    if isinstance(err, dict):
        lines.append(_line("Error", f"{err.get('type')}: {err.get('message')} (stage {err.get('stage') or NA})"))
    lines.append(_line("Total wall time", _mtxt(t.get("wall_s"), unit="s")))
    steps = report.get("steps") or []
    den = t.get("denoise_s")
    if _v(den) is not None or steps:
        txt = f"{_mtxt(den, unit='s')} over {len(steps)} steps"
        if _v(t.get("s_per_step")) is not None:
            txt += f" ({_v(t.get('s_per_step')):.3f} s/step)"
        lines.append(_line("Denoising", txt))
    first, rest = _v(t.get("first_step_s")), _v(t.get("mean_rest_step_s"))
    if first is not None:
        txt = f"first {first:.3f} s"
        txt += f" vs mean of the other {len(steps) - 1}: {rest:.3f} s" if rest is not None else " (only one step)"
        if rest:
            txt += f" (first/rest = {first / rest:.2f}×)"
        lines.append(_line("Steps", txt))

    def with_reason(key: str, unit: str) -> str:
        m = t.get(key) or {}
        txt = _mtxt(m, unit=unit)
        return txt + (f" ({m['reason']})" if _v(m) is not None and m.get("reason") else "")

    lines.append(_line("Peak memory", with_reason("peak_memory_gb", "GiB")))
    lines.append(_line("Static memory", with_reason("static_memory_gb", "GiB")))
    lines.append(_line("Dynamic memory", with_reason("dynamic_memory_gb", "GiB")))
    sm = t.get("mean_sm_percent") or {}
    sm_txt = _mtxt(sm, "{:.1f}", "%")
    if _v(sm) is not None:
        sm_txt += f" ({'; '.join(x for x in (sm.get('source'), sm.get('reason')) if x)})"
    lines.append(_line("Mean SM activity", sm_txt))
    lines.append(_line("Compute load", _mtxt(t.get("compute_load"), "{:.1f}", "%·s")))
    fl = t.get("flops") or {}
    txt = _human_flops(_v(fl)) + (f" ({fl.get('source')})" if _v(fl) is not None else "")
    lines.append(_line("FLOPs", txt))
    lines.append(_line("Throughput", _mtxt(t.get("tflops_per_s"), "{:.1f}", "TFLOP/s")
                       + (f" ({t['tflops_per_s']['reason']})" if _v(t.get("tflops_per_s")) is not None
                          and t["tflops_per_s"].get("reason") else "")))
    lines.append(_line("MFU", with_reason("mfu", "%")))
    e = t.get("energy_j") or {}
    lines.append(_line("Energy", f"{_human_energy(_v(e))} ({e.get('source')})" if _v(e) is not None else _mtxt(e)))
    rss, cpu = t.get("host_rss_peak_gb"), t.get("cpu_percent")
    if rss is not None or cpu is not None:
        lines.append(_line("Host", f"peak RSS {_mtxt(rss, unit='GiB')}, CPU {_mtxt(cpu, '{:.0f}', '% of one core')}"))
    w = report.get("weights") or {}
    wtxt = str(w.get("kind") or NA)
    if w.get("source"):
        wtxt += f" from {w['source']}"
    if w.get("note"):
        wtxt += f" — {w['note']}"
    lines.append(_line("Weights", wtxt))
    gpu = (report.get("system") or {}).get("gpu")
    if isinstance(gpu, dict):
        gtxt = f"{gpu.get('name')} ×{gpu.get('count')}, {gpu.get('memory_total_gb')} GiB, driver {gpu.get('driver')}"
        gtxt += (f", catalog {gpu.get('catalog_key')} ({gpu.get('peak_bf16_tflops')} TFLOP/s bf16)"
                 if gpu.get("catalog_key") else ", not in GPU catalog")
        lines.append(_line("GPU", gtxt))
    elif isinstance(report.get("system"), dict):
        lines.append(_line("GPU", "none (CPU run)"))
    else:
        lines.append(_line("GPU", f"{NA} (no system info in the report)"))
    return "\n".join(lines)


STAGE_METRICS = (("sm", "SM activity"), ("compute_load", "Compute load"), ("memory.peak_gb", "Memory"),
                 ("memory.nvml_used_gb", "NVML used memory"), ("power_w", "Power"), ("energy_j", "Energy"),
                 ("flops", "FLOPs"), ("mfu", "MFU"), ("cpu_percent", "Host CPU"),
                 ("host_rss_peak_gb", "Host RSS"))


def _get(stage: dict[str, Any], dotted: str) -> Any:
    cur: Any = stage
    for part in dotted.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur


def format_sources(report: dict[str, Any]) -> str:
    """The "[Metric sources]" block: per metric, its sources across stages, with reasons."""
    stages = report.get("stages") or []
    lines = ["[Metric sources]"]
    lines.append(_line("Time", "host perf_counter around each stage (CUDA-synchronized at begin/end on GPU)"))
    for key, label in STAGE_METRICS:
        c: Counter[tuple[str, str]] = Counter()
        for s in stages:
            m = _get(s, key)
            if isinstance(m, dict):
                c[(str(m.get("source")), str(m.get("reason") or ""))] += 1
        if not c:
            continue
        parts = []
        for (src, reason), n in c.most_common():
            part = f"{src} ({n} stage{'s' if n != 1 else ''})"
            if reason:
                part += f": {reason}"
            parts.append(part)
        lines.append(_line(label, parts[0]))
        lines += [" " * 20 + p for p in parts[1:]]
    t = report.get("totals") or {}
    for key in ("mean_sm_percent", "tflops_per_s", "mfu", "energy_j", "static_memory_gb"):
        m = t.get(key)
        if isinstance(m, dict):
            txt = str(m.get("source"))
            if m.get("reason"):
                txt += f": {m['reason']}"
            lines.append(_line(f"totals.{key}", txt, 24))
    return "\n".join(lines)


def format_report(report: dict[str, Any], collapse_over: int = COLLAPSE_STEPS_OVER) -> str:
    """The full text report: trace table, summary, metric sources."""
    head = []
    run = report.get("run") or {}
    if run:
        keys = ("task", "size", "frame_num", "sample_steps", "sample_solver", "offload_model", "weights")
        desc = ", ".join(f"{k}={run[k]}" for k in keys if k in run)
        if desc:
            head.append(f"Run: {desc}")
    created = report.get("created")
    if created:
        head.append(f"Report created {created}")
    parts = ["\n".join(head)] if head else []
    parts += [format_table(report, collapse_over), format_summary(report), format_sources(report)]
    return "\n\n".join(parts) + "\n"


def report_main(argv: list[str]) -> int:
    """``format_report.py REPORT.json``: print the text report; bad input → ``error: …``, exit 2."""
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: format_report.py REPORT.json", file=sys.stderr if len(argv) != 1 else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        report = load_report(argv[0])
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(format_report(report))
    return 0
