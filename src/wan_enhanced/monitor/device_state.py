"""The GPU settings that shape every number, read once at the start of a run (``system.gpu_state``).

Clock limits (maximum and application clocks), power limits, persistence mode, ECC, PCIe link
generation and width (current and maximum), MIG mode, compute mode, and the other processes on the GPU.
A query the driver or GPU lacks is ``{"value": None, "reason": …}``, never a made-up value.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


def _q(fn: Callable[[], Any]) -> dict[str, Any]:
    try:
        v = fn()
    except Exception as exc:  # a query this GPU or driver lacks
        return {"value": None, "reason": f"unavailable: {type(exc).__name__}: {exc}"[:200]}
    if isinstance(v, bytes):
        v = v.decode(errors="replace")
    return {"value": v, "reason": None}


def other_processes(nv: Any, handle: Any) -> dict[str, Any]:
    """The compute and graphics processes on the GPU other than this one: ``{"value": [{pid, used_gb}], …}``."""
    procs: list[dict[str, Any]] = []
    errors = []
    for fn_name in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        fn = getattr(nv, fn_name, None)
        if fn is None:
            continue
        try:
            for p in fn(handle):
                pid = int(p.pid)
                if pid == os.getpid() or any(q["pid"] == pid for q in procs):
                    continue
                used = getattr(p, "usedGpuMemory", None)
                procs.append({"pid": pid, "used_gb": round(used / 2**30, 3) if isinstance(used, int) and
                              used < 2**62 else None})
        except Exception as exc:  # noqa: BLE001 - one failing query leaves the other
            errors.append(f"{fn_name}: {type(exc).__name__}")
    if errors and not procs:
        return {"value": None, "reason": "unavailable: " + "; ".join(errors)}
    return {"value": procs, "reason": "processes in another container or PID namespace may be invisible"}


def device_state(nv: Any, handle: Any) -> dict[str, Any]:
    """Every setting above for one NVML device handle (NVML initialised by the caller)."""
    def clocks(fn_name: str) -> dict[str, Any]:
        fn = getattr(nv, fn_name)
        return _q(lambda: {"sm_mhz": fn(handle, nv.NVML_CLOCK_SM), "mem_mhz": fn(handle, nv.NVML_CLOCK_MEM)})

    return {
        "max_clocks": clocks("nvmlDeviceGetMaxClockInfo"),
        "application_clocks": clocks("nvmlDeviceGetApplicationsClock"),
        "default_application_clocks": clocks("nvmlDeviceGetDefaultApplicationsClock"),
        "power_limit_w": _q(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0),
        "default_power_limit_w": _q(lambda: nv.nvmlDeviceGetPowerManagementDefaultLimit(handle) / 1000.0),
        "persistence_mode": _q(lambda: bool(nv.nvmlDeviceGetPersistenceMode(handle))),
        "ecc": _q(lambda: dict(zip(("current", "pending"), map(bool, nv.nvmlDeviceGetEccMode(handle)), strict=False))),
        "pcie": _q(lambda: {"gen": nv.nvmlDeviceGetCurrPcieLinkGeneration(handle),
                            "width": nv.nvmlDeviceGetCurrPcieLinkWidth(handle),
                            "max_gen": nv.nvmlDeviceGetMaxPcieLinkGeneration(handle),
                            "max_width": nv.nvmlDeviceGetMaxPcieLinkWidth(handle)}),
        "mig_mode": _q(lambda: dict(zip(("current", "pending"), map(bool, nv.nvmlDeviceGetMigMode(handle)),
                                        strict=False))),
        "compute_mode": _q(lambda: int(nv.nvmlDeviceGetComputeMode(handle))),
        "temperature_c": _q(lambda: nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU)),
        "other_processes": other_processes(nv, handle),
    }


def read_device_state(torch_index: int) -> dict[str, Any]:
    """``device_state`` of torch's CUDA device ``torch_index``, or ``{"reason": …}`` without NVML."""
    try:
        import pynvml as nv

        from .backend import nvml_handle_for_torch_device

        nv.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - no NVML: say why
        return {"reason": f"NVML unavailable: {type(exc).__name__}: {exc}"}
    try:
        return device_state(nv, nvml_handle_for_torch_device(torch_index))
    except Exception as exc:  # noqa: BLE001
        return {"reason": f"NVML device query failed: {type(exc).__name__}: {exc}"}
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
