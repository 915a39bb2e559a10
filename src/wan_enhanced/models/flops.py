"""Analytic FLOPs of the Wan models: the DiT (exact matmul/conv count), the UMT5 encoder, a VAE estimate.

They live beside the model code (not in ``monitor/``, which knows nothing of Wan); the monitor only
adds the totals to stages and ``monitor.flops.mfu`` turns FLOPs and time into utilization.

Every matmul, linear and convolution counts 2 × MACs, as ``torch.utils.flop_counter`` does; norms,
activations, RoPE and elementwise ops are not counted (they are memory-bound, not FLOP-bound).
Checked against ``FlopCounterMode`` in tests/test_flops.py: the TI2V-5B DiT at 27,280 tokens is
520.65 TFLOP per forward.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FlopCount:
    """A FLOP total with its breakdown; ``source`` is ``analytic`` or ``estimate``."""

    total: float
    breakdown: dict[str, float] = field(default_factory=dict)
    source: str = "analytic"
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"total": self.total, "breakdown": dict(self.breakdown), "source": self.source, "note": self.note}


def _linear(rows: float, fan_in: float, fan_out: float) -> float:
    return 2.0 * rows * fan_in * fan_out


def dit_tokens(latent_shape: Sequence[int], patch_size: Sequence[int]) -> int:
    """Video tokens of a latent ``(C, T, H, W)`` (or ``(T, H, W)``) for a DiT patch size ``(pt, ph, pw)``."""
    t, h, w = list(latent_shape)[-3:]
    pt, ph, pw = patch_size
    return (t // pt) * (h // ph) * (w // pw)


def video_tokens(frames: int, height: int, width: int, vae_stride: Sequence[int],
                 patch_size: Sequence[int]) -> int:
    """Video tokens for a pixel video: latent ``((frames-1)//st+1, H//sh, W//sw)``, then patched."""
    st, sh, sw = vae_stride
    return dit_tokens(((frames - 1) // st + 1, height // sh, width // sw), patch_size)


def dit_forward_flops(config: Mapping[str, Any], num_tokens: int, text_len: int,
                      per_token_timestep: bool = False, batch: int = 1) -> FlopCount:
    """FLOPs of one ``WanTransformer3DModel`` forward (no image embedder, no added K/V).

    ``config`` holds the DiT constructor keys (num_attention_heads, attention_head_dim, ffn_dim,
    num_layers, in_channels, out_channels, text_dim, freq_dim, patch_size). ``per_token_timestep``:
    the time embedding MLP and projection run once per video token (Wan2.2 TI2V) instead of once.
    """
    d = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    ffn = int(config["ffn_dim"])
    layers = int(config["num_layers"])
    cin = int(config["in_channels"])
    cout = int(config.get("out_channels") or cin)
    text_dim = int(config["text_dim"])
    freq = int(config["freq_dim"])
    patch = math.prod(int(p) for p in config["patch_size"])
    n = float(num_tokens) * batch
    lt = float(text_len) * batch
    tt = (float(num_tokens) if per_token_timestep else 1.0) * batch
    nq = float(num_tokens)
    b = {
        "patch_embedding": _linear(n, cin * patch, d),
        "time_embedding": _linear(tt, freq, d) + _linear(tt, d, d),
        "time_projection": _linear(tt, d, 6 * d),
        "text_embedding": _linear(lt, text_dim, d) + _linear(lt, d, d),
        "self_attn_qkvo": layers * 4 * _linear(n, d, d),
        "self_attn_sdpa": layers * batch * 4.0 * nq * nq * d,
        "cross_attn_q_o": layers * 2 * _linear(n, d, d),
        "cross_attn_kv": layers * 2 * _linear(lt, d, d),
        "cross_attn_sdpa": layers * batch * 4.0 * nq * text_len * d,
        "ffn": layers * 2 * _linear(n, d, ffn),
        "proj_out": _linear(n, d, cout * patch),
    }
    note = (f"{layers} layers, dim {d}, {num_tokens} video tokens, {text_len} text tokens, "
            f"{'per-token' if per_token_timestep else 'scalar'} timestep, batch {batch}")
    return FlopCount(sum(b.values()), b, "analytic", note)


def t5_encoder_flops(t5_config: Mapping[str, Any], seq_len: int, batch: int = 1) -> FlopCount:
    """FLOPs of a (U)T5 encoder forward over ``seq_len`` tokens (q,k,v,o, scores, A·V, FFN)."""
    dm = int(t5_config["d_model"])
    inner = int(t5_config["num_heads"]) * int(t5_config["d_kv"])
    dff = int(t5_config["d_ff"])
    layers = int(t5_config["num_layers"])
    gated = str(t5_config.get("feed_forward_proj", "relu")).startswith("gated")
    s = float(seq_len) * batch
    b = {
        "attn_qkvo": layers * (3 * _linear(s, dm, inner) + _linear(s, inner, dm)),
        "attn_scores_av": layers * batch * 4.0 * seq_len * seq_len * inner,
        "ffn": layers * ((2 if gated else 1) * _linear(s, dm, dff) + _linear(s, dff, dm)),
    }
    return FlopCount(sum(b.values()), b, "analytic", f"{layers} layers, d_model {dm}, {seq_len} tokens")


@functools.lru_cache(maxsize=32)
def _vae_meta_flops(config_json: str, op: str, frames: int, h: int, w: int) -> tuple[float, float]:
    import torch
    from diffusers import AutoencoderKLWan
    from torch.utils.flop_counter import FlopCounterMode

    cfg = json.loads(config_json)
    with torch.device("meta"):
        vae = AutoencoderKLWan(**cfg).eval()
    st, ss = int(cfg.get("scale_factor_temporal", 4)), int(cfg.get("scale_factor_spatial", 8))
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        if op == "decode":
            vae.decode(torch.empty(1, int(cfg["z_dim"]), frames, h, w, device="meta"))
        else:
            cin = 3
            vae.encode(torch.empty(1, cin, (frames - 1) * st + 1, h * ss, w * ss, device="meta"))
    counts = fc.get_flop_counts().get("Global", {})
    conv = float(sum(v for k, v in counts.items() if "conv" in str(k)))
    return conv, float(fc.get_total_flops()) - conv


def vae_flops_estimate(vae_config: Mapping[str, Any], latent_frames: int, latent_height: int,
                       latent_width: int, op: str = "decode", batch: int = 1) -> FlopCount:
    """Estimated FLOPs of an ``AutoencoderKLWan`` decode (or encode) of a latent ``(T, H, W)``.

    Method: ``torch.utils.flop_counter.FlopCounterMode`` over a meta-device run (no compute, exact
    conv/matmul shapes) at 1 and 2 latent frames and the full spatial size, extrapolated linearly in
    frames (the causal VAE processes one latent frame — 4 video frames — per chunk after the first;
    checked exact against a full 31-frame meta run). Norms and activations are not counted, hence
    source ``estimate``. Needs diffusers; the first call per shape takes ~0.5 s, then it is cached.
    """
    if op not in ("decode", "encode"):
        raise ValueError(f"op must be 'decode' or 'encode', not {op!r}")
    cfg_json = json.dumps(dict(vae_config), sort_keys=True, default=list)
    conv1, mm1 = _vae_meta_flops(cfg_json, op, 1, int(latent_height), int(latent_width))
    if latent_frames <= 1:
        conv, mm = conv1, mm1
    else:
        conv2, mm2 = _vae_meta_flops(cfg_json, op, 2, int(latent_height), int(latent_width))
        k = latent_frames - 1
        conv, mm = conv1 + k * (conv2 - conv1), mm1 + k * (mm2 - mm1)
    b = {"conv": conv * batch, "matmul": mm * batch}
    note = (f"VAE {op} of {latent_frames}×{latent_height}×{latent_width} latent: FlopCounterMode on meta "
            "at 1-2 latent frames, linear in frames; conv/matmul only")
    return FlopCount(sum(b.values()), b, "estimate", note)
