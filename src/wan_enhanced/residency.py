"""Which model lives on which device when: memory policies of a run.

- ``resident``: every model stays on the GPU once loaded (fastest, largest peak).
- ``offload`` (official ``--offload_model True``): only the current stage's model is on the GPU.
  Each model keeps a pinned copy of its weights in host memory, so moving it off the GPU is free
  (the GPU copy is dropped; weights never change) and moving it on runs at full host-link speed.
  The next model can be prefetched on a side stream while the current stage runs.
``--t5_cpu`` keeps the text encoder on the CPU for its whole life. ``--memory_budget_gb`` caps the
PyTorch allocator of this process so a large GPU can answer "does it fit N GB?".
"""

from __future__ import annotations

import torch

GIB = 1024**3
POLICIES = ("resident", "offload")


def _tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    return [t for t in list(model.parameters()) + list(model.buffers())]


class Residency:
    """Moves models between the compute device and pinned host memory according to the policy."""

    def __init__(self, device: torch.device, policy: str) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown residency policy {policy!r}; allowed: {', '.join(POLICIES)}")
        self.device = device
        self.policy = policy if device.type == "cuda" else "resident"
        self._host: dict[int, list[torch.Tensor]] = {}
        self._ready: dict[int, torch.cuda.Event] = {}
        self._stream = torch.cuda.Stream(device) if self.policy == "offload" else None

    @property
    def offload(self) -> bool:
        """True when models leave the GPU between stages."""
        return self.policy == "offload"

    def park(self, model: torch.nn.Module) -> torch.nn.Module:
        """Keep a pinned host copy of ``model``'s weights and free its GPU memory (offload only)."""
        if not self.offload or id(model) in self._host:
            return model
        host = []
        for t in _tensors(model):
            h = t.detach().to("cpu")
            host.append(h.pin_memory())
            t.data = host[-1]
        self._host[id(model)] = host
        torch.cuda.empty_cache()
        return model

    def prefetch(self, model: torch.nn.Module | None) -> None:
        """Start copying ``model`` to the GPU on a side stream (no-op unless parked)."""
        if model is None or not self.offload or id(model) not in self._host or id(model) in self._ready:
            return
        assert self._stream is not None
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):
            for t, h in zip(_tensors(model), self._host[id(model)], strict=True):
                t.data = h.to(self.device, non_blocking=True)
            ev = torch.cuda.Event()
            ev.record(self._stream)
        self._ready[id(model)] = ev

    def acquire(self, model: torch.nn.Module) -> torch.nn.Module:
        """Make sure ``model`` is on the compute device before its stage."""
        if not self.offload:
            return model.to(self.device)
        self.park(model)
        self.prefetch(model)
        ev = self._ready[id(model)]
        cur = torch.cuda.current_stream(self.device)
        cur.wait_event(ev)
        for t in _tensors(model):
            t.data.record_stream(cur)
        return model

    def release(self, model: torch.nn.Module | None) -> None:
        """After a stage: drop the GPU copy (the pinned host copy stays) when offloading."""
        if model is None or not self.offload or id(model) not in self._host:
            return
        for t, h in zip(_tensors(model), self._host[id(model)], strict=True):
            t.data = h
        self._ready.pop(id(model), None)
        torch.cuda.empty_cache()


def apply_memory_budget(device: torch.device, budget_gb: float | None) -> dict[str, float] | None:
    """Cap this process's CUDA caching allocator at ``budget_gb`` GB (GiB, 2^30 bytes, as cards are sold).

    The CUDA context itself (a few hundred MB) is outside the allocator and not capped; reports show
    it through NVML's device-used memory.
    """
    if budget_gb is None or device.type != "cuda":
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, budget_gb * GIB / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return {"budget_gb": budget_gb, "fraction": fraction, "device_total_gb": total / GIB}
