"""The Wan self-attention's q/k RMSNorm + RoPE as one pass (issue 17, lever 4; ``--fused_qk_rope``).

Between its q/k projections and the attention kernel, diffusers' ``WanAttnProcessor`` runs ``torch.nn.RMSNorm``
over the whole projected row (all heads; fp32 math, one rounding to bf16), splits the row into heads, and rotates
interleaved pairs (``x1 * cos - x2 * sin``, ``x1 * sin + x2 * cos`` in fp32, rounded to bf16). Inside the compiled
blocks inductor makes this a reduction kernel at about 1 TB/s. ``rms_rope`` does the same arithmetic, with the same
rounding points (one rounding to bf16 after the norm, one after the rotation), in one Triton program per token row — as a ``torch.library.triton_op``, so torch.compile keeps it inside
the compiled blocks. Measured alone on an H200 (``benchmark/fused_qk_rope.py``, ``h200/s7/lever4``): 0.312 →
0.147 ms per call at 27,280 tokens, 18.7 → 8.8 ms per forward. On the GPU Triton may contract the rotation's
products into FMAs, so values can differ from the eager reference by one bf16 step (measured: 99.997 % identical,
rel L2 1.8e-5); in Triton's CPU interpreter and on the CPU path the values are the reference's exactly.

``FusedQKRopeProcessor`` is diffusers' processor with those two lines replaced, for self-attention only (the
cross-attention has no rotary embedding and keeps diffusers' processor). Where the Triton op cannot run (no CUDA
tensor, no Triton) it computes ``reference``, which is diffusers' own code, so the CPU output is diffusers'
bit for bit (``tests/test_qk_norm_rope.py``). In the whole compiled forward with FA4 (``h200/s8/f2``): 0.8295 →
0.8209 s, the error against an fp32 forward unchanged (rel L2 1.2653 %); ``--fused_qk_rope auto`` turns it on with a
GPU and Triton. The float ``eps`` reaches the kernel as fp64 from a compiled graph: it is cast to fp32 there.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch


def reference(x: torch.Tensor, norm: Any, heads: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """diffusers' code path: ``norm`` over the row, split into ``heads``, RoPE on interleaved pairs → (B, S, H, D)."""
    y = norm(x).unflatten(2, (heads, -1))
    x1, x2 = y.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(y)
    out[..., 0::2] = x1 * c - x2 * s
    out[..., 1::2] = x1 * s + x2 * c
    return out.type_as(y)


try:  # Triton comes with torch's CUDA builds; the CPU build has none (the reference then runs)
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 - a missing or broken Triton: the reference runs
    triton = None

if triton is not None:  # Triton resolves a kernel's helpers among the module's globals: defined at top level

    @triton.jit
    def _round_bf16(x):  # fp32 → nearest bf16, ties to even, kept in fp32 (Triton's CPU interpreter truncates)
        u = x.to(tl.uint32, bitcast=True)
        u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
        return u.to(tl.float32, bitcast=True)

    @triton.jit
    def _rms_rope_kernel(x_ptr, w_ptr, cos_ptr, sin_ptr, y_ptr, seq, eps, N: tl.constexpr, D: tl.constexpr,
                         HALF: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)  # one token of one sample (64-bit offsets: no overflow past 2**31)
        pos = row % seq
        j = tl.arange(0, HALF)  # pair index over the whole row, padded to a power of two
        live = j < N // 2
        even = 2 * j
        xe = tl.load(x_ptr + row * N + even, mask=live, other=0.0).to(tl.float32)
        xo = tl.load(x_ptr + row * N + even + 1, mask=live, other=0.0).to(tl.float32)
        # eps arrives as fp64 from a compiled graph (inductor types a float argument so): fp32 math, as torch
        rstd = tl.rsqrt((tl.sum(xe * xe, axis=0) + tl.sum(xo * xo, axis=0)) / N + tl.full([], eps, tl.float32))
        ye = _round_bf16(xe * rstd * tl.load(w_ptr + even, mask=live, other=0.0).to(tl.float32))
        yo = _round_bf16(xo * rstd * tl.load(w_ptr + even + 1, mask=live, other=0.0).to(tl.float32))
        d = even % D
        c = tl.load(cos_ptr + pos * D + d, mask=live, other=0.0)
        s = tl.load(sin_ptr + pos * D + d + 1, mask=live, other=0.0)
        tl.store(y_ptr + row * N + even, _round_bf16(ye * c - yo * s).to(tl.bfloat16), mask=live)
        tl.store(y_ptr + row * N + even + 1, _round_bf16(ye * s + yo * c).to(tl.bfloat16), mask=live)


@functools.cache
def triton_rms_rope() -> Any:
    """The ``wan_enhanced::rms_rope`` op, registered on first use; ``None`` without Triton."""
    if triton is None:
        return None

    @torch.library.triton_op("wan_enhanced::rms_rope", mutates_args=())
    def rms_rope_op(x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float,
                    head_dim: int) -> torch.Tensor:
        b, seq, n = x.shape
        y = torch.empty_like(x)
        torch.library.wrap_triton(_rms_rope_kernel)[(b * seq,)](
            x, weight, cos, sin, y, seq, eps, N=n, D=head_dim, HALF=triton.next_power_of_2(n // 2), num_warps=8)
        return y

    return rms_rope_op


def usable(x: torch.Tensor, norm: Any, heads: int, cos: torch.Tensor, op: Any) -> bool:
    """Whether ``op`` (the Triton op, or ``None``) computes what ``reference`` does for these inputs.

    The kernel reads ``cos`` / ``sin`` as (1, S, 1, D) rows of the sequence ``x`` has. Only tensor properties are
    read here, so torch.compile traces the choice without a graph break.
    """
    return (op is not None and x.is_cuda and x.dtype == torch.bfloat16 and x.dim() == 3 and x.is_contiguous()
            and norm.weight is not None and cos.dtype == torch.float32 and x.shape[-1] % heads == 0
            and tuple(cos.shape) == (1, x.shape[1], 1, x.shape[-1] // heads))


def rms_rope(x: torch.Tensor, norm: Any, heads: int, cos: torch.Tensor, sin: torch.Tensor,
             op: Any = None) -> torch.Tensor:
    """``reference(x, norm, heads, cos, sin)``, in one pass through ``op`` where it can run it.

    ``op=None`` takes ``triton_rms_rope()``; under ``TRITON_INTERPRET=1`` (Triton's CPU interpreter, for tests)
    CPU tensors go to it too.
    """
    if op is None:
        op = triton_rms_rope()
        if op is not None and not x.is_cuda and os.environ.get("TRITON_INTERPRET") == "1":
            return _call(op, x, norm, heads, cos, sin)
    if not usable(x, norm, heads, cos, op):
        return reference(x, norm, heads, cos, sin)
    return _call(op, x, norm, heads, cos, sin)


def _call(op: Any, x: torch.Tensor, norm: Any, heads: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    eps = norm.eps if norm.eps is not None else torch.finfo(torch.float32).eps  # torch's RMSNorm: fp32 math
    return op(x, norm.weight, cos.contiguous(), sin.contiguous(), float(eps), x.shape[-1] // heads).unflatten(
        2, (heads, -1))


@functools.cache
def processor_class() -> type:
    """``FusedQKRopeProcessor``: diffusers' ``WanAttnProcessor`` with q/k norm + RoPE through ``rms_rope``."""
    from diffusers.models.attention_dispatch import dispatch_attention_fn
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor, _get_qkv_projections

    class FusedQKRopeProcessor(WanAttnProcessor):
        """Self-attention with the fused q/k pass; anything else goes to diffusers' processor unchanged."""

        def __init__(self) -> None:
            super().__init__()
            self.op = triton_rms_rope()  # looked up once, outside any compiled graph (None: the reference runs)

        def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                     attention_mask: torch.Tensor | None = None,
                     rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
            if rotary_emb is None or attn.add_k_proj is not None or encoder_hidden_states is not None:
                return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
            query, key, value = _get_qkv_projections(attn, hidden_states, None)
            query = self._qk(query, attn.norm_q, attn.heads, *rotary_emb)
            key = self._qk(key, attn.norm_k, attn.heads, *rotary_emb)
            value = value.unflatten(2, (attn.heads, -1))
            out = dispatch_attention_fn(query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
                                        backend=self._attention_backend, parallel_config=self._parallel_config)
            out = out.flatten(2, 3).type_as(query)
            return attn.to_out[1](attn.to_out[0](out))

        def _qk(self, x: torch.Tensor, norm: Any, heads: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
            if usable(x, norm, heads, cos, self.op):
                return _call(self.op, x, norm, heads, cos, sin)
            return reference(x, norm, heads, cos, sin)

    return FusedQKRopeProcessor


def install(dit: Any) -> int:
    """Give every block's self-attention (``attn1``) the fused processor; returns how many were set.

    Call before the attention backend is set and before the blocks are compiled (the processor carries the
    backend, and the compiled graph holds the op).
    """
    cls = processor_class()
    n = 0
    for block in dit.blocks:
        block.attn1.set_processor(cls())
        n += 1
    return n
