"""The official-Wan2.2 peer: our flash_attn adapter's argument mapping, the stub list, and a tiny CPU run."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wan_enhanced import stages as st
from wan_enhanced.peers import flash_attn_adapter as fa
from wan_enhanced.peers import official_import as oi
from wan_enhanced.peers import official_timing as ot
from wan_enhanced.peers import official_tiny as otiny

ROOT = Path(__file__).resolve().parents[1]


def _packed(lens: list[int], heads: int, dim: int, gen: torch.Generator, dtype=torch.float32):
    x = torch.randn(sum(lens), heads, dim, generator=gen, dtype=torch.float32).to(dtype)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    return x, cu


def _naive(q, k, v, lens_q, lens_k, scale):
    """Softmax attention written out per sequence and per head, in float64."""
    out, sq, sk = [], 0, 0
    for lq, lk in zip(lens_q, lens_k, strict=True):
        rows = torch.zeros(lq, q.size(1), v.size(2), dtype=torch.float64)
        for h in range(q.size(1)):
            hk = h // (q.size(1) // k.size(1))
            qi, ki, vi = (q[sq:sq + lq, h].double(), k[sk:sk + lk, hk].double(), v[sk:sk + lk, hk].double())
            rows[:, h] = torch.softmax(qi @ ki.T * scale, dim=-1) @ vi
        out.append(rows)
        sq, sk = sq + lq, sk + lk
    return torch.cat(out)


@pytest.fixture(autouse=True)
def _math_backend():
    """Install the adapter for one test, then give sys.modules back as it was (other tests probe flash_attn)."""
    names = (fa.MODULE_NAME, fa.FA3_MODULE_NAME)
    saved = {n: sys.modules[n] for n in names if n in sys.modules}
    fa.install("math")
    yield
    for n in names:
        sys.modules.pop(n, None)
    sys.modules.update(saved)


@pytest.mark.parametrize(("lens_q", "lens_k"), [([5, 5], [7, 7]), ([3, 6, 1], [4, 2, 9]), ([4], [4])])
@pytest.mark.parametrize("softmax_scale", [None, 0.37])
def test_varlen_matches_naive_attention(lens_q, lens_k, softmax_scale):
    gen = torch.Generator().manual_seed(0)
    q, cu_q = _packed(lens_q, 2, 8, gen)
    k, cu_k = _packed(lens_k, 2, 8, gen)
    v, _ = _packed(lens_k, 2, 6, gen)
    out = fa.flash_attn_varlen_func(q=q, k=k, v=v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max(lens_q),
                                    max_seqlen_k=max(lens_k), dropout_p=0.0, softmax_scale=softmax_scale,
                                    causal=False, window_size=(-1, -1), deterministic=False)
    assert out.shape == (sum(lens_q), 2, 6) and out.dtype == q.dtype
    scale = softmax_scale if softmax_scale is not None else 1 / math.sqrt(8)
    torch.testing.assert_close(out.double(), _naive(q, k, v, lens_q, lens_k, scale), atol=1e-5, rtol=1e-5)
    ref = fa.reference_varlen_attention(q, k, v, cu_q, cu_k, softmax_scale)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_varlen_bf16_grouped_heads_and_scale_changes_result():
    gen = torch.Generator().manual_seed(1)
    q, cu_q = _packed([4, 6], 4, 8, gen, torch.bfloat16)
    k, cu_k = _packed([5, 3], 2, 8, gen, torch.bfloat16)
    v, _ = _packed([5, 3], 2, 8, gen, torch.bfloat16)
    out = fa.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 6, 5, softmax_scale=0.2)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), _naive(q, k, v, [4, 6], [5, 3], 0.2), atol=2e-2, rtol=2e-2)
    other = fa.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 6, 5, softmax_scale=1.5)
    assert not torch.allclose(out.float(), other.float(), atol=1e-2)


def test_causal_and_padded_api():
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(2, 5, 2, 8, generator=gen)
    k = torch.randn(2, 5, 2, 8, generator=gen)
    v = torch.randn(2, 5, 2, 8, generator=gen)
    out = fa.flash_attn_func(q, k, v, causal=True)
    ref = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                           is_causal=True).transpose(1, 2)
    torch.testing.assert_close(out, ref)


def test_unsupported_arguments_raise():
    q, cu = _packed([3, 3], 2, 8, torch.Generator().manual_seed(3))
    with pytest.raises(NotImplementedError, match="sliding window"):
        fa.flash_attn_varlen_func(q, q, q, cu, cu, 3, 3, window_size=(2, 2))
    with pytest.raises(NotImplementedError, match="softcap"):
        fa.flash_attn_varlen_func(q, q, q, cu, cu, 3, 3, softcap=1.0)
    with pytest.raises(ValueError, match="max_seqlen"):
        fa.flash_attn_varlen_func(q, q, q, cu, cu, 2, 3)
    with pytest.raises(ValueError, match="ends at"):
        fa.flash_attn_varlen_func(q, q, q, torch.tensor([0, 3, 5], dtype=torch.int32), cu, 3, 3)
    with pytest.raises(ValueError, match="unknown attention backend"):
        fa.install("triton")


def test_install_puts_adapter_and_blocks_fa3():
    mod = fa.install("cudnn")
    assert sys.modules["flash_attn"] is mod is fa.adapter_module()
    assert sys.modules["flash_attn_interface"] is None
    with pytest.raises(ModuleNotFoundError):
        import flash_attn_interface  # noqa: F401
    import flash_attn

    assert flash_attn.flash_attn_varlen_func is fa.flash_attn_varlen_func
    assert fa.installed_backend() == "cudnn" and "CUDNN_ATTENTION" in fa.describe()
    assert "NOT flash_attn" in fa.describe() and "NOT FlashAttention" in (fa.__doc__ or "")
    assert importlib.util.find_spec("flash_attn") is not None  # availability probes must not crash
    fa.install("flash")
    assert fa.installed_backend() == "flash" and "FLASH_ATTENTION" in fa.describe()


def test_stub_list_names_each_module_and_reason():
    assert set(oi.STUBBED_MODULES) == {"wan.animate", "wan.speech2video"}
    assert set(oi.STUBBED_IF_MISSING) == {"torchvision"}
    for reason in (*oi.STUBBED_MODULES.values(), *oi.STUBBED_IF_MISSING.values(), *oi.CPU_SHIMS.values()):
        assert reason and "\n" not in reason
    placeholder = oi._placeholder_class("WanAnimate", "wan.animate")
    with pytest.raises(RuntimeError, match="stubbed module 'wan.animate'"):
        placeholder()


def test_tiny_overrides_follow_the_preset():
    from wan_enhanced.models.presets import TI2V_5B, TINY

    assert otiny.config_overrides_for(TI2V_5B) == {}
    over = otiny.config_overrides_for(TINY)
    assert over["dim"] == 48 and over["num_heads"] == 2 and over["text_len"] == TINY.text_len
    assert otiny._t5_dims(TINY)["dim_attn"] == TINY.t5["num_heads"] * TINY.t5["d_kv"]


def test_step_timer_with_a_fake_model_and_solver():
    """Two forwards then one solver step, three times: three steps, two forwards each, contiguous."""
    clock = ot.StageClock(torch.device("cpu"))
    timer = ot.StepTimer(clock)
    model = torch.nn.Linear(2, 2)
    hook = model.register_forward_pre_hook(timer.pre_forward)

    class Solver:
        calls = 0

        def step(self, x):
            type(self).calls += 1
            return x * 0.5

    with ot.timed_solver_steps([Solver], timer):
        x = torch.ones(1, 2)
        for _ in range(3):
            model(x)
            model(x)
            x = Solver().step(x)
    assert "step" not in vars(Solver) or Solver.step.__name__ == "step"
    assert not hasattr(Solver.step, "__wrapped__")  # restored
    hook.remove()
    timer.close()
    steps = [s for s in clock.stages if st.is_step(s["name"])]
    assert [s["name"] for s in steps] == ["Step_0", "Step_1", "Step_2"]
    assert timer.forwards == [2, 2, 2] and all(s["parent"] == st.DENOISING.name for s in steps)
    assert steps[1]["start_s"] == steps[0]["end_s"] and steps[2]["start_s"] == steps[1]["end_s"]
    assert Solver.calls == 3


# --------------------------------------------------------------------------- tiny end-to-end on CPU


def _tiny_checkpoint(out: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from wan_enhanced.models.official import write_official_checkpoint
    from wan_enhanced.models.presets import TINY
    from wan_enhanced.models.random_init import random_dit, random_t5, random_vae

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "cat": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    write_official_checkpoint(out, random_dit(TINY, cpu), random_t5(TINY, cpu), random_vae(TINY, cpu),
                              tokenizer=tokenizer, text_len=TINY.text_len)
    return out


_CHILD = r"""
import json, sys
import torch
from wan_enhanced.peers import flash_attn_adapter as fa
from wan_enhanced.peers.official_wan import run_official

calls = []
inner = fa.flash_attn_varlen_func
def counting(*a, **k):
    calls.append(1)
    return inner(*a, **k)
fa.adapter_module().flash_attn_varlen_func = counting
r = run_official(sys.argv[1], size=(64, 64), frame_num=9, sample_steps=3, offload_model=True,
                 convert_model_dtype=True, t5_cpu=True, attention="math", device="cpu", task="tiny",
                 prompt="a cat", save_file=sys.argv[2])
r["adapter_calls"] = len(calls)
print("RESULT" + json.dumps(r, default=str))
"""


@pytest.mark.slow
def test_tiny_official_run_on_cpu(tmp_path):
    if importlib.util.find_spec("wan") is None:  # not importorskip: importing wan here would need the shims
        pytest.skip("the official wan22 package is not installed")
    ckpt = _tiny_checkpoint(tmp_path / "ckpt")
    # its own process: the run installs flash_attn / stub modules into sys.modules
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(ckpt), str(tmp_path / "out.mp4")], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    r = json.loads(line[len("RESULT"):])
    assert r["peer"] == "official wan22 2.2.11" and r["package"] == "wan22 2.2.11"
    names = [s["name"] for s in r["stages"]]
    for name in ("Total", "Load_Text_Encoder", "Load_VAE", "Load_DiT", "Text_Encoding", "Denoising",
                 "Step_0", "Step_1", "Step_2", "VAE_Decoding"):
        assert name in names, names
    assert "Save_Video" not in names and any("Save_Video skipped" in n for n in r["notes"])
    by = {s["name"]: s for s in r["stages"]}
    assert by["Text_Encoding"]["comment"] == "T5 on CPU" and by["Text_Encoding"]["calls"] == 2
    assert all(by[f"Step_{i}"]["parent"] == "Denoising" for i in range(3))
    assert len(r["steps_s"]) == 3 and r["forwards_per_step"] == [2, 2, 2]
    assert math.isclose(sum(r["steps_s"]), by["Denoising"]["duration_s"], rel_tol=1e-6, abs_tol=1e-6)
    assert r["output_shape"] == [3, 9, 64, 64]
    assert r["flags"]["offload_model"] is False and r["flags"]["requested"]["offload_model"] is True
    assert set(r["stubs"]) >= {"wan.animate", "wan.speech2video"}
    assert set(r["cpu_shims"]) <= set(oi.CPU_SHIMS) and "wan.modules.model.flash_attention" in r["cpu_shims"]
    # 2 layers x (self + cross) x 2 forwards x 3 steps went through our adapter
    assert r["adapter_calls"] == 2 * 2 * 2 * 3
    top = [s for s in r["stages"] if s["parent"] == "Total"]
    assert sum(s["duration_s"] for s in top) <= by["Total"]["duration_s"] + 1e-6
    assert "MATH" in r["adapter"]
