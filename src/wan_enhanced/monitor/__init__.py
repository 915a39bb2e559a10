"""Stage-by-stage performance monitoring of one device (knows nothing of Wan).

``Monitor`` times nested stages (CUDA-synchronized), tracks torch memory with correct nested peaks,
and a background sampler reads SM activity (NVML GPM, else utilization.gpu, labelled), power and
energy. ``flops`` counts analytic FLOPs; ``catalog`` holds GPU datasheet rates for MFU.

Names are imported lazily, so light users (the report formatter) do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backend import GpuBackend, NullBackend, NvmlBackend, Reading
    from .core import Monitor, MonitorError, StageRecord
    from .metrics import metric, unavailable

_EXPORTS = {
    "Monitor": "core", "MonitorError": "core", "StageRecord": "core",
    "GpuBackend": "backend", "NullBackend": "backend", "NvmlBackend": "backend", "Reading": "backend",
    "metric": "metrics", "unavailable": "metrics",
}

__all__ = ["GpuBackend", "Monitor", "MonitorError", "NullBackend", "NvmlBackend", "Reading", "StageRecord",
           "metric", "unavailable"]


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{mod}", __name__), name)
