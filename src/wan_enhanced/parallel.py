"""Multi-GPU generation under torchrun: Ulysses sequence parallel and CFG parallel.

- Ulysses (``--ulysses_size U``): diffusers' context parallelism splits the DiT's token sequence
  across U ranks and exchanges heads with all-to-all around attention (``_cp_plan`` of
  ``WanTransformer3DModel``). Needs U to divide the 24 heads and the token count.
- CFG parallel (``--cfg_parallel``): the conditional and unconditional forwards of each step run on
  two rank groups at once; the two noise predictions are exchanged with one all-gather and every
  rank takes the same scheduler step.
World size N = U × (2 with CFG parallel, else 1). Rank 0 writes the video and the report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class ParallelContext:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    ulysses_size: int = 1
    cfg_parallel: bool = False
    cfg_group: Any = None

    @property
    def enabled(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the outputs."""
        return self.rank == 0

    @property
    def cfg_rank(self) -> int:
        """0 for the conditional group, 1 for the unconditional one (0 without CFG parallel)."""
        return self.rank // self.ulysses_size if self.cfg_parallel else 0

    def gather_cfg(self, mine: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exchange this rank's noise prediction with its CFG partner → (cond, uncond)."""
        parts = [torch.empty_like(mine) for _ in range(2)]
        dist.all_gather(parts, mine.contiguous(), group=self.cfg_group)
        return parts[0], parts[1]

    def gather_objects(self, obj: Any) -> list[Any] | None:
        """Collect one picklable object per rank on rank 0 (None elsewhere)."""
        if not self.enabled:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out


def world_size_needed(ulysses_size: int, cfg_parallel: bool) -> int:
    """Processes a run needs: N = U × (2 with CFG parallel, else 1)."""
    return ulysses_size * (2 if cfg_parallel else 1)


def env_world_size() -> int:
    """WORLD_SIZE set by torchrun (1 when not under torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_parallel(ulysses_size: int, cfg_parallel: bool, device_type: str) -> ParallelContext:
    """Join the torchrun process group (NCCL on GPUs, gloo on CPUs) and build the CFG groups."""
    world = env_world_size()
    if world == 1:
        return ParallelContext(ulysses_size=ulysses_size, cfg_parallel=False)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    rank, local = dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    ctx = ParallelContext(rank, world, local, ulysses_size, cfg_parallel)
    if cfg_parallel:
        # pairs (i, i + U): same sequence shard, cond on the first, uncond on the second
        for i in range(ulysses_size):
            group = dist.new_group([i, i + ulysses_size])
            if rank in (i, i + ulysses_size):
                ctx.cfg_group = group
    return ctx


def apply_ulysses(dit: Any, ctx: ParallelContext) -> None:
    """Shard the DiT's sequence over the Ulysses ranks with diffusers' context parallelism."""
    if ctx.ulysses_size == 1:
        return
    from diffusers import ContextParallelConfig
    from torch.distributed.device_mesh import init_device_mesh

    device_type = torch._C._get_accelerator().type
    if ctx.cfg_parallel:
        mesh = init_device_mesh(device_type, (2, 1, ctx.ulysses_size), mesh_dim_names=("cfg", "ring", "ulysses"))
        cp = ContextParallelConfig(ulysses_degree=ctx.ulysses_size, mesh=mesh["ring", "ulysses"])
    else:
        cp = ContextParallelConfig(ulysses_degree=ctx.ulysses_size)
    dit.enable_parallelism(config=cp)


def shutdown(ctx: ParallelContext) -> None:
    """Leave the process group."""
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
