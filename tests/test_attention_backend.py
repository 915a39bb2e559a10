"""How the attention backend is chosen: FlashAttention-4 when installed, and an honest fallback."""

from __future__ import annotations

import importlib
import sys
import types

import pytest
import torch

from wan_enhanced import fastpath
from wan_enhanced.errors import ConfigError
from wan_enhanced.fastpath import FastPath, validate_fastpath
from wan_enhanced.models.presets import get_preset
from wan_enhanced.models.random_init import random_dit

CUDA = torch.device("cuda")


def test_auto_without_fa4_keeps_cudnn_for_compiled_blocks(monkeypatch):
    monkeypatch.setattr(fastpath, "fa4_unavailable", lambda device=None: "not installed")
    fp = FastPath().resolve(CUDA)
    assert (fp.compile, fp.attention_backend, fp.attention_note) == ("blocks", "cudnn", "")
    eager = FastPath(compile="none").resolve(CUDA)
    assert eager.attention_backend == "auto"  # SDPA's own choice in eager mode


def test_auto_picks_fa4_when_installed_and_records_why(monkeypatch):
    monkeypatch.setattr(fastpath, "fa4_unavailable", lambda device=None: None)
    for compile_mode in ("auto", "none"):
        fp = FastPath(compile=compile_mode).resolve(CUDA)
        assert fp.attention_backend == "flash4"
        assert fp.attention_note == "auto: FlashAttention-4 is installed"
        assert fp.to_dict()["attention_note"] == "auto: FlashAttention-4 is installed"
    assert FastPath(attention_backend="cudnn").resolve(CUDA).attention_backend == "cudnn"  # explicit wins
    assert FastPath().resolve(torch.device("cpu")).attention_backend == "auto"  # never on the CPU


def test_fa4_that_fails_to_load_falls_back_only_under_auto(monkeypatch):
    def boom():
        raise RuntimeError("cutlass DSL missing\nsecond line")

    monkeypatch.setattr(fastpath, "activate_fa4", boom)
    dit = random_dit(get_preset("tiny"), torch.device("cpu"))
    fp = FastPath(compile="none", attention_backend="flash4", attention_note="auto: FlashAttention-4 is installed")
    fp.apply_dit(dit)
    assert fp.attention_backend == "auto"
    assert fp.attention_note == ("auto: FlashAttention-4 is installed but failed to activate "
                                 "(RuntimeError: cutlass DSL missing); auto used")
    explicit = FastPath(compile="none", attention_backend="flash4")
    with pytest.raises(RuntimeError, match="cutlass DSL missing"):
        explicit.apply_dit(dit)


def test_fa4_unavailable_names_the_missing_package(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("flash_attn") else real(name, *a))
    why = fastpath.fa4_unavailable()
    assert why is not None and ("flash-attn-4" in why or "activate_flash_attention_impl" in why)
    with pytest.raises(ConfigError) as e:
        validate_fastpath("auto", "flash4")
    assert str(e.value).startswith("--attention_backend flash4: ")
    assert str(e.value).endswith("allowed without it: auto, native, cudnn, flash, efficient")


def test_adapter_returns_out_and_lse_from_either_fa4_convention(monkeypatch):
    calls = []

    def fwd_new(q, k, v, **kw):  # flash-attn-4 4.0.0b36: (out, lse, p, row_max, o_lo)
        calls.append(kw)
        return "out", "lse", None, None, None

    interface = types.SimpleNamespace(_flash_attn_fwd=fwd_new, _flash_attn_bwd=lambda *a, **k: "bwd")
    cute = types.ModuleType("flash_attn.cute")
    cute.interface = interface
    monkeypatch.setitem(sys.modules, "flash_attn", types.ModuleType("flash_attn"))
    monkeypatch.setitem(sys.modules, "flash_attn.cute", cute)
    monkeypatch.delitem(sys.modules, "wan_enhanced.attention_fa4", raising=False)
    attention_fa4 = importlib.import_module("wan_enhanced.attention_fa4")  # fresh, against the fake FA4

    assert attention_fa4._flash_attn_fwd(1, 2, 3, softmax_scale=0.5, return_lse=True) == ("out", "lse")
    assert calls == [{"softmax_scale": 0.5, "return_lse": True}]
    interface._flash_attn_fwd = lambda *a, **k: ("o", "l")  # the older two-value convention
    assert attention_fa4._flash_attn_fwd(1, 2, 3) == ("o", "l")
    assert attention_fa4._flash_attn_bwd is interface._flash_attn_bwd
    monkeypatch.delitem(sys.modules, "wan_enhanced.attention_fa4", raising=False)

