"""Issue 17 lever 4: the self-attention's q/k RMSNorm + RoPE as one pass (``--fused_qk_rope``).

On the CPU the fused processor computes diffusers' own code (``reference``), so a run with it is diffusers' run bit
for bit; the Triton op itself is checked where Triton is installed (its CPU interpreter, or a GPU: ``-m gpu``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wan_enhanced import qk_norm_rope as qk
from wan_enhanced.config import RunConfig, validate
from wan_enhanced.fastpath import FastPath
from wan_enhanced.models.presets import get_preset
from wan_enhanced.models.random_init import random_dit
from wan_enhanced.run import run_generation

ROOT = Path(__file__).resolve().parents[1]


def test_the_fused_processor_goes_on_every_self_attention_only():
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    dit = random_dit(get_preset("tiny"), torch.device("cpu"))
    assert qk.install(dit) == len(dit.blocks)
    cls = qk.processor_class()
    assert all(type(b.attn1.processor) is cls for b in dit.blocks)
    assert all(type(b.attn2.processor) is WanAttnProcessor for b in dit.blocks)


def test_a_run_with_the_fused_processor_is_diffusers_run_bit_for_bit_on_the_cpu():
    out = {}
    for mode in ("off", "on"):
        cfg = validate(RunConfig(task="tiny", device="cpu", fused_qk_rope=mode, sample_steps=3), cuda_available=False)
        res = run_generation(cfg, progress=False, monitor_enabled=False)
        fast = res.report["run"]["fast_path"]
        assert res.status == "ok" and fast["fused_qk_rope"] == mode
        assert fast["fused_qk_rope_note"] == ("" if mode == "off" else "the Triton op cannot run here (needs a CUDA "
                                              "GPU and Triton): the fused processor computes diffusers' own arithmetic")
        out[mode] = res.result.latents
    assert torch.equal(out["off"], out["on"])


def test_the_reference_is_diffusers_norm_and_rope():
    """``reference`` = RMSNorm over the row, heads split, diffusers' interleaved RoPE (checked against torch ops)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 5, 8, generator=g).bfloat16()
    norm = torch.nn.RMSNorm(8, eps=1e-6).bfloat16()
    cos, sin = torch.randn(1, 5, 1, 4, generator=g), torch.randn(1, 5, 1, 4, generator=g)
    got = qk.reference(x, norm, 2, cos, sin)
    y = norm(x).unflatten(2, (2, 4)).float()
    c, s = cos[..., 0::2], sin[..., 1::2]
    want = torch.stack([y[..., 0::2] * c - y[..., 1::2] * s, y[..., 0::2] * s + y[..., 1::2] * c], -1).flatten(-2)
    assert got.shape == (1, 5, 2, 4) and torch.equal(got, want.bfloat16())


def test_fused_qk_rope_auto_is_on_with_a_gpu_and_triton_and_bad_values_are_one_line(monkeypatch):
    from wan_enhanced import fastpath

    cuda = torch.device("cuda")
    for found, want in ((True, "on"), (False, "off")):
        monkeypatch.setattr(fastpath, "triton_installed", lambda found=found: found)
        assert FastPath().resolve(cuda).fused_qk_rope == want
    monkeypatch.setattr(fastpath, "triton_installed", lambda: True)
    assert FastPath().resolve(torch.device("cpu")).fused_qk_rope == "off"
    assert FastPath().resolve(cuda, context_parallel=True).fused_qk_rope == "off"  # not measured under Ulysses
    assert FastPath(fused_qk_rope="on").resolve(torch.device("cpu")).fused_qk_rope == "on"
    for args, msg in ((["--fused_qk_rope", "yes"], "error: --fused_qk_rope: 'yes' is not allowed; allowed: auto, off, on"),
                      (["--fused_qk_rope", "on", "--ulysses_size", "2"],
                       "error: --fused_qk_rope on with --ulysses_size > 1 is not supported (not measured under "
                       "Ulysses); allowed with Ulysses: auto, off")):
        r = subprocess.run([sys.executable, str(ROOT / "generate.py"), "--task", "tiny", *args],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stderr.strip() == msg, r.stderr


def test_the_triton_pass_equals_the_reference_in_tritons_interpreter():
    pytest.importorskip("triton")
    r = subprocess.run([sys.executable, str(ROOT / "benchmark" / "fused_qk_rope.py"), "--check_only", "--tokens", "8"],
                       capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT / "src")))
    assert r.returncode == 0, r.stderr[-2000:]
    assert '"max_abs": 0.0' in r.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_triton_op_on_the_gpu_eager_and_inside_compiled_blocks():
    """The op agrees with the reference to one bf16 step, and a compiled tiny DiT with it stays within rounding."""
    dev = torch.device("cuda")
    g = torch.Generator("cpu").manual_seed(0)
    x = torch.randn(1, 300, 256, generator=g).to(dev, torch.bfloat16)
    norm = torch.nn.RMSNorm(256, eps=1e-6).to(dev, torch.bfloat16)
    ang = torch.randn(1, 300, 1, 64, generator=g).to(dev)
    assert qk.usable(x, norm, 4, ang.cos(), qk.triton_rms_rope())
    assert not qk.usable(x, norm, 4, ang.cos()[:, :10], qk.triton_rms_rope())  # another sequence: the reference
    got, ref = qk.rms_rope(x, norm, 4, ang.cos(), ang.sin()), qk.reference(x, norm, 4, ang.cos(), ang.sin())
    assert (got.float() - ref.float()).abs().max().item() <= 2 ** -6 * ref.float().abs().max().item()
    from torch.profiler import ProfilerActivity, profile

    outs = {}
    for mode in ("off", "on"):
        cfg = validate(RunConfig(task="tiny", device="cuda", fused_qk_rope=mode, compile="blocks", sample_steps=2))
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            res = run_generation(cfg, progress=False, monitor_enabled=False)
        assert res.status == "ok", res.message
        ran = any("rms_rope" in ev.name for ev in prof.events())
        assert ran == (mode == "on")  # the op ran inside the compiled blocks, and only when asked for
        if mode == "on":
            assert res.report["run"]["fast_path"]["fused_qk_rope_note"] == "the Triton op runs in the self-attention"
        outs[mode] = res.result.latents.float()
    rel = ((outs["on"] - outs["off"]).norm() / outs["off"].norm()).item()
    assert rel < 2e-2, rel


def test_a_compiled_graph_holding_the_op_passes_aot_autograds_cache_check():
    """The op keeps AOT autograd's cache usable (the check that refused diffusers' sdpa_kernel helpers)."""
    pytest.importorskip("triton")
    from torch._functorch._aot_autograd.autograd_cache import check_cacheable

    op = qk.triton_rms_rope()
    norm = torch.nn.RMSNorm(64, eps=1e-6).to(torch.bfloat16)
    graphs = []

    def capture(gm, example_inputs):  # Dynamo's graph, before AOT autograd: what its cache check reads
        graphs.append(gm)
        return lambda *args: [torch.zeros(1)]

    ang = torch.randn(1, 8, 1, 16)
    torch._dynamo.reset()
    try:
        torch.compile(lambda x, c, s: op(x, norm.weight, c, s, 1e-6, 16) * 2, backend=capture, fullgraph=True)(
            torch.randn(1, 8, 64).bfloat16(), ang.cos(), ang.sin())
    finally:
        torch._dynamo.reset()
    (gm,) = graphs
    assert torch.ops.wan_enhanced.rms_rope.default in [n.target for n in gm.graph.nodes]
    check_cacheable(gm)  # raises BypassAOTAutogradCache for a graph the cache refuses
