"""Worker for tests/test_parallel_cpu.py: CFG parallel under torchrun where rank 1 fails mid-denoise."""

from __future__ import annotations

import os
import sys

from wan_enhanced.config import RunConfig, validate
from wan_enhanced.pipeline import TI2VPipeline
from wan_enhanced.run import run_generation


def main(report: str) -> int:
    if os.environ.get("RANK") == "1":
        def broken(self, *a, **k):
            with self.stage("Denoising", "broken on purpose"):
                raise RuntimeError("rank 1 broke")

        TI2VPipeline.denoise = broken
    cfg = validate(RunConfig(task="tiny", device="cpu", cfg_parallel=True, report_file=report), cuda_available=False)
    return run_generation(cfg, progress=False).exit_code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
