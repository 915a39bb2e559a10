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
    _tool_dirs(monkeypatch, tmp_path)  # empty: nothing packed beside them
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


def _cache(root: Path, files: dict[str, bytes]) -> dict[str, bytes]:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def _fa4_cache(root: Path) -> dict[str, bytes]:
    """A stand-in FlashAttention-4 CuTe DSL cache: <fingerprint>/<name>/<sha>.o, plus files that must not travel."""
    files = _cache(root, {"f1nger/fwd/aa11.o": b"KERNEL-A", "f1nger/fwd/bb22.o": b"KERNEL-B" * 100,
                          "f1nger/cc33.o": b"KERNEL-C"})
    _cache(root, {"f1nger/fwd/aa11.lock": b"", "f1nger/fwd/.dd44.123.tmp.o": b"HALF",  # locks, half-written files
                  "f1nger/notes.txt": b"NOT A KERNEL"})
    return files


def _compiler_caches(root: Path) -> dict[str, dict[str, bytes]]:
    """Stand-in inductor and Triton folders (their layouts), each with one machine's state that must not travel."""
    ind = _cache(root / "inductor", {"fxgraph/ab/fabc/entry": b"GRAPH", "aotautograd/ax/entry": b"AOT",
                                     "l5/cl55.py": b"KERNEL_SRC = 1", "l5/0369.best_config": b"{}"})
    tri = _cache(root / "triton", {"HASH1/triton_k.cubin": b"CUBIN" * 50, "HASH1/triton_k.json": b"{}",
                                   "HASH1/__grp__triton_k.json": b"{}"})
    _cache(root / "inductor", {"locks/x.lock": b"", "l5/__pycache__/cl55.cpython-312.pyc": b"PYC"})
    _cache(root / "triton", {"tmp.pid_77_1/triton_k.cubin": b"HALF", "HASH1/.nfs000": b"X", "HASH1/k.json.tmp": b"X"})
    return {"inductor": ind, "triton": tri}


def _tool_dirs(monkeypatch, root: Path) -> None:
    """This process's inductor, Triton and FA4 folders under ``root`` (FA4's disk cache on)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(root / "inductor"))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(root / "triton"))
    monkeypatch.setenv("FLASH_ATTENTION_CUTE_DSL_CACHE_DIR", str(root / "fa4_cute"))
    monkeypatch.setenv(cc.FA4_CACHE_SWITCH, "1")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _warmup_env(monkeypatch, tmp_path: Path) -> dict[str, bytes]:
    """A warmup's process: torch hands out artifacts, the tool folders are under tmp_path, FA4's holds kernels."""
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: (b"ARTIFACTS", None))
    _tool_dirs(monkeypatch, tmp_path)
    return _fa4_cache(tmp_path / "fa4_cute")


def test_the_compilers_caches_travel_with_the_artifacts_and_never_overwrite(monkeypatch, tmp_path):
    # torch's artifacts do not hold FlashAttention-4's kernels, and with only them a fresh H200 machine's Step_0
    # took 6.25 s against 4.65 s with the whole cache folder copied (h200/s10): the folders travel beside them
    order = []
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: (b"ARTIFACTS", None))
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts",
                        lambda data: order.append(("torch", (fresh / "inductor" / "l5/cl55.py").is_file())))
    made, fresh = tmp_path / "made", tmp_path / "fresh"
    _tool_dirs(monkeypatch, made)
    files = {"fa4": _fa4_cache(made / "fa4_cute"), **_compiler_caches(made)}
    key = _key(attention_backend="flash4")
    cc.save_artifacts(made, key)
    kid = cc.key_id(key)
    meta = json.loads((made / "artifacts" / f"{kid}.json").read_text())
    assert meta["cache_parts"] == {p: {"files": len(f), "bytes": sum(len(b) for b in f.values())}
                                   for p, f in files.items()}
    assert sorted(p.name for p in (made / "artifacts").iterdir()) == sorted(
        [f"{kid}.bin", f"{kid}.json", f"{kid}.fa4.tar", f"{kid}.inductor.tar", f"{kid}.triton.tar"])
    # a fresh machine: only the artifacts folder travels; one kernel of its own is already there
    (fresh / "artifacts").mkdir(parents=True)
    for f in (made / "artifacts").iterdir():
        (fresh / "artifacts" / f.name).write_bytes(f.read_bytes())
    _cache(fresh / "fa4_cute", {"f1nger/cc33.o": b"MINE"})
    _tool_dirs(monkeypatch, fresh)
    status, reason = cc.load_artifacts(fresh, key)
    assert status == "loaded" and order == [("torch", True)]  # restored before torch's artifacts load, as if copied
    for part in ("inductor", "triton"):
        assert meta["cache_parts"][part]["bytes"] == sum(len(b) for b in files[part].values())
    assert reason.endswith(f"; cache files: fa4 2 restored ({(8 + 800) / 2**20:.1f} MiB), 1 already there; "
                           "inductor 4 restored (0.0 MiB), 0 already there; triton 3 restored (0.0 MiB), 0 already "
                           "there")
    assert _files(fresh / "fa4_cute") == {**files["fa4"], "f1nger/cc33.o": b"MINE"}  # the machine's own file kept
    assert _files(fresh / "inductor") == files["inductor"] and _files(fresh / "triton") == files["triton"]
    assert cc.load_artifacts(fresh, key)[1].endswith("triton 0 restored (0.0 MiB), 3 already there")
    monkeypatch.setenv(cc.FA4_CACHE_SWITCH, "0")  # FA4's disk cache off here: nothing to restore into
    monkeypatch.delenv("TRITON_CACHE_DIR")
    assert "; cache files: fa4 not restored (its disk cache is off here); inductor 0 restored (0.0 MiB), 4 already " \
        "there; triton not restored (TRITON_CACHE_DIR is not set)" in cc.load_artifacts(fresh, key)[1]


def test_without_fa4_its_kernels_are_not_packed_and_an_empty_folder_packs_nothing(monkeypatch, tmp_path):
    _warmup_env(monkeypatch, tmp_path)
    _compiler_caches(tmp_path)
    key = _key(attention_backend="cudnn")
    cc.save_artifacts(tmp_path, key)
    kid = cc.key_id(key)
    parts = json.loads((tmp_path / "artifacts" / f"{kid}.json").read_text())["cache_parts"]
    assert parts["fa4"] is None and parts["inductor"]["files"] == 4 and parts["triton"]["files"] == 3
    assert not cc.bundle_path(tmp_path, kid, "fa4").exists()
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "empty"))
    cc.save_artifacts(tmp_path, key)
    assert json.loads((tmp_path / "artifacts" / f"{kid}.json").read_text())["cache_parts"]["triton"] is None


def test_a_bundle_member_outside_the_folder_or_not_a_kernel_is_refused(tmp_path):
    import io
    import tarfile

    from wan_enhanced.file_bundle import unpack

    src = tmp_path / "b.tar"
    with tarfile.open(src, "w") as tar:
        for name, data in (("../escape.o", b"X"), ("/abs.o", b"X"), ("ok/k.o", b"GOOD"), ("ok/notes.txt", b"X"),
                           ("ok/.hidden.o", b"X"), (".git/x.o", b"X"), ("ok/k.o.lock", b"X"),
                           ("ok/__pycache__/m.o", b"X"), ("tmp.pid_1_2/k.o", b"X")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("ok/link.o")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    n = unpack(src, tmp_path / "dest", ".o")
    assert (n.written, n.present, n.refused, n.bytes) == (1, 0, 9, 4)
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file() and p != src] == \
        ["dest/ok/k.o"]
    n = unpack(src, tmp_path / "any", None)  # every cache file: the text file too, still nothing unsafe
    assert (n.written, n.refused) == (2, 8) and _files(tmp_path / "any") == {"ok/k.o": b"GOOD", "ok/notes.txt": b"X"}


def test_a_broken_bundle_is_said_and_the_artifacts_still_load(monkeypatch, tmp_path):
    loaded = []
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", lambda data: loaded.append(data))
    _tool_dirs(monkeypatch, tmp_path)
    key = _key(attention_backend="flash4")
    kid = cc.key_id(key)
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / f"{kid}.bin").write_bytes(b"ARTIFACTS")
    cc.bundle_path(tmp_path, kid, "inductor").write_bytes(b"not a tar")
    status, reason = cc.load_artifacts(tmp_path, key)
    assert status == "loaded" and loaded == [b"ARTIFACTS"]
    assert reason.endswith("; cache files: inductor not all restored (ReadError: truncated header; 0 written "
                           "before: the rest is compiled again)")


def test_a_truncated_bundle_keeps_what_it_wrote_and_says_how_much(tmp_path):
    from wan_enhanced.file_bundle import BundleError, pack, unpack

    src = tmp_path / "src"
    for i in range(3):
        (src / f"k{i}.o").parent.mkdir(parents=True, exist_ok=True)
        (src / f"k{i}.o").write_bytes(bytes([i]) * 5000)
    pack(src, ".o", tmp_path / "b.tar")
    import tarfile

    with tarfile.open(tmp_path / "b.tar") as tar:
        second = tar.getmembers()[1].offset_data
    data = (tmp_path / "b.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[:second + 700])  # the first member whole, the second cut
    with pytest.raises(BundleError) as err:
        unpack(tmp_path / "cut.tar", tmp_path / "dest", ".o")
    assert err.value.count.written == 1 and (tmp_path / "dest" / "k0.o").read_bytes() == bytes([0]) * 5000
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["k0.o"]  # no half file, no temporary left
    with pytest.raises(BundleError, match="more than 6000 bytes") as big:
        unpack(tmp_path / "b.tar", tmp_path / "capped", ".o", max_bytes=6000)
    assert big.value.count.written == 1
    with pytest.raises(BundleError, match="15000 bytes, more than 6000"):  # nor is a folder too big packed
        pack(src, None, tmp_path / "c.tar", max_bytes=6000)
    assert not (tmp_path / "c.tar").exists()


def test_unpack_does_not_follow_a_link_out_of_the_folder_and_pack_skips_links(tmp_path):
    from wan_enhanced.file_bundle import pack, unpack

    src, dest, outside = tmp_path / "src", tmp_path / "dest", tmp_path / "outside"
    (src / "lnk").mkdir(parents=True)
    (src / "lnk" / "x.o").write_bytes(b"X")
    (src / "real.o").write_bytes(b"R")
    (tmp_path / "elsewhere.o").write_bytes(b"E")
    (src / "alias.o").symlink_to(tmp_path / "elsewhere.o")  # a link in the cache is not packed as a kernel
    n = pack(src, ".o", tmp_path / "b.tar")
    assert (n.written, n.bytes) == (2, 2)
    outside.mkdir()
    dest.mkdir()
    (dest / "lnk").symlink_to(outside)  # a folder of the destination that points out of it
    got = unpack(tmp_path / "b.tar", dest, ".o")
    assert (got.written, got.refused) == (1, 1) and list(outside.iterdir()) == []
    assert (dest / "real.o").read_bytes() == b"R"


def test_a_rewarmup_that_packs_nothing_removes_the_older_bundle(monkeypatch, tmp_path):
    _warmup_env(monkeypatch, tmp_path)
    key = _key(attention_backend="flash4")
    kid = cc.key_id(key)
    cc.save_artifacts(tmp_path, key)
    assert cc.bundle_path(tmp_path, kid, "fa4").is_file()
    for p in (tmp_path / "fa4_cute").rglob("*.o"):
        p.unlink()
    cc.save_artifacts(tmp_path, key)
    assert not cc.bundle_path(tmp_path, kid, "fa4").exists()
    assert json.loads((tmp_path / "artifacts" / f"{kid}.json").read_text())["cache_parts"]["fa4"] is None


def test_a_failed_pack_keeps_torchs_artifacts_and_the_other_parts_and_says_why(monkeypatch, tmp_path):
    from wan_enhanced import file_bundle

    _warmup_env(monkeypatch, tmp_path)
    _compiler_caches(tmp_path)
    real = file_bundle.pack

    def full(folder, suffix, dest, **kw):
        if folder.name == "inductor":
            raise OSError(28, "No space left on device")
        return real(folder, suffix, dest, **kw)

    monkeypatch.setattr(file_bundle, "pack", full)
    key = _key(attention_backend="flash4")
    kid = cc.key_id(key)
    path = cc.save_artifacts(tmp_path, key)
    assert path is not None and path.read_bytes() == b"ARTIFACTS"
    assert not cc.bundle_path(tmp_path, kid, "inductor").exists() and cc.bundle_path(tmp_path, kid, "fa4").is_file()
    parts = json.loads((tmp_path / "artifacts" / f"{kid}.json").read_text())["cache_parts"]
    assert parts["inductor"] == {"error": "OSError: [Errno 28] No space left on device"}
    assert parts["fa4"]["files"] == 3 and parts["triton"]["files"] == 3


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
    parts = json.loads(next((tmp_path / "made" / "artifacts").glob("*.json")).read_text())["cache_parts"]
    n = parts["inductor"]["files"]  # inductor's folder travelled with the artifacts and was restored first
    assert n > 0 and f"; cache files: inductor {n} restored (" in rep["run"]["compile_cache"]["reason"]
    assert f"caches beside them: inductor {n} files (" in w.stderr
    assert [s["name"] for s in rep["stages"] if s["parent"] == "Total"] == [
        "Load_Compile_Cache", "Load_Text_Encoder", "Text_Encoding", "Free_Text_Encoder", "Load_VAE", "Load_DiT",
        "Prepare_DiT", "Denoising", "Free_DiT", "VAE_Decoding"]  # the compile set-up is not weight loading
    pre = rep["run"]["compile_cache"]["prefetch"]  # the compiler's set-up ran in the background, then was joined
    assert pre["error"] is None and pre["seconds"] > 0 and pre["wait_s"] >= 0 and "torch_key()" in pre["what"]


# --- lever 3: the VAE decoder compiled (measured, not adopted: auto = none) -----------------------------------


def test_a_bad_vae_compile_value_is_one_line_before_anything_loads():
    r = subprocess.run([sys.executable, str(ROOT / "generate.py"), "--task", "tiny", "--vae_compile", "all"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: --vae_compile: 'all' is not allowed; allowed: auto, none, blocks"


def test_vae_compile_auto_is_none_everywhere_and_blocks_is_kept():
    """auto = none: on the H200 a warm process still compiled for 12 s to save 1 s (h200/s7)."""
    from wan_enhanced.fastpath import FastPath

    for dev in ("cpu", "cuda"):
        assert FastPath().resolve(torch.device(dev)).vae_compile == "none"
        assert FastPath(vae_compile="blocks").resolve(torch.device(dev)).vae_compile == "blocks"


def test_the_vae_compile_setting_is_part_of_the_artifacts_key():
    base = {"task": "tiny", "size": "64*64", "frame_num": 9, "compile": "blocks", "attention_backend": "auto"}
    a = cc.cache_key(torch.device("cpu"), {**base, "vae_compile": "none"})
    b = cc.cache_key(torch.device("cpu"), {**base, "vae_compile": "blocks"})
    assert cc.key_id(a) != cc.key_id(b) and a["vae_compile"] == "none"


@pytest.mark.slow  # CPU compiles of the tiny VAE decoder's blocks
def test_the_compiled_vae_decodes_the_same_frames_to_rounding(tmp_path):
    """--vae_compile blocks: the same stages (and the cache looked at), frames within rounding of eager."""
    import numpy as np

    from wan_enhanced.config import RunConfig, validate
    from wan_enhanced.run import run_generation

    out = {}
    for mode in ("none", "blocks"):
        cfg = validate(RunConfig(task="tiny", device="cpu", vae_compile=mode, sample_steps=2,
                                 cache_dir=str(tmp_path)), cuda_available=False)
        res = run_generation(cfg, progress=False, monitor_enabled=False)
        assert res.status == "ok" and res.report["run"]["fast_path"]["vae_compile"] == mode
        out[mode] = res
    names = [[s["name"] for s in r.report["stages"]] for r in out.values()]
    assert names[1] == names[0][:1] + ["Load_Compile_Cache"] + names[0][1:]  # something compiles: artifacts?
    assert out["blocks"].report["run"]["compile_cache"]["artifacts"] == "none"
    a, b = (r.result.frames.astype(np.int16) for r in out.values())
    assert a.shape == b.shape and np.abs(a - b).max() <= 2, np.abs(a - b).max()
    assert torch.equal(out["none"].result.latents, out["blocks"].result.latents)  # the DiT is untouched
    paid = out["blocks"].report["run"]["compile_time"]["by_stage"]
    assert list(paid) == ["VAE_Decoding"] and paid["VAE_Decoding"]["entire_frame_compile"] > 0
    assert out["none"].report["run"]["compile_time"]["by_stage"] == {}


def test_the_compile_clock_charges_torchs_compile_time_to_the_stage_that_paid_it():
    from wan_enhanced.monitor import Monitor

    clock = cc.CompileClock()
    mon = Monitor(device=torch.device("cpu"), sampler=False)
    mon.on_stage_end.append(clock.on_stage_end)
    f = torch.compile(lambda x: (x * 3).cos() + 1)
    mon.start()
    with mon.stage("Total"):
        with mon.stage("Before"):
            torch.ones(3).sum()
        with mon.stage("Compiles"):
            f(torch.randn(16))
        with mon.stage("Runs"):
            f(torch.randn(16))
    mon.stop()
    assert list(clock.by_stage) == ["Compiles"]
    paid = clock.by_stage["Compiles"]
    assert paid["entire_frame_compile"] > 0 and paid.get("inductor_compile", 0.0) <= paid["entire_frame_compile"]
    assert "bytecode_tracing" in paid  # a finer timer (DETAIL)
    assert "_compile.compile_inner" in paid  # one of compilation_time_metrics' others (1 ms and more)
    assert not any(k.startswith("~") for k in paid)
    counts = clock.counts_by_stage["Compiles"]
    # one graph, compiled or found in inductor's on-disk cache (which an earlier test process may have filled)
    assert counts["stats.unique_graphs"] == 1 and counts.get("inductor.fxgraph_cache_miss", 0) + counts.get(
        "inductor.fxgraph_cache_hit", 0) + counts.get("aot_autograd.autograd_cache_hit", 0) >= 1
    assert clock.to_dict() == {"source": cc.CompileClock.SOURCE, "by_stage": clock.by_stage,
                               "counts_by_stage": clock.counts_by_stage}
    torch.compile(lambda x: (x * 5).tanh() - 2)(torch.randn(8))  # as in a stage that failed: no end is heard
    clock.flush("Broken")
    clock.flush(None)
    assert list(clock.by_stage) == ["Compiles", "Broken"] and clock.by_stage["Broken"]["entire_frame_compile"] > 0


# --- lever 1: graphs with diffusers' sdpa_kernel block kept by AOT autograd's cache ----------------------------

_SDPA_GRAPH = r"""
import json, sys
import torch
from torch._dynamo.utils import counters
from torch.nn.attention import SDPBackend, sdpa_kernel
from wan_enhanced.compile_cache import allow_sdpa_kernel_graphs_in_cache

def attend(q):  # what diffusers' _native_flash backend does inside a compiled block
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return torch.nn.functional.scaled_dot_product_attention(q, q, q).cos() * 2

q = torch.randn(1, 2, 16, 8, generator=torch.Generator().manual_seed(0))
seen, outs = [], []
order = list(torch._C._get_sdp_priority_order())
for mark in (False, True, True, "reordered"):
    if mark == "reordered":  # another SDPA priority order: another key, so not the graph traced under the first
        torch._C._set_sdp_priority_order(order[::-1])
    if mark:
        allow_sdpa_kernel_graphs_in_cache()
    torch._dynamo.reset()
    counters.clear()
    outs.append(torch.compile(attend, fullgraph=True)(q))
    seen.append({k: v for k, v in counters["aot_autograd"].items() if k.startswith("autograd_cache")})
print(json.dumps({"seen": seen, "same": all(torch.equal(outs[0], o) for o in outs)}))
"""


def test_a_graph_holding_sdpa_kernel_is_found_in_aot_autograds_cache_once_marked(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    p = subprocess.run([sys.executable, "-c", _SDPA_GRAPH], capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout.strip().splitlines()[-1])
    # unmarked: refused (torch's private helpers in the graph); marked: stored, then found by the next compile;
    # after SDPA's priority order changed, re-marked: a miss (compiled and stored again), never the old graph
    assert got["seen"] == [{"autograd_cache_bypass": 1}, {"autograd_cache_miss": 1, "autograd_cache_saved": 1},
                           {"autograd_cache_hit": 1}, {"autograd_cache_miss": 1, "autograd_cache_saved": 1}], got
    assert got["same"]


def test_the_marked_helpers_are_keyed_by_torch_and_the_sdpa_state():
    import torch.nn.attention as attn

    knob = torch._inductor.config
    before, order = dict(knob.unsafe_marked_cacheable_functions), list(torch._C._get_sdp_priority_order())
    try:
        knob.unsafe_marked_cacheable_functions = {}
        cc.refresh_sdpa_kernel_marks()  # nothing marked yet: nothing to refresh
        assert knob.unsafe_marked_cacheable_functions == {}
        marked = cc.allow_sdpa_kernel_graphs_in_cache()
        assert sorted(marked) == sorted(cc.SDPA_KERNEL_HELPERS)
        for name, value in marked.items():
            assert knob.unsafe_marked_cacheable_functions[name] == value
            assert hasattr(attn, name.rsplit(".", 1)[1])  # the names check_node_safe builds
            assert value == (f"torch {torch.__version__}; sdp priority {','.join(map(str, order))}; "
                             f"flash impl {attn.current_flash_attention_impl() or 'default'}")
        torch._C._set_sdp_priority_order(order[::-1])
        cc.refresh_sdpa_kernel_marks()  # what activate_fa4 / deactivate_fa4 call
        after = knob.unsafe_marked_cacheable_functions
        assert all(after[n] != v and f"sdp priority {','.join(map(str, order[::-1]))};" in after[n]
                   for n, v in marked.items())
    finally:
        torch._C._set_sdp_priority_order(order)
        knob.unsafe_marked_cacheable_functions = before


# --- lever 1: the compiler's per-process set-up in the background -----------------------------------------------


def test_the_compile_prefetch_runs_in_a_thread_and_join_says_how_long_it_waited(monkeypatch):
    import threading

    seen = {}
    gate = threading.Event()

    def work(self):  # stands in for the imports and keys: records its thread, waits to be released
        seen["thread"] = threading.current_thread().name
        gate.wait(5)
        self.seconds = 0.5

    monkeypatch.setattr(cc.CompilePrefetch, "_run", work)
    p = cc.CompilePrefetch().start()
    assert p.to_dict()["seconds"] is None  # still running
    threading.Timer(0.2, gate.set).start()
    waited = p.join()
    assert seen["thread"] == "wan-enhanced-compile-prefetch" and waited >= 0.1
    assert p.to_dict() == {"what": "import torch._inductor.compile_fx; torch_key(); CacheBase.get_system() (in a thread)",
                           "enabled": True, "why": None, "seconds": 0.5, "parts": {}, "wait_s": waited, "error": None}
    assert cc.CompilePrefetch().join() == pytest.approx(0.0, abs=0.05)  # never started: nothing to wait for


def test_a_failing_prefetch_is_said_and_the_switch_turns_it_off(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_inductor(name, *args, **kwargs):
        if name.startswith("torch._inductor.compile_fx"):
            raise ImportError("no inductor here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_inductor)
    p = cc.CompilePrefetch()
    p._run()  # in this thread: the failure is recorded, never raised (the compile does the work itself then)
    assert p.error == "ImportError: no inductor here" and p.seconds is not None
    monkeypatch.setattr(builtins, "__import__", real_import)
    for value, on in (("0", False), ("1", True), (None, True)):
        if value is None:
            monkeypatch.delenv(cc.CompilePrefetch.ENV, raising=False)
        else:
            monkeypatch.setenv(cc.CompilePrefetch.ENV, value)
        assert cc.CompilePrefetch.enabled() is on


def test_the_prefetch_imports_the_given_modules_in_its_thread_and_records_a_failed_one(tmp_path, monkeypatch):
    (tmp_path / "probe_fa4_mod.py").write_text("import threading\nTHREAD = threading.current_thread().name\n")
    (tmp_path / "probe_broken_mod.py").write_text("raise ImportError('no kernels here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    p = cc.CompilePrefetch(None, ("probe_fa4_mod", "probe_broken_mod")).start()
    p.join()
    import probe_fa4_mod

    assert probe_fa4_mod.THREAD == "wan-enhanced-compile-prefetch"
    d = p.to_dict()
    assert d["what"] == ("import torch._inductor.compile_fx; torch_key(); CacheBase.get_system(); import probe_fa4_mod, "
                         "probe_broken_mod (in a thread)")
    assert list(d["parts"]) == ["compiler", "probe_fa4_mod", "probe_broken_mod"]
    assert d["seconds"] >= sum(d["parts"].values()) - 1e-3
    assert d["error"] == "import probe_broken_mod: ImportError: no kernels here"
    assert "probe_broken_mod" not in sys.modules  # its user imports it again and raises there


@pytest.mark.parametrize(("backend", "env", "imports"), [("flash4", None, ("wan_enhanced.attention_fa4",)),
                                                          ("flash4", "0", ()), ("cudnn", None, ())])
def test_start_prefetch_adds_fa4s_import_only_when_the_dit_runs_fa4(monkeypatch, backend, env, imports):
    from types import SimpleNamespace

    from wan_enhanced.run import start_prefetch

    made = []
    monkeypatch.setattr(cc.CompilePrefetch, "start", lambda self: made.append(self) or self)
    if env is None:
        monkeypatch.delenv(cc.CompilePrefetch.FA4_ENV, raising=False)
    else:
        monkeypatch.setenv(cc.CompilePrefetch.FA4_ENV, env)
    state = SimpleNamespace(prefetch=None)
    pipe = SimpleNamespace(fast=SimpleNamespace(compile="blocks", attention_backend=backend, prefetch=None))
    start_prefetch(state, torch.device("cpu"), pipe)
    assert made[0].imports == imports and state.prefetch is made[0]


def test_a_compiled_run_starts_the_prefetch_and_a_plain_one_does_not(tmp_path, monkeypatch):
    from wan_enhanced.config import RunConfig, validate
    from wan_enhanced.pipeline import TI2VPipeline
    from wan_enhanced.run import prepare_cache, start_prefetch

    for var in (*cc.TOOL_DIRS, cc.FA4_CACHE_SWITCH):  # prepare_cache sets them: restored after the test
        monkeypatch.delenv(var, raising=False)
    started = []
    monkeypatch.setattr(cc.CompilePrefetch, "start", lambda self: started.append(self) or self)
    dev = torch.device("cpu")

    def prepared(compile_mode):
        cfg = validate(RunConfig(task="tiny", device="cpu", compile=compile_mode, cache_dir=str(tmp_path)),
                       cuda_available=False)
        pipe = TI2VPipeline(cfg, progress=False)
        state = prepare_cache(cfg, dev, pipe)
        assert state.prefetch is None and not started  # not before the artifacts are loaded
        start_prefetch(state, dev, pipe)
        return state, pipe

    state, pipe = prepared("blocks")
    assert started == [state.prefetch] and pipe.fast.prefetch is state.prefetch and state.prefetch.device_index is None
    assert "prefetch" not in pipe.fast.to_dict()  # the handle is not a setting
    assert state.to_dict()["prefetch"] == {"what": cc.CompilePrefetch.WHAT, "enabled": True, "why": None,
                                           "seconds": None, "parts": {}, "wait_s": None, "error": None}
    assert state.prefetch.imports == ()  # the CPU runs no FA4: nothing more to import
    started.clear()
    state, pipe = prepared("none")
    assert state.prefetch is None and pipe.fast.prefetch is None and not started
    monkeypatch.setenv(cc.CompilePrefetch.ENV, "0")
    state, pipe = prepared("blocks")
    assert not started and pipe.fast.prefetch is None
    assert state.to_dict()["prefetch"] == {"what": cc.CompilePrefetch.WHAT, "enabled": False,
                                           "why": "WAN_ENHANCED_COMPILE_PREFETCH=0", "seconds": None,
                                           "parts": {}, "wait_s": None, "error": None}


def test_apply_dit_and_apply_vae_join_the_prefetch_before_touching_the_compiler(monkeypatch):
    from wan_enhanced import fastpath

    calls = []

    class Prefetch:
        def join(self, timeout=None):
            calls.append("join")
            return 0.0

    class Dit:
        def set_attention_backend(self, name):
            calls.append(f"backend {name}")

        def compile_repeated_blocks(self, **kw):
            calls.append("compile")

    monkeypatch.setattr(fastpath, "compile_vae_blocks", lambda vae: calls.append("compile vae") or 0)
    import time

    monkeypatch.setattr(fastpath, "activate_fa4", lambda: calls.append("fa4") or time.sleep(0.05))
    monkeypatch.setattr(fastpath, "fa4_smoke_test", lambda device: None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)  # the smoke test's device on a CPU-only torch
    restore = dict(torch._inductor.config.unsafe_marked_cacheable_functions)
    try:
        fast = fastpath.FastPath(compile="blocks", attention_backend="flash4", vae_compile="blocks",
                                 vae_layout="contiguous", fused_qk_rope="off", prefetch=Prefetch())
        fast.apply_vae(object())
        fast.apply_dit(Dit(), torch.device("cpu"))
    finally:
        torch._inductor.config.unsafe_marked_cacheable_functions = restore
    assert calls == ["join", "compile vae", "join", "fa4", "backend _native_flash", "compile"]
    # Prepare_DiT itemized, in the order the parts ran, each charged its own time (the report's fast_path)
    setup = fast.to_dict()["dit_setup_s"]
    assert list(setup) == ["wait_for_prefetch", "fa4_activation", "fa4_check", "attention_backend", "compile_wrappers"]
    assert setup["fa4_activation"] >= 0.05 and all(v >= 0 for v in setup.values())  # the sleep charged to FA4


def test_a_failed_read_of_torchs_timers_charges_nothing_twice(monkeypatch):
    from types import SimpleNamespace

    readings = iter([({"backend_compile": 1.0}, {}), None, ({"backend_compile": 3.0}, {})])
    monkeypatch.setattr(cc.CompileClock, "_read", classmethod(lambda cls: next(readings)))
    clock = cc.CompileClock()  # baseline 1.0 s
    clock.on_stage_end(SimpleNamespace(name="A"))  # unreadable (e.g. the prefetch thread adding a timer): skipped
    clock.on_stage_end(SimpleNamespace(name="B"))
    assert clock.by_stage == {"B": {"backend_compile": 2.0}}


@pytest.mark.parametrize("var, value", [("WAN_ENHANCED_COMPILE_PREFETCH", "off"), ("WAN_ENHANCED_FA4_PREFETCH", "yes")])
def test_a_bad_prefetch_switch_is_one_line_before_anything_loads(var, value):
    r = subprocess.run([sys.executable, str(ROOT / "generate.py"), "--task", "tiny", "--device", "cpu"],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT / "src"), **{var: value}))
    assert r.returncode == 2 and r.stderr.strip() == (
        f"error: {var}: {value!r} is not allowed; allowed: 0 (off), 1 (on, the default)"), r.stderr


def test_a_users_own_compiler_folders_are_not_packed_and_say_so(monkeypatch, tmp_path):
    # a TORCHINDUCTOR_CACHE_DIR / TRITON_CACHE_DIR the user set elsewhere may be shared with other work
    _warmup_env(monkeypatch, tmp_path / "elsewhere")
    _compiler_caches(tmp_path / "elsewhere")
    key = _key(attention_backend="flash4")
    kid = cc.key_id(key)
    cc.save_artifacts(tmp_path / "mine", key)
    parts = json.loads((tmp_path / "mine" / "artifacts" / f"{kid}.json").read_text())["cache_parts"]
    assert parts["fa4"]["files"] == 3  # FA4's kernels (one file type) travel from wherever its cache is
    assert parts["inductor"] == {"skipped": f"{tmp_path / 'elsewhere' / 'inductor'} is not this cache directory's "
                                            "own folder (TORCHINDUCTOR_CACHE_DIR set by the user)"}
    assert "skipped" in parts["triton"] and not cc.bundle_path(tmp_path / "mine", kid, "inductor").exists()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))  # the cache root itself: its artifacts
    cc.save_artifacts(tmp_path / "mine", key)
    assert "skipped" in json.loads((tmp_path / "mine" / "artifacts" / f"{kid}.json").read_text())["cache_parts"][
        "inductor"]


def test_triton_groups_point_at_their_files_where_they_are_restored(monkeypatch, tmp_path):
    # Triton's __grp__*.json hold absolute paths of the machine they were made on; a missing one is a cache miss
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: (b"ARTIFACTS", None))
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", lambda data: None)
    made, fresh = tmp_path / "made", tmp_path / "fresh"
    _tool_dirs(monkeypatch, made)
    old = made / "triton" / "HASH1"
    _cache(made / "triton", {"HASH1/k.cubin": b"CUBIN", "HASH1/k.json": b"{}",
                             "HASH1/__grp__k.json": json.dumps({"child_paths": {
                                 "k.cubin": str(old / "k.cubin"), "k.json": str(old / "k.json"),
                                 "x.so": "/elsewhere/OTHER/x.so"}}).encode(),
                             "HASH1/__grp__bad.json": b"not json"})
    key = _key()
    cc.save_artifacts(made, key)
    (fresh / "artifacts").mkdir(parents=True)
    for f in (made / "artifacts").iterdir():
        (fresh / "artifacts" / f.name).write_bytes(f.read_bytes())
    _tool_dirs(monkeypatch, fresh)
    assert cc.load_artifacts(fresh, key)[0] == "loaded"
    grp = json.loads((fresh / "triton" / "HASH1" / "__grp__k.json").read_text())
    new = fresh / "triton" / "HASH1"
    assert grp == {"child_paths": {"k.cubin": str(new / "k.cubin"), "k.json": str(new / "k.json"),
                                   "x.so": "/elsewhere/OTHER/x.so"}}  # another folder's file: left as it was
    assert all(Path(p).is_file() for c, p in grp["child_paths"].items() if c != "x.so")
    assert (fresh / "triton" / "HASH1" / "__grp__bad.json").read_bytes() == b"not json"
