"""Which model lives on which device when: memory policies of a run.

- ``resident``: a model stays on the GPU from its load until the pipeline no longer needs it.
- ``offload`` (official ``--offload_model True``): only the current stage's model is on the GPU.
  Each model keeps a pinned copy of its weights in host memory, so moving it off the GPU is free
  (the GPU copy is dropped; weights never change) and moving it on runs at full host-link speed.
  The next model can be prefetched on a side stream while the current stage runs.
``--t5_cpu`` keeps the text encoder on the CPU for its whole life. ``--memory_budget_gb`` caps the
PyTorch allocator of this process so a large GPU can answer "does it fit N GB?".
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterator

import torch

from .errors import ConfigError

GIB = 1024**3
POLICIES = ("resident", "offload")


def _tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    return list(model.parameters()) + list(model.buffers())


class CudaCopies:
    """The CUDA side of offloading: pinned host buffers, a side stream for prefetches, and their events.

    ``Residency`` decides *when* a model moves; this class only knows *how* (a test passes a CPU fake).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._stream = torch.cuda.Stream(device)

    def to_host(self, t: torch.Tensor) -> torch.Tensor:
        """A pinned host copy of ``t``."""
        # empty_like keeps t's strides (dense layouts), so a channels-last VAE comes back channels-last
        h = torch.empty_like(t, device="cpu", pin_memory=True)
        h.copy_(t.detach())  # one copy straight into pinned memory
        return h

    def start_to_device(self, host: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.cuda.Event]:
        """Start copying ``host`` to the device on the side stream: (device tensors, their ready event)."""
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):
            out = [h.to(self.device, non_blocking=True) for h in host]
            ev = torch.cuda.Event()
            ev.record(self._stream)
        return out, ev

    def wait(self, ready: torch.cuda.Event, tensors: list[torch.Tensor]) -> None:
        """Make the compute stream wait for a prefetch and own its blocks."""
        cur = torch.cuda.current_stream(self.device)
        cur.wait_event(ready)
        for t in tensors:
            t.record_stream(cur)  # the side stream's blocks are in use on this stream

    def free_cache(self) -> None:
        """Give the caching allocator's free blocks back."""
        torch.cuda.empty_cache()


class Residency:
    """Moves models between the compute device and pinned host memory according to the policy.

    The pipeline talks to it once per stage: ``admit(model)`` where a model is loaded, ``with
    on_device(model) as m:`` around the stage that runs it, ``prefetch(next_model)`` where the next
    stage's weights may start to arrive, ``forget(model)`` when the run no longer needs it.
    """

    def __init__(self, device: torch.device, policy: str, copies: CudaCopies | None = None) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown residency policy {policy!r}; allowed: {', '.join(POLICIES)}")
        self.device = device
        self.policy = policy if device.type == "cuda" or copies is not None else "resident"
        # keyed by the module itself (weakly): an id() could be reused by a later model
        self._host: weakref.WeakKeyDictionary[torch.nn.Module, list[torch.Tensor]] = weakref.WeakKeyDictionary()
        self._ready: weakref.WeakKeyDictionary[torch.nn.Module, object] = weakref.WeakKeyDictionary()
        self._host_only: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()
        self._copies = copies if copies is not None or self.policy != "offload" else CudaCopies(device)

    @property
    def offload(self) -> bool:
        """True when models leave the GPU between stages."""
        return self.policy == "offload"

    def admit(self, model: torch.nn.Module, host_only: bool = False) -> torch.nn.Module:
        """A model just loaded: parked until its stage (offload), or kept on the host for its whole life
        (``host_only``: ``--t5_cpu``), where every other call of this class leaves it alone."""
        if host_only:
            self._host_only.add(model)
            return model
        return self.park(model)

    def park(self, model: torch.nn.Module) -> torch.nn.Module:
        """Keep a pinned host copy of ``model``'s weights and free its GPU memory (offload only)."""
        if not self.offload or model in self._host or model in self._host_only:
            return model
        assert self._copies is not None
        host = []
        for t in _tensors(model):
            h = self._copies.to_host(t)
            host.append(h)
            t.data = h
        self._host[model] = host
        self._copies.free_cache()
        return model

    def prefetch(self, model: torch.nn.Module | None) -> None:
        """Start copying ``model`` to the GPU on a side stream (no-op unless parked)."""
        if model is None or not self.offload or model not in self._host or model in self._ready:
            return
        assert self._copies is not None
        on_device, ready = self._copies.start_to_device(self._host[model])
        for t, d in zip(_tensors(model), on_device, strict=True):
            t.data = d
        self._ready[model] = ready

    def acquire(self, model: torch.nn.Module) -> torch.nn.Module:
        """Make sure ``model`` is on the compute device before its stage."""
        if model in self._host_only:
            return model
        if not self.offload:
            return model.to(self.device)
        assert self._copies is not None
        self.park(model)
        self.prefetch(model)
        self._copies.wait(self._ready[model], [t.data for t in _tensors(model)])
        return model

    def release(self, model: torch.nn.Module | None) -> None:
        """After a stage: drop the GPU copy (the pinned host copy stays) when offloading."""
        if model is None or not self.offload or model not in self._host:
            return
        assert self._copies is not None
        for t, h in zip(_tensors(model), self._host[model], strict=True):
            t.data = h
        self._ready.pop(model, None)
        self._copies.free_cache()

    @contextlib.contextmanager
    def on_device(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """A stage's one residency construct: ``model`` on the compute device inside, released after.

        A host-only model (``admit(..., host_only=True)``) stays where it is. On an exception the model
        is left where it is (the run is ending; its report records the memory as it was at the failure).
        """
        m = self.acquire(model)
        yield m
        self.release(m)

    def forget(self, model: torch.nn.Module | None) -> None:
        """The pipeline no longer needs ``model``: drop its GPU copy and its pinned host copy."""
        if model is None:
            return
        self.release(model)
        self._host.pop(model, None)
        self._host_only.discard(model)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def check_memory_budget(device: torch.device, budget_gb: float | None) -> None:
    """Reject a budget the card cannot even hold (one line, before any weights load)."""
    if budget_gb is None or device.type != "cuda":
        return
    total = torch.cuda.get_device_properties(device).total_memory / GIB
    if not math.isfinite(budget_gb) or budget_gb > total:
        raise ConfigError(f"--memory_budget_gb: {budget_gb:g} is more than this GPU has ({total:.1f} GB); "
                          f"allowed: 0 < N <= {total:.1f}")


def apply_memory_budget(device: torch.device, budget_gb: float | None) -> dict[str, float] | None:
    """Cap this process's CUDA caching allocator so that allocator + CUDA context fit ``budget_gb`` GiB.

    The CUDA context (and anything else of this process outside PyTorch's allocator) is measured now as
    device-used memory minus what the allocator holds, and subtracted from the budget; the cap applies
    to reserved memory (what the allocator holds from the driver), so "fits" means the whole process
    would fit a card of ``budget_gb`` GiB — other processes on the card excepted.
    """
    if budget_gb is None or device.type != "cuda":
        return None
    check_memory_budget(device, budget_gb)
    free, total = torch.cuda.mem_get_info(device)
    outside = max(0, (total - free) - torch.cuda.memory_reserved(device))
    cap = max(0.0, budget_gb * GIB - outside)
    fraction = min(1.0, cap / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return {"budget_gb": budget_gb, "fraction": fraction, "device_total_gb": total / GIB,
            "outside_allocator_gb": outside / GIB, "allocator_cap_gb": cap / GIB,
            "note": "device-used memory outside PyTorch's allocator at start (CUDA context, other processes) "
                    "is subtracted from the budget"}
