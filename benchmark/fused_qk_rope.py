"""Issue 17, lever 4: the q/k RMSNorm across heads + RoPE of ``wan_enhanced.qk_norm_rope``, timed alone on a GPU.

What the Wan attention does between its q/k projections and the attention kernel (diffusers' ``WanAttnProcessor``):
``torch.nn.RMSNorm(heads * head_dim)`` over the whole projected row (fp32 math, one rounding to bf16), the row split
into heads, then the rotary embedding on interleaved pairs (``x1 * cos - x2 * sin``, ``x1 * sin + x2 * cos`` in fp32,
rounded to bf16). Inside the regionally compiled blocks inductor emits this as a reduction kernel; the H200 profile
of one forward (``h200/s4/dit_fa4.json``) has it at 21.7 ms per forward (60 calls: q and k of 30 blocks), which is
about 0.9 TB/s of the H200's ~4.8 TB/s for the 27,280 × 3,072 bf16 rows it reads and writes.

This script times, on a GPU, that same computation compiled by inductor (the reference, diffusers' code) against
one Triton program per token row (``rms_rope``, the op of ``wan_enhanced.qk_norm_rope``), and checks their agreement. Measured on an H200
(``h200/s7/lever4/``, 27,280 tokens, median of 7 × 10 calls): eager 1.478 ms, inductor 0.312 ms (1.07 TB/s),
``rms_rope`` **0.147 ms** (2.28 TB/s) per call — 18.7 → 8.8 ms per forward (60 calls), about 1.2 % of the 0.837 s
forward. ``rms_rope`` equals the eager reference to 1 bf16 step (99.997 % of the values identical, rel L2 1.8e-5);
inductor's fusion itself differs from eager by rel L2 0.27 % (other rounding). In the pipeline it is
``--fused_qk_rope`` (``auto`` = on with a GPU and Triton since the whole forward was measured, ``h200/s8/f2``).

    python benchmark/fused_qk_rope.py --out fused_qk_rope.json            # GPU
    TRITON_INTERPRET=1 python benchmark/fused_qk_rope.py --check_only --tokens 64   # CPU, Triton's interpreter
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import triton

from wan_enhanced.qk_norm_rope import reference as _reference
from wan_enhanced.qk_norm_rope import rms_rope as _rms_rope

HEADS, HEAD_DIM = 24, 128  # Wan2.2 TI2V-5B: dim 3072
EPS = 1e-6


def reference(x: torch.Tensor, norm: torch.nn.RMSNorm, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """diffusers' code path (``wan_enhanced.qk_norm_rope.reference``) for 24 heads."""
    return _reference(x, norm, HEADS, cos, sin)


def rms_rope(x: torch.Tensor, norm: torch.nn.RMSNorm, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The one-pass Triton op (``wan_enhanced.qk_norm_rope``); it needs CUDA tensors, or Triton's interpreter."""
    return _rms_rope(x, norm, HEADS, cos, sin)


def inputs(tokens: int, device: str) -> tuple[torch.Tensor, torch.nn.RMSNorm, torch.Tensor, torch.Tensor]:
    """Random bf16 rows, an RMSNorm with a random weight, and fp32 cos / sin of random angles (seed 0)."""
    g = torch.Generator("cpu").manual_seed(0)
    x = (torch.randn(1, tokens, HEADS * HEAD_DIM, generator=g) * 2).to(device, torch.bfloat16)
    norm = torch.nn.RMSNorm(HEADS * HEAD_DIM, eps=EPS).to(device, torch.bfloat16)
    with torch.no_grad():
        norm.weight.copy_((torch.randn(HEADS * HEAD_DIM, generator=g) * 0.2 + 1).to(device, torch.bfloat16))
    angle = torch.randn(1, tokens, 1, HEAD_DIM, generator=g).to(device)
    return x, norm, angle.cos(), angle.sin()


def compare(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Max abs difference, rel L2 and the share of identical values of ``a`` against ``b``."""
    d = (a.float() - b.float())
    return {"max_abs": d.abs().max().item(), "rel_l2": (d.norm() / b.float().norm()).item(),
            "equal_fraction": (a == b).float().mean().item()}


def cuda_ms(fn: Callable[[], object], repeats: int) -> list[float]:
    """``repeats`` CUDA-event timings (ms per call, each the mean of 10 calls)."""
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 10)
    return times


def main() -> int:
    """Check the agreement; on a GPU also time eager, inductor and the Triton pass; exit 1 if they disagree."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=27280)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--check_only", action="store_true", help="agreement only (no timing): the CPU interpreter")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x, norm, cos, sin = inputs(a.tokens, device)
    with torch.no_grad():
        ref = reference(x, norm, cos, sin)
        got = rms_rope(x, norm, cos, sin)
        out: dict = {"tokens": a.tokens, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                     "torch": torch.__version__, "triton": triton.__version__,
                     "agreement_vs_eager_reference": compare(got, ref)}
        if not a.check_only and device == "cuda":
            compiled = torch.compile(reference, fullgraph=True)
            ref_c = compiled(x, norm, cos, sin)
            out["agreement_inductor_vs_eager"] = compare(ref_c, ref)
            out["agreement_vs_inductor"] = compare(got, ref_c)
            moved = 2 * x.numel() * x.element_size()  # read the row, write the row (weights, cos, sin: cached)
            for name, fn in (("eager", lambda: reference(x, norm, cos, sin)),
                             ("inductor", lambda: compiled(x, norm, cos, sin)),
                             ("triton_rms_rope", lambda: rms_rope(x, norm, cos, sin))):
                fn()
                ms = cuda_ms(fn, a.repeats)
                med = statistics.median(ms)
                out[name] = {"median_ms": med, "ms": ms, "tb_per_s": moved / med / 1e9,
                             "per_forward_ms_60_calls": 60 * med}
    print(json.dumps(out, indent=1))
    if a.out:
        a.out.write_text(json.dumps(out, indent=1), encoding="utf-8")
    agree = out["agreement_vs_eager_reference"]
    return 0 if agree["max_abs"] <= 0.0625 and agree["rel_l2"] < 4e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
