"""Generic FLOP-rate arithmetic: model FLOPs utilization against a peak rate.

The Wan FLOP formulas (DiT, UMT5, VAE, token counts) are in ``wan_enhanced.models.flops``.
"""

from __future__ import annotations


def mfu(flops: float, seconds: float, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilization in % of ``peak_tflops`` (dense bf16); ``None`` if the peak is unknown."""
    if not peak_tflops or seconds <= 0:
        return None
    return 100.0 * flops / seconds / 1e12 / peak_tflops
