"""``benchmark_report.md`` of a suite run: Benchmark Summary, Detailed Breakdown, charts.

Reads the run dir's ``suite.json`` and the case reports; never measures. Every missing number is
written ``n/a (k)`` with note *k* giving the reason — never 0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import stages as sk
from ..errors import ReportError
from ..report.text import error_text
from ..report.values import fmt_num, value_of
from . import reportdata as rd
from .charts import prepare_output, stage_time_chart, timeline_chart
from .manifest import MANIFEST, load_manifest

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


def _settings_rows(cases: list[dict[str, Any]], reports: dict[str, dict[str, Any] | None]) -> list[str]:
    cols = [("size", "Size"), ("frame_num", "Frames"), ("sample_steps", "Steps"), ("offload_model", "Offload"),
            ("memory_budget_gb", "Budget GB"), ("t5_cpu", "T5 on CPU"), ("sample_solver", "Solver"),
            ("weights", "Weights"), ("device", "Device")]
    lines = ["| Case | " + " | ".join(h for _, h in cols) + " | Procs |",
             "|---|" + "---|" * len(cols) + "---|"]
    for c in cases:
        rep = reports.get(c["name"])
        vals = []
        for key, _ in cols:
            v = _run_value(c, rep, key)
            if key == "memory_budget_gb" and v is None:
                v = "—"
            elif key == "offload_model" and rep and (rep.get("run") or {}).get("residency"):
                v = f"{v} ({rep['run']['residency']})"
            vals.append("default" if v is None else esc(v))
        lines.append(f"| {esc(c['name'])} | " + " | ".join(vals) + f" | {c.get('nproc') or 1} |")
    return lines


def summary_table(cases: list[dict[str, Any]], reports: dict[str, dict[str, Any] | None], notes: Notes
                  ) -> list[str]:
    """The Benchmark Summary table rows."""
    head = ("| Case | Status | Total s | s/step | Peak alloc GB | Peak reserved GB | Mean SM % | Compute load | MFU "
            "| Energy Wh |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cases:
        rep = reports.get(c["name"])
        status = status_text(c)
        if c.get("status") != "ok" or rep is None:
            why = ("case did not run to the end (see Failures)" if c.get("status") in ("failed", "oom", "interrupted")
                   else "case has not run yet" if c.get("status") == "pending" else "no report")
            na = notes.na(why)
            lines.append(f"| {esc(c['name'])} | {esc(status)} | " + " | ".join([na] * 8) + " |")
            continue
        t = rep.get("totals") or {}
        energy = t.get("energy_j")
        lines.append("| " + " | ".join([
            esc(c["name"]), "ok" + (" (resumed)" if c.get("skipped") else ""),
            cell(t.get("wall_s"), notes, 2), cell(t.get("s_per_step"), notes, 3),
            cell(rd.peak_memory(rep, "allocated"), notes, 2), cell(rd.peak_memory(rep, "reserved"), notes, 2),
            sm_cell(t.get("mean_sm_percent"), notes),
            cell(t.get("compute_load"), notes, 1), percent_cell(t.get("mfu"), notes),
            cell(energy, notes, 3, scale=1 / 3600.0),
        ]) + " |")
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
    all_stages = rd.stages(report)
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
    mem = s.get("memory") or {}
    start, end = value_of(mem.get("start_gb")), value_of(mem.get("end_gb"))
    delta = fmt_num(round(end - start, 4), 2) if start is not None and end is not None else notes.na(
        rd.mreason(mem.get("end_gb") if end is None else mem.get("start_gb")))
    sm = sm_cell(s.get("sm"), notes)
    if s.get("short_window") and value_of(s.get("sm")) is not None:
        sm += " " + notes.ref("stage shorter than the sampling window: its SM % is from few samples")
    indent = "&nbsp;" * 4 * int(s.get("depth") or 0)
    return "| " + " | ".join([
        indent + esc(s["name"]), fmt_num(rd.duration(s), 3), sm, cell(s.get("compute_load"), notes, 1),
        cell(mem.get("start_gb"), notes), cell(mem.get("end_gb"), notes), cell(mem.get("peak_gb"), notes), delta,
        cell(s.get("tflops_per_s"), notes, 1), esc(s.get("comment") or ""),
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
    out += summary_table(cases, reports, notes)
    out += ["", "Total s: end-to-end wall time of the run. s/step: mean denoising step. Peak alloc: highest GPU "
            "memory allocated by PyTorch tensors; Peak reserved: highest held by PyTorch's caching allocator (what the "
            "card must have room for; per GPU, max over the ranks of a multi-GPU run). Mean SM %: time-weighted GPU "
            "SM activity. Compute load: Σ stage duration × SM % (the seed's definition). MFU: analytic model FLOPs ÷ time ÷ the GPU's peak dense bf16 FLOP/s. "
            "Energy: GPU energy counter over the run.", ""]
    out += ["### Settings", ""] + _settings_rows(cases, reports) + [""]
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
            out.append(f"- **{esc(c['name'])}** — {c.get('status')}"
                       + (f" in stage `{err.get('stage')}`" if err.get("stage") else "") + f": {esc(msg)}"
                       + (f" — log: [`{c.get('log')}`]({_rel(run_dir / c['log'], md_dir)})" if c.get("log") else ""))
        out.append("")
    out += ["## Detailed Breakdown", ""]
    for c in cases:
        name = c["name"]
        rep = reports.get(name)
        out += [f"### {esc(name)}", ""]
        if c.get("description"):
            out += [esc(c["description"]), ""]
        links = [f"[{k}]({_rel(run_dir / c[k2], md_dir)})" for k, k2 in (("report JSON", "report"), ("text report", "text"),
                                                                           ("log", "log")) if (run_dir / c[k2]).exists()]
        out += [f"Status: **{esc(status_text(c))}**" + (f" · exit code {c.get('exit_code')}"
                                                          if c.get("exit_code") not in (0, None) else "")
                + (f" · {fmt_num(c['elapsed_s'], 1)} s in the runner" if isinstance(c.get("elapsed_s"), (int, float))
                   else "")
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
        weights = rep.get("weights") or {}
        if weights.get("note"):
            out += [f"Weights: {esc(weights['note'])}", ""]
        out += stage_table(rep, notes) + [""]
        key = f"timeline:{name}"
        if key in charts:
            out += [f"![{esc(name)} timeline]({charts[key]})", ""]
        elif key in chart_notes:
            out += [f"_Timeline chart not drawn: {chart_notes[key]}._", ""]
    out += notes.render()
    return "\n".join(out).rstrip() + "\n"


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
        p = run_dir / c.get("report", f"{c['name']}.json")
        try:
            reports[c["name"]] = rd.read_report(p) if p.exists() else None
        except (ReportError, OSError, ValueError):
            reports[c["name"]] = None
    charts: dict[str, str] = {}
    chart_notes: dict[str, str] = {}
    ok_runs = [(c["name"], reports[c["name"]]) for c in manifest.get("cases") or []
               if c.get("status") == "ok" and reports.get(c["name"])]
    if ok_runs:
        p = charts_dir / "stage_times.png"
        if stage_time_chart(ok_runs, p, "Stage times per case (measured)"):  # type: ignore[arg-type]
            charts["stages"] = _rel(p, output.parent)
        else:
            chart_notes["stages"] = "no stages in the reports"
    else:
        chart_notes["stages"] = "no case finished ok"
    for c in manifest.get("cases") or []:
        rep = reports.get(c["name"])
        if rep is None:
            continue
        p = charts_dir / f"timeline_{c['name']}.png"
        why = timeline_chart(c["name"], rep, p)
        if why is None:
            charts[f"timeline:{c['name']}"] = _rel(p, output.parent)
        else:
            chart_notes[f"timeline:{c['name']}"] = why
    text = render_suite_markdown(manifest, reports, run_dir.resolve(), output.parent, charts, chart_notes)
    output.write_text(text, encoding="utf-8")
    return output
