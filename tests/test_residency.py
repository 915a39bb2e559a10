"""The residency construct the pipeline's stages use (``with residency.on_device(model) as m``), and the offload
policy's copies, with a CPU stand-in for the CUDA side (pinned buffers, side stream, events)."""

from __future__ import annotations

import contextlib
import inspect

import pytest
import torch

from wan_enhanced import pipeline, stages
from wan_enhanced.residency import Residency

CPU = torch.device("cpu")


class Recording(Residency):
    """A resident policy on the CPU that records the round trips the construct makes."""

    def __init__(self) -> None:
        super().__init__(CPU, "resident")
        self.calls: list[tuple[str, object]] = []

    def acquire(self, model):  # type: ignore[override]
        self.calls.append(("acquire", model))
        return super().acquire(model)

    def release(self, model):  # type: ignore[override]
        self.calls.append(("release", model))
        super().release(model)


class FakeCopies:
    """``CudaCopies`` on the CPU: every copy is a clone, and each kind of call is counted."""

    def __init__(self) -> None:
        self.host_copies = 0  # tensors copied into host buffers (park)
        self.device_copies: list[int] = []  # one entry per model copied to the device: its tensor count
        self.waits = 0  # the compute stream waiting for a copy
        self.frees = 0

    def to_host(self, t: torch.Tensor) -> torch.Tensor:
        self.host_copies += 1
        return t.detach().clone()

    def start_to_device(self, host: list[torch.Tensor]) -> tuple[list[torch.Tensor], object]:
        self.device_copies.append(len(host))
        return [h.clone() for h in host], object()

    def wait(self, ready: object, tensors: list[torch.Tensor]) -> None:
        self.waits += 1

    def free_cache(self) -> None:
        self.frees += 1


def _offload() -> tuple[Residency, FakeCopies]:
    copies = FakeCopies()
    return Residency(CPU, "offload", copies=copies), copies


def _ptrs(m: torch.nn.Module) -> list[int]:
    return [p.data_ptr() for p in m.parameters()]


def test_on_device_acquires_then_releases_once():
    r, m = Recording(), torch.nn.Linear(2, 2)
    with r.on_device(m) as on:
        assert on is m and next(on.parameters()).device.type == "cpu"
        assert r.calls == [("acquire", m)]
    assert r.calls == [("acquire", m), ("release", m)]


def test_on_device_leaves_the_model_where_it_is_when_the_stage_fails():
    r, m = Recording(), torch.nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="stage broke"), r.on_device(m):
        raise RuntimeError("stage broke")
    assert r.calls == [("acquire", m)]  # the failing run's report sees memory as it was at the failure


def test_offload_needs_a_gpu_or_a_copy_engine():
    assert Residency(CPU, "offload").policy == "resident"  # CPU runs: nothing to offload to
    assert _offload()[0].policy == "offload"
    with pytest.raises(ValueError, match="unknown residency policy"):
        Residency(CPU, "sometimes")


def test_park_keeps_one_host_copy_and_the_weights_point_at_it():
    r, copies = _offload()
    m = torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in m.parameters()]
    r.admit(m)
    r.park(m)  # a second park copies nothing
    assert copies.host_copies == 2 and copies.device_copies == []  # weight + bias, once
    assert _ptrs(m) == [h.data_ptr() for h in r._host[m]]
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))


def test_on_device_copies_in_and_drops_the_device_copy_after():
    r, copies = _offload()
    m = r.admit(torch.nn.Linear(3, 2))
    host = [h.data_ptr() for h in r._host[m]]
    with r.on_device(m) as on:
        assert copies.device_copies == [2] and copies.waits == 1
        assert set(_ptrs(on)).isdisjoint(host)  # the stage computes on the device copy
        x = on(torch.ones(1, 3))
    assert _ptrs(m) == host  # back on the host buffers: the device copy is gone
    assert torch.equal(m(torch.ones(1, 3)), x)
    with r.on_device(m):
        pass
    assert copies.device_copies == [2, 2]  # each stage copies its model in again


def test_prefetch_starts_the_copy_once_and_the_stage_reuses_it():
    r, copies = _offload()
    m = r.admit(torch.nn.Linear(3, 2))
    r.prefetch(m)
    r.prefetch(m)  # already on its way
    assert copies.device_copies == [2] and copies.waits == 0
    with r.on_device(m):
        assert copies.device_copies == [2] and copies.waits == 1  # waited for, not copied again
    r.prefetch(None)  # no next model: nothing to do
    assert copies.device_copies == [2]


def test_host_only_models_are_never_copied_and_resident_models_never_parked():
    r, copies = _offload()
    t5 = r.admit(torch.nn.Linear(2, 2), host_only=True)  # --t5_cpu
    with r.on_device(t5) as on:
        assert on is t5
    r.prefetch(t5)
    assert copies.host_copies == 0 and copies.device_copies == [] and copies.waits == 0
    resident = Residency(CPU, "resident")
    m = resident.admit(torch.nn.Linear(2, 2))
    with resident.on_device(m):
        pass
    assert m not in resident._host


def test_forget_drops_both_copies():
    r, _ = _offload()
    m = r.admit(torch.nn.Linear(2, 2))
    r.prefetch(m)
    r.forget(m)
    assert m not in r._host and m not in r._ready


def test_the_pipeline_makes_one_residency_construct_per_model_stage():
    src = inspect.getsource(pipeline.TI2VPipeline)
    assert ".acquire(" not in src and ".release(" not in src and ".park(" not in src
    assert src.count("residency.on_device(") == 4  # text encoding, image encoding, denoising, decoding
    assert src.count("residency.admit(") == 3  # the three loads
    assert src.count("residency.prefetch(") == 1  # the decoder's weights during the last step
    assert "add_flops" not in src  # FLOPs are the run's accounting (StageFlops), not the stage bodies'


class _Names:
    """A monitor that records stage names (with depth and comment) and the FLOPs added to each."""

    def __init__(self) -> None:
        self.open: list[str] = []
        self.names: list[tuple[int, str, str]] = []
        self.flops: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str, comment: str = ""):
        self.names.append((len(self.open), name, comment))
        self.open.append(name)
        try:
            yield
        finally:
            self.open.pop()

    def add_flops(self, flops: float, source: str = "analytic") -> None:
        self.flops[self.open[-1]] = self.flops.get(self.open[-1], 0.0) + flops


@pytest.mark.parametrize("t5_cpu", [False, True])
def test_offloaded_tiny_run_copies_each_model_in_for_its_stages_only(tiny_cfg, tiny_image, monkeypatch, tmp_path,
                                                                     t5_cpu):
    ref = pipeline.TI2VPipeline(tiny_cfg(image=tiny_image, t5_cpu=t5_cpu), progress=False).generate()
    copies = FakeCopies()
    monkeypatch.setattr(pipeline, "Residency", lambda device, policy: Residency(device, policy, copies=copies))
    mon = _Names()
    cfg = tiny_cfg(image=tiny_image, t5_cpu=t5_cpu, offload_model=True, save_file=str(tmp_path / "v.mp4"))
    pipe = pipeline.TI2VPipeline(cfg, monitor=mon, progress=False)
    res = pipe.generate()
    assert pipe.residency.offload
    # T5 (unless --t5_cpu) for Text_Encoding, the VAE for Image_Encoding and (prefetched) VAE_Decoding, the DiT once
    assert len(copies.device_copies) == (3 if t5_cpu else 4) and copies.waits == len(copies.device_copies)
    assert torch.equal(res.latents, ref.latents)  # offloading moves weights, it changes no arithmetic
    top = [name for depth, name, _ in mon.names if depth == 0]
    # the registry's order is the pipeline's (no --save_latents here)
    assert top == [k.name for k in stages.PIPELINE_ORDER if k not in (stages.SAVE_LATENTS, stages.PREPARE_DIT)]
    comments = {name: c for _, name, c in mon.names}
    assert comments["Denoising"].endswith("; offload: the DiT weights loaded for this stage count as dynamic memory")
    assert comments["VAE_Decoding"] == (f"VAE decode ({cfg.vae_dtype}); offload: the VAE weights loaded for this "
                                        "stage count as dynamic memory")
    # FLOPs land on the stages that computed them, from the run's plan
    plan = pipe.flops.units
    assert set(mon.flops) == {"Text_Encoding", "Image_Encoding", "VAE_Decoding"} | {
        stages.step_name(i) for i in range(cfg.sample_steps)}
    assert mon.flops["Step_0"] == plan["dit_per_token"] * 2  # i2v: per-token timestep; CFG: two forwards
    assert mon.flops["VAE_Decoding"] == plan["vae_decode"] and mon.flops["Image_Encoding"] == plan["vae_encode"]
