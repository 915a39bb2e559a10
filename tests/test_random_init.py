"""Random-weight models: the CPU text encoder is drawn in parallel but is the same architecture."""

from __future__ import annotations

import torch
from transformers import UMT5Config, UMT5EncoderModel

from wan_enhanced.models.presets import get_preset
from wan_enhanced.models.random_init import fill_random_, random_t5

TINY = get_preset("tiny")


def test_cpu_t5_has_the_architecture_of_transformers_own_build():
    ours = random_t5(TINY, torch.device("cpu"))
    ref = UMT5EncoderModel(UMT5Config(**TINY.t5, is_encoder_decoder=False))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    assert ours.shared.weight is ours.encoder.embed_tokens.weight  # tied, as in the real model
    assert all(p.dtype == torch.bfloat16 and not p.is_meta for p in ours.parameters())


def test_cpu_t5_weights_are_seeded_scaled_and_independent_of_threads():
    a = random_t5(TINY, torch.device("cpu"), seed=3)
    b = random_t5(TINY, torch.device("cpu"), seed=3)
    c = random_t5(TINY, torch.device("cpu"), seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.shared.weight, c.shared.weight)
    one_thread = random_t5(TINY, torch.device("cpu"), seed=3)
    fill_random_(one_thread, seed=3, threads=1)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), one_thread.parameters(), strict=True))
    # many chunks per tensor (as for the 5B embedding): the thread count still does not change the values
    small_one, small_many = (random_t5(TINY, torch.device("cpu"), seed=3) for _ in range(2))
    assert small_one.shared.weight.numel() > 10 * 1000
    fill_random_(small_one, seed=3, threads=1, chunk=1000)
    fill_random_(small_many, seed=3, threads=8, chunk=1000)
    assert all(torch.equal(x, y) for x, y in zip(small_one.parameters(), small_many.parameters(), strict=True))
    emb = small_one.shared.weight.float().view(-1)
    assert not torch.equal(emb[:1000], emb[1000:2000])  # each chunk has its own stream
    q = a.encoder.block[0].layer[0].SelfAttention.q.weight.float()
    assert abs(q.std().item() - q.shape[-1] ** -0.5) < 0.2 * q.shape[-1] ** -0.5  # N(0, 1/fan_in)
    assert torch.equal(a.encoder.final_layer_norm.weight, torch.ones_like(a.encoder.final_layer_norm.weight))
    ids = torch.randint(3, 200, (1, 16))
    with torch.no_grad():
        h = a(ids, torch.ones_like(ids)).last_hidden_state
    assert torch.isfinite(h).all() and h.float().std() > 0.1
