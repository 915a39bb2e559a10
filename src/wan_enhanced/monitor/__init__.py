"""Stage-by-stage performance monitoring of one device (knows nothing of Wan).

``Monitor`` times nested stages (CUDA-synchronized), tracks torch memory with correct nested peaks,
and a background sampler reads SM activity (NVML GPM, else utilization.gpu, labelled), power and
energy. It hands out typed measurements (``measure``: ``StageRecord``, ``WindowMeasurement``,
``StageMeasurement``, ``RunMeasurement``, each value a ``metrics.Metric``); the report package turns
them into words and JSON. ``flops.mfu`` is generic FLOP-rate arithmetic (the Wan FLOP formulas are
in ``wan_enhanced.models.flops``); ``catalog`` holds GPU datasheet rates for MFU.

Names are imported lazily, so light users (the report formatter) do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backend import GpuBackend, NullBackend, NvmlBackend, Reading
    from .core import Monitor, MonitorError
    from .measure import RunMeasurement, StageMeasurement, StageRecord, WindowMeasurement
    from .metrics import Metric

_EXPORTS = {
    "Monitor": "core", "MonitorError": "core",
    "StageRecord": "measure", "WindowMeasurement": "measure", "StageMeasurement": "measure",
    "RunMeasurement": "measure",
    "GpuBackend": "backend", "NullBackend": "backend", "NvmlBackend": "backend", "Reading": "backend",
    "Metric": "metrics",
}

__all__ = ["GpuBackend", "Metric", "Monitor", "MonitorError", "NullBackend", "NvmlBackend", "Reading",
           "RunMeasurement", "StageMeasurement", "StageRecord", "WindowMeasurement"]


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{mod}", __name__), name)
