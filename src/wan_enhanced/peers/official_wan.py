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
peak-memory counters at its start and reads ``max_memory_allocated`` / ``max_memory_reserved`` at its end
(GiB); the run's peak is the maximum over all of them, gaps included. One synchronize per step is added
to the official loop (it has none inside the loop); at seconds per 5B step that costs nothing measurable.

Import: ``wan/__init__.py`` imports every pipeline. :data:`STUBBED_MODULES` are replaced by placeholder
modules before ``import wan`` (they are not on the TI2V path and pull in packages the benchmark machine
lacks); :data:`STUBBED_IF_MISSING` are stubbed only when the real package cannot be imported. ``flash_attn``
is our adapter (:mod:`.flash_attn_adapter`), never FlashAttention's own build.

CPU (tests only): the official code hardcodes CUDA. With ``device="cpu"`` the driver applies the shims in
:data:`CPU_SHIMS` and nothing else; none of them is applied on CUDA.

Tiny presets: the official constructors hardcode the 5B architecture of the T5 (``umt5_xxl``) and the VAE
(``Wan2_2_VAE``: 48 latent channels, base 160, decoder 256), and the checkpoint's ``config.json`` has no
``text_dim``. For a preset other than ``ti2v-5B`` the driver passes the preset's dimensions to those
constructors (``umt5_xxl(**dims)``, ``_video_vae(**dims)``, ``WanModel.from_pretrained(text_dim=...)``) and
truncates the VAE's latent mean/std to the preset's channels; for ``ti2v-5B`` nothing is overridden.
"""

from __future__ import annotations

import copy
import functools
import gc
import importlib
import importlib.machinery
import importlib.metadata
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch

from .. import stages as st
from ..models.presets import OFFICIAL_NEGATIVE_PROMPT, TI2V_5B, ModelPreset, get_preset
from . import flash_attn_adapter

PEER_NAME = "official wan22 2.2.11"
WAN_PACKAGE = "wan22"
WAN_VERSION = "2.2.11"
OFFICIAL_TASK = "ti2v-5B"
DEFAULT_PROMPT = ("Two anthropomorphic cats in comfy boxing gear and bright gloves fight intensely on a "
                  "spotlighted stage.")  # the official EXAMPLE_PROMPT of ti2v-5B
GIB = float(1 << 30)

#: modules replaced by placeholders before ``import wan``, always: name → why
STUBBED_MODULES: dict[str, str] = {
    "wan.animate": "Wan-Animate-14B pipeline (imported by wan/__init__.py); needs cv2, decord, peft; "
                   "not on the TI2V path; placeholder WanAnimate raises if used",
    "wan.speech2video": "Wan-S2V-14B pipeline (imported by wan/__init__.py); needs decord, librosa (audio "
                        "encoder); not on the TI2V path; placeholder WanS2V raises if used",
}
#: modules replaced by placeholders only when the real package cannot be imported: name → why
STUBBED_IF_MISSING: dict[str, str] = {
    "torchvision": "imported at module level by wan/textimage2video.py (TF, used only by i2v) and "
                   "wan/utils/utils.py (make_grid, used only by save_video); the t2v path calls neither; "
                   "when stubbed, Save_Video is skipped",
}
_TORCHVISION_SUBMODULES = ("torchvision.transforms", "torchvision.transforms.functional", "torchvision.utils")
#: what the driver changes when it runs the official code on the CPU (tests only), name → what
CPU_SHIMS: dict[str, str] = {
    "torch.cuda.current_device": "returns 0 during `import wan` (wan/modules/t5.py evaluates it as a default "
                                 "argument at import time)",
    "Wan2_2_VAE(device=...)": "the VAE is built on the CPU instead of cuda:{device_id}",
    "WanTI2V.device": "set to cpu after construction (noise generator, timesteps, moves)",
    "offload_model / convert_model_dtype": "forced off (offload calls torch.cuda.synchronize(); a bf16 DiT "
                                           "needs CUDA autocast to take the fp32 latents)",
    "config.t5_dtype": "float32 instead of bfloat16: without CUDA autocast the bf16 text context cannot meet "
                       "the fp32 DiT",
    "wan.modules.model.flash_attention": "the official attention function, re-executed from the installed "
                                         "wan/modules/attention.py with asserts stripped (python -O), so its "
                                         "`q.device.type == 'cuda'` assert does not stop a CPU run",
}


# ------------------------------------------------------------------------------------------- import


class _Placeholder:
    """Stands in for a pipeline class of a stubbed module; using it is an error."""

    _module = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"{type(self).__name__} comes from the stubbed module {self._module!r} "
                           f"(wan_enhanced.peers.official_wan stubs it; only the TI2V path is available)")


def _stub_module(name: str, attrs: dict[str, Any] | None = None, package: bool = False) -> types.ModuleType:
    mod = types.ModuleType(name, f"wan_enhanced placeholder for {name} (not the real module)")
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=package)
    if package:
        mod.__path__ = []
    mod.__wan_enhanced_stub__ = True
    for key, value in (attrs or {}).items():
        setattr(mod, key, value)
    return mod


def _placeholder_class(cls_name: str, module: str) -> type:
    return type(cls_name, (_Placeholder,), {"_module": module, "__module__": module})


def _torchvision_importable() -> bool:
    try:
        importlib.import_module("torchvision.transforms.functional")
        importlib.import_module("torchvision.utils")
    except Exception:  # noqa: BLE001 - missing, or a build that does not match torch
        return False
    return True


def install_stubs() -> list[str]:
    """Insert the placeholder modules into ``sys.modules`` (before ``import wan``); returns their names.

    diffusers and transformers are imported first, so their package-availability probes see the real
    environment, not the placeholders.
    """
    import diffusers  # noqa: F401
    import transformers  # noqa: F401

    applied: list[str] = []
    for name, cls_name in (("wan.animate", "WanAnimate"), ("wan.speech2video", "WanS2V")):
        present = sys.modules.get(name)
        if present is None:
            sys.modules[name] = _stub_module(name, {cls_name: _placeholder_class(cls_name, name)})
        elif not getattr(present, "__wan_enhanced_stub__", False):
            continue  # the real module is already imported: nothing to stub
        applied.append(name)
    tv = sys.modules.get("torchvision")
    if tv is not None and getattr(tv, "__wan_enhanced_stub__", False):
        applied += ["torchvision", *_TORCHVISION_SUBMODULES]
    elif not _torchvision_importable():
        for key in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[key]  # a half-imported broken build
        functional = _stub_module("torchvision.transforms.functional")
        transforms = _stub_module("torchvision.transforms", {"functional": functional}, package=True)
        utils = _stub_module("torchvision.utils")
        root = _stub_module("torchvision", {"transforms": transforms, "utils": utils}, package=True)
        sys.modules.update({"torchvision": root, "torchvision.transforms": transforms,
                            "torchvision.transforms.functional": functional, "torchvision.utils": utils})
        applied += ["torchvision", *_TORCHVISION_SUBMODULES]
    return applied


def import_wan(attention: str = "flash", *, cpu: bool = False) -> tuple[types.ModuleType, list[str]]:
    """Install the flash_attn adapter (``attention`` backend) and the stubs, then ``import wan``.

    Returns the ``wan`` package and the stubbed module names. With ``cpu`` (a CPU-only torch), the
    import-time ``torch.cuda.current_device()`` of ``wan/modules/t5.py`` is answered with 0.
    """
    flash_attn_adapter.install(attention)
    stubs = install_stubs()
    if cpu and "wan.modules.t5" not in sys.modules and not torch.cuda.is_available():
        original = torch.cuda.current_device
        torch.cuda.current_device = lambda: 0  # type: ignore[assignment]
        try:
            wan = importlib.import_module("wan")
        finally:
            torch.cuda.current_device = original  # type: ignore[assignment]
    else:
        wan = importlib.import_module("wan")
    attn = sys.modules["wan.modules.attention"]
    if not attn.FLASH_ATTN_2_AVAILABLE or attn.FLASH_ATTN_3_AVAILABLE:
        raise RuntimeError("wan.modules.attention did not pick the flash_attn adapter's FA2 path "
                           f"(FA2={attn.FLASH_ATTN_2_AVAILABLE}, FA3={attn.FLASH_ATTN_3_AVAILABLE})")
    if getattr(attn.flash_attn, "__wan_enhanced_adapter__", False) is not True:
        raise RuntimeError("wan.modules.attention imported a flash_attn that is not the adapter")
    return wan, stubs


# ------------------------------------------------------------------------------------------- timing


class StageClock:
    """CUDA-synchronized wall timers and per-stage peak memory (GiB); the stage dicts of one run."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.stages: list[dict[str, Any]] = []
        self.run_peak_allocated = 0.0
        self.run_peak_reserved = 0.0
        self._open: dict[str, float] = {}

    def now(self) -> float:
        """Wall time after all queued GPU work on the device has finished."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _fold_peaks(self) -> tuple[float | None, float | None]:
        if not self.cuda:
            return None, None
        alloc = torch.cuda.max_memory_allocated(self.device) / GIB
        reserved = torch.cuda.max_memory_reserved(self.device) / GIB
        self.run_peak_allocated = max(self.run_peak_allocated, alloc)
        self.run_peak_reserved = max(self.run_peak_reserved, reserved)
        return alloc, reserved

    def begin(self, name: str) -> float:
        """Open stage ``name``: synchronize, fold the counters into the run peak, reset them."""
        t = self.now()
        if self.cuda:
            self._fold_peaks()
            torch.cuda.reset_peak_memory_stats(self.device)
        self._open[name] = t
        return t

    def end(self, name: str, *, parent: str | None = st.TOTAL.name, comment: str | None = None,
            start: float | None = None, **extra: Any) -> dict[str, Any]:
        """Close stage ``name`` (opened by :meth:`begin`, or from ``start``) and record it."""
        t = self.now()
        t0 = self._open.pop(name, None) if start is None else start
        if t0 is None:
            raise RuntimeError(f"stage {name!r} was never begun")
        alloc, reserved = self._fold_peaks()
        rec = {"name": name, "parent": parent, "duration_s": t - t0, "start_s": t0, "end_s": t,
               "peak_allocated_gb": alloc, "peak_reserved_gb": reserved,
               "memory": {"peak_gb": alloc, "peak_reserved_gb": reserved}, **extra}
        if comment:
            rec["comment"] = comment
        self.stages.append(rec)
        return rec

    @contextmanager
    def stage(self, name: str, **kwargs: Any) -> Iterator[None]:
        """``with clock.stage(name):`` — begin, then end even if the body raises."""
        self.begin(name)
        try:
            yield
        finally:
            self.end(name, **kwargs)


class StepTimer:
    """Times the denoising loop from outside: a DiT forward pre-hook and a wrapped solver ``step``.

    Step 0 starts at the loop's first DiT forward; step ``i`` ends when the solver's ``step`` returns; step
    ``i + 1`` starts there. ``forwards`` counts the DiT forwards of each step.
    """

    def __init__(self, clock: StageClock) -> None:
        self.clock = clock
        self.loop_start: float | None = None
        self.loop_end: float | None = None
        self.step_start: float | None = None
        self.forwards: list[int] = []
        self._pending = 0

    def pre_forward(self, module: torch.nn.Module, args: Any) -> None:
        """Forward pre-hook of the DiT."""
        if self.step_start is None:
            t = self.clock.begin("_step")
            if self.loop_start is None:
                self.loop_start = t
            self.step_start = t
        self._pending += 1

    def after_solver_step(self) -> None:
        """Called when the solver's ``step`` has returned: closes the current step."""
        if self.step_start is None:
            return  # a solver step outside the timed loop
        i = len(self.forwards)
        rec = self.clock.end("_step", parent=st.DENOISING.name, start=self.step_start, forwards=self._pending)
        rec["name"] = st.step_name(i)
        self.forwards.append(self._pending)
        self._pending = 0
        self.loop_end = rec["end_s"]
        self.step_start = None
        self.clock.begin("_step")  # the next step starts where this one ended
        self.step_start = rec["end_s"]

    def close(self) -> None:
        """Drop the open step that follows the last one (it never ran)."""
        self.clock._open.pop("_step", None)
        self.step_start = None


@contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    had = name in vars(obj)
    old = vars(obj).get(name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if had:
            setattr(obj, name, old)
        else:
            delattr(obj, name)


@contextmanager
def _timed_solver_steps(classes: list[type], timer: StepTimer) -> Iterator[None]:
    """Wrap ``step`` of each solver class (restored on exit); the wrapper calls the original unchanged."""
    patches = []
    for cls in classes:
        original = cls.step

        def step(self: Any, *args: Any, _orig: Callable[..., Any] = original, **kwargs: Any) -> Any:
            out = _orig(self, *args, **kwargs)
            timer.after_solver_step()
            return out

        patches.append(_patched(cls, "step", functools.wraps(original)(step)))
    with _stack(patches):
        yield


@contextmanager
def _stack(managers: list[Any]) -> Iterator[None]:
    with ExitStack() as stack:
        for m in managers:
            stack.enter_context(m)
        yield


class _TimedTextEncoder:
    """Proxy for the official ``T5EncoderModel``: ``__call__`` is timed, everything else delegates."""

    def __init__(self, inner: Any, clock: StageClock) -> None:
        self._inner = inner
        self._clock = clock
        self.first_start: float | None = None
        self.last_end: float | None = None
        self.calls = 0
        self.peaks: list[tuple[float | None, float | None]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = self._clock.begin("_text")
        out = self._inner(*args, **kwargs)
        rec = self._clock.end("_text", parent=None)
        self._clock.stages.remove(rec)
        self.peaks.append((rec["peak_allocated_gb"], rec["peak_reserved_gb"]))
        self.first_start = t0 if self.first_start is None else self.first_start
        self.last_end = rec["end_s"]
        self.calls += 1
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _wrap_moves(module: torch.nn.Module, label: str, clock: StageClock, target: torch.device) -> None:
    """Time ``module.to(device)`` / ``module.cpu()`` as ``{label}_to_device`` / ``{label}_offload`` stages."""
    original_to, original_cpu = module.to, module.cpu

    def stage_name(dev: torch.device) -> str:
        return f"{label}_to_device" if dev == target else f"{label}_offload"

    def to(*args: Any, **kwargs: Any) -> Any:
        dev = kwargs.get("device")
        for a in args:
            if isinstance(a, (torch.device, str, int)):
                dev = a
        if dev is None:  # dtype-only conversion: not a move
            return original_to(*args, **kwargs)
        name = stage_name(torch.device(dev) if not isinstance(dev, int) else torch.device("cuda", dev))
        with clock.stage(name, comment=f"{label} .to(), host<->device copy"):
            return original_to(*args, **kwargs)

    def cpu() -> Any:
        with clock.stage(stage_name(torch.device("cpu")), comment=f"{label} .cpu(), device->host copy"):
            return original_cpu()

    object.__setattr__(module, "to", to)
    object.__setattr__(module, "cpu", cpu)


# ----------------------------------------------------------------------------------- tiny overrides


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
def _architecture(wan: types.ModuleType, preset: ModelPreset) -> Iterator[list[str]]:
    """For a non-5B preset, pass its dimensions to the official constructors that hardcode the 5B's."""
    notes: list[str] = []
    if preset.name == TI2V_5B.name:
        yield notes
        return
    t5_mod = sys.modules["wan.modules.t5"]
    vae_mod = sys.modules["wan.modules.vae2_2"]
    t5_dims, vae_dims = _t5_dims(preset), _vae_dims(preset)
    orig_umt5, orig_video_vae = t5_mod.umt5_xxl, vae_mod._video_vae
    with _stack([_patched(t5_mod, "umt5_xxl", lambda **kw: orig_umt5(**{**kw, **t5_dims})),
                 _patched(vae_mod, "_video_vae", lambda **kw: orig_video_vae(**{**kw, **vae_dims}))]):
        notes.append(f"preset {preset.name!r}: official umt5_xxl built with {t5_dims}, _video_vae with "
                     f"{vae_dims}, Wan2_2_VAE with the preset's z_dim/base_dim/dim_mult, DiT text_dim="
                     f"{preset.dit['text_dim']}")
        yield notes


def _vae_kwargs(preset: ModelPreset) -> dict[str, Any]:
    if preset.name == TI2V_5B.name:
        return {}
    vae = preset.vae
    return {"z_dim": vae["z_dim"], "c_dim": vae["base_dim"], "dim_mult": list(vae["dim_mult"]),
            "temperal_downsample": list(vae["temperal_downsample"])}


# ---------------------------------------------------------------------------------------------- run


def _cpu_flash_attention() -> Callable[..., Any]:
    """The installed ``wan/modules/attention.py`` executed again with asserts stripped (CPU tests only)."""
    path = Path(sys.modules["wan.modules.attention"].__file__ or "")
    code = compile(path.read_text(encoding="utf-8"), str(path), "exec", optimize=1)
    mod = types.ModuleType("_wan_enhanced_cpu_attention")
    mod.__file__ = str(path)
    exec(code, mod.__dict__)  # noqa: S102 - the installed official file, nothing else
    return mod.flash_attention


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
    vae_kwargs = _vae_kwargs(preset)
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
        with _patched(orig_model, "ignore_for_config", ignored):
            return orig_model.from_pretrained(*args, **{**kwargs, **dit_kwargs})

    model_proxy = types.SimpleNamespace(from_pretrained=from_pretrained)
    flags = {"task": task, "size": f"{w}*{h}", "frame_num": frame_num, "sample_steps": sample_steps,
             "sample_solver": sample_solver, "guide_scale": guide_scale, "shift": shift, "seed": seed,
             "offload_model": offload_model, "convert_model_dtype": convert_model_dtype, "t5_cpu": t5_cpu,
             "requested": requested, "init_on_cpu": True, "attention": attention, "device": str(dev)}

    with _architecture(wan, preset) as arch_notes, _stack([
            _patched(ti2v_mod, "T5EncoderModel", timed_t5), _patched(ti2v_mod, "Wan2_2_VAE", timed_vae),
            _patched(ti2v_mod, "WanModel", model_proxy)]):
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
    text_encoder = _TimedTextEncoder(pipe.text_encoder, clock)
    pipe.text_encoder = text_encoder
    _wrap_moves(pipe.text_encoder.model, "T5", clock, target)
    _wrap_moves(pipe.model, "DiT", clock, target)
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
        cpu_patch.append(_patched(sys.modules["wan.modules.model"], "flash_attention", _cpu_flash_attention()))
        shims.append("wan.modules.model.flash_attention")
        if not torch.cuda.is_available():
            shims.insert(0, "torch.cuda.current_device")

    t_gen = clock.now()
    try:
        with _timed_solver_steps(solvers, timer), _stack(cpu_patch):
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


__all__ = ["CPU_SHIMS", "OFFICIAL_NEGATIVE_PROMPT", "STUBBED_IF_MISSING", "STUBBED_MODULES", "StageClock",
           "StepTimer", "config_overrides_for", "import_wan", "install_stubs", "run_official"]
