"""Run configuration: task presets, defaults and validation → one ``RunConfig``.

Every check here runs before any weights are loaded, and each failure is a single-line
``ConfigError`` naming the bad value and what is allowed (a ``WeightsError`` for the checkpoint
directory); the CLI turns either into exit code 2.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .fastpath import validate_fastpath
from .flags import (  # noqa: F401 - SOLVERS, WEIGHT_KINDS, VAE_DTYPES, DEFAULT_PROMPT, parse_bool: re-exported
    CONFIG_FLAGS,
    DEFAULT_PROMPT,
    FLAGS,
    MAX_SEED,
    SOLVERS,
    VAE_DTYPES,
    WEIGHT_KINDS,
    check_choice,
    check_value,
    parse_bool,
)
from .models.checkpoint import detect_layout
from .models.flops import video_tokens
from .models.presets import OFFICIAL_NEGATIVE_PROMPT, ModelPreset, get_preset
from .parallel import env_world_size, world_size_needed


def _default(name: str) -> Any:
    """A RunConfig field's default: the flag table's (``wan_enhanced.flags``)."""
    return FLAGS[name].default


@dataclass(frozen=True)
class RunConfig:
    """One generation run. Field names are the official Wan2.2 flag names (``flags.CONFIG_FLAGS``).

    Frozen: :func:`validate` returns a new, fully resolved instance (no ``None`` left where the task
    or the machine gives a default) and nothing changes it afterwards; derive a variant with
    ``dataclasses.replace``.
    """

    task: str = _default("task")
    size: str | None = _default("size")
    frame_num: int | None = _default("frame_num")
    sample_steps: int | None = _default("sample_steps")
    sample_shift: float | None = _default("sample_shift")
    sample_guide_scale: float | None = _default("sample_guide_scale")
    sample_solver: str = _default("sample_solver")
    base_seed: int = _default("base_seed")
    prompt: str = _default("prompt")
    negative_prompt: str | None = _default("negative_prompt")
    image: str | None = _default("image")
    ckpt_dir: str | None = _default("ckpt_dir")
    offload_model: bool | None = _default("offload_model")
    t5_cpu: bool = _default("t5_cpu")
    convert_model_dtype: bool = _default("convert_model_dtype")  # accepted and ignored: the DiT is always bf16
    ulysses_size: int = _default("ulysses_size")
    cfg_parallel: bool = _default("cfg_parallel")
    save_file: str | None = _default("save_file")
    report_file: str | None = _default("report_file")
    save_latents: str | None = _default("save_latents")
    weights: str = _default("weights")
    memory_budget_gb: float | None = _default("memory_budget_gb")
    device: str | None = _default("device")
    vae_dtype: str = _default("vae_dtype")
    compile: str = _default("compile")
    warmup: bool = _default("warmup")
    cache_dir: str | None = _default("cache_dir")
    encode_overlap: bool = _default("encode_overlap")
    attention_backend: str = _default("attention_backend")
    vae_layout: str = _default("vae_layout")
    vae_compile: str = _default("vae_compile")
    fused_qk_rope: str = _default("fused_qk_rope")
    # Filled by validation:
    resolved_weights: str = field(default="", repr=False)
    weights_note: str = field(default="", repr=False)

    @classmethod
    def from_flags(cls, values: dict[str, Any]) -> RunConfig:
        """An unvalidated config from flag values (e.g. parsed argv); None and non-config keys are dropped."""
        names = {f.name for f in CONFIG_FLAGS}
        return cls(**{k: v for k, v in values.items() if k in names and v is not None})

    @property
    def preset(self) -> ModelPreset:
        """The task's architecture preset."""
        return get_preset(self.task)

    @property
    def width_height(self) -> tuple[int, int]:
        """(width, height) in pixels from ``size`` ("W*H", as the official flag)."""
        w, h = self.size.split("*")  # type: ignore[union-attr]
        return int(w), int(h)

    @property
    def is_i2v(self) -> bool:
        """True when an input image makes this an image→video run."""
        return self.image is not None

    @property
    def guidance(self) -> bool:
        """Whether classifier-free guidance (a second, unconditional forward) is used."""
        return self.sample_guide_scale != 1.0

    @property
    def effective_negative_prompt(self) -> str:
        """--negative_prompt, or the official default negative prompt."""
        return OFFICIAL_NEGATIVE_PROMPT if self.negative_prompt is None else self.negative_prompt

    def to_dict(self) -> dict[str, Any]:
        """All run flags, as recorded in reports."""
        d = dataclasses.asdict(self)
        d["weights_requested"] = d.pop("weights")
        d["weights"] = d.pop("resolved_weights")
        d.pop("weights_note")
        return d


def detect_weights(ckpt_dir: str | None, requested: str) -> tuple[str, str]:
    """Resolve --weights against --ckpt_dir. Returns (kind, note).

    A bad flag value is a ConfigError; a checkpoint directory that is missing, unreadable or lacks a
    file of its layout is a WeightsError (from :func:`~wan_enhanced.models.checkpoint.detect_layout`).
    """
    if requested not in WEIGHT_KINDS:
        raise ConfigError(f"--weights: {requested!r} is not allowed; allowed: {', '.join(WEIGHT_KINDS)}")
    if requested == "random":
        note = "random weights (real architecture; time/memory profile is real, the video is noise)"
        if ckpt_dir:
            note += f"; --ckpt_dir {ckpt_dir} ignored"
        return "random", note
    if not ckpt_dir:
        if requested == "auto":
            return "random", (
                "random weights: no --ckpt_dir given (real architecture; time/memory profile is real, "
                "the video is noise)"
            )
        raise ConfigError(f"--weights {requested} needs --ckpt_dir")
    layout = detect_layout(ckpt_dir, None if requested == "auto" else requested)
    return layout, f"{layout} checkpoint from {ckpt_dir}"


def validate(cfg: RunConfig, *, world_size: int | None = None, cuda_available: bool | None = None,
             device_count: int | None = None) -> RunConfig:
    """Check every field of ``cfg`` and return a new, frozen, fully resolved config.

    Task and machine defaults are filled in first, then each flag's own rules (choices and
    validator from the flag table) run in table order, then the rules across flags. The first bad
    value raises a one-line ConfigError (WeightsError for the checkpoint directory).
    """
    check_choice(FLAGS["task"], cfg.task)
    p = get_preset(cfg.task)
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    resolved: dict[str, Any] = {f.name: getattr(cfg, f.name) for f in CONFIG_FLAGS}
    for f in CONFIG_FLAGS:
        if f.per_task and resolved[f.name] is None:
            resolved[f.name] = f.task_default(p)
    if resolved["device"] is None:
        resolved["device"] = "cuda" if cuda_available else "cpu"
    for f in CONFIG_FLAGS:
        check_value(f, resolved[f.name], p)
    r = dataclasses.replace(cfg, **resolved)

    validate_fastpath(r.compile, r.attention_backend, r.ulysses_size, r.vae_layout, r.vae_compile,
                      r.fused_qk_rope)
    from .compile_cache import CompilePrefetch

    CompilePrefetch.check_env()
    from .video import encoder_nice

    encoder_nice()  # WAN_ENHANCED_ENCODER_NICE: a bad value is a one-line error here, before weights load
    ws = env_world_size() if world_size is None else world_size
    w, h = r.width_height
    tokens = video_tokens(r.frame_num, h, w, p.vae_stride, p.patch_size)
    if tokens % r.ulysses_size != 0:
        raise ConfigError(f"--ulysses_size: {r.ulysses_size} does not divide the {tokens} video tokens of "
                          f"{r.size} x {r.frame_num} frames; choose a size/frame_num whose token count it divides")
    if r.cfg_parallel and not r.guidance:
        raise ConfigError("--cfg_parallel needs classifier-free guidance; --sample_guide_scale 1 turns it off")
    needed = world_size_needed(r.ulysses_size, r.cfg_parallel)
    if ws != needed:
        how = f"--ulysses_size {r.ulysses_size}" + (" x 2 (--cfg_parallel)" if r.cfg_parallel else "")
        raise ConfigError(f"{how} needs {needed} processes (torchrun --nproc_per_node {needed}); this run has {ws}")

    device = r.device
    if device.startswith("cuda") and not cuda_available:
        raise ConfigError(f"--device: {device!r} is not available on this machine; allowed: cpu")
    if ":" in device:
        if device_count is None:
            import torch

            device_count = torch.cuda.device_count()
        if int(device.split(":")[1]) >= device_count:
            raise ConfigError(f"--device: {device!r} does not exist; this machine has {device_count} GPU(s): "
                              f"allowed cuda:0 … cuda:{device_count - 1}")
    if r.task != "tiny" and device == "cpu":
        why = "none is available" if not cuda_available else "--device cpu was asked for"
        raise ConfigError(f"--task {r.task} needs a CUDA GPU and {why}; use --task tiny on CPU")
    if r.ulysses_size > 1 and device == "cpu":
        raise ConfigError("--ulysses_size > 1 needs CUDA GPUs (diffusers' context parallelism); "
                          "on CPU only --cfg_parallel runs")
    if r.memory_budget_gb is not None and device == "cpu":
        raise ConfigError("--memory_budget_gb needs a CUDA device (it caps GPU memory); this run is on cpu")
    if r.attention_backend == "flash4":
        import torch

        from .fastpath import fa4_unavailable

        why = fa4_unavailable(torch.device(device))
        if why:
            raise ConfigError(f"--attention_backend flash4: {why}; allowed here: auto, native, cudnn, flash, efficient")

    late: dict[str, Any] = {}
    if r.base_seed < 0:  # official meaning: a random seed, recorded in the report
        late["base_seed"] = random.randint(0, MAX_SEED)
    if r.vae_dtype == "auto":
        # bf16 on GPUs: PSNR >= 40 dB against fp32 (see README, Performance); fp32 on the CPU.
        late["vae_dtype"] = "bf16" if device.startswith("cuda") else "fp32"
    if r.offload_model is None:
        # Official default: offload on a single GPU, not with several.
        late["offload_model"] = ws == 1 and device != "cpu"
    late["resolved_weights"], late["weights_note"] = detect_weights(r.ckpt_dir, r.weights)
    return dataclasses.replace(r, **late)
