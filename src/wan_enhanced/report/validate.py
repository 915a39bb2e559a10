"""The structure of a run report, checked before any reader indexes into it.

The readers (``report.text``, ``bench.reportdata`` / ``bench.markdown``, the charts and ``compare``) take
the fields below for granted; a report where one has another type (``"stages": [1, 2]``, a stage whose
``memory`` is a string) would end in a traceback. :func:`check_structure` refuses it with one
``ReportError`` line naming the field by its path, e.g. ``stages[3].memory: expected an object, got str``.

Only the types of known fields are checked; unknown keys are accepted everywhere (newer producers add
fields in the same schema version) and a missing optional field is fine. ``null`` is accepted wherever
the readers treat it as "not recorded". The allowed ``status`` values are given by the caller
(``schema.load_report`` passes ``schema.STATUSES``, read when it is called).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import ReportError

# A metric object (``values.metric``): {"value": number|null, "unit", "source", "reason": str|null}.
METRIC_STRINGS = ("unit", "source", "reason")
STAGE_METRICS = ("sm", "sm_occupancy", "tensor_util", "dram_util", "compute_load", "power_w", "energy_j", "flops",
                 "tflops_per_s", "mfu", "cpu_percent", "host_rss_peak_gb")
STAGE_MEMORY = ("start_gb", "end_gb", "peak_gb", "peak_reserved_gb", "nvml_used_gb", "static_gb", "dynamic_gb")
TOTAL_METRICS = ("wall_s", "denoise_s", "s_per_step", "first_step_s", "mean_rest_step_s", "peak_memory_gb",
                 "peak_reserved_gb", "static_memory_gb", "dynamic_memory_gb", "mean_sm_percent", "compute_load",
                 "energy_j", "flops", "scope_flops", "tflops_per_s", "mfu", "cpu_percent", "host_rss_peak_gb",
                 "steady_s_per_step", "cold_start_s", "video_s_warm", "steady_tflops_per_s", "steady_mfu")
TIMELINE_SERIES = ("sm_percent", "memory_gb", "power_w", "sm_occupancy", "tensor_util", "dram_util",
                   "nvml_used_gb", "host_rss_gb")
TOP_OBJECTS = ("system", "run", "weights", "outputs", "monitor", "parallel", "error", "timeline", "journal",
               "gpu_state")


def type_name(value: Any) -> str:
    """The JSON-ish name of ``value``'s type, as used in the messages: ``null``, ``bool``, ``int``, ``list`` …"""
    if value is None:
        return "null"
    return {dict: "object", list: "list"}.get(type(value), type(value).__name__)


def _fail(path: str, expected: str, value: Any) -> ReportError:
    return ReportError(f"{path}: expected {expected}, got {type_name(value)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


Check = Callable[[Any, str], None]


def _nullable(check: Check) -> Check:
    def run(value: Any, path: str) -> None:
        if value is not None:
            check(value, path)
    return run


def _number(value: Any, path: str) -> None:
    if not _is_number(value):
        raise _fail(path, "a number", value)


def _int(value: Any, path: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(path, "an integer", value)


def _str(value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise _fail(path, "a string", value)


def _bool(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        raise _fail(path, "true or false", value)


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, "an object", value)
    return value


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(path, "a list", value)
    return value


NUMBER, INT, STR, BOOL = _nullable(_number), _nullable(_int), _nullable(_str), _nullable(_bool)


def _fields(obj: Mapping[str, Any], path: str, checks: Mapping[str, Check]) -> None:
    """Check each known key of ``obj`` that is present; unknown keys pass."""
    for key, check in checks.items():
        if key in obj:
            check(obj[key], f"{path}.{key}")


def check_metric(value: Any, path: str) -> None:
    """A metric object or ``null``: ``value`` a number or null, ``unit``/``source``/``reason`` strings or null."""
    if value is None:
        return
    m = _object(value, path)
    if m.get("value") is not None and not _is_number(m["value"]):
        raise _fail(f"{path}.value", "a number or null", m["value"])
    _fields(m, path, {k: STR for k in METRIC_STRINGS})


def _metrics(value: Any, path: str, known: tuple[str, ...]) -> None:
    """An object (or null) whose known keys are metric objects."""
    if value is not None:
        _fields(_object(value, path), path, {k: check_metric for k in known})


def _object_or_null(value: Any, path: str) -> None:
    if value is not None:
        _object(value, path)


def _list_or_null(value: Any, path: str) -> None:
    if value is not None:
        _list(value, path)


STAGE_FIELDS: dict[str, Check] = {
    "parent": STR, "comment": STR, "error_type": STR,
    "depth": INT, "index": INT, "parent_index": INT,
    "start_s": NUMBER, "end_s": NUMBER, "duration_s": NUMBER, "children_s": NUMBER, "untracked_s": NUMBER,
    "short_window": BOOL, "failed": BOOL, "incomplete": BOOL,
    "memory": lambda v, p: _metrics(v, p, STAGE_MEMORY),
    "gpu_state": _object_or_null,
    **{k: check_metric for k in STAGE_METRICS},
}


def _stage(value: Any, path: str) -> None:
    stage = _object(value, path)
    if "name" not in stage:
        raise ReportError(f"{path}.name: missing (every stage has a name)")
    _str(stage["name"], f"{path}.name")
    _fields(stage, path, STAGE_FIELDS)


def _step(value: Any, path: str) -> None:
    _fields(_object(value, path), path, {"index": INT, "duration_s": NUMBER})


def _items(value: Any, path: str, check: Check) -> None:
    """A list (or null) whose every item passes ``check``."""
    if value is None:
        return
    for i, item in enumerate(_list(value, path)):
        check(item, f"{path}[{i}]")


def _series(value: Any, path: str, nulls: bool = True) -> None:
    _items(value, path, NUMBER if nulls else _number)


def _timeline(value: Any, path: str) -> None:
    if value is None:
        return
    tl = _object(value, path)
    _series(tl.get("t_s"), f"{path}.t_s", nulls=False)
    _fields(tl, path, {"interval_s": NUMBER, "sm_source": STR,
                       **{k: _series for k in TIMELINE_SERIES}})


def _rank(value: Any, path: str) -> None:
    if isinstance(value, dict):  # the readers skip ranks that are not objects
        _fields(value, path, {"totals": lambda v, p: _metrics(v, p, TOTAL_METRICS)})


SECTION_FIELDS: dict[str, dict[str, Check]] = {
    "error": {"stage": STR, "type": STR, "message": STR},
    "system": {"gpu": _object_or_null, "cpu": _object_or_null},
    "run": {"task": STR, "size": STR, "frame_num": INT, "sample_steps": INT, "ulysses_size": INT,
            "num_tokens": INT, "sample_shift": NUMBER, "sample_guide_scale": NUMBER, "memory_budget_gb": NUMBER,
            "fast_path": _object_or_null, "residency": STR},
    "weights": {"kind": STR, "source": STR, "note": STR, "load": _list_or_null},
    "outputs": {"video": STR, "frames": INT, "width": INT, "height": INT},
    "monitor": {"device": STR},
    "parallel": {"world_size": INT, "ranks": lambda v, p: _items(v, p, _rank)},
}


def check_structure(report: dict[str, Any], where: str | None = None,
                    statuses: Sequence[str] | None = None) -> dict[str, Any]:
    """``report`` itself when every known field has the type the readers expect (see the module docstring);
    else ``ReportError``, one line: ``[<where>: malformed report: ]<field path>: expected …, got …``.

    ``statuses``: the allowed ``status`` values (``load_report`` passes ``schema.STATUSES`` as it is
    when called; this module does not import the schema, which imports it); ``None``: any string.
    """
    try:
        status = report.get("status")
        if status is not None:
            _str(status, "status")
            if statuses is not None and status not in statuses:
                raise ReportError(f"status: {status!r} is not one of {', '.join(statuses)}")
        STR(report.get("created"), "created")
        for key in TOP_OBJECTS:
            _object_or_null(report.get(key), key)
        for key, checks in SECTION_FIELDS.items():
            if isinstance(report.get(key), dict):
                _fields(report[key], key, checks)
        _items(report.get("stages"), "stages", _stage)
        _items(report.get("steps"), "steps", _step)
        _metrics(report.get("totals"), "totals", TOTAL_METRICS)
        _timeline(report.get("timeline"), "timeline")
    except ReportError as exc:
        if where is None:
            raise
        raise ReportError(f"{where}: malformed report: {exc}") from None
    return report
