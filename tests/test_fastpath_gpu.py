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


def _fa4_skip() -> str | None:
    from wan_enhanced.fastpath import fa4_unavailable

    return "needs CUDA" if not torch.cuda.is_available() else fa4_unavailable(torch.device("cuda"))


_FA4_SKIP = _fa4_skip()


@pytest.fixture
def fa4_restored():
    """Give SDPA's flash backend back to torch's kernel after the test."""
    yield
    from wan_enhanced.fastpath import deactivate_fa4

    deactivate_fa4()


@pytest.mark.skipif(_FA4_SKIP is not None, reason=str(_FA4_SKIP))
def test_flash4_through_sdpa_matches_cudnn_and_auto_picks_it(fa4_restored):
    """FA4 behind SDPA's flash backend gives cuDNN's result to bf16 rounding, and auto chooses it here."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from wan_enhanced.fastpath import activate_fa4

    g = torch.Generator("cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 2048, 4, 128, device="cuda", dtype=torch.bfloat16, generator=g).transpose(1, 2)
               for _ in range(3))
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        ref = F.scaled_dot_product_attention(q, k, v).float()
    activate_fa4()
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        out = F.scaled_dot_product_attention(q, k, v).float()
    assert torch.nn.attention.current_flash_attention_impl() == "FA4"
    assert float((out - ref).norm() / ref.norm()) < 1e-2
    assert float((out - ref).abs().max()) < 3e-2
    fp = FastPath().resolve(torch.device("cuda"))
    assert (fp.attention_backend, fp.attention_note) == ("flash4", "auto: FlashAttention-4 is installed")
