"""Per-architecture time model of one video: what a stage costs on a GPU, from catalog rates.

The projection (:mod:`.projection`) uses these pieces to move a measured run to another GPU:

- **DiT step**: the analytic FLOP plan of a forward, split into GEMM and attention FLOPs
  (:func:`dit_work`), each divided by the GPU's *achieved* rate for that kind of kernel (catalog
  ``rates``: measured by us on H100/H200, from public kernel benchmarks elsewhere, each with source and
  date), plus the rest of the step (norms, modulation, copies, scheduler) scaled by memory bandwidth;
- **attention kernel**: what our ``--attention_backend auto`` picks on the target (FA4 on compute
  capability 9.x/10.x, else cuDNN), or the kernel a peer always uses (the official code: FlashAttention-2);
- **VAE decode**: its measured split into convolutions (× the GEMM rate ratio in bf16, the TF32 rate ratio
  in fp32) and memory-bound work (× bandwidth ratio) — ``data/workload.json``;
- **transfers**: weights moved over the host link at the catalog's measured H2D rate (pinned or pageable).

Nothing here measures: every function takes catalog entries and seconds and returns seconds with a
``basis`` string saying where the number came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from ..errors import ConfigError
from ..models.flops import dit_forward_flops

GEMM_KEYS = ("patch_embedding", "time_embedding", "time_projection", "text_embedding", "self_attn_qkvo",
             "cross_attn_q_o", "cross_attn_kv", "ffn", "proj_out")
ATTENTION_KEYS = ("self_attn_sdpa", "cross_attn_sdpa")
KERNELS = ("fa4", "cudnn", "flash2")
#: our ``--attention_backend`` / fast_path names → the kernel names of the catalog's rates
BACKEND_KERNEL = {"flash4": "fa4", "cudnn": "cudnn", "flash": "flash2", "native": "cudnn", "auto": "cudnn",
                  "efficient": "efficient", "flash3": "fa3"}
#: catalog fields the model needs for every target GPU
REQUIRED_FIELDS = ("compute_capability", "memory_gb", "bandwidth_gbps", "rates")


@dataclass(frozen=True)
class DitWork:
    """FLOPs of one DiT forward, split by kernel kind."""

    gemm_flops: float
    attention_flops: float
    tokens: int


def dit_work(dit_config: dict[str, Any], num_tokens: int, text_len: int, per_token_timestep: bool) -> DitWork:
    """GEMM and attention FLOPs of one forward (the analytic plan of ``monitor.flops``)."""
    b = dit_forward_flops(dit_config, num_tokens=num_tokens, text_len=text_len,
                          per_token_timestep=per_token_timestep).breakdown
    return DitWork(sum(b.get(k, 0.0) for k in GEMM_KEYS), sum(b.get(k, 0.0) for k in ATTENTION_KEYS), num_tokens)


@lru_cache(maxsize=1)
def workload() -> dict[str, Any]:
    """The measured workload character (``data/workload.json``): VAE decode split, sources."""
    text = resources.files("wan_enhanced").joinpath("data/workload.json").read_text(encoding="utf-8")
    return json.loads(text)


def check_entry(entry: dict[str, Any]) -> None:
    """Raise ConfigError naming the first field the model needs that a catalog entry lacks."""
    for f in REQUIRED_FIELDS:
        if entry.get(f) in (None, "", {}):
            raise ConfigError(f"catalog entry {entry.get('key')!r} lacks {f!r}, which the projection needs; "
                              f"required: {', '.join(REQUIRED_FIELDS)}")
    rates = entry["rates"]
    for f in ("gemm_bf16", "h2d_pinned_gbps"):
        if _rate(rates.get(f)) is None:
            raise ConfigError(f"catalog entry {entry.get('key')!r} lacks rates.{f}, which the projection needs")
    if not any(_rate((rates.get("attention") or {}).get(k)) for k in KERNELS):
        raise ConfigError(f"catalog entry {entry.get('key')!r} lacks rates.attention (one of {', '.join(KERNELS)})")


def _rate(obj: Any) -> float | None:
    if isinstance(obj, dict):
        obj = obj.get("value")
    return float(obj) if isinstance(obj, (int, float)) and not isinstance(obj, bool) and obj > 0 else None


def _cite(obj: Any) -> str:
    if not isinstance(obj, dict):
        return "catalog"
    return ", ".join(str(obj[k]) for k in ("source", "date") if obj.get(k)) or "catalog"


def capability(entry: dict[str, Any]) -> tuple[int, int]:
    """(major, minor) compute capability of a catalog entry."""
    major, _, minor = str(entry["compute_capability"]).partition(".")
    return int(major), int(minor or 0)


def auto_kernel(entry: dict[str, Any], fa4_installed: bool = True) -> tuple[str, str]:
    """(kernel, why) that our ``--attention_backend auto`` picks on this GPU (single GPU, compiled)."""
    major, _ = capability(entry)
    if fa4_installed and major in (9, 10):
        return "fa4", f"auto on compute capability {entry['compute_capability']}: FlashAttention-4"
    return "cudnn", (f"auto on compute capability {entry['compute_capability']}: FA4 needs 9.x/10.x, "
                     "so SDPA with cuDNN pinned under compile")


def gemm_rate(entry: dict[str, Any]) -> tuple[float, str]:
    """Achieved bf16 GEMM TFLOP/s (fp32 accumulate) and its source."""
    r = entry["rates"]["gemm_bf16"]
    return float(_rate(r)), f"GEMM {_rate(r):g} TFLOP/s ({_cite(r)})"  # type: ignore[arg-type]


def attention_rate(entry: dict[str, Any], kernel: str) -> tuple[float, str, str]:
    """Achieved attention TFLOP/s of ``kernel`` on this GPU: (rate, kernel actually rated, source).

    A kernel the GPU cannot run (FA4 off 9.x/10.x) or has no rate for falls back to cuDNN, then FA2.
    """
    att = entry["rates"].get("attention") or {}
    for k in (kernel, "cudnn", "flash2"):
        r = _rate(att.get(k))
        if r is not None:
            return r, k, f"{k} {r:g} TFLOP/s ({_cite(att.get(k))})"
    raise ConfigError(f"catalog entry {entry.get('key')!r} has no attention rate")


def dit_seconds(work: DitWork, forwards: float, entry: dict[str, Any], kernel: str) -> tuple[float, float, str]:
    """(GEMM s, attention s, basis) of ``forwards`` DiT forwards on ``entry`` with ``kernel``."""
    g, gwhy = gemm_rate(entry)
    a, used, awhy = attention_rate(entry, kernel)
    return (forwards * work.gemm_flops / (g * 1e12), forwards * work.attention_flops / (a * 1e12),
            f"{gwhy}; attention {awhy}" + ("" if used == kernel else f" (no {kernel} rate: {used} used)"))


def step_seconds(measured_step_s: float, work: DitWork, forwards: float, source: dict[str, Any], src_kernel: str,
                 target: dict[str, Any], tgt_kernel: str) -> tuple[float, dict[str, float], str]:
    """A steady denoising step measured on ``source`` moved to ``target``.

    step = GEMM FLOPs ÷ GEMM rate + attention FLOPs ÷ attention rate + rest; the rest (norms, modulation,
    copies, the scheduler, launch gaps) is what the source's step leaves after its GEMM and attention time
    and is scaled by the memory-bandwidth ratio. Returns (seconds, parts on the target, basis).
    """
    sg, sa, sbasis = dit_seconds(work, forwards, source, src_kernel)
    rest_src = measured_step_s - sg - sa
    note = ""
    if rest_src < 0:
        note = f"; source rates over-predict its step by {-rest_src:.3f} s (rest set to 0)"
        rest_src = 0.0
    tg, ta, tbasis = dit_seconds(work, forwards, target, tgt_kernel)
    bw = float(source["bandwidth_gbps"]) / float(target["bandwidth_gbps"])
    rest = rest_src * bw
    parts = {"gemm_s": tg, "attention_s": ta, "rest_s": rest, "source_rest_s": rest_src}
    basis = (f"{forwards:g} forwards × ({work.gemm_flops / 1e12:.1f} TFLOP GEMM + {work.attention_flops / 1e12:.1f} "
             f"TFLOP attention); target {target['key']}: {tbasis}; rest {rest_src:.3f} s on {source['key']} "
             f"(its step minus {sbasis.split(';')[0]} and attention) × bandwidth {source['bandwidth_gbps']:g}/"
             f"{target['bandwidth_gbps']:g}{note}")
    return tg + ta + rest, parts, basis


def vae_decode_seconds(measured_s: float, vae_dtype: str, source: dict[str, Any], target: dict[str, Any]
                       ) -> tuple[float, str]:
    """A VAE decode measured on ``source`` moved to ``target`` by its measured conv / memory split."""
    w = workload()["vae_decode"]
    conv = float(w["conv_fraction"])
    if vae_dtype in ("fp32", "float32"):
        s, t = _rate(source.get("tf32_dense_tflops")), _rate(target.get("tf32_dense_tflops"))
        rate_basis = "TF32 datasheet rates (fp32 convolutions run on TF32 tensor cores)"
        if s is None or t is None:
            s, t = gemm_rate(source)[0], gemm_rate(target)[0]
            rate_basis = "bf16 GEMM rates (no TF32 rate in the catalog)"
    else:
        s, t = gemm_rate(source)[0], gemm_rate(target)[0]
        rate_basis = "achieved bf16 GEMM rates"
    bw = float(source["bandwidth_gbps"]) / float(target["bandwidth_gbps"])
    out = measured_s * (conv * s / t + (1 - conv) * bw)
    return out, (f"{conv:.0%} convolutions × {s:g}/{t:g} ({rate_basis}) + {1 - conv:.0%} memory-bound × bandwidth "
                 f"{source['bandwidth_gbps']:g}/{target['bandwidth_gbps']:g} ({w['source']})")


def transfer_seconds(measured_s: float, source: dict[str, Any], target: dict[str, Any], pinned: bool
                     ) -> tuple[float, str]:
    """Host↔device copies measured on ``source`` moved to ``target``'s host link."""
    key = "h2d_pinned_gbps" if pinned else "h2d_pageable_gbps"
    s, t = _rate(source["rates"].get(key)), _rate(target["rates"].get(key))
    if s is None or t is None:
        key = "h2d_pinned_gbps"
        s, t = _rate(source["rates"].get(key)), _rate(target["rates"].get(key))
    if s is None or t is None:
        return measured_s, "no host-link rate in the catalog: kept as measured"
    return measured_s * s / t, (f"host link {key.split('_')[1]} {s:g} → {t:g} GB/s "
                                f"({_cite(target['rates'].get(key))})")
