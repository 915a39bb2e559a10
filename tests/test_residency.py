"""The residency construct the pipeline's stages use: ``with residency.on_device(model) as m``."""

from __future__ import annotations

import pytest
import torch

from wan_enhanced.residency import Residency


class Recording(Residency):
    """A resident policy on the CPU that records the round trips the construct makes."""

    def __init__(self) -> None:
        super().__init__(torch.device("cpu"), "resident")
        self.calls: list[tuple[str, object]] = []

    def acquire(self, model):  # type: ignore[override]
        self.calls.append(("acquire", model))
        return super().acquire(model)

    def release(self, model):  # type: ignore[override]
        self.calls.append(("release", model))
        super().release(model)


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


def test_the_pipeline_makes_one_residency_construct_per_model_stage():
    import inspect

    from wan_enhanced import pipeline

    src = inspect.getsource(pipeline.TI2VPipeline)
    assert ".acquire(" not in src and ".release(" not in src  # only on_device, park (loads), prefetch, forget
    assert src.count("residency.on_device(") == 4  # text encoding, image encoding, denoising, decoding
