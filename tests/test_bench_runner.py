"""The suite runner end to end on the tiny preset with the real ``generate`` (one case fails on a
broken checkpoint and is recorded while the others succeed; a second run resumes), plus crash,
OOM and timeout handling with a stand-in generate script."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from wan_enhanced.bench.runner import bench_main, load_manifest, outcome_of, suite_exit_code
from wan_enhanced.report.schema import load_report


def _write(path: Path, obj: dict) -> Path:
    path.write_text(json.dumps(obj))
    return path


@pytest.fixture
def broken_ckpt(tmp_path: Path) -> Path:
    """A diffusers-layout dir with configs but no weight files: loading fails in Load_Text_Encoder."""
    root = tmp_path / "broken_ckpt"
    for sub in ("transformer", "vae", "text_encoder"):
        (root / sub).mkdir(parents=True)
        (root / sub / "config.json").write_text("{}")
    (root / "tokenizer").mkdir()
    return root


@pytest.mark.slow  # ~30 s on 2 cores: the whole smoke suite, twice
def test_smoke_suite_end_to_end_with_a_failing_case_then_resume(tmp_path, capsys, broken_ckpt):
    cfg = _write(tmp_path / "suite.json", {
        "description": "test suite",
        "global_settings": {"task": "tiny", "size": "64*64", "frame_num": 5, "sample_steps": 2, "weights": "random",
                            "prompt": "a red ball"},
        "test_cases": [
            {"name": "01_Baseline", "args": {}},
            {"name": "02_Broken_Checkpoint", "args": {"weights": "diffusers", "ckpt_dir": str(broken_ckpt)}},
            {"name": "03_DPM", "args": {"sample_solver": "dpm++", "sample_steps": 3}},
        ],
    })
    reports, md = tmp_path / "reports", tmp_path / "out" / "benchmark_report.md"
    argv = ["--config", str(cfg), "--run-id", "r1", "--reports-dir", str(reports), "--output", str(md),
            "--device", "cpu"]
    rc = bench_main(argv)
    out = capsys.readouterr().out
    assert rc == 1  # a case failed
    assert "[1/3] 01_Baseline ... ok " in out
    assert "[2/3] 02_Broken_Checkpoint ... FAILED " in out and "Load_Text_Encoder: " in out
    assert "[3/3] 03_DPM ... ok " in out

    run = reports / "r1"
    man = load_manifest(run)
    assert man is not None and man["run_id"] == "r1"
    st = {c["name"]: c for c in man["cases"]}
    assert [c["status"] for c in man["cases"]] == ["ok", "failed", "ok"]
    assert st["02_Broken_Checkpoint"]["error"]["stage"] == "Load_Text_Encoder"
    assert st["02_Broken_Checkpoint"]["error"]["type"] == "WeightsError"
    assert man["summary"] == {"ok": 2, "failed": 1}
    assert man["config"]["description"] == "test suite" and "commit" in man["git"] and man["host"]["hostname"]
    for name in st:
        for ext in (".json", ".log", ".txt"):
            assert (run / f"{name}{ext}").is_file(), name + ext
    assert load_report(run / "01_Baseline.json")["status"] == "ok"
    assert load_report(run / "03_DPM.json")["run"]["sample_solver"] == "dpm++"
    assert "--sample_solver dpm++" in (run / "03_DPM.log").read_text()
    assert "[Execution Trace Analysis]" in (run / "01_Baseline.txt").read_text()
    assert "s outside it: process start, imports, building the pipeline before the monitor starts" in md.read_text()

    text = md.read_text()
    assert "## Benchmark Summary" in text and "## Detailed Breakdown" in text
    summary = text.split("## Benchmark Summary")[1].split("###")[0]
    assert "| 01_Baseline | 1 (single run: no spread) | ok |" in summary
    assert "| 02_Broken_Checkpoint | 1 (single run: no spread) | failed (Load_Text_Encoder) |" in summary
    assert "| 0.00 |" not in summary and "| 0 |" not in summary  # unknown is n/a, never 0
    assert "n/a (" in summary
    assert "### 03_DPM" in text and "Step_2" in text
    assert "WeightsError" in text
    assert (md.parent / "benchmark_report_files" / "stage_times.png").is_file()
    assert "](benchmark_report_files/stage_times.png)" in text

    # Resume: same run id; ok cases are skipped, the failed one runs again (now fixed by a changed config).
    cfg2 = json.loads(cfg.read_text())
    cfg2["test_cases"][1]["args"] = {}
    _write(cfg, cfg2)
    rc = bench_main(argv[:2] + ["--resume"] + argv[2:])
    out = capsys.readouterr().out
    assert rc == 0
    assert "run: r1 (resuming)" in out
    assert "[1/3] 01_Baseline ... skipped (ok in an earlier attempt" in out
    assert "[3/3] 03_DPM ... skipped" in out
    assert "[2/3] 02_Broken_Checkpoint ... ok " in out
    man = load_manifest(run)
    assert [c["status"] for c in man["cases"]] == ["ok", "ok", "ok"]
    assert [c["skipped"] for c in man["cases"]] == [True, False, True]
    assert len(man["attempts"]) == 2
    assert "01_Baseline | 1 (single run: no spread) | ok (resumed)" in md.read_text()


STUB = """
import json, os, signal, sys, time
args = sys.argv[1:]
flags = json.load(open(args[args.index("--flags_file") + 1]))  # the runner passes case settings in a file
prompt = flags.get("prompt", "")
report = args[args.index("--report_file") + 1]
fixture = json.load(open(sys.argv[0].replace("stub.py", "template.json")))
if prompt == "crash":
    print("Traceback (most recent call last):\\nRuntimeError: boom in the kernel", flush=True)
    sys.exit(3)
if prompt == "segv":
    print("about to die", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
if prompt == "oom":
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
    sys.exit(1)
if prompt == "hang":
    time.sleep(60)
fixture["status"] = "ok"
json.dump(fixture, open(report, "w"))
"""


@pytest.fixture
def stub(tmp_path: Path) -> str:
    """A stand-in generate: behaviour chosen by --prompt; 'ok' writes a copy of a fixture report."""
    src = Path(__file__).parent / "fixtures" / "reports" / "h100" / "01_Offload_Mode.json"
    (tmp_path / "template.json").write_text(src.read_text())
    (tmp_path / "stub.py").write_text(STUB)
    return f"{sys.executable} {tmp_path / 'stub.py'}"


def test_crashes_without_report_are_recorded_and_the_suite_goes_on(tmp_path, capsys, stub):
    cfg = _write(tmp_path / "c.json", {
        "global_settings": {"task": "tiny", "device": "cpu"},
        "test_cases": [{"name": "a_crash", "args": {"prompt": "crash"}},
                       {"name": "b_killed", "args": {"prompt": "segv"}},
                       {"name": "c_hang", "args": {"prompt": "hang"}, "timeout_s": 1},
                       {"name": "d_ok", "args": {"prompt": "ok"}}],
    })
    md = tmp_path / "r.md"
    rc = bench_main(["--config", str(cfg), "--run-id", "x", "--reports-dir", str(tmp_path / "rep"), "--output",
                     str(md), "--generate-cmd", stub])
    out = capsys.readouterr().out
    assert rc == 1
    man = load_manifest(tmp_path / "rep" / "x")
    st = {c["name"]: c for c in man["cases"]}
    assert st["a_crash"]["status"] == "failed" and st["a_crash"]["exit_code"] == 3
    assert "RuntimeError: boom in the kernel" in st["a_crash"]["error"]["message"]
    assert st["b_killed"]["status"] == "failed" and st["b_killed"]["error"]["type"] == "Crash (SIGKILL)"
    assert st["c_hang"]["status"] == "failed" and st["c_hang"]["error"]["type"] == "Timeout"
    assert st["d_ok"]["status"] == "ok"
    assert "[4/4] d_ok ... ok" in out
    text = md.read_text()
    assert "### Failures" in text and "boom in the kernel" in text and "killed by SIGKILL" in text
    assert "no report was written" in (tmp_path / "rep" / "x" / "a_crash.txt").read_text()


def test_oom_under_budget_reads_does_not_fit(tmp_path):
    log = tmp_path / "c.log"
    log.write_text("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n")
    res = outcome_of(tmp_path / "missing.json", log, 1, budget_gb=16.0)
    assert res.status == "oom" and res.error["message"].startswith("does not fit within 16 GB")
    # With a report, its status and message win.
    rep = json.loads((Path(__file__).parent / "fixtures" / "reports" / "h100" / "05_Budget_16GB.json").read_text())
    _write(tmp_path / "r.json", rep)
    res = outcome_of(tmp_path / "r.json", log, 1, budget_gb=16.0)
    assert res.status == "oom" and res.error == {"stage": "Denoising", "type": "OutOfMemoryError",
                                                 "message": "does not fit within 16 GB"}
    man = {"cases": [{"status": "ok", "flags": {}}, {"status": "oom", "flags": {"memory_budget_gb": 16.0}}]}
    assert suite_exit_code(man) == 0  # "does not fit" under a budget is a result, not a failure
    man["cases"].append({"status": "oom", "flags": {}})
    assert suite_exit_code(man) == 1


def test_oom_case_shows_does_not_fit_in_markdown(tmp_path, capsys):
    from wan_enhanced.bench.markdown import write_suite_report

    run = tmp_path / "run"
    run.mkdir()
    src = Path(__file__).parent / "fixtures" / "reports" / "h100"
    (run / "05_Budget_16GB.json").write_text((src / "05_Budget_16GB.json").read_text())
    (run / "01_Offload_Mode.json").write_text((src / "01_Offload_Mode.json").read_text())
    _write(run / "suite.json", {
        "schema": "wan-enhanced/suite", "schema_version": 1, "run_id": "run", "cases": [
            {"name": "01_Offload_Mode", "status": "ok", "report": "01_Offload_Mode.json", "log": "a.log",
             "text": "a.txt", "flags": {}, "argv": []},
            {"name": "05_Budget_16GB", "status": "oom", "report": "05_Budget_16GB.json", "log": "b.log",
             "text": "b.txt", "flags": {"memory_budget_gb": 16.0}, "argv": [],
             "error": {"stage": "Denoising", "type": "OutOfMemoryError", "message": "does not fit within 16 GB"}}]})
    md = write_suite_report(run, tmp_path / "bench.md")
    text = md.read_text()
    assert "| 05_Budget_16GB | 1 (single run: no spread) | oom: does not fit within 16 GB |" in text
    assert "| 01_Offload_Mode | 1 (single run: no spread) | ok | 102.00 |" in text
    assert "21.00" in text and "10.000" in text  # peak GB, energy Wh (36 kJ)
    assert "SM % from" not in text.split("## Benchmark Summary")[1].split("### Settings")[0]  # fixture SM is gpm
    assert (tmp_path / "bench_files" / "timeline_01_Offload_Mode.png").is_file()
    assert "![01_Offload_Mode timeline](bench_files/timeline_01_Offload_Mode.png)" in text
    assert "_Timeline chart not drawn: no timeline samples in the report._" in text  # the OOM fixture has none


def test_markdown_peaks_gpus_used_and_error_once(tmp_path):
    from wan_enhanced.bench.markdown import write_suite_report

    run = tmp_path / "run"
    run.mkdir()
    rep = json.loads((Path(__file__).parent / "fixtures" / "reports" / "h100" / "01_Offload_Mode.json").read_text())
    rep["system"]["gpu"].update(count=1, host_count=2)  # a 1-GPU run on a 2-GPU host
    _write(run / "01_Offload_Mode.json", rep)
    crash = {"stage": "VAE_Decoding", "type": "RuntimeError", "message": "RuntimeError: decoder exploded"}
    _write(run / "suite.json", {
        "schema": "wan-enhanced/suite", "schema_version": 1, "run_id": "run", "cases": [
            {"name": "01_Offload_Mode", "status": "ok", "report": "01_Offload_Mode.json", "log": "a.log",
             "text": "a.txt", "flags": {}, "argv": [], "elapsed_s": 0.04},
            {"name": "02_Crash", "status": "failed", "report": "02_Crash.json", "log": "b.log", "text": "b.txt",
             "flags": {}, "argv": [], "error": crash}]})
    text = write_suite_report(run, tmp_path / "bench.md").read_text()
    assert "- Device: NVIDIA H100 80GB HBM3 ×1 used (host has 2), 79.6 GB" in text
    assert "| Peak alloc GB | Peak reserved GB |" in text
    assert "| 01_Offload_Mode | 1 (single run: no spread) | ok | 102.00 | " in text
    assert "| 21.00 | 22.00 |" in text  # allocated, reserved
    assert "Peak reserved: highest held by PyTorch's caching allocator" in text
    failure = next(line for line in text.splitlines() if line.startswith("- **02_Crash**"))
    assert "RuntimeError: decoder exploded" in failure and failure.count("RuntimeError") == 1
    assert "0.04 s in the runner" in text  # not "0.0 s"

    rep["run"]["cfg_parallel"] = True  # 2 processes: the run used 2 GPUs
    _write(run / "01_Offload_Mode.json", rep)
    text = write_suite_report(run, tmp_path / "bench.md").read_text()
    assert "- Device: NVIDIA H100 80GB HBM3 ×2 used (host has 2)" in text


def test_manifest_is_written_atomically_with_the_umask_mode(tmp_path):
    import os

    from wan_enhanced.bench import manifest
    from wan_enhanced.report import schema

    assert manifest.write_json_atomic is schema.write_json_atomic  # one atomic JSON writer for reports and manifests
    old = os.umask(0o022)
    try:
        manifest.write_manifest(tmp_path, {"schema": manifest.SUITE_SCHEMA, "cases": []})
    finally:
        os.umask(old)
    p = tmp_path / "suite.json"
    assert (p.stat().st_mode & 0o777) == 0o644
    assert [x.name for x in tmp_path.iterdir()] == ["suite.json"]
    assert load_manifest(tmp_path) == {"schema": manifest.SUITE_SCHEMA, "cases": []}


def test_case_argv_round_trips_through_the_generate_parser():
    """argv the runner passes → generate's parser → the same flag values."""
    import copy

    from wan_enhanced.bench.suite_config import case_argv, parse_suite_config
    from wan_enhanced.cli import config_from_args, generate_parser
    from wan_enhanced.flags import CONFIG_FLAGS

    values = {"task": "tiny", "size": "96*64", "frame_num": 13, "sample_steps": 3, "sample_shift": 3.5,
              "sample_guide_scale": 1.0, "sample_solver": "dpm++", "base_seed": -1, "prompt": "a cat, 'quoted'",
              "negative_prompt": "", "image": "in.png", "ckpt_dir": "ck", "weights": "random",
              "offload_model": False, "t5_cpu": True, "convert_model_dtype": True, "ulysses_size": 2,
              "cfg_parallel": True, "save_file": "v.mp4", "save_latents": "l.pt", "memory_budget_gb": 15.5,
              "vae_dtype": "bf16", "compile": "none", "attention_backend": "native", "vae_layout": "contiguous",
              "device": "cuda:1", "warmup": True, "encode_overlap": False, "cache_dir": "cc", "vae_compile": "blocks",
              "fused_qk_rope": "on"}
    assert set(values) == {f.name for f in CONFIG_FLAGS if not f.runner}
    suite = parse_suite_config({"global_settings": copy.deepcopy(values), "test_cases": [{"name": "a"}]})
    argv = case_argv(suite.cases[0])
    ns = generate_parser().parse_args(argv)
    assert {k: getattr(ns, k) for k in values} == values
    cfg = config_from_args(ns)
    assert {k: getattr(cfg, k) for k in values} == values
    # switches that are off are left out; so is a flag removed with null
    off = dict(values, t5_cpu=False, cfg_parallel=False, convert_model_dtype=False, ckpt_dir=None)
    argv = case_argv(parse_suite_config({"global_settings": off, "test_cases": [{"name": "a"}]}).cases[0])
    assert "--t5_cpu" not in argv and "--ckpt_dir" not in argv
    ns = generate_parser().parse_args(argv)
    assert ns.t5_cpu is False and ns.cfg_parallel is False and ns.ckpt_dir is None


REPEAT_STUB = """
import json, re, sys
args = sys.argv[1:]
report = args[args.index("--report_file") + 1]
m = re.search(r"\\.r(\\d+)\\.json$", report)
k = int(m.group(1)) if m else 1
fixture = json.load(open(sys.argv[0].replace("rstub.py", "template.json")))
fixture["status"] = "ok"
fixture["totals"]["wall_s"]["value"] = 10.0 * k  # repeat k took 10·k s
json.dump(fixture, open(report, "w"))
"""


def test_repeats_run_interleaved_and_the_markdown_gives_median_spread_and_iqr(tmp_path, capsys):
    src = Path(__file__).parent / "fixtures" / "reports" / "h100" / "01_Offload_Mode.json"
    (tmp_path / "template.json").write_text(src.read_text())
    (tmp_path / "rstub.py").write_text(REPEAT_STUB)
    cfg = _write(tmp_path / "c.json", {
        "repeats": 2, "interleave": True,
        "global_settings": {"task": "tiny", "device": "cpu"},
        "test_cases": [{"name": "a", "args": {}, "repeats": 4}, {"name": "b", "args": {}},
                       {"name": "c", "args": {}, "repeats": 1}],
    })
    md = tmp_path / "r.md"
    rc = bench_main(["--config", str(cfg), "--run-id", "x", "--reports-dir", str(tmp_path / "rep"), "--output",
                     str(md), "--generate-cmd", f"{sys.executable} {tmp_path / 'rstub.py'}"])
    out = capsys.readouterr().out
    assert rc == 0, out
    order = [ln.split(" ... ")[0].split("] ")[1] for ln in out.splitlines() if ln.startswith("[")]
    assert order == ["a.r1", "b.r1", "c", "a.r2", "b.r2", "a.r3", "a.r4"]  # ABAB: repeat by repeat
    assert "3 cases, 7 runs interleaved" in out
    man = load_manifest(tmp_path / "rep" / "x")
    assert [(c["name"], c["repeat"], c["repeats"], c["report"]) for c in man["cases"]][:3] == [
        ("a", 1, 4, "a.r1.json"), ("b", 1, 2, "b.r1.json"), ("c", 1, 1, "c.json")]
    text = md.read_text()
    row = {ln.split(" | ")[0][2:]: ln.split(" | ") for ln in text.splitlines() if ln.startswith("| ") and " | ok" in ln}
    assert row["a"][1:4] == ["4", "ok ×4", "25.00 [10.00–40.00, IQR 25.00]"]  # median, min–max, IQR from 4 runs
    assert row["b"][1:4] == ["2", "ok ×2", "15.00 [10.00–20.00]"]  # no IQR below 4 runs
    assert row["c"][1:3] == ["1 (single run: no spread)", "ok"]
    assert "4 runs (a.r1: ok 10.00 s, a.r2: ok 20.00 s, a.r3: ok 30.00 s, a.r4: ok 40.00 s)" in text
    # a resume skips every run that is ok
    rc = bench_main(["--config", str(cfg), "--run-id", "x", "--reports-dir", str(tmp_path / "rep"), "--output",
                     str(md), "--generate-cmd", f"{sys.executable} {tmp_path / 'rstub.py'}"])
    assert rc == 0 and capsys.readouterr().out.count("skipped (ok in an earlier attempt") == 7
