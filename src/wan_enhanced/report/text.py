"""``format_report``: the seed's "[Execution Trace Analysis]" table, a summary and metric sources.

Unavailable values print as ``n/a`` (never 0); the sources section says where each number came
from and why the missing ones are missing. ``report_main`` is ``format_report.py REPORT.json``.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from ..errors import ReportError
from ..stages import UNTRACKED, is_step
from .gpu_state import held_back_text
from .journal_status import journal_state
from .schema import gpus_used, load_report
from .tree import rows_with_remainders
from .values import fmt_num, value_of

NA = "n/a"
COLLAPSE_STEPS_OVER = 20
KEEP_HEAD, KEEP_TAIL = 3, 2


def _f(v: float | None, width: int, prec: int = 2) -> str:
    return f"{NA:>{width}}" if v is None else f"{fmt_num(v, prec):>{width}}"


def _human_flops(v: float | None) -> str:
    if v is None:
        return NA
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if abs(v) >= scale:
            return f"{v / scale:.2f} {unit}"
    return f"{fmt_num(v, 0)} FLOP"


def _human_energy(v: float | None) -> str:
    if v is None:
        return NA
    if v >= 3.6e6:
        return f"{v / 3.6e6:.3f} kWh"
    if v >= 1e3:
        return f"{v / 1e3:.2f} kJ"
    return f"{fmt_num(v, 1)} J"


def _remainder_row(row: dict[str, Any], name_w: int) -> str:
    name = "  " * int(row.get("depth") or 0) + str(row["name"])
    dur = row.get("duration_s")
    dash = f"{'—':>6}"
    return (f"{name:<{name_w}} | {_f(dur if isinstance(dur, int | float) else None, 8)} | {dash} | {'—':>8} | "
            f"{'—':>9} | {'—':>9} | {'—':>9} | {'—':>9} | {row.get('comment') or ''}")


def _row(stage: dict[str, Any], name_w: int) -> str:
    if stage.get("remainder"):
        return _remainder_row(stage, name_w)
    mem = stage.get("memory") or {}
    ms, me, mp = value_of(mem.get("start_gb")), value_of(mem.get("end_gb")), value_of(mem.get("peak_gb"))
    delta = round(me - ms, 4) if ms is not None and me is not None else None  # values are GiB to 4 decimals
    sm = value_of(stage.get("sm"))
    short = bool(stage.get("short_window")) and sm is not None
    sm_s = _f(sm, 5, 1) + "*" if short else _f(sm, 6, 1)
    name = "  " * int(stage.get("depth") or 0) + str(stage.get("name", "?"))
    comment = str(stage.get("comment") or "")
    flags = [x for x in ("failed", "incomplete") if stage.get(x)]
    held = held_back_text(stage)
    if held:
        flags.append(held)
    if flags:
        comment = (comment + " " if comment else "") + "[" + ", ".join(flags) + "]"
    dur = stage.get("duration_s")
    dur = dur if isinstance(dur, int | float) else None
    return (f"{name:<{name_w}} | {_f(dur, 8)} | {sm_s} | {_f(value_of(stage.get('compute_load')), 8, 1)} | "
            f"{_f(ms, 9)} | {_f(me, 9)} | {_f(mp, 9)} | {_f(delta, 9)} | {comment}")


def _collapse(stages: list[dict[str, Any]], limit: int) -> list[dict[str, Any] | str]:
    """Replace the middle of long runs of sibling ``Step_<i>`` rows by one summary line."""
    steps = [i for i, s in enumerate(stages) if is_step(str(s.get("name", "")))]
    if len(steps) <= limit:
        return list(stages)
    hidden = set(steps[KEEP_HEAD:len(steps) - KEEP_TAIL])
    hidden_stages = [stages[i] for i in sorted(hidden)]
    durs = [s["duration_s"] for s in hidden_stages if isinstance(s.get("duration_s"), int | float)]
    sms = [value_of(s.get("sm")) for s in hidden_stages if value_of(s.get("sm")) is not None]
    depth = int(hidden_stages[0].get("depth") or 0)
    summary = (f"{'  ' * depth}... {len(hidden)} steps collapsed ({hidden_stages[0]['name']} … "
               f"{hidden_stages[-1]['name']}): ")
    if durs:
        summary += (f"mean {fmt_num(sum(durs) / len(durs), 3)} s, min {fmt_num(min(durs), 3)}, "
                    f"max {fmt_num(max(durs), 3)}")
    summary += f", mean SM {fmt_num(sum(sms) / len(sms), 1)} %" if sms else ", SM n/a"
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
    stages = rows_with_remainders(list(report.get("stages") or []))
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
    notes = [f"Time = {'CUDA-synchronized ' if on_gpu else ''}wall time; each parent = its children + "
             f"{UNTRACKED} (its time outside them). Load = compute load = Time × SM % (%·s). Memory in GiB (torch "
             "allocated); Mem Δ = end − start."]
    if any(s.get("short_window") and value_of(s.get("sm")) is not None for s in stages):
        interval = (report.get("timeline") or {}).get("interval_s")
        win = f"{interval:g} s " if isinstance(interval, int | float) else ""
        notes.append(f"* stage shorter than the {win}sampling window: SM % of the overlapping sample(s).")
    if not stages:
        notes.append("(no stages recorded)")
    lines += notes
    return "\n".join(lines)


def _line(label: str, text: str, width: int = 18) -> str:
    return f"{label:<{width}}: {text}"


def _mtxt(m: Any, digits: int = 2, unit: str = "") -> str:
    """A metric as text: the value with ``digits`` decimals (significant digits when tiny, never a
    false 0) + unit, or ``n/a (reason)``."""
    v = value_of(m)
    if v is None:
        reason = m.get("reason") if isinstance(m, dict) else None
        return f"{NA} ({reason})" if reason else NA
    return fmt_num(v, digits) + (f" {unit}" if unit else "")


def error_text(err: dict[str, Any] | None) -> str:
    """``type: message`` of a report's error object, the type once (older reports repeat it in the message)."""
    if not isinstance(err, dict):
        return ""
    typ, msg = str(err.get("type") or "").strip(), str(err.get("message") or "").strip()
    if not typ or msg == typ or msg.startswith(f"{typ}:"):
        return msg or typ
    return f"{typ}: {msg}" if msg else typ


def with_reason_of(t: dict[str, Any], key: str, unit: str, digits: int = 2) -> str:
    """``t[key]`` as text with its reason in brackets."""
    m = t.get(key) or {}
    txt = _mtxt(m, digits, unit)
    return txt + (f" ({m['reason']})" if value_of(m) is not None and m.get("reason") else "")


def format_summary(report: dict[str, Any]) -> str:
    """The "[Summary]" block: totals, steps, memory, FLOPs/MFU, energy, weights, system."""
    t = report.get("totals") or {}
    status = str(report.get("status", "?"))
    alive = journal_state(report)
    if alive is not None:
        j = report.get("journal") or {}
        status += (f" (journal: written after stage {j.get('last_stage')} by pid {j.get('pid')} on {j.get('host')}; "
                   f"that process is {alive})")
    lines = ["[Summary]", _line("Status", status)]
    err = report.get("error")
    if isinstance(err, dict):
        lines.append(_line("Error", f"{error_text(err)} (stage {err.get('stage') or NA})"))
    lines.append(_line("Total wall time", _mtxt(t.get("wall_s"), unit="s")))
    steps = report.get("steps") or []
    den = t.get("denoise_s")
    if value_of(den) is not None or steps:
        txt = f"{_mtxt(den, unit='s')} over {len(steps)} steps"
        per_step = value_of(t.get("s_per_step"))
        if per_step is not None:
            txt += f" ({fmt_num(per_step, 3)} s/step)"
        lines.append(_line("Denoising", txt))
    first, rest = value_of(t.get("first_step_s")), value_of(t.get("mean_rest_step_s"))
    if first is not None:
        txt = f"first {fmt_num(first, 3)} s"
        txt += (f" vs mean of the other {len(steps) - 1}: {fmt_num(rest, 3)} s" if rest is not None
                else " (only one step)")
        if rest:
            txt += f" (first/rest = {fmt_num(first / rest, 2)}×)"
        lines.append(_line("Steps", txt))
    if value_of(t.get("steady_s_per_step")) is not None:
        lines.append(_line("Steady step", with_reason_of(t, "steady_s_per_step", "s", 4)))
        lines.append(_line("Cold start", with_reason_of(t, "cold_start_s", "s", 3)))
        lines.append(_line("Video, warm", with_reason_of(t, "video_s_warm", "s", 2)))

    def with_reason(key: str, unit: str, digits: int = 2) -> str:
        return with_reason_of(t, key, unit, digits)

    lines.append(_line("Peak allocated", with_reason("peak_memory_gb", "GiB")))
    if "peak_reserved_gb" in t:
        lines.append(_line("Peak reserved", with_reason("peak_reserved_gb", "GiB")))
    lines.append(_line("Static memory", with_reason("static_memory_gb", "GiB")))
    lines.append(_line("Dynamic memory", with_reason("dynamic_memory_gb", "GiB")))
    sm = t.get("mean_sm_percent") or {}
    sm_txt = _mtxt(sm, 1, "%")
    if value_of(sm) is not None:
        sm_txt += f" ({'; '.join(x for x in (sm.get('source'), sm.get('reason')) if x)})"
    lines.append(_line("Mean SM activity", sm_txt))
    lines.append(_line("Compute load", _mtxt(t.get("compute_load"), 1, "%·s")))
    fl = t.get("flops") or {}
    txt = _human_flops(value_of(fl)) + (f" ({fl.get('source')}; whole run)" if value_of(fl) is not None else "")
    lines.append(_line("FLOPs", txt))
    sc = t.get("scope_flops")
    if isinstance(sc, dict) and value_of(sc) is not None:
        lines.append(_line("FLOPs in scope", f"{_human_flops(value_of(sc))} ({sc.get('reason')})"))
    lines.append(_line("Throughput", _mtxt(t.get("tflops_per_s"), 1, "TFLOP/s")
                       + (f" ({t['tflops_per_s']['reason']})" if value_of(t.get("tflops_per_s")) is not None
                          and t["tflops_per_s"].get("reason") else "")))
    lines.append(_line("MFU", with_reason("mfu", "%")))
    if value_of(t.get("steady_tflops_per_s")) is not None:
        lines.append(_line("Steady step rate", f"{_mtxt(t['steady_tflops_per_s'], 1, 'TFLOP/s')}, MFU "
                           f"{_mtxt(t.get('steady_mfu'), 2, '%')} (one step's FLOPs ÷ steady_s_per_step)"))
    held = (report.get("gpu_state") or {}) if isinstance(report.get("gpu_state"), dict) else {}
    if held.get("verdict"):
        lines.append(_line("GPU held back", str(held["verdict"])))
    e = t.get("energy_j") or {}
    lines.append(_line("Energy", f"{_human_energy(value_of(e))} ({e.get('source')})" if value_of(e) is not None else _mtxt(e)))
    rss, cpu = t.get("host_rss_peak_gb"), t.get("cpu_percent")
    if rss is not None or cpu is not None:
        lines.append(_line("Host", f"peak RSS {_mtxt(rss, unit='GiB')}, CPU {_mtxt(cpu, 0, '% of one core')}"))
    w = report.get("weights") or {}
    wtxt = str(w.get("kind") or NA)
    if w.get("source"):
        wtxt += f" from {w['source']}"
    if w.get("note"):
        wtxt += f" — {w['note']}"
    lines.append(_line("Weights", wtxt))
    gpu = (report.get("system") or {}).get("gpu")
    if isinstance(gpu, dict):
        host = gpu.get("host_count")
        gtxt = (f"{gpu.get('name')} ×{gpus_used(report)} used" + (f" (host has {host})" if host else "")
                + f", {gpu.get('memory_total_gb')} GiB, driver {gpu.get('driver')}")
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
    age = (run.get("process") or {}).get("start_to_total_s")
    if isinstance(age, int | float):
        head.append(f"Before Total: {age:.2f} s since the process started (imports, checks, set-up); the report's "
                    "writing and the exit come after it")
    paid = ((run.get("compile_time") or {}).get("by_stage") or {})
    spent = [f"{stage} {t['entire_frame_compile']:.2f} s" for stage, t in paid.items()
             if isinstance(t.get("entire_frame_compile"), int | float)]
    if spent:
        head.append("torch.compile's own timers (inside the stages): " + ", ".join(spent))
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
