"""Which model lives on which device when: memory policies of a run.

- ``resident``: every model stays on the GPU once loaded (fastest, largest peak).
- ``offload`` (official ``--offload_model True``): a model moves to the CPU when its stage ends.
``--t5_cpu`` keeps the text encoder on the CPU for its whole life. ``--memory_budget_gb`` caps the
PyTorch allocator of this process so a large GPU can answer "does it fit N GB?".
"""

from __future__ import annotations

import torch

GIB = 1024**3


class Residency:
    """Moves models between the compute device and the CPU according to the run's policy."""

    def __init__(self, device: torch.device, offload: bool) -> None:
        self.device = device
        self.offload = offload and device.type == "cuda"

    @property
    def policy(self) -> str:
        """Name of the policy in force."""
        return "offload" if self.offload else "resident"

    def acquire(self, model: torch.nn.Module) -> torch.nn.Module:
        """Make sure ``model`` is on the compute device before its stage."""
        return model.to(self.device)

    def release(self, model: torch.nn.Module) -> None:
        """After a stage: move the model to the CPU when offloading; otherwise keep it."""
        if self.offload:
            model.to("cpu")
            torch.cuda.empty_cache()


def apply_memory_budget(device: torch.device, budget_gb: float | None) -> dict[str, float] | None:
    """Cap this process's CUDA caching allocator at ``budget_gb`` GiB (fraction of the card).

    The CUDA context itself (a few hundred MB) is outside the allocator and not capped; reports show
    it through NVML's device-used memory.
    """
    if budget_gb is None or device.type != "cuda":
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, budget_gb * GIB / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return {"budget_gb": budget_gb, "fraction": fraction, "device_total_gb": total / GIB}
