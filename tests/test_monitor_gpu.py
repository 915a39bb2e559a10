"""Monitor checks on a real CUDA GPU (``pytest -m gpu -s tests/test_monitor_gpu.py``; prints its numbers).

(a) our sampler's GPM SM % over a stage vs an independent GPM reader in another process over the
    same window (within 5 points), with utilization.gpu printed beside it;
(b) monitor overhead on a fixed GPU workload, sampler on, per-step stages: ≤ 1 %;
(c) a report on the GPU: memory, power, energy, FLOPs/MFU all present and sane.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from wan_enhanced.monitor import Monitor
from wan_enhanced.report.build import stage_dicts

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():  # pragma: no cover - CPU machines
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

N = 8192

READER = textwrap.dedent("""
    import json, sys, threading, time
    import pynvml as nv
    nv.nvmlInit()
    h = nv.nvmlDeviceGetHandleByUUID(sys.argv[1])
    ids = [nv.NVML_GPM_METRIC_SM_UTIL, nv.NVML_GPM_METRIC_SM_OCCUPANCY, nv.NVML_GPM_METRIC_ANY_TENSOR_UTIL]
    def gpm(a, b):
        mg = nv.c_nvmlGpmMetricsGet_t()
        mg.version = nv.NVML_GPM_METRICS_GET_VERSION
        mg.numMetrics = len(ids)
        mg.sample1, mg.sample2 = a, b
        for i, m in enumerate(ids):
            mg.metrics[i].metricId = m
        nv.nvmlGpmMetricsGet(mg)
        return [mg.metrics[i].value for i in range(len(ids))]
    print("ready", flush=True)
    out = []
    for line in sys.stdin:
        if line.strip() != "start":
            break
        a, b = nv.nvmlGpmSampleAlloc(), nv.nvmlGpmSampleAlloc()
        nv.nvmlGpmSampleGet(h, a)
        utils, stop = [], threading.Event()
        def poll():
            while not stop.wait(0.1):
                utils.append(nv.nvmlDeviceGetUtilizationRates(h).gpu)
        th = threading.Thread(target=poll); th.start()
        sys.stdin.readline()  # "stop"
        nv.nvmlGpmSampleGet(h, b)
        stop.set(); th.join()
        sm, occ, tensor = gpm(a, b)
        out.append({"sm": sm, "occupancy": occ, "tensor": tensor,
                    "util_gpu": sum(utils) / len(utils) if utils else None})
        nv.nvmlGpmSampleFree(a); nv.nvmlGpmSampleFree(b)
        print(json.dumps(out[-1]), flush=True)
""")


def start_reader(device: torch.device) -> subprocess.Popen:
    """Start the independent GPM reader process for ``device`` and wait until it is ready."""
    uuid = str(torch.cuda.get_device_properties(device).uuid)
    uuid = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
    reader = subprocess.Popen([sys.executable, "-c", READER, uuid], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert reader.stdout.readline().strip() == "ready"
    return reader


def _matmuls(a: torch.Tensor, b: torch.Tensor, count: int) -> None:
    for _ in range(count):
        torch.mm(a, b)


def _calibrate(a: torch.Tensor, b: torch.Tensor) -> float:
    """Seconds per bf16 N×N matmul."""
    _matmuls(a, b, 20)
    torch.cuda.synchronize()
    t = time.perf_counter()
    _matmuls(a, b, 100)
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / 100


def _busy(a, b, per_mm: float, seconds: float) -> int:
    n = max(1, int(seconds / per_mm))
    _matmuls(a, b, n)
    torch.cuda.synchronize()
    return n


def _half(a, b, per_mm: float, seconds: float) -> int:
    """~50 % duty cycle: 50 ms of matmuls, 50 ms idle."""
    n, t_end = 0, time.perf_counter() + seconds
    burst = max(1, int(0.05 / per_mm))
    while time.perf_counter() < t_end:
        _matmuls(a, b, burst)
        torch.cuda.synchronize()
        n += burst
        time.sleep(0.05)
    return n


def test_gpm_sm_matches_independent_reader():
    mon = Monitor("cuda")
    if mon.backend.sm_source != "gpm":
        pytest.skip(f"GPM not supported here ({mon.backend.sm_source}: {mon.backend.sm_reason})")
    reader = start_reader(mon.device)
    a = torch.randn(N, N, device=mon.device, dtype=torch.bfloat16)
    b = torch.randn(N, N, device=mon.device, dtype=torch.bfloat16)
    per_mm = _calibrate(a, b)
    theirs = {}
    mon.start()
    time.sleep(0.3)
    for name, work in (("busy", _busy), ("half", _half)):
        torch.cuda.synchronize()
        reader.stdin.write("start\n")
        reader.stdin.flush()
        with mon.stage(name):
            work(a, b, per_mm, 3.0)
        reader.stdin.write("stop\n")
        reader.stdin.flush()
        theirs[name] = json.loads(reader.stdout.readline())
        time.sleep(0.3)
    reader.stdin.close()
    reader.wait(timeout=30)
    mon.stop()
    stages = {s["name"]: s for s in stage_dicts(mon.measure())}
    print(f"\nGPU: {mon.device_name}; bf16 {N}³ matmul {per_mm * 1e3:.2f} ms "
          f"({2 * N**3 / per_mm / 1e12:.0f} TFLOP/s)")
    for name in ("busy", "half"):
        ours, ref = stages[name], theirs[name]
        print(f"[{name}] ours: SM {ours['sm']['value']:.1f} % (gpm), occupancy {ours['sm_occupancy']['value']:.1f}, "
              f"tensor {ours['tensor_util']['value']:.1f}, DRAM {ours['dram_util']['value']:.1f} | independent: "
              f"SM {ref['sm']:.1f} %, occupancy {ref['occupancy']:.1f}, tensor {ref['tensor']:.1f} | "
              f"utilization.gpu {ref['util_gpu']:.1f} % | stage {ours['duration_s']:.2f} s")
        assert ours["sm"]["source"] == "gpm"
        assert abs(ours["sm"]["value"] - ref["sm"]) <= 5.0
    assert stages["busy"]["sm"]["value"] > stages["half"]["sm"]["value"] + 10


def _workload(a, b, steps: int, per_step: int, mon: Monitor | None) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    if mon is None:
        for _ in range(steps):
            _matmuls(a, b, per_step)
            torch.cuda.synchronize()  # a real denoise step ends in a sync too
    else:
        with mon.stage("Denoising"):
            for i in range(steps):
                with mon.stage(f"Step_{i}"):
                    _matmuls(a, b, per_step)
                    mon.add_flops(2.0 * N**3 * per_step)
    torch.cuda.synchronize()
    return time.perf_counter() - t


def test_monitor_overhead_below_one_percent():
    dev = torch.device("cuda")
    a = torch.randn(N, N, device=dev, dtype=torch.bfloat16)
    b = torch.randn(N, N, device=dev, dtype=torch.bfloat16)
    per_mm = _calibrate(a, b)
    steps, per_step = 30, max(1, int(0.1 / per_mm))  # 30 steps of ~100 ms
    base, withmon = [], []
    for _ in range(5):
        base.append(_workload(a, b, steps, per_step, None))
        mon = Monitor(dev)  # sampler thread on
        mon.start()
        withmon.append(_workload(a, b, steps, per_step, mon))
        mon.stop()
        nsamples = len(mon.sampler.samples())
    tb, tm = statistics.median(base), statistics.median(withmon)
    overhead = (tm - tb) / tb * 100
    mon = Monitor(dev)
    mon.start()
    n = 2000
    t = time.perf_counter()
    for i in range(n):
        mon.begin_window(f"Empty_{i}")
        mon.end_window(f"Empty_{i}")
    per_stage_us = (time.perf_counter() - t) / n * 1e6
    mon.stop()
    print(f"\nempty stage (begin + end, incl. 2 syncs of an idle GPU): {per_stage_us:.1f} µs")
    print(f"overhead: without monitor {tb:.4f} s (runs {', '.join(f'{x:.4f}' for x in base)}), "
          f"with monitor {tm:.4f} s (runs {', '.join(f'{x:.4f}' for x in withmon)}) → {overhead:+.2f} % "
          f"[{steps} stages of {per_step} bf16 {N}³ matmuls, sampler every 0.1 s, "
          f"{nsamples} samples in the last run]")
    assert overhead <= 1.0


def test_report_on_gpu_has_every_metric():
    from wan_enhanced.report import build_report, format_report

    dev = torch.device("cuda")
    mon = Monitor(dev)
    with mon.stage("Total"):
        with mon.stage("Load_DiT"):
            a = torch.randn(N, N, device=dev, dtype=torch.bfloat16)
            b = torch.randn(N, N, device=dev, dtype=torch.bfloat16)
        per_mm = _calibrate(a, b)
        _workload(a, b, 12, max(1, int(0.1 / per_mm)), mon)
        with mon.stage("VAE_Decoding"):
            big = torch.empty(4 << 30, dtype=torch.uint8, device=dev)
            assert mon.memory.stats_fn()[:2] == (torch.cuda.memory_allocated(dev), torch.cuda.max_memory_allocated(dev))
            del big
    report = build_report(mon, run={"task": "matmul"}, weights={"kind": "random", "note": "gpu test"})
    print("\n" + format_report(report))
    t = report["totals"]
    for key in ("wall_s", "denoise_s", "peak_memory_gb", "static_memory_gb", "dynamic_memory_gb", "mean_sm_percent",
                "compute_load", "energy_j", "flops", "tflops_per_s"):
        assert t[key]["value"] is not None, (key, t[key])
    st = {s["name"]: s for s in report["stages"]}
    assert st["VAE_Decoding"]["memory"]["dynamic_gb"]["value"] >= 3.99
    assert st["Total"]["memory"]["peak_gb"]["value"] >= st["VAE_Decoding"]["memory"]["peak_gb"]["value"]
    assert st["Denoising"]["memory"]["nvml_used_gb"]["value"] > st["Denoising"]["memory"]["peak_gb"]["value"]
    assert st["Denoising"]["power_w"]["value"] > 0 and st["Denoising"]["energy_j"]["source"] == "nvml_energy"
    assert report["system"]["gpu"]["name"] == mon.device_name
    if mon.peak_tflops:
        assert 5 < t["mfu"]["value"] <= 100
    # the GPU's own state: clocks, temperature and power limit per stage, the clock-event reasons read, the
    # settings that shape numbers in system.gpu.state, and a run verdict
    gs = st["Denoising"]["gpu_state"]
    assert gs["sm_clock_mhz"]["value"] > 100 and gs["mem_clock_mhz"]["value"] > 100, gs
    assert gs["temperature_max_c"]["value"] > 0 and gs["power_limit_w"]["value"] > 50, gs
    assert gs["held_back"]["share"] is not None and gs["held_back"]["covered_s"] > 0, gs
    state = report["system"]["gpu"]["state"]
    for key in ("max_clocks", "power_limit_w", "persistence_mode", "ecc", "pcie", "mig_mode", "other_processes"):
        assert key in state and ("value" in state[key]), (key, state.get(key))
    assert state["max_clocks"]["value"]["sm_mhz"] > 100
    assert report["gpu_state"]["verdict"].startswith(("held back in", "not held back")), report["gpu_state"]
    print("GPU state:", json.dumps(state)[:1500], "\nverdict:", report["gpu_state"]["verdict"])
