"""Command line: ``wan-enhanced generate | report | bench | compare | warmup`` (official Wan2.2 flag names).

One argparse parser with a subcommand each; every user error (a ``UserError``, bad flags included)
goes through one boundary (:func:`wan_enhanced.argparse_util.guarded`): one ``error: …`` line on
stderr, exit code 2. The seed scripts use the same parsers under their own program names:
``generate.py`` (:func:`generate_main`), ``format_report.py`` (:func:`report_main`),
``benchmark/run.py`` (``bench.runner.bench_main``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .argparse_util import OneLineParser, guarded

if TYPE_CHECKING:
    from .config import RunConfig

# The generation stack (flags → fastpath → torch) is imported where it is needed, so that
# ``format_report.py`` stays light.

PROG = "wan-enhanced"
# Subcommand -> its one line in ``wan-enhanced --help``.
COMMANDS = {
    "generate": "text/image → video with a performance report",
    "report": "print the text analysis of a JSON report",
    "bench": "run the benchmark suite and write benchmark_report.md",
    "compare": "the standard job across GPUs: time, fit and cost",
    "warmup": "compile once, save artifacts that later runs load",
}
WARMUP_DESCRIPTION = ("Run the job's first steps once (2 steps, no video) so that its compiled kernels land in the "
                      "cache directory, then save torch's portable compile artifacts there under this machine's and "
                      "these flags' key; a later run with the same key loads them before anything compiles.")
GENERATE_DESCRIPTION = "Wan2.2 TI2V-5B text/image → video"
REPORT_DESCRIPTION = "Print the text analysis of a wan-enhanced JSON report"


def config_from_args(ns: argparse.Namespace) -> RunConfig:
    """Build (unvalidated) RunConfig from parsed flags; ``--flags_file`` fills the flags the command line left at
    their defaults."""
    from .config import RunConfig

    values = dict(vars(ns))
    if values.get("flags_file"):
        from .bench.suite_config import load_flags_file

        defaults = vars(generate_parser().parse_args([]))
        for key, value in load_flags_file(values["flags_file"]).items():
            if values.get(key) == defaults.get(key):
                values[key] = value
    return RunConfig.from_flags(values)


def generate_parser(prog: str = f"{PROG} generate") -> OneLineParser:
    """The ``generate`` parser, generated from the flag table (``wan_enhanced.flags``)."""
    from .flags import add_generate_args

    p = OneLineParser(prog=prog, description=GENERATE_DESCRIPTION)
    add_generate_args(p)
    return p


def _add_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("report", metavar="REPORT.json", help="a report written by generate --report_file")


def build_parser(prog: str = PROG) -> OneLineParser:
    """``wan-enhanced`` with its four subcommands (each sub-help names ``wan-enhanced <command>``)."""
    from .bench.compare import build_parser as compare_parser
    from .bench.runner import build_parser as bench_parser
    from .flags import add_generate_args

    p = OneLineParser(prog=prog, description="Wan2.2 TI2V-5B generation with per-stage monitoring")
    sub = p.add_subparsers(dest="command", metavar="command", required=True, parser_class=OneLineParser)
    g = sub.add_parser("generate", help=COMMANDS["generate"], description=GENERATE_DESCRIPTION)
    add_generate_args(g)
    _add_report_args(sub.add_parser("report", help=COMMANDS["report"], description=REPORT_DESCRIPTION))
    add_generate_args(sub.add_parser("warmup", help=COMMANDS["warmup"], description=WARMUP_DESCRIPTION))
    for name, make in (("bench", bench_parser), ("compare", compare_parser)):
        own = make()
        sub.add_parser(name, parents=[own], add_help=False, help=COMMANDS[name], description=own.description)
    return p


def _generate(ns: argparse.Namespace) -> int:
    """Validate (before any weights load), run, write the report; returns the exit code."""
    from .config import validate

    logging.basicConfig(level=logging.INFO, format="[wan-enhanced] %(message)s")
    cfg = validate(config_from_args(ns))
    print(f"[wan-enhanced] task {cfg.task} {cfg.size} {cfg.frame_num} frames, {cfg.sample_steps} steps, "
          f"{'i2v' if cfg.is_i2v else 't2v'} on {cfg.device}; weights: {cfg.weights_note}", file=sys.stderr)
    from .run import run_generation

    outcome = run_generation(cfg, progress=not ns.quiet)
    if outcome.status == "ok":
        t = outcome.report["totals"] if outcome.report else {}
        wall = (t.get("wall_s") or {}).get("value")
        peak = (t.get("peak_memory_gb") or {}).get("value")
        print(f"[wan-enhanced] done in {wall:.2f} s" if wall is not None else "[wan-enhanced] done", end="",
              file=sys.stderr)
        print(f", peak {peak:.2f} GB" if peak is not None else "", file=sys.stderr)
        if outcome.result.video_path:
            print(f"[wan-enhanced] video: {outcome.result.video_path}", file=sys.stderr)
        if cfg.report_file:
            print(f"[wan-enhanced] report: {cfg.report_file}", file=sys.stderr)
    return outcome.exit_code


def _warmup(ns: argparse.Namespace) -> int:
    """``wan-enhanced warmup``: a 2-step run without outputs, then the compile artifacts saved under its key."""
    import dataclasses
    from pathlib import Path

    import torch

    from .compile_cache import cache_key, default_cache_dir, save_artifacts
    from .config import validate
    from .run import run_generation

    logging.basicConfig(level=logging.INFO, format="[wan-enhanced] %(message)s")
    cfg = validate(dataclasses.replace(config_from_args(ns), sample_steps=2, save_file=None, save_latents=None))
    outcome = run_generation(cfg, progress=not ns.quiet)
    if outcome.status != "ok" or outcome.report is None:
        return outcome.exit_code or 1
    run = outcome.report["run"]
    fast = run.get("fast_path") or {}
    if fast.get("compile") == "none":
        print("warmup: nothing to save: this run compiles nothing (--compile none, or a CPU run)", file=sys.stderr)
        return 0
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    key = cache_key(torch.device(cfg.device), {**run, **fast})
    path = save_artifacts(cache_dir, key)
    if path is None:
        print("warmup: torch produced no compile artifacts to save", file=sys.stderr)
        return 1
    import json

    parts = json.loads(path.with_suffix(".json").read_text(encoding="utf-8")).get("cache_parts") or {}
    said = [f"{p} not packed ({v['error']}): a fresh machine compiles it" if "error" in v else
            f"{p} not packed ({v['skipped']})" if "skipped" in v else
            f"{p} {v['files']} files ({v['bytes'] / 2**20:.1f} MiB)" for p, v in parts.items() if v]
    print(f"warmup: compile artifacts for {key.get('gpu') or 'this CPU'} ({run.get('task')} {run.get('size')}, "
          f"{run.get('frame_num')} frames, {fast.get('attention_backend')}) in {path} "
          f"({path.stat().st_size / 2**20:.1f} MiB)" + ("; caches beside them: " + ", ".join(said) if said else ""),
          file=sys.stderr)
    return 0


def _report(ns: argparse.Namespace) -> int:
    from .report.schema import load_report
    from .report.text import format_report

    sys.stdout.write(format_report(load_report(ns.report)))
    return 0


def generate_main(argv: Sequence[str] | None = None, prog: str = "generate.py") -> int:
    """``generate.py``: the generate flags alone; returns the exit code (2 on bad input)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return guarded(lambda: _generate(generate_parser(prog).parse_args(args)), interrupted="error: interrupted")


def report_main(argv: Sequence[str] | None = None, prog: str = "format_report.py") -> int:
    """``format_report.py REPORT.json``: print the text report; returns the exit code (2 on bad input)."""
    args = list(sys.argv[1:] if argv is None else argv)
    p = OneLineParser(prog=prog, description=REPORT_DESCRIPTION)
    _add_report_args(p)
    return guarded(lambda: _report(p.parse_args(args)))


def _dispatch(argv: list[str]) -> int:
    ns = build_parser().parse_args(argv)  # every subcommand's flags are checked here
    rest = argv[argv.index(ns.command) + 1:]
    if ns.command == "generate":
        return _generate(ns)
    if ns.command == "report":
        return _report(ns)
    if ns.command == "warmup":
        return _warmup(ns)
    if ns.command == "bench":
        from .bench.runner import run_bench

        return run_bench(rest)
    from .bench.compare import compare_main

    return compare_main(rest)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wan-enhanced`` console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["bench"]:
        from .bench.runner import INTERRUPTED

        return guarded(lambda: _dispatch(args), interrupted=INTERRUPTED)
    return guarded(lambda: _dispatch(args), interrupted="error: interrupted")


if __name__ == "__main__":
    raise SystemExit(main())
