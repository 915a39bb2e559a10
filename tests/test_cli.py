"""``wan-enhanced``: argparse subcommands, each sub-help names its program, one error boundary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wan_enhanced import cli

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wan_enhanced.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env={**__import__("os").environ, "COLUMNS": "100"})


def test_top_help_lists_every_subcommand():
    proc = _run("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: wan-enhanced ")
    lines = proc.stdout.splitlines()
    for name, line in cli.COMMANDS.items():
        assert any(ln.split() == [name, *line.split()] for ln in lines), (name, proc.stdout)


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_sub_help_names_its_program(command, capsys):
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: wan-enhanced {command} "), out


def test_seed_scripts_keep_their_program_names():
    for script, prog in (("generate.py", "generate.py"), ("format_report.py", "format_report.py"),
                         ("benchmark/run.py", "benchmark/run.py")):
        proc = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                              cwd=ROOT, timeout=120)
        assert proc.returncode == 0 and proc.stdout.startswith(f"usage: {prog} "), (script, proc.stdout)


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("argv, expected", [
    (["generate", "--task", "tiny", "--device", "cpu", "--frame_num", "10"], "--frame_num: 10 is not allowed"),
    (["generate", "--task", "tiny", "--device", "cpu", "--sample_steps", "ten"], "--sample_steps: invalid int"),
    (["generate", "--task", "tiny", "--device", "cpu", "--offload_model", "maybe"], "'maybe' is not a boolean"),
    (["generate", "--task", "tiny", "--device", "cpu", "--vae_dtype", "fp16"], "--vae_dtype: 'fp16' is not allowed"),
    (["generate", "--task", "tiny", "--no_such_flag"], "unrecognized arguments: --no_such_flag"),
    (["report", "/nonexistent/r.json"], "/nonexistent/r.json"),
    (["report"], "required"),
    (["bench", "--no-such-flag"], "unrecognized arguments"),
    (["compare"], "required"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_user_errors_are_one_line_exit_2_before_any_weights(argv, expected, capsys, monkeypatch):
    import wan_enhanced.run as run

    def no_run(*a, **k):
        raise AssertionError("run_generation reached: validation must come first")

    monkeypatch.setattr(run, "run_generation", no_run)
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert expected in _one_error_line(captured.err)
    assert captured.out == ""


def test_bad_value_via_the_console_entry_point_in_a_subprocess():
    proc = _run("generate", "--task", "tiny", "--device", "cpu", "--size", "100*100")
    assert proc.returncode == 2
    line = _one_error_line(proc.stderr)
    assert line == "error: --size: '100*100' is not allowed for task tiny; allowed: 64*64, 96*64, 64*96, 128*64"


def test_report_subcommand_prints_the_text_report(tmp_path, capsys):
    from monitor_fakes import FakeAllocator, FakeBackend, FakeClock  # noqa: F401 - the report tests' fakes
    from test_report import _cpu_run, _report

    from wan_enhanced.report.schema import write_report

    path = write_report(tmp_path / "r.json", _report(_cpu_run(2)))
    assert cli.main(["report", str(path)]) == 0
    assert "[Execution Trace Analysis]" in capsys.readouterr().out
