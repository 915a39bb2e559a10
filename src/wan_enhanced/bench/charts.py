"""PNG charts for the benchmark and compare reports (matplotlib, Agg backend; never measures)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import reportdata as rd


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _stage_colors(names: Sequence[str]) -> dict[str, Any]:
    plt = _plt()
    cmap = plt.get_cmap("tab20")
    return {n: cmap(i % 20) for i, n in enumerate(names)}


def stage_time_chart(cases: Sequence[tuple[str, dict[str, Any]]], path: Path,
                     title: str = "Stage times per case") -> bool:
    """Horizontal stacked bars: one bar per (label, report), segments = its main stages and the ``(untracked)``
    remainder, so that each bar's label is the report's ``Total``.

    Returns False (and writes nothing) when no report has stages.
    """
    rows = [(label, rd.top_stage_seconds(rep)) for label, rep in cases]
    rows = [(label, st) for label, st in rows if st]
    if not rows:
        return False
    order: list[str] = []
    for _, st in rows:
        for name in st:
            if name not in order:
                order.append(name)
    colors = _stage_colors(order)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.55 * len(rows)))
    labels = [label for label, _ in rows]
    for name in order:
        lefts, widths = [], []
        for _, st in rows:
            before = 0.0
            for n in order:
                if n == name:
                    break
                before += st.get(n, 0.0)
            lefts.append(before)
            widths.append(st.get(name, 0.0))
        ax.barh(labels, widths, left=lefts, color=colors[name], label=name, edgecolor="white", linewidth=0.5)
    for y, (_, st) in enumerate(rows):
        t = sum(st.values())
        ax.text(t, y, f" {t:.1f} s", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (measured)")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18 if len(rows) > 2 else -0.35), ncol=min(len(order), 5),
              fontsize=8, frameon=False)
    ax.margins(x=0.12)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def timeline_chart(name: str, report: dict[str, Any], path: Path) -> str | None:
    """Memory and SM% over time of one run (``report["timeline"]``), main stages shaded.

    Returns None when written, else the reason there is no chart.
    """
    tl = report.get("timeline") or {}
    t = tl.get("t_s") or []
    if len(t) < 2:
        return "no timeline samples in the report"

    def series(key: str) -> list[float] | None:
        vals = tl.get(key) or []
        if len(vals) != len(t):
            return None
        pts = [float(v) if isinstance(v, (int, float)) else float("nan") for v in vals]
        return pts if any(v == v for v in pts) else None

    mem, sm = series("memory_gb"), series("sm_percent")
    if mem is None and sm is None:
        return "timeline has no memory or SM% samples (no GPU telemetry on this device)"
    plt = _plt()
    fig, axes = plt.subplots(2, 1, figsize=(10, 4.8), sharex=True)
    stages = rd.top_stages(report)
    colors = _stage_colors([s["name"] for s in stages])
    for ax in axes:
        for s in stages:
            start, end = s.get("start_s"), s.get("end_s")
            if isinstance(start, (int, float)) and isinstance(end, (int, float)) and end > start:
                ax.axvspan(start, end, color=colors[s["name"]], alpha=0.15, lw=0)
    if mem is not None:
        axes[0].plot(t, mem, color="tab:blue", lw=1.2)
        axes[0].set_ylabel("GPU memory (GB)")
    else:
        axes[0].text(0.5, 0.5, "no memory samples", transform=axes[0].transAxes, ha="center")
    src = tl.get("sm_source") or "unknown source"
    if sm is not None:
        axes[1].plot(t, sm, color="tab:red", lw=1.2)
        axes[1].set_ylim(0, 105)
        axes[1].set_ylabel(f"SM % ({src})")
    else:
        axes[1].text(0.5, 0.5, f"no SM% samples ({src})", transform=axes[1].transAxes, ha="center")
    axes[1].set_xlabel("seconds since start (measured)")
    for s in stages:
        start, end = s.get("start_s"), s.get("end_s")
        if isinstance(start, (int, float)) and isinstance(end, (int, float)) and end - start > 0.04 * (t[-1] - t[0]):
            axes[0].text((start + end) / 2, 1.0, s["name"], transform=axes[0].get_xaxis_transform(), ha="center",
                         va="bottom", fontsize=7, rotation=0)
    fig.suptitle(f"{name}: memory and SM activity over time", y=1.02)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return None


def grouped_bar_chart(title: str, ylabel: str, groups: Sequence[str], series: Sequence[tuple[str, Sequence[float | None],
                      Sequence[bool]]], path: Path, log: bool = False) -> bool:
    """Grouped bars: ``series`` = (label, value per group, projected? per group); projected bars hatched.

    Returns False when there is nothing to draw.
    """
    if not groups or not series or all(v is None for _, vals, _ in series for v in vals):
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) * max(1, len(series)) / 2 + 3), 4.2))
    width = 0.8 / len(series)
    cmap = plt.get_cmap("tab10")
    for j, (label, vals, projected) in enumerate(series):
        for i, v in enumerate(vals):
            if v is None:
                continue
            x = i - 0.4 + width * (j + 0.5)
            ax.bar(x, v, width=width * 0.95, color=cmap(j % 10), hatch="//" if projected[i] else None,
                   edgecolor="black" if projected[i] else cmap(j % 10), linewidth=0.5,
                   label=label if i == next(k for k, w in enumerate(vals) if w is not None) else None)
            ax.text(x, v, f"{v:.3g}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.set_title(title + "  (hatched = projected)")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def prepare_output(output: Path) -> tuple[Path, Path]:
    """Resolve a Markdown output path; create it and its ``<stem>_files/`` chart folder (old PNGs removed)."""
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    charts_dir = output.with_name(output.stem + "_files")
    charts_dir.mkdir(parents=True, exist_ok=True)
    for old in charts_dir.glob("*.png"):
        old.unlink()
    return output, charts_dir


def answer_chart(title: str, labels: Sequence[str], seconds: Sequence[float], usd: Sequence[float | None],
                 projected: Sequence[bool], path: Path) -> bool:
    """Two panels per GPU: seconds per video and $ per video (projected bars hatched). False if no rows."""
    if not labels:
        return False
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 0.9 + 0.5 * len(labels)), sharey=True)
    y = list(range(len(labels)))
    for ax, vals, unit in ((a1, seconds, "s / video"), (a2, usd, "$ / video (cloud, low)")):
        for i, v in enumerate(vals):
            if v is None:
                ax.text(0, i, " unavailable", va="center", fontsize=8)
                continue
            ax.barh(i, v, color="#4c72b0" if not projected[i] else "#dd8452", hatch="//" if projected[i] else None,
                    edgecolor="white")
            ax.text(v, i, f" {v:.0f}" if unit.startswith("s") else f" ${v:.3f}", va="center", fontsize=8)
        ax.set_xlabel(unit)
        ax.margins(x=0.2)
    a1.set_yticks(y, labels)
    a1.invert_yaxis()
    fig.suptitle(title + "  (hatched = projected)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True
