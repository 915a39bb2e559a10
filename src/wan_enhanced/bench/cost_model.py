"""Cost of one video from its seconds and the catalog: videos/h per $1k, $ per video, Wh per video.

Definitions (the seed's): cost-effectiveness 性价比 = (1 / time) ÷ purchase price, shown as videos per
hour per $1,000 of GPUs; $ per video = time × cloud price per GPU-hour (low–high) × GPUs; Wh per video
= the GPU energy counter over the run (measured), or projected seconds × the source run's mean power
scaled by the power-limit ratio (labelled projected). Efficiency = analytic FLOPs ÷ time ÷ peak.
"""

from __future__ import annotations

from typing import Any

from .gpus import hourly, num, price


def efficiency(flops: float | None, seconds: float | None, entry: dict[str, Any] | None, count: int
               ) -> tuple[float | None, str]:
    """Achieved FLOP/s ÷ (peak dense bf16 FLOP/s × cards), as a fraction; (None, reason) if unknown."""
    peak = num(entry, "bf16_dense_tflops")
    if flops is None:
        return None, "report has no FLOP count"
    if not seconds:
        return None, "no time"
    if peak is None:
        return None, "GPU not in the catalog or no bf16 rate"
    return flops / seconds / (peak * 1e12 * count), ""


def videos_per_hour_per_1k(seconds: float | None, entry: dict[str, Any] | None, count: int = 1
                           ) -> tuple[float | None, str]:
    """The seed's 性价比 as videos per hour per $1,000 of purchase price; (None, reason) if unknown."""
    p, why = price(entry)
    if p is None:
        return None, why
    if not seconds:
        return None, "no time"
    return 3600.0 / seconds / (p * count / 1000.0), why


def cost_effectiveness(seconds: float | None, entry: dict[str, Any] | None, count: int) -> tuple[float | None, str]:
    """The seed's 性价比 (1 / time) / price, in 1/(s·USD); (None, reason) if unknown."""
    p, why = price(entry)
    if p is None:
        return None, why
    if not seconds:
        return None, "no time"
    return (1.0 / seconds) / (p * count), ""


def dollars_per_video(seconds: float | None, entry: dict[str, Any] | None, count: int = 1
                      ) -> tuple[tuple[float, float] | None, str]:
    """(low, high) USD per video from the hourly price range; (None, reason) if unknown."""
    low, high, why = hourly(entry)
    if low is None or high is None:
        return None, why
    if not seconds:
        return None, "no time"
    return (seconds / 3600.0 * low * count, seconds / 3600.0 * high * count), why


def projected_wh(seconds: float, source_energy_j: float | None, source_seconds: float | None,
                 source: dict[str, Any], target: dict[str, Any]) -> tuple[float | None, str]:
    """Projected Wh per video: target seconds × source mean power × (target ÷ source power limit)."""
    if not source_energy_j or not source_seconds:
        return None, "the source run has no energy measurement"
    sp, tp = num(source, "power_w"), num(target, "power_w")
    if sp is None or tp is None:
        return None, "no power limit in the catalog"
    watts = source_energy_j / source_seconds * tp / sp
    return seconds * watts / 3600.0, (f"projected: source mean power {source_energy_j / source_seconds:.0f} W × "
                                      f"{tp:g}/{sp:g} W power limits")
