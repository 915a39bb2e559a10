"""The VAE layout lever (``--vae_layout channels_last``) is the same function as the contiguous layout."""

from __future__ import annotations

import torch

from wan_enhanced.fastpath import FastPath
from wan_enhanced.pipeline import TI2VPipeline


def _generate(cfg, layout):
    pipe = TI2VPipeline(cfg, progress=False, fast=FastPath(vae_layout=layout))
    return pipe, pipe.generate()


def test_channels_last_vae_decodes_and_encodes_like_contiguous(tiny_cfg, tiny_image):
    """i2v runs the VAE both ways (encode the image, decode the latents); float32 on CPU: to rounding."""
    cfg = tiny_cfg(image=tiny_image, vae_dtype="fp32", sample_steps=2, base_seed=5)
    pipe_a, a = _generate(cfg, "contiguous")
    pipe_b, b = _generate(cfg, "channels_last")
    assert pipe_a.fast.vae_layout == "contiguous" and pipe_b.fast.vae_layout == "channels_last"
    convs = [m for m in pipe_b.vae.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last_3d) for m in convs)
    assert not all(m.weight.is_contiguous() for m in convs)  # the layout really changed
    torch.testing.assert_close(b.latents, a.latents, atol=1e-4, rtol=1e-4)  # via the encoded image
    diff = (b.frames.astype(int) - a.frames.astype(int))
    assert abs(diff).max() <= 1  # uint8 frames: at most one rounding step apart


def test_auto_layout_resolves_per_device_and_vae_dtype():
    """auto = channels-last for a bf16 VAE on CUDA (measured on H100/H200), contiguous elsewhere."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # resolve only looks at the device type
    assert FastPath().resolve(cuda).vae_layout == "channels_last"
    assert FastPath().resolve(cuda, torch.float32).vae_layout == "contiguous"  # fp32 VAE: not measured
    assert FastPath().resolve(cpu).vae_layout == "contiguous"
    assert FastPath(vae_layout="channels_last").resolve(cpu).vae_layout == "channels_last"
    assert FastPath(vae_layout="contiguous").resolve(cuda).vae_layout == "contiguous"


def test_vae_layout_flag_reaches_the_vae(tiny_cfg):
    """--vae_layout from the config (not a FastPath passed in) decides the weights' layout."""
    pipe = TI2VPipeline(tiny_cfg(vae_layout="channels_last"), progress=False)
    assert pipe.fast.vae_layout == "channels_last"
    pipe.load_vae()
    convs = [m for m in pipe.vae.modules() if isinstance(m, torch.nn.Conv3d)]
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last_3d) for m in convs)
    assert TI2VPipeline(tiny_cfg(), progress=False).fast.vae_layout == "contiguous"  # auto on CPU
