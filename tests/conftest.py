"""Shared fixtures: tiny-preset configs, a test image, tiny models."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wan_enhanced.config import RunConfig, validate


@pytest.fixture
def tiny_image(tmp_path):
    """A 64×64 RGB PNG with structure (not constant), so encode/decode see real pixels."""
    rng = np.random.default_rng(0)
    arr = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    path = tmp_path / "input.png"
    Image.fromarray(arr).save(path)
    return str(path)


@pytest.fixture
def tiny_cfg():
    """Factory for validated tiny-preset configs on the CPU."""

    def make(**kw) -> RunConfig:
        kw.setdefault("task", "tiny")
        kw.setdefault("device", "cpu")
        return validate(RunConfig(**kw), cuda_available=False)

    return make
