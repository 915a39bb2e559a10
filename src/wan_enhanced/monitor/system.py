"""System description for the report: host, software versions, CPU, memory, GPU + catalog match."""

from __future__ import annotations

import os
import platform
import socket
import sys
from importlib import metadata
from typing import Any

import torch

from .. import __version__
from .catalog import match_gpu, peak_bf16_tflops
from .device_state import read_device_state

GIB = float(1 << 30)


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _host_memory_gb() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / GIB, 2)
    except Exception:
        return None


def _driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else str(v)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None


def gpu_info(device: torch.device | str | None = None, catalog: dict[str, Any] | None = None,
             gpus_used: int | None = None) -> dict[str, Any] | None:
    """The schema's ``system.gpu`` object for a CUDA device, or ``None`` without CUDA.

    ``count`` is the number of GPUs the run uses (``gpus_used``, default 1: this process's device);
    ``host_count`` is how many the host has (``torch.cuda.device_count()``).
    """
    if not torch.cuda.is_available():
        return None
    dev = torch.device(device) if device is not None else torch.device("cuda")
    if dev.type != "cuda":
        return None
    idx = dev.index if dev.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(idx)
    try:
        entry = match_gpu(props.name, catalog)
    except ValueError:
        entry = None
    peak, _ = peak_bf16_tflops(props.name, catalog)
    return {
        "name": props.name,
        "count": int(gpus_used) if gpus_used is not None else 1,
        "host_count": torch.cuda.device_count(),
        "index": idx,
        "memory_total_gb": round(props.total_memory / GIB, 2),
        "memory_unit": "GiB",
        "driver": _driver_version(),
        "compute_capability": f"{props.major}.{props.minor}",
        "multiprocessors": props.multi_processor_count,
        "catalog_key": entry["key"] if entry else None,
        "peak_bf16_tflops": peak,
        "catalog_note": None if entry else f"GPU not in catalog ({props.name}): MFU and costs unavailable",
        "state": read_device_state(idx),
    }


def collect_system_info(device: torch.device | str | None = None, catalog: dict[str, Any] | None = None,
                        gpus_used: int | None = None) -> dict[str, Any]:
    """The schema's ``system`` object: host, platform, versions, CPU, host memory, GPU.

    ``gpus_used``: GPUs the run uses (``system.gpu.count``; default 1 when CUDA is present).
    """
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "diffusers": _version("diffusers"),
        "transformers": _version("transformers"),
        "wan_enhanced": _version("wan-enhanced") or __version__,
        "cpu": {"model": _cpu_model(), "cores": os.cpu_count()},
        "host_memory_gb": _host_memory_gb(),
        "gpu": gpu_info(device, catalog, gpus_used),
    }
