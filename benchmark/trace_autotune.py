"""Which Triton kernels inductor benchmarks at run time in this process, and why its autotune cache did not answer.

A warm process (FX graph and AOT autograd caches hit) still spent 0.50–0.60 s in
``CachingAutotuner.benchmark_all_configs`` on an H200 (``benchmark/results/h200/s8``; 0.13–0.18 s in ``s9``).
This wraps that method, records for every call the kernel, its source file, how many launchers it benchmarked,
what the autotune cache said (``autotune_cache_info``), whether a save hook is set and which ``.best_config``
files sit beside the kernel, then runs ``generate.py`` with the remaining arguments and writes the records as JSON:

    python benchmark/trace_autotune.py --trace_out autotune.json -- --task ti2v-5B --weights random --sample_steps 1

Diagnostics only (a GPU with Triton); nothing here changes what the run computes.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import runpy
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _record(autotuner: Any, seconds: float) -> dict[str, Any]:
    """One ``benchmark_all_configs`` call as plain data."""
    filename = getattr(autotuner, "filename", None)
    beside = sorted(os.path.basename(p) for p in glob.glob(os.path.join(os.path.dirname(filename), "*.best_config"))) \
        if filename else []
    return {
        "kernel": (getattr(autotuner, "inductor_meta", {}) or {}).get("kernel_name"),
        "filename": filename,
        "launchers": len(getattr(autotuner, "launchers", []) or []),  # (its configs list is emptied once compiled)
        "autotune_cache_info": getattr(autotuner, "autotune_cache_info", None),
        "save_cache_hook": getattr(autotuner, "save_cache_hook", None) is not None,
        "best_config_files_beside": beside,
        "seconds": round(seconds, 4),
    }


def main(argv: list[str] | None = None) -> int:
    """Run ``generate.py`` with ``benchmark_all_configs`` traced; write the records to ``--trace_out``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace_out", required=True, help="JSON file for the records")
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="-- then generate.py's arguments")
    a = ap.parse_args(argv)
    rest = a.rest[1:] if a.rest[:1] == ["--"] else a.rest

    from torch._inductor.runtime import triton_heuristics as th

    records: list[dict[str, Any]] = []
    original = th.CachingAutotuner.benchmark_all_configs

    def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            records.append(_record(self, time.perf_counter() - t0))

    th.CachingAutotuner.benchmark_all_configs = traced
    sys.argv = [str(HERE.parent / "generate.py"), *rest]
    rc = 0
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        th.CachingAutotuner.benchmark_all_configs = original
        cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        n_best = len(glob.glob(os.path.join(cache, "**", "*.best_config"), recursive=True)) if cache else None
        out = {"calls": len(records), "seconds": round(sum(r["seconds"] for r in records), 4),
               "inductor_cache_dir": cache, "best_config_files_in_cache": n_best, "records": records}
        tmp = Path(a.trace_out + ".tmp")
        tmp.write_text(json.dumps(out, indent=1, default=str))
        tmp.replace(a.trace_out)
    return rc


if __name__ == "__main__":
    sys.exit(main())
