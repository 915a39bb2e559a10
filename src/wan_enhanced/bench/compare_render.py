"""Markdown of ``compare``: the answer table first, then measured runs, projections and the catalog.

Rendering only: every number arrives computed (answer rows, measured runs, projections); this module
formats them, labels each measured / extrapolated / projected and collapses per-step rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import stages as st
from ..report.values import fmt_num
from . import reportdata as rd
from .answer import JOB_TITLE, AnswerRow
from .compare_inputs import Measured, PeerFile
from .gpus import hourly, num, price
from .markdown import Notes, esc
from .projection import Projection


def money(v: float) -> str:
    """USD with sensible digits."""
    return f"${fmt_num(v, 4)}" if v < 0.1 else f"${v:.3f}" if v < 10 else f"${v:,.2f}"


def answer_table(rows: Sequence[AnswerRow], context_gb: float, notes: Notes) -> list[str]:
    """The answer: one line per GPU for the standard job."""
    lines = [f"**{JOB_TITLE}** — one video, models loaded in the same process (end to end, loading included).", "",
             "| GPU | s / video | warm s / video | band | basis | fits? | flags; attention | videos/h per $1k "
             "| $ / video (cloud low–high) | Wh / video |", "|---|---:|---:|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        fit = r.fit if r.need_gb is None or r.memory_gb is None else \
            f"{r.fit} ({r.need_gb:.1f} of {r.memory_gb:g} GiB)"
        vph = notes.na("no purchase price in the catalog") if r.videos_per_h_per_1k is None else \
            f"{r.videos_per_h_per_1k:.2f}"
        usd = notes.na("no hourly price in the catalog") if r.usd_per_video is None else \
            (money(r.usd_per_video[0]) if r.usd_per_video[0] == r.usd_per_video[1]
             else f"{money(r.usd_per_video[0])}–{money(r.usd_per_video[1])}")
        wh = notes.na("no energy measurement to start from") if r.wh_per_video is None else \
            f"{r.wh_per_video:.1f}" + (" (projected)" if r.projected else "")
        secs = f"**{r.seconds:.0f}**" + (" (projected)" if r.projected else "")
        band = f"{r.band[0]:.0f}–{r.band[1]:.0f} s ({esc(r.band_note)})"
        basis = r.basis if not r.projected else f"projected from {esc(r.source)}"
        warm = notes.na("no steady step to take the cold start from") if r.warm_seconds is None else \
            f"{r.warm_seconds:.0f}"
        lines.append(f"| {esc(r.name)} | {secs} | {warm} | {band} | {basis} | {esc(fit)} | {esc(r.flags)} | {vph} | {usd} | {wh} |")
    lines += ["", "s / video: a fresh process (its first step pays compile and kernel build: the cold start); warm s / "
              "video: the same job without that cold start (a process that has already generated, or warm caches). "
              f"Fit = peak reserved memory of the source run + {context_gb:g} GiB CUDA context ≤ card memory; "
              "\"marginal\" = under 1 GiB to spare. Measured rows: median of the GPU's runs of this job; "
              "projected rows: per-architecture model, band from the validation."]
    for r in rows:
        for n in r.notes:
            lines.append(f"- {esc(r.name)}: {esc(n)}")
    return lines


def measured_table(runs: Sequence[Measured], notes: Notes) -> list[str]:
    """Measured runs: top-level stage seconds, the denoising steps collapsed to first / steady."""
    cols = [k.name for k in st.PIPELINE_ORDER]
    lines = ["| run | GPU | status | steps | total s | " + " | ".join(cols) + " | first step | steady step | cold start |",
             "|---|---|---|---:|---:|" + "---:|" * (len(cols) + 3)]
    for m in runs:
        all_st = rd.stages(m.report)
        top = {str(s["name"]): rd.duration(s) for s in all_st if s.get("parent") == st.TOTAL.name}
        steps = sorted((s for s in all_st if st.is_step(str(s["name"]))), key=lambda s: st.step_index(str(s["name"])) or 0)
        durs = [rd.duration(s) for s in steps]
        steady = rd.value_of(rd.total(m.report, "steady_s_per_step"))
        if steady is None:
            steady = sorted(durs[1:])[len(durs[1:]) // 2] if len(durs) > 1 else None
        cold = rd.value_of(rd.total(m.report, "cold_start_s"))
        tot = m.total_s
        cells = [fmt_num(top[c], 2) if c in top else "—" for c in cols]
        lines.append(f"| {esc(m.case)} | {esc(m.label)} | {esc(m.status)} | {len(durs)} | "
                     f"{fmt_num(tot, 2) if tot is not None else notes.na('incomplete run')} | " + " | ".join(cells)
                     + f" | {fmt_num(durs[0], 3) if durs else '—'} | {fmt_num(steady, 3) if steady else '—'} | "
                     + (f"{fmt_num(cold, 2)} |" if cold is not None else "— |"))
    return lines


def projection_block(p: Projection) -> list[str]:
    """One projection's parts (steps collapsed into one line) in a details block."""
    band = "no band" if p.band_pct is None else f"±{p.band_pct:g} %"
    lines = [f"<details><summary>{esc(p.target_name)}: {p.total_s:.0f} s projected ({band}) from "
             f"{esc(p.profile.label)} — {esc(p.profile.source)}</summary>", "",
             f"Attention on the target: {esc(p.kernel_why)}. Steady step {p.steady_step_s:.3f} s = GEMM "
             f"{p.step_parts['gemm_s']:.3f} + attention {p.step_parts['attention_s']:.3f} + rest {p.step_parts['rest_s']:.3f} s.",
             "", "| part | bound | measured s | projected s | basis |", "|---|---|---:|---:|---|"]
    for part in p.parts:
        lines.append(f"| {esc(part.name)} | {part.bound} | {part.measured_s:.2f} | {part.projected_s:.2f} | {esc(part.basis)} |")
    if p.caveats:
        lines += ["", "Caveats: " + "; ".join(esc(c) for c in p.caveats) + "."]
    return lines + ["", "</details>", ""]


def peers_table(files: Sequence[PeerFile]) -> list[str]:
    """Peers measured side by side (``benchmark/peers.py``): the ratio table of each file."""
    lines: list[str] = []
    for f in files:
        if not [r for r in f.data.get("ratios") or [] if "unavailable" not in r]:
            continue  # a peer file without an ours record of the same run: no ratio to show
        meta = f.data.get("meta") or {}
        lines += [f"`{esc(f.path)}` — {esc(meta.get('device'))}, {meta.get('size')}×{meta.get('frame_num')}, "
                  f"{meta.get('steps')} of {meta.get('job_steps')} steps timed:", "",
                  "| peer | denoise + decode s | peer ÷ ours | end to end s | peer ÷ ours |", "|---|---:|---:|---:|---:|"]
        for r in f.data.get("ratios") or []:
            if "unavailable" in r:
                continue
            lines.append(f"| {esc(r['label'])} | {r['peer_core_s']:.1f} | {r['core_ratio']:.2f}× | "
                         f"{r['peer_total_s']:.1f} | {r['total_ratio']:.2f}× |")
        lines.append("")
    return lines


def catalog_table(catalog: Sequence[dict[str, Any]], notes: Notes) -> list[str]:
    """The catalog's rates and prices, each with its source."""
    lines = ["| GPU | CC | memory GiB | bandwidth GB/s | GEMM bf16 TFLOP/s (achieved) | attention TFLOP/s | "
             "purchase | cloud $/h |", "|---|---|---:|---:|---:|---|---|---|"]
    for e in catalog:
        rates = e.get("rates") or {}
        g = (rates.get("gemm_bf16") or {}).get("value")
        att = ", ".join(f"{k} {v.get('value'):g}" for k, v in (rates.get("attention") or {}).items()
                        if isinstance(v, dict) and v.get("value"))
        p, pwhy = price(e)
        lo, hi, hwhy = hourly(e)
        lines.append(f"| {esc(e.get('name'))} | {e.get('compute_capability', '—')} | {fmt_num(num(e, 'memory_gb'), 0)} | "
                     f"{fmt_num(num(e, 'bandwidth_gbps'), 0)} | {g if g else notes.na('no GEMM rate')} | {att or '—'} | "
                     + (notes.na(pwhy) if p is None else f"${p:,.0f} ({esc(pwhy)})") + " | "
                     + (notes.na(hwhy) if lo is None else f"${lo:.2f}–{hi:.2f} ({esc(hwhy)})") + " |")
    return lines + ["", "Rate sources (per GPU, with dates) are in the catalog file's `rates` entries."]


def render(rows: Sequence[AnswerRow], runs: Sequence[Measured], peers: Sequence[PeerFile],
           catalog: Sequence[dict[str, Any]], *, inputs: Sequence[str], catalog_path: str, context_gb: float,
           chart: str | None, notes_in: Sequence[str]) -> str:
    """The whole comparison Markdown, the answer first."""
    notes = Notes()
    out = ["# How long does one video take, does it fit, what does it cost", ""]
    out += answer_table(rows, context_gb, notes) + [""]
    if chart:
        out += [f"![The answer]({chart})", ""]
    if peers:
        out += ["## Peers measured side by side", ""] + peers_table(peers)
    out += ["## Measured runs", "", "Inputs: " + ", ".join(f"`{esc(i)}`" for i in inputs), ""]
    out += measured_table(runs, notes) + [""]
    blocks = [r.projection for r in rows if r.projection is not None]
    if blocks:
        out += ["## Projections", ""]
        for p in blocks:
            out += projection_block(p)
    out += ["## GPU catalog", "", f"`{esc(catalog_path)}`", ""] + catalog_table(catalog, notes) + [""]
    if notes_in:
        out += ["## Input notes", ""] + [f"- {esc(n)}" for n in notes_in] + [""]
    out += notes.render()
    return "\n".join(out).rstrip() + "\n"
