"""Issue 6 ablation on one GPU: the plain diffusers path vs our fast path, lever by lever.

Why this script is long (~520 lines): each section is one self-contained ablation of issue 6 whose committed
JSON results (benchmark/results/*/s3, s4) this code must keep reproducing; the shared timing and error helpers
live in ``wan_enhanced.bench.timing``.

Sections (``--sections dit,vae,e2e_diffusers``):
- ``dit``: one DiT forward at the run's size (default 1280*704, 121 frames → 27,280 tokens), median of
  ``--repeats`` after warm-up, for each lever combination; max-abs and relative error of the noise
  prediction against the plain path and against an fp32 forward of the same weights; latents after
  ``--check_steps`` steps, plain vs fast.
- ``dit_fast``: the default fast path only (``--dit_compile_mode`` for other torch.compile modes): CFG as
  two batch-1 forwards (what ``generate`` runs) vs one batch-2 forward, the GPU kernel time of one
  forward split into attention / GEMM / other, and (``--dit_ref FILE``) its output against another run's.
- ``vae``: VAE decode of random latents, ``--vae_variants`` of fp32 (reference), bf16, bf16 with cuDNN
  autotuning, bf16 channels-last (also with compiled residual blocks, or with diffusers' spatial tiling):
  time, memory above the weights, PSNR against fp32; ``--vae_snapshot VARIANT`` lists what is allocated
  at that variant's memory peak, by allocation site; ``--vae_profile`` splits its kernel time.
- ``e2e_diffusers``: diffusers' own ``WanPipeline(expand_timesteps=True)`` end to end (prompt
  embeddings given, fp32 VAE as diffusers recommends), the baseline our ``generate`` runs compare to.
Random weights (time and memory profile of the real 5B; outputs are noise). Writes one JSON file.

    python benchmark/perf_fastpath.py --out benchmark/results/h100/perf_fastpath.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from wan_enhanced.bench.timing import errors, time_fn
from wan_enhanced.config import RunConfig, validate
from wan_enhanced.fastpath import ATTENTION_BACKENDS, FastPath, activate_fa4, compile_vae_blocks
from wan_enhanced.models.presets import get_preset
from wan_enhanced.models.random_init import random_dit, random_vae
from wan_enhanced.pipeline import TI2VPipeline, make_scheduler

GIB = 1024**3


def cuda_time(fn, repeats: int, warmup: int = 1) -> tuple[float, list[float], float]:
    """(median seconds, all timings, first-call seconds) of ``fn`` (the shared ``bench.timing.time_fn``)."""
    t = time_fn(fn, repeats, warmup, device="cuda")
    return t.median_s, t.times_s, t.first_s


def set_backend(dit, name: str) -> None:
    """Pin attention backend ``name`` (a key of ATTENTION_BACKENDS) on ``dit``; flash4 activates FA4 first."""
    if name == "flash4":
        activate_fa4()  # from here on, SDPA's flash backend is FA4 for this process
    if ATTENTION_BACKENDS[name]:
        dit.set_attention_backend(ATTENTION_BACKENDS[name])
    else:
        dit.reset_attention_backend()


def section_dit(args, preset, out: dict) -> None:
    dev = torch.device("cuda")
    cfg = validate(RunConfig(task=preset.name, size=args.size, frame_num=args.frame_num, device="cuda",
                             sample_steps=args.check_steps, offload_model=False, compile="none"))
    pipe = TI2VPipeline(cfg, progress=False, fast=FastPath(scalar_timestep=False, compile="none",
                                                           attention_backend="native"))
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
        set_backend(dit, p.fast.attention_backend)  # the backend the run records
        return p.denoise(ctx, ctx_null).float()

    ctx_null = torch.randn(1, preset.text_len, preset.dit["text_dim"], generator=g).to(dev, torch.bfloat16)
    # the plain diffusers path: SDPA's own choice ('native'), before anything is compiled or FA4 activated
    lat_plain = run_steps(FastPath(scalar_timestep=False, compile="none", attention_backend="native"))

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
        # FA4 takes over SDPA's flash backend for the rest of the process: measure it last
        backends = sorted((b for b in args.backends.split(",") if b), key=lambda b: b == "flash4")
        for b in backends:
            set_backend(dit, b)
            measure(f"scalar timestep + attn {b}", t)
        dit.reset_attention_backend()
        dit.compile_repeated_blocks(fullgraph=True)
        measure("per-token t + compile", per_token, "first_call_s includes compiling")
        measure("scalar timestep + compile", t, "first_call_s includes compiling")
        for b in backends:
            if b in ("auto", "native"):
                continue
            set_backend(dit, b)
            measure(f"scalar timestep + compile + attn {b}", t, "recompiled for the backend")
        dit.reset_attention_backend()
    out["dit"] = {"tokens": n, "latent_shape": list(shape), "rows": rows,
                  "flop_note": "see monitor.flops.dit_forward_flops"}
    try:
        from wan_enhanced.models.flops import dit_forward_flops

        fl = dit_forward_flops(preset.dit, num_tokens=n, text_len=preset.text_len, per_token_timestep=True).total
        out["dit"]["flops_per_forward"] = fl
        for r in rows:
            r["tflops_per_s"] = fl / r["median_s"] / 1e12
    except ImportError:
        pass

    # latents after a few real sampling steps: plain path vs the fast path (same weights, seed, embeddings)
    fast = FastPath(scalar_timestep=True, compile="blocks", attention_backend=args.fast_backend)
    lat_fast = run_steps(fast)  # blocks are compiled by now
    out["dit"]["latents_after_steps"] = {"steps": args.check_steps, "fast_path": fast.resolve(dev).to_dict(),
                                         **errors(lat_fast, lat_plain)}
    print(f"[dit] latents after {args.check_steps} steps fast vs plain: {out['dit']['latents_after_steps']}")
    dit.to("cpu")
    torch.cuda.empty_cache()


DIT_COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead")
KERNEL_KINDS = (("attention", ("fmha", "flash", "sdpa", "attention", "attn")),
                ("gemm", ("gemm", "nvjet", "cutlass", "xmma", "cublas", "tem_fused", "addmm", "_mm_")))


def kernel_kind(name: str) -> str:
    """Bucket a CUDA kernel name: attention, gemm or other (elementwise, norms, copies, reductions)."""
    low = name.lower()
    if low.startswith("triton_") and "tem_fused" not in low:
        return "other"  # inductor's fused elementwise kernels are named after every op they absorb
    for kind, keys in KERNEL_KINDS:
        if any(k in low for k in keys):
            return kind
    return "other"


def kernel_breakdown(fn) -> dict:
    """GPU kernel time of one call of ``fn`` by kind (torch.profiler), with the ten longest kernels."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    per_kind: dict[str, float] = {"attention": 0.0, "gemm": 0.0, "other": 0.0}
    per_name: dict[str, float] = {}
    for ev in prof.events():
        if ev.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us = ev.device_time_total if hasattr(ev, "device_time_total") else ev.cuda_time_total
        per_kind[kernel_kind(ev.name)] += us / 1e6
        per_name[ev.name] = per_name.get(ev.name, 0.0) + us / 1e6
    top = sorted(per_name.items(), key=lambda kv: -kv[1])[:10]
    return {"kernel_s": per_kind, "kernel_total_s": sum(per_kind.values()),
            "top_kernels": [{"name": n[:160], "s": v, "kind": kernel_kind(n)} for n, v in top]}


def section_dit_fast(args, preset, out: dict) -> None:
    """The default fast path only: batch-1 forward (the baseline of this section), CFG as one batch-2
    forward, and where the forward's GPU time goes (attention / GEMM / other)."""
    dev = torch.device("cuda")
    cfg = validate(RunConfig(task=preset.name, size=args.size, frame_num=args.frame_num, device="cuda",
                             sample_steps=2, offload_model=False))
    pipe = TI2VPipeline(cfg, progress=False)
    shape = pipe.latent_shape
    dit = random_dit(preset, dev)
    g = torch.Generator("cpu").manual_seed(0)
    x = torch.randn(shape, generator=g).to(dev, torch.bfloat16)
    ctx = torch.randn(1, preset.text_len, preset.dit["text_dim"], generator=g).to(dev, torch.bfloat16)
    nctx = torch.randn(1, preset.text_len, preset.dit["text_dim"], generator=g).to(dev, torch.bfloat16)
    t1 = torch.tensor([999.0], device=dev)
    ref32 = None
    if args.fp32_ref:  # the yardstick: an fp32 forward of the same weights (eager, before anything changes)
        import copy

        with torch.no_grad():
            dit32 = copy.deepcopy(dit).float()
            ref32 = dit32(hidden_states=x.float(), timestep=t1, encoder_hidden_states=ctx.float(),
                          return_dict=False)[0].float()
        del dit32
        torch.cuda.empty_cache()
    fast = FastPath(attention_backend=args.fast_backend, fused_qk_rope=args.fused_qk_rope).resolve(dev)
    if args.dit_compile_mode != "default" and fast.compile == "blocks":
        # the same regional compile with another torch.compile mode (autotuned GEMMs, CUDA graphs)
        FastPath(attention_backend=fast.attention_backend, compile="none",
                 fused_qk_rope=fast.fused_qk_rope).apply_dit(dit, dev)
        from wan_enhanced.compile_cache import allow_sdpa_kernel_graphs_in_cache

        allow_sdpa_kernel_graphs_in_cache()  # as apply_dit does for its own compile
        dit.compile_repeated_blocks(fullgraph=True, mode=args.dit_compile_mode)
    else:
        fast.apply_dit(dit, dev)
    x2, ctx2, t2 = torch.cat([x, x]), torch.cat([ctx, nctx]), t1.expand(2).contiguous()
    rows = []

    def one(c):
        return dit(hidden_states=x, timestep=t1, encoder_hidden_states=c, return_dict=False)[0]

    def pair():  # CFG as the pipeline runs it: two batch-1 forwards
        return one(ctx), one(nctx)

    def batched():
        return dit(hidden_states=x2, timestep=t2, encoder_hidden_states=ctx2, return_dict=False)[0]

    with torch.no_grad():
        rows_to_run = [("default, CFG as 2 x batch 1", pair, "what generate runs"),
                       ("default, CFG as 1 x batch 2", batched, "first_call_s includes recompiling for batch 2")]
        for name, fn, note in rows_to_run[:2 if args.cfg_batch2 == "on" else 1]:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            med, times, first = cuda_time(fn, args.repeats, warmup=2)
            peak = (torch.cuda.max_memory_allocated() - base) / GIB
            rows.append({"variant": name, "median_s_per_cfg_pair": med, "times_s": times, "first_call_s": first,
                         "activation_peak_gb": peak, "note": note})
            print(f"[dit_fast] {name:32s} {med:.4f} s per CFG pair (first {first:.1f} s) +{peak:.2f} GiB", flush=True)
        err = None
        if args.cfg_batch2 == "on":
            a, b = pair()
            both = batched()
            err = {"cond": errors(both[:1], a), "uncond": errors(both[1:], b)}
            print(f"[dit_fast] batch 2 vs 2 x batch 1: {err}", flush=True)
        vs = {}  # the forward against references (before 2026-12-02 stored inside batch2_vs_batch1, h200/s8/f2)
        res = one(ctx).float() if ref32 is not None or args.dit_ref else None
        if ref32 is not None:
            vs["vs_fp32"] = errors(res, ref32)
            print(f"[dit_fast] vs an fp32 forward: {vs['vs_fp32']}", flush=True)
        if args.dit_ref:  # the same seeded weights and inputs in every process: compare outputs across runs
            ref_path = Path(args.dit_ref)
            if ref_path.is_file():
                vs["vs_dit_ref"] = errors(res, torch.load(ref_path, map_location=dev))
                print(f"[dit_fast] vs {ref_path}: {vs['vs_dit_ref']}", flush=True)
            else:
                torch.save(res, ref_path)
        breakdown = kernel_breakdown(lambda: one(ctx))
        wall, _, _ = cuda_time(lambda: one(ctx), args.repeats, warmup=1)
        breakdown["forward_median_s"] = wall
        ks = breakdown["kernel_s"]
        print(f"[dit_fast] one forward {wall:.4f} s: kernels {breakdown['kernel_total_s']:.4f} s = attention "
              f"{ks['attention']:.4f} + gemm {ks['gemm']:.4f} + other {ks['other']:.4f}", flush=True)
        for k in breakdown["top_kernels"]:
            print(f"    {k['s']:.4f} s {k['kind']:9s} {k['name'][:110]}")
    out["dit_fast"] = {"tokens": pipe.num_tokens, "fast_path": fast.to_dict(),
                       "compile_mode": args.dit_compile_mode, "rows": rows,
                       "batch2_vs_batch1": err, "vs_references": vs or None, "profile_batch1": breakdown}
    dit.to("cpu")
    torch.cuda.empty_cache()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of videos in [-1, 1] (compared as [0, 1] after clipping, as they are saved)."""
    a = ((a.float().clamp(-1, 1) + 1) / 2)
    b = ((b.float().clamp(-1, 1) + 1) / 2)
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def memory_at_peak(fn, top: int = 12) -> dict:
    """Run ``fn`` once under the CUDA allocator's history and list what was allocated at the peak.

    Replays the alloc/free trace of the snapshot to find the moment of most allocated bytes, then groups
    the blocks alive then by the innermost Python frame outside torch (file:line, function).
    """
    torch.cuda.synchronize()
    torch.cuda.memory._record_memory_history(max_entries=2_000_000, stacks="python")
    try:
        fn()
        torch.cuda.synchronize()
        snap = torch.cuda.memory._snapshot()
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    live: dict[int, tuple[int, list]] = {}
    cur = best = 0
    best_live: dict[int, tuple[int, list]] = {}
    for trace in snap["device_traces"]:
        for ev in trace:
            if ev["action"] == "alloc":
                live[ev["addr"]] = (ev["size"], ev.get("frames", []))
                cur += ev["size"]
                if cur > best:
                    best, best_live = cur, dict(live)
            elif ev["action"] in ("free_requested", "free_completed") and ev["addr"] in live:
                if ev["action"] == "free_requested":
                    cur -= live.pop(ev["addr"])[0]

    def where(frames: list) -> str:
        for f in frames:
            fn_name = f.get("filename", "")
            if fn_name.endswith(".py") and "/torch/" not in fn_name:
                return f"{fn_name.split('site-packages/')[-1]}:{f.get('line')} {f.get('name')}"
        return frames[0].get("name", "?")[:80] if frames else "?"

    groups: dict[str, list[int]] = {}
    for size, frames in best_live.values():
        groups.setdefault(where(frames), []).append(size)
    rows = sorted(({"where": k, "gib": sum(v) / GIB, "blocks": len(v), "largest_gib": max(v) / GIB}
                   for k, v in groups.items()), key=lambda r: -r["gib"])
    return {"peak_traced_gib": best / GIB, "top": rows[:top],
            "note": "blocks allocated during the traced call and alive at its peak (weights excluded)"}


VAE_VARIANTS = ("fp32", "bf16", "bf16_cudnn_benchmark", "bf16_channels_last", "bf16_channels_last_compiled",
                "bf16_channels_last_tiled")


def section_vae(args, preset, out: dict) -> None:
    dev = torch.device("cuda")
    cfg = validate(RunConfig(task=preset.name, size=args.size, frame_num=args.frame_num, device="cuda"))
    shape = TI2VPipeline(cfg, progress=False).latent_shape
    variants = [v for v in args.vae_variants.split(",") if v]
    vae32 = random_vae(preset, dev, torch.float32)
    z = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(1)).to(dev)
    ref_path = Path(args.vae_ref) if args.vae_ref else None
    rows, ref = [], None
    if ref_path is not None and ref_path.is_file():
        ref = torch.load(ref_path, map_location=dev)
        print(f"[vae] fp32 reference read from {ref_path}", flush=True)
    elif "fp32" not in variants:
        variants.insert(0, "fp32")  # PSNR needs the fp32 decode of the same latents
    for name in variants:
        dtype = torch.float32 if name == "fp32" else torch.bfloat16
        torch.backends.cudnn.benchmark = name == "bf16_cudnn_benchmark"
        vae = vae32 if dtype == torch.float32 else random_vae(preset, dev, torch.float32).to(dtype)
        if dtype != torch.float32:
            vae.load_state_dict({k: v.to(dtype) for k, v in vae32.state_dict().items()})
        zz = z.to(dtype)
        if name.startswith("bf16_channels_last"):
            layout = FastPath(vae_layout="channels_last")  # what the pipeline does on CUDA by default
            layout.apply_vae(vae)
            zz = layout.vae_input(zz)
        extra = {}
        if name.endswith("_tiled"):  # diffusers' spatial tiling with its default tile sizes and overlap
            vae.enable_tiling()
            extra["tiling"] = {k: getattr(vae, k) for k in ("tile_sample_min_height", "tile_sample_min_width",
                                                            "tile_sample_stride_height", "tile_sample_stride_width")}
        if name.endswith("_compiled"):
            from torch._dynamo.utils import counters

            extra["compiled_blocks"] = compile_vae_blocks(vae)
            graphs0 = counters["stats"]["unique_graphs"]
        weights = sum(p.numel() * p.element_size() for p in vae.parameters()) / GIB
        with torch.no_grad():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            med, times, first = cuda_time(lambda v=vae, x=zz: v.decode(x, return_dict=False)[0], args.vae_repeats,
                                          warmup=1)
            peak = (torch.cuda.max_memory_allocated() - base) / GIB
            video = vae.decode(zz, return_dict=False)[0]
        if name.endswith("_compiled"):
            extra["graphs_compiled"] = counters["stats"]["unique_graphs"] - graphs0
            extra["note"] = "first_call_s includes compiling (warm-up call); median excludes it"
        if ref is None:
            ref = video.float()
            if ref_path is not None:
                torch.save(ref, ref_path)
        row = {"variant": name, "median_s": med, "times_s": times, "first_call_s": first,
               "above_weights_peak_gb": peak, "weights_gb": weights,
               "psnr_db_vs_fp32": psnr(video, ref), "saturated_fraction_fp32": float((ref.abs() >= 1).float().mean()),
               **extra}
        del video
        if name in args.vae_profile.split(","):
            with torch.no_grad():
                row["profile"] = kernel_breakdown(lambda v=vae, x=zz: v.decode(x, return_dict=False)[0])
            ks = row["profile"]["kernel_s"]
            print(f"    kernels {row['profile']['kernel_total_s']:.3f} s: conv/gemm {ks['gemm']:.3f} "
                  f"other {ks['other']:.3f}", flush=True)
            for k in row["profile"]["top_kernels"]:
                print(f"    {k['s']:.4f} s {k['kind']:9s} {k['name'][:110]}")
        if args.vae_snapshot and name == args.vae_snapshot:
            with torch.no_grad():
                torch.cuda.empty_cache()
                row["memory_at_peak"] = memory_at_peak(lambda v=vae, x=zz: v.decode(x, return_dict=False)[0])
            for r in row["memory_at_peak"]["top"]:
                print(f"    {r['gib']:6.2f} GiB in {r['blocks']:4d} blocks (largest {r['largest_gib']:.2f}) {r['where']}")
        rows.append(row)
        print(f"[vae] {name:24s} {med:.3f} s  +{peak:.2f} GB  PSNR {row['psnr_db_vs_fp32']:.1f} dB", flush=True)
        if vae is not vae32:
            del vae
    torch.backends.cudnn.benchmark = False
    out["vae"] = {"latent_shape": list(shape), "rows": rows,
                  "env": {k: v for k, v in os.environ.items() if k.startswith("CUDNN")}}
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
    ap.add_argument("--vae_variants", default="fp32,bf16,bf16_cudnn_benchmark",
                    help=f"comma list of {', '.join(VAE_VARIANTS)}")
    ap.add_argument("--vae_ref", default="", help="file for the fp32 reference decode: read if present, else written")
    ap.add_argument("--vae_snapshot", default="", help="variant whose memory at its peak is listed by allocation site")
    ap.add_argument("--check_steps", type=int, default=3)
    ap.add_argument("--e2e_steps", type=int, default=50)
    ap.add_argument("--backends", default="cudnn,flash",
                    help=f"attention backends of section dit, from {', '.join(ATTENTION_BACKENDS)}; flash4 "
                         "re-routes SDPA's flash backend for the rest of the process, so it is measured last")
    ap.add_argument("--fast_backend", default="auto",
                    help="attention backend of the fast path in section dit_fast and dit's latent check")
    ap.add_argument("--dit_compile_mode", default="default", choices=DIT_COMPILE_MODES,
                    help="torch.compile mode of the regional compile in section dit_fast")
    ap.add_argument("--fused_qk_rope", default="off", choices=("off", "on"),
                    help="section dit_fast: the fused q/k RMSNorm + RoPE pass (issue 17, lever 4)")
    ap.add_argument("--dit_ref", default="", help="section dit_fast: file of a reference forward output: "
                    "compared with if present, else written")
    ap.add_argument("--fp32_ref", action="store_true",
                    help="section dit_fast: also compare the forward with an fp32 forward of the same weights")
    ap.add_argument("--cfg_batch2", default="on", choices=("on", "off"),
                    help="section dit_fast: also time CFG as one batch-2 forward")
    ap.add_argument("--vae_profile", default="", help="comma list of VAE variants whose decode kernels are profiled")
    args = ap.parse_args()
    sections = {"dit": section_dit, "dit_fast": section_dit_fast, "vae": section_vae,
                "e2e_diffusers": section_e2e_diffusers}
    checks = [("--sections", args.sections, tuple(sections)), ("--vae_variants", args.vae_variants, VAE_VARIANTS),
              ("--vae_profile", args.vae_profile, VAE_VARIANTS), ("--backends", args.backends, tuple(ATTENTION_BACKENDS)),
              ("--fast_backend", args.fast_backend, tuple(ATTENTION_BACKENDS))]
    for flag, value, allowed in checks:  # one-line errors before any model is built
        bad = [v for v in value.split(",") if v and v not in allowed]
        if bad:
            ap.error(f"{flag}: {bad[0]!r} is not allowed; allowed: {', '.join(allowed)}")
    if args.vae_snapshot and args.vae_snapshot not in args.vae_variants.split(","):
        ap.error(f"--vae_snapshot: {args.vae_snapshot!r} is not one of --vae_variants ({args.vae_variants})")
    preset = get_preset(args.task)
    out: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "args": vars(args),
                 "weights": "random (real architecture)"}
    import diffusers

    out["diffusers"] = diffusers.__version__
    for s in args.sections.split(","):
        sections[s](args, preset, out)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
