"""Tiny-preset architecture overrides for :mod:`.official_wan` (nothing is overridden for ``ti2v-5B``).

The official constructors hardcode the 5B architecture of the T5 (``umt5_xxl``) and the VAE
(``Wan2_2_VAE``: 48 latent channels, base 160, decoder 256), and the checkpoint's ``config.json`` has no
``text_dim``. For a preset other than ``ti2v-5B`` the driver passes the preset's dimensions to those
constructors (``umt5_xxl(**dims)``, ``_video_vae(**dims)``, ``WanModel.from_pretrained(text_dim=...)``) and
truncates the VAE's latent mean/std to the preset's channels; for ``ti2v-5B`` nothing is overridden.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..models.presets import TI2V_5B, ModelPreset
from .official_timing import patched, stacked


def config_overrides_for(preset: ModelPreset) -> dict[str, Any]:
    """The official config's fields that differ for ``preset`` (empty for ti2v-5B)."""
    if preset.name == TI2V_5B.name:
        return {}
    dit = preset.dit
    return {"text_len": preset.text_len, "dim": dit["num_attention_heads"] * dit["attention_head_dim"],
            "ffn_dim": dit["ffn_dim"], "freq_dim": dit["freq_dim"], "num_heads": dit["num_attention_heads"],
            "num_layers": dit["num_layers"], "patch_size": tuple(dit["patch_size"]), "vae_stride": preset.vae_stride,
            "sample_steps": preset.default_steps, "frame_num": preset.default_frame_num}


def _t5_dims(preset: ModelPreset) -> dict[str, Any]:
    t5 = preset.t5
    return {"vocab_size": t5["vocab_size"], "dim": t5["d_model"], "dim_attn": t5["num_heads"] * t5["d_kv"],
            "dim_ffn": t5["d_ff"], "num_heads": t5["num_heads"], "encoder_layers": t5["num_layers"],
            "num_buckets": t5["relative_attention_num_buckets"]}


def _vae_dims(preset: ModelPreset) -> dict[str, Any]:
    vae = preset.vae
    return {"dec_dim": vae["decoder_base_dim"], "num_res_blocks": vae["num_res_blocks"]}


@contextmanager
def architecture_overrides(wan: types.ModuleType, preset: ModelPreset) -> Iterator[list[str]]:
    """For a non-5B preset, pass its dimensions to the official constructors that hardcode the 5B's."""
    notes: list[str] = []
    if preset.name == TI2V_5B.name:
        yield notes
        return
    t5_mod = sys.modules["wan.modules.t5"]
    vae_mod = sys.modules["wan.modules.vae2_2"]
    t5_dims, vae_dims = _t5_dims(preset), _vae_dims(preset)
    orig_umt5, orig_video_vae = t5_mod.umt5_xxl, vae_mod._video_vae
    with stacked([patched(t5_mod, "umt5_xxl", lambda **kw: orig_umt5(**{**kw, **t5_dims})),
                 patched(vae_mod, "_video_vae", lambda **kw: orig_video_vae(**{**kw, **vae_dims}))]):
        notes.append(f"preset {preset.name!r}: official umt5_xxl built with {t5_dims}, _video_vae with "
                     f"{vae_dims}, Wan2_2_VAE with the preset's z_dim/base_dim/dim_mult, DiT text_dim="
                     f"{preset.dit['text_dim']}")
        yield notes


def vae_constructor_kwargs(preset: ModelPreset) -> dict[str, Any]:
    if preset.name == TI2V_5B.name:
        return {}
    vae = preset.vae
    return {"z_dim": vae["z_dim"], "c_dim": vae["base_dim"], "dim_mult": list(vae["dim_mult"]),
            "temperal_downsample": list(vae["temperal_downsample"])}


__all__ = ["architecture_overrides", "config_overrides_for", "vae_constructor_kwargs"]
