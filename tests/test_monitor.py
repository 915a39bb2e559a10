"""Monitor on the CPU: nesting, timing, errors, unavailable GPU metrics, and the sampler logic
with a scripted NVML backend and clock."""

from __future__ import annotations

import time

import pytest
import torch
from monitor_fakes import FakeAllocator, FakeBackend, FakeClock

from wan_enhanced.monitor import Monitor, MonitorError
from wan_enhanced.monitor.backend import NullBackend, make_backend
from wan_enhanced.monitor.catalog import load_catalog, match_gpu, peak_bf16_tflops
from wan_enhanced.monitor.memory import MemoryTracker
from wan_enhanced.monitor.sampler import Sample, counter_energy, overlap_mean
from wan_enhanced.report.build import stage_dicts, timeline_dict

GPU_METRICS = ("sm", "sm_occupancy", "tensor_util", "dram_util", "compute_load", "power_w", "energy_j", "mfu")


def dicts(mon: Monitor) -> list[dict]:
    """The report's stage objects for the monitor's measurements (what a report would show)."""
    return stage_dicts(mon.measure())


def by_name(stages: list[dict]) -> dict[str, dict]:
    return {s["name"]: s for s in stages}


def test_nested_sleep_stages_sum_to_parent():
    mon = Monitor("cpu")
    with mon.stage("Total", comment="root") as total:
        with mon.stage("A"):
            time.sleep(0.12)
        with mon.stage("B", comment="bee"):
            with mon.stage("B1"):
                time.sleep(0.05)
            with mon.stage("B2"):
                time.sleep(0.05)
        mon.begin_window("C", comment="zeus")
        time.sleep(0.08)
        rec = mon.end_window("C")
    mon.stop()
    assert rec.name == "C" and rec.duration_s == pytest.approx(0.08, abs=0.05)
    assert total.duration_s is not None
    s = by_name(dicts(mon))
    kids = s["A"]["duration_s"] + s["B"]["duration_s"] + s["C"]["duration_s"]
    assert kids == pytest.approx(s["Total"]["duration_s"], rel=0.01)
    assert s["B1"]["duration_s"] + s["B2"]["duration_s"] == pytest.approx(s["B"]["duration_s"], rel=0.01)
    assert (s["Total"]["parent"], s["Total"]["depth"]) == (None, 0)
    assert (s["A"]["parent"], s["A"]["depth"]) == ("Total", 1)
    assert (s["B2"]["parent"], s["B2"]["depth"]) == ("B", 2)
    assert (s["C"]["parent"], s["C"]["comment"]) == ("Total", "zeus")
    assert s["B"]["comment"] == "bee"
    assert [x["name"] for x in dicts(mon)] == ["Total", "A", "B", "B1", "B2", "C"]
    for x in dicts(mon):
        assert x["end_s"] - x["start_s"] == pytest.approx(x["duration_s"], abs=1e-5)
        assert not x["failed"] and not x["incomplete"]


def test_ending_a_stage_that_is_not_open_is_a_clear_error():
    mon = Monitor("cpu", sampler=False)
    with pytest.raises(MonitorError, match="'Nope'.*not open"):
        mon.end_window("Nope")
    mon.begin_window("Outer")
    mon.begin_window("Inner")
    with pytest.raises(MonitorError, match="inner stage 'Inner' is still open"):
        mon.end_window("Outer")
    mon.end_window("Inner")
    mon.end_window("Outer")
    with pytest.raises(MonitorError, match="not open"):
        mon.end_window("Outer")
    mon.stop()
    with pytest.raises(MonitorError, match="stopped"):
        mon.begin_window("Late")


def test_exception_marks_stage_failed_and_closes_inner_windows():
    mon = Monitor("cpu", sampler=False)
    with pytest.raises(ZeroDivisionError):
        with mon.stage("Total"):
            with mon.stage("Denoising"):
                mon.begin_window("Step_0")
                _ = 1 / 0
    assert mon.failed_stage == "Step_0"
    assert mon.open_stages == []
    s = by_name(dicts(mon))
    assert s["Step_0"]["incomplete"] and s["Denoising"]["failed"] and s["Total"]["failed"]
    assert s["Denoising"]["error_type"] == "ZeroDivisionError"


def test_stop_closes_open_stages_as_incomplete():
    mon = Monitor("cpu", sampler=False)
    mon.begin_window("Total")
    mon.begin_window("Load")
    mon.stop()
    mon.stop()  # idempotent
    s = by_name(dicts(mon))
    assert s["Load"]["incomplete"] and s["Total"]["incomplete"]
    assert s["Total"]["end_s"] >= s["Load"]["end_s"]


def _walk_metrics(obj, path=""):
    if isinstance(obj, dict):
        if {"value", "unit", "source", "reason"} <= set(obj):
            yield path, obj
        else:
            for k, v in obj.items():
                yield from _walk_metrics(v, f"{path}.{k}")


def test_cpu_gpu_metrics_unavailable_with_reason_never_zero():
    mon = Monitor("cpu")
    with mon.stage("Total"):
        with mon.stage("Work"):
            mon.add_flops(1e9)
            time.sleep(0.02)
    mon.stop()
    for st in dicts(mon):
        for key in GPU_METRICS:
            m = st[key]
            assert m["value"] is None and m["source"] == "unavailable" and m["reason"], (key, m)
        for key, m in st["memory"].items():
            assert m["value"] is None and m["source"] == "unavailable", key
            assert "no CUDA device" in m["reason"]
        assert st["cpu_percent"]["source"] == "process_time" and st["host_rss_peak_gb"]["value"] > 0
    work = by_name(dicts(mon))["Work"]
    assert work["flops"]["value"] == 1e9 and work["tflops_per_s"]["value"] > 0
    assert work["mfu"]["reason"] == "no CUDA device"
    assert make_backend("cpu", None).sm_reason == "no CUDA device"
    assert make_backend("cuda", 0, enabled=False).sm_reason == "sampler disabled"


def test_flops_go_to_innermost_stage_and_sum_up():
    mon = Monitor("cpu", sampler=False)
    with mon.stage("Total"):
        with mon.stage("Denoising"):
            for i in range(3):
                with mon.stage(f"Step_{i}"):
                    mon.add_flops(10.0)
            mon.add_flops(5.0, source="estimate")
        with mon.stage("Load"):
            pass
    mon.add_flops(1.0)  # nothing open: unattributed, still in the run total
    mon.stop()
    s = by_name(dicts(mon))
    assert s["Step_1"]["flops"]["value"] == 10.0
    assert s["Denoising"]["flops"]["value"] == 35.0
    assert s["Denoising"]["flops"]["source"] == "analytic+estimate"
    assert s["Total"]["flops"]["value"] == 35.0
    assert s["Load"]["flops"]["value"] is None and s["Load"]["flops"]["reason"]
    assert mon.total_flops()[0] == 36.0


# --------------------------------------------------------------------------- scripted sampler

def _sm_profile(t: float) -> float:
    """SM % by time since the clock's start (100 s): 10 % loading for 1 s, then 90 % computing."""
    rel = t - 100.0
    return 10.0 if rel <= 1.0 + 1e-9 else 90.0


def _scripted_monitor(sm_source: str = "gpm", name: str | None = "NVIDIA H100 80GB HBM3", **kw):
    clock = FakeClock(100.0)
    backend = FakeBackend(clock, _sm_profile, sm_source=sm_source, **kw)
    mon = Monitor("cpu", sample_interval_s=0.1, backend=backend, clock=clock, sampler_thread=False,
                  device_name=name)
    return mon, clock, backend


def _run_for(mon: Monitor, clock: FakeClock, seconds: float, step: float = 0.1) -> None:
    for _ in range(round(seconds / step)):
        clock.advance(step)
        mon.sampler.tick()


def test_scripted_sm_gives_stage_sm_compute_load_and_energy():
    mon, clock, backend = _scripted_monitor()
    mon.start()
    with mon.stage("Total"):
        with mon.stage("Load"):
            _run_for(mon, clock, 1.0)
        with mon.stage("Compute"):
            mon.add_flops(989e12)  # 1 s worth of the H100's dense bf16 peak, over 2 s → 50 % MFU
            _run_for(mon, clock, 2.0)
        with mon.stage("Blip"):  # 30 ms inside a 90 % sample: short window
            clock.advance(0.03)
        _run_for(mon, clock, 0.1)
    mon.stop()
    s = by_name(dicts(mon))
    load, comp, blip = s["Load"], s["Compute"], s["Blip"]
    assert load["sm"] == {"value": 10.0, "unit": "%", "source": "gpm", "reason": None}
    assert load["compute_load"]["value"] == pytest.approx(10.0)
    assert comp["sm"]["value"] == pytest.approx(90.0)
    assert comp["compute_load"]["value"] == pytest.approx(180.0) and comp["compute_load"]["unit"] == "%·s"
    assert comp["sm_occupancy"]["value"] == pytest.approx(45.0)
    assert comp["tensor_util"]["value"] == pytest.approx(22.5)
    assert not comp["short_window"]
    assert blip["short_window"] and blip["sm"]["value"] == pytest.approx(90.0)
    assert "shorter than the 0.1 s sampling window" in blip["sm"]["reason"]
    # energy: counter difference for ≥ 1 s stages, power × time for short ones
    assert comp["energy_j"]["source"] == "nvml_energy" and comp["energy_j"]["value"] == pytest.approx(200.0)
    assert blip["energy_j"]["source"] == "nvml_power" and blip["energy_j"]["value"] == pytest.approx(3.0)
    assert comp["power_w"]["value"] == pytest.approx(100.0)
    assert comp["mfu"]["value"] == pytest.approx(50.0) and comp["mfu"]["source"] == "catalog"
    assert comp["tflops_per_s"]["value"] == pytest.approx(494.5)
    total_sm = s["Total"]["sm"]["value"]
    assert total_sm == pytest.approx((1.0 * 10 + 2.13 * 90) / 3.13, rel=1e-3)
    tl = timeline_dict(mon.measure())
    assert tl["sm_source"] == "gpm" and len(tl["t_s"]) == len(tl["sm_percent"]) == len(tl["power_w"])
    assert tl["sm_percent"][0] is None  # the priming read has no interval
    assert backend.closed


def test_short_stage_without_overlapping_sample_is_unavailable_not_zero():
    mon, clock, _ = _scripted_monitor()
    mon.start()
    with mon.stage("Tiny"):
        clock.advance(0.01)
    s = by_name(dicts(mon))["Tiny"]  # no sample taken yet after the stage
    assert s["short_window"] and s["sm"]["value"] is None and s["sm"]["source"] == "unavailable"
    assert "no sample overlaps" in s["sm"]["reason"]
    assert s["compute_load"]["value"] is None and "SM activity unavailable" in s["compute_load"]["reason"]
    mon.stop()  # final sample covers it now
    s = by_name(dicts(mon))["Tiny"]
    assert s["sm"]["value"] == pytest.approx(10.0) and s["compute_load"]["value"] == pytest.approx(0.1)


def test_nvml_util_fallback_is_labelled():
    mon, clock, _ = _scripted_monitor(sm_source="nvml_util")
    mon.start()
    with mon.stage("Work"):
        _run_for(mon, clock, 0.5)
    mon.stop()
    w = by_name(dicts(mon))["Work"]
    assert w["sm"]["source"] == "nvml_util" and "not SM activity" in w["sm"]["reason"]
    assert w["compute_load"]["value"] == pytest.approx(5.0) and "utilization.gpu" in w["compute_load"]["reason"]
    assert w["sm_occupancy"]["value"] is None and "GPM" in w["sm_occupancy"]["reason"]


def test_unknown_gpu_mfu_unavailable_and_no_power():
    mon, clock, _ = _scripted_monitor(name="NVIDIA Imaginary 9000", power_w=None)
    with mon.stage("Work"):
        mon.add_flops(1e12)
        _run_for(mon, clock, 1.2)
    mon.stop()
    w = by_name(dicts(mon))["Work"]
    assert w["mfu"]["value"] is None and w["mfu"]["reason"] == "GPU not in catalog (NVIDIA Imaginary 9000)"
    assert w["tflops_per_s"]["value"] == pytest.approx(1 / 1.2, rel=1e-3)
    assert w["energy_j"]["value"] is None and "not supported" in w["energy_j"]["reason"]


def test_monitor_mfu_is_flops_mfu(monkeypatch):
    from wan_enhanced.monitor import flops
    from wan_enhanced.report import window as core

    assert core.mfu is flops.mfu  # the tested function is the one production uses
    calls = []

    def fake_mfu(f, seconds, peak):
        calls.append((f, seconds, peak))
        return 12.5

    monkeypatch.setattr(core, "mfu", fake_mfu)
    mon, clock, _ = _scripted_monitor()
    with mon.stage("Work"):
        mon.add_flops(2e12)
        _run_for(mon, clock, 1.0)
    mon.stop()
    w = by_name(dicts(mon))["Work"]
    assert w["mfu"]["value"] == 12.5 and w["mfu"]["source"] == "catalog"
    assert calls and calls[-1][0] == 2e12 and calls[-1][2] == 989.0


class _Props:
    name = "Fake GPU 9000"
    total_memory = 80 << 30
    major, minor = 9, 0
    multi_processor_count = 132


def _fake_cuda(monkeypatch, host_count: int = 2) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: host_count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda idx: _Props())


def test_system_gpu_count_is_gpus_used_and_host_count_separate(monkeypatch):
    from wan_enhanced.monitor.system import collect_system_info, gpu_info

    cat = {"gpus": [{"key": "fake-9000", "match": ["Fake GPU 9000"], "bf16_dense_tflops": 500}]}
    _fake_cuda(monkeypatch, host_count=2)
    g = gpu_info("cuda", cat)
    assert g["count"] == 1 and g["host_count"] == 2  # one process on a 2-GPU host uses 1
    assert g["catalog_key"] == "fake-9000" and g["peak_bf16_tflops"] == 500.0
    assert gpu_info("cuda", cat, gpus_used=2)["count"] == 2
    assert collect_system_info("cuda", cat, gpus_used=2)["gpu"]["count"] == 2
    assert collect_system_info("cuda", cat)["gpu"]["host_count"] == 2


@pytest.mark.parametrize("rate", [0, "n/a", None])
def test_system_peak_uses_the_catalog_lookup(monkeypatch, rate):
    from wan_enhanced.monitor.system import gpu_info

    cat = {"gpus": [{"key": "fake-9000", "match": ["Fake GPU 9000"], "bf16_dense_tflops": rate}]}
    _fake_cuda(monkeypatch)
    g = gpu_info("cuda", cat)
    # the same answer as peak_bf16_tflops (the Monitor's MFU peak): no usable rate → None, never 0 or text
    assert g["peak_bf16_tflops"] is None and peak_bf16_tflops("Fake GPU 9000", cat)[0] is None
    assert g["catalog_key"] == "fake-9000"


def test_window_functions():
    s = [Sample(0, 0, energy_j=0.0), Sample(0, 1, sm=20, energy_j=50.0), Sample(1, 2, sm=80, energy_j=150.0)]
    assert overlap_mean(s, 0.5, 1.5, "sm") == (pytest.approx(50.0), pytest.approx(1.0))
    assert overlap_mean(s, 1.2, 1.2, "sm")[0] == 80  # zero-length window: the containing sample
    assert overlap_mean(s, 5, 6, "sm") == (None, 0.0)
    assert counter_energy(s, 0.5, 1.5) == pytest.approx(75.0)  # E(1.5) = 100 minus E(0.5) = 25
    assert counter_energy(s, 1.5, 3.0) is None  # beyond the last counter reading


def test_real_sampler_thread_runs_and_stops():
    clock_backend = FakeBackend(time.perf_counter, lambda t: 42.0)
    mon = Monitor("cpu", sample_interval_s=0.05, backend=clock_backend)
    with mon.stage("Total"):
        time.sleep(0.3)
    mon.stop()
    assert 4 <= clock_backend.reads <= 12
    total = dicts(mon)[0]
    assert total["sm"]["value"] == pytest.approx(42.0)
    assert mon.sampler._thread is None


# --------------------------------------------------------------------------- memory nesting

def test_nested_peaks_with_fake_allocator():
    fake = FakeAllocator()
    tracker = MemoryTracker(torch.device("cpu"))
    fake.install(tracker)  # pretend CUDA: the fake counters stand in for torch.cuda's
    fake.alloc(100)  # weights
    parent = tracker.push()
    c1 = tracker.push()
    fake.alloc(50)
    fake.free(50)
    tracker.pop(c1)
    c2 = tracker.push()  # this resets torch's peak: the parent must still remember 150
    fake.alloc(20)
    tracker.pop(c2)
    tracker.pop(parent)
    assert (c1.start, c1.peak, c1.end) == (100, 150, 100)
    assert (c2.start, c2.peak, c2.end) == (100, 120, 120)
    assert (parent.start, parent.peak, parent.end) == (100, 150, 120)
    assert parent.peak_reserved == 157
    with pytest.raises(RuntimeError):
        tracker.pop(parent)


def test_monitor_memory_metrics_with_fake_allocator():
    fake = FakeAllocator()
    gib = 1 << 30
    mon = Monitor("cpu", sampler=False)
    fake.install(mon.memory)
    fake.alloc(2 * gib)
    with mon.stage("Total"):
        with mon.stage("Load_DiT"):
            fake.alloc(8 * gib)
        with mon.stage("Denoising"):
            with mon.stage("Step_0"):
                fake.alloc(3 * gib)
                fake.free(3 * gib)
            with mon.stage("Step_1"):
                fake.alloc(1 * gib)
                fake.free(1 * gib)
    mon.stop()
    s = by_name(dicts(mon))
    mem = s["Denoising"]["memory"]
    assert mem["start_gb"]["value"] == 10 and mem["peak_gb"]["value"] == 13
    assert mem["static_gb"]["value"] == 10 and mem["dynamic_gb"]["value"] == 3
    assert s["Step_1"]["memory"]["peak_gb"]["value"] == 11
    assert s["Total"]["memory"]["peak_gb"]["value"] == 13
    assert s["Load_DiT"]["memory"]["end_gb"]["value"] == 10
    run = mon.measure()
    assert run.run_mem.peak == 13 * gib and run.memory_reason is None


# --------------------------------------------------------------------------- catalog

def test_catalog_matches_torch_names():
    cat = load_catalog()
    keys = {e["key"] for e in cat["gpus"]}
    assert {"rtx-4090", "rtx-5090", "rtx-pro-6000-blackwell", "l40s", "a100-80gb-sxm", "h100-sxm",
            "h200-sxm"} <= keys
    assert match_gpu("NVIDIA H100 80GB HBM3")["key"] == "h100-sxm"
    assert match_gpu("NVIDIA H200")["key"] == "h200-sxm"
    assert match_gpu("NVIDIA GeForce RTX 4090")["key"] == "rtx-4090"
    assert match_gpu("NVIDIA RTX PRO 6000 Blackwell Workstation Edition")["key"] == "rtx-pro-6000-blackwell"
    assert match_gpu("NVIDIA A100-SXM4-80GB")["key"] == "a100-80gb-sxm"
    assert match_gpu("NVIDIA H100 PCIe") is None  # a different part: never guessed
    assert match_gpu("NVIDIA H200 NVL") is None
    assert match_gpu("NVIDIA GeForce RTX 4090 D") is None
    assert peak_bf16_tflops("NVIDIA H100 80GB HBM3")[0] == 989
    assert peak_bf16_tflops("Some GPU") == (None, "GPU not in catalog (Some GPU)")
    for e in cat["gpus"]:
        assert e["bf16_dense_tflops"] > 0 and e["memory_gb"] > 0
        for price in ("purchase_usd", "hourly_usd"):
            assert {"source", "date"} <= set(e[price])


def test_catalog_env_override(tmp_path, monkeypatch):
    p = tmp_path / "gpus.json"
    p.write_text('{"gpus": [{"key": "x", "match": ["Imaginary"], "bf16_dense_tflops": 100}]}')
    monkeypatch.setenv("WAN_ENHANCED_GPU_CATALOG", str(p))
    assert match_gpu("NVIDIA Imaginary 9000")["key"] == "x"
    p.write_text("not json")
    with pytest.raises(ValueError, match="not JSON"):
        load_catalog()


def test_null_backend_reads_nothing():
    b = NullBackend("why")
    r = b.read()
    assert r.sm is None and r.power_w is None and b.memory_used_bytes() is None and b.sm_reason == "why"


def test_nan_readings_become_gaps_and_last_sample_waits_for_gpm():
    clock = FakeClock()
    backend = FakeBackend(clock, lambda t: float("nan"))
    mon = Monitor("cpu", backend=backend, clock=clock, sampler_thread=False)
    with mon.stage("Work"):
        clock.advance(0.2)
        mon.sampler.tick()
    mon.stop()
    s = dicts(mon)[0]
    assert s["sm"]["value"] is None and s["sm"]["source"] == "unavailable"
    assert all(v is None for v in timeline_dict(mon.measure())["sm_percent"])

    real = FakeBackend(time.perf_counter, lambda t: 50.0, min_interval_s=0.1)
    mon = Monitor("cpu", backend=real, sampler_thread=False)
    mon.start()
    t0 = time.perf_counter()
    mon.stop()  # the final GPM sample must come ≥ 0.1 s after the priming one
    assert time.perf_counter() - t0 >= 0.09
    samples = mon.sampler.samples()
    assert samples[-1].t1 - samples[-1].t0 >= 0.09


# --------------------------------------------------------------------------- typed measurements, energy at edges

def _two_level_power(t: float) -> float:
    """Counter (J) of a GPU at 50 W until clock 101 s, then 150 W (clock starts at 100 s)."""
    rel = t - 100.0
    return 50.0 * min(rel, 1.0) + 150.0 * max(0.0, rel - 1.0)


def _energy_run(**kw):
    """Samples only at 100 s and 102 s; a 1.5 s stage from 100.3 s to 101.8 s and a 0.3 s one after it."""
    clock = FakeClock(100.0)
    backend = FakeBackend(clock, lambda t: 50.0, energy_at=_two_level_power, **kw)
    mon = Monitor("cpu", sample_interval_s=0.1, backend=backend, clock=clock, sampler_thread=False)
    mon.start()
    clock.advance(0.3)
    with mon.stage("Long"):
        clock.advance(1.5)
    with mon.stage("Short"):
        clock.advance(0.1)
    clock.advance(0.1)
    mon.sampler.tick()
    mon.stop()
    return mon, backend


def test_energy_is_the_counter_difference_at_the_window_edges():
    mon, backend = _energy_run()
    run = mon.measure()
    long_, short = (s.window for s in run.stages)
    # edges: E(101.8) - E(100.3) = (50 + 120) - 15; the timeline (reads at 100 and 102 only) would say 150
    assert long_.energy_j.value == pytest.approx(155.0) and long_.energy_j.source == "nvml_energy"
    assert long_.energy_method == "counter-edges"
    # shorter than ENERGY_COUNTER_MIN_S: the sampler's mean power × duration, not a quantized counter difference
    assert short.energy_method == "power-x-time-short" and short.energy_j.source == "nvml_power"
    assert short.energy_j.value == pytest.approx(100.0 * 0.1)
    # the whole run: counter at start() and stop()
    assert run.run.energy_method == "counter-edges" and run.run.energy_j.value == pytest.approx(_two_level_power(102.0))
    assert backend.energy_reads >= 6  # start, stop and two edges per stage
    d = by_name(dicts(mon))
    assert d["Long"]["energy_j"] == {"value": 155.0, "unit": "J", "source": "nvml_energy", "reason": None}
    assert "energy counter updates only every ~100 ms" in d["Short"]["energy_j"]["reason"]


def test_energy_without_edge_reads_falls_back_to_the_timeline_then_to_power():
    mon, _ = _energy_run(edge_energy=False)
    long_ = mon.measure().stages[0].window
    assert long_.energy_method == "counter-timeline" and long_.energy_j.value == pytest.approx(150.0)
    mon, _ = _energy_run(energy_counter=False)
    long_ = mon.measure().stages[0].window
    assert long_.energy_method == "power-x-time" and long_.energy_j.value == pytest.approx(100.0 * 1.5)
    assert by_name(dicts(mon))["Long"]["energy_j"]["reason"] == "energy counter unavailable: mean power × duration"


def test_measurements_are_typed_in_base_units():
    from wan_enhanced.monitor import Metric, RunMeasurement, StageMeasurement, WindowMeasurement
    from wan_enhanced.monitor.metrics import NEEDS_GPM, NO_SAMPLE

    fake = FakeAllocator()
    mon, clock, _ = _scripted_monitor(sm_source="nvml_util")
    fake.install(mon.memory)
    with mon.stage("Total"):
        fake.alloc(3 << 30)
        mon.add_flops(7.0)
        _run_for(mon, clock, 1.0)
    mon.stop()
    run = mon.measure()
    assert isinstance(run, RunMeasurement) and isinstance(run.run, WindowMeasurement)
    st = run.stages[0]
    assert isinstance(st, StageMeasurement) and st.record.name == "Total" and st.flops == 7.0
    w = st.window
    assert w.sm == Metric(10.0, "%", "nvml_util") and w.sm_occupancy == Metric.missing("%", NEEDS_GPM)
    assert w.nvml_used_bytes == Metric(3 << 30, "B", "nvml") and w.cpu_s.unit == "s"
    assert st.record.mem.peak == 3 << 30  # bytes; GiB and rounding are the report's
    assert Metric(float("nan"), "W", "nvml_power") == Metric.missing("W", None)  # type: ignore[arg-type]
    assert Metric.of(None, "W", "nvml_power").reason == NO_SAMPLE
    assert not hasattr(mon, "stage_dicts")  # stage objects are the report's: report.build.stage_dicts


def test_monitor_knows_nothing_of_wan_or_the_report():
    import ast
    import pathlib

    import wan_enhanced.monitor as pkg
    from wan_enhanced.monitor import backend, flops

    for path in pathlib.Path(pkg.__file__).parent.glob("*.py"):
        mods = {(node.level, node.module or "") for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.ImportFrom)}
        outside = {m for lvl, m in mods if lvl == 2 and m != ""} - {"errors"}
        # nothing in the monitor reaches the report, the stage registry or the models
        assert outside == set(), (path.name, outside)
    assert not hasattr(backend.NvmlBackend, "energy_supported")
    assert not hasattr(flops, "dit_forward_flops") and not hasattr(flops, "FlopCount")  # no re-export shim


def test_a_slow_energy_counter_stays_off_the_stage_edges():
    """A read costing milliseconds (an H200 VM: ~3 ms) would idle the GPU at every edge: the sampler's reads give
    the energy instead, interpolated, and the report says so."""
    clock = FakeClock(0.0)
    backend = FakeBackend(clock, lambda t: 50.0)
    backend.energy_read_s = 3e-3
    mon = Monitor("cpu", sample_interval_s=0.1, backend=backend, clock=clock, sampler_thread=False)
    with mon.stage("Total"):
        for _ in range(20):
            clock.advance(0.1)
            mon.sampler.tick()
    mon.stop()
    assert backend.energy_reads == 0  # no read on the caller's path
    total = dicts(mon)[0]
    assert total["energy_j"]["value"] == pytest.approx(100.0 * 2.0, rel=1e-6)  # 100 W × 2 s, from the timeline
    assert "one read costs 3.0 ms here" in mon.device_facts.energy_note
