"""The GPU catalog (``data/gpus.json``): datasheet rates and price snapshots users can edit.

``match_gpu(name)`` finds the entry for a torch/NVML device name by case-insensitive substring
(longest match wins, ``exclude`` substrings veto). An unknown GPU gives ``None``: MFU and costs are
then reported unavailable, never guessed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CATALOG_ENV = "WAN_ENHANCED_GPU_CATALOG"
DEFAULT_CATALOG = Path(__file__).resolve().parent.parent / "data" / "gpus.json"

_cache: dict[str, dict[str, Any]] = {}


def catalog_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The catalog file: ``path``, else ``$WAN_ENHANCED_GPU_CATALOG``, else the packaged one."""
    if path is not None:
        return Path(path)
    env = os.environ.get(CATALOG_ENV)
    return Path(env) if env else DEFAULT_CATALOG


def load_catalog(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Load and check the catalog; returns the JSON object (``{"gpus": [entry, ...], ...}``).

    Raises ``ValueError`` naming the file when it is missing, not JSON, or has no ``gpus`` list.
    """
    p = catalog_path(path)
    key = str(p.resolve()) if p.exists() else str(p)
    try:
        mtime = str(p.stat().st_mtime_ns)
    except OSError:
        raise ValueError(f"GPU catalog not found: {p}") from None
    cached = _cache.get(key)
    if cached is not None and cached.get("_mtime") == mtime:
        return cached["data"]
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"GPU catalog {p} is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("gpus"), list):
        raise ValueError(f"GPU catalog {p} has no 'gpus' list")
    for i, entry in enumerate(data["gpus"]):
        if not isinstance(entry, dict) or not entry.get("key") or not isinstance(entry.get("match"), list):
            raise ValueError(f"GPU catalog {p}: entry {i} needs 'key' and a 'match' list")
    _cache[key] = {"_mtime": mtime, "data": data}
    return data


def match_gpu(name: str | None, catalog: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The catalog entry for a device name, or ``None`` when no entry matches."""
    if not name:
        return None
    cat = catalog if catalog is not None else load_catalog()
    low = name.lower()
    best: tuple[int, dict[str, Any]] | None = None
    for entry in cat.get("gpus", []):
        if any(str(x).lower() in low for x in entry.get("exclude") or []):
            continue
        for pat in entry.get("match") or []:
            pat_l = str(pat).lower()
            if pat_l and pat_l in low and (best is None or len(pat_l) > best[0]):
                best = (len(pat_l), entry)
    return best[1] if best else None


def peak_bf16_tflops(name: str | None, catalog: dict[str, Any] | None = None) -> tuple[float | None, str]:
    """``(dense bf16 TFLOP/s, note)`` for a device name; ``(None, reason)`` when not in the catalog."""
    if not name:
        return None, "no CUDA device"
    try:
        entry = match_gpu(name, catalog)
    except ValueError as exc:
        return None, str(exc)
    if entry is None:
        return None, f"GPU not in catalog ({name})"
    val = entry.get("bf16_dense_tflops")
    if not isinstance(val, int | float) or val <= 0:
        return None, f"catalog entry {entry['key']} has no bf16_dense_tflops"
    return float(val), f"{entry['key']}: {val} TFLOP/s dense bf16"
