"""Build the real architectures with random weights, directly on the target device.

The weights are random, so videos are noise, but the time and memory profile is that of the real
model. Modules that diffusers keeps in fp32 (``_keep_in_fp32_modules``) stay fp32, exactly as
``from_pretrained(torch_dtype=...)`` would leave them, and non-persistent buffers (rope tables) are
computed on construction, so they are valid.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from .presets import ModelPreset


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Temporarily set torch's default floating dtype (parameters are created in it)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def keep_fp32_modules(model: torch.nn.Module, patterns: list[str] | None) -> None:
    """Cast parameters and buffers of modules matching ``patterns`` back to fp32 (diffusers' rule)."""
    if not patterns:
        return
    for name, param in list(model.named_parameters()) + list(model.named_buffers()):
        if param.is_floating_point() and any(p in name.split(".") for p in patterns):
            param.data = param.data.to(torch.float32)


def _seeded(seed: int) -> contextlib.AbstractContextManager:
    return torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()


def random_dit(preset: ModelPreset, device: torch.device, dtype: torch.dtype = torch.bfloat16,
               seed: int = 0) -> WanTransformer3DModel:
    """The preset's DiT with random weights in ``dtype`` (fp32-sensitive modules in fp32)."""
    with _seeded(seed), torch.device(device), default_dtype(dtype):
        torch.manual_seed(seed)
        model = WanTransformer3DModel(**preset.dit)
    keep_fp32_modules(model, model._keep_in_fp32_modules)
    return model.eval().requires_grad_(False)


def random_vae(preset: ModelPreset, device: torch.device, dtype: torch.dtype = torch.float32,
               seed: int = 1) -> AutoencoderKLWan:
    """The preset's Wan2.2 VAE with random weights."""
    with _seeded(seed), torch.device(device), default_dtype(dtype):
        torch.manual_seed(seed)
        model = AutoencoderKLWan(**preset.vae)
    return model.eval().requires_grad_(False)


def random_t5(preset: ModelPreset, device: torch.device, dtype: torch.dtype = torch.bfloat16,
              seed: int = 2) -> UMT5EncoderModel:
    """The preset's UMT5 encoder with random weights."""
    config = UMT5Config(**preset.t5, is_encoder_decoder=False)
    with _seeded(seed), torch.device(device), default_dtype(dtype):
        torch.manual_seed(seed)
        model = UMT5EncoderModel(config)
    return model.eval().requires_grad_(False)
