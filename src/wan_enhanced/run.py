"""One monitored generation: config → pipeline under the monitor → JSON report.

This is the composition root of ``generate``: it owns the monitor's lifetime, turns failures
(out-of-memory under a budget included) into a report with a status instead of a lost run, and
keeps what was already computed (latents are saved when decoding fails).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .compile_cache import CacheState, CompileClock, CompilePrefetch
from .config import RunConfig
from .errors import UserError
from .parallel import ParallelContext, init_parallel, shutdown
from .pipeline import GenerationResult, TI2VPipeline
from .residency import apply_memory_budget
from .stages import LOAD_COMPILE_CACHE, TOTAL

log = logging.getLogger("wan_enhanced")


@dataclass
class RunOutcome:
    """Result of :func:`run_generation`: what was produced, the report, and an exit code."""

    result: GenerationResult
    report: dict[str, Any] | None
    status: str
    exit_code: int
    message: str = ""


def _error_status(exc: BaseException, cfg: RunConfig) -> tuple[str, str]:
    """(status, one-line message without the exception type) for a failed run."""
    if isinstance(exc, torch.OutOfMemoryError):
        if cfg.memory_budget_gb is not None:
            return "oom", f"does not fit within {cfg.memory_budget_gb:g} GB"
        return "oom", "out of GPU memory"
    if isinstance(exc, KeyboardInterrupt):
        return "failed", "interrupted"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return "failed", text or type(exc).__name__


def latents_fallbacks(cfg: RunConfig) -> list[Path]:
    """Where the denoised latents go after a failure, in order: ``--save_latents`` (or beside ``--save_file``),
    then the report's directory, the working directory and the temp directory (under the same file name)."""
    first = Path(cfg.save_latents or (cfg.save_file or "latents") + ".latents.pt")
    out = [first]
    if cfg.report_file:
        out.append(Path(cfg.report_file).parent / first.name)
    out += [Path.cwd() / first.name, Path(tempfile.gettempdir()) / first.name]
    seen: list[Path] = []
    for p in out:
        if p.resolve() not in [q.resolve() for q in seen]:
            seen.append(p)
    return seen


def _keep_latents(pipe: TI2VPipeline, cfg: RunConfig, error: dict[str, Any]) -> None:
    """After a failure: save the denoised latents, if any, to the first writable fallback, so that nothing
    computed is lost (the error message names where they are, or why they could not be kept)."""
    if pipe.result.latents is None or not (cfg.save_file or cfg.save_latents or cfg.report_file):
        return
    if pipe.result.latents_path and Path(pipe.result.latents_path).is_file():
        error["saved_latents"] = pipe.result.latents_path
        error["message"] += f" (denoised latents kept in {pipe.result.latents_path})"
        return
    from .atomic import atomic_output

    problems = []
    for path in latents_fallbacks(cfg):
        try:
            with atomic_output(path) as tmp:
                torch.save(pipe.result.latents, tmp)
        except Exception as exc:  # noqa: BLE001 - try the next place; the report must still be written
            problems.append(f"{path.parent}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}")
            continue
        error["saved_latents"] = str(path)
        error["message"] += f" (denoised latents kept in {path})"
        return
    error["message"] += f" (the denoised latents could not be kept: {'; '.join(problems)})"


def run_generation(cfg: RunConfig, *, progress: bool = True, sample_interval_s: float = 0.1,
                   monitor_enabled: bool = True) -> RunOutcome:
    """Run the pipeline for a validated ``cfg`` under a Monitor; write the report if asked.

    Every outcome writes the report (when ``--report_file`` is given) and prints at most one
    ``error:`` line: exit code 0 ok, 2 bad input (e.g. a checkpoint key), 1 any other failure.
    Under torchrun a failing rank never enters a collective (its partner may be inside one): it writes
    its own report (``<report>.rank<N>.json``) and ends the process, which makes torchrun stop the rest.
    """
    from .journal import Journal
    from .monitor import Monitor
    from .monitor.system import collect_system_info
    from .report.build import build_report, report_from
    from .report.schema import write_report

    device = torch.device(cfg.device or "cpu")
    par = init_parallel(cfg.ulysses_size, cfg.cfg_parallel, device.type)
    if par.enabled and device.type == "cuda":
        device = torch.device("cuda", par.local_rank)
        cfg = replace(cfg, device=str(device))
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    budget = apply_memory_budget(device, cfg.memory_budget_gb)
    system = collect_system_info(device)  # before the monitor starts: the state at the start, outside the run's time
    monitor = Monitor(device=device, sample_interval_s=sample_interval_s, sampler=monitor_enabled)
    pipe = TI2VPipeline(cfg, monitor=monitor, progress=progress and par.is_main, parallel=par)
    log.info("weights: %s", cfg.weights_note)
    failure: BaseException | None = None
    journal = None
    if cfg.report_file and par.is_main:
        def snapshot(last_stage: str, info: dict[str, Any]) -> dict[str, Any]:
            error = {"stage": monitor.open_stages[-1] if monitor.open_stages else None, "type": "Incomplete",
                     "message": f"the run had not finished: this report was written after stage {last_stage}"}
            return report_from(monitor.measure(), run_info=_run_info(cfg, pipe, budget), weights=_weights(cfg, pipe),
                               outputs=_outputs(pipe), status="incomplete", error=error, system=system, journal=info)

        journal = Journal(cfg.report_file, snapshot)
        monitor.on_stage_end.append(journal.on_stage_end)
    cache = prepare_cache(cfg, device, pipe)
    clock = CompileClock()
    monitor.on_stage_end.insert(0, clock.on_stage_end)  # before the journal: its snapshot holds the stage
    pipe.compile_clock = clock
    pipe.process_start_to_total_s = process_age_s()  # the process's seconds before the run's Total
    monitor.start()
    try:
        with monitor.stage(TOTAL.name, TOTAL.comment):
            if cache.artifacts == "pending":  # before anything compiles; its own stage: every second counted
                with monitor.stage(LOAD_COMPILE_CACHE.name, LOAD_COMPILE_CACHE.comment):
                    load_cache(cache, cfg, device, pipe)
            start_prefetch(cache, device, pipe)
            pipe.generate()
    except BaseException as exc:  # noqa: BLE001 - recorded in the report; re-raised only if interrupted
        failure = exc
        log.debug("run failed", exc_info=True)
    finally:
        monitor.stop()
    status, message, error = "ok", "", None
    if failure is not None:
        status, message = _error_status(failure, cfg)
        stage = getattr(monitor, "failed_stage", None) or pipe.current_stage
        clock.flush(stage)  # a failed stage's end is not heard by the listeners
        error = {"stage": stage, "type": type(failure).__name__, "message": message}
        if par.is_main:
            _keep_latents(pipe, cfg, error)
        message = error["message"]
    _note_other_processes(system, device)
    if isinstance(cache.prefetch, CompilePrefetch) and cache.prefetch.wait_s is None:  # a run that failed first
        cache.prefetch.join(timeout=30)  # its numbers in the report; never an import running at exit
    pipe.compile_cache = cache
    report = build_report(monitor, run=_run_info(cfg, pipe, budget), weights=_weights(cfg, pipe),
                          outputs=_outputs(pipe), status=status, error=error, system=system,
                          journal=journal.info(final=True) if journal else None)
    code = (0 if failure is None else 130 if isinstance(failure, KeyboardInterrupt)
            else 2 if isinstance(failure, UserError) else 1)
    if par.enabled and failure is not None:
        if cfg.report_file:
            write_report(f"{cfg.report_file[:-5]}.rank{par.rank}.json", report)
        print(f"error: rank {par.rank}, stage {error['stage']}: {message}", file=sys.stderr, flush=True)
        sys.stderr.flush()
        os._exit(code)  # no collective after a failure; torchrun ends the other ranks
    if par.enabled:
        report = merge_ranks(report, par.gather_objects(report), par)
        shutdown(par)
        if not par.is_main:
            return RunOutcome(pipe.result, None, status, code, message)
    if cfg.report_file:
        try:
            write_report(cfg.report_file, report)
        except OSError as exc:  # the directory went away or became unwritable during the run
            why = exc.strerror or str(exc)
            print(f"error: the report could not be written to {cfg.report_file}: {why}", file=sys.stderr)
            return RunOutcome(pipe.result, report, status, code or 1, message or why)
    if failure is not None:  # one line; Ctrl-C included (exit 130, no traceback)
        print(f"error: stage {error['stage']}: {message}", file=sys.stderr)
    return RunOutcome(pipe.result, report, status, code, message)


def process_age_s() -> float | None:
    """Seconds since this process started (psutil's create time; ``None`` where it cannot be read)."""
    import time

    try:
        import psutil

        return round(time.time() - psutil.Process().create_time(), 3)
    except Exception:  # noqa: BLE001 - no psutil or no /proc: unavailable, said in the report
        return None


def cache_settings(cfg: RunConfig, pipe: TI2VPipeline) -> dict[str, Any]:
    """The settings that shape the compiled graphs, as resolved for this run (the artifacts' key)."""
    return {**cfg.to_dict(), "compile": pipe.fast.compile, "attention_backend": pipe.fast.attention_backend,
            "vae_layout": pipe.fast.vae_layout, "vae_compile": pipe.fast.vae_compile,
            "fused_qk_rope": pipe.fast.fused_qk_rope}


def prepare_cache(cfg: RunConfig, device: torch.device, pipe: TI2VPipeline) -> CacheState:
    """Point the compilers at the project cache directory; say whether artifacts are to be loaded (``pending``)."""
    from .compile_cache import default_cache_dir, use_cache_dir

    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    if pipe.fast.compile == "none" and pipe.fast.vae_compile == "none":  # nothing compiles: caches left alone
        return CacheState(str(cache_dir), {}, "not needed", "this run compiles nothing (--compile none, or a CPU run)")
    try:
        env = use_cache_dir(cache_dir)
    except OSError as exc:
        return CacheState(str(cache_dir), {}, "failed", f"cache directory unusable: {exc}")
    return CacheState(str(cache_dir), env, "pending")


def start_prefetch(cache: CacheState, device: torch.device, pipe: TI2VPipeline) -> None:
    """A compiled run: the compiler's set-up in the background (after the artifacts; ``apply_dit`` joins it)."""
    if pipe.fast.compile != "blocks":
        return
    if not CompilePrefetch.enabled():
        cache.prefetch = CompilePrefetch.switched_off()
        return
    index = (device.index if device.index is not None else torch.cuda.current_device()) if device.type == "cuda" \
        else None
    # FA4's import too, when the DiT will run it (measured on an H200, h200/s11: 3.7-4.7 s of Prepare_DiT)
    imports = ("wan_enhanced.attention_fa4",) if pipe.fast.attention_backend == "flash4" and \
        CompilePrefetch.fa4_enabled() else ()
    cache.prefetch = pipe.fast.prefetch = CompilePrefetch(index, imports).start()


def load_cache(cache: CacheState, cfg: RunConfig, device: torch.device, pipe: TI2VPipeline) -> None:
    """Load the artifacts made for this run's key (``Load_Compile_Cache``); a mismatch is logged and recorded."""
    import time

    from .compile_cache import cache_key, key_id, load_artifacts

    key = cache_key(device, cache_settings(cfg, pipe))
    t0 = time.perf_counter()
    cache.artifacts, cache.reason = load_artifacts(Path(cache.dir), key)
    cache.seconds, cache.key_id = round(time.perf_counter() - t0, 4), key_id(key)
    if cache.artifacts in ("mismatch", "failed"):
        log.warning("compile cache: %s", cache.reason)


def _outputs(pipe: TI2VPipeline) -> dict[str, Any]:
    frames = pipe.result.frames
    return {
        "video": pipe.result.video_path,
        "latents": pipe.result.latents_path,
        "frames": None if frames is None else int(frames.shape[0]),
        "height": None if frames is None else int(frames.shape[1]),
        "width": None if frames is None else int(frames.shape[2]),
    }


def _weights(cfg: RunConfig, pipe: TI2VPipeline) -> dict[str, Any]:
    return {
        "kind": cfg.resolved_weights, "source": cfg.ckpt_dir, "note": cfg.weights_note,
        "tokenizer": pipe.result.tokenizer,
        "load": [{"model": i.model, "seconds": i.seconds, "bytes_read": i.bytes_read, "gb_per_s": i.gb_per_s,
                  "files": i.files} for i in pipe.result.load_info],
    }


#: prompts longer than this are stored in the report as their head, length and SHA-256 (stored once, not twice)
REPORT_PROMPT_CHARS = 4096


def _run_info(cfg: RunConfig, pipe: TI2VPipeline, budget: Any) -> dict[str, Any]:
    run = cfg.to_dict()
    for key in ("prompt", "negative_prompt"):
        text = run.get(key)
        if isinstance(text, str) and len(text) > REPORT_PROMPT_CHARS:
            run[key] = text[:REPORT_PROMPT_CHARS] + "…"
            run[f"{key}_chars"] = len(text)
            run[f"{key}_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    run["notes"] = list(pipe.result.notes)
    cache = getattr(pipe, "compile_cache", None)
    if cache is not None:
        run["compile_cache"] = cache.to_dict()
    if hasattr(pipe, "process_start_to_total_s"):
        age = pipe.process_start_to_total_s
        run["process"] = {"start_to_total_s": age, "source": "psutil.Process().create_time() to Total's start",
                          "note": ("interpreter start, imports, flag checks, system info, building the pipeline; "
                                   "the report's writing and the process's exit come after Total and are in no "
                                   "report (a suite's runner times the whole process)")
                          if age is not None else "unavailable: the process's start time could not be read"}
    clock = getattr(pipe, "compile_clock", None)
    if clock is not None:
        run["compile_time"] = clock.to_dict()
    run["residency"] = pipe.residency.policy
    run["fast_path"] = pipe.fast.to_dict()  # the levers actually in force ('auto' resolved for this device)
    run["memory_budget"] = budget
    run["num_tokens"] = pipe.num_tokens
    run["latent_shape"] = list(pipe.latent_shape)
    return run


def _note_other_processes(system: dict[str, Any], device: torch.device) -> None:
    """Add the GPU's other processes at the end of the run to ``system.gpu.state`` (they overlapped the run)."""
    gpu = system.get("gpu")
    if not isinstance(gpu, dict) or not isinstance(gpu.get("state"), dict) or device.type != "cuda":
        return
    from .monitor.device_state import read_device_state

    gpu["state"]["other_processes_at_end"] = read_device_state(gpu.get("index") or 0).get(
        "other_processes", {"value": None, "reason": "unavailable"})


def merge_ranks(main: dict[str, Any], reports: list[dict[str, Any]] | None, par: ParallelContext) -> dict[str, Any]:
    """Rank 0's report plus, per rank, its stage times, memory and SM%, and the measured communication
    (built by ``report.build.merge_rank_reports``, the report's one producer)."""
    if reports is None:
        return main
    from .report.build import merge_rank_reports

    return merge_rank_reports(main, reports, world_size=par.world_size, ulysses_size=par.ulysses_size,
                              cfg_parallel=par.cfg_parallel)
