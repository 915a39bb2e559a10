"""The benchmark suite runner: ``python3 benchmark/run.py`` / ``wan-enhanced bench``.

Why this module is long (~490 lines): process management (a subprocess per case, timeouts, killing its
group, exit-code and signal decoding, repeats) and resume are one state machine over the manifest; the
manifest's file format lives in ``manifest.py``, the run-dir lock and the die-with-the-runner rule in
``runlock.py``, the spread of repeats in ``repeats.py``, the Markdown in ``markdown.py``.

Each case runs ``generate`` in its own subprocess with ``--flags_file <run dir>/<case>.args.json`` (its
settings: no argv limit) and ``--report_file <run dir>/<case>.json`` (``<case>.r<k>.*`` for repeat k);
its output goes to ``<case>.log``, its text report to ``<case>.txt``. A failed, crashed or
out-of-memory case is recorded (status, stage, message) and the suite goes on. The run dir's
``suite.json`` manifest is rewritten after every case, so a stopped suite resumes: cases whose
report says ``ok`` (with the same flags) are skipped. At the end ``benchmark_report.md`` and its
charts are written.

Exit codes: 0 when every case is ``ok`` or ran out of memory under its ``memory_budget_gb`` (that
is a measurement: "does not fit"); 1 when a case failed or crashed; 2 for a bad config or flag;
130 when interrupted (resume with ``--resume``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from ..argparse_util import OneLineParser, guarded
from ..errors import ConfigError, ReportError
from ..flags import to_argv
from ..report.schema import write_json_atomic
from .manifest import (
    MANIFEST,
    SUITE_SCHEMA,
    latest_run,
    load_manifest,
    suite_exit_code,
    summarize,
    write_manifest,
)
from .markdown import write_suite_report
from .reportdata import read_report, text_report
from .runlock import RunLock, die_with_parent, live_case_process
from .suite_config import SuiteConfig, apply_overrides, case_argv, check_case_values, load_suite_config

INTERRUPTED = "interrupted: resume with --resume"
LONG_VALUE = 200  # characters: longer flag values are abbreviated in the manifest's argv
MAX_STORED_CONFIG = 64 * 1024  # characters of config JSON stored whole in the manifest
PACKAGE_SRC = Path(__file__).resolve().parents[2]  # the directory holding ``wan_enhanced``


def _utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def project_root() -> Path:
    """Where ``benchmark/`` lives: the current directory if it has one, else this checkout's root."""
    cwd = Path.cwd()
    if (cwd / "benchmark").is_dir():
        return cwd
    checkout = PACKAGE_SRC.parent
    if (checkout / "benchmark").is_dir():
        return checkout
    return cwd


def cuda_device() -> str | None:
    """Name of CUDA device 0, or None when torch sees no CUDA GPU."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    try:
        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            return str(torch.cuda.get_device_name(0))
    except Exception:  # noqa: BLE001 - a broken driver means "no GPU" here
        return None
    return None


def default_config(root: Path, gpu: str | None) -> tuple[Path, str]:
    """(config path, why): the GPU suite when a CUDA GPU is present, else the CPU smoke suite."""
    if gpu:
        return root / "benchmark" / "config.json", f"CUDA GPU found: {gpu}"
    return root / "benchmark" / "config_smoke.json", "no CUDA GPU found: tiny preset on CPU"


def git_info(root: Path) -> dict[str, Any]:
    """Commit and dirty flag of the checkout at ``root`` (None when not a git checkout)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def host_info(gpu: str | None) -> dict[str, Any]:
    """Host facts for the manifest (each report has the full system block)."""
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "gpu": gpu}


def _tail(path: Path, lines: int = 40) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [ln.rstrip() for ln in text.splitlines() if ln.strip()][-lines:]


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


@dataclass
class CaseOutcome:
    """What one case ended as."""

    status: str  # ok | failed | oom | interrupted
    error: dict[str, Any] | None
    report: dict[str, Any] | None


def outcome_of(report_path: Path, log_path: Path, exit_code: int | None, timed_out: float | None = None,
               budget_gb: float | None = None) -> CaseOutcome:
    """Status/error of a finished case: from its report when written, else from exit code and log."""
    report: dict[str, Any] | None = None
    report_problem = ""
    if report_path.exists():
        try:
            report = read_report(report_path)
        except (ReportError, OSError, ValueError) as exc:
            report_problem = f"report unreadable: {exc}"
    if timed_out is not None:
        return CaseOutcome("failed", {"stage": _stage(report), "type": "Timeout",
                                      "message": f"killed after the case's timeout of {timed_out:g} s"}, report)
    if report is not None:
        status = str(report.get("status") or "failed")
        error = report.get("error") if status != "ok" else None
        if status == "incomplete":  # a journal snapshot: the process died before its final report
            how = (f"killed by {_signal_name(-exit_code)}" if exit_code is not None and exit_code < 0
                   else f"exited with code {exit_code}")
            error = dict(error or {}, type="Incomplete",
                         message=f"{(error or {}).get('message') or 'the run did not finish'}; the process {how}")
            return CaseOutcome("failed", error, report)
        if status == "ok" and exit_code not in (0, None):
            status = "failed"
            error = {"stage": None, "type": "ExitCode",
                     "message": f"report says ok but the process exited with code {exit_code}"}
        if status != "ok" and not error:
            error = {"stage": None, "type": "Unknown", "message": f"status {status}, no error recorded"}
        return CaseOutcome(status, error, report)
    tail = _tail(log_path)
    last = next((ln for ln in reversed(tail) if ln.lower().startswith("error")), tail[-1] if tail else "")
    text = "\n".join(tail).lower()
    oom = "out of memory" in text or "outofmemoryerror" in text
    if exit_code is not None and exit_code < 0:
        kind = _signal_name(-exit_code)
        msg = f"killed by {kind}" + (" (host out of memory?)" if kind == "SIGKILL" else "")
        if last:
            msg += f"; last log line: {last}"
        return CaseOutcome("failed", {"stage": None, "type": f"Crash ({kind})", "message": msg[:500]}, None)
    msg = last or f"exited with code {exit_code} and no output"
    if report_problem:
        msg = f"{report_problem}; {msg}"
    kind = "UsageError" if exit_code == 2 else f"ExitCode {exit_code}"
    if oom and budget_gb is not None:
        msg = f"does not fit within {budget_gb:g} GB ({msg[:300]})"
    return CaseOutcome("oom" if oom else "failed", {"stage": None, "type": kind, "message": msg[:500]}, None)


def _stage(report: dict[str, Any] | None) -> str | None:
    if report and isinstance(report.get("error"), dict):
        return report["error"].get("stage")
    return None


def _describe(status: str, error: dict[str, Any] | None) -> str:
    if not error:
        return ""
    where = f"{error.get('stage')}: " if error.get("stage") else ""
    return f" — {where}{error.get('message') or error.get('type')}"


def _run_process(cmd: list[str], log_path: Path, cwd: Path, env: dict[str, str], timeout: float | None,
                 on_start: Any = None, header: str = "") -> tuple[int | None, float | None]:
    """Run ``cmd`` with output to ``log_path``; returns (exit code, timeout if it was hit).

    The case gets its own process group (a timeout stops it and its workers) and dies with the runner
    (``die_with_parent``): killing the runner never leaves a case writing into the run directory.
    ``on_start(pid)`` is called once the process exists.
    """
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(header + f"$ {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)
        if on_start is not None:
            on_start(proc.pid)
        try:
            return proc.wait(timeout=timeout), None
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return proc.returncode, timeout
        except BaseException:
            _kill_group(proc)
            raise


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    """Stop the case's process group (the case and e.g. its torchrun workers), then reap it."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def generate_command(nproc: int, generate_cmd: Sequence[str] | None = None) -> list[str]:
    """The command that runs one generate (under torchrun when ``nproc`` > 1)."""
    if generate_cmd:
        return list(generate_cmd)
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                "-m", "wan_enhanced.cli", "generate"]
    return [sys.executable, "-m", "wan_enhanced.cli", "generate"]


def run_suite(suite: SuiteConfig, run_dir: Path, *, root: Path | None = None,
              generate_cmd: Sequence[str] | None = None, out: TextIO | None = None,
              gpu: str | None = None) -> dict[str, Any]:
    """Run (or resume) every case of ``suite`` into ``run_dir``; returns the final manifest.

    Cases already ``ok`` in ``run_dir`` with the same flags are skipped. ``generate_cmd`` replaces
    the generate command (an internal hook for tests); the case's flags and
    ``--report_file``/``--save_file`` are appended to it.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        return _run_suite(suite, run_dir, root=root or project_root(), generate_cmd=generate_cmd,
                          out=out or sys.stdout, gpu=gpu)


def _short_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """A case's flags with long values abbreviated (the whole values are in the case's args file)."""
    return {k: (f"<{len(v)} characters, in the case's args file>" if isinstance(v, str) and len(v) > LONG_VALUE
                else v) for k, v in flags.items()}


def _display_argv(flags: dict[str, Any]) -> list[str]:
    """A case's flags as argv for the manifest and the logs, long values abbreviated."""
    return to_argv(_short_flags(flags))


def _manifest_config(raw: dict[str, Any]) -> dict[str, Any]:
    """The config as stored in the manifest: whole when small, else its size and SHA-256 (long prompts once)."""
    text = json.dumps(raw, sort_keys=True, ensure_ascii=False)
    if len(text) <= MAX_STORED_CONFIG:
        return raw
    return {"stored": False, "bytes": len(text.encode()), "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "note": f"config larger than {MAX_STORED_CONFIG} characters: see config_path and the cases' args files"}


def _run_suite(suite: SuiteConfig, run_dir: Path, *, root: Path, generate_cmd: Sequence[str] | None,
               out: TextIO, gpu: str | None) -> dict[str, Any]:
    previous = load_manifest(run_dir)
    for c in (previous or {}).get("cases", []):
        pid = live_case_process(c, run_dir) if isinstance(c, dict) else None
        if pid is not None:
            raise ConfigError(f"run {run_dir.name}: case {c.get('id') or c.get('name')} of an earlier runner is still "
                              f"running (PID {pid}); wait for it to finish or stop it (kill {pid}), then resume")
    prev_cases = {c.get("id") or c.get("name"): c for c in (previous or {}).get("cases", []) if isinstance(c, dict)}
    manifest: dict[str, Any] = {
        "schema": SUITE_SCHEMA, "schema_version": 1, "run_id": run_dir.name,
        "created": (previous or {}).get("created") or _utcnow(), "updated": _utcnow(),
        "config_path": str(suite.path.resolve()) if suite.path else None, "config": _manifest_config(suite.raw),
        "description": suite.description, "git": git_info(root), "host": host_info(gpu),
        "attempts": list((previous or {}).get("attempts", [])) + [{"started": _utcnow(), "argv": sys.argv[1:]}],
        "cases": [],
    }
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_SRC)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("MPLBACKEND", "Agg")
    env["PYTHONUNBUFFERED"] = "1"
    entries: list[dict[str, Any]] = []
    order = suite.run_order()
    for case, rep in order:
        run_id = case.name if case.repeats == 1 else f"{case.name}.r{rep}"
        entries.append({
            "name": case.name, "id": run_id, "repeat": rep, "repeats": case.repeats, "index": case.index,
            "description": case.description, "flags": _short_flags(case.flags),
            "argv": _display_argv(case.flags), "args_sha256": _args_hash(case), "args_file": f"{run_id}.args.json",
            "nproc": case.nproc, "status": "pending", "exit_code": None, "elapsed_s": None,
            "report": f"{run_id}.json", "log": f"{run_id}.log", "text": f"{run_id}.txt",
            "error": None, "started": None, "finished": None, "skipped": False,
        })
    manifest["interleave"] = suite.interleave
    manifest["cases"] = entries
    write_manifest(run_dir, manifest)
    n = len(order)
    for i, ((case, _), entry) in enumerate(zip(order, entries, strict=True), start=1):
        print(f"[{i}/{n}] {entry['id']} ... ", end="", file=out, flush=True)
        report_path = run_dir / entry["report"]
        prev = prev_cases.get(entry["id"])
        same = prev and (prev.get("args_sha256") == entry["args_sha256"] if prev.get("args_sha256")
                         else prev.get("argv") == case_argv(case))
        if prev and prev.get("status") == "ok" and same and report_path.exists():
            try:
                rep = read_report(report_path)
            except (ReportError, OSError, ValueError):
                rep = None
            if rep is not None and rep.get("status") == "ok":
                entry.update({k: prev.get(k) for k in ("exit_code", "elapsed_s", "started", "finished")})
                entry.update(status="ok", skipped=True)
                write_manifest(run_dir, manifest)
                el = prev.get("elapsed_s")
                print("skipped (ok in an earlier attempt" + (f", {el:.1f} s)" if el is not None else ")"),
                      file=out, flush=True)
                continue
        for stale in (report_path, run_dir / entry["text"]):
            stale.unlink(missing_ok=True)
        args_path = run_dir / entry["args_file"]
        write_json_atomic(args_path, case.flags, indent=1)  # settings travel in a file: no argv limit
        own = {"save_file": str(run_dir / f"{entry['id']}.mp4")} if "save_file" not in case.flags else {}
        cmd = generate_command(case.nproc, generate_cmd) + to_argv(
            {"flags_file": str(args_path), **own, "report_file": str(report_path), "quiet": True})
        entry["command"] = cmd
        entry["started"] = _utcnow()
        t0 = time.perf_counter()
        try:
            def started(pid: int, entry: dict[str, Any] = entry) -> None:
                entry.update(status="running", pid=pid)
                write_manifest(run_dir, manifest)

            header = f"# case flags (in {entry['args_file']}): {shlex.join(entry['argv'])}\n"
            code, timed_out = _run_process(cmd, run_dir / entry["log"], Path.cwd(), env, case.timeout_s, started,
                                           header)
        except KeyboardInterrupt:
            entry.update(status="interrupted", elapsed_s=round(time.perf_counter() - t0, 3), finished=_utcnow(),
                         error={"stage": None, "type": "KeyboardInterrupt", "message": "suite interrupted"})
            manifest["updated"] = _utcnow()
            write_manifest(run_dir, manifest)
            print("interrupted", file=out, flush=True)
            raise
        elapsed = time.perf_counter() - t0
        res = outcome_of(report_path, run_dir / entry["log"], code, timed_out, case.flags.get("memory_budget_gb"))
        entry.update(status=res.status, exit_code=code, elapsed_s=round(elapsed, 3), finished=_utcnow(),
                     error=res.error)
        if res.report is not None:
            try:
                text = text_report(res.report)
            except Exception as exc:  # noqa: BLE001 - a formatting bug must not stop the suite
                text = f"text report unavailable: {type(exc).__name__}: {exc}\n"
        else:
            text = f"no report was written: {_describe(res.status, res.error)[3:]}\nsee {entry['log']}\n"
        (run_dir / entry["text"]).write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        manifest["updated"] = _utcnow()
        write_manifest(run_dir, manifest)
        label = res.status if res.status == "ok" else res.status.upper()
        print(f"{label} {elapsed:.1f} s{_describe(res.status, res.error)}", file=out, flush=True)
    manifest["attempts"][-1]["finished"] = _utcnow()
    manifest["summary"] = summarize(manifest)
    manifest["updated"] = _utcnow()
    write_manifest(run_dir, manifest)
    return manifest


def _args_hash(case: Any) -> str:
    """SHA-256 of a case's flags (what a resume compares)."""
    return hashlib.sha256(json.dumps(case.flags, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def build_parser() -> argparse.ArgumentParser:
    """Flags of ``benchmark/run.py`` / ``wan-enhanced bench``."""
    p = OneLineParser(prog="benchmark/run.py", description="Run the benchmark suite and write benchmark_report.md")
    p.add_argument("--config", help="suite config (default: benchmark/config.json with a CUDA GPU, "
                                    "else benchmark/config_smoke.json)")
    p.add_argument("--run-id", help="run dir name under --reports-dir (default: a timestamp); "
                                    "an existing run id resumes that run")
    p.add_argument("--resume", action="store_true", help="resume --run-id, or the latest run: cases already "
                                                          "ok are skipped")
    p.add_argument("--device", help="run every case on this device (cuda, cuda:N, cpu)")
    p.add_argument("--output", help="Markdown report path (default: benchmark_report.md in the project root); "
                                    "charts go to <name>_files/ beside it")
    p.add_argument("--reports-dir", help="where run dirs go (default: benchmark/reports)")
    p.add_argument("--report-only", action="store_true", help="run nothing: rewrite the Markdown report of "
                                                              "--run-id (or the latest run)")
    p.add_argument("--generate-cmd", help=argparse.SUPPRESS)  # internal hook for tests
    return p


def bench_main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """``wan-enhanced bench`` / ``benchmark/run.py``: returns the exit code (see module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return guarded(lambda: run_bench(args, out), interrupted=INTERRUPTED)


def run_bench(argv: Sequence[str], out: TextIO | None = None) -> int:
    """The bench command without its error boundary: raises ``UserError`` on bad input."""
    return _bench(list(argv), out or sys.stdout)


def _bench(argv: list[str], out: TextIO) -> int:
    args = build_parser().parse_args(argv)
    root = project_root()
    reports_dir = Path(args.reports_dir) if args.reports_dir else root / "benchmark" / "reports"
    output = Path(args.output) if args.output else root / "benchmark_report.md"
    if args.run_id is not None and (args.run_id in ("", ".", "..") or "/" in args.run_id or "\\" in args.run_id):
        raise ConfigError(f"--run-id: {args.run_id!r} is not allowed; use a plain name")

    if args.report_only:
        run_dir = reports_dir / args.run_id if args.run_id else latest_run(reports_dir)
        if run_dir is None or load_manifest(run_dir) is None:
            raise ConfigError(f"--report-only: no run with a {MANIFEST} in {reports_dir}")
        md = write_suite_report(run_dir, output)
        print(f"report: {md}", file=out)
        return 0

    if args.run_id:
        run_dir = reports_dir / args.run_id
        resumed = load_manifest(run_dir) is not None
        if args.resume and not resumed:
            print(f"nothing to resume in {run_dir}; starting run {args.run_id}", file=out)
    elif args.resume:
        found = latest_run(reports_dir)
        if found is None:
            raise ConfigError(f"--resume: no earlier run in {reports_dir}")
        run_dir, resumed = found, True
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir, k = reports_dir / stamp, 1
        while run_dir.exists():
            k += 1
            run_dir = reports_dir / f"{stamp}-{k}"
        resumed = False
    earlier = (load_manifest(run_dir) or {}).get("config_path") if resumed else None

    if args.config:  # structure and types first: a bad file fails before the CUDA probe
        config_path, why = Path(args.config), "--config"
        suite = load_suite_config(config_path)
        gpu = cuda_device()
    elif earlier and Path(earlier).is_file():
        config_path, why = Path(earlier), f"the config of run {run_dir.name}"
        suite = load_suite_config(config_path)
        gpu = cuda_device()
    else:
        gpu = cuda_device()
        config_path, why = default_config(root, None if args.device == "cpu" else gpu)
        if args.device == "cpu" and gpu:
            why += "; --device cpu"
        suite = load_suite_config(config_path)
    print(f"config: {config_path} ({why})", file=out)
    apply_overrides(suite, device=args.device)
    check_case_values(suite, cuda_available=gpu is not None)
    runs = len(suite.run_order())
    print(f"run: {run_dir.name} ({'resuming' if resumed else 'new'}) in {run_dir.parent}; "
          f"{len(suite.cases)} cases" + (f", {runs} runs" + (" interleaved" if suite.interleave else "")
                                          if runs != len(suite.cases) else ""), file=out, flush=True)
    generate_cmd = shlex.split(args.generate_cmd) if args.generate_cmd else None
    manifest = run_suite(suite, run_dir, root=root, generate_cmd=generate_cmd, out=out, gpu=gpu)
    md = write_suite_report(run_dir, output)
    counts = summarize(manifest)
    print(", ".join(f"{v} {k}" for k, v in counts.items()) + f" — report: {md} (charts in "
          f"{md.with_name(md.stem + '_files')}); run dir: {run_dir}", file=out, flush=True)
    return suite_exit_code(manifest)
