"""OUR adapter that stands in for the ``flash_attn`` package: it is NOT FlashAttention's own build.

The official Wan2.2 code (PyPI ``wan22``, ``wan/modules/attention.py``) imports ``flash_attn`` and calls
``flash_attn.flash_attn_varlen_func`` with packed variable-length q/k/v. No ``flash_attn`` wheel is
installed on the benchmark GPU machine, so :func:`install` puts a module object named ``flash_attn``
into ``sys.modules`` whose ``flash_attn_varlen_func`` unpacks the varlen batch, runs
``torch.nn.functional.scaled_dot_product_attention`` pinned to ONE backend, and packs the result again:

- ``"flash"``: SDPA's ``FLASH_ATTENTION`` backend (PyTorch's built-in FlashAttention-2 kernel, the
  algorithm of the published runs);
- ``"cudnn"``: SDPA's ``CUDNN_ATTENTION`` backend (cuDNN's fused attention);
- ``"math"``: SDPA's ``MATH`` backend (plain matmul + softmax; for CPU tests).

Pinning means SDPA may not fall back to another kernel: a call the pinned backend cannot run raises.

``install`` also puts ``None`` under ``flash_attn_interface`` (FlashAttention-3) in ``sys.modules``, so
``import flash_attn_interface`` raises ``ModuleNotFoundError`` and the official code takes its FA2 path
(``FLASH_ATTN_3_AVAILABLE = False``). One adapter module object exists per process; ``install`` with
another backend switches it in place, so code that imported it earlier follows.

Argument mapping (flash_attn 2.x ``flash_attn_varlen_func``):

- ``q``: ``[total_q, nheads, d]``, ``k``/``v``: ``[total_k, nheads_k, d]`` / ``[total_k, nheads_k, d_v]``,
  sequence ``i`` is rows ``cu_seqlens[i]:cu_seqlens[i+1]``; ``nheads`` must be a multiple of ``nheads_k``
  (grouped-query heads are repeated);
- ``softmax_scale`` → SDPA ``scale`` (None: ``1/sqrt(d)`` in both); ``dropout_p`` → SDPA ``dropout_p``;
- ``causal`` → SDPA ``is_causal`` (only for ``seqlen_q == seqlen_k``, where both libraries agree);
- ``window_size`` must be ``(-1, -1)`` (no sliding window), ``softcap`` 0, ``alibi_slopes`` None,
  ``return_attn_probs`` False, ``block_table`` None: anything else raises ``NotImplementedError``;
- ``deterministic`` is accepted and ignored (SDPA's forward is deterministic);
- ``max_seqlen_q``/``max_seqlen_k`` are checked against ``cu_seqlens`` (flash_attn trusts them).

When every sequence has the same q length and the same k length (the Wan2.2 TI2V case), the batch is one
reshape and one SDPA call; otherwise each sequence is one SDPA call.
"""

from __future__ import annotations

import importlib.machinery
import math
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

#: adapter backend name → SDPA backend attribute name
BACKENDS: dict[str, str] = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "math": "MATH"}
MODULE_NAME = "flash_attn"
FA3_MODULE_NAME = "flash_attn_interface"
#: the version string the adapter module reports (not a flash_attn release)
ADAPTER_VERSION = "0.0+wan_enhanced.sdpa_adapter"

_state: dict[str, str] = {"backend": "math"}


def describe(backend: str | None = None) -> str:
    """One line naming the adapter and its SDPA backend (for reports)."""
    name = backend or _state["backend"]
    return (f"wan_enhanced flash_attn adapter (NOT flash_attn): torch SDPA pinned to "
            f"{BACKENDS.get(name, name)} ({name!r})")


@contextmanager
def _pinned(backend: str) -> Iterator[None]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([getattr(SDPBackend, BACKENDS[backend])]):
        yield


def _lengths(cu_seqlens: torch.Tensor, total: int, what: str) -> list[int]:
    cu = [int(x) for x in cu_seqlens.detach().to("cpu").tolist()]
    if len(cu) < 2 or cu[0] != 0 or any(b < a for a, b in zip(cu, cu[1:], strict=False)):
        raise ValueError(f"{what} must start at 0 and not decrease, got {cu}")
    if cu[-1] != total:
        raise ValueError(f"{what} ends at {cu[-1]} but the packed tensor has {total} rows")
    return [b - a for a, b in zip(cu, cu[1:], strict=False)]


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float, scale: float | None,
          causal: bool, backend: str) -> torch.Tensor:
    """``[B, L, H, D]`` tensors → SDPA (``[B, H, L, D]`` inside) → ``[B, Lq, H, Dv]``."""
    with _pinned(backend):
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             dropout_p=dropout_p, is_causal=causal, scale=scale)
    return out.transpose(1, 2)


def flash_attn_varlen_func(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                           cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int,
                           dropout_p: float = 0.0, softmax_scale: float | None = None, causal: bool = False,
                           window_size: tuple[int, int] = (-1, -1), softcap: float = 0.0,
                           alibi_slopes: torch.Tensor | None = None, deterministic: bool = False,
                           return_attn_probs: bool = False, block_table: torch.Tensor | None = None,
                           **unsupported: Any) -> torch.Tensor:
    """flash_attn 2.x's packed variable-length attention, computed by torch SDPA (see module docstring).

    Returns ``[total_q, nheads, d_v]`` in ``q``'s dtype.
    """
    del deterministic  # SDPA's forward pass is deterministic; nothing to switch
    if unsupported:
        raise NotImplementedError(f"flash_attn adapter: unsupported arguments {sorted(unsupported)}")
    if tuple(window_size) != (-1, -1):
        raise NotImplementedError(f"flash_attn adapter: sliding window {tuple(window_size)} is not supported")
    if softcap or alibi_slopes is not None or return_attn_probs or block_table is not None:
        raise NotImplementedError("flash_attn adapter: softcap, alibi_slopes, return_attn_probs and "
                                  "block_table are not supported")
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(f"q, k, v must be [total, heads, dim], got {list(q.shape)}, {list(k.shape)}, "
                         f"{list(v.shape)}")
    heads, heads_k = q.size(1), k.size(1)
    if v.size(1) != heads_k or heads % heads_k:
        raise ValueError(f"q has {heads} heads, k {heads_k}, v {v.size(1)}: q's must be a multiple of k's")
    lens_q = _lengths(cu_seqlens_q, q.size(0), "cu_seqlens_q")
    lens_k = _lengths(cu_seqlens_k, k.size(0), "cu_seqlens_k")
    if len(lens_q) != len(lens_k):
        raise ValueError(f"cu_seqlens_q has {len(lens_q)} sequences, cu_seqlens_k {len(lens_k)}")
    if max(lens_q) > max_seqlen_q or max(lens_k) > max_seqlen_k:
        raise ValueError(f"max_seqlen_q/k ({max_seqlen_q}, {max_seqlen_k}) are below the longest sequence "
                         f"({max(lens_q)}, {max(lens_k)})")
    if causal and lens_q != lens_k:
        raise NotImplementedError("flash_attn adapter: causal attention needs seqlen_q == seqlen_k")
    if heads != heads_k:  # grouped-query attention: repeat each k/v head for its q heads
        k = k.repeat_interleave(heads // heads_k, dim=1)
        v = v.repeat_interleave(heads // heads_k, dim=1)
    backend = _state["backend"]
    batch = len(lens_q)
    if len(set(lens_q)) == 1 and len(set(lens_k)) == 1:  # one reshape, one SDPA call
        out = _sdpa(q.reshape(batch, lens_q[0], heads, q.size(2)), k.reshape(batch, lens_k[0], heads, k.size(2)),
                    v.reshape(batch, lens_k[0], heads, v.size(2)), dropout_p, softmax_scale, causal, backend)
        return out.reshape(q.size(0), heads, v.size(2))
    outs = []
    sq, sk = 0, 0
    for lq, lk in zip(lens_q, lens_k, strict=True):
        if lq == 0:
            sq, sk = sq + lq, sk + lk
            continue
        if lk == 0:  # no keys: flash_attn writes zeros
            outs.append(q.new_zeros(lq, heads, v.size(2)))
        else:
            outs.append(_sdpa(q[None, sq:sq + lq], k[None, sk:sk + lk], v[None, sk:sk + lk], dropout_p,
                              softmax_scale, causal, backend)[0])
        sq, sk = sq + lq, sk + lk
    return torch.cat(outs) if outs else q.new_zeros(0, heads, v.size(2))


def flash_attn_func(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
                    softmax_scale: float | None = None, causal: bool = False, **kwargs: Any) -> torch.Tensor:
    """flash_attn's padded-batch attention (``[B, L, H, D]``), via :func:`flash_attn_varlen_func`."""
    b, lq, lk = q.size(0), q.size(1), k.size(1)
    cu_q = torch.arange(0, (b + 1) * lq, lq, dtype=torch.int32, device=q.device)
    cu_k = torch.arange(0, (b + 1) * lk, lk, dtype=torch.int32, device=q.device)
    out = flash_attn_varlen_func(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), cu_q, cu_k, lq, lk,
                                 dropout_p=dropout_p, softmax_scale=softmax_scale, causal=causal, **kwargs)
    return out.unflatten(0, (b, lq))


def reference_varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                               cu_seqlens_k: torch.Tensor, softmax_scale: float | None = None) -> torch.Tensor:
    """Plain softmax attention per packed sequence, in fp32 (the tests' reference; no SDPA)."""
    out = []
    cq = cu_seqlens_q.tolist()
    ck = cu_seqlens_k.tolist()
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.size(-1))
    for i in range(len(cq) - 1):
        qi = q[cq[i]:cq[i + 1]].float().transpose(0, 1)  # [H, Lq, D]
        ki = k[ck[i]:ck[i + 1]].float().transpose(0, 1)
        vi = v[ck[i]:ck[i + 1]].float().transpose(0, 1)
        if ki.size(0) != qi.size(0):
            ki = ki.repeat_interleave(qi.size(0) // ki.size(0), dim=0)
            vi = vi.repeat_interleave(qi.size(0) // vi.size(0), dim=0)
        weights = torch.softmax(qi @ ki.transpose(1, 2) * scale, dim=-1)
        out.append((weights @ vi).transpose(0, 1))
    return torch.cat(out).to(q.dtype)


def _build_module() -> types.ModuleType:
    mod = types.ModuleType(MODULE_NAME, __doc__)
    mod.__spec__ = importlib.machinery.ModuleSpec(MODULE_NAME, None)  # find_spec() must not fail on it
    mod.__version__ = ADAPTER_VERSION
    mod.__wan_enhanced_adapter__ = True
    mod.flash_attn_varlen_func = flash_attn_varlen_func
    mod.flash_attn_func = flash_attn_func
    mod.describe = describe
    return mod


_MODULE = _build_module()


def adapter_module() -> types.ModuleType:
    """The process's one adapter module object (what ``install`` puts under ``flash_attn``)."""
    return _MODULE


def install(backend: str) -> types.ModuleType:
    """Put the adapter into ``sys.modules`` as ``flash_attn`` with SDPA pinned to ``backend``.

    ``backend`` is one of ``"flash"``, ``"cudnn"``, ``"math"``. Also blocks ``flash_attn_interface``
    (FA3) so the official code takes its FA2 path. A real ``flash_attn`` already imported is an error.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    present = sys.modules.get(MODULE_NAME)
    if present is not None and present is not _MODULE:
        raise RuntimeError("a real flash_attn module is already imported; the adapter would not be used")
    fa3 = sys.modules.get(FA3_MODULE_NAME)
    if fa3 is not None:
        raise RuntimeError("flash_attn_interface (FA3) is already imported; the official code would use it")
    _state["backend"] = backend
    sys.modules[MODULE_NAME] = _MODULE
    sys.modules[FA3_MODULE_NAME] = None  # type: ignore[assignment]  # `import` now raises ModuleNotFoundError
    return _MODULE


def installed_backend() -> str | None:
    """The backend of the installed adapter, or None when ``flash_attn`` is not our adapter."""
    return _state["backend"] if sys.modules.get(MODULE_NAME) is _MODULE else None
