"""The OFFICIAL Wan2.2 code (PyPI ``wan22`` 2.2.11, import name ``wan``) as a benchmark peer, timed stage by stage.

:func:`run_official` builds ``wan.WanTI2V`` and calls ``.generate`` exactly as the official ``generate.py``
does for ``--task ti2v-5B`` (text-to-video, no image), on a checkpoint in the official layout (ours is
written by :func:`wan_enhanced.models.official.write_official_checkpoint`). Nothing of ``wan`` is copied
here; it is imported, and our timers sit around its calls without changing what they compute:

- ``Load_Text_Encoder`` / ``Load_VAE`` / ``Load_DiT``: the module globals ``T5EncoderModel``,
  ``Wan2_2_VAE`` and ``WanModel`` of ``wan.textimage2video`` are swapped, for the duration of
  ``WanTI2V.__init__`` only, for wrappers that time the original constructors (``Load_DiT`` runs from
  ``WanModel.from_pretrained`` to the end of ``__init__``, so it includes the official dtype conversion);
- ``Text_Encoding``: the pipeline's text encoder is wrapped in a proxy whose ``__call__`` times the
  original calls (prompt and negative prompt: first call's start to last call's end);
- ``T5_to_device`` / ``T5_offload`` / ``DiT_to_device`` / ``DiT_offload``: the models' ``.to`` / ``.cpu`` are
  wrapped on the instances (the official code moves them around the loop);
- ``Step_i`` / ``Denoising``: a forward pre-hook on the DiT (``register_forward_pre_hook``) marks the start
  of the loop; the solver's ``step`` (``FlowUniPCMultistepScheduler.step``, patched on the class for the
  duration of the run and restored) ends step ``i``; the next step starts where the previous one ended,
  so the steps add up to ``Denoising``; the pre-hook counts the DiT forwards of each step (2 with CFG);
- ``VAE_Decoding``: the VAE wrapper's ``decode`` is wrapped on the instance;
- ``Save_Video``: the official ``wan.utils.utils.save_video`` as ``generate.py`` calls it, when
  ``save_file`` is given and a real torchvision is importable (it needs ``make_grid`` and imageio-ffmpeg;
  it swallows its own errors, so the file's existence is checked and reported).

Every boundary is a wall timer after ``torch.cuda.synchronize`` (on CUDA); each stage resets the CUDA

The timers and their hooks are :mod:`.official_timing`; the import of ``wan`` (stubs, the flash_attn adapter,
the CPU-only shims listed in :data:`~.official_import.CPU_SHIMS`) is :mod:`.official_import`; the tiny-preset
architecture overrides are :mod:`.official_tiny`. This module keeps :func:`run_official`, which wires them
onto one ``WanTI2V`` run. One synchronize per step is added to the official loop (it has none inside the
loop); at seconds per 5B step that costs nothing measurable.
"""

from __future__ import annotations

import copy
import gc
import importlib.metadata
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch

from .. import stages as st
from ..models.presets import TI2V_5B, get_preset
from . import flash_attn_adapter
from .official_import import (
    cpu_flash_attention,
    import_wan,
)
from .official_timing import (
    StageClock,
    StepTimer,
    TimedTextEncoder,
    patched,
    stacked,
    timed_solver_steps,
    wrap_moves,
)
from .official_tiny import architecture_overrides, config_overrides_for, vae_constructor_kwargs

PEER_NAME = "official wan22 2.2.11"
WAN_PACKAGE = "wan22"
WAN_VERSION = "2.2.11"
OFFICIAL_TASK = "ti2v-5B"
DEFAULT_PROMPT = ("Two anthropomorphic cats in comfy boxing gear and bright gloves fight intensely on a "
                  "spotlighted stage.")  # the official EXAMPLE_PROMPT of ti2v-5B


def _resolve_device(device: str | torch.device, device_id: int) -> tuple[torch.device, int]:
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.device("cuda", dev.index if dev.index is not None else device_id), (
            dev.index if dev.index is not None else device_id)
    if dev.type != "cpu":
        raise ValueError(f"device must be cuda[:N] or cpu, got {device!r}")
    return dev, device_id


def run_official(ckpt_dir: str | Path, *, size: tuple[int, int] = (1280, 704), frame_num: int = 121,
                 sample_steps: int = 50, guide_scale: float = 5.0, shift: float = 5.0, seed: int = 42,
                 offload_model: bool = True, convert_model_dtype: bool = True, t5_cpu: bool = True,
                 attention: str = "flash", device_id: int = 0, device: str | torch.device = "cuda",
                 prompt: str = DEFAULT_PROMPT, n_prompt: str = "", task: str = OFFICIAL_TASK,
                 config_overrides: dict[str, Any] | None = None, save_file: str | Path | None = None,
                 sample_solver: str = "unipc") -> dict[str, Any]:
    """Run the official ``WanTI2V`` text-to-video once on ``ckpt_dir`` and return its timings.

    Arguments mirror the official ``generate.py`` (``size`` is ``(width, height)``; ``n_prompt=""`` means
    the official negative prompt). ``task`` picks our preset: ``ti2v-5B`` runs the official config as is;
    another preset (``tiny``) shrinks the config (plus ``config_overrides``) and the hardcoded
    architectures. ``attention`` is the adapter backend (``flash``, ``cudnn``, ``math``). Run it in a
    process of its own: it installs a ``flash_attn`` module and stubs into ``sys.modules``.

    Returns a plain dict: ``peer``, ``attention``, ``adapter``, ``flags``, ``stages`` (each with ``name``,
    ``parent``, ``duration_s``, ``peak_allocated_gb``, ``peak_reserved_gb`` and ``memory``), ``steps_s``,
    ``forwards_per_step``, ``stubs``, ``cpu_shims``, ``notes`` and run totals.
    """
    preset = get_preset(task)
    dev, device_id = _resolve_device(device, device_id)
    on_cpu = dev.type == "cpu"
    notes: list[str] = []
    requested = {"offload_model": offload_model, "convert_model_dtype": convert_model_dtype}
    if on_cpu and (offload_model or convert_model_dtype):
        # offload calls torch.cuda.synchronize(); a bf16 DiT needs CUDA autocast to meet fp32 latents
        offload_model = convert_model_dtype = False
        notes.append(f"CPU run: offload_model and convert_model_dtype forced off (requested {requested})")
    t_import = time.perf_counter()
    wan, stubs = import_wan(attention, cpu=on_cpu)
    import_s = time.perf_counter() - t_import
    ti2v_mod = sys.modules["wan.textimage2video"]
    version = importlib.metadata.version(WAN_PACKAGE)
    if version != WAN_VERSION:
        notes.append(f"installed {WAN_PACKAGE} is {version}, not the pinned {WAN_VERSION}")

    config = copy.deepcopy(wan.configs.WAN_CONFIGS[OFFICIAL_TASK])
    config.update(config_overrides_for(preset))
    config.update(config_overrides or {})
    shims: list[str] = []
    if on_cpu:
        config.t5_dtype = torch.float32
        shims += ["offload_model / convert_model_dtype", "config.t5_dtype"]
    w, h = int(size[0]), int(size[1])

    clock = StageClock(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t_total = clock.now()
    vae_kwargs = vae_constructor_kwargs(preset)
    orig_t5, orig_vae, orig_model = ti2v_mod.T5EncoderModel, ti2v_mod.Wan2_2_VAE, ti2v_mod.WanModel
    dit_kwargs = {} if preset.name == TI2V_5B.name else {"text_dim": preset.dit["text_dim"]}

    def timed_t5(*args: Any, **kwargs: Any) -> Any:
        with clock.stage(st.LOAD_TEXT_ENCODER.name, comment="official T5EncoderModel(): build + load .pth"):
            return orig_t5(*args, **kwargs)

    def timed_vae(*args: Any, **kwargs: Any) -> Any:
        kwargs = {**kwargs, **vae_kwargs}
        if on_cpu:
            kwargs["device"] = torch.device("cpu")
        with clock.stage(st.LOAD_VAE.name, comment="official Wan2_2_VAE(): build + load .pth + to device"):
            vae = orig_vae(*args, **kwargs)
        if vae_kwargs:  # the official wrapper hardcodes 48 latent channels of mean/std
            z = vae_kwargs["z_dim"]
            vae.scale = [vae.scale[0][:z], vae.scale[1][:z]]
        return vae

    def from_pretrained(*args: Any, **kwargs: Any) -> Any:
        clock.begin(st.LOAD_DIT.name)
        if not dit_kwargs:
            return orig_model.from_pretrained(*args, **kwargs)
        # WanModel lists text_dim in ignore_for_config (always 4096): let the preset's through, tiny only
        ignored = [k for k in orig_model.ignore_for_config if k not in dit_kwargs]
        with patched(orig_model, "ignore_for_config", ignored):
            return orig_model.from_pretrained(*args, **{**kwargs, **dit_kwargs})

    model_proxy = types.SimpleNamespace(from_pretrained=from_pretrained)
    flags = {"task": task, "size": f"{w}*{h}", "frame_num": frame_num, "sample_steps": sample_steps,
             "sample_solver": sample_solver, "guide_scale": guide_scale, "shift": shift, "seed": seed,
             "offload_model": offload_model, "convert_model_dtype": convert_model_dtype, "t5_cpu": t5_cpu,
             "requested": requested, "init_on_cpu": True, "attention": attention, "device": str(dev)}

    with architecture_overrides(wan, preset) as arch_notes, stacked([
            patched(ti2v_mod, "T5EncoderModel", timed_t5), patched(ti2v_mod, "Wan2_2_VAE", timed_vae),
            patched(ti2v_mod, "WanModel", model_proxy)]):
        notes += arch_notes
        if on_cpu:
            shims += ["Wan2_2_VAE(device=...)"]
        pipe = wan.WanTI2V(config=config, checkpoint_dir=str(ckpt_dir), device_id=device_id, rank=0,
                           t5_fsdp=False, dit_fsdp=False, use_sp=False, t5_cpu=t5_cpu,
                           convert_model_dtype=convert_model_dtype)
        clock.end(st.LOAD_DIT.name, comment="official WanModel.from_pretrained + _configure_model (dtype)")
    if on_cpu:
        pipe.device = torch.device("cpu")
        shims.append("WanTI2V.device")

    target = torch.device(pipe.device)
    text_encoder = TimedTextEncoder(pipe.text_encoder, clock)
    pipe.text_encoder = text_encoder
    wrap_moves(pipe.text_encoder.model, "T5", clock, target)
    wrap_moves(pipe.model, "DiT", clock, target)
    timer = StepTimer(clock)
    hook = pipe.model.register_forward_pre_hook(timer.pre_forward)
    orig_decode = pipe.vae.decode

    def decode(zs: Any) -> Any:
        with clock.stage(st.VAE_DECODING.name, comment="official Wan2_2_VAE.decode"):
            return orig_decode(zs)

    pipe.vae.decode = decode
    utils_mod = sys.modules["wan.utils.fm_solvers_unipc"]
    dpm_mod = sys.modules["wan.utils.fm_solvers"]
    solvers = [utils_mod.FlowUniPCMultistepScheduler, dpm_mod.FlowDPMSolverMultistepScheduler]
    cpu_patch = []
    if on_cpu:
        cpu_patch.append(patched(sys.modules["wan.modules.model"], "flash_attention", cpu_flash_attention()))
        shims.append("wan.modules.model.flash_attention")
        if not torch.cuda.is_available():
            shims.insert(0, "torch.cuda.current_device")

    t_gen = clock.now()
    try:
        with timed_solver_steps(solvers, timer), stacked(cpu_patch):
            video = pipe.generate(prompt, size=(w, h), max_area=w * h, frame_num=frame_num, shift=shift,
                                  sample_solver=sample_solver, sampling_steps=sample_steps,
                                  guide_scale=guide_scale, n_prompt=n_prompt, seed=seed,
                                  offload_model=offload_model)
    finally:
        hook.remove()
        timer.close()
    generate_s = clock.now() - t_gen

    if text_encoder.first_start is not None and text_encoder.last_end is not None:
        peaks = text_encoder.peaks
        pa = [p[0] for p in peaks if p[0] is not None]
        pr = [p[1] for p in peaks if p[1] is not None]
        rec = {"name": st.TEXT_ENCODING.name, "parent": st.TOTAL.name,
               "duration_s": text_encoder.last_end - text_encoder.first_start,
               "start_s": text_encoder.first_start, "end_s": text_encoder.last_end,
               "peak_allocated_gb": max(pa) if pa else None, "peak_reserved_gb": max(pr) if pr else None,
               "comment": "T5 on CPU" if t5_cpu else "T5 encode", "calls": text_encoder.calls}
        rec["memory"] = {"peak_gb": rec["peak_allocated_gb"], "peak_reserved_gb": rec["peak_reserved_gb"]}
        clock.stages.append(rec)
    steps = [s for s in clock.stages if st.is_step(s["name"])]
    if timer.loop_start is not None and timer.loop_end is not None:
        pa = [s["peak_allocated_gb"] for s in steps if s["peak_allocated_gb"] is not None]
        pr = [s["peak_reserved_gb"] for s in steps if s["peak_reserved_gb"] is not None]
        rec = {"name": st.DENOISING.name, "parent": st.TOTAL.name, "duration_s": timer.loop_end - timer.loop_start,
               "start_s": timer.loop_start, "end_s": timer.loop_end, "peak_allocated_gb": max(pa) if pa else None,
               "peak_reserved_gb": max(pr) if pr else None, "comment": "first DiT forward to last solver step"}
        rec["memory"] = {"peak_gb": rec["peak_allocated_gb"], "peak_reserved_gb": rec["peak_reserved_gb"]}
        clock.stages.append(rec)

    saved = None
    if save_file is not None:
        if "torchvision" in stubs:
            notes.append("Save_Video skipped: torchvision is stubbed (the official save_video needs make_grid)")
        else:
            from wan.utils.utils import save_video

            out = Path(save_file)
            with clock.stage(st.SAVE_VIDEO.name, comment="official save_video (imageio, libx264)"):
                save_video(tensor=video[None], save_file=str(out), fps=config.sample_fps, nrow=1,
                           normalize=True, value_range=(-1, 1))
            saved = str(out) if out.is_file() and out.stat().st_size > 0 else None
            if saved is None:
                notes.append("Save_Video: the official save_video wrote no file (it logs and swallows errors; "
                             "imageio-ffmpeg missing?)")
    total_end = clock.now()
    clock._fold_peaks()
    top = [s for s in clock.stages if s["parent"] == st.TOTAL.name]
    total_s = total_end - t_total
    clock.stages.append({"name": st.TOTAL.name, "parent": None, "duration_s": total_s, "start_s": t_total,
                         "end_s": total_end,
                         "peak_allocated_gb": clock.run_peak_allocated if clock.cuda else None,
                         "peak_reserved_gb": clock.run_peak_reserved if clock.cuda else None,
                         "memory": {"peak_gb": clock.run_peak_allocated if clock.cuda else None,
                                    "peak_reserved_gb": clock.run_peak_reserved if clock.cuda else None},
                         "comment": "construction + generate + save"})
    clock.stages.sort(key=lambda s: (s["start_s"], s["parent"] is not None, s["name"]))
    steps_s = [s["duration_s"] for s in sorted(steps, key=lambda s: st.step_index(s["name"]) or 0)]
    shape = list(video.shape) if isinstance(video, torch.Tensor) else None
    del pipe, video
    gc.collect()
    return {
        "peer": PEER_NAME, "package": f"{WAN_PACKAGE} {version}", "attention": attention,
        "adapter": flash_attn_adapter.describe(attention), "flags": flags, "stages": clock.stages,
        "steps_s": steps_s, "first_step_s": steps_s[0] if steps_s else None,
        "steady_step_s": statistics.median(steps_s[1:]) if len(steps_s) > 1 else None,
        "forwards_per_step": list(timer.forwards), "stubs": stubs, "cpu_shims": shims,
        "notes": notes, "import_s": import_s, "generate_s": generate_s, "total_s": total_s,
        "unattributed_s": total_s - sum(s["duration_s"] for s in top), "output_shape": shape,
        "saved_file": saved, "negative_prompt": n_prompt or config.sample_neg_prompt,
        "peak_allocated_gb": clock.run_peak_allocated if clock.cuda else None,
        "peak_reserved_gb": clock.run_peak_reserved if clock.cuda else None,
        "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
    }

