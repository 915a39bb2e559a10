"""``benchmark_report.md`` of a suite run: Benchmark Summary, Detailed Breakdown, charts.

Why this module is long (~400 lines): it is one document — summary, settings, failures, per-case breakdown,
notes — whose sections share the numbered-notes object; the spread of repeated runs is in ``repeats.py``.

Reads the run dir's ``suite.json`` and the case reports; never measures. Every missing number is
written ``n/a (k)`` with note *k* giving the reason — never 0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import stages as sk
from ..errors import ReportError
from ..report.gpu_state import held_back_text
from ..report.text import error_text
from ..report.tree import rows_with_remainders
from ..report.values import fmt_num, value_of
from . import reportdata as rd
from .charts import prepare_output, stage_time_chart, timeline_chart
from .manifest import MANIFEST, load_manifest
from .repeats import CaseRuns, entry_id, group_cases

MAX_STEP_ROWS = 6


class Notes:
    """Numbered notes for ``n/a`` cells and caveats, deduplicated by text."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def ref(self, text: str) -> str:
        """Number of ``text`` (added on first use), as ``(k)``."""
        if text not in self.items:
            self.items.append(text)
        return f"({self.items.index(text) + 1})"

    def na(self, reason: str) -> str:
        """An ``n/a`` cell with its reason as a note."""
        return f"n/a {self.ref(reason)}"

    def render(self, title: str = "Notes") -> list[str]:
        """The notes as a Markdown list (empty when none)."""
        if not self.items:
            return []
        return [f"**{title}**", ""] + [f"{i}. {t}" for i, t in enumerate(self.items, 1)] + [""]


def esc(text: Any) -> str:
    """Escape a value for a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def cell(metric: Any, notes: Notes, digits: int = 2, scale: float = 1.0, default_reason: str = "not recorded"
         ) -> str:
    """A metric object as a table cell: the value, or ``n/a (k)`` with the reason as note k."""
    v = value_of(metric)
    if v is None:
        return notes.na(rd.mreason(metric, default_reason))
    return fmt_num(v * scale, digits)


def percent_cell(metric: Any, notes: Notes, digits: int = 1) -> str:
    """A ratio/percent metric as a percent cell (unit ``%`` taken as is, else a fraction × 100)."""
    v = value_of(metric)
    if v is None:
        return notes.na(rd.mreason(metric))
    unit = str((metric or {}).get("unit") or "") if isinstance(metric, dict) else ""
    return fmt_num(v if unit.strip() == "%" else v * 100.0, digits) + " %"


def sm_cell(metric: Any, notes: Notes, digits: int = 1) -> str:
    """SM% cell; a ``utilization.gpu`` fallback is marked with a note."""
    text = cell(metric, notes, digits)
    src = rd.msource(metric)
    if value_of(metric) is not None and src and src not in ("gpm",):
        text += " " + notes.ref(f"SM % from {src}: "
                                + ("NVML utilization.gpu, the share of time any kernel ran — an upper bound, "
                                   "not SM activity" if src == "nvml_util" else "not from GPM SM activity counters"))
    return text


def status_text(entry: dict[str, Any]) -> str:
    """Status as shown in tables: ``ok``, ``oom: does not fit within 16 GB``, ``failed (Stage)``."""
    status = entry.get("status") or "pending"
    err = entry.get("error") or {}
    if status == "ok":
        return "ok"
    if status == "oom":
        return f"oom: {err.get('message') or 'out of memory'}"
    stage = err.get("stage")
    return f"{status} ({stage})" if stage else status


def _rel(target: Path, base: Path) -> str:
    return Path(os.path.relpath(target, base)).as_posix()


def _run_value(entry: dict[str, Any], report: dict[str, Any] | None, key: str) -> Any:
    run = (report or {}).get("run") or {}
    if key in run and run[key] is not None:
        return run[key]
    return (entry.get("flags") or {}).get(key)


def _settings_rows(groups: list[CaseRuns]) -> list[str]:
    cols = [("size", "Size"), ("frame_num", "Frames"), ("sample_steps", "Steps"), ("offload_model", "Offload"),
            ("memory_budget_gb", "Budget GB"), ("t5_cpu", "T5 on CPU"), ("sample_solver", "Solver"),
            ("weights", "Weights"), ("device", "Device")]
    lines = ["| Case | " + " | ".join(h for _, h in cols) + " | Procs |",
             "|---|" + "---|" * len(cols) + "---|"]
    for g in groups:
        c, rep = g.representative()
        vals = []
        for key, _ in cols:
            v = _run_value(c, rep, key)
            if key == "memory_budget_gb" and v is None:
                v = "—"
            elif key == "offload_model" and rep and (rep.get("run") or {}).get("residency"):
                v = f"{v} ({rep['run']['residency']})"
            vals.append("default" if v is None else esc(v))
        lines.append(f"| {esc(g.name)} | " + " | ".join(vals) + f" | {c.get('nproc') or 1} |")
    return lines


def _val(metric: Any) -> float | None:
    return value_of(metric)


def _steady(r: dict[str, Any]) -> Any:
    return rd.total(r, "steady_s_per_step") or rd.total(r, "s_per_step")


#: (header, the metric object of a report, digits) of the summary's spread columns
SUMMARY_COLUMNS: tuple[tuple[str, Any, int], ...] = (
    ("Total s", lambda r: rd.total(r, "wall_s"), 2),
    ("Warm video s", lambda r: rd.total(r, "video_s_warm"), 2),
    ("Steady s/step", _steady, 3),
    ("Cold start s", lambda r: rd.total(r, "cold_start_s"), 2),
    ("Peak alloc GB", lambda r: rd.peak_memory(r, "allocated"), 2),
    ("Peak reserved GB", lambda r: rd.peak_memory(r, "reserved"), 2),
)


def summary_table(groups: list[CaseRuns], notes: Notes) -> list[str]:
    """The Benchmark Summary table rows: one per case, each number the median of its ok runs [min–max]."""
    head = ("| Case | Runs | Status | " + " | ".join(c[0] for c in SUMMARY_COLUMNS)
            + " | Mean SM % | Compute load | MFU | Energy Wh | GPU held back |")
    lines = [head, "|---|---:|---|" + "---:|" * (len(SUMMARY_COLUMNS) + 4) + "---|"]
    for g in groups:
        ok = g.ok
        runs = (f"{len(g.entries)}" + (" (single run: no spread)" if len(g.entries) == 1 else ""))
        status = g.status_text() + (" (resumed)" if any(e.get("skipped") for e in g.entries) else "")
        if not ok:
            e0 = g.entries[0]
            why = ("case did not run to the end (see Failures)" if e0.get("status") in ("failed", "oom", "interrupted")
                   else "case has not run yet" if e0.get("status") == "pending" else "no report")
            na = notes.na(why)
            lines.append(f"| {esc(g.name)} | {runs} | {esc(status_text(e0) if len(g.entries) == 1 else status)} | "
                         + " | ".join([na] * (len(SUMMARY_COLUMNS) + 5)) + " |")
            continue
        cells = []
        for label, get, digits in SUMMARY_COLUMNS:
            sp = g.spread_of(lambda r, get=get: _val(get(r)))
            cells.append(sp.text(digits) if sp else notes.na(
                rd.mreason(get(ok[0][1]), f"{label}: not in these reports (written before issue 15)")))
        _, rep = g.representative()
        t = (rep or {}).get("totals") or {}
        energy = g.spread_of(lambda r: _val(rd.total(r, "energy_j")))
        held = ((rep or {}).get("gpu_state") or {}).get("verdict") or notes.na("no GPU state in the report")
        lines.append("| " + " | ".join([esc(g.name), runs, esc(status), *cells,
                                          sm_cell(t.get("mean_sm_percent"), notes), cell(t.get("compute_load"), notes, 1),
                                          percent_cell(t.get("mfu"), notes),
                                          energy.text(3, 1 / 3600.0) if energy else cell(t.get("energy_j"), notes),
                                          esc(held)]) + " |")
    return lines


def _step_rows(steps: list[dict[str, Any]]) -> list[dict[str, Any] | tuple[str, int, float]]:
    if len(steps) <= MAX_STEP_ROWS:
        return list(steps)
    middle = steps[2:-1]
    mean = sum(rd.duration(s) for s in middle) / len(middle)
    return [steps[0], steps[1], (f"{middle[0]['name']} … {middle[-1]['name']}", len(middle), mean), steps[-1]]


def stage_table(report: dict[str, Any], notes: Notes) -> list[str]:
    """Per-stage rows of one report (the seed's Execution Trace Analysis, in Markdown)."""
    lines = ["| Stage | Time s | SM % | Load | Mem start GB | Mem end GB | Peak GB | Mem Δ GB | TFLOP/s | Comment |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    all_stages = rows_with_remainders(rd.stages(report))
    step_names = {s["name"] for s in all_stages if sk.is_step(str(s["name"]))}
    steps = [s for s in all_stages if s["name"] in step_names]
    shown_steps = _step_rows(steps)
    emitted_steps = False
    for s in all_stages:
        if s["name"] in step_names:
            if emitted_steps:
                continue
            emitted_steps = True
            for row in shown_steps:
                if isinstance(row, tuple):
                    label, count, mean = row
                    lines.append(f"| {'&nbsp;' * 4 * int(s.get('depth') or 0)}{esc(label)} | {fmt_num(mean, 3)} (mean of "
                                 f"{count}) | | | | | | | | {count} steps not shown one by one |")
                else:
                    lines.append(_stage_row(row, notes))
            continue
        lines.append(_stage_row(s, notes))
    return lines


def _stage_row(s: dict[str, Any], notes: Notes) -> str:
    indent = "&nbsp;" * 4 * int(s.get("depth") or 0)
    if s.get("remainder"):
        return (f"| {indent}{esc(s['name'])} | {fmt_num(rd.duration(s), 3)} | — | — | — | — | — | — | — | "
                f"{esc(s.get('comment') or '')} |")
    mem = s.get("memory") or {}
    start, end = value_of(mem.get("start_gb")), value_of(mem.get("end_gb"))
    delta = fmt_num(round(end - start, 4), 2) if start is not None and end is not None else notes.na(
        rd.mreason(mem.get("end_gb") if end is None else mem.get("start_gb")))
    sm = sm_cell(s.get("sm"), notes)
    if s.get("short_window") and value_of(s.get("sm")) is not None:
        sm += " " + notes.ref("stage shorter than the sampling window: its SM % is from few samples")
    comment = str(s.get("comment") or "")
    held = held_back_text(s)
    if held:
        comment += f" [{held}]"
    return "| " + " | ".join([
        indent + esc(s["name"]), fmt_num(rd.duration(s), 3), sm, cell(s.get("compute_load"), notes, 1),
        cell(mem.get("start_gb"), notes), cell(mem.get("end_gb"), notes), cell(mem.get("peak_gb"), notes), delta,
        cell(s.get("tflops_per_s"), notes, 1), esc(comment),
    ]) + " |"


def render_suite_markdown(manifest: dict[str, Any], reports: dict[str, dict[str, Any] | None], run_dir: Path,
                          md_dir: Path, charts: dict[str, str], chart_notes: dict[str, str]) -> str:
    """The whole ``benchmark_report.md`` text.

    ``charts`` maps ``"stages"`` / ``"timeline:<case>"`` to image paths relative to ``md_dir``;
    ``chart_notes`` maps the same keys to why a chart is missing.
    """
    notes = Notes()
    cases = manifest.get("cases") or []
    git = manifest.get("git") or {}
    host = manifest.get("host") or {}
    first = next((r for r in reports.values() if r), None)
    system = (first or {}).get("system") or {}
    gpu = system.get("gpu") or {}
    if gpu:
        counts = sorted({rd.gpu_of(r).count for r in reports.values() if r})  # GPUs each run used
        used = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
        host_count = gpu.get("host_count")
        device = (f"{gpu.get('name')} ×{used} used" + (f" (host has {host_count})" if host_count else "")
                  + f", {gpu.get('memory_total_gb')} GB, driver {gpu.get('driver')}")
    else:
        device = f"no GPU (CPU: {(system.get('cpu') or {}).get('model') or 'unknown'})"
    out = ["# Benchmark Report", ""]
    if manifest.get("description"):
        out += [esc(manifest["description"]), ""]
    def known(*vals: Any) -> bool:
        return all(v not in (None, "") for v in vals)

    lines = [f"- Run: `{manifest.get('run_id')}` (`{_rel(run_dir, md_dir)}`)"
             + (f", created {manifest.get('created')}" if known(manifest.get("created")) else "")
             + (f", updated {manifest.get('updated')}" if known(manifest.get("updated")) else "")]
    if known(manifest.get("config_path")):
        lines.append(f"- Config: `{manifest.get('config_path')}`")
    if known(host.get("hostname")):
        lines.append(f"- Host: {host.get('hostname')} — {host.get('platform')}, Python {host.get('python')}, "
                     f"torch {system.get('torch', 'n/a')}, CUDA {system.get('cuda') or 'none'}, "
                     f"diffusers {system.get('diffusers', 'n/a')}")
    lines.append(f"- Device: {device}")
    lines.append(f"- Code: commit `{git.get('commit') or 'unknown'}`" + (" (uncommitted changes)" if git.get("dirty") else ""))
    lines.append(f"- Cases: {len(cases)} — " + ", ".join(f"{v} {k}" for k, v in _counts(cases).items()))
    out += lines + [
        "",
        "All numbers are **measured** on this host. `n/a (k)`: not available, note *k* says why.",
        "",
        "## Benchmark Summary",
        "",
    ]
    groups = group_cases(cases, reports)
    out += summary_table(groups, notes)
    out += ["", "Each number is the median of the case's ok runs, [min–max] over them (and the IQR from 4 runs); a "
            "case of one run has no spread. Total s: end-to-end wall time of the run. Warm video s: the run with its "
            "first step at steady speed (`video_s_warm`). Steady s/step: median denoising step after the first. Cold "
            "start s: the first call's compile and kernel build (`cold_start_s`). Peak alloc: highest GPU "
            "memory allocated by PyTorch tensors; Peak reserved: highest held by PyTorch's caching allocator (what the "
            "card must have room for; per GPU, max over the ranks of a multi-GPU run). Mean SM %: time-weighted GPU "
            "SM activity. Compute load: Σ stage duration × SM % (the seed's definition). MFU: analytic model FLOPs ÷ time ÷ the GPU's peak dense bf16 FLOP/s. "
            "Energy: GPU energy counter over the run.", ""]
    out += ["### Settings", ""] + _settings_rows(groups) + [""]
    if "stages" in charts:
        out += [f"![Stage times per case]({charts['stages']})", ""]
    elif "stages" in chart_notes:
        out += [f"_Stage-time chart not drawn: {chart_notes['stages']}._", ""]
    bad = [c for c in cases if c.get("status") not in ("ok",)]
    if bad:
        out += ["### Failures", ""]
        for c in bad:
            err = c.get("error") or {}
            msg = error_text(err) or c.get("status")
            out.append(f"- **{esc(entry_id(c))}** — {c.get('status')}"
                       + (f" in stage `{err.get('stage')}`" if err.get("stage") else "") + f": {esc(msg)}"
                       + (f" — log: [`{c.get('log')}`]({_rel(run_dir / c['log'], md_dir)})" if c.get("log") else ""))
        out.append("")
    out += ["## Detailed Breakdown", ""]
    for g in groups:
        c, rep = g.representative()
        name = g.name
        out += [f"### {esc(name)}", ""]
        if len(g.entries) > 1:
            runs = ", ".join(f"{esc(entry_id(e))}: {esc(status_text(e))}"
                             + (f" {fmt_num(rd.wall_s(r), 2)} s" if r and rd.wall_s(r) is not None else "")
                             for e, r in zip(g.entries, g.reports, strict=True))
            out += [f"{len(g.entries)} runs ({runs}); shown below: **{esc(entry_id(c))}**, the run nearest the "
                    "median total.", ""]
        if c.get("description"):
            out += [esc(c["description"]), ""]
        links = [f"[{k}]({_rel(run_dir / c[k2], md_dir)})" for k, k2 in (("report JSON", "report"), ("text report", "text"),
                                                                           ("log", "log")) if (run_dir / c[k2]).exists()]
        out += [f"Status: **{esc(status_text(c))}**" + (f" · exit code {c.get('exit_code')}"
                                                          if c.get("exit_code") not in (0, None) else "")
                + _runner_time(c, rep)
                + (" · " + " · ".join(links) if links else ""), ""]
        if c.get("argv"):
            out += [f"Flags: `{' '.join(c['argv'])}`", ""]
        if rep is None:
            out += ["_No report was written for this case._", ""]
            continue
        if rep.get("status") != "ok":
            err = rep.get("error") or {}
            out += [f"The run stopped in stage `{err.get('stage')}`: {esc(error_text(err))}. The stages below are "
                    "those recorded until then.", ""]
        shared = gpu_shared_with(rep)
        if shared:
            out += [f"**Measured while other processes used the GPU** ({esc(shared)}): its times and memory are not "
                    "this run's alone.", ""]
        weights = rep.get("weights") or {}
        if weights.get("note"):
            out += [f"Weights: {esc(weights['note'])}", ""]
        out += stage_table(rep, notes) + [""]
        key = f"timeline:{entry_id(c)}"
        if key in charts:
            out += [f"![{esc(name)} timeline]({charts[key]})", ""]
        elif key in chart_notes:
            out += [f"_Timeline chart not drawn: {chart_notes[key]}._", ""]
    out += notes.render()
    return "\n".join(out).rstrip() + "\n"


def _runner_time(entry: dict[str, Any], report: dict[str, Any] | None) -> str:
    """`` · 5.5 s in the runner (0.6 s the run's Total; 4.9 s process start, imports and set-up before it …)``."""
    el = entry.get("elapsed_s")
    if not isinstance(el, int | float):
        return ""
    wall = rd.wall_s(report) if report else None
    if wall is None or wall > el:  # no report, or one not written by this process (a stand-in in tests)
        return f" · {fmt_num(el, 1)} s in the runner"
    return (f" · {fmt_num(el, 1)} s in the runner ({fmt_num(wall, 2)} s the run's `Total`; {fmt_num(el - wall, 2)} s "
            "outside it: process start, imports, building the pipeline before the monitor starts, the final report)")


def gpu_shared_with(report: dict[str, Any]) -> str:
    """``PIDs 123, 456 at the start; 789 at the end`` when other processes were on the run's GPU, else ``""``."""
    state = ((report.get("system") or {}).get("gpu") or {}).get("state") or {}
    parts = []
    for key, when in (("other_processes", "at the start"), ("other_processes_at_end", "at the end")):
        procs = (state.get(key) or {}).get("value") if isinstance(state.get(key), dict) else None
        if procs:
            parts.append("PIDs " + ", ".join(str(p.get("pid")) for p in procs) + f" {when}")
    return "; ".join(parts)


def _counts(cases: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in cases:
        counts[c.get("status") or "pending"] = counts.get(c.get("status") or "pending", 0) + 1
    return counts


def write_suite_report(run_dir: Path, output: Path) -> Path:
    """Write ``output`` (Markdown) and its charts (``<stem>_files/``) for the run in ``run_dir``."""
    manifest = load_manifest(run_dir)
    if manifest is None:
        raise ReportError(f"{run_dir}: no readable {MANIFEST}")
    output, charts_dir = prepare_output(output)
    reports: dict[str, dict[str, Any] | None] = {}
    for c in manifest.get("cases") or []:
        p = run_dir / c.get("report", f"{entry_id(c)}.json")
        try:
            reports[entry_id(c)] = rd.read_report(p) if p.exists() else None
        except (ReportError, OSError, ValueError):
            reports[entry_id(c)] = None
    charts: dict[str, str] = {}
    chart_notes: dict[str, str] = {}
    groups = group_cases(manifest.get("cases") or [], reports)
    shown = [(g.name, *g.representative()) for g in groups]
    ok_runs = [(name, rep) for name, e, rep in shown if e.get("status") == "ok" and rep]
    if ok_runs:
        p = charts_dir / "stage_times.png"
        if stage_time_chart(ok_runs, p, "Stage times per case (measured; the run nearest each case's median)"):
            charts["stages"] = _rel(p, output.parent)
        else:
            chart_notes["stages"] = "no stages in the reports"
    else:
        chart_notes["stages"] = "no case finished ok"
    for _, e, rep in shown:
        if rep is None:
            continue
        p = charts_dir / f"timeline_{entry_id(e)}.png"
        why = timeline_chart(entry_id(e), rep, p)
        if why is None:
            charts[f"timeline:{entry_id(e)}"] = _rel(p, output.parent)
        else:
            chart_notes[f"timeline:{entry_id(e)}"] = why
    text = render_suite_markdown(manifest, reports, run_dir.resolve(), output.parent, charts, chart_notes)
    output.write_text(text, encoding="utf-8")
    return output
