"""The report a user sees is unchanged by refactors: the tiny preset's JSON report has the same keys and the
same values as the reports written at issue 15 (which added the remainder rows, the free / latents stages, the
warm/cold totals, the GPU state and the journal on purpose), except timings, timestamps and host readings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "fixtures" / "golden"
# Values that are measured (times, host readings) or name this run's files: keys must match, values may not.
VOLATILE = {"created", "started", "start_s", "end_s", "duration_s", "timeline", "cpu_percent", "host_rss_peak_gb",
            "host_rss_gb", "wall_s", "denoise_s", "s_per_step", "first_step_s", "mean_rest_step_s", "tflops_per_s",
            "report_file", "save_file", "image", "hostname", "python", "platform", "cpu", "pid", "argv", "cwd",
            "load_info", "seconds", "gb_per_s", "git", "versions", "torch", "system", "short_window",
            "steady_s_per_step", "cold_start_s", "video_s_warm", "steady_tflops_per_s", "children_s", "untracked_s",
            "host", "covered_s", "dir", "start_to_total_s"}


def _diff(a: Any, b: Any, path: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            out.append(f"{path}: keys {sorted(set(a) ^ set(b))}")
        for k in set(a) & set(b):
            if k in VOLATILE:
                continue
            _diff(a[k], b[k], f"{path}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} vs {len(b)} items")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            _diff(x, y, f"{path}[{i}]", out)
    elif a != b:
        out.append(f"{path}: {a!r} vs {b!r}")


def _metric_value_is_timing(path: str) -> bool:
    return path.endswith(".value") and any(f".{k}." in path for k in VOLATILE)


@pytest.mark.parametrize("name, extra", [("tiny_t2v_issue15", []), ("tiny_i2v_issue15", ["--t5_cpu"])])
def test_tiny_report_matches_the_golden_report(tmp_path, name, extra):
    if "i2v" in name:
        img = tmp_path / "img64.png"
        Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8")).save(img)
        extra = extra + ["--image", str(img)]
    out = tmp_path / "r.json"
    subprocess.run([sys.executable, str(ROOT / "generate.py"), "--task", "tiny", "--report_file", str(out), *extra],
                   check=True, capture_output=True, cwd=tmp_path)
    new, old = json.loads(out.read_text()), json.loads((GOLDEN / f"{name}.json").read_text())
    diffs: list[str] = []
    _diff(old, new, "report", diffs)
    # energy / compute-load metrics and stage timing metrics depend on the clock only
    diffs = [d for d in diffs if not _metric_value_is_timing(d.split(":")[0])]
    assert not diffs, "\n".join(diffs[:20])
    assert set(new["system"]) == set(old["system"])
