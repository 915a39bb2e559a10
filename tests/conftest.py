"""Shared fixtures: tiny-preset configs, a test image, tiny models."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from wan_enhanced.config import RunConfig, validate


@pytest.fixture(autouse=True)
def _environment_restored():
    """Put ``os.environ`` back after each test.

    A run points the compilers at its cache directory through the environment (``TORCHINDUCTOR_CACHE_DIR`` and
    friends, set by design for the process); in a test process that would leak into later tests and into the
    subprocesses they start, which then take those folders for the user's own.
    """
    saved = dict(os.environ)
    yield
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)


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
