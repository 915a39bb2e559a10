"""FlashAttention-4 entry points in the form torch's flash-attention registry calls them.

torch (2.10+) routes SDPA's flash backend to FA4 through ``torch.nn.attention._fa4``, which imports a
module exposing ``_flash_attn_fwd`` / ``_flash_attn_bwd`` and expects the forward to return
``(out, lse)``. Newer ``flash-attn-4`` releases (4.0.0b36) return more values from ``_flash_attn_fwd``;
this module passes everything through and keeps the first two, so either release works with torch 2.11.
"""

from __future__ import annotations

from typing import Any

from flash_attn.cute import interface as _fa4

_flash_attn_bwd = _fa4._flash_attn_bwd


def _flash_attn_fwd(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """FA4's forward, returning only ``(out, lse)``."""
    res = _fa4._flash_attn_fwd(*args, **kwargs)
    return res[0], res[1]
