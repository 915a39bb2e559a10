"""Decode and encode overlapped (issue 17, lever 2): each decoded chunk's frames go to the H.264 encoder while the
VAE decodes the next; the frames and the file are those of encoding after decoding, and both stages stay in the
report with the overlap stated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wan_enhanced.config import RunConfig, validate
from wan_enhanced.run import run_generation
from wan_enhanced.video import Mp4Stream, VideoWriteError, encoder_nice, lower_thread_priority

ROOT = Path(__file__).resolve().parents[1]


def _expected_nice(n: int) -> int:
    """What ``n`` more nice gives a new thread of this process (capped at 19; nothing outside Linux)."""
    return min(n, 19 - os.getpriority(os.PRIO_PROCESS, 0)) if sys.platform.startswith("linux") else 0


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
    assert save["comment"].endswith(f" of {len(over.result.frames)} frames done when decoding ended; encoder at nice "
                                    f"+{_expected_nice(10)})")
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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_the_encoder_and_its_ffmpeg_run_niced_and_the_caller_does_not(tmp_path, monkeypatch):
    import threading

    import imageio_ffmpeg

    seen: dict[str, int] = {}
    real = imageio_ffmpeg.write_frames

    def spy(*a, **k):  # runs in the encoder thread, just before ffmpeg starts
        seen["thread"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return real(*a, **k)

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", spy)
    monkeypatch.setenv("WAN_ENHANCED_ENCODER_NICE", "7")
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    stream = Mp4Stream(tmp_path / "n.mp4")
    stream.put(np.zeros((2, 16, 16, 3), np.uint8))
    path = stream.finish()
    assert path.is_file() and stream.nice == 7
    assert stream.nice_applied == min(7, 19 - mine) and seen["thread"] == mine + stream.nice_applied
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine  # the caller's thread unchanged


def test_nice_is_capped_at_19_and_zero_changes_nothing():
    import threading

    def in_thread(n: int) -> tuple[int, int]:
        out: list[tuple[int, int]] = []

        def body() -> None:
            tid = threading.get_native_id()
            before = os.getpriority(os.PRIO_PROCESS, tid)
            applied = lower_thread_priority(n)
            out.append((applied, os.getpriority(os.PRIO_PROCESS, tid) - before))

        t = threading.Thread(target=body)
        t.start()
        t.join()
        return out[0]

    assert in_thread(0) == (0, 0)
    if sys.platform.startswith("linux"):
        applied, moved = in_thread(40)
        assert applied == moved and os.getpriority(os.PRIO_PROCESS, 0) + applied == 19


@pytest.mark.parametrize("value", ["-1", "20", "high", "1.5"])
def test_a_bad_encoder_nice_is_one_line_before_anything_loads(value, monkeypatch):
    monkeypatch.setenv("WAN_ENHANCED_ENCODER_NICE", value)
    from wan_enhanced.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        encoder_nice()
    assert str(e.value) == (f"WAN_ENHANCED_ENCODER_NICE: {value!r} is not allowed; allowed: an integer from 0 (the "
                            "same priority as the run) to 19 (default 10)")


def test_a_bad_encoder_nice_stops_generate_with_exit_2():
    r = subprocess.run([sys.executable, str(ROOT / "generate.py"), "--task", "tiny", "--device", "cpu"],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT / "src"), WAN_ENHANCED_ENCODER_NICE="20"))
    assert r.returncode == 2 and r.stderr.strip() == (
        "error: WAN_ENHANCED_ENCODER_NICE: '20' is not allowed; allowed: an integer from 0 (the same priority as the "
        "run) to 19 (default 10)"), r.stderr
