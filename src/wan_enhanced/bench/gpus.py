"""GPU catalog access for compare/projection (the catalog is ``wan_enhanced/data/gpus.json``,
read through :mod:`wan_enhanced.monitor.catalog`).

Entries: ``{key, name, match: [substrings], exclude, memory_gb, bandwidth_gbps, bf16_dense_tflops,
power_w, pcie_gbps, purchase_usd: {value, source, date}, hourly_usd: {low, high, source, date}}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..monitor.catalog import catalog_path, load_catalog, match_gpu
from ..report.values import value_of


def load_gpus(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The GPU catalog's entries: ``path`` if given, else ``$WAN_ENHANCED_GPU_CATALOG`` or the packaged one."""
    try:
        data = load_catalog(path)
    except ValueError as exc:
        raise ConfigError(f"--catalog: {exc}") from None
    return list(data["gpus"])


def catalog_file(path: str | Path | None = None) -> Path:
    """The catalog file that :func:`load_gpus` reads."""
    return catalog_path(path)


def match_entry(name: str, catalog: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The entry of ``catalog`` matching a device name (key, or the catalog's substring rules)."""
    low = name.lower()
    for e in catalog:
        if str(e.get("key", "")).lower() == low:
            return e
    return match_gpu(name, {"gpus": catalog})


def by_key(catalog: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Catalog entries indexed by key."""
    return {str(e["key"]): e for e in catalog}


def num(entry: dict[str, Any] | None, field: str) -> float | None:
    """A positive numeric field of an entry (None when absent, null or not a number)."""
    if entry is None:
        return None
    v = value_of(entry.get(field))
    return float(v) if v is not None and v > 0 else None


def price(entry: dict[str, Any] | None) -> tuple[float | None, str]:
    """(purchase USD, "source, date") of an entry; (None, reason) when the catalog has none."""
    if entry is None:
        return None, "GPU not in the catalog"
    p = entry.get("purchase_usd")
    v = value_of(p)
    if v is None or v <= 0:
        return None, f"no purchase price for {entry.get('key')} in the catalog"
    return float(v), _cite(p) if isinstance(p, dict) else "catalog"


def hourly(entry: dict[str, Any] | None) -> tuple[float | None, float | None, str]:
    """(low, high, "source, date") cloud USD per GPU-hour; (None, None, reason) when absent."""
    if entry is None:
        return None, None, "GPU not in the catalog"
    h = entry.get("hourly_usd")
    if not isinstance(h, dict):
        return None, None, f"no hourly price for {entry.get('key')} in the catalog"

    def ok(v: Any) -> float | None:
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else None

    low, high = ok(h.get("low")), ok(h.get("high"))
    low, high = low or high, high or low
    if low is None or high is None:
        return None, None, f"no hourly price for {entry.get('key')} in the catalog"
    return low, high, _cite(h)


def _cite(obj: dict[str, Any]) -> str:
    parts = [str(obj[k]) for k in ("source", "date") if obj.get(k)]
    return ", ".join(parts) if parts else "source not given"
