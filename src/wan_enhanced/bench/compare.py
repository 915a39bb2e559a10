"""``wan-enhanced compare DIR|JSON ...``: the standard job across GPUs, measured where we can, projected where not.

Data flow: :mod:`.compare_inputs` finds reports and peer files (recursively) → :mod:`.answer` builds one
row per GPU (measured runs; per-architecture projections from :mod:`.projection`; costs from
:mod:`.cost_model`) → :mod:`.compare_render` writes the Markdown, the answer table first, and
:mod:`.charts` the answer chart. ``--targets`` filters every table.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from ..argparse_util import OneLineParser
from ..errors import ConfigError, UserError
from ..report.schema import write_text_atomic
from . import perf_model as pm
from .answer import JOB_TITLE, AnswerRow, answer_rows
from .charts import answer_chart, prepare_output
from .compare_inputs import collect
from .compare_render import render
from .gpus import catalog_file, load_gpus
from .projection import DEFAULT_CONTEXT_GB


def check_targets(targets: Sequence[str] | None, catalog: list[dict]) -> list[str] | None:
    """Validate ``--targets`` against the catalog (and the fields the model needs); one-line errors."""
    if not targets:
        return None
    keys = [str(e["key"]) for e in catalog]
    for t in targets:
        if t not in keys:
            raise ConfigError(f"--targets: {t!r} is not in the catalog; allowed: {', '.join(keys)}")
    for e in catalog:
        if e["key"] in targets:
            pm.check_entry(e)
    return list(targets)


def compare(inputs: Sequence[str], output: Path, catalog_path: str | None = None, targets: Sequence[str] | None = None,
            context_gb: float = DEFAULT_CONTEXT_GB, host_scale: float = 1.0) -> tuple[Path, list[AnswerRow]]:
    """Build the comparison of ``inputs`` and write ``output`` (+ ``<stem>_files/answer.png``)."""
    catalog = load_gpus(catalog_path)
    wanted = check_targets(targets, catalog)
    notes_in: list[str] = []
    runs, peers = collect(inputs, catalog, notes_in)
    rows, why = answer_rows(runs, catalog, wanted, host_scale=host_scale, context_gb=context_gb)
    notes_in += why
    if wanted:
        keep = set(wanted)
        runs = [m for m in runs if m.entry is not None and m.entry["key"] in keep]
        peers = [p for p in peers if p.entry is not None and p.entry["key"] in keep]
    output, charts_dir = prepare_output(output)
    chart = None
    path = charts_dir / "answer.png"
    if answer_chart(JOB_TITLE, [r.name for r in rows], [r.seconds for r in rows],
                    [r.usd_per_video[0] if r.usd_per_video else None for r in rows], [r.projected for r in rows], path):
        chart = Path(os.path.relpath(path, output.parent)).as_posix()
    text = render(rows, runs, peers, catalog, inputs=[str(i) for i in inputs],
                  catalog_path=str(catalog_file(catalog_path)), context_gb=context_gb, chart=chart, notes_in=notes_in)
    write_text_atomic(output, text)
    return output, rows


def build_parser() -> argparse.ArgumentParser:
    """Flags of ``wan-enhanced compare``."""
    p = OneLineParser(prog="wan-enhanced compare", description="The standard job across GPUs: seconds per video, "
                                                               "fit and cost, measured or projected")
    p.add_argument("inputs", nargs="+", help="directories (searched recursively) or report / peers JSON files")
    p.add_argument("--output", default="compare_report.md", help="Markdown path (default compare_report.md); "
                                                                  "the chart goes to <name>_files/")
    p.add_argument("--catalog", help="GPU catalog JSON (default: the packaged data/gpus.json or "
                                     "$WAN_ENHANCED_GPU_CATALOG)")
    p.add_argument("--targets", help="comma-separated catalog keys; filters every table (default: every measured "
                                     "GPU, rtx-4090, rtx-pro-6000-blackwell)")
    p.add_argument("--host", type=float, default=1.0, help="host profile: scale host stages (loading, T5 on the CPU, "
                                                            "compile, mp4) by this factor (default 1: as measured)")
    p.add_argument("--context-gb", type=float, default=DEFAULT_CONTEXT_GB,
                   help=f"CUDA-context allowance in the fit check (default {DEFAULT_CONTEXT_GB})")
    return p


def compare_main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """``wan-enhanced compare``: returns 0, or 2 with a one-line ``error:`` on bad input."""
    out = out or sys.stdout
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        if args.context_gb < 0:
            raise ConfigError(f"--context-gb: {args.context_gb} is not allowed; must be >= 0")
        if args.host <= 0:
            raise ConfigError(f"--host: {args.host} is not allowed; must be > 0")
        targets = [x.strip() for x in args.targets.split(",") if x.strip()] if args.targets else None
        path, rows = compare(args.inputs, Path(args.output), args.catalog, targets, args.context_gb, args.host)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    for r in rows:
        band = f"{r.band[0]:.0f}–{r.band[1]:.0f}"
        print(f"{r.name:32s} {r.seconds:7.0f} s ({band}) {r.basis:28.28s} {r.fit}", file=out)
    print(f"compare: report {path}", file=out)
    return 0
