"""Key mappings official Wan2.2 ↔ diffusers/transformers, checked key by key on the meta device.

The fixture lists every key and shape of the official TI2V-5B state dicts (read from Wan-Video/Wan2.2
at commit 42bf4cf); the target models are built from our presets on ``torch.device("meta")``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from wan_enhanced.models.official_keys import (
    T5_TIED_KEYS,
    dit_diffusers_to_official,
    dit_key_to_official,
    dit_official_to_diffusers,
    t5_hf_to_official,
    t5_official_to_hf,
    vae_diffusers_to_official,
    vae_official_to_diffusers,
)
from wan_enhanced.models.presets import TI2V_5B, TINY, ModelPreset

FIXTURE = Path(__file__).parent / "fixtures" / "official_ti2v5b_keys.json"


@pytest.fixture(scope="module")
def official() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def _meta_models(preset: ModelPreset) -> dict[str, torch.nn.Module]:
    with torch.device("meta"):
        return {
            "dit": WanTransformer3DModel(**preset.dit),
            "t5": UMT5EncoderModel(UMT5Config(**preset.t5, is_encoder_decoder=False)),
            "vae": AutoencoderKLWan(**preset.vae),
        }


@pytest.fixture(scope="module")
def meta_5b() -> dict[str, torch.nn.Module]:
    return _meta_models(TI2V_5B)


@pytest.fixture(scope="module")
def meta_tiny() -> dict[str, torch.nn.Module]:
    return _meta_models(TINY)


def _check_bijection(official_shapes: dict[str, list[int]], mapping: dict[str, str], model: torch.nn.Module,
                     aliases: dict[str, str]) -> None:
    """Every official key mapped once, onto an existing tensor of the same shape; every tensor filled."""
    state = model.state_dict()
    assert set(mapping) == set(official_shapes), "mapping must cover exactly the official keys"
    targets = list(mapping.values())
    assert len(set(targets)) == len(targets), "two official keys land on one target"
    for key, shape in official_shapes.items():
        target = mapping[key]
        assert target in state, f"{key} -> {target}: no such tensor in the model"
        assert list(state[target].shape) == list(shape), f"{key} -> {target}: shape"
    persistent = set(state) - set(aliases)
    assert set(targets) == persistent, f"unfilled: {sorted(persistent - set(targets))[:5]}"
    # every parameter (deduplicated by identity) is filled; aliases are tied to a filled key
    assert len(list(model.parameters())) == len(targets)
    for alias, source in aliases.items():
        assert model.get_parameter(alias) is model.get_parameter(source)


def test_fixture_counts(official: dict) -> None:
    assert (len(official["dit"]), len(official["t5"]), len(official["vae"])) == (825, 242, 196)
    numel = {m: sum(torch.Size(s).numel() for s in official[m].values()) for m in ("dit", "t5", "vae")}
    assert numel == {"dit": 4_999_787_712, "t5": 5_680_910_336, "vae": 704_688_668}


def test_dit_5b_official_keys_map_completely(official: dict, meta_5b: dict) -> None:
    mapping = dit_official_to_diffusers(official["dit"])
    _check_bijection(official["dit"], mapping, meta_5b["dit"], {})


def test_dit_inverse_is_exact(official: dict, meta_5b: dict) -> None:
    model_keys = list(meta_5b["dit"].state_dict())
    inverse = dit_diffusers_to_official(model_keys)
    assert set(inverse.values()) == set(official["dit"])
    forward = dit_official_to_diffusers(official["dit"])
    assert {v: k for k, v in forward.items()} == inverse  # converter ∘ our inverse = identity
    assert dit_key_to_official("blocks.3.norm2.bias") == "blocks.3.norm3.bias"
    assert dit_key_to_official("scale_shift_table") == "head.modulation"
    assert dit_key_to_official("blocks.0.scale_shift_table") == "blocks.0.modulation"


def test_t5_5b_official_keys_map_completely(official: dict, meta_5b: dict) -> None:
    mapping = t5_official_to_hf(TI2V_5B.t5)
    _check_bijection(official["t5"], mapping, meta_5b["t5"], T5_TIED_KEYS)
    assert mapping["blocks.0.ffn.gate.0.weight"].endswith("DenseReluDense.wi_0.weight")  # gelu branch
    assert mapping["blocks.0.ffn.fc1.weight"].endswith("DenseReluDense.wi_1.weight")  # linear branch


def test_vae_5b_official_keys_map_completely(official: dict, meta_5b: dict) -> None:
    mapping = vae_official_to_diffusers(TI2V_5B.vae)
    _check_bijection(official["vae"], mapping, meta_5b["vae"], {})


def test_vae_latent_stats_match_preset(official: dict) -> None:
    assert official["vae_latents_mean"] == TI2V_5B.vae["latents_mean"]
    assert official["vae_latents_std"] == TI2V_5B.vae["latents_std"]
    assert len(TI2V_5B.vae["latents_mean"]) == TI2V_5B.vae["z_dim"] == 48


@pytest.mark.parametrize("which", ["dit", "t5", "vae"])
def test_tiny_mappings_are_bijections(meta_tiny: dict, which: str) -> None:
    """The config-generated mappings also fit the tiny preset (other depths, widths, block counts)."""
    model = meta_tiny[which]
    keys = list(model.state_dict())
    if which == "dit":
        inverse = dit_diffusers_to_official(keys)
        forward = dit_official_to_diffusers(inverse.values())
        aliases: dict[str, str] = {}
    elif which == "t5":
        forward, inverse, aliases = t5_official_to_hf(TINY.t5), t5_hf_to_official(TINY.t5), T5_TIED_KEYS
    else:
        forward, inverse, aliases = vae_official_to_diffusers(TINY.vae), vae_diffusers_to_official(TINY.vae), {}
    shapes = {inverse[k]: list(v.shape) for k, v in model.state_dict().items() if k not in aliases}
    _check_bijection(shapes, forward, model, aliases)
    assert {v: k for k, v in forward.items()} == inverse


def test_vae_mapping_rejects_other_layouts() -> None:
    with pytest.raises(ValueError, match="is_residual"):
        vae_official_to_diffusers({**TINY.vae, "is_residual": False})
    with pytest.raises(ValueError, match="attn_scales"):
        vae_official_to_diffusers({**TINY.vae, "attn_scales": [0.5]})


def test_dit_foreign_families_left_unmapped() -> None:
    mapping = dit_official_to_diffusers(["blocks.0.self_attn.q.weight", "face_adapter.fuser_blocks.0.x.weight"])
    assert mapping == {"blocks.0.self_attn.q.weight": "blocks.0.attn1.to_q.weight"}
