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
- ``attention_backend``: diffusers' attention dispatcher. ``flash4`` runs FlashAttention-4 (package
  ``flash-attn-4``) through torch's flash-attention registry; ``auto`` picks it on a GPU of compute
  capability 9.x/10.x when it is installed (H100 and H200 measured: 0.915 → 0.833 s per compiled forward,
  the same error against fp32; not under Ulysses, where it was not measured), and
  otherwise SDPA's own choice in eager mode, cuDNN pinned when the blocks are compiled. If FA4 is
  installed but fails to load, ``auto`` falls back and says so in ``attention_note``.
- ``vae_layout``: memory layout of the VAE's convolution weights and input (``channels_last``: cuDNN's
  NDHWC kernels; the same function, other rounding). ``auto`` picks per device (see ``VAE_LAYOUT_AUTO``):
  channels-last on CUDA, where a bf16 decode of 121 frames at 720p took 6.26 → 5.89 s (H100) and
  5.85 → 5.48 s (H200), 10.54 → 9.64 GiB above the weights, PSNR vs fp32 unchanged (52.1 dB).
- ``vae_compile`` (off by default): ``torch.compile`` of each residual block of the VAE decoder (fuses its RMS
  norms, SiLU and causal padding around cuDNN's convolutions). Measured on H200 (``h200/s7/a``, 121 frames at
  720p): the compiled decode itself is about 1 s faster (6.0 → ~5.0 s), but every process pays Dynamo's tracing
  of its graphs again — 75.5 s of compiling with empty caches, 12.3 s with warm inductor caches, 11.4 s with loaded
  artifacts — and the job's peak reserved memory rose 14.38 → 17.76 GiB (``h200/s7/b``). It never pays within one
  video, so ``auto`` is ``none``; ``blocks`` is there for measuring it.
- ``fused_qk_rope``: the self-attention's q/k RMSNorm + RoPE as one Triton pass (``qk_norm_rope``; alone on
  H200: 18.7 → 8.8 ms per forward; the whole compiled forward with FA4: 0.8295 → 0.8209 s, error against fp32
  unchanged, ``h200/s8/f2``). ``auto`` is ``on`` on CUDA where Triton is installed; not under Ulysses.
- ``cudnn_benchmark`` (off by default): cuDNN autotuning of the VAE's conv3d. Measured on H100: no gain
  in the steady state (6.26 s both ways); a run decodes once, so the tuning could only add time.

Why this module is long (~380 lines): the levers' choice (``resolve``), their application to the DiT and the VAE
(``apply_dit`` itemizes its own set-up) and their one-line validation read together — one rule per lever, and a
lever's measured reason sits next to its default.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from .errors import ConfigError

log = logging.getLogger("wan_enhanced")
AUTO_FA4_NOTE = "auto: FlashAttention-4 is installed"

ATTENTION_BACKENDS = {
    "auto": None,  # diffusers default: torch SDPA, which picks cuDNN/flash itself
    "native": "native",
    "cudnn": "_native_cudnn",
    "flash": "_native_flash",
    "efficient": "_native_efficient",
    "flash3": "_flash_3",  # FlashAttention-3, only when the user has flash_attn_interface installed
    # FlashAttention-4 (package flash-attn-4, CuTe DSL kernels for SM90/SM100): torch's own
    # ``activate_flash_attention_impl("FA4")`` routes SDPA's flash backend to it; diffusers then pins that backend.
    "flash4": "_native_flash",
}
COMPILE_MODES = ("auto", "none", "blocks")
VAE_COMPILE_MODES = ("auto", "none", "blocks")
FUSED_QK_ROPE_MODES = ("auto", "off", "on")
VAE_LAYOUTS = ("auto", "contiguous", "channels_last")
# What ``--vae_layout auto`` means per device type. CUDA: from the H100/H200 measurement of
# benchmark/perf_fastpath.py --sections vae (benchmark/results/h100/s3, h200/s3). The CPU keeps the
# contiguous layout: not measured there, and CPU decoding is for the tiny preset only.
VAE_LAYOUT_AUTO = {"cuda": "channels_last", "cpu": "contiguous"}


@dataclass
class FastPath:
    """Which levers are on. ``resolve`` turns 'auto' into concrete choices for a device."""

    scalar_timestep: bool = True
    compile: str = "auto"
    attention_backend: str = "auto"
    cudnn_benchmark: bool = False
    vae_layout: str = "auto"
    attention_note: str = ""  # how 'auto' chose the attention backend, or why it fell back
    vae_compile: str = "auto"
    fused_qk_rope: str = "auto"
    fused_qk_rope_note: str = ""  # with 'on': whether the Triton op can run here or diffusers' arithmetic runs
    aot_cache_note: str = ""  # compiled blocks: what was marked cacheable for AOT autograd's cache, and its key
    # what apply_dit spent, part by part (wall seconds; the parts it ran): the itemized Prepare_DiT
    dit_setup_s: dict[str, float] = field(default_factory=dict)
    # the run's CompilePrefetch (compile_cache), joined before anything compiles; not a setting: not in to_dict
    prefetch: Any = field(default=None, repr=False, compare=False)

    def resolve(self, device: torch.device, vae_dtype: torch.dtype = torch.bfloat16,
                context_parallel: bool = False) -> FastPath:
        """Concrete settings for ``device`` (compile only on CUDA) and a VAE run in ``vae_dtype``.

        ``attention_backend='auto'`` becomes ``flash4`` on a CUDA GPU of compute capability 9.x/10.x with
        FlashAttention-4 installed, except under context parallelism (Ulysses), where FA4 was not measured.
        ``compile='auto'`` is the regional compile on CUDA, except under context parallelism: its hooks run
        eagerly (the one place this rule lives; ``validate_fastpath`` rejects an explicit ``blocks``).
        """
        compile_mode = self.compile
        if compile_mode == "auto":
            compile_mode = "blocks" if device.type == "cuda" and not context_parallel else "none"
        backend = self.attention_backend
        note = self.attention_note
        if backend == "auto" and device.type == "cuda" and not context_parallel and fa4_unavailable(device) is None:
            # Measured on H100 and H200 (benchmark/results/*/s4): FA4 0.833 s per compiled forward vs
            # 0.915 s with cuDNN, 1.033 vs 1.151 s eager; the same error against fp32 as cuDNN.
            backend, note = "flash4", AUTO_FA4_NOTE
        elif backend == "auto" and compile_mode == "blocks" and device.type == "cuda":
            # Measured on H100: inside compiled blocks SDPA picks the flash kernel (1.20 s / forward);
            # pinning cuDNN gives 0.91 s. In eager mode SDPA's own choice was the faster one
            # (1.097 s vs 1.135 s with cuDNN forced), so eager keeps it.
            backend = "cudnn"
        layout = self.vae_layout
        if layout == "auto":  # measured for the bf16 VAE only; an fp32 VAE keeps the contiguous layout
            layout = VAE_LAYOUT_AUTO.get(device.type, "contiguous") if vae_dtype == torch.bfloat16 else "contiguous"
        # measured on H200 (h200/s7): a warm process still spends 12 s compiling to save 1 s of decoding
        vae_compile = "none" if self.vae_compile == "auto" else self.vae_compile
        # measured in the whole compiled forward on an H200 (h200/s8/f2): 0.8295 -> 0.8209 s, the same error
        # against fp32 (rel L2 1.2653 % both); on CUDA with Triton, not under Ulysses (not measured there)
        fused = self.fused_qk_rope
        if fused == "auto":
            fused = "on" if device.type == "cuda" and not context_parallel and triton_installed() else "off"
        elif context_parallel:
            fused = "off"
        return FastPath(self.scalar_timestep, compile_mode, backend, self.cudnn_benchmark and device.type == "cuda",
                        layout, note, vae_compile, fused, self.fused_qk_rope_note)

    def to_dict(self) -> dict[str, Any]:
        """Settings as recorded in reports."""
        out = asdict(replace(self, prefetch=None))
        del out["prefetch"]
        return out

    def has_dit_setup(self) -> bool:
        """True when :meth:`apply_dit` has anything to do (the pipeline records it as ``Prepare_DiT`` then)."""
        return (self.prefetch is not None or self.fused_qk_rope == "on" or self.compile == "blocks"
                or ATTENTION_BACKENDS[self.attention_backend] is not None)  # flash4 (FA4's activation) among them

    def apply_dit(self, dit: Any, device: torch.device | None = None) -> None:
        """Set the attention backend and compile the repeated blocks of ``dit`` (in place).

        ``flash4`` activates FlashAttention-4 for the whole process (SDPA's flash backend becomes FA4) and
        runs one small attention call on ``device`` (the run's GPU) to catch a kernel that cannot build
        or run here. When ``auto`` chose FA4 and that fails, FA4 is deactivated and this object is updated
        in place to the backend actually used (cuDNN when compiled, SDPA's choice otherwise), with the
        reason in ``attention_note``, so the report shows what ran. An explicit ``flash4`` raises instead.
        The seconds of each part it ran are in ``dit_setup_s`` (the report's ``run.fast_path.dit_setup_s``).
        """
        import time

        parts = self.dit_setup_s
        parts.clear()
        t = time.perf_counter()

        def done(part: str) -> None:
            nonlocal t
            now = time.perf_counter()
            parts[part] = round(now - t, 4)
            t = now

        if self.prefetch is not None:  # the compiler's set-up in the background: done before FA4, the op, the compile
            self.prefetch.join()
            done("wait_for_prefetch")
        if self.attention_backend == "flash4":
            try:
                activate_fa4()
                done("fa4_activation")
                # on the run's GPU: an offloaded DiT's weights sit on the host at this point
                fa4_smoke_test(device if device is not None and device.type == "cuda"
                               else torch.device("cuda", torch.cuda.current_device()))
                done("fa4_check")
            except Exception as e:  # noqa: BLE001 - a beta kernel package may not load; auto must still run
                if self.attention_note != AUTO_FA4_NOTE:
                    raise
                deactivate_fa4()
                self.attention_backend = "cudnn" if self.compile == "blocks" else "auto"
                self.attention_note = (f"auto: FlashAttention-4 is installed but failed to activate "
                                       f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                                       f"{self.attention_backend} used")
                log.warning("%s", self.attention_note)
                done("fa4_failed")
        if self.fused_qk_rope == "on":
            from .qk_norm_rope import install, triton_rms_rope

            install(dit)
            on_gpu = device is not None and device.type == "cuda"
            self.fused_qk_rope_note = ("the Triton op runs in the self-attention" if on_gpu and triton_rms_rope()
                                       else "the Triton op cannot run here (needs a CUDA GPU and Triton): the fused "
                                            "processor computes diffusers' own arithmetic")
            done("fused_qk_rope")
        backend = ATTENTION_BACKENDS[self.attention_backend]
        if backend is not None:
            dit.set_attention_backend(backend)
            done("attention_backend")
        if self.compile == "blocks":
            from .compile_cache import allow_sdpa_kernel_graphs_in_cache

            marked = allow_sdpa_kernel_graphs_in_cache()  # after FA4's activation: it is part of the key
            self.aot_cache_note = (f"{', '.join(marked)} marked cacheable ({next(iter(marked.values()))}): the "
                                   "blocks' sdpa_kernel no longer bypasses AOT autograd's cache"
                                   if marked else "this torch has none of the sdpa_kernel helpers to mark")
            dit.compile_repeated_blocks(fullgraph=True)
            done("compile_wrappers")

    def apply_vae(self, vae: Any) -> None:
        """Put the conv weights of ``vae`` in the chosen layout and compile its decoder blocks (in place)."""
        if self.vae_compile == "blocks":
            if self.prefetch is not None:
                self.prefetch.join()
            compile_vae_blocks(vae)
        if self.vae_layout != "channels_last":
            return
        for m in vae.modules():
            if isinstance(m, torch.nn.Conv3d):
                m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last_3d)
            elif isinstance(m, torch.nn.Conv2d):
                m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)

    def vae_input(self, x: torch.Tensor) -> torch.Tensor:
        """A 5-D VAE input in the chosen layout."""
        if self.vae_layout == "channels_last" and x.dim() == 5:
            return x.contiguous(memory_format=torch.channels_last_3d)
        return x

    def apply_global(self) -> None:
        """Process-wide switches (cuDNN autotuning for the VAE's 3-D convolutions)."""
        if self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True


def compile_vae_blocks(vae: Any) -> int:
    """``torch.compile`` each residual block of the VAE decoder in place; returns the number of blocks.

    Shapes differ per block and per latent frame (the first chunk, the empty causal cache), so Dynamo's
    recompile limits are raised for this process. ``dynamic=False``: automatic dynamic shapes failed to lower
    on the CPU (torch 2.13).
    """
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanResidualBlock

    cfg = torch._dynamo.config
    for key, at_least in (("recompile_limit", 64), ("accumulated_recompile_limit", 512)):
        if hasattr(cfg, key):
            setattr(cfg, key, max(getattr(cfg, key), at_least))
    blocks = [m for m in vae.decoder.modules() if isinstance(m, WanResidualBlock)]
    for b in blocks:
        b.compile(dynamic=False)
    return len(blocks)


def triton_installed() -> bool:
    """Whether Triton can be found (the fused q/k RMSNorm + RoPE pass needs it; not imported here)."""
    import importlib.util

    try:
        return importlib.util.find_spec("triton") is not None
    except Exception:  # noqa: BLE001 - a broken install counts as missing
        return False


def fa4_unavailable(device: torch.device | None = None) -> str | None:
    """Why ``--attention_backend flash4`` cannot run here, or None when it can.

    Checks torch's flash-attention registry and that ``flash_attn.cute`` can be found (this imports the
    ``flash_attn`` package itself, not FA4's kernels); with a ``device``, also that it is a CUDA GPU of
    compute capability 9.x / 10.x (H100/H200 measured; B200 untested).
    """
    import importlib.util

    import torch.nn.attention as attn

    if not hasattr(attn, "activate_flash_attention_impl"):
        return f"torch {torch.__version__} has no torch.nn.attention.activate_flash_attention_impl (needs torch >= 2.10)"
    try:
        found = importlib.util.find_spec("flash_attn.cute") is not None
    except Exception:  # noqa: BLE001 - a broken flash_attn install counts as not installed
        found = False
    if not found:
        return "FlashAttention-4 (pip install 'flash-attn-4[cu13]', module flash_attn.cute) is not installed"
    if device is not None and device.type != "cuda":
        return f"FlashAttention-4 needs a CUDA GPU; this run is on {device.type}"
    if device is not None:
        if not torch.cuda.is_available():
            return "CUDA is not available"
        major, minor = torch.cuda.get_device_capability(device)
        if major not in (9, 10):
            return f"FlashAttention-4 needs compute capability 9.x or 10.x; this GPU is {major}.{minor}"
    return None


_FA4_VIA_ADAPTER = False  # FA4 is active in this process through wan_enhanced.attention_fa4


def activate_fa4() -> None:
    """Route torch SDPA's flash backend to FlashAttention-4 for this process (idempotent)."""
    import functools

    import torch.nn.attention as attn

    global _FA4_VIA_ADAPTER
    if _FA4_VIA_ADAPTER and attn.current_flash_attention_impl() == "FA4":
        return
    # FA4 compiles its kernels at first use; we switch on its own on-disk kernel cache (opt-in there),
    # unless the user set the variable. Child processes inherit it. Its saving was not measured.
    os.environ.setdefault("FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED", "1")
    from torch.nn.attention import _fa4  # torch's FA4 dispatcher glue

    # Point torch's FA4 glue at our adapter (attention_fa4), which accepts both the older and the newer
    # return convention of flash_attn.cute's forward.
    attn.register_flash_attention_impl(
        "FA4", register_fn=functools.partial(_fa4.register_flash_attention_fa4,
                                             module_path="wan_enhanced.attention_fa4"))
    attn.activate_flash_attention_impl("FA4")  # replaces any earlier activation (e.g. torch's default module)
    _FA4_VIA_ADAPTER = True
    from .compile_cache import refresh_sdpa_kernel_marks

    refresh_sdpa_kernel_marks()  # the flash implementation is part of their cache key


def deactivate_fa4() -> None:
    """Give SDPA's flash backend back to torch's own kernel (no-op where torch cannot)."""
    import torch.nn.attention as attn

    global _FA4_VIA_ADAPTER
    _FA4_VIA_ADAPTER = False
    restore = getattr(attn, "restore_flash_attention_impl", None)
    if restore is not None:
        restore()
    from .compile_cache import refresh_sdpa_kernel_marks

    refresh_sdpa_kernel_marks()


def fa4_smoke_test(device: torch.device) -> None:
    """One small bf16 attention through SDPA's flash backend on ``device`` (builds FA4's kernel)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 2, 128, 128, device=device, dtype=torch.bfloat16)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        out = F.scaled_dot_product_attention(q, q, q)
    if not torch.isfinite(out).all():
        raise RuntimeError("FlashAttention-4 returned non-finite values on a test input")


def validate_fastpath(compile_mode: str, attention_backend: str, ulysses_size: int = 1,
                      vae_layout: str = "auto", vae_compile: str = "auto", fused_qk_rope: str = "auto") -> None:
    """One-line errors for bad --compile / --attention_backend / --vae_layout / --vae_compile / --fused_qk_rope.

    Raised before any weights load.

    Whether ``flash4`` can run depends on the device too; ``config.validate`` checks it once the device is known.
    """
    if fused_qk_rope not in FUSED_QK_ROPE_MODES:
        raise ConfigError(f"--fused_qk_rope: {fused_qk_rope!r} is not allowed; allowed: "
                          f"{', '.join(FUSED_QK_ROPE_MODES)}")
    if fused_qk_rope == "on" and ulysses_size > 1:
        raise ConfigError("--fused_qk_rope on with --ulysses_size > 1 is not supported (not measured under "
                          "Ulysses); allowed with Ulysses: auto, off")
    if vae_compile not in VAE_COMPILE_MODES:
        raise ConfigError(f"--vae_compile: {vae_compile!r} is not allowed; allowed: {', '.join(VAE_COMPILE_MODES)}")
    if vae_layout not in VAE_LAYOUTS:
        raise ConfigError(f"--vae_layout: {vae_layout!r} is not allowed; allowed: {', '.join(VAE_LAYOUTS)}")
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
