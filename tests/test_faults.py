"""Fault injection (issue 16): each class of bad input or failure ends in one clear line and loses nothing.

One section per failure class, numbered as in the issue; the shared helpers come first. Everything runs
on the CPU on the tiny preset. The command-line tests run ``generate.py`` / ``format_report.py`` as a
user would and check the exit code and that stderr is exactly one ``error: …`` line.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "fixtures" / "golden" / "tiny_t2v_issue15.json"


# ==== shared helpers =====================================================================================


def generate_cli(*args: str, cwd: Path = ROOT, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python generate.py --task tiny --device cpu --quiet ARGS`` (tiny preset, CPU)."""
    return subprocess.run([sys.executable, str(ROOT / "generate.py"), "--task", "tiny", "--device", "cpu", "--quiet",
                           *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def format_report_cli(path: str | Path) -> subprocess.CompletedProcess:
    """``python format_report.py PATH``."""
    return subprocess.run([sys.executable, str(ROOT / "format_report.py"), str(path)], capture_output=True,
                          text=True, timeout=60)


def the_error_line(stderr: str) -> str:
    """The one line of ``stderr``, asserting that there is exactly one and that it is an ``error:`` line."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def listing(folder: Path) -> list[str]:
    """Every entry in ``folder``, hidden ones included, sorted."""
    return sorted(os.listdir(folder))


def write_json(path: Path, obj: Any) -> Path:
    """``obj`` as JSON at ``path``."""
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def random_frames(n: int = 9, h: int = 64, w: int = 96) -> np.ndarray:
    """``n`` frames of structured noise (uint8, H×W×3)."""
    return (np.random.default_rng(0).random((n, h, w, 3)) * 255).astype(np.uint8)


# ==== 1. output paths that look writable but are not =====================================================


@pytest.mark.parametrize("flag,path", [("--report_file", "/proc/wan_test.json"), ("--save_file", "/proc/x.mp4"),
                                       ("--save_latents", "/proc/x.pt")])
def test_output_under_proc_is_refused_before_the_run(flag, path, tmp_path):
    report = tmp_path / "r.json"
    extra = [] if flag == "--report_file" else ["--report_file", str(report)]
    proc = generate_cli(flag, path, *extra)
    assert proc.returncode == 2
    assert the_error_line(proc.stderr) == (f"error: {flag}: '{path}' cannot be written (creating a file in /proc "
                                           "fails: [Errno 2] No such file or directory)")
    assert not report.exists()  # validation came first: nothing ran, no report


def test_output_under_sys_is_refused_with_the_os_reason():
    proc = generate_cli("--report_file", "/sys/kernel/wan_test.json")
    assert proc.returncode == 2
    line = the_error_line(proc.stderr)
    assert line.startswith("error: --report_file: '/sys/kernel/wan_test.json' cannot be written (creating a file in "
                           "/sys/kernel fails: [Errno "), line


def test_missing_folders_are_probed_in_the_nearest_ancestor_and_not_created(tmp_path):
    from wan_enhanced.writable import output_problem

    assert output_problem(str(tmp_path / "a" / "b" / "r.json")) is None
    assert output_problem(str(tmp_path / "r.json")) is None
    assert listing(tmp_path) == []  # the probes left nothing, and no folder was created
    assert output_problem("/proc/wan-new-dir/r.json") == (
        "cannot be written (creating a folder in /proc fails: [Errno 2] No such file or directory)")


def test_the_probe_is_real_not_os_access(tmp_path, monkeypatch):
    """A folder that os.access calls writable (root, read-only mounts) but that refuses new files."""
    import tempfile

    from wan_enhanced.config import RunConfig, validate
    from wan_enhanced.errors import ConfigError

    def refuse(*args: Any, **kw: Any) -> Any:
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".wan-enhanced-probe-xyz"))

    assert os.access(tmp_path, os.W_OK)
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    target = str(tmp_path / "v.mp4")
    with pytest.raises(ConfigError) as info:
        validate(RunConfig(task="tiny", device="cpu", save_file=target), cuda_available=False)
    assert str(info.value) == (f"--save_file: '{target}' cannot be written (creating a file in {tmp_path} fails: "
                               "[Errno 30] Read-only file system)")


def test_a_device_node_is_not_an_output(tmp_path):
    proc = generate_cli("--save_latents", "/dev/null")
    assert proc.returncode == 2
    assert the_error_line(proc.stderr) == ("error: --save_latents: '/dev/null' cannot be written (it exists and is "
                                           "not a regular file)")


# ==== 4. partial videos ==================================================================================


def _reference_mp4(frames: np.ndarray, path: Path) -> None:
    """The video as it was written before issue 16: imageio straight to the path, same settings."""
    import imageio.v2 as imageio

    with imageio.get_writer(path, fps=24, codec="libx264", quality=8, macro_block_size=1,
                            ffmpeg_log_level="error") as writer:
        for frame in frames:
            writer.append_data(frame)


@pytest.fixture
def failing_writer(monkeypatch):
    """Make imageio's ffmpeg writer raise ``exc`` on its third frame: ``failing_writer(exc)``."""
    from imageio.plugins.ffmpeg import FfmpegFormat

    original = FfmpegFormat.Writer.append_data

    def install(exc: BaseException, after: int = 2) -> None:
        calls = {"n": 0}

        def append_data(self: Any, im: Any, meta: Any = None) -> Any:
            calls["n"] += 1
            if calls["n"] > after:
                raise exc
            return original(self, im) if meta is None else original(self, im, meta)

        monkeypatch.setattr(FfmpegFormat.Writer, "append_data", append_data)

    return install


def test_video_is_whole_and_its_frames_unchanged(tmp_path):
    import imageio.v3 as iio

    from wan_enhanced.video import save_mp4

    frames = random_frames()
    out = tmp_path / "out"
    out.mkdir()
    assert save_mp4(frames, out / "v.mp4") == out / "v.mp4"
    assert listing(out) == ["v.mp4"]  # no temporary file left
    _reference_mp4(frames, tmp_path / "reference.mp4")
    ours, reference = iio.imread(out / "v.mp4"), iio.imread(tmp_path / "reference.mp4")
    assert ours.shape == (9, 64, 96, 3)
    assert np.array_equal(ours, reference)
    umask = os.umask(0o022)
    os.umask(umask)
    assert (out / "v.mp4").stat().st_mode & 0o777 == 0o666 & ~umask  # a plain open()'s mode, not mkstemp's 0600


def test_failure_mid_write_leaves_no_video_and_no_temporary(tmp_path, failing_writer):
    from wan_enhanced.video import VideoWriteError, save_mp4

    failing_writer(RuntimeError("injected: disk on fire"))
    target = tmp_path / "v.mp4"
    with pytest.raises(VideoWriteError) as info:
        save_mp4(random_frames(), target)
    assert str(info.value) == f"cannot write video {target}: injected: disk on fire"
    assert listing(tmp_path) == []


def test_failure_mid_write_keeps_the_earlier_video(tmp_path, failing_writer):
    from wan_enhanced.video import VideoWriteError, save_mp4

    target = tmp_path / "v.mp4"
    target.write_bytes(b"the previous video")
    failing_writer(RuntimeError("injected"))
    with pytest.raises(VideoWriteError):
        save_mp4(random_frames(), target)
    assert listing(tmp_path) == ["v.mp4"] and target.read_bytes() == b"the previous video"


def test_interrupt_mid_write_leaves_no_temporary(tmp_path, failing_writer):
    from wan_enhanced.video import save_mp4

    failing_writer(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        save_mp4(random_frames(), tmp_path / "v.mp4")
    assert listing(tmp_path) == []


def test_folder_vanishing_mid_write_is_the_os_error(tmp_path, monkeypatch):
    import shutil

    from imageio.plugins.ffmpeg import FfmpegFormat

    from wan_enhanced.video import VideoWriteError, save_mp4

    folder = tmp_path / "out"
    folder.mkdir()
    original = FfmpegFormat.Writer.append_data
    calls = {"n": 0}

    def append_data(self: Any, im: Any, meta: Any = None) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            shutil.rmtree(folder)
        return original(self, im) if meta is None else original(self, im, meta)

    monkeypatch.setattr(FfmpegFormat.Writer, "append_data", append_data)
    with pytest.raises(VideoWriteError) as info:
        save_mp4(random_frames(), folder / "v.mp4")
    assert str(info.value) == (f"cannot write video {folder}/v.mp4: {folder} no longer accepts files: [Errno 2] "
                               "No such file or directory")
    assert info.value.errno == errno.ENOENT
    assert listing(tmp_path) == []


def test_ffmpeg_failure_is_ffmpegs_own_line(tmp_path):
    from wan_enhanced.video import VideoWriteError, save_mp4

    target = tmp_path / "v.mp4"
    with pytest.raises(VideoWriteError) as info:
        save_mp4(np.zeros((3, 63, 95, 3), np.uint8), target)  # libx264 with yuv420p needs even sizes
    msg = str(info.value)
    assert msg.startswith(f"cannot write video {target}: ffmpeg: ") and "\n" not in msg, msg
    assert "divisible by 2" in msg
    assert listing(tmp_path) == []


def test_unwritable_folder_at_save_time_is_the_os_error(tmp_path):
    from wan_enhanced.video import VideoWriteError, save_mp4

    with pytest.raises(VideoWriteError) as info:
        save_mp4(random_frames(3), "/proc/wan_test.mp4")
    assert str(info.value) == "cannot write video /proc/wan_test.mp4: [Errno 2] No such file or directory"


def test_a_run_whose_save_fails_leaves_no_partial_video(tiny_cfg, tmp_path, failing_writer):
    from wan_enhanced.run import run_generation

    failing_writer(RuntimeError("injected"))
    out = run_generation(tiny_cfg(save_file=str(tmp_path / "v.mp4"), report_file=str(tmp_path / "r.json")),
                         progress=False)
    assert out.exit_code == 1 and out.status == "failed"
    assert not (tmp_path / "v.mp4").exists()
    assert [n for n in listing(tmp_path) if n.endswith(".tmp.mp4")] == []
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["error"]["stage"] == "Save_Video"
    assert "\n" not in report["error"]["message"]


# ==== 6. images ==========================================================================================


def _rgb(im: Image.Image) -> np.ndarray:
    from wan_enhanced.images import to_rgb

    out = to_rgb(im)
    assert out.mode == "RGB"
    return np.asarray(out)


def _load(path: Path) -> np.ndarray:
    from wan_enhanced.images import load_rgb_image

    out = load_rgb_image(path)
    assert out.mode == "RGB"
    return np.asarray(out)


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(path)
    with Image.open(path) as im:
        assert im.mode in ("I;16", "I")  # as PIL opens a 16-bit greyscale PNG
    assert np.all(_load(path) == 128)  # 32768 / 257 = 127.5, not 255


@pytest.mark.parametrize("mode,value,expected", [
    ("I;16", 65535, 255), ("I;16B", 32768, 128), ("I;16L", 0, 0),
    ("I", 32768, 128), ("I", 65535, 255),
    ("F", 0.5, 128), ("F", 1.0, 255), ("F", 128.0, 128), ("F", 30000.0, 117),
])
def test_wide_greyscale_is_scaled_by_its_range(mode, value, expected):
    assert np.all(_rgb(Image.new(mode, (4, 4), value)) == expected)


def test_wide_values_beyond_16_bit_are_stretched_over_their_own_range():
    arr = np.array([[-5, 0], [100000, 200000]], np.int32)
    assert _rgb(Image.fromarray(arr))[..., 0].tolist() == [[0, 0], [128, 255]]  # (v + 5) / 200005 × 255
    floats = np.array([[np.nan, -1.0], [np.inf, 3.0]], np.float32)  # NaN → 0, inf → the finite max
    assert _rgb(Image.fromarray(floats))[..., 0].tolist() == [[64, 0], [255, 255]]


@pytest.mark.parametrize("mode,value", [("RGBA", (10, 20, 30, 0)), ("LA", (10, 0)), ("PA", (3, 0)),
                                        ("RGBa", (0, 0, 0, 0)), ("La", (0, 0))])
def test_transparent_pixels_become_the_background(mode, value):
    from wan_enhanced.images import BACKGROUND

    assert BACKGROUND == (255, 255, 255)
    assert np.all(_rgb(Image.new(mode, (4, 4), value)) == BACKGROUND)


def test_alpha_is_composited_not_dropped(tmp_path):
    path = tmp_path / "half.png"
    Image.new("RGBA", (4, 4), (255, 0, 0, 128)).save(path)
    assert _load(path)[0, 0].tolist() == [255, 127, 127]  # half red over white
    opaque = tmp_path / "opaque.png"
    Image.new("RGBA", (4, 4), (10, 20, 30, 255)).save(opaque)
    assert _load(opaque)[0, 0].tolist() == [10, 20, 30]


def test_palette_with_a_transparent_index(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)
    im.putpixel((0, 0), 0)
    im.putpixel((1, 0), 1)
    path = tmp_path / "p.png"
    im.save(path, transparency=0)
    assert _load(path)[0].tolist() == [[255, 255, 255], [255, 0, 0]]
    plain = tmp_path / "plain.png"
    im.save(plain)
    assert _load(plain)[0].tolist() == [[0, 0, 255], [255, 0, 0]]


def test_cmyk_converts(tmp_path):
    path = tmp_path / "cmyk.tif"
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(path)
    assert np.all(_load(path) == (255, 0, 0))


@pytest.mark.parametrize("mode,value,expected", [
    ("1", 1, (255, 255, 255)), ("L", 77, (77, 77, 77)), ("HSV", (0, 255, 255), (255, 0, 0)),
    ("YCbCr", (76, 85, 255), (254, 0, 0)), ("LAB", (255, 128, 128), (254, 255, 254)),
    ("RGBX", (1, 2, 3, 0), (1, 2, 3)),
])
def test_other_modes_convert(mode, value, expected):
    assert _rgb(Image.new(mode, (2, 2), value))[0, 0].tolist() == list(expected)


def test_i2v_sees_a_16_bit_image_as_its_8_bit_equal(tiny_cfg, tmp_path):
    from wan_enhanced.pipeline import TI2VPipeline

    wide, narrow = tmp_path / "g16.png", tmp_path / "g8.png"
    Image.fromarray(np.full((64, 64), 32768, np.uint16)).save(wide)
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(narrow)
    a = TI2VPipeline(tiny_cfg(image=str(wide)), progress=False).generate().latents
    b = TI2VPipeline(tiny_cfg(image=str(narrow)), progress=False).generate().latents
    assert np.array_equal(a.numpy(), b.numpy())


def _jpeg_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(random_frames(1, 64, 64)[0]).save(buf, "JPEG")
    return buf.getvalue()


def test_truncated_jpeg_fails_validation_with_one_line(tmp_path):
    path = tmp_path / "x.jpg"
    data = _jpeg_bytes()
    path.write_bytes(data[: len(data) // 2])
    proc = generate_cli("--image", str(path), "--report_file", str(tmp_path / "r.json"))
    assert proc.returncode == 2
    line = the_error_line(proc.stderr)
    assert line.startswith(f"error: --image: '{path}' is truncated or corrupt (image file is truncated"), line
    assert not (tmp_path / "r.json").exists()  # refused before the run


@pytest.mark.parametrize("damage", ["cut_half", "no_end", "flipped_byte"])
def test_damaged_png_fails_validation(tmp_path, damage):
    import io

    from wan_enhanced.config import RunConfig, validate
    from wan_enhanced.errors import ConfigError

    buf = io.BytesIO()
    Image.fromarray(random_frames(1, 64, 64)[0]).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    if damage == "cut_half":
        data = data[: len(data) // 2]
    elif damage == "no_end":
        data = data[:-20]  # pixels complete, the end chunk missing
    else:
        data[len(data) // 2] ^= 0xFF
    path = tmp_path / "x.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as info:
        validate(RunConfig(task="tiny", device="cpu", image=str(path)), cuda_available=False)
    assert str(info.value).startswith(f"--image: '{path}' is truncated or corrupt ("), info.value
    assert "\n" not in str(info.value)


def test_not_an_image_keeps_its_message(tmp_path):
    from wan_enhanced.config import RunConfig, validate
    from wan_enhanced.errors import ConfigError

    path = tmp_path / "x.png"
    path.write_bytes(b"not an image")
    with pytest.raises(ConfigError) as info:
        validate(RunConfig(task="tiny", device="cpu", image=str(path)), cuda_available=False)
    assert str(info.value) == f"--image: '{path}' is not a readable image (UnidentifiedImageError)"


# ==== 7. malformed reports ===============================================================================


def _golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        obj = obj[key]
    if value is KeyError:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value


MALFORMED = [
    (("stages",), [1, 2], "stages[0]: expected an object, got int"),
    (("stages", 3, "memory"), "12 GB", "stages[3].memory: expected an object, got str"),
    (("stages", 3, "memory", "peak_gb"), 3.5, "stages[3].memory.peak_gb: expected an object, got float"),
    (("stages", 3, "sm", "value"), "high", "stages[3].sm.value: expected a number or null, got str"),
    (("stages", 2, "name"), 5, "stages[2].name: expected a string, got int"),
    (("stages", 2, "name"), KeyError, "stages[2].name: missing (every stage has a name)"),
    (("stages", 2, "duration_s"), "1.5", "stages[2].duration_s: expected a number, got str"),
    (("stages", 2, "start_s"), [0], "stages[2].start_s: expected a number, got list"),
    (("stages", 2, "depth"), 1.5, "stages[2].depth: expected an integer, got float"),
    (("stages", 2, "parent"), ["Total"], "stages[2].parent: expected a string, got list"),
    (("totals",), [], "'totals' missing or not a dict"),
    (("totals", "wall_s"), 12.5, "totals.wall_s: expected an object, got float"),
    (("totals", "mfu", "value"), True, "totals.mfu.value: expected a number or null, got bool"),
    (("totals", "tflops_per_s", "reason"), 3, "totals.tflops_per_s.reason: expected a string, got int"),
    (("steps",), {"n": 4}, "steps: expected a list, got object"),
    (("steps", 0), 0.5, "steps[0]: expected an object, got float"),
    (("timeline",), [], "timeline: expected an object, got list"),
    (("timeline", "t_s", 1), "x", "timeline.t_s[1]: expected a number, got str"),
    (("timeline", "memory_gb"), "x", "timeline.memory_gb: expected a list, got str"),
    (("system",), "linux", "system: expected an object, got str"),
    (("system", "gpu"), ["H100"], "system.gpu: expected an object, got list"),
    (("run",), 3, "run: expected an object, got int"),
    (("run", "memory_budget_gb"), "16", "run.memory_budget_gb: expected a number, got str"),
    (("weights",), "random", "weights: expected an object, got str"),
    (("outputs",), [], "outputs: expected an object, got list"),
    (("error",), "boom", "error: expected an object, got str"),
    (("status",), 1, "status: expected a string, got int"),
    (("parallel",), {"ranks": [{"totals": {"peak_memory_gb": 3}}]},
     "parallel.ranks[0].totals.peak_memory_gb: expected an object, got int"),
]


@pytest.mark.parametrize("path,value,field", MALFORMED, ids=[m[2].split(":")[0] + f"-{i}" for i, m in
                                                               enumerate(MALFORMED)])
def test_malformed_report_is_one_line_naming_the_field(path, value, field, tmp_path, capsys):
    from wan_enhanced.cli import report_main

    report = _golden()
    _set(report, path, value)
    file = write_json(tmp_path / "r.json", report)
    assert report_main([str(file)]) == 2
    err = capsys.readouterr()
    assert err.out == ""
    assert the_error_line(err.err) == f"error: {file}: malformed report: {field}"


def test_unknown_status_names_the_allowed_ones(tmp_path, capsys):
    from wan_enhanced.cli import report_main
    from wan_enhanced.report import schema

    report = _golden()
    report["status"] = "exploded"
    file = write_json(tmp_path / "r.json", report)
    assert report_main([str(file)]) == 2
    assert the_error_line(capsys.readouterr().err) == (
        f"error: {file}: malformed report: status: 'exploded' is not one of {', '.join(schema.STATUSES)}")


@pytest.mark.parametrize("path,value,field", [MALFORMED[0], MALFORMED[1]], ids=["stages-ints", "memory-string"])
def test_format_report_script_on_a_malformed_report(path, value, field, tmp_path):
    report = _golden()
    _set(report, path, value)
    file = write_json(tmp_path / "r.json", report)
    proc = format_report_cli(file)
    assert proc.returncode == 2 and proc.stdout == ""
    assert the_error_line(proc.stderr) == f"error: {file}: malformed report: {field}"


def test_unknown_keys_and_nulls_are_accepted():
    from wan_enhanced.report.validate import check_structure

    report = _golden()
    report["journal"] = {"pid": 1, "anything": [1, "x"]}
    report["new_section"] = [1, 2]
    report["stages"][1].update(untracked_s=0.01, children_s=0.2, gpu_state={"held_back": {"share": None}},
                               something_new="x")
    report["stages"][1]["memory"]["new_gb"] = "not checked"
    report["totals"]["some_new_total"] = 4
    report["stages"][2]["sm"] = None
    report["steps"], report["timeline"], report["system"] = None, None, None
    assert check_structure(report) is report


def _run_report_files() -> list[Path]:
    found = []
    for path in sorted((ROOT / "benchmark" / "results").rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("schema") == "wan-enhanced/report":
            found.append(path)
    return found


def test_every_committed_and_golden_report_passes():
    from wan_enhanced.report.schema import load_report

    files = _run_report_files()
    assert len(files) >= 10  # the device reports committed under benchmark/results
    for path in files + sorted((ROOT / "tests" / "fixtures" / "golden").glob("*.json")):
        load_report(path)


@pytest.mark.parametrize("mode", ["t2v", "i2v"])
def test_reports_of_the_tiny_pipeline_pass(mode, tiny_cfg, tiny_image, tmp_path):
    from wan_enhanced.report.schema import load_report
    from wan_enhanced.report.validate import check_structure
    from wan_enhanced.run import run_generation

    out = run_generation(tiny_cfg(report_file=str(tmp_path / "r.json"), image=tiny_image if mode == "i2v" else None),
                         progress=False)
    assert out.status == "ok"
    check_structure(copy.deepcopy(out.report))
    load_report(tmp_path / "r.json")


def test_bench_readers_refuse_a_malformed_report(tmp_path):
    from wan_enhanced.bench import reportdata
    from wan_enhanced.errors import ReportError

    report = _golden()
    report["stages"][3]["memory"] = "x"
    file = write_json(tmp_path / "r.json", report)
    with pytest.raises(ReportError, match=r"stages\[3\]\.memory: expected an object, got str"):
        reportdata.read_report(file)


# ==== 2. the suite runner leaves no orphans; one runner per run directory ===============================

SLEEPY_CASE = """
import json, os, sys, time
args = sys.argv[1:]
report = args[args.index("--report_file") + 1]
open(report + ".pid", "w").write(str(os.getpid()))
time.sleep(60)
json.dump({"late": True}, open(report, "w"))  # what an orphan would write into the run directory
"""


def _suite(tmp_path: Path, prompt: str = "x", **case: Any) -> Path:
    return write_json(tmp_path / "suite.json", {"global_settings": {"task": "tiny", "device": "cpu", "prompt": prompt},
                                                "test_cases": [{"name": "a", "args": {}, **case}]})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its (dead) parent's reaper is not running either
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_a_case_dies_with_its_runner_and_writes_nothing_later(tmp_path):
    import signal
    import time

    (tmp_path / "sleepy.py").write_text(SLEEPY_CASE)
    cfg = _suite(tmp_path)
    runner = subprocess.Popen([sys.executable, str(ROOT / "benchmark" / "run.py"), "--config", str(cfg), "--run-id", "r",
                               "--reports-dir", str(tmp_path / "rep"), "--output", str(tmp_path / "r.md"),
                               "--generate-cmd", f"{sys.executable} {tmp_path / 'sleepy.py'}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_file, manifest = tmp_path / "rep" / "r" / "a.json.pid", tmp_path / "rep" / "r" / "suite.json"

    def started() -> bool:  # the pid file, then the manifest's "running": kill only after both (a loaded CI
        try:                # machine once landed between them and read "pending")
            return bool(pid_file.read_text()) and json.loads(manifest.read_text())["cases"][0]["status"] == "running"
        except (OSError, ValueError, KeyError, IndexError):
            return False

    for _ in range(300):
        if started():
            break
        time.sleep(0.05)
    case_pid = int(pid_file.read_text())
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=10)
    for _ in range(100):
        if not _alive(case_pid):
            break
        time.sleep(0.05)
    assert not _alive(case_pid), "the case outlived its runner"
    assert not (tmp_path / "rep" / "r" / "a.json").exists()
    man = json.loads((tmp_path / "rep" / "r" / "suite.json").read_text())
    assert man["cases"][0]["status"] == "running" and man["cases"][0]["pid"] == case_pid


def test_a_run_directory_owned_by_a_live_runner_is_refused_in_one_line(tmp_path, capsys):
    from wan_enhanced.bench.runlock import RunLock
    from wan_enhanced.bench.runner import bench_main

    cfg = _suite(tmp_path)
    with RunLock(tmp_path / "rep" / "r"):
        rc = bench_main(["--config", str(cfg), "--run-id", "r", "--reports-dir", str(tmp_path / "rep"),
                         "--output", str(tmp_path / "r.md")])
    err = capsys.readouterr().err
    assert rc == 2
    assert the_error_line(err) == (f"error: run r: in use by the runner with PID {os.getpid()}; wait for it to finish "
                                   f"or stop it (kill {os.getpid()})")


def test_resume_refuses_while_a_case_of_an_earlier_runner_is_alive(tmp_path, capsys):
    from wan_enhanced.bench.manifest import write_manifest
    from wan_enhanced.bench.runner import bench_main

    run = tmp_path / "rep" / "r"
    run.mkdir(parents=True)
    report = run / "a.json"
    ghost = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", str(report)])
    try:
        write_manifest(run, {"schema": "wan-enhanced/suite", "schema_version": 1, "run_id": "r",
                             "cases": [{"name": "a", "id": "a", "status": "running", "pid": ghost.pid,
                                        "report": "a.json"}]})
        rc = bench_main(["--config", str(_suite(tmp_path)), "--run-id", "r", "--resume", "--reports-dir",
                         str(tmp_path / "rep"), "--output", str(tmp_path / "r.md")])
    finally:
        ghost.kill()
        ghost.wait()
    assert rc == 2
    assert the_error_line(capsys.readouterr().err) == (
        f"error: run r: case a of an earlier runner is still running (PID {ghost.pid}); wait for it to finish or "
        f"stop it (kill {ghost.pid}), then resume")


def test_a_measurement_that_shared_the_gpu_says_so():
    from wan_enhanced.bench.markdown import gpu_shared_with

    report = {"system": {"gpu": {"state": {"other_processes": {"value": [{"pid": 4242, "used_gb": 3.0}]},
                                           "other_processes_at_end": {"value": []}}}}}
    assert gpu_shared_with(report) == "PIDs 4242 at the start"
    assert gpu_shared_with({"system": {"gpu": None}}) == ""


# ==== 3. huge arguments ==================================================================================

OK_CASE = """
import json, sys
args = sys.argv[1:]
flags = json.load(open(args[args.index("--flags_file") + 1]))
report = args[args.index("--report_file") + 1]
rep = json.load(open(sys.argv[0].replace("okcase.py", "template.json")))
rep["status"] = "ok"
rep["run"]["prompt_chars_seen"] = len(flags["prompt"])
json.dump(rep, open(report, "w"))
"""


def test_a_5_mb_prompt_travels_in_a_file_and_is_stored_once(tmp_path, capsys):
    from wan_enhanced.bench.runner import bench_main

    (tmp_path / "template.json").write_text(GOLDEN.read_text())
    (tmp_path / "okcase.py").write_text(OK_CASE)
    prompt = "a cat " * (5_000_000 // 6)
    cfg = _suite(tmp_path, prompt=prompt)
    rc = bench_main(["--config", str(cfg), "--run-id", "r", "--reports-dir", str(tmp_path / "rep"), "--output",
                     str(tmp_path / "r.md"), "--generate-cmd", f"{sys.executable} {tmp_path / 'okcase.py'}"])
    assert rc == 0, capsys.readouterr()
    run = tmp_path / "rep" / "r"
    assert json.loads((run / "a.json").read_text())["run"]["prompt_chars_seen"] == len(prompt)  # the whole prompt
    assert (run / "suite.json").stat().st_size < 100_000  # not 15.7 MB
    man = json.loads((run / "suite.json").read_text())
    argv = man["cases"][0]["argv"]
    assert argv[argv.index("--prompt") + 1] == f"<{len(prompt)} characters, in the case's args file>"
    assert man["config"]["stored"] is False and len(man["config"]["sha256"]) == 64
    assert json.loads((run / "a.args.json").read_text())["prompt"] == prompt


def test_a_prompt_longer_than_the_encoder_reads_is_cut_and_said(tmp_path):
    flags = write_json(tmp_path / "f.json", {"prompt": "a red ball " * 20_000})
    r = generate_cli("--flags_file", str(flags), "--report_file", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    assert "prompt of 219999 characters cut to the 32 tokens the text encoder reads" in r.stderr
    run = json.loads((tmp_path / "r.json").read_text())["run"]
    assert run["notes"][0].startswith("prompt of 219999 characters cut to the 32 tokens")
    assert run["prompt_chars"] == 220_000 and len(run["prompt"]) == 4097 and len(run["prompt_sha256"]) == 64


# ==== 5. Ctrl-C ==========================================================================================

INTERRUPT_IN_STEP_1 = """
import os, signal
import wan_enhanced.pipeline as p
_guided = p.TI2VPipeline._guided
def guided(self, *a, **k):
    if self.current_stage == "Step_1":
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends
    return _guided(self, *a, **k)
p.TI2VPipeline._guided = guided
"""


def _with_patch(tmp_path: Path, code: str) -> dict[str, str]:
    (tmp_path / "fault_patch.py").write_text(code)
    (tmp_path / "sitecustomize.py").write_text("import fault_patch  # noqa\n")
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT / "src")]))


def _errors(stderr: str) -> list[str]:
    """stderr without the progress lines (``[wan-enhanced] …``)."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("[wan-enhanced]")]


def test_ctrl_c_is_one_line_exit_130_and_the_report_is_written(tmp_path):
    env = _with_patch(tmp_path, INTERRUPT_IN_STEP_1)
    r = subprocess.run([sys.executable, str(ROOT / "generate.py"), "--task", "tiny", "--quiet", "--report_file",
                        str(tmp_path / "r.json")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180)
    assert r.returncode == 130
    assert _errors(r.stderr) == ["error: stage Step_1: interrupted"]
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["status"] == "failed" and rep["error"]["type"] == "KeyboardInterrupt"
    st = {s["name"]: s for s in rep["stages"]}
    assert st["Step_0"]["failed"] is False and st["Step_1"]["failed"] is True


# ==== 8. a save that fails mid-run =======================================================================

VANISHING_OUTPUT_DIR = """
import shutil
from pathlib import Path
import wan_enhanced.pipeline as p
_save = p.TI2VPipeline.save
def save(self, frames, path, *rest):
    folder = Path(path).parent
    shutil.rmtree(folder)  # the output directory goes away during the run, and a file takes its name
    folder.write_text("not a directory")
    return _save(self, frames, path, *rest)
p.TI2VPipeline.save = save
"""


def test_a_save_that_fails_mid_run_names_the_real_reason_and_keeps_the_latents(tmp_path):
    env = _with_patch(tmp_path, VANISHING_OUTPUT_DIR)
    (tmp_path / "videos").mkdir()
    (tmp_path / "reports").mkdir()
    r = subprocess.run([sys.executable, str(ROOT / "generate.py"), "--task", "tiny", "--quiet", "--save_file",
                        str(tmp_path / "videos" / "v.mp4"), "--report_file", str(tmp_path / "reports" / "r.json")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180)
    assert r.returncode == 1
    (line,) = _errors(r.stderr)
    kept = tmp_path / "reports" / "v.mp4.latents.pt"
    assert line.startswith("error: stage Save_Video: "), line
    assert "Not a directory" in line or "File exists" in line, line  # the OS's own reason
    assert "Broken pipe" not in line and line.endswith(f"(denoised latents kept in {kept})"), line
    import torch

    assert torch.load(kept).shape == (1, 8, 3, 4, 4)  # the tiny preset's latents: nothing computed is lost
    rep = json.loads((tmp_path / "reports" / "r.json").read_text())
    assert rep["error"]["saved_latents"] == str(kept) and rep["outputs"]["video"] is None


def test_latent_fallbacks_go_report_dir_then_cwd_then_tmp(tmp_path, monkeypatch):
    import tempfile

    from wan_enhanced.config import RunConfig
    from wan_enhanced.run import latents_fallbacks

    monkeypatch.chdir(tmp_path)
    cfg = RunConfig(task="tiny", save_file="/gone/v.mp4", report_file=str(tmp_path / "rep" / "r.json"))
    assert latents_fallbacks(cfg) == [Path("/gone/v.mp4.latents.pt"), tmp_path / "rep" / "v.mp4.latents.pt",
                                      tmp_path / "v.mp4.latents.pt", Path(tempfile.gettempdir()) / "v.mp4.latents.pt"]
