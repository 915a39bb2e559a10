"""Regional torch.compile (the fast path's default on GPUs) computes the same function as eager bf16:
on the tiny preset, on CPU, the compiled bf16 DiT is no farther from an fp32 forward of the same
weights than eager bf16 is (the two differ by bf16 rounding only)."""

from __future__ import annotations

import copy

import torch

from wan_enhanced.models.presets import TINY
from wan_enhanced.models.random_init import random_dit


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_compiled_bf16_is_as_close_to_fp32_as_eager_bf16():
    dit = random_dit(TINY, torch.device("cpu"), seed=3)
    ref = copy.deepcopy(dit).float()
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(1, 8, 3, 8, 8, generator=g), torch.randn(1, 32, 32, generator=g)
    t = torch.tensor([999.0])
    with torch.no_grad():
        r = ref(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0].float()
        kw = dict(hidden_states=x.bfloat16(), timestep=t, encoder_hidden_states=ctx.bfloat16(), return_dict=False)
        eager = dit(**kw)[0].float()
        dit.compile_repeated_blocks(fullgraph=True)
        compiled = dit(**kw)[0].float()
    e, c = _rel(eager, r), _rel(compiled, r)
    print(f"rel L2 vs fp32: eager bf16 {e:.4f}, compiled bf16 {c:.4f}; compiled vs eager {_rel(compiled, eager):.4f}")
    assert 0 < e < 0.02
    assert c <= 1.5 * e
