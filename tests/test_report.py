"""Report: build on the CPU, JSON round trip, text format, and format_report.py's errors."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from monitor_fakes import FakeAllocator, FakeBackend, FakeClock

from wan_enhanced.errors import ReportError
from wan_enhanced.monitor import Monitor
from wan_enhanced.report import SCHEMA_VERSION, build_report, format_report, load_report, write_report
from wan_enhanced.report.schema import metric, peak_memory_gb, write_json_atomic
from wan_enhanced.report.text import error_text, report_main

ROOT = Path(__file__).resolve().parent.parent
TOTAL_KEYS = {"wall_s", "denoise_s", "s_per_step", "first_step_s", "mean_rest_step_s", "peak_memory_gb",
              "peak_reserved_gb", "static_memory_gb", "dynamic_memory_gb", "mean_sm_percent", "compute_load", "energy_j", "flops",
              "tflops_per_s", "mfu"}
STAGE_KEYS = {"name", "parent", "depth", "comment", "start_s", "end_s", "duration_s", "memory", "sm",
              "sm_occupancy", "tensor_util", "dram_util", "short_window", "compute_load", "power_w", "energy_j",
              "flops", "tflops_per_s", "mfu", "cpu_percent", "host_rss_peak_gb"}


def _cpu_run(steps: int = 3) -> Monitor:
    mon = Monitor("cpu", sample_interval_s=0.05)
    with mon.stage("Total", "End to end"):
        with mon.stage("Load_DiT", "random weights"):
            time.sleep(0.01)
        with mon.stage("Denoising", f"{steps} steps"):
            for i in range(steps):
                with mon.stage(f"Step_{i}"):
                    mon.add_flops(1e9)
                    time.sleep(0.02 if i == 0 else 0.01)
        with mon.stage("VAE_Decoding"):
            mon.add_flops(5e8, source="estimate")
    return mon


def _report(mon: Monitor, **kw) -> dict:
    return build_report(mon, run={"task": "tiny", "size": "64*64", "sample_steps": 3},
                        weights={"kind": "random", "source": None, "note": "random init"}, **kw)


def test_cpu_report_builds_formats_and_round_trips(tmp_path):
    report = _report(_cpu_run())
    assert report["schema"] == "wan-enhanced/report" and report["schema_version"] == SCHEMA_VERSION == 1
    assert report["status"] == "ok" and report["error"] is None
    assert TOTAL_KEYS <= set(report["totals"])
    for st in report["stages"]:
        assert STAGE_KEYS <= set(st)
    assert [s["index"] for s in report["steps"]] == [0, 1, 2]
    t = report["totals"]
    assert t["first_step_s"]["value"] > t["mean_rest_step_s"]["value"] > 0
    assert t["flops"]["value"] == 3.5e9 and t["flops"]["source"] == "analytic+estimate"
    assert t["tflops_per_s"]["value"] > 0 and t["tflops_per_s"]["reason"].startswith("Denoising's FLOPs ÷ its ")
    for key in ("peak_memory_gb", "peak_reserved_gb", "static_memory_gb", "dynamic_memory_gb", "mean_sm_percent",
                "compute_load", "energy_j", "mfu"):
        assert t[key]["value"] is None and t[key]["source"] == "unavailable" and t[key]["reason"], key
    assert report["system"]["gpu"] is None and report["system"]["torch"]
    assert set(report["outputs"]) == {"video", "frames", "width", "height"}
    assert len(report["timeline"]["t_s"]) >= 2 and report["timeline"]["sm_source"] == "unavailable"

    path = write_report(tmp_path / "sub" / "r.json", report)
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temp file left behind
    assert load_report(path) == json.loads(json.dumps(report))

    text = format_report(load_report(path))
    assert "[Execution Trace Analysis]" in text and "[Summary]" in text and "[Metric sources]" in text
    header = next(line for line in text.splitlines() if line.startswith("Stage Name"))
    for col in ("Time (s)", "SM %", "Load", "Mem Start", "Mem End", "Peak Mem", "Mem Δ", "Comment"):
        assert col in header
    step_row = next(line for line in text.splitlines() if line.strip().startswith("Step_1"))
    assert step_row.startswith("    Step_1")  # nested twice
    cells = [c.strip() for c in step_row.split("|")]
    assert cells[2:8] == ["n/a"] * 6  # SM, load and memory: n/a, never 0
    assert "no CUDA device" in text
    assert "Time = wall time" in text  # not claimed CUDA-synchronized on the CPU


def test_metric_helper_never_zero_for_unknown():
    assert metric(None, "%", "gpm") == {"value": None, "unit": "%", "source": "unavailable",
                                        "reason": "not measured"}
    assert metric(float("nan"), "W", "nvml_power", "x")["source"] == "unavailable"
    assert metric(0.0, "%", "gpm") == {"value": 0.0, "unit": "%", "source": "gpm", "reason": None}


def test_failed_run_records_error_and_stage():
    mon = Monitor("cpu", sampler=False)
    err = None
    try:
        with mon.stage("Total"):
            with mon.stage("VAE_Decoding"):
                raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB\nmore detail")
    except RuntimeError as exc:
        err = exc
    report = _report(mon, status="oom", error=err)
    assert report["error"] == {"stage": "VAE_Decoding", "type": "RuntimeError",
                               "message": "CUDA out of memory. Tried to allocate 2 GiB"}
    report2 = _report(mon, status="failed", error={"stage": "X", "type": "E", "message": "m", "saved_latents": "p"})
    assert report2["error"]["saved_latents"] == "p"
    text = format_report(report)
    assert "Status            : oom" in text and "[failed]" in text
    with pytest.raises(ValueError):
        _report(mon, status="weird")


def test_many_steps_are_collapsed():
    clock = FakeClock()
    mon = Monitor("cpu", backend=FakeBackend(clock, lambda t: 95.0), clock=clock, sampler_thread=False)
    with mon.stage("Total"):
        with mon.stage("Denoising"):
            for i in range(50):
                with mon.stage(f"Step_{i}"):
                    clock.advance(0.25)
                    mon.sampler.tick()
    report = _report(mon)
    assert len(report["steps"]) == 50
    text = format_report(report)
    names = [line.split("|")[0].strip() for line in text.splitlines() if "|" in line]
    assert {"Step_0", "Step_1", "Step_2", "Step_48", "Step_49"} <= set(names)
    assert "Step_10" not in names
    assert "45 steps collapsed (Step_3 … Step_47): mean 0.250 s" in text
    assert "mean SM 95.0 %" in text
    full = format_report(report, collapse_over=100)
    assert "Step_10 " in full


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_load_report_errors(tmp_path):
    with pytest.raises(ReportError, match="not found: .*missing.json"):
        load_report(tmp_path / "missing.json")
    with pytest.raises(ReportError, match="bad.json: not JSON"):
        load_report(_write(tmp_path, "bad.json", "{nope"))
    with pytest.raises(ReportError, match="unsupported schema_version 2"):
        load_report(_write(tmp_path, "v2.json", json.dumps({"schema": "wan-enhanced/report", "schema_version": 2})))
    with pytest.raises(ReportError, match="schema='other'"):
        load_report(_write(tmp_path, "o.json", json.dumps({"schema": "other", "schema_version": 1})))
    with pytest.raises(ReportError, match="not an object"):
        load_report(_write(tmp_path, "l.json", "[1, 2]"))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "format_report.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_format_report_script(tmp_path):
    good = write_report(tmp_path / "good.json", _report(_cpu_run(2)))
    v2 = _write(tmp_path, "v2.json", json.dumps({"schema": "wan-enhanced/report", "schema_version": 2}))
    bad = _write(tmp_path, "bad.json", "not json at all")
    missing = tmp_path / "missing.json"
    ok = _cli(str(good))
    assert ok.returncode == 0, ok.stderr
    assert "[Execution Trace Analysis]" in ok.stdout and "Step_1" in ok.stdout
    for path, needle in ((missing, "not found"), (bad, "not JSON"), (v2, "schema_version 2")):
        r = _cli(str(path))
        assert r.returncode == 2 and r.stdout == ""
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0] and str(path) in lines[0]
    assert _cli().returncode == 2
    assert report_main([str(missing)]) == 2


def test_write_report_turns_nan_into_null(tmp_path):
    report = _report(_cpu_run(1))
    report["timeline"]["power_w"] = [1.0, float("nan"), float("inf")]
    report["run"]["odd"] = Path("/x")
    p = write_report(tmp_path / "r.json", report)
    back = load_report(p)
    assert back["timeline"]["power_w"] == [1.0, None, None] and back["run"]["odd"] == "/x"


def test_totals_carry_peak_allocated_and_peak_reserved():
    gib = 1 << 30
    fake = FakeAllocator()
    mon = Monitor("cpu", sampler=False)
    fake.install(mon.memory)
    # the caching allocator holds 1 GiB more than the tensors use
    mon.memory.stats_fn = lambda: (fake.allocated, fake.peak, fake.allocated + gib, fake.peak + gib)
    with mon.stage("Total"):
        with mon.stage("Denoising"):
            fake.alloc(3 * gib)
            fake.free(3 * gib)
    report = _report(mon)
    t = report["totals"]
    assert t["peak_memory_gb"]["value"] == 3.0 and t["peak_memory_gb"]["reason"] == "max allocated over the run"
    assert t["peak_reserved_gb"]["value"] == 4.0 and t["peak_reserved_gb"]["unit"] == "GiB"
    assert "reserved" in t["peak_reserved_gb"]["reason"]
    assert peak_memory_gb(report, "allocated") == 3.0 and peak_memory_gb(report, "reserved") == 4.0
    text = format_report(report)
    assert "Peak allocated    : 3.00 GiB" in text and "Peak reserved     : 4.00 GiB" in text


def _small_values_report() -> dict:
    report = _report(_cpu_run(2))
    t = report["totals"]
    t["tflops_per_s"] = metric(0.0123, "TFLOP/s", "computed", None)
    t["mfu"] = metric(0.004, "%", "catalog", None)
    t["energy_j"] = metric(0.04, "J", "nvml_energy", None)
    t["wall_s"] = metric(0.003, "s", "timer", None)
    report["stages"][1]["duration_s"] = 0.004  # Load_DiT
    return report


def test_small_nonzero_values_never_print_as_zero():
    text = format_report(_small_values_report())
    summary = text.split("[Summary]")[1].split("[Metric sources]")[0]
    lines = {line.split(":", 1)[0].strip(): line for line in summary.splitlines() if ":" in line}
    assert "0.012 TFLOP/s" in lines["Throughput"]
    assert "0.004 %" in lines["MFU"]
    assert "0.04 J" in lines["Energy"]
    assert "0.003 s" in lines["Total wall time"]
    row = next(line for line in text.splitlines() if line.strip().startswith("Load_DiT"))
    assert row.split("|")[1].strip() == "0.004"
    assert "0.0 TFLOP/s" not in text and "0.00 %" not in text and "0.0 J" not in text


@pytest.mark.parametrize("message", ["decoder exploded", "RuntimeError: decoder exploded"])
def test_error_type_printed_once(message):
    report = _report(_cpu_run(1))
    report["status"] = "failed"
    report["error"] = {"stage": "VAE_Decoding", "type": "RuntimeError", "message": message}
    text = format_report(report)
    assert "Error             : RuntimeError: decoder exploded (stage VAE_Decoding)" in text
    assert "RuntimeError: RuntimeError" not in text
    assert error_text({"type": "E", "message": ""}) == "E" and error_text(None) == ""


def test_gpu_line_shows_gpus_used_not_host_count():
    report = _report(_cpu_run(1))
    report["system"]["gpu"] = {"name": "NVIDIA H200", "count": 1, "host_count": 2, "memory_total_gb": 139.8,
                               "driver": "x", "catalog_key": None}
    assert "GPU               : NVIDIA H200 ×1 used (host has 2), 139.8 GiB" in format_report(report)
    multi = copy.deepcopy(report)
    multi["parallel"] = {"world_size": 2}
    assert "NVIDIA H200 ×2 used (host has 2)" in format_report(multi)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_umask_mode_not_0600(tmp_path, umask):
    old = os.umask(umask)
    try:
        r = write_report(tmp_path / "r.json", _report(_cpu_run(1)))
        j = write_json_atomic(tmp_path / "m.json", {"a": 1}, indent=2)
    finally:
        os.umask(old)
    for p in (r, j):
        assert (p.stat().st_mode & 0o777) == 0o666 & ~umask, oct(p.stat().st_mode)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.json", "r.json"]
    assert j.read_text() == '{\n  "a": 1\n}\n'


def test_one_value_accessor_everywhere():
    from wan_enhanced.bench import reportdata
    from wan_enhanced.report import text
    from wan_enhanced.report import values as metrics

    assert text.value_of is metrics.value_of and reportdata.value_of is metrics.value_of
    assert not hasattr(text, "_v") and not hasattr(reportdata, "mval")
    v = metrics.value_of
    assert v({"value": 2.5}) == 2.5 and v(3) == 3 and v({"value": None}) is None
    assert v(float("nan")) is None and v({"value": float("inf")}) is None and v(True) is None and v("1") is None


def _rank_report(flops: float, with_energy: bool) -> dict:
    clock = FakeClock()
    mon = Monitor("cpu", backend=FakeBackend(clock, lambda t: 80.0, power_w=100.0 if with_energy else None),
                  clock=clock, sampler_thread=False, device_name="NVIDIA H100 80GB HBM3")
    with mon.stage("Total"):
        with mon.stage("Denoising"):
            for i in range(2):
                with mon.stage(f"Step_{i}"):
                    mon.add_flops(flops)
                    clock.advance(0.6)
                    mon.sampler.tick()
                    with mon.stage("CFG_Exchange"):
                        clock.advance(0.05)
    return _report(mon)


def test_multi_gpu_merge_goes_through_the_report_builder():
    from types import SimpleNamespace

    from wan_enhanced.report import build
    from wan_enhanced.run import merge_ranks

    par = SimpleNamespace(world_size=2, ulysses_size=1, cfg_parallel=True)
    main, other = _rank_report(1e12, True), _rank_report(3e12, True)
    main["system"]["gpu"] = {"name": "NVIDIA H100 80GB HBM3", "count": 1}
    assert merge_ranks(main, None, par) is main and "parallel" not in main
    merged = merge_ranks(copy.deepcopy(main), [main, other], par)
    assert merged == build.merge_rank_reports(copy.deepcopy(main), [main, other], world_size=2, ulysses_size=1,
                                              cfg_parallel=True)
    p = merged["parallel"]
    assert (p["world_size"], p["ulysses_size"], p["cfg_parallel"]) == (2, 1, True)
    assert "all-gather of the two noise predictions" in p["communication"]["cfg_exchange"]
    assert p["communication"]["ulysses_all_to_all"] == "none"
    r0 = p["ranks"][0]
    assert [s["name"] for s in r0["stages"]] == ["Total", "Denoising"]  # no steps, no exchanges
    assert r0["communication_s"] == pytest.approx(0.1) and r0["status"] == "ok"
    t = merged["totals"]
    assert t["flops"] == {"value": 8e12, "unit": "FLOP", "source": "sum over 2 ranks",
                          "reason": "all FLOPs recorded in the run"}
    assert t["mfu"]["source"] == "mean over 2 ranks" and t["mfu"]["unit"] == "%"
    assert t["mfu"]["value"] == pytest.approx((main["totals"]["mfu"]["value"] + other["totals"]["mfu"]["value"]) / 2)
    assert t["energy_j"]["source"] == "sum over 2 ranks"
    assert merged["system"]["gpu"]["count"] == 2
    no_power = merge_ranks(copy.deepcopy(main), [main, _rank_report(1e12, False)], par)
    assert no_power["totals"]["energy_j"] == {"value": None, "unit": "J", "source": "unavailable",
                                              "reason": "not available on every one of the 2 ranks"}
