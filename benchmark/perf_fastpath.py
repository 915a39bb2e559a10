"""Issue 6 ablation on one GPU: the plain diffusers path vs our fast path, lever by lever.

Sections (``--sections dit,vae,e2e_diffusers``):
- ``dit``: one DiT forward at the run's size (default 1280*704, 121 frames → 27,280 tokens), median of
  ``--repeats`` after warm-up, for each lever combination; max-abs and relative error of the noise
  prediction against the plain path and against an fp32 forward of the same weights; latents after
  ``--check_steps`` steps, plain vs fast.
- ``vae``: VAE decode of random latents in fp32 (reference) and bf16 (± cuDNN autotuning): time,
  memory above the weights, PSNR against fp32.
- ``e2e_diffusers``: diffusers' own ``WanPipeline(expand_timesteps=True)`` end to end (prompt
  embeddings given, fp32 VAE as diffusers recommends), the baseline our ``generate`` runs compare to.
Random weights (time and memory profile of the real 5B; outputs are noise). Writes one JSON file.

    python benchmark/perf_fastpath.py --out benchmarks/results/h100/perf_fastpath.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

try:
    import wan_enhanced  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from wan_enhanced.config import RunConfig, validate  # noqa: E402
from wan_enhanced.fastpath import ATTENTION_BACKENDS, FastPath  # noqa: E402
from wan_enhanced.models.presets import get_preset  # noqa: E402
from wan_enhanced.models.random_init import random_dit, random_vae  # noqa: E402
from wan_enhanced.pipeline import TI2VPipeline, make_scheduler  # noqa: E402

GIB = 1024**3


def cuda_time(fn, repeats: int, warmup: int = 1) -> tuple[float, list[float], float]:
    """(median seconds, all timings, first-call seconds) of ``fn`` timed with CUDA events."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        fn()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times), times, first


def errors(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Max abs error and relative L2 error of ``out`` against ``ref``."""
    o, r = out.float(), ref.float()
    return {"max_abs": float((o - r).abs().max()), "rel_l2": float((o - r).norm() / r.norm())}


def section_dit(args, preset, out: dict) -> None:
    dev = torch.device("cuda")
    cfg = validate(RunConfig(task=preset.name, size=args.size, frame_num=args.frame_num, device="cuda",
                             sample_steps=args.check_steps, offload_model=False, compile="none"))
    pipe = TI2VPipeline(cfg, progress=False, fast=FastPath(scalar_timestep=False, compile="none"))
    shape = pipe.latent_shape
    dit = random_dit(preset, dev)
    g = torch.Generator("cpu").manual_seed(0)
    x = torch.randn(shape, generator=g).to(dev, torch.bfloat16)
    ctx = torch.randn(1, preset.text_len, preset.dit["text_dim"], generator=g).to(dev, torch.bfloat16)
    t = torch.tensor([999.0], device=dev)
    n = pipe.num_tokens
    per_token = t.expand(n).unsqueeze(0).contiguous()
    rows = []

    def run_steps(fast: FastPath) -> torch.Tensor:
        p = TI2VPipeline(cfg, progress=False, fast=fast)
        p.dit = dit
        return p.denoise(ctx, ctx_null).float()

    ctx_null = torch.randn(1, preset.text_len, preset.dit["text_dim"], generator=g).to(dev, torch.bfloat16)
    lat_plain = run_steps(FastPath(scalar_timestep=False, compile="none"))  # before anything is compiled

    def fwd(ts):
        return dit(hidden_states=x, timestep=ts, encoder_hidden_states=ctx, return_dict=False)[0]

    with torch.no_grad():
        ref = fwd(per_token)
        # fp32 reference of the same weights: is a variant's difference from the plain path bf16 noise?
        import copy

        dit32 = copy.deepcopy(dit).float()
        ref32 = dit32(hidden_states=x.float(), timestep=per_token, encoder_hidden_states=ctx.float(),
                      return_dict=False)[0].float()
        del dit32
        torch.cuda.empty_cache()

        def measure(name: str, ts, note: str = "") -> None:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            med, times, first = cuda_time(lambda: fwd(ts), args.repeats, warmup=2)
            peak = (torch.cuda.max_memory_allocated() - base) / GIB
            res = fwd(ts)
            row = {"variant": name, "median_s": med, "times_s": times, "first_call_s": first,
                   "activation_peak_gb": peak, "note": note, **errors(res, ref),
                   "vs_fp32": errors(res, ref32)}
            rows.append(row)
            print(f"[dit] {name:34s} {med:.4f} s (first {first:.1f} s) max_abs {row['max_abs']:.3g} "
                  f"rel {row['rel_l2']:.3g} | vs fp32 rel {row['vs_fp32']['rel_l2']:.3g}", flush=True)

        measure("plain diffusers (per-token t)", per_token, "diffusers WanPipeline(expand_timesteps=True) path")
        measure("scalar timestep", t)
        backends = [b for b in args.backends.split(",") if b]
        for b in backends:
            dit.set_attention_backend(ATTENTION_BACKENDS[b]) if ATTENTION_BACKENDS[b] else dit.reset_attention_backend()
            measure(f"scalar timestep + attn {b}", t)
        dit.reset_attention_backend()
        dit.compile_repeated_blocks(fullgraph=True)
        measure("per-token t + compile", per_token, "first_call_s includes compiling")
        measure("scalar timestep + compile", t, "first_call_s includes compiling")
        for b in backends:
            if b in ("auto", "native"):
                continue
            dit.set_attention_backend(ATTENTION_BACKENDS[b])
            measure(f"scalar timestep + compile + attn {b}", t, "recompiled for the backend")
        dit.reset_attention_backend()
    out["dit"] = {"tokens": n, "latent_shape": list(shape), "rows": rows,
                  "flop_note": "see monitor.flops.dit_forward_flops"}
    try:
        from wan_enhanced.monitor.flops import dit_forward_flops

        fl = dit_forward_flops(preset.dit, num_tokens=n, text_len=preset.text_len, per_token_timestep=True).total
        out["dit"]["flops_per_forward"] = fl
        for r in rows:
            r["tflops_per_s"] = fl / r["median_s"] / 1e12
    except ImportError:
        pass

    # latents after a few real sampling steps: plain path vs the fast path (same weights, seed, embeddings)
    lat_fast = run_steps(FastPath(scalar_timestep=True, compile="blocks"))  # blocks are compiled by now
    out["dit"]["latents_after_steps"] = {"steps": args.check_steps, **errors(lat_fast, lat_plain)}
    print(f"[dit] latents after {args.check_steps} steps fast vs plain: {out['dit']['latents_after_steps']}")
    dit.to("cpu")
    torch.cuda.empty_cache()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of videos in [-1, 1] (compared as [0, 1] after clipping, as they are saved)."""
    a = ((a.float().clamp(-1, 1) + 1) / 2)
    b = ((b.float().clamp(-1, 1) + 1) / 2)
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def section_vae(args, preset, out: dict) -> None:
    dev = torch.device("cuda")
    cfg = validate(RunConfig(task=preset.name, size=args.size, frame_num=args.frame_num, device="cuda"))
    shape = TI2VPipeline(cfg, progress=False).latent_shape
    vae32 = random_vae(preset, dev, torch.float32)
    z = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(1)).to(dev)
    rows, ref = [], None
    for name, dtype, bench in (("fp32", torch.float32, False), ("bf16", torch.bfloat16, False),
                               ("bf16 + cudnn.benchmark", torch.bfloat16, True)):
        torch.backends.cudnn.benchmark = bench
        vae = vae32 if dtype == torch.float32 else random_vae(preset, dev, torch.float32).to(dtype)
        if dtype != torch.float32:
            vae.load_state_dict({k: v.to(dtype) for k, v in vae32.state_dict().items()})
        weights = sum(p.numel() * p.element_size() for p in vae.parameters()) / GIB
        zz = z.to(dtype)
        with torch.no_grad():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            med, times, first = cuda_time(lambda v=vae, x=zz: v.decode(x, return_dict=False)[0], args.vae_repeats,
                                          warmup=1)
            peak = (torch.cuda.max_memory_allocated() - base) / GIB
            video = vae.decode(zz, return_dict=False)[0]
        if ref is None:
            ref = video.float()
            sat = float((ref.abs() >= 1).float().mean())
        row = {"variant": name, "median_s": med, "times_s": times, "first_call_s": first,
               "above_weights_peak_gb": peak, "weights_gb": weights,
               "psnr_db_vs_fp32": psnr(video, ref), "saturated_fraction_fp32": sat}
        rows.append(row)
        print(f"[vae] {name:24s} {med:.3f} s  +{peak:.2f} GB  PSNR {row['psnr_db_vs_fp32']:.1f} dB", flush=True)
        del video
        if vae is not vae32:
            del vae
    torch.backends.cudnn.benchmark = False
    out["vae"] = {"latent_shape": list(shape), "rows": rows}
    del vae32
    torch.cuda.empty_cache()


def section_e2e_diffusers(args, preset, out: dict) -> None:
    from diffusers import WanPipeline

    dev = torch.device("cuda")
    dit, vae = random_dit(preset, dev), random_vae(preset, dev, torch.float32)
    g = torch.Generator("cpu").manual_seed(0)
    ctx = torch.randn(1, preset.text_len, preset.dit["text_dim"], generator=g).to(dev, torch.bfloat16)
    nctx = torch.randn(1, preset.text_len, preset.dit["text_dim"], generator=g).to(dev, torch.bfloat16)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=dit,
                       scheduler=make_scheduler("unipc", 5.0), expand_timesteps=True)
    pipe.set_progress_bar_config(disable=True)
    w, h = map(int, args.size.split("*"))
    step_times: list[float] = []
    last = [time.perf_counter()]

    def cb(p, i, t, kw):
        torch.cuda.synchronize()
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now
        return {}

    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    last[0] = t0
    lat = pipe(prompt_embeds=ctx, negative_prompt_embeds=nctx, height=h, width=w, num_frames=args.frame_num,
               num_inference_steps=args.e2e_steps, guidance_scale=5.0, generator=torch.Generator("cpu").manual_seed(0),
               output_type="latent", callback_on_step_end=cb).frames
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    peak_denoise = torch.cuda.max_memory_allocated() / GIB
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        z = lat.to(vae.dtype)
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(dev)
        std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(dev)
        video = vae.decode(z * std + mean, return_dict=False)[0]
        pipe.video_processor.postprocess_video(video, output_type="np")
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    out["e2e_diffusers"] = {
        "steps": args.e2e_steps, "denoise_s": t1 - t0, "decode_s": t2 - t1, "total_s": t2 - t0,
        "median_step_s": statistics.median(step_times), "first_step_s": step_times[0],
        "peak_denoise_gb": peak_denoise, "peak_decode_gb": torch.cuda.max_memory_allocated() / GIB,
        "note": "diffusers WanPipeline(expand_timesteps=True), prompt embeddings given, VAE fp32, DiT resident",
    }
    print(f"[e2e diffusers] {json.dumps(out['e2e_diffusers'])}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--task", default="ti2v-5B")
    ap.add_argument("--size", default="1280*704")
    ap.add_argument("--frame_num", type=int, default=121)
    ap.add_argument("--sections", default="dit,vae")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--vae_repeats", type=int, default=2)
    ap.add_argument("--check_steps", type=int, default=3)
    ap.add_argument("--e2e_steps", type=int, default=50)
    ap.add_argument("--backends", default="cudnn,flash")
    args = ap.parse_args()
    preset = get_preset(args.task)
    out: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "args": vars(args),
                 "weights": "random (real architecture)"}
    import diffusers

    out["diffusers"] = diffusers.__version__
    for s in args.sections.split(","):
        {"dit": section_dit, "vae": section_vae, "e2e_diffusers": section_e2e_diffusers}[s](args, preset, out)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
