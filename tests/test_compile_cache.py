"""Compile caches that persist and travel (issue 17, lever 1): the project cache directory, artifacts saved under
a key of the machine, packages and settings, loaded only for the same key — a mismatch is said, never silent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wan_enhanced import compile_cache as cc

ROOT = Path(__file__).resolve().parents[1]


def _key(**kw):
    return {**cc.cache_key(torch.device("cpu"), {"task": "tiny", "size": "64*64", "frame_num": 9, "compile": "blocks",
                                                   "attention_backend": "auto"}), **kw}


def test_the_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(cc.CACHE_ENV, str(tmp_path / "mine"))
    assert cc.default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(cc.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cc.default_cache_dir() == tmp_path / "xdg" / "wan-enhanced"


def test_the_compilers_caches_go_to_the_project_dir_unless_the_user_set_them(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("FLASH_ATTENTION_CUTE_DSL_CACHE_DIR", raising=False)
    monkeypatch.delenv(cc.FA4_CACHE_SWITCH, raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", "/my/triton")
    env = cc.use_cache_dir(tmp_path)
    assert env == {"TORCHINDUCTOR_CACHE_DIR": f"{tmp_path / 'inductor'} (set by wan-enhanced)",
                   "TRITON_CACHE_DIR": "/my/triton (set by the user)",
                   "FLASH_ATTENTION_CUTE_DSL_CACHE_DIR": f"{tmp_path / 'fa4_cute'} (set by wan-enhanced)",
                   cc.FA4_CACHE_SWITCH: "1 (set by wan-enhanced)"}
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor") and (tmp_path / "inductor").is_dir()


def test_artifacts_load_only_for_their_key_and_a_mismatch_names_the_field(monkeypatch, tmp_path):
    saved, loaded = [], []
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: (b"ARTIFACTS", None))
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", lambda data: loaded.append(data))
    key = _key()
    assert cc.load_artifacts(tmp_path, key)[0] == "none"
    path = cc.save_artifacts(tmp_path, key)
    saved.append(path)
    assert path == tmp_path / "artifacts" / f"{cc.key_id(key)}.bin" and path.read_bytes() == b"ARTIFACTS"
    assert json.loads(path.with_suffix(".json").read_text())["key"] == key
    status, reason = cc.load_artifacts(tmp_path, key)
    assert status == "loaded" and loaded == [b"ARTIFACTS"] and reason.startswith(str(path))
    other = _key(torch="9.9.9", size="96*64")
    status, reason = cc.load_artifacts(tmp_path, other)
    assert status == "mismatch" and loaded == [b"ARTIFACTS"]  # not loaded
    assert f"size '64*64' (this run: '96*64'); torch {key['torch']!r} (this run: '9.9.9')" in reason
    assert reason.endswith("not loaded (compiling from scratch; `wan-enhanced warmup` here makes matching ones)")


def test_a_broken_artifact_file_is_said_and_the_run_compiles(monkeypatch, tmp_path):
    def refuse(data):
        raise RuntimeError("bad magic")

    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", refuse)
    key = _key()
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / f"{cc.key_id(key)}.bin").write_bytes(b"junk")
    status, reason = cc.load_artifacts(tmp_path, key)
    assert status == "failed" and reason.endswith("RuntimeError: bad magic; compiling from scratch")


def test_a_cache_dir_that_refuses_files_is_one_line_before_anything_loads(tmp_path):
    (tmp_path / "f").write_text("x")
    r = subprocess.run([sys.executable, str(ROOT / "generate.py"), "--task", "tiny", "--cache_dir", str(tmp_path / "f")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == f"error: --cache_dir: '{tmp_path / 'f'}' is not a directory"


def test_a_run_without_compile_leaves_the_caches_alone(tmp_path, monkeypatch):
    from wan_enhanced.config import RunConfig, validate
    from wan_enhanced.run import run_generation

    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    cfg = validate(RunConfig(task="tiny", device="cpu", cache_dir=str(tmp_path / "c")), cuda_available=False)
    out = run_generation(cfg, progress=False, monitor_enabled=False)
    assert out.report["run"]["compile_cache"]["artifacts"] == "not needed"
    assert not (tmp_path / "c").exists() and "TRITON_CACHE_DIR" not in os.environ


@pytest.mark.slow  # two real CPU compiles of the tiny DiT: ~45 s on 2 cores
def test_warmup_artifacts_travel_to_a_fresh_cache_dir(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "wan_enhanced.cli", *args, "--task", "tiny", "--device", "cpu",
                               "--compile", "blocks", "--quiet"], capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))

    w = run("warmup", "--cache_dir", str(tmp_path / "made"))
    assert w.returncode == 0 and "warmup: compile artifacts for this CPU (tiny 64*64, 9 frames" in w.stderr, w.stderr
    fresh = tmp_path / "fresh"
    (fresh / "artifacts").mkdir(parents=True)
    for f in (tmp_path / "made" / "artifacts").iterdir():  # only the artifacts travel, not the compilers' caches
        (fresh / "artifacts" / f.name).write_bytes(f.read_bytes())
    g = run("generate", "--cache_dir", str(fresh), "--report_file", str(tmp_path / "r.json"))
    assert g.returncode == 0, g.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["run"]["compile_cache"]["artifacts"] == "loaded"
    assert [s["name"] for s in rep["stages"] if s["parent"] == "Total"][0] == "Load_Compile_Cache"
