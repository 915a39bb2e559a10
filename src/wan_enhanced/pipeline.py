"""The TI2V-5B generation pipeline as explicit stages a monitor can wrap.

Why this module is long (~500 lines): one method per stage (each with its residency and FLOP constructs, the
decoder's chunk hook for the overlapped encoder, the prompt-cut check) plus the FLOP plan they charge
(``StageFlops``); they change together whenever a stage does.

Built on diffusers' ``WanTransformer3DModel``, ``AutoencoderKLWan`` and flow ``UniPC`` /
``DPM++`` schedulers and transformers' ``UMT5EncoderModel``. The arithmetic of each step is that of
diffusers' ``WanPipeline(expand_timesteps=True)`` (text→video) and
``WanImageToVideoPipeline(expand_timesteps=True)`` (image→video): a per-token timestep where the
first latent frame (the VAE-encoded image in i2v) gets timestep 0 and is re-blended every step.

Stages, in order (``stages.PIPELINE_ORDER``): ``Load_Text_Encoder``, ``Text_Encoding``,
``Free_Text_Encoder``, ``Load_VAE``, [``Image_Encoding``], ``Load_DiT``, [``Prepare_DiT``], ``Denoising`` (with [``Warmup``],
``Step_0`` … ``Step_{n-1}``), ``Free_DiT``, [``Save_Latents``], ``VAE_Decoding``, [``Save_Video``]: every piece
of work the run does between its first and last stage is a stage of its own. The pipeline never formats or measures; it only names its stages, from the registry.

Around each stage body there is one construct per concern: ``with self.stage(kind, **work) as work`` (the
monitor's stage; when the body has finished, the run's :class:`StageFlops` adds the stage's FLOPs from the
facts in ``work``) and ``with self.residency.on_device(model) as m`` (the model on the compute device for
the stage, released after; ``admit`` where a model is loaded, one ``prefetch`` of the decoder's weights).
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler
from diffusers.video_processor import VideoProcessor
from tqdm.auto import tqdm

from . import stages
from .atomic import atomic_output
from .config import RunConfig
from .fastpath import FastPath
from .models.loading import LoadResult, ModelLoader
from .parallel import ParallelContext, apply_ulysses
from .residency import Residency
from .video import Mp4Stream, save_mp4

log = logging.getLogger("wan_enhanced")
#: how much of a long prompt is tokenized to count its tokens (UMT5 reads 512: far fewer characters suffice)
PROMPT_COUNT_CHARS = 64 * 1024


class StageMonitor(Protocol):
    """What the pipeline needs from a monitor (``wan_enhanced.monitor.Monitor`` has it)."""

    def stage(self, name: str, comment: str = "") -> contextlib.AbstractContextManager[Any]: ...

    def add_flops(self, flops: float, source: str = "analytic") -> None: ...


class NullMonitor:
    """A monitor that records nothing."""

    def stage(self, name: str, comment: str = "") -> contextlib.AbstractContextManager[Any]:
        """No-op stage."""
        return contextlib.nullcontext()

    def add_flops(self, flops: float, source: str = "analytic") -> None:
        """Ignore FLOPs."""


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """Decoder output (1, 3, F, H, W) in [-1, 1] → (F, H, W, 3) uint8 numpy, computed where ``video`` is."""
    x = ((video[0].float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).contiguous().cpu().numpy()


def make_scheduler(solver: str, shift: float) -> Any:
    """Flow-matching UniPC (default) or DPM++ scheduler with ``flow_shift = shift``."""
    common = dict(num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True,
                  flow_shift=shift)
    if solver == "unipc":
        return UniPCMultistepScheduler(**common, solver_order=2)
    if solver == "dpm++":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(f"unknown solver {solver!r}")


def latent_stats(vae: Any, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's per-channel latent mean and 1 / std, shaped (1, C, 1, 1, 1)."""
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(device, dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(device, dtype)
    return mean, inv_std


class StageFlops:
    """The FLOP accounting of one run: what each stage computed, added to the monitor as the stage ends.

    Planned when the pipeline is built (the VAE estimate is a meta-device ``FlopCounterMode`` pass: seconds on
    a small CPU, so never inside a timed stage). One function per registry stage name turns the facts a stage
    body reports of its work into (FLOPs, source); the pipeline's stage construct calls :meth:`charge` after
    the body has finished, while the stage is still open, so the FLOPs land on that stage:

    - ``Text_Encoding``: ``prompt_tokens`` (the encoder runs on each prompt's own tokens): analytic;
    - ``Image_Encoding`` / ``VAE_Decoding``: the VAE estimate;
    - ``Step_{i}`` and ``Warmup``: ``forwards`` (this rank's share of the step's DiT forwards) and ``scalar``
      (one timestep per sample instead of per token): analytic.

    Empty — nothing recorded — when the formulas are unavailable.
    """

    def __init__(self, units: dict[str, float], t5_config: Any = None) -> None:
        self.units = units  # FLOPs of one unit of work: a DiT forward, a VAE encode / decode
        self.t5_config = t5_config
        self._per_stage: dict[str, Any] = {
            stages.TEXT_ENCODING.name: self._text,
            stages.IMAGE_ENCODING.name: lambda work: self._unit("vae_encode", 1.0, "estimate"),
            stages.STEP.name: self._dit,
            stages.WARMUP.name: self._dit,
            stages.VAE_DECODING.name: lambda work: self._unit("vae_decode", 1.0, "estimate"),
        }

    @classmethod
    def plan(cls, cfg: RunConfig, num_tokens: int, latent_shape: tuple[int, ...]) -> StageFlops:
        """Analytic / estimated FLOPs of each unit of work of the run ``cfg`` describes."""
        try:
            from .models import flops
        except ImportError:  # pragma: no cover - formulas not installed
            return cls({})
        p, text_len = cfg.preset, cfg.preset.text_len
        _, _, lt, lh, lw = latent_shape
        units = {
            "dit_per_token": flops.dit_forward_flops(p.dit, num_tokens=num_tokens, text_len=text_len,
                                                     per_token_timestep=True).total,
            "dit_scalar": flops.dit_forward_flops(p.dit, num_tokens=num_tokens, text_len=text_len,
                                                  per_token_timestep=False).total,
        }
        try:
            units["vae_decode"] = flops.vae_flops_estimate(p.vae, lt, lh, lw, op="decode").total
            if cfg.is_i2v:
                units["vae_encode"] = flops.vae_flops_estimate(p.vae, 1, lh, lw, op="encode").total
        except Exception:  # noqa: BLE001 - an estimate that cannot be made is simply not reported
            pass
        return cls({k: float(v) for k, v in units.items()}, p.t5)

    def __bool__(self) -> bool:
        return bool(self.units)

    def _unit(self, key: str, times: float, source: str) -> tuple[float, str] | None:
        return (self.units[key] * times, source) if key in self.units else None

    def _dit(self, work: dict[str, Any]) -> tuple[float, str] | None:
        return self._unit("dit_scalar" if work["scalar"] else "dit_per_token", work["forwards"], "analytic")

    def _text(self, work: dict[str, Any]) -> tuple[float, str] | None:
        from .models.flops import t5_encoder_flops

        # summed in float, prompt by prompt, as the monitor would have summed one add per prompt
        return sum(float(t5_encoder_flops(self.t5_config, n).total) for n in work["prompt_tokens"]), "analytic"

    def charge(self, monitor: StageMonitor, name: str, work: dict[str, Any]) -> None:
        """Add the FLOPs of the stage ``name`` that did ``work`` to the monitor's innermost open stage."""
        kind = stages.kind_of(name)
        count = self._per_stage.get(kind.name) if (self.units and kind is not None) else None
        got = count(work) if count is not None else None
        if got is not None:
            monitor.add_flops(got[0], source=got[1])


@dataclass
class GenerationResult:
    """What a run produced (tensors stay on the CPU)."""

    latents: torch.Tensor | None = None
    frames: np.ndarray | None = None
    video_path: str | None = None
    latents_path: str | None = None
    load_info: list[LoadResult] = field(default_factory=list)
    tokenizer: str = ""
    notes: list[str] = field(default_factory=list)  # what the run changed of its input (e.g. a prompt cut)


class TI2VPipeline:
    """Text/image → video for Wan2.2 TI2V-5B (and the tiny preset), one method per stage."""

    def __init__(self, cfg: RunConfig, monitor: StageMonitor | None = None, progress: bool = True,
                 fast: FastPath | None = None, parallel: ParallelContext | None = None) -> None:
        self.cfg = cfg
        self.preset = cfg.preset
        self.monitor: StageMonitor = monitor or NullMonitor()
        self.device = torch.device(cfg.device or "cpu")
        self.dtype = torch.bfloat16
        self.vae_dtype = torch.float32 if cfg.vae_dtype == "fp32" else torch.bfloat16
        self.par = parallel or ParallelContext()
        self.residency = Residency(self.device, "offload" if cfg.offload_model else "resident")
        self.fast = (fast or FastPath(compile=cfg.compile, attention_backend=cfg.attention_backend,
                                      vae_layout=cfg.vae_layout, vae_compile=cfg.vae_compile,
                                      fused_qk_rope=cfg.fused_qk_rope)).resolve(
            self.device, self.vae_dtype, context_parallel=self.par.ulysses_size > 1)
        self.fast.apply_global()
        self.loader = ModelLoader(self.preset, cfg.resolved_weights or "random", cfg.ckpt_dir)
        self.progress = progress
        self.current_stage: str | None = None
        self.result = GenerationResult()
        self.text_encoder = self.tokenizer = self.dit = self.vae = None
        self.flops = StageFlops.plan(cfg, self.num_tokens, self.latent_shape)  # outside every timed stage

    # ---- helpers -------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, kind: stages.StageKind | str, comment: str | None = None,
              **work: Any) -> Iterator[dict[str, Any]]:
        """Run a block as a stage of the monitor (and remember it for error reports).

        ``kind`` is a registry entry (recorded under its name, with its comment unless ``comment``
        is given) or a recorded name such as ``stages.step_name(i)``. The block gets ``work``, a dict of
        facts about the stage's work (given here or filled in by the block); when the block has finished,
        the run's FLOP accounting turns them into the stage's FLOPs.
        """
        name = kind if isinstance(kind, str) else kind.name
        if comment is None:
            comment = "" if isinstance(kind, str) else kind.comment
        self.current_stage = name
        with self.monitor.stage(name, comment=comment):
            yield work
            self.flops.charge(self.monitor, name, work)

    @property
    def latent_shape(self) -> tuple[int, int, int, int, int]:
        """(1, C, T, H, W) of the latent video."""
        w, h = self.cfg.width_height
        st, sh, sw = self.preset.vae_stride
        return (1, self.preset.vae["z_dim"], (self.cfg.frame_num - 1) // st + 1, h // sh, w // sw)

    @property
    def num_tokens(self) -> int:
        """Video tokens the DiT attends over."""
        from .models.flops import video_tokens

        w, h = self.cfg.width_height
        return video_tokens(self.cfg.frame_num, h, w, self.preset.vae_stride, self.preset.patch_size)

    # ---- stages --------------------------------------------------------------------------
    def load_text_encoder(self) -> None:
        """Build/load the UMT5 encoder and tokenizer (on the CPU with --t5_cpu)."""
        device = torch.device("cpu") if self.cfg.t5_cpu else self.device
        with self.stage(stages.LOAD_TEXT_ENCODER):
            self.text_encoder, self.tokenizer, info = self.loader.text_encoder(device, self.dtype)
            self.residency.admit(self.text_encoder, host_only=self.cfg.t5_cpu)
        self.result.load_info.append(info)
        self.result.tokenizer = getattr(self.tokenizer, "name", type(self.tokenizer).__name__)

    @torch.no_grad()
    def encode_text(self, prompt: str, negative_prompt: str | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Prompt (and negative prompt when CFG is on) → padded embeddings on the compute device."""
        cfg_on = self.cfg.guidance and negative_prompt is not None
        with (self.stage(stages.text_encoding(self.cfg.t5_cpu), prompt_tokens=[]) as work,
              self.residency.on_device(self.text_encoder) as t5):
            ctx = self._t5(t5, prompt, work["prompt_tokens"])
            ctx_null = self._t5(t5, negative_prompt, work["prompt_tokens"], "negative prompt") if cfg_on else None
        return ctx, ctx_null

    def _t5(self, t5: Any, text: str, tokens: list[int], what: str = "prompt") -> torch.Tensor:
        """One prompt → (1, text_len, dim) embeddings, zero after the prompt's last token.

        The encoder runs on the prompt's own tokens only, not on the ``text_len`` padded positions the
        official code feeds it: padded keys are masked out of every attention and the relative position
        bias depends only on distances, so the real tokens' outputs are the same function (the padded
        outputs were thrown away anyway). On the CPU (``--t5_cpu``) the work shrinks roughly with the
        prompt's length: 3.46 → 2.33 s for the default prompt and negative prompt on a 16-core Xeon, with
        the byte-level stand-in tokenizer of random-weight runs (104 + 404 tokens instead of 2 × 512).
        ``test_t5_on_prompt_tokens_only_matches_the_padded_run`` checks it against the padded run.
        The prompt's token count is appended to ``tokens`` (its FLOPs depend on it). A prompt longer than
        ``text_len`` tokens is cut to them (as the official code does) and said, in the log and the report's
        ``run.notes``.
        """
        text_len = self.preset.text_len
        dev = next(t5.parameters()).device
        clean = " ".join(text.split())
        tok = self.tokenizer([clean], padding="max_length", max_length=text_len,
                             truncation=True, add_special_tokens=True, return_attention_mask=True,
                             return_tensors="pt")
        seq_len = int(tok.attention_mask.gt(0).sum())
        if seq_len >= text_len:  # full: was the prompt cut? One more position says (on a bounded prefix)
            head = clean[:PROMPT_COUNT_CHARS]
            probe = self.tokenizer([head], padding="max_length", max_length=text_len + 1, truncation=True,
                                   add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
            if int(probe.attention_mask.gt(0).sum()) > text_len:
                note = (f"{what} of {len(clean)} characters cut to the {text_len} tokens the text encoder reads "
                        f"(it begins {clean[:40]!r})")
                self.result.notes.append(note)
                log.warning("%s", note)
        ids, mask = tok.input_ids[:, :seq_len].to(dev), tok.attention_mask[:, :seq_len].to(dev)
        hidden = t5(ids, mask).last_hidden_state[0]
        tokens.append(seq_len)
        out = torch.zeros(1, text_len, hidden.shape[-1], dtype=self.dtype, device=self.device)
        out[0, :seq_len] = hidden.to(self.device, self.dtype)
        return out

    def load_vae(self) -> None:
        """Build/load the Wan2.2 VAE."""
        with self.stage(stages.LOAD_VAE):
            self.vae, info = self.loader.vae(self.device, self.vae_dtype)
            self.fast.apply_vae(self.vae)
            self.residency.admit(self.vae)
        self.result.load_info.append(info)

    @torch.no_grad()
    def encode_image(self, image_path: str) -> torch.Tensor:
        """The conditioning image → normalised first-frame latent (1, C, 1, h, w), fp32."""
        from .images import load_rgb_image

        w, h = self.cfg.width_height
        with self.stage(stages.IMAGE_ENCODING), self.residency.on_device(self.vae) as vae:
            image = load_rgb_image(image_path)
            pixels = VideoProcessor(vae_scale_factor=self.preset.vae_stride[1]).preprocess(
                image, height=h, width=w, resize_mode="crop")
            pixels = pixels.to(self.device, torch.float32).unsqueeze(2).to(self.vae_dtype)
            z = vae.encode(self.fast.vae_input(pixels)).latent_dist.mode().to(torch.float32)
            mean, inv_std = latent_stats(vae, self.device, torch.float32)
            cond = (z - mean) * inv_std
        return cond

    def load_dit(self) -> None:
        """Build/load the diffusion transformer."""
        with self.stage(stages.LOAD_DIT):
            self.dit, info = self.loader.dit(self.device, self.dtype)
            self.residency.admit(self.dit)
            apply_ulysses(self.dit, self.par)
        self.result.load_info.append(info)
        # kernels and compile set-up are not weight loading: their own stage when there is any (always called, so
        # a set-up step has_dit_setup forgot would only be misplaced in time, never skipped)
        with self.stage(stages.PREPARE_DIT) if self.fast.has_dit_setup() else contextlib.nullcontext():
            self.fast.apply_dit(self.dit, self.device)

    def initial_noise(self) -> torch.Tensor:
        """Gaussian latent noise from a CPU generator seeded with --base_seed (device independent)."""
        g = torch.Generator("cpu").manual_seed(self.cfg.base_seed)
        return torch.randn(self.latent_shape, generator=g, dtype=torch.float32).to(self.device)

    @torch.no_grad()
    def denoise(self, ctx: torch.Tensor, ctx_null: torch.Tensor | None, cond: torch.Tensor | None = None,
                latents: torch.Tensor | None = None) -> torch.Tensor:
        """The sampling loop: one ``Step_i`` stage per step, CFG as two batch-1 forwards."""
        cfg = self.cfg
        n_fwd = 2 if ctx_null is not None else 1
        forwards = (n_fwd / (2 if self.par.cfg_parallel else 1)) / self.par.ulysses_size  # this rank's share
        comment = stages.denoising_comment(cfg.sample_steps, ctx_null is not None, self.residency.offload)
        with self.stage(stages.DENOISING, comment), self.residency.on_device(self.dit) as dit:
            scheduler = make_scheduler(cfg.sample_solver, cfg.sample_shift)
            latents = self.initial_noise() if latents is None else latents.to(self.device, torch.float32)
            mask = torch.ones(latents.shape, dtype=torch.float32, device=self.device)
            if cond is not None:
                mask[:, :, 0] = 0
            _, ph, pw = self.preset.patch_size
            scheduler.set_timesteps(cfg.sample_steps, device=self.device)
            scheduler.set_begin_index(0)
            scalar = cond is None and self.fast.scalar_timestep
            steps = tqdm(scheduler.timesteps, desc="denoise", disable=not self.progress, leave=False)

            def model_input(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                model_in = latents if cond is None else (1 - mask) * cond + mask * latents
                if scalar:
                    timestep = t.expand(1)  # every token has timestep t: embed it once
                else:
                    timestep = (mask[0][0][:, ::ph, ::pw] * t).flatten().unsqueeze(0)
                return model_in.to(self.dtype), timestep

            if cfg.warmup:  # MLPerf-style: the first call's compile and kernel build, outside every Step_i
                with self.stage(stages.WARMUP, forwards=forwards, scalar=scalar):
                    self._guided(dit, *model_input(scheduler.timesteps[0]), ctx, ctx_null, exchange=False)
            for i, t in enumerate(steps):
                with self.stage(stages.step_name(i), stages.STEP.comment, forwards=forwards, scalar=scalar):
                    model_in, timestep = model_input(t)
                    if i == cfg.sample_steps - 1:
                        self.residency.prefetch(self.vae)  # the decoder's weights arrive while we compute
                    noise = self._guided(dit, model_in, timestep, ctx, ctx_null)
                    latents = scheduler.step(noise, t, latents, return_dict=False)[0]
            if cond is not None:
                latents = (1 - mask) * cond + mask * latents
        self.result.latents = latents.detach().to("cpu")
        return latents

    def _guided(self, dit: Any, model_in: torch.Tensor, timestep: torch.Tensor, ctx: torch.Tensor,
                ctx_null: torch.Tensor | None, exchange: bool = True) -> torch.Tensor:
        """One step's noise prediction: the conditional forward and, with CFG, the unconditional one combined.

        Under ``--cfg_parallel`` each rank runs its half and the two are exchanged (``CFG_Exchange``);
        ``exchange=False`` (the warm-up forward) runs this rank's half only and returns it.
        """
        cfg = self.cfg
        if ctx_null is not None and self.par.cfg_parallel:
            mine = ctx if self.par.cfg_rank == 0 else ctx_null
            pred = dit(hidden_states=model_in, timestep=timestep, encoder_hidden_states=mine, return_dict=False)[0]
            if not exchange:
                return pred
            with self.stage(stages.CFG_EXCHANGE):
                noise, uncond = self.par.gather_cfg(pred)
            return uncond + cfg.sample_guide_scale * (noise - uncond)
        noise = dit(hidden_states=model_in, timestep=timestep, encoder_hidden_states=ctx, return_dict=False)[0]
        if ctx_null is not None:
            uncond = dit(hidden_states=model_in, timestep=timestep, encoder_hidden_states=ctx_null,
                         return_dict=False)[0]
            noise = uncond + cfg.sample_guide_scale * (noise - uncond)
        return noise

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, on_frames: Any = None) -> np.ndarray:
        """Latents → frames (F, H, W, 3) uint8 on the CPU.

        The [-1, 1] → uint8 conversion (diffusers' denormalisation, then ×255 and rounding, as the mp4
        writer would do) runs on the compute device, so a quarter of the bytes cross to the host.
        ``on_frames(frames)``: called with each chunk's uint8 frames as the Wan VAE decodes them causally, one
        latent frame at a time (a forward hook on its decoder; the same elementwise conversion per chunk, so the
        frames are those of the whole video) — the mp4 encoder overlaps the decoding. Not with tiled decoding.
        """
        comment = stages.vae_decoding_comment(self.cfg.vae_dtype, self.residency.offload)
        with self.stage(stages.VAE_DECODING, comment), self.residency.on_device(self.vae) as vae:
            mean, inv_std = latent_stats(vae, self.device, self.vae_dtype)
            z = latents.to(self.device, self.vae_dtype) / inv_std + mean
            chunks: list[np.ndarray] = []
            handle = None
            if on_frames is not None and not getattr(vae, "use_tiling", False):
                from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

                patch = vae.config.patch_size

                def chunk_done(module: Any, args: Any, out: torch.Tensor) -> None:
                    x = unpatchify(out, patch_size=patch) if patch is not None else out
                    chunks.append(to_uint8_frames(torch.clamp(x, min=-1.0, max=1.0)))
                    on_frames(chunks[-1])

                handle = vae.decoder.register_forward_hook(chunk_done)
            try:
                video = vae.decode(self.fast.vae_input(z), return_dict=False)[0]
            finally:
                if handle is not None:
                    handle.remove()
            frames = np.concatenate(chunks) if handle is not None else to_uint8_frames(video)
        self.result.frames = frames
        return frames

    def save(self, frames: np.ndarray, path: str, stream: Mp4Stream | None = None) -> str:
        """Write the mp4 at the preset's fps; with ``stream`` (fed during decoding) finish that one instead."""
        comment = (f"{stages.SAVE_VIDEO.comment}: the rest of the H.264 encoding, which ran during VAE_Decoding "
                   f"({stream.frames_written} of {len(frames)} frames done when decoding ended; encoder at nice "
                   f"+{stream.nice_applied})") if stream else None
        with self.stage(stages.SAVE_VIDEO, comment):
            out = str(stream.finish() if stream is not None else save_mp4(frames, path, fps=self.preset.fps))
        self.result.video_path = out
        return out

    def save_latents(self, latents: torch.Tensor, path: str) -> str:
        """Write the denoised latents (torch ``.pt``) atomically: the file is whole or absent."""
        with self.stage(stages.SAVE_LATENTS), atomic_output(path) as tmp:
            torch.save(latents, tmp)
        self.result.latents_path = path
        return path

    def _drop(self, attr: str, kind: stages.StageKind) -> None:
        """Free the model held in ``self.<attr>`` for good and set the attribute to ``None`` (stage ``kind``).

        After ``compile_repeated_blocks`` the DiT's blocks sit in a reference cycle: dropping the last
        reference leaves their parameters alive until the cyclic garbage collector runs (shown on the
        tiny preset by ``test_text_encoder_and_dit_are_freed_before_decode``). On an H100 the compiled
        5B DiT stayed allocated through the VAE decode (peak 21.1 GiB; eager runs peak at 12.9 GiB).
        """
        with self.stage(kind):
            model = getattr(self, attr)
            setattr(self, attr, None)
            self.residency.forget(model)
            del model
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    # ---- whole run -----------------------------------------------------------------------
    def denoised_latents(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The stages up to and including Denoising, in the pipeline's order: (latents, ctx, ctx_null).

        ``generate`` continues from here; the equivalence tests stop here and compare with diffusers.
        """
        cfg = self.cfg
        self.load_text_encoder()
        ctx, ctx_null = self.encode_text(cfg.prompt, cfg.effective_negative_prompt)
        self._drop("text_encoder", stages.FREE_TEXT_ENCODER)  # the embeddings are all we need from here on
        self.load_vae()
        cond = self.encode_image(cfg.image) if cfg.is_i2v else None  # type: ignore[arg-type]
        self.load_dit()
        return self.denoise(ctx, ctx_null, cond), ctx, ctx_null

    def generate(self) -> GenerationResult:
        """Run every stage in order; returns latents, frames and the video path."""
        cfg = self.cfg
        latents, _, _ = self.denoised_latents()
        self._drop("dit", stages.FREE_DIT)  # frees its memory before the decoder's activations need it
        if not self.par.is_main:
            return self.result  # rank 0 decodes and writes; the latents are identical on every rank
        if cfg.save_latents:  # before decoding: a failure there loses nothing computed
            self.save_latents(self.result.latents, cfg.save_latents)  # type: ignore[arg-type]
        stream = None
        if cfg.save_file and cfg.encode_overlap:
            try:
                stream = Mp4Stream(cfg.save_file, fps=self.preset.fps)
            except OSError as exc:  # the folder refuses the file: Save_Video says why, after decoding
                log.debug("no overlapped encoding: %s", exc)
        try:
            frames = self.decode(latents, on_frames=stream.put if stream is not None else None)
        except BaseException:
            if stream is not None:
                stream.abort()
            raise
        if cfg.save_file:
            self.save(frames, cfg.save_file, stream)
        return self.result
