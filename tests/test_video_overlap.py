"""Decode and encode overlapped (issue 17, lever 2): each decoded chunk's frames go to the H.264 encoder while the
VAE decodes the next; the frames and the file are those of encoding after decoding, and both stages stay in the
report with the overlap stated."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from wan_enhanced.config import RunConfig, validate
from wan_enhanced.run import run_generation
from wan_enhanced.video import Mp4Stream, VideoWriteError


def _run(tmp: Path, name: str, **kw):
    cfg = validate(RunConfig(task="tiny", device="cpu", save_file=str(tmp / f"{name}.mp4"), **kw), cuda_available=False)
    out = run_generation(cfg, progress=False, monitor_enabled=False)
    assert out.status == "ok", out.message
    return out


@pytest.mark.parametrize("image", [False, True])
def test_overlapped_encoding_gives_the_same_frames_and_the_same_file(tmp_path, image):
    kw = {}
    if image:
        from PIL import Image

        Image.fromarray((np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)).save(tmp_path / "i.png")
        kw["image"] = str(tmp_path / "i.png")
    over = _run(tmp_path, "over", **kw)
    after = _run(tmp_path, "after", encode_overlap=False, **kw)
    assert np.array_equal(over.result.frames, after.result.frames)
    assert (tmp_path / "over.mp4").read_bytes() == (tmp_path / "after.mp4").read_bytes()
    names = [s["name"] for s in over.report["stages"] if s["parent"] == "Total"]
    assert names[-2:] == ["VAE_Decoding", "Save_Video"]
    save = next(s for s in over.report["stages"] if s["name"] == "Save_Video")
    assert save["comment"].startswith("I/O: the rest of the H.264 encoding, which ran during VAE_Decoding (")
    assert save["comment"].endswith(f" of {len(over.result.frames)} frames done when decoding ended)")
    plain = next(s for s in after.report["stages"] if s["name"] == "Save_Video")
    assert plain["comment"] == "I/O"
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []  # no temporary file left


def test_an_encoder_failure_mid_stream_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import imageio_ffmpeg

    real = imageio_ffmpeg.write_frames

    def broken(*a, **k):
        gen = real(*a, **k)
        gen.send(None)

        def frames():
            for n in range(1000):
                frame = yield
                if n == 2:
                    raise BrokenPipeError(32, "Broken pipe")
                gen.send(frame)
        g = frames()
        next(g)
        return g

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", broken)
    stream = Mp4Stream(tmp_path / "v.mp4", fps=24)
    for _ in range(3):
        stream.put(np.zeros((2, 16, 16, 3), np.uint8))
    with pytest.raises(VideoWriteError) as e:
        stream.finish()
    assert str(e.value).startswith(f"cannot write video {tmp_path / 'v.mp4'}: ") and "\n" not in str(e.value)
    assert os.listdir(tmp_path) == []


def test_abort_removes_the_temporary_file(tmp_path):
    stream = Mp4Stream(tmp_path / "v.mp4", fps=24)
    stream.put(np.zeros((3, 16, 16, 3), np.uint8))
    stream.abort()
    assert os.listdir(tmp_path) == []
