"""The GPU's own state: clocks, temperature, power limit and clock-event (throttle) reasons per stage, the run's
verdict, and the settings in ``system.gpu.state`` — on a scripted NVML backend."""

from __future__ import annotations

import pytest
from monitor_fakes import FakeBackend, FakeClock

from wan_enhanced.monitor import Monitor
from wan_enhanced.monitor.device_state import device_state
from wan_enhanced.monitor.gpu_state import reason_keys
from wan_enhanced.report.build import report_from
from wan_enhanced.report.text import format_report

SW_POWER_CAP, IDLE, HW_THERMAL = 0x4, 0x1, 0x40


def _run(reasons_at) -> dict:
    """Total > {Load_DiT 1 s idle, Denoising > Step_0 2 s, Step_1 2 s}: ticks every 0.1 s of the fake clock."""
    clock = FakeClock(0.0)
    backend = FakeBackend(clock, lambda t: 90.0, reasons_at=reasons_at, sm_clock_at=lambda t: 1500.0 if t > 2 else 1980.0)
    mon = Monitor("cpu", sample_interval_s=0.1, backend=backend, clock=clock, sampler_thread=False)

    def run_for(seconds: float) -> None:
        for _ in range(round(seconds / 0.1)):
            clock.advance(0.1)
            mon.sampler.tick()

    with mon.stage("Total"):
        with mon.stage("Load_DiT"):
            run_for(1.0)
        with mon.stage("Denoising"):
            with mon.stage("Step_0"):
                run_for(2.0)
            with mon.stage("Step_1"):
                run_for(2.0)
    mon.stop()
    return report_from(mon.measure(), run_info={}, weights={}, system={})


def _stage(report: dict, name: str) -> dict:
    return next(s for s in report["stages"] if s["name"] == name)


def test_a_scripted_power_cap_interval_is_flagged_with_its_reason_and_share():
    # idle while loading; power-capped for the second half of Step_0 (t in (2, 3]); Step_1 runs free
    report = _run(lambda t: IDLE if t <= 1.0 else SW_POWER_CAP if 2.0 < t <= 3.0 else 0)
    s0, s1, load = _stage(report, "Step_0"), _stage(report, "Step_1"), _stage(report, "Load_DiT")
    assert s0["gpu_state"]["held_back"]["share"] == pytest.approx(0.5, abs=0.051)
    assert s0["gpu_state"]["held_back"]["reasons"] == {"sw_power_cap": pytest.approx(0.5, abs=0.051)}
    assert s1["gpu_state"]["held_back"]["share"] == 0 and s1["gpu_state"]["held_back"]["reasons"] == {}
    assert load["gpu_state"]["held_back"]["share"] == 0  # idle is not a hold-back
    assert s0["gpu_state"]["sm_clock_mhz"]["value"] == pytest.approx((1980 + 1500) / 2, rel=0.06)
    assert s0["gpu_state"]["sm_clock_min_mhz"]["value"] == 1500.0
    assert s0["gpu_state"]["power_limit_w"]["value"] == 700.0 and s0["gpu_state"]["temperature_max_c"]["value"] == 55
    gs = report["gpu_state"]
    assert [h["stage"] for h in gs["held_back_stages"]] == ["Step_*"]  # the steps are taken together
    assert gs["held_back_stages"][0]["share"] == pytest.approx(0.25, abs=0.03)
    assert gs["verdict"].startswith("held back in Step_* (25 % of its time: software power cap 25 %)"), gs["verdict"]
    tl = report["timeline"]  # the state at every read, for charts
    assert tl["clock_reasons"][-1] == 0 and SW_POWER_CAP in tl["clock_reasons"] and tl["sm_clock_mhz"][-1] == 1500.0
    assert len(tl["temperature_c"]) == len(tl["t_s"]) and tl["power_limit_w"][-1] == 700.0
    text = format_report(report)
    assert "held back 50 %: software power cap 50 %" in text  # the stage's row says it
    assert "GPU held back     : held back in Step_*" in text


def test_a_free_running_gpu_gets_the_not_held_back_verdict():
    report = _run(lambda t: IDLE if t <= 1.0 else 0)
    assert report["gpu_state"]["verdict"] == "not held back: no clock-event reason other than idle in any stage"
    assert report["gpu_state"]["held_back_stages"] == []


def test_without_clock_event_reasons_the_state_is_unavailable_with_the_reason():
    report = _run(None)
    s0 = _stage(report, "Step_0")
    assert s0["gpu_state"]["held_back"] == {"share": None, "reasons": {}, "reason": "clock-event reasons not supported (fake)"}
    assert s0["gpu_state"]["sm_clock_mhz"] == {"value": None, "unit": "MHz", "source": "unavailable",
                                               "reason": "clock-event reasons not supported (fake)"}
    assert report["gpu_state"]["verdict"] == "unavailable: clock-event reasons not supported (fake)"


def test_reason_bits_decode_to_keys_including_unknown_bits():
    assert reason_keys(0) == []
    assert reason_keys(SW_POWER_CAP | HW_THERMAL) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert reason_keys(0x1000) == ["bit_0x1000"]


class _FakeNvml:
    """pynvml stand-in: some queries answer, others raise as on a GPU that lacks them."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    class NVMLError(Exception):
        pass

    def nvmlDeviceGetMaxClockInfo(self, h, which):
        return {1: 1980, 2: 3201}[which]

    def nvmlDeviceGetApplicationsClock(self, h, which):
        raise self.NVMLError("Not Supported")

    def nvmlDeviceGetDefaultApplicationsClock(self, h, which):
        return {1: 1755, 2: 3201}[which]

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return 700000

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h):
        return 700000

    def nvmlDeviceGetPersistenceMode(self, h):
        return 1

    def nvmlDeviceGetEccMode(self, h):
        return (1, 1)

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h):
        return 5

    def nvmlDeviceGetCurrPcieLinkWidth(self, h):
        return 16

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h):
        return 5

    def nvmlDeviceGetMaxPcieLinkWidth(self, h):
        return 16

    def nvmlDeviceGetMigMode(self, h):
        raise self.NVMLError("Not Supported")

    def nvmlDeviceGetComputeMode(self, h):
        return 0

    def nvmlDeviceGetTemperature(self, h, which):
        return 41

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        class P:
            def __init__(self, pid, used):
                self.pid, self.usedGpuMemory = pid, used
        import os

        return [P(os.getpid(), 1 << 30), P(424242, 3 << 30)]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h):
        return []


def test_device_state_reads_each_setting_or_says_why_not():
    state = device_state(_FakeNvml(), object())
    assert state["max_clocks"] == {"value": {"sm_mhz": 1980, "mem_mhz": 3201}, "reason": None}
    assert state["application_clocks"]["value"] is None
    assert state["application_clocks"]["reason"] == "unavailable: NVMLError: Not Supported"
    assert state["mig_mode"]["value"] is None and "Not Supported" in state["mig_mode"]["reason"]
    assert state["power_limit_w"]["value"] == 700.0 and state["persistence_mode"]["value"] is True
    assert state["ecc"]["value"] == {"current": True, "pending": True}
    assert state["pcie"]["value"] == {"gen": 5, "width": 16, "max_gen": 5, "max_width": 16}
    assert state["other_processes"]["value"] == [{"pid": 424242, "used_gb": 3.0}]  # this process is left out
