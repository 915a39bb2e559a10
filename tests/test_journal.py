"""The journal: the report is rewritten atomically at each top-level stage end, so a run killed with SIGKILL
after Denoising leaves a readable report whose status says incomplete and whose Denoising is complete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wan_enhanced.bench.runner import outcome_of
from wan_enhanced.journal import Journal
from wan_enhanced.report.schema import load_report
from wan_enhanced.report.text import format_report

ROOT = Path(__file__).resolve().parents[1]

# Loaded by the child through PYTHONPATH: VAE decoding sleeps, so the test can kill the run after Denoising.
SLOW_DECODE = '''
import time
import wan_enhanced.pipeline as p
_decode = p.TI2VPipeline.decode
def decode(self, latents, **kw):
    time.sleep(60)
    return _decode(self, latents, **kw)
p.TI2VPipeline.decode = decode
'''


def _wait_for(path: Path, cond, timeout: float = 120.0) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            rep = json.loads(path.read_text())
            if cond(rep):
                return rep
        except (OSError, ValueError):
            pass  # not there yet (an atomic rewrite never shows half a file)
        time.sleep(0.05)
    raise AssertionError(f"{path}: condition not met in {timeout} s")


def test_sigkill_after_denoising_leaves_an_incomplete_report_with_denoising_complete(tmp_path):
    (tmp_path / "slow_decode.py").write_text(SLOW_DECODE)
    (tmp_path / "sitecustomize.py").write_text("import slow_decode  # noqa\n")
    report = tmp_path / "r.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT / "src")]))
    proc = subprocess.Popen([sys.executable, str(ROOT / "generate.py"), "--task", "tiny", "--quiet",
                             "--report_file", str(report)], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(report, lambda r: any(s["name"] == "Free_DiT" for s in r["stages"]))
        time.sleep(0.3)  # inside the slowed VAE_Decoding now
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    rep = load_report(report)  # readable: a complete JSON document, accepted by every reader
    assert rep["status"] == "incomplete"
    assert rep["journal"]["last_stage"] == "Free_DiT" and rep["journal"]["final"] is False
    assert rep["journal"]["pid"] == proc.pid
    st = {s["name"]: s for s in rep["stages"]}
    assert st["Denoising"]["incomplete"] is False and st["Denoising"]["duration_s"] > 0
    assert [s["name"] for s in rep["stages"] if s["parent"] == "Denoising"] == ["Step_0", "Step_1", "Step_2", "Step_3"]
    assert st["Total"]["incomplete"] is True  # it was open when the snapshot was written
    assert "VAE_Decoding" not in st
    assert rep["error"]["type"] == "Incomplete" and rep["error"]["stage"] == "Total"
    text = format_report(rep)
    assert f"incomplete (journal: written after stage Free_DiT by pid {proc.pid}" in text
    assert "that process is not running" in text
    # the suite reads it as a failed case with the kill named
    res = outcome_of(report, tmp_path / "none.log", -signal.SIGKILL)
    assert res.status == "failed" and res.error["type"] == "Incomplete"
    assert res.error["message"].endswith("; the process killed by SIGKILL")
    assert not list(tmp_path.glob(".r.json.*"))  # no temporary file left behind


def test_the_final_report_replaces_the_journal_and_says_how_much_it_cost(tmp_path):
    report = tmp_path / "r.json"
    subprocess.run([sys.executable, str(ROOT / "generate.py"), "--task", "tiny", "--quiet", "--report_file",
                    str(report)], check=True, capture_output=True, cwd=tmp_path)
    rep = load_report(report)
    assert rep["status"] == "ok"
    j = rep["journal"]
    top = [s for s in rep["stages"] if s["parent"] == "Total"]
    assert j["final"] is True and j["writes"] == len(top) and j["last_stage"] == top[-1]["name"]
    total = next(s for s in rep["stages"] if s["name"] == "Total")
    assert 0 < j["seconds"] <= total["untracked_s"] + 1e-3  # the writes lie in Total's remainder


def test_a_journal_that_cannot_write_never_stops_the_run():
    class Rec:
        depth, name = 1, "Load_DiT"

    calls = []

    def broken(path, obj):
        calls.append(path)
        raise OSError(28, "No space left on device")

    j = Journal("/x/r.json", lambda name, info: {"stage": name}, write=broken)
    j.on_stage_end(Rec())
    j.on_stage_end(Rec())  # disabled after the first failure
    assert calls == ["/x/r.json"] and j.writes == 0
    assert j.info(final=True)["failed"] == "OSError: [Errno 28] No space left on device"


@pytest.mark.parametrize("depth", [0, 2])
def test_only_top_level_stages_write(depth):
    class Rec:
        name = "Step_3"

    Rec.depth = depth
    writes = []
    Journal("r.json", lambda name, info: {}, write=lambda p, o: writes.append(p)).on_stage_end(Rec())
    assert writes == []
