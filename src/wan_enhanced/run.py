"""One monitored generation: config → pipeline under the monitor → JSON report.

This is the composition root of ``generate``: it owns the monitor's lifetime, turns failures
(out-of-memory under a budget included) into a report with a status instead of a lost run, and
keeps what was already computed (latents are saved when decoding fails).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig
from .errors import UserError
from .parallel import ParallelContext, init_parallel, shutdown
from .pipeline import GenerationResult, TI2VPipeline
from .residency import apply_memory_budget
from .stages import TOTAL

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


def _keep_latents(pipe: TI2VPipeline, cfg: RunConfig, error: dict[str, Any]) -> None:
    """After a failure: save the denoised latents, if any, so that nothing computed is lost."""
    if pipe.result.latents is None or not (cfg.save_file or cfg.save_latents):
        return
    path = cfg.save_latents or cfg.save_file + ".latents.pt"
    if error.get("saved_latents") == path:
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(pipe.result.latents, path)
        error["saved_latents"] = path
        error["message"] += f" (denoised latents kept in {path})"
    except Exception as exc:  # noqa: BLE001 - the report must still be written
        error["message"] += f" (could not keep the denoised latents in {path}: {type(exc).__name__})"


def run_generation(cfg: RunConfig, *, progress: bool = True, sample_interval_s: float = 0.1,
                   monitor_enabled: bool = True) -> RunOutcome:
    """Run the pipeline for a validated ``cfg`` under a Monitor; write the report if asked.

    Every outcome writes the report (when ``--report_file`` is given) and prints at most one
    ``error:`` line: exit code 0 ok, 2 bad input (e.g. a checkpoint key), 1 any other failure.
    Under torchrun a failing rank never enters a collective (its partner may be inside one): it writes
    its own report (``<report>.rank<N>.json``) and ends the process, which makes torchrun stop the rest.
    """
    from .monitor import Monitor
    from .report.build import build_report
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
    monitor = Monitor(device=device, sample_interval_s=sample_interval_s, sampler=monitor_enabled)
    pipe = TI2VPipeline(cfg, monitor=monitor, progress=progress and par.is_main, parallel=par)
    log.info("weights: %s", cfg.weights_note)
    failure: BaseException | None = None
    monitor.start()
    try:
        with monitor.stage(TOTAL.name, TOTAL.comment):
            pipe.generate()
        if cfg.save_latents and par.is_main and pipe.result.latents is not None:
            Path(cfg.save_latents).parent.mkdir(parents=True, exist_ok=True)
            torch.save(pipe.result.latents, cfg.save_latents)
            pipe.result.latents_path = cfg.save_latents
    except BaseException as exc:  # noqa: BLE001 - recorded in the report; re-raised only if interrupted
        failure = exc
        log.debug("run failed", exc_info=True)
    finally:
        monitor.stop()
    status, message, error = "ok", "", None
    if failure is not None:
        status, message = _error_status(failure, cfg)
        stage = getattr(monitor, "failed_stage", None) or pipe.current_stage
        error = {"stage": stage, "type": type(failure).__name__, "message": message}
        if par.is_main:
            _keep_latents(pipe, cfg, error)
        message = error["message"]
    frames = pipe.result.frames
    outputs = {
        "video": pipe.result.video_path,
        "frames": None if frames is None else int(frames.shape[0]),
        "height": None if frames is None else int(frames.shape[1]),
        "width": None if frames is None else int(frames.shape[2]),
    }
    weights = {
        "kind": cfg.resolved_weights, "source": cfg.ckpt_dir, "note": cfg.weights_note,
        "tokenizer": pipe.result.tokenizer,
        "load": [{"model": i.model, "seconds": i.seconds, "bytes_read": i.bytes_read, "gb_per_s": i.gb_per_s,
                  "files": i.files} for i in pipe.result.load_info],
    }
    run = cfg.to_dict()
    run["residency"] = pipe.residency.policy
    run["fast_path"] = pipe.fast.to_dict()  # the levers actually in force ('auto' resolved for this device)
    run["memory_budget"] = budget
    run["num_tokens"] = pipe.num_tokens
    run["latent_shape"] = list(pipe.latent_shape)
    report = build_report(monitor, run=run, weights=weights, outputs=outputs, status=status, error=error)
    code = 0 if failure is None else 2 if isinstance(failure, UserError) else 1
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
        write_report(cfg.report_file, report)
    if failure is not None:
        print(f"error: stage {error['stage']}: {message}", file=sys.stderr)
    if isinstance(failure, KeyboardInterrupt):
        raise failure
    return RunOutcome(pipe.result, report, status, code, message)


def merge_ranks(main: dict[str, Any], reports: list[dict[str, Any]] | None, par: ParallelContext) -> dict[str, Any]:
    """Rank 0's report plus, per rank, its stage times, memory and SM%, and the measured communication
    (built by ``report.build.merge_rank_reports``, the report's one producer)."""
    if reports is None:
        return main
    from .report.build import merge_rank_reports

    return merge_rank_reports(main, reports, world_size=par.world_size, ulysses_size=par.ulysses_size,
                              cfg_parallel=par.cfg_parallel)
