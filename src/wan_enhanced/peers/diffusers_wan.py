"""diffusers' own ``WanPipeline(expand_timesteps=True)`` as a peer, timed stage by stage by our monitor.

The models are loaded from the same official-layout checkpoint the other peers read (through our
key maps: diffusers has no loader for the official layout), in the dtypes diffusers' Wan2.2 TI2V-5B
example uses: DiT and UMT5 in bf16, the VAE in fp32, everything resident on the GPU. The pipeline then
runs as diffusers ships it; we only open a monitor window around each of its phases:

- ``plain``: as the docs show it (``pipe(...)``; default attention dispatch, no compile);
- ``levers``: the speed levers diffusers documents for it — regional compilation
  (``transformer.compile_repeated_blocks(fullgraph=True)``) and an attention backend of its dispatcher
  (``transformer.set_attention_backend(...)``, default ``_native_cudnn``).

Prompt embeddings come from the pipeline's own ``encode_prompt``; per-step windows from
``callback_on_step_end`` (the callback synchronizes through the monitor). The decode follows the
pipeline's own latent denormalisation and ``video_processor.postprocess_video``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .. import stages as st
from ..models.checkpoint import tokenizer_dir
from ..models.official import load_official_dit, load_official_t5, load_official_vae
from ..models.presets import ModelPreset
from ..models.tokenizer import load_tokenizer
from ..monitor import Monitor
from ..report.build import stage_dicts
from .record import record_from_stages

VARIANTS = ("plain", "levers")
DEFAULT_LEVER_BACKEND = "_native_cudnn"


def run_diffusers(ckpt_dir: str | Path, preset: ModelPreset, *, variant: str = "plain", device: str = "cuda",
                  width: int, height: int, frame_num: int, steps: int, job_steps: int, prompt: str,
                  negative_prompt: str, guide_scale: float = 5.0, shift: float = 5.0, seed: int = 42,
                  attention_backend: str = DEFAULT_LEVER_BACKEND, save_file: str | None = None) -> dict[str, Any]:
    """Run diffusers' WanPipeline on ``ckpt_dir`` for ``steps`` steps; returns a peer record."""
    import diffusers
    from diffusers import WanPipeline

    from ..pipeline import make_scheduler

    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    dev = torch.device(device)
    is_cuda = dev.type == "cuda"
    dtype = torch.bfloat16 if is_cuda else torch.float32
    notes: list[str] = []
    mon = Monitor(dev)
    with mon, mon.stage(st.TOTAL.name, st.TOTAL.comment):
        with mon.stage(st.LOAD_TEXT_ENCODER.name, st.LOAD_TEXT_ENCODER.comment):
            t5, _ = load_official_t5(ckpt_dir, preset, dev, dtype)
            tok = load_tokenizer(tokenizer_dir(ckpt_dir, "official"))
        with mon.stage(st.LOAD_VAE.name, st.LOAD_VAE.comment):
            vae, _ = load_official_vae(ckpt_dir, preset, dev, torch.float32)
        with mon.stage(st.LOAD_DIT.name, st.LOAD_DIT.comment):
            dit, _ = load_official_dit(ckpt_dir, preset, dev, dtype)
            scheduler = make_scheduler("unipc", shift)  # the scheduler our pipeline runs: same settings
            pipe = WanPipeline(tokenizer=tok, text_encoder=t5, vae=vae, transformer=dit, scheduler=scheduler,
                               expand_timesteps=True)
            pipe.set_progress_bar_config(disable=True)
        if variant == "levers":  # the DiT's set-up, as ours records it: not weight loading
            with mon.stage(st.PREPARE_DIT.name, st.PREPARE_DIT.comment):
                dit.set_attention_backend(attention_backend)
                dit.compile_repeated_blocks(fullgraph=True)
            notes.append(f"levers: compile_repeated_blocks(fullgraph=True), attention backend {attention_backend}")
        with mon.stage(st.TEXT_ENCODING.name, st.TEXT_ENCODING.comment):
            pe, npe = pipe.encode_prompt(prompt=prompt, negative_prompt=negative_prompt,
                                         do_classifier_free_guidance=guide_scale > 1.0, num_videos_per_prompt=1,
                                         max_sequence_length=preset.text_len, device=dev)
        state = {"i": 0}

        def on_step_end(_pipe: Any, i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            mon.end_window(st.step_name(i))
            if i + 1 < steps:
                mon.begin_window(st.step_name(i + 1), st.STEP.comment)
            state["i"] = i + 1
            return {}

        with mon.stage(st.DENOISING.name, f"{steps} steps, diffusers WanPipeline ({variant})"):
            mon.begin_window(st.step_name(0), st.STEP.comment)
            latents = pipe(prompt_embeds=pe, negative_prompt_embeds=npe, height=height, width=width,
                           num_frames=frame_num, num_inference_steps=steps, guidance_scale=guide_scale,
                           generator=torch.Generator("cpu").manual_seed(seed), output_type="latent",
                           callback_on_step_end=on_step_end).frames
        with mon.stage(st.VAE_DECODING.name, "VAE decode (fp32, diffusers)"):
            with torch.no_grad():
                z = latents.to(vae.dtype)
                mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(dev, z.dtype)
                inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(dev, z.dtype)
                video = vae.decode(z / inv_std + mean, return_dict=False)[0]
                frames = pipe.video_processor.postprocess_video(video, output_type="np")[0]
        if save_file:
            try:
                import imageio_ffmpeg  # noqa: F401
            except ImportError:
                notes.append("Save_Video not run: imageio-ffmpeg is not installed here")
            else:
                from diffusers.utils import export_to_video

                with mon.stage(st.SAVE_VIDEO.name, st.SAVE_VIDEO.comment):
                    export_to_video(list(frames), save_file, fps=preset.fps)
    flags = {"variant": variant, "expand_timesteps": True, "dtype": str(dtype).removeprefix("torch."),
             "vae_dtype": "float32", "diffusers": diffusers.__version__, "steps": steps,
             "attention_backend": attention_backend if variant == "levers" else "default dispatch (SDPA)",
             "compile": "compile_repeated_blocks(fullgraph=True)" if variant == "levers" else "none"}
    label = "diffusers WanPipeline, as documented" if variant == "plain" else \
        "diffusers WanPipeline + regional compile + " + attention_backend
    return record_from_stages(f"diffusers_{variant}", stage_dicts(mon.measure()), flags=flags, job_steps=job_steps,
                              label=label, notes=notes)
