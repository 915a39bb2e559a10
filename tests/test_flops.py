"""Analytic FLOPs vs torch.utils.flop_counter.FlopCounterMode (on the meta device: shapes only)."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import WanTransformer3DModel
from torch.utils.flop_counter import FlopCounterMode
from transformers import UMT5Config, UMT5EncoderModel

from wan_enhanced.models.flops import (
    dit_forward_flops,
    dit_tokens,
    t5_encoder_flops,
    vae_flops_estimate,
    video_tokens,
)
from wan_enhanced.models.presets import TI2V_5B, TINY
from wan_enhanced.monitor.flops import mfu


def _counted_dit(dit_cfg: dict, latent: tuple[int, int, int, int], text_len: int, per_token: bool,
                 device: str = "meta") -> float:
    with torch.device(device):
        model = WanTransformer3DModel(**dit_cfg).eval()
        x = torch.randn(1, *latent)
        n = dit_tokens(latent, dit_cfg["patch_size"])
        t = torch.full((1, n), 500.0) if per_token else torch.tensor([500.0])
        ctx = torch.randn(1, text_len, dit_cfg["text_dim"])
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(hidden_states=x, timestep=t, encoder_hidden_states=ctx)
    return float(fc.get_total_flops())


@pytest.mark.parametrize("per_token", [False, True])
def test_tiny_dit_matches_flop_counter(per_token):
    latent = (8, 3, 8, 8)  # 3 × 4 × 4 = 48 tokens
    ours = dit_forward_flops(TINY.dit, dit_tokens(latent, TINY.patch_size), TINY.text_len, per_token).total
    assert ours == pytest.approx(_counted_dit(TINY.dit, latent, TINY.text_len, per_token), rel=0.02)


def test_tiny_dit_real_cpu_run_with_math_sdpa():
    """A real CPU forward (math SDPA, so attention shows as bmm) counts the same as meta."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    latent = (8, 2, 8, 8)
    torch.manual_seed(0)
    with sdpa_kernel(SDPBackend.MATH):
        counted = _counted_dit(TINY.dit, latent, TINY.text_len, False, device="cpu")
    ours = dit_forward_flops(TINY.dit, dit_tokens(latent, TINY.patch_size), TINY.text_len).total
    assert ours == pytest.approx(counted, rel=0.02)


@pytest.mark.parametrize("latent,per_token", [((48, 1, 4, 4), True), ((48, 2, 8, 8), False)])
def test_5b_shaped_small_resolution_matches(latent, per_token):
    """The TI2V-5B config (all 30 layers, full 512-token text) at a few video tokens."""
    counted = _counted_dit(TI2V_5B.dit, latent, TI2V_5B.text_len, per_token)
    ours = dit_forward_flops(TI2V_5B.dit, dit_tokens(latent, TI2V_5B.patch_size), TI2V_5B.text_len, per_token)
    assert ours.total == pytest.approx(counted, rel=0.02)


def test_5b_at_720p_121_frames():
    n = video_tokens(121, 704, 1280, TI2V_5B.vae_stride, TI2V_5B.patch_size)
    assert n == 27_280
    f = dit_forward_flops(TI2V_5B.dit, n, TI2V_5B.text_len, per_token_timestep=True)
    assert f.total == pytest.approx(520.7e12, rel=0.01)
    assert f.breakdown["self_attn_sdpa"] == pytest.approx(274.3e12, rel=0.001)
    assert f.breakdown["cross_attn_sdpa"] == pytest.approx(5.15e12, rel=0.01)
    tt = f.breakdown["time_embedding"] + f.breakdown["time_projection"]
    assert tt == pytest.approx(3.65e12, rel=0.01)
    assert sum(f.breakdown.values()) == f.total and f.source == "analytic"
    scalar = dit_forward_flops(TI2V_5B.dit, n, TI2V_5B.text_len, per_token_timestep=False)
    assert f.total - scalar.total == pytest.approx(tt, rel=1e-4)
    # and the whole forward counted on meta (shapes only, ~1 s)
    counted = _counted_dit(TI2V_5B.dit, (48, 31, 44, 80), TI2V_5B.text_len, True)
    assert f.total == pytest.approx(counted, rel=0.02)
    assert mfu(f.total, 1.186, 989) == pytest.approx(44.4, abs=0.1)
    assert mfu(f.total, 1.0, None) is None


@pytest.mark.parametrize("layers", [2])
def test_t5_encoder_matches_flop_counter(layers):
    for base, seq in ((TINY.t5, 32), (TI2V_5B.t5, 512)):
        cfg = dict(copy.deepcopy(base), num_layers=min(layers, base["num_layers"]))
        with torch.device("meta"):
            model = UMT5EncoderModel(UMT5Config(**cfg, is_encoder_decoder=False)).eval()
            ids = torch.zeros(1, seq, dtype=torch.long)
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model(input_ids=ids)
        assert t5_encoder_flops(cfg, seq).total == pytest.approx(fc.get_total_flops(), rel=0.02)


def test_vae_estimate_extrapolation_is_exact_for_tiny():
    from diffusers import AutoencoderKLWan

    est = vae_flops_estimate(TINY.vae, 4, 4, 4, op="decode")
    with torch.device("meta"):
        vae = AutoencoderKLWan(**TINY.vae).eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        vae.decode(torch.empty(1, TINY.vae["z_dim"], 4, 4, 4, device="meta"))
    assert est.total == pytest.approx(fc.get_total_flops(), rel=0.02)
    assert est.source == "estimate" and "meta" in est.note
    enc = vae_flops_estimate(TINY.vae, 4, 4, 4, op="encode")
    assert 0 < enc.total < est.total
    with pytest.raises(ValueError):
        vae_flops_estimate(TINY.vae, 1, 4, 4, op="both")
