"""Architecture presets: the real Wan2.2 TI2V-5B and a tiny model of the same classes.

Each preset gives the constructor arguments of diffusers' ``WanTransformer3DModel`` and
``AutoencoderKLWan`` and of transformers' ``UMT5Config``, plus the task defaults (sizes, frames,
steps) that ``config.py`` validates against. Facts for the 5B come from the official config
(Wan-Video/Wan2.2 ``wan/configs/wan_ti2v_5B.py``), see ``../shared/docs/baseline.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Wan2.2 VAE latent statistics (48 channels), from the official ``Wan2_2_VAE``.
WAN22_LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.157, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.123, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.052, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]  # fmt: skip
WAN22_LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.499, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.06, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]  # fmt: skip

# The official default negative prompt of Wan2.2 (wan/configs/shared_config.py).
OFFICIAL_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


@dataclass(frozen=True)
class ModelPreset:
    """Everything that defines one task: model architectures and generation defaults."""

    name: str
    dit: dict[str, Any]
    vae: dict[str, Any]
    t5: dict[str, Any]
    text_len: int
    sizes: tuple[str, ...]
    default_size: str
    default_frame_num: int
    default_steps: int
    default_shift: float = 5.0
    default_guide_scale: float = 5.0
    fps: int = 24
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_heads(self) -> int:
        """Attention heads of the DiT (what Ulysses splits)."""
        return int(self.dit["num_attention_heads"])

    @property
    def vae_stride(self) -> tuple[int, int, int]:
        """(time, height, width) downsampling of the VAE."""
        return (int(self.vae["scale_factor_temporal"]), int(self.vae["scale_factor_spatial"]),
                int(self.vae["scale_factor_spatial"]))

    @property
    def patch_size(self) -> tuple[int, int, int]:
        """DiT patch size (t, h, w)."""
        return tuple(self.dit["patch_size"])  # type: ignore[return-value]


TI2V_5B = ModelPreset(
    name="ti2v-5B",
    dit=dict(
        patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128, in_channels=48,
        out_channels=48, text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None,
        added_kv_proj_dim=None, rope_max_seq_len=1024, pos_embed_seq_len=None,
    ),
    vae=dict(
        base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
        attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0, is_residual=True,
        in_channels=12, out_channels=12, patch_size=2, scale_factor_temporal=4, scale_factor_spatial=16,
        latents_mean=WAN22_LATENTS_MEAN, latents_std=WAN22_LATENTS_STD,
    ),
    t5=dict(
        vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, tie_word_embeddings=False,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ),
    text_len=512,
    sizes=("1280*704", "704*1280"),
    default_size="1280*704",
    default_frame_num=121,
    default_steps=50,
    notes="Wan2.2 TI2V-5B: DiT 5.0B params, Wan2.2 VAE 0.7B, umt5-xxl encoder 5.7B",
)

TINY = ModelPreset(
    name="tiny",
    dit=dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=24, in_channels=8,
        out_channels=8, text_dim=32, freq_dim=16, ffn_dim=64, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None,
        added_kv_proj_dim=None, rope_max_seq_len=1024, pos_embed_seq_len=None,
    ),
    vae=dict(
        base_dim=8, decoder_base_dim=8, z_dim=8, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
        attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0, is_residual=True,
        in_channels=12, out_channels=12, patch_size=2, scale_factor_temporal=4, scale_factor_spatial=16,
        latents_mean=WAN22_LATENTS_MEAN[:8], latents_std=WAN22_LATENTS_STD[:8],
    ),
    t5=dict(
        vocab_size=512, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, tie_word_embeddings=False,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ),
    text_len=32,
    sizes=("64*64", "96*64", "64*96", "128*64"),
    default_size="64*64",
    default_frame_num=9,
    default_steps=4,
    notes="tiny preset: the TI2V-5B classes with small dims, for CPU tests and CI",
)

PRESETS: dict[str, ModelPreset] = {p.name: p for p in (TI2V_5B, TINY)}


def get_preset(task: str) -> ModelPreset:
    """Return the preset for ``task`` or raise ``KeyError`` naming the allowed tasks."""
    try:
        return PRESETS[task]
    except KeyError:
        raise KeyError(f"unknown task {task!r}; allowed: {', '.join(PRESETS)}") from None
