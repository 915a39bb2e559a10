"""Command line: ``wan-enhanced generate | report | bench | compare`` (official Wan2.2 flag names)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .argparse_util import OneLineParser
from .config import SOLVERS, VAE_DTYPES, WEIGHT_KINDS, RunConfig, parse_bool, validate
from .errors import UserError
from .fastpath import ATTENTION_BACKENDS, COMPILE_MODES, VAE_LAYOUTS
from .models.presets import PRESETS


def _bool_flag(name: str):
    def parse(value: str) -> bool:
        try:
            return parse_bool(value, name)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = "bool"
    return parse


def add_generate_args(p: argparse.ArgumentParser) -> None:
    """The generate flags: official Wan2.2 names and TI2V-5B defaults (see README's flag table)."""
    p.add_argument("--task", default="ti2v-5B", help=f"one of {', '.join(PRESETS)} (default ti2v-5B)")
    p.add_argument("--size", default=None, help="W*H; ti2v-5B: 1280*704 (default) or 704*1280")
    p.add_argument("--frame_num", type=int, default=None, help="frames, 4n+1 (default 121 for ti2v-5B)")
    p.add_argument("--sample_steps", type=int, default=None, help="denoising steps (default 50)")
    p.add_argument("--sample_shift", type=float, default=None, help="flow shift (default 5.0)")
    p.add_argument("--sample_guide_scale", type=float, default=None, help="CFG scale (default 5.0)")
    p.add_argument("--sample_solver", default="unipc", help=f"one of {', '.join(SOLVERS)}")
    p.add_argument("--base_seed", type=int, default=42)
    p.add_argument("--prompt", default=None)
    p.add_argument("--negative_prompt", default=None, help="default: the official negative prompt")
    p.add_argument("--image", default=None, help="input image: makes it image→video")
    p.add_argument("--ckpt_dir", default=None, help="diffusers-layout or official-layout checkpoint dir")
    p.add_argument("--weights", default="auto", help=f"one of {', '.join(WEIGHT_KINDS)}")
    p.add_argument("--offload_model", type=_bool_flag("offload_model"), default=None,
                   help="True/False: move each model to CPU when its stage ends (official default: True on one GPU)")
    p.add_argument("--t5_cpu", action="store_true", help="run the text encoder on the CPU")
    p.add_argument("--convert_model_dtype", action="store_true",
                   help="cast the DiT to bf16 (always done here: bf16 is the default)")
    p.add_argument("--ulysses_size", type=int, default=1, help="Ulysses sequence-parallel degree (torchrun)")
    p.add_argument("--cfg_parallel", action="store_true",
                   help="run the cond/uncond CFG passes on two GPU groups (torchrun, N = 2 x ulysses_size)")
    p.add_argument("--save_file", default=None, help="output .mp4 (24 fps)")
    p.add_argument("--save_latents", default=None, help="also save the denoised latents (torch .pt)")
    p.add_argument("--report_file", default=None, help="write the JSON performance report here")
    p.add_argument("--memory_budget_gb", type=float, default=None,
                   help="cap this process's GPU memory (does it fit a 24/16 GB card?)")
    p.add_argument("--vae_dtype", default="auto",
                   help=f"one of {', '.join(VAE_DTYPES)} (auto: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--compile", default="auto",
                   help=f"one of {', '.join(COMPILE_MODES)} (auto: regional torch.compile of the DiT blocks on GPU)")
    p.add_argument("--attention_backend", default="auto", help=f"one of {', '.join(ATTENTION_BACKENDS)}")
    p.add_argument("--vae_layout", default="auto",
                   help=f"one of {', '.join(VAE_LAYOUTS)} (memory layout of the VAE convolutions; same output to rounding)")
    p.add_argument("--device", default=None, help="cuda (default when present), cuda:N or cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(ns: argparse.Namespace) -> RunConfig:
    """Build (unvalidated) RunConfig from parsed flags."""
    fields = {k: v for k, v in vars(ns).items() if k in RunConfig.__dataclass_fields__ and v is not None}
    return RunConfig(**fields)


def generate_main(argv: Sequence[str] | None = None) -> int:
    """``generate``: validate flags (exit 2 on bad input), run, write the report; returns exit code."""
    parser = OneLineParser(prog="generate.py", description="Wan2.2 TI2V-5B text/image → video")
    add_generate_args(parser)
    logging.basicConfig(level=logging.INFO, format="[wan-enhanced] %(message)s")
    try:
        ns = parser.parse_args(argv)
        cfg = validate(config_from_args(ns))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[wan-enhanced] task {cfg.task} {cfg.size} {cfg.frame_num} frames, {cfg.sample_steps} steps, "
          f"{'i2v' if cfg.is_i2v else 't2v'} on {cfg.device}; weights: {cfg.weights_note}", file=sys.stderr)
    from .run import run_generation

    try:
        outcome = run_generation(cfg, progress=not ns.quiet)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wan-enhanced`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ("generate", "report", "bench", "compare")
    if not argv or argv[0] not in commands:
        print(f"usage: wan-enhanced {{{','.join(commands)}}} ...", file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "generate":
        return generate_main(rest)
    if cmd == "report":
        from .report.text import report_main

        return report_main(rest)
    if cmd == "bench":
        from .bench.runner import bench_main

        return bench_main(rest)
    from .bench.compare import compare_main

    return compare_main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
