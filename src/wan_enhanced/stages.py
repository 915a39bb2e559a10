"""The stage registry: every stage name the pipeline records and what bounds its time.

One place for the names that the pipeline writes, the report and the Markdown read, and the
projection scales. A stage's *bound* says what its time depends on, so a projection onto another
GPU knows what to scale it by:

- ``dit_compute``: DiT forwards on the GPU (GEMMs + attention; the per-architecture rates apply);
- ``vae_conv``: the Wan VAE's 3-D convolutions on the GPU (compute and memory traffic);
- ``text_gpu``: the UMT5 encoder on the GPU (a few GEMMs, small next to the DiT);
- ``host_load``: reading weights from disk and building models (disk, CPU, host→device link);
- ``host_text_cpu``: the UMT5 encoder on the CPU (``--t5_cpu``);
- ``host_compile``: compile and kernel build (Dynamo, inductor, FA4's CuTe DSL): host work paid once;
- ``host_mp4``: H.264 encoding and writing the file (CPU);
- ``host_free``: releasing a model for good (Python's cyclic garbage collection, the allocator's cache release);
- ``host_io``: writing other outputs (the denoised latents);
- ``communication``: collective exchanges between GPUs (NVLink / PCIe);
- ``transfer``: host↔device copies of offloaded weights (the GPU's link to the host);
- ``container``: a parent stage whose time is its children plus a remainder.

The registry knows stage names only; it measures nothing and formats nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DIT_COMPUTE = "dit_compute"
VAE_CONV = "vae_conv"
TEXT_GPU = "text_gpu"
HOST_LOAD = "host_load"
HOST_TEXT_CPU = "host_text_cpu"
HOST_COMPILE = "host_compile"
HOST_MP4 = "host_mp4"
HOST_FREE = "host_free"
HOST_IO = "host_io"
COMMUNICATION = "communication"
TRANSFER = "transfer"
CONTAINER = "container"

BOUNDS = (DIT_COMPUTE, VAE_CONV, TEXT_GPU, HOST_LOAD, HOST_TEXT_CPU, HOST_COMPILE, HOST_MP4, HOST_FREE, HOST_IO,
          COMMUNICATION, TRANSFER, CONTAINER)
HOST_BOUNDS = frozenset({HOST_LOAD, HOST_TEXT_CPU, HOST_COMPILE, HOST_MP4, HOST_FREE, HOST_IO})
GPU_BOUNDS = frozenset({DIT_COMPUTE, VAE_CONV, TEXT_GPU})


@dataclass(frozen=True)
class StageKind:
    """One stage of a run: its name (a template for ``Step_{i}``), its bound and its table comment."""

    name: str
    bound: str
    comment: str
    parent: str | None = None

    def is_host(self) -> bool:
        """True when the stage's time does not depend on the GPU's speed."""
        return self.bound in HOST_BOUNDS


TOTAL = StageKind("Total", CONTAINER, "End to end")
LOAD_TEXT_ENCODER = StageKind("Load_Text_Encoder", HOST_LOAD, "Model Load (T5)", "Total")
TEXT_ENCODING = StageKind("Text_Encoding", TEXT_GPU, "T5 encode", "Total")
TEXT_ENCODING_CPU = StageKind("Text_Encoding", HOST_TEXT_CPU, "T5 on CPU", "Total")
LOAD_VAE = StageKind("Load_VAE", HOST_LOAD, "Model Load (VAE)", "Total")
IMAGE_ENCODING = StageKind("Image_Encoding", VAE_CONV, "VAE encode (i2v)", "Total")
LOAD_DIT = StageKind("Load_DiT", HOST_LOAD, "Model Load (DiT)", "Total")
DENOISING = StageKind("Denoising", CONTAINER, "denoising loop", "Total")
STEP = StageKind("Step_{i}", DIT_COMPUTE, "Compute Heavy", "Denoising")
WARMUP = StageKind("Warmup", HOST_COMPILE, "untimed warm-up forward (--warmup): compile and kernel build",
                   "Denoising")
LOAD_COMPILE_CACHE = StageKind("Load_Compile_Cache", HOST_LOAD, "compile artifacts (wan-enhanced warmup)", "Total")
#: after Load_DiT when the fast path has work: FA4's activation and its kernel build/check, the fused q/k op, the
#: attention backend, the compiled blocks' set-up (and the wait for the compiler's background set-up); not weights
PREPARE_DIT = StageKind("Prepare_DiT", HOST_COMPILE, "attention kernels and compile set-up", "Total")
FREE_TEXT_ENCODER = StageKind("Free_Text_Encoder", HOST_FREE, "release the T5 (gc + cache)", "Total")
FREE_DIT = StageKind("Free_DiT", HOST_FREE, "release the DiT (gc + cache)", "Total")
SAVE_LATENTS = StageKind("Save_Latents", HOST_IO, "I/O (denoised latents)", "Total")
#: the name of the remainder row: a parent's time outside its children (report, text, Markdown, charts)
UNTRACKED = "(untracked)"
CFG_EXCHANGE = StageKind("CFG_Exchange", COMMUNICATION, "Communication (all-gather + wait for partner)")
VAE_DECODING = StageKind("VAE_Decoding", VAE_CONV, "VAE decode", "Total")
SAVE_VIDEO = StageKind("Save_Video", HOST_MP4, "I/O", "Total")
OFFLOAD = StageKind("Offload", TRANSFER, "host↔device weight copies")

#: the top-level stages of one generate run, in the order the pipeline runs them
PIPELINE_ORDER = (LOAD_TEXT_ENCODER, TEXT_ENCODING, FREE_TEXT_ENCODER, LOAD_VAE, IMAGE_ENCODING, LOAD_DIT, PREPARE_DIT,
                  DENOISING, FREE_DIT, SAVE_LATENTS, VAE_DECODING, SAVE_VIDEO)

_FIXED = {k.name: k for k in (TOTAL, LOAD_COMPILE_CACHE, LOAD_TEXT_ENCODER, TEXT_ENCODING, FREE_TEXT_ENCODER, LOAD_VAE, IMAGE_ENCODING,
                              LOAD_DIT, PREPARE_DIT, DENOISING, WARMUP, FREE_DIT, CFG_EXCHANGE, VAE_DECODING, SAVE_VIDEO,
                              SAVE_LATENTS, OFFLOAD)}
_STEP_RE = re.compile(r"^Step_(\d+)$")
_TRANSFER_WORDS = ("offload", "onload", "h2d", "d2h", "transfer", "to_cpu", "to_gpu", "to_device")


def step_name(i: int) -> str:
    """The name of denoising step ``i``: ``Step_{i}``."""
    return f"Step_{i}"


def step_index(name: str) -> int | None:
    """``i`` for ``Step_{i}``, else None."""
    m = _STEP_RE.match(name)
    return int(m.group(1)) if m else None


def is_step(name: str) -> bool:
    """True for a denoising step's stage name."""
    return step_index(name) is not None


def text_encoding(t5_cpu: bool) -> StageKind:
    """The text-encoding stage: host work with ``--t5_cpu``, GPU work otherwise."""
    return TEXT_ENCODING_CPU if t5_cpu else TEXT_ENCODING


def _offload_note(weights: str) -> str:
    return f"; offload: the {weights} weights loaded for this stage count as dynamic memory"


def denoising_comment(steps: int, cfg: bool, offload: bool) -> str:
    """The ``Denoising`` stage's comment in the report: its step count, CFG or not, and (offload) what its
    dynamic memory holds."""
    return f"{steps} steps, {'CFG' if cfg else 'no CFG'}" + (_offload_note("DiT") if offload else "")


def vae_decoding_comment(vae_dtype: str, offload: bool) -> str:
    """The ``VAE_Decoding`` stage's comment in the report: the VAE's dtype and (offload) what its dynamic
    memory holds."""
    return f"{VAE_DECODING.comment} ({vae_dtype})" + (_offload_note("VAE") if offload else "")


def kind_of(name: str, comment: str | None = None) -> StageKind | None:
    """The registry entry of a recorded stage name (None for a name the registry does not know).

    ``Text_Encoding`` is host work when its comment says the T5 ran on the CPU (as the pipeline writes it).
    """
    if is_step(name):
        return STEP
    if name == TEXT_ENCODING.name and comment and "cpu" in comment.lower():
        return TEXT_ENCODING_CPU
    if name in _FIXED:
        return _FIXED[name]
    if any(w in name.lower() for w in _TRANSFER_WORDS):
        return OFFLOAD
    return None


def bound_of(name: str, comment: str | None = None) -> str | None:
    """What bounds a recorded stage's time (one of ``BOUNDS``), or None for an unknown name."""
    k = kind_of(name, comment)
    return k.bound if k else None
