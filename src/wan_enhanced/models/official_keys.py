"""Key mappings between the official Wan2.2 checkpoints and the diffusers/transformers classes.

Pure functions, no IO. Three state dicts are involved:

* **DiT** — official ``WanModel`` (``diffusion_pytorch_model-*.safetensors``) ↔ diffusers
  ``WanTransformer3DModel``. Official → diffusers reuses the converter shipped in the diffusers wheel
  (``convert_wan_transformer_to_diffusers``); the inverse is our own and the tests check that both
  compose to the identity on every key of the TI2V-5B.
* **T5** — official Wan ``T5Encoder`` (``models_t5_umt5-xxl-enc-bf16.pth``) ↔ transformers
  ``UMT5EncoderModel``. Generated from the config (number of layers).
* **VAE** — official Wan2.2 ``WanVAE_`` (``Wan2.2_VAE.pth``) ↔ diffusers ``AutoencoderKLWan`` with
  ``is_residual=True``. Generated from the config (dims, blocks, temporal down/up-sampling).

Every mapping is one-to-one and shape-preserving: no tensor needs a reshape, split or transpose for
these three models (the official ``RMS_norm.gamma`` shapes ``(C, 1, 1, 1)`` / ``(C, 1, 1)`` are the
diffusers shapes too). The only asymmetry is transformers' tied embedding: the official
``token_embedding.weight`` fills ``shared.weight``, and ``encoder.embed_tokens.weight`` is the same
parameter (see :data:`T5_TIED_KEYS`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

# transformers' UMT5EncoderModel ties ``encoder.embed_tokens.weight`` to ``shared.weight``: both appear
# in ``state_dict()`` but are one parameter, filled from the single official ``token_embedding.weight``.
T5_TIED_KEYS: dict[str, str] = {"encoder.embed_tokens.weight": "shared.weight"}

# Official DiT key families that the wheel's converter treats specially (tensor splits/reshapes); they
# belong to Wan-Animate, not to the TI2V model, so they are left unmapped (the loader reports them).
_DIT_FOREIGN_FAMILIES = ("face_adapter", "motion_encoder")


def _invert(mapping: Mapping[str, str]) -> dict[str, str]:
    inverse: dict[str, str] = {}
    for src, dst in mapping.items():
        if dst in inverse:
            raise ValueError(f"mapping is not one-to-one: {inverse[dst]!r} and {src!r} both map to {dst!r}")
        inverse[dst] = src
    return inverse


# --------------------------------------------------------------------------------------------- DiT


def dit_official_to_diffusers(official_keys: Iterable[str]) -> dict[str, str]:
    """Map official DiT keys to ``WanTransformer3DModel`` keys with the diffusers wheel's converter.

    The converter renames whole state dicts; it is run on ``{key: key}`` placeholders so that no tensor
    is touched. Keys of Wan-Animate families (face adapter, motion encoder) are left out of the result.
    Raises ``ValueError`` if two official keys would land on the same diffusers key.
    """
    keys = [k for k in dict.fromkeys(official_keys) if not any(f in k for f in _DIT_FOREIGN_FAMILIES)]
    converted = convert_wan_transformer_to_diffusers({k: k for k in keys})
    if len(converted) != len(keys):  # two keys collapsed onto one target
        seen: dict[str, str] = {}
        for k in keys:
            target = next(iter(convert_wan_transformer_to_diffusers({k: k})))
            if target in seen:
                raise ValueError(f"official DiT keys {seen[target]!r} and {k!r} both map to {target!r}")
            seen[target] = k
    return {str(official): str(diffusers) for diffusers, official in converted.items()}


# Inverse of the converter's renames, applied in this order to one diffusers key. Substring renames
# with the dots included, so that e.g. ``.to_q.`` never matches inside another name.
_DIT_INVERSE_RENAMES: tuple[tuple[str, str], ...] = (
    ("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
    ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
    ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
    ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
    ("condition_embedder.time_proj.", "time_projection.1."),
    (".attn1.", ".self_attn."),
    (".attn2.", ".cross_attn."),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".add_k_proj.", ".k_img."),
    (".add_v_proj.", ".v_img."),
    (".norm_added_k.", ".norm_k_img."),
    (".ffn.net.0.proj.", ".ffn.0."),
    (".ffn.net.2.", ".ffn.2."),
)


def dit_key_to_official(key: str) -> str:
    """Official name of one ``WanTransformer3DModel`` state-dict key (inverse of the wheel's rename)."""
    if key.startswith("proj_out."):
        return "head.head." + key[len("proj_out."):]
    if key == "scale_shift_table":
        return "head.modulation"
    out = key
    if out.startswith("blocks.") and out.endswith(".scale_shift_table"):
        out = out[: -len("scale_shift_table")] + "modulation"
    for new, old in _DIT_INVERSE_RENAMES:
        out = out.replace(new, old)
    # diffusers' block norm2 (cross-attention input norm) is the official norm3, and vice versa.
    if out.startswith("blocks."):
        out = out.replace(".norm2.", ".norm__swap.").replace(".norm3.", ".norm2.").replace(".norm__swap.", ".norm3.")
    return out


def dit_diffusers_to_official(diffusers_keys: Iterable[str]) -> dict[str, str]:
    """Map ``WanTransformer3DModel`` keys to official DiT keys (our inverse of the wheel's converter).

    Raises ``ValueError`` if two diffusers keys would land on the same official key.
    """
    result: dict[str, str] = {}
    seen: dict[str, str] = {}
    for key in diffusers_keys:
        official = dit_key_to_official(key)
        if official in seen:
            raise ValueError(f"diffusers DiT keys {seen[official]!r} and {key!r} both map to {official!r}")
        seen[official] = key
        result[key] = official
    return result


# ---------------------------------------------------------------------------------------------- T5


def t5_official_to_hf(config: Mapping[str, Any]) -> dict[str, str]:
    """Official Wan ``T5Encoder`` key → transformers ``UMT5EncoderModel`` key, for ``config``'s layers.

    ``config`` is a ``UMT5Config`` as a mapping (``preset.t5`` or ``model.config.to_dict()``); only
    ``num_layers`` is used. UMT5 has a relative-position bias in every layer, as Wan's encoder
    (``shared_pos=False``) has a ``pos_embedding`` in every block. Wan's gated FFN computes
    ``fc1(x) * gelu(gate(x))``, transformers ``wi_1(x) * gelu(wi_0(x))``: ``gate.0`` is ``wi_0``.
    """
    mapping = {"token_embedding.weight": "shared.weight", "norm.weight": "encoder.final_layer_norm.weight"}
    for i in range(int(config["num_layers"])):
        src, dst = f"blocks.{i}.", f"encoder.block.{i}.layer."
        mapping.update({
            f"{src}norm1.weight": f"{dst}0.layer_norm.weight",
            f"{src}attn.q.weight": f"{dst}0.SelfAttention.q.weight",
            f"{src}attn.k.weight": f"{dst}0.SelfAttention.k.weight",
            f"{src}attn.v.weight": f"{dst}0.SelfAttention.v.weight",
            f"{src}attn.o.weight": f"{dst}0.SelfAttention.o.weight",
            f"{src}pos_embedding.embedding.weight": f"{dst}0.SelfAttention.relative_attention_bias.weight",
            f"{src}norm2.weight": f"{dst}1.layer_norm.weight",
            f"{src}ffn.gate.0.weight": f"{dst}1.DenseReluDense.wi_0.weight",
            f"{src}ffn.fc1.weight": f"{dst}1.DenseReluDense.wi_1.weight",
            f"{src}ffn.fc2.weight": f"{dst}1.DenseReluDense.wo.weight",
        })
    return mapping


def t5_hf_to_official(config: Mapping[str, Any]) -> dict[str, str]:
    """transformers ``UMT5EncoderModel`` key → official key (tied alias keys in :data:`T5_TIED_KEYS` excluded)."""
    return _invert(t5_official_to_hf(config))


# --------------------------------------------------------------------------------------------- VAE


def _vae_residual(mapping: dict[str, str], src: str, dst: str, shortcut: bool) -> None:
    mapping[f"{src}.residual.0.gamma"] = f"{dst}.norm1.gamma"
    mapping[f"{src}.residual.3.gamma"] = f"{dst}.norm2.gamma"
    for leaf in ("weight", "bias"):
        mapping[f"{src}.residual.2.{leaf}"] = f"{dst}.conv1.{leaf}"
        mapping[f"{src}.residual.6.{leaf}"] = f"{dst}.conv2.{leaf}"
        if shortcut:
            mapping[f"{src}.shortcut.{leaf}"] = f"{dst}.conv_shortcut.{leaf}"


def _vae_attention(mapping: dict[str, str], src: str, dst: str) -> None:
    mapping[f"{src}.norm.gamma"] = f"{dst}.norm.gamma"
    for leaf in ("weight", "bias"):
        mapping[f"{src}.to_qkv.{leaf}"] = f"{dst}.to_qkv.{leaf}"
        mapping[f"{src}.proj.{leaf}"] = f"{dst}.proj.{leaf}"


def _vae_resample(mapping: dict[str, str], src: str, dst: str, temporal: bool) -> None:
    for leaf in ("weight", "bias"):
        mapping[f"{src}.resample.1.{leaf}"] = f"{dst}.resample.1.{leaf}"
        if temporal:
            mapping[f"{src}.time_conv.{leaf}"] = f"{dst}.time_conv.{leaf}"


def _vae_conv(mapping: dict[str, str], src: str, dst: str) -> None:
    for leaf in ("weight", "bias"):
        mapping[f"{src}.{leaf}"] = f"{dst}.{leaf}"


def vae_official_to_diffusers(config: Mapping[str, Any]) -> dict[str, str]:
    """Official Wan2.2 VAE key → diffusers ``AutoencoderKLWan`` key, generated from ``config``.

    ``config`` holds ``AutoencoderKLWan``'s constructor arguments (``preset.vae`` or ``vae.config``):
    ``base_dim``, ``decoder_base_dim``, ``dim_mult``, ``num_res_blocks``, ``temperal_downsample``,
    ``is_residual`` (must be true: the Wan2.2 layout) and ``attn_scales`` (must be empty).

    Layout: official encoder stage ``i`` is ``encoder.downsamples.i.downsamples.j`` with ``j <
    num_res_blocks`` residual blocks followed (except in the last stage) by one resampler; the decoder
    stage has ``num_res_blocks + 1`` residual blocks then the resampler. A residual block has a 1×1×1
    shortcut conv only where its input and output widths differ; a resampler has a ``time_conv`` only
    where it also changes the frame count. ``middle.{0,1,2}`` are resnet, attention, resnet.
    """
    if not config.get("is_residual", False):
        raise ValueError("only the Wan2.2 VAE layout (is_residual=True) is supported")
    if list(config.get("attn_scales") or []):
        raise ValueError("attention inside VAE stages (attn_scales) is not supported by the Wan2.2 layout")
    base = int(config["base_dim"])
    dec_base = int(config.get("decoder_base_dim") or base)
    mult = [int(m) for m in config["dim_mult"]]
    n_res = int(config["num_res_blocks"])
    t_down = [bool(t) for t in config["temperal_downsample"]]
    t_up = t_down[::-1]
    last = len(mult) - 1
    m: dict[str, str] = {}

    _vae_conv(m, "encoder.conv1", "encoder.conv_in")
    dims = [base * u for u in [1, *mult]]
    for i in range(len(mult)):
        width = dims[i]
        for j in range(n_res):
            _vae_residual(m, f"encoder.downsamples.{i}.downsamples.{j}", f"encoder.down_blocks.{i}.resnets.{j}",
                          shortcut=width != dims[i + 1])
            width = dims[i + 1]
        if i != last:
            _vae_resample(m, f"encoder.downsamples.{i}.downsamples.{n_res}", f"encoder.down_blocks.{i}.downsampler",
                          temporal=t_down[i])
    for side in ("encoder", "decoder"):
        _vae_residual(m, f"{side}.middle.0", f"{side}.mid_block.resnets.0", shortcut=False)
        _vae_attention(m, f"{side}.middle.1", f"{side}.mid_block.attentions.0")
        _vae_residual(m, f"{side}.middle.2", f"{side}.mid_block.resnets.1", shortcut=False)
    m["encoder.head.0.gamma"] = "encoder.norm_out.gamma"
    _vae_conv(m, "encoder.head.2", "encoder.conv_out")

    _vae_conv(m, "conv1", "quant_conv")
    _vae_conv(m, "conv2", "post_quant_conv")

    _vae_conv(m, "decoder.conv1", "decoder.conv_in")
    dims = [dec_base * u for u in [mult[-1], *mult[::-1]]]
    for i in range(len(mult)):
        width = dims[i]
        for j in range(n_res + 1):
            _vae_residual(m, f"decoder.upsamples.{i}.upsamples.{j}", f"decoder.up_blocks.{i}.resnets.{j}",
                          shortcut=width != dims[i + 1])
            width = dims[i + 1]
        if i != last:
            _vae_resample(m, f"decoder.upsamples.{i}.upsamples.{n_res + 1}", f"decoder.up_blocks.{i}.upsampler",
                          temporal=t_up[i])
    m["decoder.head.0.gamma"] = "decoder.norm_out.gamma"
    _vae_conv(m, "decoder.head.2", "decoder.conv_out")
    return m


def vae_diffusers_to_official(config: Mapping[str, Any]) -> dict[str, str]:
    """diffusers ``AutoencoderKLWan`` key → official Wan2.2 VAE key (inverse of :func:`vae_official_to_diffusers`)."""
    return _invert(vae_official_to_diffusers(config))
