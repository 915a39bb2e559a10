"""Attention kernels at the TI2V-5B self-attention shape on one GPU: time, TFLOP/s, error vs fp32.

Shape of one DiT self-attention at 1280*704, 121 frames: batch 1, 27,280 tokens, 24 heads of 128, bf16,
no mask, laid out as diffusers hands it to SDPA (``[B, S, H, D]`` viewed as ``[B, H, S, D]``).
Kernels: torch SDPA pinned to cuDNN, flash (FlashAttention-2 built into torch) and memory-efficient;
``flash4``: FlashAttention-4 through torch's flash-attention registry (``activate_flash_attention_impl``),
when the package is installed, plus FA4's own ``flash_attn_func`` to show the registry adds nothing.
Errors are against fp32 math attention of the same inputs, for the first ``--ref_heads`` heads.

    python benchmark/attention_kernels.py --out benchmark/results/h100/s4/attention.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from wan_enhanced.bench.timing import errors, time_fn
from wan_enhanced.fastpath import activate_fa4, fa4_unavailable

KERNELS = ("cudnn", "flash", "efficient", "flash4", "flash4_direct")  # plus flash4_tile_MxN from --fa4_tiles
SDPA = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION, "flash4": SDPBackend.FLASH_ATTENTION}


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, chunk: int = 4096) -> torch.Tensor:
    """fp32 math-backend SDPA for the first ``heads`` heads, queries in chunks ([B, heads, S, D])."""
    qs, ks, vs = (t[:, :heads].float() for t in (q, k, v))
    with sdpa_kernel(SDPBackend.MATH):
        return torch.cat([F.scaled_dot_product_attention(qs[:, :, i:i + chunk], ks, vs)
                          for i in range(0, qs.shape[2], chunk)], dim=2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", type=int, default=27280)
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--head_dim", type=int, default=128)
    ap.add_argument("--kernels", default="cudnn,flash,efficient,flash4,flash4_direct",
                    help=f"comma list of {', '.join(KERNELS)}; flash4 re-routes SDPA's flash backend, so it runs last")
    ap.add_argument("--fa4_tiles", default="",
                    help="comma list of FA4 forward tiles MxN (e.g. 128x128,128x176) timed through flash_attn.cute")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--ref_heads", type=int, default=2)
    args = ap.parse_args()
    kernels = [k for k in args.kernels.split(",") if k]
    bad = [k for k in kernels if k not in KERNELS]
    if bad:
        ap.error(f"--kernels: {bad[0]!r} is not allowed; allowed: {', '.join(KERNELS)}")
    tiles = []
    for t in (t for t in args.fa4_tiles.split(",") if t):
        try:
            m, n = (int(x) for x in t.lower().split("x"))
        except ValueError:
            ap.error(f"--fa4_tiles: {t!r} is not allowed; use MxN, e.g. 128x176")
        tiles.append((m, n))
        kernels.append(f"flash4_tile_{m}x{n}")
    if not torch.cuda.is_available():
        ap.error("needs a CUDA GPU")
    # FA4 re-routes the flash backend for good: measure FA2 first, then FA4
    kernels.sort(key=lambda k: k.startswith("flash4"))
    fa4_why = fa4_unavailable() if any(k.startswith("flash4") for k in kernels) else None

    g = torch.Generator("cuda").manual_seed(0)
    shape = (1, args.tokens, args.heads, args.head_dim)  # [B, S, H, D] as the model's projections give it
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, S, D] views, as diffusers passes them
    ref = reference(qh, kh, vh, args.ref_heads)
    flops = 4 * args.tokens * args.tokens * args.head_dim * args.heads
    out: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "args": vars(args),
                 "shape_bshd": list(shape), "flops": flops, "rows": []}
    for name in kernels:
        row: dict = {"kernel": name}
        if name.startswith("flash4") and fa4_why:
            row["unavailable"] = fa4_why
            out["rows"].append(row)
            print(f"{name:14s} unavailable: {fa4_why}", flush=True)
            continue
        if name == "flash4":
            activate_fa4()
        if name == "flash4_direct":
            from flash_attn.cute import flash_attn_func

            def fn():
                o = flash_attn_func(q, k, v)
                return (o[0] if isinstance(o, tuple) else o).transpose(1, 2)
        elif name.startswith("flash4_tile_"):
            from flash_attn.cute import interface

            tile = tuple(int(x) for x in name.rsplit("_", 1)[1].split("x"))

            def fn(tile=tile):
                return interface._flash_attn_fwd(q, k, v, tile_mn=tile)[0].transpose(1, 2)
        else:
            def fn(b=SDPA[name]):
                with sdpa_kernel(b):
                    return F.scaled_dot_product_attention(qh, kh, vh)
        try:
            with torch.no_grad():
                res = fn()
                t = time_fn(fn, args.repeats, warmup=2, device="cuda")
                med, times = t.median_s, t.times_s
        except Exception as e:  # noqa: BLE001 - a backend or tile that refuses this shape/device
            row["error"] = str(e).splitlines()[0][:300]
            out["rows"].append(row)
            print(f"{name:14s} failed: {row['error']}", flush=True)
            continue
        err = errors(res[:, :args.ref_heads], ref)
        row.update(median_s=med, times_s=times, tflops_per_s=flops / med / 1e12,
                   max_abs_vs_fp32=err["max_abs"], rel_l2_vs_fp32=err["rel_l2"])
        out["rows"].append(row)
        print(f"{name:14s} {med * 1e3:8.2f} ms  {row['tflops_per_s']:6.1f} TFLOP/s  max_abs {row['max_abs_vs_fp32']:.3g} "
              f"rel {row['rel_l2_vs_fp32']:.3g}", flush=True)
    if hasattr(torch.nn.attention, "current_flash_attention_impl"):
        out["flash_impl_at_end"] = torch.nn.attention.current_flash_attention_impl()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
