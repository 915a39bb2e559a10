"""The flag table (``wan_enhanced.flags``) generates the generate parser, RunConfig's defaults, the
suite config's keys and the README's flag table; validate returns a frozen, resolved config."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from wan_enhanced.cli import generate_parser
from wan_enhanced.config import RunConfig, validate
from wan_enhanced.errors import ConfigError
from wan_enhanced.flags import (
    CONFIG_FLAGS,
    FLAGS,
    GENERATE_FLAGS,
    KINDS,
    README_SECTION,
    readme_table,
    render_flag_table,
    to_argv,
)
from wan_enhanced.models.presets import PRESETS

ROOT = Path(__file__).resolve().parent.parent


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest != "help"}


def test_parser_is_generated_from_the_table():
    actions = _actions(generate_parser())
    assert list(actions) == [f.name for f in GENERATE_FLAGS]
    for f in GENERATE_FLAGS:
        a = actions[f.name]
        assert a.option_strings == [f.option]
        assert a.default == f.default, f.name
        assert a.help == f.help
        assert (a.nargs == 0) == (f.kind == "switch"), f.name
        if f.choices:  # listed in the help; checked by validate (one-line message)
            assert all(c in (f.help or "") for c in f.choices) or f.kind == "choice", f.name
        assert f.kind in KINDS


def test_help_lists_choices_and_per_task_defaults():
    assert FLAGS["frame_num"].task_default(PRESETS["ti2v-5B"]) == 121
    assert FLAGS["frame_num"].task_default(PRESETS["tiny"]) == 9
    assert FLAGS["sample_steps"].task_default(PRESETS["ti2v-5B"]) == 50
    assert FLAGS["sample_steps"].task_default(PRESETS["tiny"]) == 4
    text = generate_parser().format_help()
    for c in FLAGS["attention_backend"].choices:
        assert c in text
    assert "ignored" in FLAGS["convert_model_dtype"].help


def test_run_config_fields_and_defaults_are_the_table():
    fields = {f.name: f for f in dataclasses.fields(RunConfig) if f.repr}
    assert set(fields) == {f.name for f in CONFIG_FLAGS}  # field order: the report's run section
    for f in CONFIG_FLAGS:
        assert fields[f.name].default == f.default, f.name


def test_readme_table_is_rendered_from_the_table():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = readme_table(text)
    assert text[start:end] == render_flag_table(), (
        f"README {README_SECTION!r} drifted from wan_enhanced/flags.py; run: python -m wan_enhanced.flags README.md")
    rendered = render_flag_table()
    assert "| `--frame_num` | 121 (tiny 9) |" in rendered and "| `--sample_steps` | 50 (tiny 4) |" in rendered
    for f in GENERATE_FLAGS:
        assert f"| `{f.option}` |" in rendered


def test_to_argv_renders_kinds():
    argv = to_argv({"t5_cpu": True, "cfg_parallel": False, "offload_model": False, "sample_shift": 5,
                    "frame_num": 9, "device": None, "unknown": 1})
    assert argv == ["--frame_num", "9", "--sample_shift", "5.0", "--offload_model", "False", "--t5_cpu"]


def test_validate_returns_a_frozen_resolved_config():
    raw = RunConfig(task="tiny", base_seed=-1)
    cfg = validate(raw, cuda_available=False, world_size=1)
    assert cfg is not raw and raw.frame_num is None and raw.base_seed == -1  # the input is untouched
    assert (cfg.size, cfg.frame_num, cfg.sample_steps, cfg.device, cfg.vae_dtype, cfg.offload_model) == (
        "64*64", 9, 4, "cpu", "fp32", False)
    assert cfg.sample_shift == 5.0 and cfg.sample_guide_scale == 5.0 and 0 <= cfg.base_seed
    assert cfg.resolved_weights == "random" and cfg.weights_note
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.frame_num = 13  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        raw.device = "cuda"  # type: ignore[misc]
    assert validate(cfg, cuda_available=False, world_size=1) == cfg  # resolving is idempotent


@pytest.mark.parametrize("field, value, expected", [
    ("sample_solver", "euler", "--sample_solver: 'euler' is not allowed; allowed: unipc, dpm++"),
    ("vae_dtype", "fp16", "--vae_dtype: 'fp16' is not allowed; allowed: auto, fp32, bf16"),
    ("compile", "yes", "--compile: 'yes' is not allowed; allowed: auto, none, blocks"),
    ("task", "t2v-A14B", "--task: 't2v-A14B' is not allowed; allowed: ti2v-5B, tiny"),
    ("sample_shift", float("nan"), "--sample_shift: nan is not allowed; must be a finite number"),
    ("base_seed", 2**63, "--base_seed: 9223372036854775808 is not allowed"),
    ("device", "tpu", "--device: 'tpu' is not allowed; allowed: cuda, cuda:N, cpu"),
    ("report_file", "r.txt", "--report_file: 'r.txt' is not allowed; must end in .json"),
])
def test_table_validators_give_one_line(field, value, expected):
    with pytest.raises(ConfigError) as exc:
        validate(RunConfig(**{"task": "tiny", "device": "cpu", field: value}), cuda_available=False, world_size=1)
    assert str(exc.value).startswith(expected) and "\n" not in str(exc.value)


def test_a_flags_file_fills_what_the_command_line_left_and_says_what_is_wrong(tmp_path):
    import json

    from wan_enhanced.cli import config_from_args, generate_parser
    from wan_enhanced.errors import ConfigError

    f = tmp_path / "f.json"
    f.write_text(json.dumps({"task": "tiny", "sample_steps": 3, "prompt": "from file", "report_file": "r.json"}))
    cfg = config_from_args(generate_parser().parse_args(["--flags_file", str(f), "--sample_steps", "2"]))
    assert (cfg.task, cfg.sample_steps, cfg.prompt, cfg.report_file) == ("tiny", 2, "from file", "r.json")
    f.write_text(json.dumps({"sample_steps": "x"}))
    with pytest.raises(ConfigError) as e:
        config_from_args(generate_parser().parse_args(["--flags_file", str(f)]))
    assert str(e.value) == "--flags_file f.json.sample_steps: expected int, got str 'x'"
    f.write_text("[1]")
    with pytest.raises(ConfigError) as e:
        config_from_args(generate_parser().parse_args(["--flags_file", str(f)]))
    assert str(e.value) == "--flags_file f.json: expected object, got array"
