"""Benchmark suite config (the seed's ``benchmark/config.json``): load, validate, turn into argv.

Format::

    {
      "description": "optional text",
      "repeats": 3,            # optional: runs of every case (default 1); a case's own "repeats" wins
      "interleave": true,      # optional: run repeat 1 of every case, then repeat 2, ... (ABAB: evens out drift)
      "global_settings": {<generate flag>: value, ...},
      "test_cases": [
        {"name": "01_Speed_Preview", "args": {<generate flag>: value, ...},
         "nproc": 2,          # optional: processes under torchrun
                              # (default: ulysses_size, ×2 with cfg_parallel)
         "timeout_s": 900,    # optional: kill the case after this many seconds
         "repeats": 4,        # optional: runs of this case (median, min–max, IQR from 4 runs)
         "description": "optional text"},
        ...
      ]
    }

A case's flags are ``global_settings`` overridden by its ``args``; ``null`` removes a flag (the
generate default applies). Everything is checked before any case runs: structure, keys, JSON types,
choices and — through ``wan_enhanced.config.validate`` — the values generate itself would reject.
Each problem is one :class:`~wan_enhanced.errors.ConfigError` line naming the field, e.g.
``test_cases[1].args.sample_steps: expected int, got str 'ten'``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UserError
from ..flags import CONFIG_FLAGS, DEVICE_RE, FLAGS, SIZE_RE, to_argv

# The suite config's allowed flag keys and their kinds (see ``wan_enhanced.flags``): every generate
# flag that is a RunConfig field. ``choice`` flags (the task) are checked here; other choices
# (solver, weights, vae_dtype, ...) by generate's own validation in :func:`check_case_values`.
FLAG_KINDS: dict[str, str] = {f.name: f.kind for f in CONFIG_FLAGS}
# Flags the runner sets itself for every case.
RUNNER_FLAGS: tuple[str, ...] = tuple(f.name for f in CONFIG_FLAGS if f.runner)
TOP_KEYS = ("description", "repeats", "interleave", "global_settings", "test_cases")
CASE_KEYS = ("name", "args", "nproc", "timeout_s", "repeats", "description")
MAX_REPEATS = 100
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class CaseSpec:
    """One test case: its merged generate flags and how to launch it."""

    index: int
    name: str
    flags: dict[str, Any]
    nproc: int = 1
    timeout_s: float | None = None
    description: str = ""
    repeats: int = 1
    # Where each flag came from ("global_settings.x" or "test_cases[i].args.x"), for messages.
    origin: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass
class SuiteConfig:
    """A validated suite: the raw JSON and its cases in order."""

    path: Path | None
    raw: dict[str, Any]
    cases: list[CaseSpec]
    description: str = ""
    interleave: bool = False

    def run_order(self) -> list[tuple[CaseSpec, int]]:
        """(case, repeat 1..N) in the order they run: case by case, or repeat by repeat when interleaved."""
        if not self.interleave:
            return [(c, r) for c in self.cases for r in range(1, c.repeats + 1)]
        most = max(c.repeats for c in self.cases)
        return [(c, r) for r in range(1, most + 1) for c in self.cases if r <= c.repeats]


def _repeats(where: str, value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected int, {_got(value)}")
    if not 1 <= value <= MAX_REPEATS:
        raise ConfigError(f"{where}: {value} is not allowed; must be 1 … {MAX_REPEATS}")
    return value


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _got(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"got {_type_name(value)} {text}" if not isinstance(value, (dict, list)) else f"got {_type_name(value)}"


def _check_flag(where: str, key: str, value: Any) -> Any:
    """Check one flag value's JSON type/choice; return the normalised value (None = omit flag)."""
    flag = FLAGS[key]
    kind = flag.kind
    if value is None:
        return None
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected int, {_got(value)}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected number, {_got(value)}")
        return float(value)
    if kind in ("bool", "switch"):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ConfigError(f"{where}: expected bool (true/false), {_got(value)}")
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected string, {_got(value)}")
    if kind == "choice" and value not in flag.choices:
        raise ConfigError(f"{where}: {value!r} is not allowed; allowed: {', '.join(flag.choices)}")
    if kind == "size" and not SIZE_RE.match(value):
        raise ConfigError(f"{where}: {value!r} is not a size; expected W*H, e.g. 1280*704")
    if kind == "device" and not DEVICE_RE.match(value):
        raise ConfigError(f"{where}: {value!r} is not allowed; allowed: cuda, cuda:N, cpu")
    return value


def _check_flags(where: str, obj: Any, runner_flags_allowed: bool = False) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected object, {_got(obj)}")
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key not in FLAG_KINDS:
            raise ConfigError(f"{where}.{key}: unknown key; allowed: {', '.join(sorted(FLAG_KINDS))}")
        if key in RUNNER_FLAGS and not runner_flags_allowed:
            raise ConfigError(f"{where}.{key}: set by the benchmark runner (<run dir>/<case>.json); remove it")
        out[key] = _check_flag(f"{where}.{key}", key, value)
    return out


def parse_suite_config(data: Any, path: Path | None = None) -> SuiteConfig:
    """Validate the structure and types of an already-parsed config; raise ConfigError (one line)."""
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a JSON object at the top, {_got(data)}")
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(f"{key}: unknown top-level key; allowed: {', '.join(TOP_KEYS)}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"description: expected string, {_got(description)}")
    global_repeats = _repeats("repeats", data.get("repeats"), 1)
    interleave = data.get("interleave", False)
    if not isinstance(interleave, bool):
        raise ConfigError(f"interleave: expected bool (true/false), {_got(interleave)}")
    global_flags = _check_flags("global_settings", data.get("global_settings", {}))
    cases_raw = data.get("test_cases")
    if cases_raw is None:
        raise ConfigError("test_cases: missing; expected a list of {\"name\", \"args\"} objects")
    if not isinstance(cases_raw, list):
        raise ConfigError(f"test_cases: expected array, {_got(cases_raw)}")
    if not cases_raw:
        raise ConfigError("test_cases: empty; at least one case is needed")
    cases: list[CaseSpec] = []
    seen: dict[str, int] = {}
    for i, case in enumerate(cases_raw):
        where = f"test_cases[{i}]"
        if not isinstance(case, dict):
            raise ConfigError(f"{where}: expected object, {_got(case)}")
        for key in case:
            if key not in CASE_KEYS:
                raise ConfigError(f"{where}.{key}: unknown key; allowed: {', '.join(CASE_KEYS)}")
        name = case.get("name")
        if name is None:
            raise ConfigError(f"{where}.name: missing")
        if not isinstance(name, str):
            raise ConfigError(f"{where}.name: expected string, {_got(name)}")
        if not _NAME_RE.match(name) or name == "suite":
            raise ConfigError(f"{where}.name: {name!r} is not allowed; use letters, digits, '.', '_', '-' "
                              "(it names files) and not 'suite'")
        if name in seen:
            raise ConfigError(f"{where}.name: duplicate case name {name!r} (also test_cases[{seen[name]}])")
        seen[name] = i
        args = _check_flags(f"{where}.args", case.get("args", {}))
        merged: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for src, flags in (("global_settings", global_flags), (f"{where}.args", args)):
            for key, value in flags.items():
                origin[key] = f"{src}.{key}"
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
        ulysses = merged.get("ulysses_size", 1)
        default_nproc = max(int(ulysses), 1) * (2 if merged.get("cfg_parallel") else 1)
        nproc = case.get("nproc")
        if nproc is None:
            nproc = default_nproc
        elif isinstance(nproc, bool) or not isinstance(nproc, int):
            raise ConfigError(f"{where}.nproc: expected int, {_got(nproc)}")
        elif nproc < 1:
            raise ConfigError(f"{where}.nproc: {nproc} is not allowed; must be >= 1")
        timeout = case.get("timeout_s")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or timeout <= 0):
            raise ConfigError(f"{where}.timeout_s: expected a number > 0, {_got(timeout)}")
        desc = case.get("description", "")
        if not isinstance(desc, str):
            raise ConfigError(f"{where}.description: expected string, {_got(desc)}")
        cases.append(CaseSpec(index=i, name=name, flags=merged, nproc=nproc,
                              timeout_s=None if timeout is None else float(timeout), description=desc,
                              repeats=_repeats(f"{where}.repeats", case.get("repeats"), global_repeats),
                              origin=origin))
    return SuiteConfig(path=path, raw=data, cases=cases, description=description, interleave=interleave)


def load_suite_config(path: str | Path) -> SuiteConfig:
    """Read and validate a suite config file; raise ConfigError (one line) on any problem."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"--config: {str(p)!r} does not exist")
    if not p.is_file():
        raise ConfigError(f"--config: {str(p)!r} is not a file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config: {str(p)!r} is not readable ({type(exc).__name__})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config: {p.name} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                          f"{exc.msg})") from None
    return parse_suite_config(data, p)


def load_flags_file(path: str | Path) -> dict[str, Any]:
    """``generate --flags_file``: a JSON object of generate flags, checked like a suite case's ``args``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--flags_file: {str(p)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--flags_file: {str(p)!r} is not readable ({type(exc).__name__})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--flags_file: {p.name} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    flags = _check_flags(f"--flags_file {p.name}", data, runner_flags_allowed=True)
    return {k: v for k, v in flags.items() if v is not None}


def apply_overrides(suite: SuiteConfig, device: str | None = None) -> None:
    """Apply runner-level overrides (``--device``) to every case."""
    if device is not None:
        _check_flag("--device", "device", device)
        for case in suite.cases:
            case.flags["device"] = device
            case.origin["device"] = "--device"


def check_case_values(suite: SuiteConfig, cuda_available: bool) -> None:
    """Check every case's values as generate would (sizes, 4n+1 frames, device, ckpt_dir, ...).

    Uses ``wan_enhanced.config.validate`` so the rules live in one place; the message is prefixed
    with the config field that holds the bad value.
    """
    from ..config import RunConfig, validate

    for case in suite.cases:
        try:
            validate(RunConfig.from_flags(case.flags), world_size=case.nproc, cuda_available=cuda_available)
        except UserError as exc:
            msg = str(exc)
            m = re.match(r"^--(\w+)[: ]", msg)
            where = case.origin.get(m.group(1)) if m else None
            where = where or f"test_cases[{case.index}]"
            raise ConfigError(f"{where} (case {case.name}): {msg}") from None


def case_argv(case: CaseSpec) -> list[str]:
    """The generate flags of ``case`` as argv (official flag names; bools as True/False)."""
    return to_argv(case.flags)
