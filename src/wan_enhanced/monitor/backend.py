"""Device counters behind a small interface, so the sampler can be tested with a fake backend.

``NvmlBackend`` reads one NVIDIA GPU through pynvml:

* SM activity from GPM (``nvmlGpmSampleGet`` twice ≥ 100 ms apart, then ``nvmlGpmMetricsGet``):
  SM_UTIL, SM_OCCUPANCY, ANY_TENSOR_UTIL, DRAM_BW_UTIL — Hopper and newer.
* otherwise ``nvmlDeviceGetUtilizationRates().gpu`` as a labelled fallback (``nvml_util``): it is
  the share of time any kernel ran, not SM activity.
* power (``nvmlDeviceGetPowerUsage``), the total-energy counter, and NVML's used device memory.
* the GPU's state: SM and memory clocks, temperature, the enforced power limit and the clock-event
  (throttle) reasons bitmask (``nvmlDeviceGetCurrentClocksEventReasons``, older drivers
  ``…ThrottleReasons``); decoded in ``monitor.gpu_state``.

Every read that fails gives ``None`` for that field; nothing is ever reported as 0 for "unknown".
Calls cost 5 µs – 4 ms each (see docs/baseline.md), so only the sampler thread calls ``read()``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Protocol

#: GPM needs its two samples at least this far apart.
GPM_MIN_INTERVAL_S = 0.1

#: the GPU-state reads of every sample
STATE_QUERIES = ("sm_clock_mhz", "mem_clock_mhz", "temperature_c", "power_limit_w", "clock_reasons")

NVML_UTIL_NOTE = "utilization.gpu = time any kernel ran, not SM activity (GPM not supported)"


@dataclass
class Reading:
    """One read of the device counters; activity fields cover the time since the previous read."""

    sm: float | None = None
    sm_occupancy: float | None = None
    tensor_util: float | None = None
    dram_util: float | None = None
    power_w: float | None = None
    energy_j: float | None = None  # cumulative counter (J since driver load), not a delta
    nvml_used_bytes: int | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    temperature_c: float | None = None
    power_limit_w: float | None = None
    clock_reasons: int | None = None  # NVML clock-event reasons bitmask at the read


class GpuBackend(Protocol):
    """What the sampler needs from a device."""

    #: where SM activity comes from: ``gpm``, ``nvml_util`` or ``unavailable``
    sm_source: str
    #: why SM activity is unavailable, or a note on the fallback (``None`` for GPM)
    sm_reason: str | None
    #: why power/energy are unavailable (``None`` when they are read)
    power_reason: str | None
    #: smallest sampling interval the backend supports
    min_interval_s: float
    #: why the clock-event (throttle) reasons cannot be read (``None`` when they are)
    state_reason: str | None

    def read(self) -> Reading:
        """Read all counters; activity is averaged since the previous ``read`` (first read primes)."""
        ...

    def memory_used_bytes(self) -> int | None:
        """Cheap read of the device memory NVML sees in use (all processes, incl. CUDA context)."""
        ...

    def energy_j(self) -> float | None:
        """Cheap read of the cumulative total-energy counter (J since driver load); ``None`` without one."""
        ...

    def close(self) -> None:
        """Release NVML resources."""
        ...


class NullBackend:
    """No device counters (CPU run, NVML missing, or sampling disabled); every field ``None``."""

    sm_source = "unavailable"
    min_interval_s = 0.0

    def __init__(self, reason: str) -> None:
        self.sm_reason: str | None = reason
        self.power_reason: str | None = reason
        self.state_reason: str | None = reason

    def read(self) -> Reading:
        """Return an empty reading."""
        return Reading()

    def memory_used_bytes(self) -> int | None:
        """No NVML: ``None``."""
        return None

    def energy_j(self) -> float | None:
        """No NVML: ``None``."""
        return None

    def close(self) -> None:
        """Nothing to release."""


def _nvml() -> Any:
    import pynvml

    return pynvml


def nvml_handle_for_torch_device(index: int) -> Any:
    """NVML handle of torch's CUDA device ``index`` (matched by UUID, so CUDA_VISIBLE_DEVICES is honoured)."""
    import torch

    nv = _nvml()
    try:
        uuid = str(torch.cuda.get_device_properties(index).uuid)
        if uuid:
            return nv.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
    except Exception:  # fall back to the index mapping
        pass
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    if ids and index < len(ids) and ids[index].isdigit():
        return nv.nvmlDeviceGetHandleByIndex(int(ids[index]))
    return nv.nvmlDeviceGetHandleByIndex(index)


class NvmlBackend:
    """Counters of one NVIDIA GPU via pynvml (GPM when supported, else utilization.gpu)."""

    def __init__(self, handle: Any = None, *, torch_index: int | None = None, use_gpm: bool = True,
                 state_queries: tuple[str, ...] | None = None) -> None:
        """``state_queries``: which GPU-state reads each ``read`` makes (default ``STATE_QUERIES``; ``()``: none)."""
        nv = _nvml()
        self.state_queries = STATE_QUERIES if state_queries is None else tuple(state_queries)
        nv.nvmlInit()
        self._nv = nv
        self._handle = handle if handle is not None else nvml_handle_for_torch_device(torch_index or 0)
        self._gpm = False
        self._samples: list[Any] = []
        self._prev = None
        if use_gpm:
            try:
                self._gpm = bool(nv.nvmlGpmQueryDeviceSupport(self._handle).isSupportedDevice)
            except Exception:  # old driver / GPU without GPM
                self._gpm = False
        if self._gpm:
            self._samples = [nv.nvmlGpmSampleAlloc(), nv.nvmlGpmSampleAlloc()]
            self._metric_ids = [nv.NVML_GPM_METRIC_SM_UTIL, nv.NVML_GPM_METRIC_SM_OCCUPANCY,
                                nv.NVML_GPM_METRIC_ANY_TENSOR_UTIL, nv.NVML_GPM_METRIC_DRAM_BW_UTIL]
            self.sm_source = "gpm"
            self.sm_reason: str | None = None
            self.min_interval_s = GPM_MIN_INTERVAL_S
        else:
            self.sm_source = "nvml_util"
            self.sm_reason = NVML_UTIL_NOTE
            self.min_interval_s = 0.0
        self._power_ok = self._probe(nv.nvmlDeviceGetPowerUsage)
        self._energy_ok = self._probe(nv.nvmlDeviceGetTotalEnergyConsumption)
        self.energy_read_s = self._read_cost(nv.nvmlDeviceGetTotalEnergyConsumption) if self._energy_ok else None
        self.power_reason = None if self._power_ok else "NVML power reading not supported on this GPU"
        self._reasons_fn = next((getattr(nv, n) for n in ("nvmlDeviceGetCurrentClocksEventReasons",
                                                         "nvmlDeviceGetCurrentClocksThrottleReasons")
                                 if hasattr(nv, n) and self._probe(getattr(nv, n))), None)
        self.state_reason = None if self._reasons_fn is not None else "NVML clock-event reasons not supported"
        self._readers = self.state_readers()  # built once: the sampler calls them every sample

    def _read_cost(self, fn: Any, n: int = 5) -> float:
        """Median seconds of ``n`` calls of ``fn(handle)``: whether a read may sit on the caller's path."""
        import statistics
        import time

        ts = []
        for _ in range(n):
            t = time.perf_counter()
            fn(self._handle)
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    def _probe(self, fn: Any) -> bool:
        try:
            fn(self._handle)
            return True
        except Exception:
            return False

    def _read_gpm(self, r: Reading) -> None:
        nv = self._nv
        cur = self._samples[0] if self._prev is not self._samples[0] else self._samples[1]
        nv.nvmlGpmSampleGet(self._handle, cur)
        if self._prev is not None:
            mg = nv.c_nvmlGpmMetricsGet_t()
            mg.version = nv.NVML_GPM_METRICS_GET_VERSION
            mg.numMetrics = len(self._metric_ids)
            mg.sample1 = self._prev
            mg.sample2 = cur
            for i, mid in enumerate(self._metric_ids):
                mg.metrics[i].metricId = mid
            nv.nvmlGpmMetricsGet(mg)
            vals = [float(mg.metrics[i].value) if mg.metrics[i].nvmlReturn == 0 else None
                    for i in range(len(self._metric_ids))]
            vals = [v if v is None or math.isfinite(v) else None for v in vals]
            r.sm, r.sm_occupancy, r.tensor_util, r.dram_util = vals
        self._prev = cur

    def read(self) -> Reading:
        """Read activity (since the previous read), power, energy counter and used memory."""
        nv = self._nv
        r = Reading()
        try:
            if self._gpm:
                self._read_gpm(r)
            else:
                r.sm = float(nv.nvmlDeviceGetUtilizationRates(self._handle).gpu)
        except Exception:  # a failed read is a gap, not a zero
            self._prev = None
        if self._power_ok:
            try:
                r.power_w = nv.nvmlDeviceGetPowerUsage(self._handle) / 1000.0
            except Exception:
                pass
        r.energy_j = self.energy_j()
        r.nvml_used_bytes = self.memory_used_bytes()
        self._read_state(r)
        return r

    def state_readers(self) -> dict[str, Any]:
        """Each GPU-state query as a zero-argument call (``benchmark/nvml_costs.py`` times them one by one)."""
        nv, h = self._nv, self._handle
        out = {"sm_clock_mhz": lambda: float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
               "mem_clock_mhz": lambda: float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)),
               "temperature_c": lambda: float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
               "power_limit_w": lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0}
        if self._reasons_fn is not None:
            fn = self._reasons_fn
            out["clock_reasons"] = lambda: int(fn(h))
        return out

    def _read_state(self, r: Reading) -> None:
        """Clocks, temperature, power limit and clock-event reasons (each ``None`` when its query fails)."""
        for attr in self.state_queries:
            fn = self._readers.get(attr)
            if fn is None:
                continue
            try:
                setattr(r, attr, fn())
            except Exception:  # a query this GPU lacks: a gap
                pass

    def memory_used_bytes(self) -> int | None:
        """Used device memory as NVML sees it (includes the CUDA context and other processes)."""
        try:
            return int(self._nv.nvmlDeviceGetMemoryInfo(self._handle).used)
        except Exception:
            return None

    def energy_j(self) -> float | None:
        """The total-energy counter in J (``energy_read_s``: what one read costs here, measured at start) (NVML counts mJ since driver load; updates about every 100 ms)."""
        if not self._energy_ok:
            return None
        try:
            return self._nv.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1000.0
        except Exception:
            return None

    def close(self) -> None:
        """Free GPM samples and shut NVML down (reference counted by NVML)."""
        for s in self._samples:
            try:
                self._nv.nvmlGpmSampleFree(s)
            except Exception:
                pass
        self._samples = []
        try:
            self._nv.nvmlShutdown()
        except Exception:
            pass


def make_backend(device_type: str, index: int | None, enabled: bool = True) -> GpuBackend:
    """The backend for a torch device: NVML on CUDA, else a ``NullBackend`` saying why."""
    if not enabled:
        return NullBackend("sampler disabled")
    if device_type != "cuda":
        return NullBackend("no CUDA device")
    try:
        return NvmlBackend(torch_index=index or 0)
    except Exception as exc:  # NVML missing or failing: say why
        return NullBackend(f"NVML unavailable: {type(exc).__name__}: {exc}")
