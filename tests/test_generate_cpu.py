"""Tiny-preset generation on CPU: mp4 output, determinism, CLI validation errors (exit 2, one line)."""

from __future__ import annotations

import gc
import importlib.util
import subprocess
import sys
import weakref
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from wan_enhanced.pipeline import TI2VPipeline

ROOT = Path(__file__).resolve().parents[1]


def _run(cfg):
    return TI2VPipeline(cfg, progress=False).generate()


@pytest.mark.parametrize("mode", ["t2v", "i2v"])
def test_writes_mp4_with_requested_frames_and_size(tiny_cfg, tiny_image, tmp_path, mode):
    out = tmp_path / f"{mode}.mp4"
    cfg = tiny_cfg(size="96*64", frame_num=13, save_file=str(out), image=tiny_image if mode == "i2v" else None)
    res = _run(cfg)
    video = iio.imread(out)
    assert video.shape == (13, 64, 96, 3)  # frames, height, width (size is W*H)
    assert res.frames.shape == (13, 64, 96, 3)
    assert res.latents.shape == (1, 8, 4, 4, 6)


def test_same_seed_same_output_different_seed_differs(tiny_cfg):
    a = _run(tiny_cfg(base_seed=1)).latents
    b = _run(tiny_cfg(base_seed=1)).latents
    c = _run(tiny_cfg(base_seed=2)).latents
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_i2v_depends_on_the_image(tiny_cfg, tiny_image, tmp_path):
    from PIL import Image

    other = tmp_path / "other.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(other)
    a = _run(tiny_cfg(image=tiny_image)).latents
    b = _run(tiny_cfg(image=str(other))).latents
    assert not torch.allclose(a[:, :, 0], b[:, :, 0])


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "generate.py"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


BAD = [
    (["--task", "ti2v-5B", "--size", "1280*720"], "--size: '1280*720' is not allowed for task ti2v-5B; allowed: 1280*704, 704*1280"),
    (["--task", "tiny", "--frame_num", "10"], "--frame_num: 10 is not allowed; must be 4n+1"),
    (["--task", "tiny", "--frame_num", "-3"], "--frame_num: -3 is not allowed"),
    (["--task", "tiny", "--sample_steps", "0"], "--sample_steps: 0 is not allowed; must be >= 1"),
    (["--task", "tiny", "--sample_guide_scale", "-1"], "--sample_guide_scale: -1.0 is not allowed; must be >= 0"),
    (["--task", "tiny", "--image", "/nonexistent.png"], "--image: '/nonexistent.png' does not exist"),
    (["--task", "tiny", "--ckpt_dir", "/nonexistent_dir_wan_enhanced_test/ck"],
     "--ckpt_dir: '/nonexistent_dir_wan_enhanced_test/ck' does not exist"),
    (["--task", "ti2v-5B", "--ulysses_size", "5"], "--ulysses_size: 5 does not divide the 24 attention heads"),
    (["--task", "t2v-A14B"], "--task: 't2v-A14B' is not allowed; allowed: ti2v-5B, tiny"),
    (["--task", "tiny", "--sample_solver", "euler"], "--sample_solver: 'euler' is not allowed; allowed: unipc, dpm++"),
    (["--task", "tiny", "--weights", "magic"], "--weights: 'magic' is not allowed"),
    (["--task", "tiny", "--offload_model", "maybe"], "'maybe' is not a boolean"),
    (["--task", "tiny", "--vae_layout", "nhwc"],
     "--vae_layout: 'nhwc' is not allowed; allowed: auto, contiguous, channels_last"),
    (["--task", "tiny", "--attention_backend", "fa9"],
     "--attention_backend: 'fa9' is not allowed; allowed: auto, native, cudnn, flash, efficient, flash3, flash4"),
]


@pytest.mark.parametrize("args,expected", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2(args, expected):
    proc = _cli(*args, "--device", "cpu")
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="a flash_attn package is installed")
def test_flash4_without_fa4_is_one_line_exit_2():
    proc = _cli("--task", "tiny", "--attention_backend", "flash4", "--device", "cpu")
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --attention_backend flash4: "), proc.stderr
    assert lines[0].endswith("allowed here: auto, native, cudnn, flash, efficient"), lines[0]


def test_unreadable_image_and_incomplete_ckpt_dir(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    proc = _cli("--task", "tiny", "--device", "cpu", "--image", str(bad))
    assert proc.returncode == 2 and "is not a readable image" in proc.stderr
    ck = tmp_path / "ck"
    (ck / "transformer").mkdir(parents=True)
    (ck / "transformer" / "config.json").write_text("{}")
    proc = _cli("--task", "tiny", "--device", "cpu", "--ckpt_dir", str(ck))
    assert proc.returncode == 2
    assert "missing vae/config.json (needed for --weights diffusers)" in proc.stderr


def test_uint8_frames_equal_diffusers_postprocess_then_rounding():
    """Our on-device conversion equals diffusers' postprocess_video followed by the writer's ×255 rounding."""
    from diffusers.video_processor import VideoProcessor

    from wan_enhanced.pipeline import to_uint8_frames

    video = torch.randn(1, 3, 5, 32, 48, generator=torch.Generator().manual_seed(0)) * 0.8
    ref = VideoProcessor(vae_scale_factor=16).postprocess_video(video, output_type="np")[0]
    ref = (np.clip(ref, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    ours = to_uint8_frames(video)
    assert ours.dtype == np.uint8 and ours.shape == (5, 32, 48, 3)
    np.testing.assert_array_equal(ours, ref)


@pytest.fixture
def restore_inductor_marks():
    """The compiled case marks torch's sdpa_kernel helpers in inductor's process-wide config: undone after."""
    import torch._inductor.config as inductor_config

    before = dict(inductor_config.unsafe_marked_cacheable_functions)
    yield
    inductor_config.unsafe_marked_cacheable_functions = before


@pytest.mark.parametrize("compile_mode", ["none", "blocks"])
def test_text_encoder_and_dit_are_freed_before_decode(tiny_cfg, monkeypatch, compile_mode, restore_inductor_marks):
    # After torch.compile the DiT's blocks sit in a reference cycle: dropping the pipeline's reference does
    # not free them (on an H100 the compiled 5B DiT stayed allocated through the VAE decode). Both models must be
    # gone by the time the decoder runs, compiled or not.
    pipe = TI2VPipeline(tiny_cfg(sample_steps=2, compile=compile_mode), progress=False)
    refs, alive = {}, {}
    load_t5, load_dit, decode = pipe.load_text_encoder, pipe.load_dit, pipe.decode

    def watch_t5():
        out = load_t5()
        refs["t5"] = [weakref.ref(p) for p in pipe.text_encoder.parameters()]
        return out

    def watch_dit():
        out = load_dit()
        refs["dit"] = [weakref.ref(p) for p in pipe.dit.parameters()]  # the blocks are compiled
        return out

    def check_decode(latents, **kw):
        alive.update({k: sum(r() is not None for r in rs) for k, rs in refs.items()})
        return decode(latents, **kw)

    monkeypatch.setattr(pipe, "load_text_encoder", watch_t5)
    monkeypatch.setattr(pipe, "load_dit", watch_dit)
    monkeypatch.setattr(pipe, "decode", check_decode)
    # The automatic collector may or may not run mid-pipeline (it counts objects, not bytes; a 10 GB
    # model is a few thousand objects): switch it off so only the pipeline's own freeing counts.
    gc.disable()
    try:
        pipe.generate()
    finally:
        gc.enable()
    assert pipe.fast.compile == compile_mode
    assert alive == {"t5": 0, "dit": 0}  # parameters still alive
    # the compiled blocks' sdpa_kernel helpers are marked for AOT autograd's cache, and the report says so
    assert (pipe.fast.aot_cache_note.startswith("torch.nn.attention._backend_from_string, "
                                                "torch.nn.attention._sdpa_kernel marked cacheable (torch ")
            if compile_mode == "blocks" else pipe.fast.aot_cache_note == "")
