"""GPU-only checks of the fast-path levers (run on the device machine: ``pytest -m gpu``)."""

from __future__ import annotations

import pytest
import torch

from wan_enhanced.fastpath import FastPath
from wan_enhanced.models.presets import get_preset
from wan_enhanced.models.random_init import random_vae
from wan_enhanced.residency import Residency

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_offload_keeps_the_channels_last_vae_layout():
    """Pinned host copies keep the GPU tensors' strides, so an offloaded VAE comes back channels-last."""
    dev = torch.device("cuda")
    vae = random_vae(get_preset("tiny"), dev, torch.bfloat16)
    FastPath(vae_layout="channels_last").resolve(dev).apply_vae(vae)
    res = Residency(dev, "offload")
    res.park(vae)
    convs = [m for m in vae.modules() if isinstance(m, torch.nn.Conv3d)]
    assert all(m.weight.device.type == "cpu" and m.weight.is_pinned() for m in convs)
    on_gpu = res.acquire(vae)
    assert all(m.weight.is_cuda and m.weight.is_contiguous(memory_format=torch.channels_last_3d)
               for m in on_gpu.modules() if isinstance(m, torch.nn.Conv3d))
    res.release(on_gpu)
