"""What each NVML read costs, and what the monitor's sampler costs a GPU workload with each set of reads.

    python3 benchmark/nvml_costs.py --out nvml_costs.json

1. Per query: median wall time of 200 calls (the sampler thread makes each of them once per sample).
2. The monitor-overhead workload of ``tests/test_monitor_gpu.py`` (30 stages of ~100 ms of bf16 8192³ matmuls,
   stage begin/end synchronizing): without a monitor and with a monitor whose backend makes only the base reads,
   the base reads plus all GPU-state reads, and plus each state read alone — interleaved, ``--repeats`` each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from wan_enhanced.monitor import Monitor
from wan_enhanced.monitor.backend import STATE_QUERIES, NvmlBackend

N = 8192


def workload(a: torch.Tensor, b: torch.Tensor, stages: int, per: int, mon: Monitor | None) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(stages):
        if mon is not None:
            mon.begin_window(f"S{i}")
        for _ in range(per):
            torch.mm(a, b)
        if mon is not None:
            mon.end_window(f"S{i}")
    torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="nvml_costs.json")
    args = ap.parse_args()
    probe = NvmlBackend(torch_index=0)
    costs = {}
    calls = dict(probe.state_readers(), memory_used=probe.memory_used_bytes, energy=probe.energy_j,
                 read_without_state=lambda: None)
    for name, fn in calls.items():
        if name == "read_without_state":
            probe.state_queries = ()
            fn = probe.read
        ts = []
        for _ in range(200):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        costs[name] = statistics.median(ts) * 1e6
    probe.close()
    dev = torch.device("cuda")
    a = torch.randn(N, N, device=dev, dtype=torch.bfloat16)
    b = torch.randn(N, N, device=dev, dtype=torch.bfloat16)
    for _ in range(20):
        torch.mm(a, b)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(50):
        torch.mm(a, b)
    torch.cuda.synchronize()
    per = max(1, int(0.1 / ((time.perf_counter() - t) / 50)))
    variants: dict[str, tuple[str, ...] | None] = {"none": None, "base": (), "all_state": STATE_QUERIES}
    variants.update({f"only_{q}": (q,) for q in STATE_QUERIES})
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, queries in variants.items():
            if queries is None:
                times[name].append(workload(a, b, 30, per, None))
                continue
            mon = Monitor(dev, backend=NvmlBackend(torch_index=0, state_queries=queries))
            mon.start()
            times[name].append(workload(a, b, 30, per, mon))
            mon.stop()
    base = statistics.median(times["none"])
    table = {k: {"median_s": statistics.median(v), "runs": v, "overhead_pct": (statistics.median(v) - base) / base * 100}
             for k, v in times.items()}
    json.dump({"query_us": costs, "workload": table, "device": torch.cuda.get_device_name(0)}, open(args.out, "w"),
              indent=1)
    for k, v in costs.items():
        print(f"{k:22s} {v:9.1f} µs")
    for k, v in table.items():
        print(f"{k:22s} {v['median_s']:.4f} s  {v['overhead_pct']:+.2f} %")


if __name__ == "__main__":
    main()
