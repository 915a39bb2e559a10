"""Suite config validation: every bad variant is one ``error:`` line naming the field, exit 2,
before any case runs; the shipped configs are valid."""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from wan_enhanced.bench.runner import bench_main, default_config
from wan_enhanced.bench.suite_config import (
    FLAG_KINDS,
    case_argv,
    check_case_values,
    load_suite_config,
    parse_suite_config,
)
from wan_enhanced.errors import ConfigError
from wan_enhanced.flags import CONFIG_FLAGS, GENERATE_FLAGS, add_generate_args

ROOT = Path(__file__).resolve().parent.parent

BASE = {
    "global_settings": {"task": "tiny", "size": "64*64", "frame_num": 9, "sample_steps": 2, "weights": "random",
                        "device": "cpu"},
    "test_cases": [{"name": "a", "args": {}}, {"name": "b", "args": {"sample_steps": 3}}],
}

BAD = [
    (lambda c: c["test_cases"][1]["args"].update(sample_steps="ten"),
     "test_cases[1].args.sample_steps: expected int, got str 'ten'"),
    (lambda c: c["test_cases"][0]["args"].update(frame_num=9.5), "test_cases[0].args.frame_num: expected int, got float"),
    (lambda c: c["test_cases"][0]["args"].update(sample_steps=True), "test_cases[0].args.sample_steps: expected int, got bool"),
    (lambda c: c.update(extra=1), "extra: unknown top-level key"),
    (lambda c: c["global_settings"].update(bogus=1), "global_settings.bogus: unknown key"),
    (lambda c: c["test_cases"][0]["args"].update(steps=3), "test_cases[0].args.steps: unknown key"),
    (lambda c: c["test_cases"][0].update(nme="x"), "test_cases[0].nme: unknown key"),
    (lambda c: c["global_settings"].update(task="t2v-A14B"), "global_settings.task: 't2v-A14B' is not allowed"),
    (lambda c: c["test_cases"][1].update(name="a"), "test_cases[1].name: duplicate case name 'a'"),
    (lambda c: c["test_cases"][0]["args"].update(offload_model="maybe"),
     "test_cases[0].args.offload_model: expected bool (true/false), got str 'maybe'"),
    (lambda c: c["test_cases"][0]["args"].update(sample_shift="5"), "test_cases[0].args.sample_shift: expected number"),
    (lambda c: c["test_cases"][0]["args"].update(size="1280x704"), "test_cases[0].args.size: '1280x704' is not a size"),
    (lambda c: c["test_cases"][0]["args"].update(report_file="x.json"),
     "test_cases[0].args.report_file: set by the benchmark runner"),
    (lambda c: c.pop("test_cases"), "test_cases: missing"),
    (lambda c: c.update(test_cases=[]), "test_cases: empty"),
    (lambda c: c.update(test_cases={"a": {}}), "test_cases: expected array, got object"),
    (lambda c: c.update(global_settings=[]), "global_settings: expected object, got array"),
    (lambda c: c["test_cases"][0].update(name="../x"), "test_cases[0].name: '../x' is not allowed"),
    (lambda c: c["test_cases"][0].pop("name"), "test_cases[0].name: missing"),
    (lambda c: c["test_cases"][0].update(nproc=0), "test_cases[0].nproc: 0 is not allowed"),
    (lambda c: c["test_cases"][0].update(timeout_s="1h"), "test_cases[0].timeout_s: expected a number > 0"),
]


@pytest.mark.parametrize("mutate, expected", BAD, ids=[e for _, e in BAD])
def test_bad_config_is_one_line_naming_the_field(mutate, expected):
    cfg = copy.deepcopy(BASE)
    mutate(cfg)
    with pytest.raises(ConfigError) as exc:
        parse_suite_config(cfg)
    msg = str(exc.value)
    assert msg.startswith(expected), msg
    assert "\n" not in msg


@pytest.mark.parametrize("field, value, expected", [
    ("size", "100*100", "test_cases[0].args.size (case a): --size: '100*100' is not allowed for task tiny"),
    ("frame_num", 10, "test_cases[0].args.frame_num (case a): --frame_num: 10 is not allowed"),
    ("memory_budget_gb", 24, "test_cases[0].args.memory_budget_gb (case a): --memory_budget_gb needs a CUDA device"),
    ("sample_solver", "euler", "test_cases[0].args.sample_solver (case a): --sample_solver: 'euler' is not allowed"),
    ("ulysses_size", 5, "test_cases[0].args.ulysses_size (case a): --ulysses_size: 5 does not divide"),
])
def test_values_are_checked_with_generate_rules(field, value, expected):
    cfg = copy.deepcopy(BASE)
    cfg["test_cases"][0]["args"][field] = value
    suite = parse_suite_config(cfg)
    with pytest.raises(ConfigError) as exc:
        check_case_values(suite, cuda_available=False)
    assert str(exc.value).startswith(expected), str(exc.value)


def test_global_value_error_names_global_settings():
    cfg = copy.deepcopy(BASE)
    cfg["global_settings"].update(task="ti2v-5B", size="1280*704", frame_num=121)  # needs a GPU
    del cfg["global_settings"]["device"]
    with pytest.raises(ConfigError, match=r"^global_settings\.task \(case a\): --task ti2v-5B needs a CUDA GPU"):
        check_case_values(parse_suite_config(cfg), cuda_available=False)


def test_flag_table_is_exactly_the_generate_flags():
    parser = argparse.ArgumentParser()
    add_generate_args(parser)
    cli_flags = {a.dest for a in parser._actions if a.option_strings and a.dest not in ("help", "quiet", "flags_file")}
    assert set(FLAG_KINDS) == cli_flags
    switches = {a.dest for a in parser._actions if a.nargs == 0 and a.dest not in ("help", "quiet")}
    assert {k for k, v in FLAG_KINDS.items() if v == "switch"} == switches


def test_suite_keys_and_kinds_come_from_the_flag_table():
    assert FLAG_KINDS == {f.name: f.kind for f in CONFIG_FLAGS}
    assert "quiet" not in FLAG_KINDS and {f.name for f in GENERATE_FLAGS} - set(FLAG_KINDS) == {"quiet", "flags_file"}
    samples = {"int": (3, "3"), "float": (2.5, "x"), "str": ("x", 1), "bool": (True, 1), "switch": (False, 2),
               "choice": ("tiny", "nope"), "size": ("64*64", "64x64"), "device": ("cpu", "gpu")}
    for f in CONFIG_FLAGS:
        if f.runner:
            continue
        good, bad = samples[f.kind]
        cfg = copy.deepcopy(BASE)
        cfg["test_cases"][0]["args"][f.name] = good
        assert parse_suite_config(cfg).cases[0].flags[f.name] == good, f.name
        cfg["test_cases"][0]["args"][f.name] = bad
        with pytest.raises(ConfigError, match=rf"^test_cases\[0\]\.args\.{f.name}: "):
            parse_suite_config(cfg)


def test_case_argv_merges_global_and_case_and_renders_official_flags():
    cfg = copy.deepcopy(BASE)
    cfg["global_settings"].update(offload_model=True, t5_cpu=True, sample_shift=5)
    cfg["test_cases"][1]["args"].update(offload_model="False", t5_cpu=False, device=None)
    a, b = parse_suite_config(cfg).cases
    argv_a, argv_b = case_argv(a), case_argv(b)
    assert argv_a[argv_a.index("--offload_model") + 1] == "True"
    assert "--t5_cpu" in argv_a and "--t5_cpu" not in argv_b
    assert argv_b[argv_b.index("--offload_model") + 1] == "False"
    assert argv_a[argv_a.index("--sample_shift") + 1] == "5.0"
    assert argv_b[argv_b.index("--sample_steps") + 1] == "3"
    assert "--device" in argv_a and "--device" not in argv_b  # null removes a global flag


def test_shipped_configs_are_valid():
    smoke = load_suite_config(ROOT / "benchmark" / "config_smoke.json")
    check_case_values(smoke, cuda_available=False)
    assert 3 <= len(smoke.cases) <= 4 and all(c.flags["task"] == "tiny" for c in smoke.cases)
    gpu = load_suite_config(ROOT / "benchmark" / "config.json")
    check_case_values(gpu, cuda_available=True)
    flags = [c.flags for c in gpu.cases]
    assert all(f["task"] == "ti2v-5B" and f["size"] == "1280*704" and f["frame_num"] == 121
               and f["weights"] == "random" for f in flags)
    assert {f.get("offload_model") for f in flags} == {True, False}
    assert len({f["sample_steps"] for f in flags}) >= 2
    assert {f.get("memory_budget_gb") for f in flags} >= {24.0, 16.0}


def test_default_config_follows_the_gpu():
    path, why = default_config(ROOT, "NVIDIA H100 80GB HBM3")
    assert path.name == "config.json" and "H100" in why
    path, why = default_config(ROOT, None)
    assert path.name == "config_smoke.json" and "no CUDA GPU" in why


def _marker_cmd(tmp_path: Path) -> tuple[str, Path]:
    marker = tmp_path / "ran"
    script = tmp_path / "stub.py"
    script.write_text(f"open({str(marker)!r}, 'a').write('x')\n")
    return f"{sys.executable} {script}", marker


@pytest.mark.parametrize("content, expected", [
    (None, "--config: "),
    ("{not json", "--config: bad.json is not valid JSON (line 1"),
    (json.dumps({**BASE, "test_cases": [{"name": "a", "args": {"sample_steps": "ten"}}]}),
     "test_cases[0].args.sample_steps: expected int, got str 'ten'"),
    (json.dumps({**BASE, "test_cases": [{"name": "a"}, {"name": "a"}]}), "test_cases[1].name: duplicate case name"),
    (json.dumps({**BASE, "test_cases": [{"name": "a"}, {"name": "b", "args": {"size": "1*1"}}]}),
     "test_cases[1].args.size (case b): --size: '1*1' is not allowed"),
])
def test_bench_main_rejects_bad_config_before_any_case(tmp_path, capsys, content, expected):
    cfg = tmp_path / "bad.json"
    if content is not None:
        cfg.write_text(content)
    cmd, marker = _marker_cmd(tmp_path)
    reports = tmp_path / "reports"
    rc = bench_main(["--config", str(cfg), "--reports-dir", str(reports), "--output", str(tmp_path / "r.md"),
                     "--generate-cmd", cmd])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, err
    assert not marker.exists() and not reports.exists() and not (tmp_path / "r.md").exists()


def test_bad_flag_is_one_line(capsys):
    assert bench_main(["--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unrecognized arguments: --no-such-flag") and err.count("\n") == 1


def test_run_py_entry_point_exit_2(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"global_settings": {"task": "tiny"}, "test_cases": [{"name": "x", "args": {"bogus": 1}}]}))
    out = subprocess.run([sys.executable, str(ROOT / "benchmark" / "run.py"), "--config", str(cfg)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: test_cases[0].args.bogus: unknown key; allowed: "
                                  + ", ".join(sorted(FLAG_KINDS)))


@pytest.mark.parametrize("data, message", [
    ({"repeats": 0}, "repeats: 0 is not allowed; must be 1 … 100"),
    ({"repeats": "3"}, "repeats: expected int, got str '3'"),
    ({"interleave": "yes"}, "interleave: expected bool (true/false), got str 'yes'"),
    ({"test_cases": [{"name": "a", "repeats": True}]}, "test_cases[0].repeats: expected int, got bool True"),
])
def test_bad_repeats_and_interleave_are_one_line_errors(data, message):
    from wan_enhanced.bench.suite_config import parse_suite_config
    from wan_enhanced.errors import ConfigError

    data = {"test_cases": [{"name": "a"}], **data}
    with pytest.raises(ConfigError) as e:
        parse_suite_config(data)
    assert str(e.value) == message


def test_repeats_default_to_one_and_a_case_overrides_the_global_value():
    from wan_enhanced.bench.suite_config import parse_suite_config

    s = parse_suite_config({"repeats": 3, "test_cases": [{"name": "a"}, {"name": "b", "repeats": 1}]})
    assert [(c.name, c.repeats) for c in s.cases] == [("a", 3), ("b", 1)] and s.interleave is False
    assert [(c.name, r) for c, r in s.run_order()] == [("a", 1), ("a", 2), ("a", 3), ("b", 1)]
    assert parse_suite_config({"test_cases": [{"name": "a"}]}).cases[0].repeats == 1
