"""How the attention backend is chosen: FlashAttention-4 when installed, and an honest fallback."""

from __future__ import annotations

import importlib
import sys
import types

import pytest
import torch

from wan_enhanced import fastpath
from wan_enhanced.errors import ConfigError
from wan_enhanced.fastpath import FastPath
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
        assert fp.attention_note == fastpath.AUTO_FA4_NOTE == "auto: FlashAttention-4 is installed"
        assert fp.to_dict()["attention_note"] == "auto: FlashAttention-4 is installed"
    assert FastPath(attention_backend="cudnn").resolve(CUDA).attention_backend == "cudnn"  # explicit wins
    assert FastPath().resolve(torch.device("cpu")).attention_backend == "auto"  # never on the CPU


@pytest.mark.parametrize("compile_mode,used", [("none", "auto"), ("blocks", "cudnn")])
def test_fa4_that_fails_to_load_falls_back_only_under_auto(monkeypatch, caplog, compile_mode, used):
    def boom():
        raise RuntimeError("cutlass DSL missing\nsecond line")

    deactivated = []
    monkeypatch.setattr(fastpath, "activate_fa4", boom)
    monkeypatch.setattr(fastpath, "deactivate_fa4", lambda: deactivated.append(True))
    dit = random_dit(get_preset("tiny"), torch.device("cpu"))
    pinned = []
    monkeypatch.setattr(dit, "set_attention_backend", lambda b: pinned.append(b))
    monkeypatch.setattr(dit, "compile_repeated_blocks", lambda **kw: None)
    fp = FastPath(compile=compile_mode, attention_backend="flash4", attention_note=fastpath.AUTO_FA4_NOTE)
    with caplog.at_level("WARNING", logger="wan_enhanced"):
        fp.apply_dit(dit, torch.device("cpu"))
    note = ("auto: FlashAttention-4 is installed but failed to activate (RuntimeError: cutlass DSL missing); "
            f"{used} used")
    assert (fp.attention_backend, fp.attention_note) == (used, note)
    assert deactivated == [True]
    assert pinned == (["_native_cudnn"] if used == "cudnn" else [])
    assert [r.getMessage() for r in caplog.records] == [note]
    explicit = FastPath(compile=compile_mode, attention_backend="flash4")
    with pytest.raises(RuntimeError, match="cutlass DSL missing"):
        explicit.apply_dit(dit, torch.device("cpu"))


def test_fa4_needs_a_hopper_or_blackwell_gpu(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "flash_attn.cute" else real(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert fastpath.fa4_unavailable(CUDA) == ("FlashAttention-4 needs compute capability 9.x or 10.x; "
                                              "this GPU is 8.0")
    assert fastpath.fa4_unavailable(torch.device("cpu")) == "FlashAttention-4 needs a CUDA GPU; this run is on cpu"
    assert FastPath().resolve(CUDA).attention_backend == "cudnn"  # auto does not pick it on an A100
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert fastpath.fa4_unavailable(CUDA) is None
    assert FastPath().resolve(CUDA).attention_backend == "flash4"
    cp = FastPath().resolve(CUDA, context_parallel=True)  # Ulysses: FA4 not measured there; its hooks run eagerly
    assert cp.attention_backend != "flash4" and cp.compile == "none"


def test_flash4_on_the_cpu_is_rejected_before_loading(monkeypatch):
    from wan_enhanced.config import RunConfig, validate

    monkeypatch.setattr(fastpath, "fa4_unavailable",
                        lambda device=None: None if device is None else "FlashAttention-4 needs a CUDA GPU; this "
                        "run is on cpu")
    with pytest.raises(ConfigError) as e:
        validate(RunConfig(task="tiny", device="cpu", attention_backend="flash4"), world_size=1, cuda_available=False)
    assert str(e.value) == ("--attention_backend flash4: FlashAttention-4 needs a CUDA GPU; this run is on cpu; "
                            "allowed here: auto, native, cudnn, flash, efficient")


def test_fa4_unavailable_names_the_missing_package(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("flash_attn") else real(name, *a))
    why = fastpath.fa4_unavailable()
    assert why == "FlashAttention-4 (pip install 'flash-attn-4[cu13]', module flash_attn.cute) is not installed"
    from wan_enhanced.config import RunConfig, validate

    with pytest.raises(ConfigError) as e:
        validate(RunConfig(task="tiny", device="cpu", attention_backend="flash4"), world_size=1, cuda_available=False)
    assert str(e.value) == ("--attention_backend flash4: FlashAttention-4 (pip install 'flash-attn-4[cu13]', module "
                            "flash_attn.cute) is not installed; allowed here: auto, native, cudnn, flash, efficient")


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

