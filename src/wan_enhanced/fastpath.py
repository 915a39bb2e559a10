"""Lossless speed levers for the DiT and VAE on CUDA (Hopper first), each switchable for ablation.

- ``scalar_timestep``: in text→video every token has the same timestep, so the model gets it as one
  value per sample instead of one per token. diffusers then embeds it once and broadcasts the
  modulation, instead of running the fp32 time MLP and six (tokens × dim) modulation tensors per
  block — the same arithmetic per token (bit-identical output), measured on H100 at 720p:
  1.220 → 1.097 s per forward and 5.1 → 2.1 GiB of activations.
  Image→video keeps the per-token timestep (frame 0 has t = 0).
- ``compile``: diffusers' ``compile_repeated_blocks`` (regional torch.compile of the 30 identical
  transformer blocks): fuses norms, modulation and casts. The first call pays the compile (reported
  in ``Step_0``); inductor's on-disk cache makes later processes faster.
- ``attention_backend``: diffusers' attention dispatcher (``auto``: SDPA's own choice in eager mode,
  cuDNN pinned when the blocks are compiled).
- ``cudnn_benchmark`` (off by default): cuDNN autotuning of the VAE's conv3d. Measured on H100: no gain
  in the steady state (6.26 s both ways); a run decodes once, so the tuning could only add time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from .errors import ConfigError

ATTENTION_BACKENDS = {
    "auto": None,  # diffusers default: torch SDPA, which picks cuDNN/flash itself
    "native": "native",
    "cudnn": "_native_cudnn",
    "flash": "_native_flash",
    "efficient": "_native_efficient",
    "flash3": "_flash_3",  # FlashAttention-3, only when the user has flash_attn_interface installed
}
COMPILE_MODES = ("auto", "none", "blocks")


@dataclass
class FastPath:
    """Which levers are on. ``resolve`` turns 'auto' into concrete choices for a device."""

    scalar_timestep: bool = True
    compile: str = "auto"
    attention_backend: str = "auto"
    cudnn_benchmark: bool = False

    def resolve(self, device: torch.device) -> FastPath:
        """Concrete settings for ``device`` (compile only on CUDA)."""
        compile_mode = self.compile
        if compile_mode == "auto":
            compile_mode = "blocks" if device.type == "cuda" else "none"
        backend = self.attention_backend
        if backend == "auto" and compile_mode == "blocks" and device.type == "cuda":
            # Measured on H100: inside compiled blocks SDPA picks the flash kernel (1.20 s / forward);
            # pinning cuDNN gives 0.91 s. In eager mode SDPA's own choice was the faster one
            # (1.097 s vs 1.135 s with cuDNN forced), so eager keeps it.
            backend = "cudnn"
        return FastPath(self.scalar_timestep, compile_mode, backend, self.cudnn_benchmark and device.type == "cuda")

    def to_dict(self) -> dict[str, Any]:
        """Settings as recorded in reports."""
        return asdict(self)

    def apply_dit(self, dit: Any) -> None:
        """Set the attention backend and compile the repeated blocks of ``dit`` (in place)."""
        backend = ATTENTION_BACKENDS[self.attention_backend]
        if backend is not None:
            dit.set_attention_backend(backend)
        if self.compile == "blocks":
            dit.compile_repeated_blocks(fullgraph=True)

    def apply_global(self) -> None:
        """Process-wide switches (cuDNN autotuning for the VAE's 3-D convolutions)."""
        if self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True


def validate_fastpath(compile_mode: str, attention_backend: str, ulysses_size: int = 1) -> None:
    """One-line errors for bad --compile / --attention_backend values (before any weights load)."""
    if compile_mode == "blocks" and ulysses_size > 1:
        raise ConfigError("--compile blocks with --ulysses_size > 1 is not supported (the context-parallel hooks "
                          "run eagerly); allowed with Ulysses: auto, none")
    if compile_mode not in COMPILE_MODES:
        raise ConfigError(f"--compile: {compile_mode!r} is not allowed; allowed: {', '.join(COMPILE_MODES)}")
    if attention_backend not in ATTENTION_BACKENDS:
        raise ConfigError(
            f"--attention_backend: {attention_backend!r} is not allowed; allowed: {', '.join(ATTENTION_BACKENDS)}")
    if attention_backend == "flash3":
        try:
            import flash_attn_interface  # noqa: F401
        except ImportError:
            raise ConfigError("--attention_backend flash3 needs FlashAttention-3 (flash_attn_interface), "
                              "which is not installed; allowed here: auto, native, cudnn, flash, efficient") from None
