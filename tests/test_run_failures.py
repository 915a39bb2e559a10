"""A run that fails still writes its report, names the failing stage, keeps the latents, and exits
with one error line: 1 for a failure, 2 for bad input; bad output paths and odd values exit 2 first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wan_enhanced.errors import WeightsError
from wan_enhanced.pipeline import TI2VPipeline
from wan_enhanced.run import run_generation

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "generate.py"), "--task", "tiny", "--device", "cpu",
                           "--quiet", *args], capture_output=True, text=True, timeout=180)


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]


def test_decode_failure_keeps_report_stage_and_latents(tiny_cfg, tmp_path, monkeypatch):
    def broken_decode(self, latents, **kw):
        with self.stage("VAE_Decoding", "VAE decode"):
            raise RuntimeError("decoder exploded")

    monkeypatch.setattr(TI2VPipeline, "decode", broken_decode)
    cfg = tiny_cfg(save_file=str(tmp_path / "v.mp4"), report_file=str(tmp_path / "r.json"))
    out = run_generation(cfg, progress=False)
    assert out.exit_code == 1 and out.status == "failed"
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["status"] == "failed"
    assert report["error"]["stage"] == "VAE_Decoding"
    assert report["error"]["type"] == "RuntimeError"
    assert report["error"]["message"].startswith("decoder exploded (denoised latents kept in ")
    kept = torch.load(tmp_path / "v.mp4.latents.pt")
    assert kept.shape == (1, 8, 3, 4, 4)
    failed = {s["name"] for s in report["stages"] if s.get("failed")}
    assert failed == {"Total", "VAE_Decoding"}  # the denoising steps succeeded


def test_weights_error_is_exit_2_with_a_report(tiny_cfg, tmp_path, monkeypatch):
    def broken_load(self):
        with self.stage("Load_DiT", "Model Load (DiT)"):
            raise WeightsError("ck/transformer/x.safetensors: missing key blocks.0.attn1.to_q.weight")

    monkeypatch.setattr(TI2VPipeline, "load_dit", broken_load)
    out = run_generation(tiny_cfg(report_file=str(tmp_path / "r.json")), progress=False)
    assert out.exit_code == 2
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["error"]["stage"] == "Load_DiT" and "missing key" in report["error"]["message"]


def test_unwritable_video_is_a_failed_run_not_a_success(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    proc = _cli("--save_file", str(blocker / "v.mp4"))
    assert proc.returncode == 2
    assert _error_lines(proc) == [f"error: --save_file: '{blocker}/v.mp4' cannot be written ({blocker} is not a "
                                  "writable directory)"]


@pytest.mark.parametrize("args,expected", [
    (["--sample_shift", "nan"], "--sample_shift: nan is not allowed; must be a finite number"),
    (["--sample_guide_scale", "inf"], "--sample_guide_scale: inf is not allowed; must be a finite number"),
    (["--base_seed", "99999999999999999999999"], "--base_seed: 99999999999999999999999 is not allowed"),
    (["--device", "cudafoo"], "--device: 'cudafoo' is not allowed; allowed: cuda, cuda:N, cpu"),
    (["--save_latents", "/"], "--save_latents: '/' is a directory"),
])
def test_more_bad_values_exit_2(args, expected, tmp_path):
    proc = _cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = _error_lines(proc)
    assert len(lines) == 1 and expected in lines[0], proc.stderr


def test_negative_seed_means_random_and_is_recorded(tiny_cfg):
    cfg = tiny_cfg(base_seed=-1)
    assert 0 <= cfg.base_seed < 2**63


def test_models_are_released_once_no_stage_needs_them(tiny_cfg):
    pipe = TI2VPipeline(tiny_cfg(), progress=False)
    pipe.generate()
    assert pipe.text_encoder is None and pipe.dit is None and pipe.vae is not None


def test_save_latents_and_report_in_new_folders(tmp_path):
    lat, rep = tmp_path / "a" / "l.pt", tmp_path / "b" / "r.json"
    proc = _cli("--save_latents", str(lat), "--report_file", str(rep))
    assert proc.returncode == 0, proc.stderr
    assert torch.load(lat).shape == (1, 8, 3, 4, 4)
    assert json.loads(rep.read_text())["status"] == "ok"
