"""``wan-enhanced compare DIR|JSON ...``: suites from several machines → one cross-GPU Markdown report.

Per case and GPU: total and stage times, peak memory and fit on every catalog GPU, efficiency
(achieved FLOP/s ÷ theoretical peak — the seed's 实际耗时/理论算力), cost-effectiveness
((1 / time) / purchase price — the seed's 性价比), $ per video from hourly prices (low–high) and Wh
per video (measured energy only). Catalog GPUs without a measured run of a case get a projection
(:mod:`wan_enhanced.bench.projection`); where a GPU was measured too, projection and measurement
are shown side by side with the error. Every number is labelled measured or projected; prices
carry their source and date.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..argparse_util import OneLineParser
from ..errors import ConfigError, ReportError, UserError
from ..monitor.metrics import fmt_num, value_of
from . import reportdata as rd
from .charts import grouped_bar_chart, prepare_output, stage_time_chart
from .gpus import by_key, catalog_file, hourly, load_gpus, num, price
from .markdown import Notes, esc
from .projection import (
    DEFAULT_CONTEXT_GB,
    Projection,
    ProjectionError,
    error_percent,
    project_report,
    split_check,
)

# Flags that may differ between machines without making two runs different experiments.
IGNORED_RUN_KEYS = {"report_file", "save_file", "device", "ckpt_dir", "weights_requested", "residency",
                    "memory_budget", "num_tokens", "latent_shape"}


@dataclass
class Measured:
    """One measured run of a case on one machine."""

    case: str
    report: dict[str, Any]
    path: Path
    gpu: rd.GpuId
    entry: dict[str, Any] | None  # catalog entry of the GPU
    status: str
    created: str

    @property
    def label(self) -> str:
        """GPU label (with card count)."""
        return self.gpu.label

    @property
    def total_s(self) -> float | None:
        """Measured end-to-end seconds."""
        return rd.wall_s(self.report)


# ----------------------------------------------------------------------------------------- inputs
def _report_files(path: Path) -> list[tuple[str, Path]]:
    """(case, report path) pairs found under one input path."""
    from .runner import MANIFEST, load_manifest

    if path.is_file():
        if path.name == MANIFEST:
            return _report_files(path.parent)
        return [(path.stem, path)]
    if not path.is_dir():
        raise ConfigError(f"compare: {str(path)!r} does not exist")
    manifest = load_manifest(path)
    if manifest is not None:
        out = []
        for c in manifest.get("cases") or []:
            p = path / (c.get("report") or f"{c.get('name')}.json")
            if p.exists():
                out.append((str(c.get("name")), p))
        return out
    found: list[tuple[str, Path]] = []
    for sub in sorted(path.iterdir()):
        if sub.is_dir() and (sub / MANIFEST).is_file():
            found += _report_files(sub)
    for f in sorted(path.glob("*.json")):
        if f.name != MANIFEST:
            found.append((f.stem, f))
    return found


def collect_runs(inputs: Sequence[str | Path], catalog: list[dict[str, Any]], notes: list[str] | None = None
                 ) -> list[Measured]:
    """Load every report under ``inputs`` (suite run dirs, dirs of run dirs, or report JSONs).

    Of several runs of the same case on the same GPU the newest is kept (said in ``notes``).
    """
    notes = notes if notes is not None else []
    cat = by_key(catalog)
    runs: dict[tuple[str, str, int], Measured] = {}
    seen_any = False
    for inp in inputs:
        files = _report_files(Path(inp))
        if not files:
            raise ConfigError(f"compare: no reports found in {str(inp)!r}")
        for case, f in files:
            try:
                rep = rd.read_report(f)
            except ReportError as exc:
                if Path(inp).is_file():
                    raise
                notes.append(f"skipped {f}: {exc}")
                continue
            seen_any = True
            gpu = rd.gpu_of(rep, catalog)
            m = Measured(case, rep, f, gpu, cat.get(gpu.key) if gpu.key else None, str(rep.get("status") or "failed"),
                         str(rep.get("created") or ""))
            k = (case, gpu.key or gpu.name, gpu.count)
            old = runs.get(k)
            if old is not None:
                keep, drop = (m, old) if m.created >= old.created else (old, m)
                notes.append(f"{case} on {gpu.label}: several runs; kept {keep.path} ({keep.created}), "
                             f"ignored {drop.path}")
                runs[k] = keep
            else:
                runs[k] = m
    if not seen_any:
        raise ConfigError("compare: no readable reports in the inputs")
    return list(runs.values())


def _run_settings(rep: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (rep.get("run") or {}).items() if k not in IGNORED_RUN_KEYS}


# ----------------------------------------------------------------------------------------- numbers
def fit_verdict(reserved_gb: float | None, memory_gb: float | None, context_gb: float) -> tuple[str, float | None]:
    """("fits" | "does not fit" | "unknown", need GB) on a card of ``memory_gb``.

    need = peak *reserved* memory (what PyTorch's caching allocator holds, ``peak_memory(report,
    "reserved")``) + ``context_gb`` for the CUDA context.
    """
    if reserved_gb is None or memory_gb is None:
        return "unknown", None
    need = reserved_gb + context_gb
    return ("fits" if need <= memory_gb else "does not fit"), need


def efficiency(flops: float | None, seconds: float | None, entry: dict[str, Any] | None, count: int
               ) -> tuple[float | None, str]:
    """Achieved FLOP/s ÷ (peak dense bf16 FLOP/s × cards), as a fraction; (None, reason) if unknown.

    ``flops`` is the run's total over all its GPUs (a multi-GPU report's ``totals.flops`` sums the
    ranks) and ``count`` the GPUs it used (``gpu_of``), so this is the mean utilization per card.
    """
    peak = num(entry, "bf16_dense_tflops")
    if flops is None:
        return None, "report has no FLOP count"
    if not seconds:
        return None, "no time"
    if peak is None:
        return None, "GPU not in the catalog or no bf16 rate"
    return flops / seconds / (peak * 1e12 * count), ""


def cost_effectiveness(seconds: float | None, entry: dict[str, Any] | None, count: int) -> tuple[float | None, str]:
    """The seed's 性价比 (1 / time) / price, in 1/(s·USD); (None, reason) if unknown."""
    p, why = price(entry)
    if p is None:
        return None, why
    if not seconds:
        return None, "no time"
    return (1.0 / seconds) / (p * count), ""


def dollars_per_video(seconds: float | None, entry: dict[str, Any] | None, count: int
                      ) -> tuple[tuple[float, float] | None, str]:
    """(low, high) USD per video from the hourly price range; (None, reason) if unknown."""
    low, high, why = hourly(entry)
    if low is None or high is None:
        return None, why
    if not seconds:
        return None, "no time"
    return (seconds / 3600.0 * low * count, seconds / 3600.0 * high * count), why


# ----------------------------------------------------------------------------------------- model
@dataclass
class Row:
    """One line of a case's table: a measured run, or a projection onto a catalog GPU."""

    label: str
    basis: str  # "measured" | "projected from <GPU>"
    projected: bool
    entry: dict[str, Any] | None
    count: int
    total_s: float | None
    stages: dict[str, float]
    peak_reserved_gb: float | None  # per GPU; the fit uses it
    peak_alloc_gb: float | None
    flops: float | None  # all GPUs of the run together
    energy_j: dict[str, Any] | None
    status: str
    error: dict[str, Any] | None
    projection: Projection | None = None
    measured: Measured | None = None


def _measured_row(m: Measured) -> Row:
    rep = m.report
    stages = {str(s["name"]): rd.duration(s) for s in rd.top_stages(rep)}
    wall = m.total_s
    if wall is not None and stages and wall - sum(stages.values()) > 0.005:
        stages["other"] = wall - sum(stages.values())  # between/outside the main stages
    return Row(label=m.label, basis="measured", projected=False, entry=m.entry, count=m.gpu.count,
               total_s=m.total_s if m.status == "ok" else None,
               stages=stages,
               peak_reserved_gb=rd.peak_memory_gb(rep, "reserved"), peak_alloc_gb=rd.peak_memory_gb(rep, "allocated"),
               flops=value_of(rd.total(rep, "flops")),
               energy_j=rd.total(rep, "energy_j"), status=m.status, error=rep.get("error"), measured=m)


def _pick_source(target: dict[str, Any], sources: list[Measured]) -> Measured | None:
    """The measured run whose GPU is closest in bf16 rate to ``target`` (smallest extrapolation)."""
    tt = num(target, "bf16_dense_tflops")
    best: tuple[float, int, Measured] | None = None
    for m in sources:
        st = num(m.entry, "bf16_dense_tflops")
        if st is None or tt is None:
            continue
        dist = abs(math.log(st / tt))
        gpm = 0 if rd.msource(rd.total(m.report, "mean_sm_percent")) == "gpm" else 1
        if best is None or (dist, gpm) < (best[0], best[1]):
            best = (dist, gpm, m)
    return best[2] if best else None


def _projected_row(p: Projection, m: Measured, target: dict[str, Any]) -> Row:
    return Row(label=(f"{p.count}× " if p.count > 1 else "") + str(target.get("name") or target["key"]),
               basis=f"projected from {m.label}", projected=True, entry=target, count=p.count,
               total_s=p.projected_total_s, stages=p.stage_totals(), peak_reserved_gb=p.peak_memory_gb,
               peak_alloc_gb=rd.peak_memory_gb(m.report, "allocated"),
               flops=value_of(rd.total(m.report, "flops")), energy_j=None, status="ok", error=None, projection=p,
               measured=m)


@dataclass
class CaseComparison:
    """Everything shown for one case."""

    case: str
    rows: list[Row]
    checks: list[tuple[Projection, Measured]]  # projections of GPUs that were also measured
    settings_differ: list[str]
    unprojectable: list[str]


def build_case(case: str, runs: list[Measured], catalog: list[dict[str, Any]], targets: list[str],
               context_gb: float) -> CaseComparison:
    """Measured rows, projections onto unmeasured ``targets`` and projection checks for one case."""
    runs = sorted(runs, key=lambda m: (m.entry is None, -(num(m.entry, "bf16_dense_tflops") or 0), m.label))
    rows = [_measured_row(m) for m in runs]
    sources = [m for m in runs if m.status == "ok" and m.entry is not None]
    unprojectable = [f"{m.label} ({'not a GPU run' if m.gpu.key is None and m.label.startswith('CPU') else 'not in the catalog' if m.entry is None else m.status})"
                     for m in runs if m not in sources]
    cat = by_key(catalog)
    measured_keys = {(m.gpu.key, m.gpu.count) for m in runs if m.status == "ok"}
    checks: list[tuple[Projection, Measured]] = []
    counts = sorted({m.gpu.count for m in sources})
    for key in targets:
        target = cat[key]
        for count in counts:
            same_count = [m for m in sources if m.gpu.count == count]
            if (key, count) in measured_keys:
                measured = next(m for m in runs if m.gpu.key == key and m.gpu.count == count and m.status == "ok")
                for src in same_count:
                    if src is measured:
                        continue
                    try:
                        checks.append((project_report(src.report, src.entry, target, case=case,  # type: ignore[arg-type]
                                                      context_gb=context_gb), measured))
                    except ProjectionError:
                        continue
                continue
            src = _pick_source(target, same_count)
            if src is None:
                continue
            try:
                p = project_report(src.report, src.entry, target, case=case, context_gb=context_gb)  # type: ignore[arg-type]
            except ProjectionError as exc:
                unprojectable.append(f"{target.get('name')}: {exc}")
                continue
            rows.append(_projected_row(p, src, target))
    base = _run_settings(runs[0].report) if runs else {}
    differ = []
    for m in runs[1:]:
        s = _run_settings(m.report)
        diff = sorted(k for k in set(base) | set(s) if base.get(k) != s.get(k))
        if diff:
            differ.append(f"{m.label}: " + ", ".join(f"{k}={s.get(k)!r} (vs {base.get(k)!r})" for k in diff[:6]))
    return CaseComparison(case, rows, checks, differ, unprojectable)


# ----------------------------------------------------------------------------------------- markdown
def _money(v: float) -> str:
    return f"${fmt_num(v, 4)}" if v < 0.1 else f"${v:.3f}" if v < 10 else f"${v:,.2f}"


def _catalog_table(catalog: list[dict[str, Any]], notes: Notes) -> list[str]:
    lines = ["| GPU | Memory GB | Bandwidth GB/s | Dense bf16 TFLOPS | Power W | PCIe GB/s | Purchase (source, date) | "
             "Cloud $/h low–high (source, date) |", "|---|---:|---:|---:|---:|---:|---|---|"]
    for e in catalog:
        p, pwhy = price(e)
        lo, hi, hwhy = hourly(e)

        def n(field: str, d: int = 0, e: dict[str, Any] = e) -> str:
            v = num(e, field)
            return notes.na(f"not in the catalog ({field})") if v is None else fmt_num(v, d)

        lines.append("| " + " | ".join([
            esc(e.get("name") or e["key"]), n("memory_gb"), n("bandwidth_gbps"), n("bf16_dense_tflops", 1),
            n("power_w"), n("pcie_gbps"),
            notes.na(pwhy) if p is None else f"${p:,.0f} ({esc(pwhy)})",
            notes.na(hwhy) if lo is None or hi is None else f"${lo:.2f}–{hi:.2f} ({esc(hwhy)})",
        ]) + " |")
    return lines


def _stage_columns(rows: list[Row]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        if not r.projected:
            for name in r.stages:
                if name not in cols and name != "other":
                    cols.append(name)
    if any(r.stages.get("other", 0) > 0 for r in rows):
        cols.append("other")
    return cols


def _time_table(cc: CaseComparison, notes: Notes) -> list[str]:
    cols = _stage_columns(cc.rows)
    lines = ["| GPU | Basis | Status | Total s | " + " | ".join(esc(c) for c in cols) + " |",
             "|---|---|---|---:|" + "---:|" * len(cols)]
    for r in cc.rows:
        status = "—" if r.projected else r.status
        if r.status == "oom" and r.error:
            status = f"oom: {r.error.get('message')}"
        elif r.status != "ok" and r.error:
            status = f"{r.status} ({r.error.get('stage')})"
        tot = (fmt_num(r.total_s, 2) if r.total_s is not None else
               notes.na("the run did not complete"))
        cells = []
        for c in cols:
            v = r.stages.get(c)
            cells.append(fmt_num(v, 2) if v is not None else "—")
        lines.append(f"| {esc(r.label)} | {esc(r.basis)} | {esc(status)} | {tot} | " + " | ".join(cells) + " |")
    return lines


def _cost_table(cc: CaseComparison, notes: Notes) -> tuple[list[str], list[tuple[str, float | None, bool]]]:
    lines = ["| GPU | Basis | Total s | Efficiency | Cost-effectiveness (videos/h per $1k) | $ per video (low–high) "
             "| Wh per video |", "|---|---|---:|---:|---:|---:|---:|"]
    scores: list[tuple[str, float | None, bool]] = []
    best = max((s for s in (cost_effectiveness(r.total_s, r.entry, r.count)[0] for r in cc.rows) if s), default=None)
    for r in cc.rows:
        if r.total_s is None:
            continue
        eff, ewhy = efficiency(r.flops, r.total_s, r.entry, r.count)
        ce, cwhy = cost_effectiveness(r.total_s, r.entry, r.count)
        dv, dwhy = dollars_per_video(r.total_s, r.entry, r.count)
        if r.projected:
            wh = notes.na("energy is not projected: Wh per video comes only from a measured energy counter")
        else:
            e = value_of(r.energy_j)
            wh = fmt_num(e / 3600.0, 3) if e is not None else notes.na(rd.mreason(r.energy_j, "energy not measured"))
        scores.append((r.label, ce, r.projected))
        lines.append("| " + " | ".join([
            esc(r.label), esc(r.basis), fmt_num(r.total_s, 2),
            notes.na(ewhy) if eff is None else f"{fmt_num(eff * 100, 1)} %",
            notes.na(cwhy) if ce is None else f"{ce * 3.6e6:.3g}" + (f" ({ce / best:.2f}× best)" if best else ""),
            notes.na(dwhy) if dv is None else _money(dv[0]) if dv[0] == dv[1] else f"{_money(dv[0])}–{_money(dv[1])}",
            wh,
        ]) + " |")
    return lines, scores


def _fit_table(cc: CaseComparison, catalog: list[dict[str, Any]], context_gb: float, notes: Notes) -> list[str]:
    measured = [r for r in cc.rows if not r.projected and r.measured is not None]
    budget_rows = [(r, (r.measured.report.get("run") or {}).get("memory_budget_gb")) for r in measured]  # type: ignore[union-attr]
    budget_rows = [(r, b) for r, b in budget_rows if isinstance(b, (int, float))]
    ok = [r for r in measured if r.status == "ok" and r.peak_reserved_gb is not None]
    lines: list[str] = []
    if ok:
        ref = max(ok, key=lambda r: r.peak_reserved_gb or 0.0)
        alloc = "" if ref.peak_alloc_gb is None else f"; {fmt_num(ref.peak_alloc_gb, 2)} GB allocated by tensors"
        lines += [f"Need = peak **reserved** memory {fmt_num(ref.peak_reserved_gb or 0.0, 2)} GB (held by PyTorch's "
                  f"caching allocator{alloc}) measured on {esc(ref.label)}"
                  + (", the largest of the measured runs" if len(ok) > 1 else "")
                  + f", + {context_gb:g} GB CUDA-context allowance, against each card's memory (the verdict is a "
                  "projection from the measured peak):", "",
                  "| GPU | Memory GB | Need GB (reserved + context) | Fit |", "|---|---:|---:|---|"]
        for e in catalog:
            mem = num(e, "memory_gb")
            verdict, need = fit_verdict(ref.peak_reserved_gb, mem, context_gb)
            margin = "" if need is None or mem is None else f" ({mem - need:+.1f} GB)"
            lines.append(f"| {esc(e.get('name') or e['key'])} | "
                         + (fmt_num(mem, 0) if mem is not None else notes.na("no memory size in the catalog"))
                         + f" | {fmt_num(need, 2) if need is not None else 'n/a'} | {verdict}{margin} |")
    else:
        ooms = [b for r, b in budget_rows if r.status == "oom"]
        if not ooms:
            if any(r.status == "ok" for r in measured):
                return ["_No GPU peak memory was measured for this case (e.g. a CPU run): fit unknown._"]
            return ["_No completed run of this case: peak memory, and so the fit, is unknown._"]
        b = min(ooms)
        lines += [f"No run of this case completed; it ran out of memory under `--memory_budget_gb {b:g}`, so it needs "
                  f"more than {b:g} GB (+ CUDA context):", "", "| GPU | Memory GB | Fit |", "|---|---:|---|"]
        for e in catalog:
            mem = num(e, "memory_gb")
            verdict = ("n/a" if mem is None else f"does not fit (measured: needs > {b:g} GB)" if mem <= b
                       else "unknown: see the same case without a budget")
            lines.append(f"| {esc(e.get('name') or e['key'])} | {'n/a' if mem is None else fmt_num(mem, 0)} | {verdict} |")
    for r, b in budget_rows:
        if r.status == "oom":
            lines.append(f"\nMeasured under `--memory_budget_gb {b:g}` on {esc(r.label)}: **does not fit within {b:g} GB** "
                         f"(stopped in `{(r.error or {}).get('stage')}`: {esc((r.error or {}).get('message'))}).")
        elif r.status == "ok":
            lines.append(f"\nMeasured under `--memory_budget_gb {b:g}` on {esc(r.label)}: **fits within {b:g} GB**"
                         + ("" if r.peak_reserved_gb is None else f" (peak reserved {fmt_num(r.peak_reserved_gb, 2)} GB)")
                         + ".")
    return lines


def _checks_table(cc: CaseComparison) -> list[str]:
    if not cc.checks:
        return []
    lines = ["| Target GPU | Projected from | Projected s | Measured s | Error | GPU-scaled parts: projected / "
             "measured s (error) | Host parts, kept as measured: source / target s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for p, m in cc.checks:
        meas = m.total_s
        err = "n/a" if not meas else f"{error_percent(p.projected_total_s, meas):+.1f} %"
        split = split_check(p, m.report)
        (ps, ms), (pk, mk) = split["scaled"], split["kept"]
        serr = f" ({error_percent(ps, ms):+.1f} %)" if ms > 0 else ""
        lines.append(f"| {esc(m.label)} | {esc(p.source_name)} | {p.projected_total_s:.2f} | "
                     f"{'n/a' if meas is None else f'{meas:.2f}'} | {err} | {ps:.2f} / {ms:.2f}{serr} | "
                     f"{pk:.2f} / {mk:.2f} |")
    return lines


def _method_block(p: Projection) -> list[str]:
    lines = [f"<details><summary>Projection onto {esc(p.target_name)} from {esc(p.source_name)}: "
             f"{p.measured_total_s:.2f} s → {p.projected_total_s:.2f} s (projected)</summary>", "",
             f"Method: {esc(p.method)}.", "",
             "| Part | Kind | Why | Measured s | × | Projected s |", "|---|---|---|---:|---:|---:|"]
    for part in p.parts:
        lines.append(f"| {esc(part.name)} | {part.kind} | {esc(part.why)} | {fmt_num(part.measured_s, 3)} | "
                     f"{part.factor:.3f} | {fmt_num(part.projected_s, 3)} |")
    lines += ["", "Factors: " + "; ".join(f"{k} × {f:.3f} ({esc(b)})" for k, (f, b) in p.factors.items()) + ".",
              "Caveats: " + "; ".join(esc(c) for c in p.caveats) + ".", "", "</details>", ""]
    return lines


def render_compare_markdown(cases: list[CaseComparison], catalog: list[dict[str, Any]], inputs: Sequence[str],
                            catalog_path: str, context_gb: float, charts: dict[str, str], notes_in: list[str]) -> str:
    """The whole cross-GPU comparison Markdown."""
    notes = Notes()
    out = ["# Cross-GPU Comparison", "",
           "Inputs: " + ", ".join(f"`{esc(i)}`" for i in inputs), "",
           f"GPU catalog: `{esc(catalog_path)}` (datasheet rates; prices are dated snapshots — check them).", "",
           "**measured** rows come from a run's report; **projected** rows are estimates from a measured run on another "
           "GPU (method per row below) — not measurements. Definitions:", "",
           "- Efficiency = achieved FLOP/s ÷ theoretical peak = analytic model FLOPs ÷ total time ÷ (peak dense bf16 "
           "FLOP/s × GPUs) — the seed's 实际耗时/理论算力 as a fraction of peak.",
           "- Cost-effectiveness = (1 / total time) ÷ purchase price (the seed's 性价比 = (1/生成耗时)/显卡价格), shown × "
           "3.6e6 = videos per hour per $1,000 of GPUs; higher is better.",
           "- $ per video = total time × cloud price per GPU-hour (low–high snapshot) × GPUs.",
           "- Wh per video = GPU energy counter over the run (measured runs only).",
           f"- Fit: measured peak reserved memory (what PyTorch's caching allocator holds, per GPU) + {context_gb:g} GB "
           "allowance for the CUDA context ≤ card memory.",
           ""]
    if "total_time" in charts:
        out += [f"![Total time per GPU]({charts['total_time']})", ""]
    if "cost" in charts:
        out += [f"![Cost-effectiveness per GPU]({charts['cost']})", ""]
    if "stages" in charts:
        out += [f"![Measured stage times]({charts['stages']})", ""]
    for cc in cases:
        out += [f"## {esc(cc.case)}", ""]
        if cc.settings_differ:
            out += ["**Settings differ between machines** (compare with care): " + "; ".join(esc(d) for d in cc.settings_differ),
                    ""]
        out += ["### Time per stage (s)", ""] + _time_table(cc, notes) + [""]
        cost_lines, _ = _cost_table(cc, notes)
        if len(cost_lines) > 2:
            out += ["### Efficiency and cost", ""] + cost_lines + [""]
        else:
            out += ["### Efficiency and cost", "", "_No completed run: no time to price._", ""]
        out += ["### Memory fit", ""] + _fit_table(cc, catalog, context_gb, notes) + [""]
        checks = _checks_table(cc)
        if checks:
            out += ["### Projection vs measurement", "",
                    "Projections of GPUs that were also measured: error = (projected − measured) ÷ measured. "
                    "The error is split into the parts the projection scales with the GPU (compute, memory, "
                    "transfer) and the host parts (loading, encoding the mp4, Python) that it keeps as measured "
                    "on the source machine: the latter differ between hosts and runs, not between GPUs.", ""]
            out += checks + [""]
        if cc.unprojectable:
            out += ["Not used as a projection source: " + "; ".join(esc(u) for u in cc.unprojectable) + ".", ""]
        blocks = [r.projection for r in cc.rows if r.projection] + [p for p, _ in cc.checks]
        if blocks:
            out += ["### Projection method", ""]
            for p in blocks:
                out += _method_block(p)
    out += ["## GPU catalog", ""] + _catalog_table(catalog, notes) + [""]
    if notes_in:
        out += ["## Input notes", ""] + [f"- {esc(n)}" for n in notes_in] + [""]
    out += notes.render()
    return "\n".join(out).rstrip() + "\n"


# ----------------------------------------------------------------------------------------- main
def compare(inputs: Sequence[str], output: Path, catalog_path: str | None = None, targets: Sequence[str] | None = None,
            context_gb: float = DEFAULT_CONTEXT_GB, cases: Sequence[str] | None = None) -> tuple[Path, list[CaseComparison]]:
    """Build the comparison of ``inputs`` and write ``output`` (+ ``<stem>_files/`` charts)."""
    catalog = load_gpus(catalog_path)
    keys = [str(e["key"]) for e in catalog]
    if targets:
        for t in targets:
            if t not in keys:
                raise ConfigError(f"--targets: {t!r} is not in the catalog; allowed: {', '.join(keys)}")
        target_keys = list(targets)
    else:
        target_keys = keys
    notes_in: list[str] = []
    runs = collect_runs(inputs, catalog, notes_in)
    names: list[str] = []
    for m in runs:
        if m.case not in names:
            names.append(m.case)
    if cases:
        missing = [c for c in cases if c not in names]
        if missing:
            raise ConfigError(f"--cases: {missing[0]!r} not found; found: {', '.join(names)}")
        names = [c for c in names if c in cases]
    comparisons = [build_case(c, [m for m in runs if m.case == c], catalog, target_keys, context_gb) for c in names]
    output, charts_dir = prepare_output(output)
    charts: dict[str, str] = {}
    gpu_labels: list[str] = []
    for cc in comparisons:
        for r in cc.rows:
            if r.total_s is not None and r.label not in gpu_labels:
                gpu_labels.append(r.label)
    series_t, series_c = [], []
    for cc in comparisons:
        by_label = {r.label: r for r in cc.rows if r.total_s is not None}
        vals = [by_label[g].total_s if g in by_label else None for g in gpu_labels]
        proj = [bool(by_label[g].projected) if g in by_label else False for g in gpu_labels]
        series_t.append((cc.case, vals, proj))
        ce = [cost_effectiveness(by_label[g].total_s, by_label[g].entry, by_label[g].count)[0] if g in by_label else None
              for g in gpu_labels]
        series_c.append((cc.case, [None if v is None else v * 3.6e6 for v in ce], proj))
    rel = lambda p: Path(os.path.relpath(p, output.parent)).as_posix()  # noqa: E731
    p = charts_dir / "total_time.png"
    if grouped_bar_chart("Total time per video", "seconds", gpu_labels, series_t, p):
        charts["total_time"] = rel(p)
    p = charts_dir / "cost_effectiveness.png"
    if grouped_bar_chart("Cost-effectiveness", "videos/h per $1k of GPUs", gpu_labels, series_c, p):
        charts["cost"] = rel(p)
    measured_ok = [(f"{m.case} @ {m.label}", m.report) for m in runs if m.status == "ok" and m.case in names]
    p = charts_dir / "stage_times.png"
    if measured_ok and stage_time_chart(measured_ok, p, "Stage times of the measured runs"):
        charts["stages"] = rel(p)
    text = render_compare_markdown(comparisons, catalog, [str(i) for i in inputs], str(catalog_file(catalog_path)),
                                   context_gb, charts, notes_in)
    output.write_text(text, encoding="utf-8")
    return output, comparisons


def build_parser() -> argparse.ArgumentParser:
    """Flags of ``wan-enhanced compare``."""
    p = OneLineParser(prog="wan-enhanced compare", description="Merge benchmark runs from several machines into one "
                                                          "cross-GPU Markdown report with projections and costs")
    p.add_argument("inputs", nargs="+", help="suite run dirs (benchmark/reports/<id>), dirs of run dirs, "
                                             "or report JSON files")
    p.add_argument("--output", default="compare_report.md", help="Markdown path (default compare_report.md); "
                                                                  "charts go to <name>_files/")
    p.add_argument("--catalog", help="GPU catalog JSON (default: the packaged data/gpus.json or "
                                     "$WAN_ENHANCED_GPU_CATALOG)")
    p.add_argument("--targets", help="comma-separated catalog keys to show/project (default: every catalog GPU)")
    p.add_argument("--cases", help="comma-separated case names to include (default: all)")
    p.add_argument("--context-gb", type=float, default=DEFAULT_CONTEXT_GB,
                   help=f"allowance for the CUDA context in the fit check (peak reserved + this ≤ card memory) (default {DEFAULT_CONTEXT_GB})")
    return p


def compare_main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """``wan-enhanced compare``: returns 0, or 2 with a one-line ``error:`` on bad input."""
    out = out or sys.stdout
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        if args.context_gb < 0:
            raise ConfigError(f"--context-gb: {args.context_gb} is not allowed; must be >= 0")
        split = lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None  # noqa: E731
        path, comps = compare(args.inputs, Path(args.output), args.catalog, split(args.targets), args.context_gb,
                              split(args.cases))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    n_meas = sum(1 for c in comps for r in c.rows if not r.projected)
    n_proj = sum(1 for c in comps for r in c.rows if r.projected)
    print(f"compare: {len(comps)} cases, {n_meas} measured and {n_proj} projected rows — report: {path}", file=out)
    return 0
