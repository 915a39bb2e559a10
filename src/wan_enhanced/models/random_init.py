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
    """The preset's UMT5 encoder with random weights.

    Built on the CPU (``--t5_cpu``, ``--device cpu``, the tiny preset in tests), the model is made on the
    meta device and its weights drawn by ``fill_random_`` in parallel chunks: transformers' own
    initialisation draws the 5.7 B weights one after another from the single CPU generator and took 350 s
    on a 16-core Xeon. So random weights built on the CPU differ from random weights built on a GPU
    (other values, same architecture and scale): compare runs of one kind only.
    """
    config = UMT5Config(**preset.t5, is_encoder_decoder=False)
    if torch.device(device).type == "cpu":
        with torch.device("meta"), default_dtype(dtype):
            model = UMT5EncoderModel(config)
        model = model.to_empty(device="cpu")
        model.encoder.embed_tokens = model.shared  # to_empty unties the shared embedding; tie it again
        fill_random_(model, seed)
        return model.eval().requires_grad_(False)
    with _seeded(seed), torch.device(device), default_dtype(dtype):
        torch.manual_seed(seed)
        model = UMT5EncoderModel(config)
    return model.eval().requires_grad_(False)


def fill_random_(model: torch.nn.Module, seed: int, threads: int | None = None, chunk: int = 1 << 24) -> None:
    """Give every parameter of ``model`` (CPU) random values, drawn in parallel, deterministic in ``seed``.

    1-D parameters (norm scales) are set to 1; embeddings (``nn.Embedding``) are N(0, 1); other
    matrices N(0, 1/fan_in), where fan_in is the last dimension, so activations keep their scale through
    the layers. Each chunk of a tensor has its own generator seeded from ``seed``, the parameter's index
    and the chunk's index, so the values do not depend on the number of threads.
    """
    import math
    from concurrent.futures import ThreadPoolExecutor

    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    jobs = []
    for index, param in enumerate(model.parameters()):  # parameters() yields a tied weight once
        flat = param.data.view(-1)
        if param.dim() == 1:
            flat.fill_(1.0)
            continue
        std = 1.0 if id(param) in embeddings else param.shape[-1] ** -0.5
        for c in range(math.ceil(flat.numel() / chunk)):
            jobs.append((flat[c * chunk:(c + 1) * chunk], std, (seed * 1_000_003 + index) * 1_000_003 + c))

    def draw(job: tuple[torch.Tensor, float, int]) -> None:
        part, std, job_seed = job
        part.normal_(0.0, std, generator=torch.Generator().manual_seed(job_seed))

    with ThreadPoolExecutor(threads or torch.get_num_threads()) as pool:  # the ops release the GIL
        list(pool.map(draw, jobs))
