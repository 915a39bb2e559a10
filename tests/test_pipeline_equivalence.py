"""Our denoising loop equals diffusers' own Wan pipelines on the same tiny weights, embeddings and seed.

Tolerance: both run identical float32/bf16 CPU kernels in the same order, so we assert exact
equality of the final latents (atol = rtol = 0); a looser check would hide a changed step.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import WanImageToVideoPipeline, WanPipeline
from PIL import Image

from wan_enhanced.fastpath import FastPath
from wan_enhanced.pipeline import TI2VPipeline, make_scheduler


def _ours(cfg, fast=None):
    pipe = TI2VPipeline(cfg, progress=False, fast=fast)
    latents, ctx, ctx_null = pipe.denoised_latents()  # the pipeline's own stage order
    return pipe, ctx, ctx_null, latents


@pytest.mark.parametrize("solver,scalar_timestep", [("unipc", True), ("dpm++", True), ("unipc", False)])
def test_t2v_latents_equal_diffusers_wanpipeline(tiny_cfg, solver, scalar_timestep):
    """Also covers the fast path's scalar timestep: on CPU it is bit-identical to the per-token path."""
    cfg = tiny_cfg(sample_steps=4, sample_solver=solver, base_seed=7)
    pipe, ctx, ctx_null, ours = _ours(cfg, FastPath(scalar_timestep=scalar_timestep))
    ref = WanPipeline(tokenizer=None, text_encoder=None, vae=pipe.vae, transformer=pipe.dit,
                      scheduler=make_scheduler(solver, cfg.sample_shift), expand_timesteps=True)
    ref.set_progress_bar_config(disable=True)
    w, h = cfg.width_height
    theirs = ref(prompt_embeds=ctx, negative_prompt_embeds=ctx_null, height=h, width=w, num_frames=cfg.frame_num,
                 num_inference_steps=cfg.sample_steps, guidance_scale=cfg.sample_guide_scale,
                 generator=torch.Generator("cpu").manual_seed(cfg.base_seed), output_type="latent").frames
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=0.0, rtol=0.0)


def test_i2v_latents_equal_diffusers_i2v_pipeline(tiny_cfg, tiny_image):
    cfg = tiny_cfg(sample_steps=4, image=tiny_image, base_seed=3)
    pipe, ctx, ctx_null, ours = _ours(cfg)
    ref = WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=pipe.vae, transformer=pipe.dit,
                                  scheduler=make_scheduler("unipc", cfg.sample_shift), image_processor=None,
                                  image_encoder=None, expand_timesteps=True)
    ref.set_progress_bar_config(disable=True)
    w, h = cfg.width_height
    theirs = ref(image=Image.open(tiny_image).convert("RGB"), prompt_embeds=ctx, negative_prompt_embeds=ctx_null,
                 height=h, width=w, num_frames=cfg.frame_num, num_inference_steps=cfg.sample_steps,
                 guidance_scale=cfg.sample_guide_scale,
                 generator=torch.Generator("cpu").manual_seed(cfg.base_seed), output_type="latent").frames
    torch.testing.assert_close(ours, theirs, atol=0.0, rtol=0.0)
    # the first latent frame is the encoded image, untouched by denoising
    cond = pipe.encode_image(tiny_image)
    torch.testing.assert_close(ours[:, :, :1], cond, atol=0.0, rtol=0.0)


def test_t5_on_prompt_tokens_only_matches_the_padded_run(tiny_cfg):
    """The encoder runs on the prompt's tokens only; the official code runs all text_len padded positions.

    Padded keys are masked and UMT5's position bias depends only on distances, so in float32 the prompt's
    outputs agree with the padded run to rounding (~1e-6), and everything after the prompt is zero. In the
    pipeline's bf16 the two runs differ by bf16 rounding only (relative L2 ~0.5 % on the tiny preset).
    """
    cfg = tiny_cfg(prompt="a red fox")
    pipe = TI2VPipeline(cfg, progress=False)
    pipe.load_text_encoder()
    tok = pipe.tokenizer([cfg.prompt], padding="max_length", max_length=pipe.preset.text_len, truncation=True,
                         add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    n = int(tok.attention_mask.sum())
    assert 1 < n < pipe.preset.text_len  # the prompt is shorter than text_len, so padding is really skipped
    seen = []
    hook = pipe.text_encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]))
    bf16, _ = pipe.encode_text(cfg.prompt, None)
    hook.remove()
    assert seen == [n]  # the encoder saw the prompt's tokens, not text_len positions
    with torch.no_grad():
        padded_bf16 = pipe.text_encoder(tok.input_ids, tok.attention_mask).last_hidden_state[0, :n].float()
        pipe.text_encoder.float()
        pipe.dtype = torch.float32
        ours, _ = pipe.encode_text(cfg.prompt, None)
        padded = pipe.text_encoder(tok.input_ids, tok.attention_mask).last_hidden_state[0, :n]
    assert ours.shape == (1, pipe.preset.text_len, padded.shape[-1])
    torch.testing.assert_close(ours[0, :n], padded, atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(ours[0, n:]) == 0
    rel = float((bf16[0, :n].float() - padded_bf16).norm() / padded_bf16.norm())
    assert rel < 0.01
    assert torch.count_nonzero(bf16[0, n:]) == 0
