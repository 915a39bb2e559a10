"""Timers for :mod:`.official_wan`: the stage clock, the step timer, and the patches and hooks that place them.

Our timers sit around the official code's calls without changing what they compute: module globals and
class attributes are swapped only inside a ``with`` (:func:`patched`, restored on exit), instance methods
are wrapped on the instance (:func:`wrap_moves`, the VAE's ``decode``), the text encoder sits behind a
proxy (:class:`TimedTextEncoder`), and the denoising loop is cut into steps by a DiT forward pre-hook and
the solver's wrapped ``step`` (:class:`StepTimer`, :func:`timed_solver_steps`).

Every boundary is a wall timer after ``torch.cuda.synchronize`` (on CUDA); each stage resets the CUDA
peak-memory counters at its start and reads ``max_memory_allocated`` / ``max_memory_reserved`` at its end
(GiB); the run's peak is the maximum over all of them, gaps included (:class:`StageClock`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch

from .. import stages as st

GIB = float(1 << 30)


class StageClock:
    """CUDA-synchronized wall timers and per-stage peak memory (GiB); the stage dicts of one run."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.stages: list[dict[str, Any]] = []
        self.run_peak_allocated = 0.0
        self.run_peak_reserved = 0.0
        self._open: dict[str, float] = {}

    def now(self) -> float:
        """Wall time after all queued GPU work on the device has finished."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _fold_peaks(self) -> tuple[float | None, float | None]:
        if not self.cuda:
            return None, None
        alloc = torch.cuda.max_memory_allocated(self.device) / GIB
        reserved = torch.cuda.max_memory_reserved(self.device) / GIB
        self.run_peak_allocated = max(self.run_peak_allocated, alloc)
        self.run_peak_reserved = max(self.run_peak_reserved, reserved)
        return alloc, reserved

    def begin(self, name: str) -> float:
        """Open stage ``name``: synchronize, fold the counters into the run peak, reset them."""
        t = self.now()
        if self.cuda:
            self._fold_peaks()
            torch.cuda.reset_peak_memory_stats(self.device)
        self._open[name] = t
        return t

    def end(self, name: str, *, parent: str | None = st.TOTAL.name, comment: str | None = None,
            start: float | None = None, **extra: Any) -> dict[str, Any]:
        """Close stage ``name`` (opened by :meth:`begin`, or from ``start``) and record it."""
        t = self.now()
        t0 = self._open.pop(name, None) if start is None else start
        if t0 is None:
            raise RuntimeError(f"stage {name!r} was never begun")
        alloc, reserved = self._fold_peaks()
        rec = {"name": name, "parent": parent, "duration_s": t - t0, "start_s": t0, "end_s": t,
               "peak_allocated_gb": alloc, "peak_reserved_gb": reserved,
               "memory": {"peak_gb": alloc, "peak_reserved_gb": reserved}, **extra}
        if comment:
            rec["comment"] = comment
        self.stages.append(rec)
        return rec

    @contextmanager
    def stage(self, name: str, **kwargs: Any) -> Iterator[None]:
        """``with clock.stage(name):`` — begin, then end even if the body raises."""
        self.begin(name)
        try:
            yield
        finally:
            self.end(name, **kwargs)


class StepTimer:
    """Times the denoising loop from outside: a DiT forward pre-hook and a wrapped solver ``step``.

    Step 0 starts at the loop's first DiT forward; step ``i`` ends when the solver's ``step`` returns; step
    ``i + 1`` starts there. ``forwards`` counts the DiT forwards of each step.
    """

    def __init__(self, clock: StageClock) -> None:
        self.clock = clock
        self.loop_start: float | None = None
        self.loop_end: float | None = None
        self.step_start: float | None = None
        self.forwards: list[int] = []
        self._pending = 0

    def pre_forward(self, module: torch.nn.Module, args: Any) -> None:
        """Forward pre-hook of the DiT."""
        if self.step_start is None:
            t = self.clock.begin("_step")
            if self.loop_start is None:
                self.loop_start = t
            self.step_start = t
        self._pending += 1

    def after_solver_step(self) -> None:
        """Called when the solver's ``step`` has returned: closes the current step."""
        if self.step_start is None:
            return  # a solver step outside the timed loop
        i = len(self.forwards)
        rec = self.clock.end("_step", parent=st.DENOISING.name, start=self.step_start, forwards=self._pending)
        rec["name"] = st.step_name(i)
        self.forwards.append(self._pending)
        self._pending = 0
        self.loop_end = rec["end_s"]
        self.step_start = None
        self.clock.begin("_step")  # the next step starts where this one ended
        self.step_start = rec["end_s"]

    def close(self) -> None:
        """Drop the open step that follows the last one (it never ran)."""
        self.clock._open.pop("_step", None)
        self.step_start = None


@contextmanager
def patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    had = name in vars(obj)
    old = vars(obj).get(name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if had:
            setattr(obj, name, old)
        else:
            delattr(obj, name)


@contextmanager
def timed_solver_steps(classes: list[type], timer: StepTimer) -> Iterator[None]:
    """Wrap ``step`` of each solver class (restored on exit); the wrapper calls the original unchanged."""
    patches = []
    for cls in classes:
        original = cls.step

        def step(self: Any, *args: Any, _orig: Callable[..., Any] = original, **kwargs: Any) -> Any:
            out = _orig(self, *args, **kwargs)
            timer.after_solver_step()
            return out

        patches.append(patched(cls, "step", functools.wraps(original)(step)))
    with stacked(patches):
        yield


@contextmanager
def stacked(managers: list[Any]) -> Iterator[None]:
    with ExitStack() as stack:
        for m in managers:
            stack.enter_context(m)
        yield


class TimedTextEncoder:
    """Proxy for the official ``T5EncoderModel``: ``__call__`` is timed, everything else delegates."""

    def __init__(self, inner: Any, clock: StageClock) -> None:
        self._inner = inner
        self._clock = clock
        self.first_start: float | None = None
        self.last_end: float | None = None
        self.calls = 0
        self.peaks: list[tuple[float | None, float | None]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = self._clock.begin("_text")
        out = self._inner(*args, **kwargs)
        rec = self._clock.end("_text", parent=None)
        self._clock.stages.remove(rec)
        self.peaks.append((rec["peak_allocated_gb"], rec["peak_reserved_gb"]))
        self.first_start = t0 if self.first_start is None else self.first_start
        self.last_end = rec["end_s"]
        self.calls += 1
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def wrap_moves(module: torch.nn.Module, label: str, clock: StageClock, target: torch.device) -> None:
    """Time ``module.to(device)`` / ``module.cpu()`` as ``{label}_to_device`` / ``{label}_offload`` stages."""
    original_to, original_cpu = module.to, module.cpu

    def stage_name(dev: torch.device) -> str:
        return f"{label}_to_device" if dev == target else f"{label}_offload"

    def to(*args: Any, **kwargs: Any) -> Any:
        dev = kwargs.get("device")
        for a in args:
            if isinstance(a, (torch.device, str, int)):
                dev = a
        if dev is None:  # dtype-only conversion: not a move
            return original_to(*args, **kwargs)
        name = stage_name(torch.device(dev) if not isinstance(dev, int) else torch.device("cuda", dev))
        with clock.stage(name, comment=f"{label} .to(), host<->device copy"):
            return original_to(*args, **kwargs)

    def cpu() -> Any:
        with clock.stage(stage_name(torch.device("cpu")), comment=f"{label} .cpu(), device->host copy"):
            return original_cpu()

    object.__setattr__(module, "to", to)
    object.__setattr__(module, "cpu", cpu)


__all__ = ["GIB", "StageClock", "StepTimer", "TimedTextEncoder", "patched", "stacked", "timed_solver_steps",
           "wrap_moves"]
