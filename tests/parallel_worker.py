"""Worker for tests/test_parallel_cpu.py: one tiny generation under torchrun, rank 0 saves latents."""

from __future__ import annotations

import sys

import torch

from wan_enhanced.config import RunConfig, validate
from wan_enhanced.parallel import init_parallel, shutdown
from wan_enhanced.pipeline import TI2VPipeline


def main(out: str, cfg_parallel: bool, ulysses: int) -> None:
    cfg = validate(RunConfig(task="tiny", device="cpu", base_seed=5, sample_steps=4, cfg_parallel=cfg_parallel,
                             ulysses_size=ulysses), cuda_available=False)
    par = init_parallel(cfg.ulysses_size, cfg.cfg_parallel, "cpu")
    res = TI2VPipeline(cfg, progress=False, parallel=par).generate()
    if par.is_main:
        torch.save(res.latents, out)
    shutdown(par)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] == "cfg", int(sys.argv[3]))
