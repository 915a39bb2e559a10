"""Seed entry point: ``python3 benchmark/run.py [--config F] [--run-id ID] [--resume] [--device D]``.

Runs every case of the suite config in its own ``generate`` subprocess and writes
``benchmark_report.md`` (see ``wan_enhanced.bench.runner``). Works from a checkout without install.
"""

import sys
from pathlib import Path

try:
    from wan_enhanced.bench.runner import bench_main
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from wan_enhanced.bench.runner import bench_main

if __name__ == "__main__":
    raise SystemExit(bench_main(sys.argv[1:]))
