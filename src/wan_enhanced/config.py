"""Run configuration: task presets, defaults and validation → one ``RunConfig``.

Every check here runs before any weights are loaded, and each failure is a single-line
``ConfigError`` naming the bad value and what is allowed (the CLI turns it into exit code 2).
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .fastpath import validate_fastpath
from .models.presets import OFFICIAL_NEGATIVE_PROMPT, PRESETS, ModelPreset, get_preset
from .monitor.flops import video_tokens
from .parallel import env_world_size, world_size_needed

SOLVERS = ("unipc", "dpm++")
WEIGHT_KINDS = ("auto", "diffusers", "official", "random")
VAE_DTYPES = ("auto", "fp32", "bf16")
DEFAULT_PROMPT = (
    "Two anthropomorphic cats in comfy boxing gear and bright gloves fight intensely on a spotlighted stage."
)

# Files a diffusers-layout directory (Wan-AI/Wan2.2-TI2V-5B-Diffusers) must hold.
DIFFUSERS_REQUIRED = ("transformer/config.json", "vae/config.json", "text_encoder/config.json", "tokenizer")
# Files an official-layout directory (Wan-AI/Wan2.2-TI2V-5B) must hold.
OFFICIAL_REQUIRED = (
    "config.json",
    "diffusion_pytorch_model.safetensors.index.json",
    "models_t5_umt5-xxl-enc-bf16.pth",
    "Wan2.2_VAE.pth",
    "google/umt5-xxl",
)


@dataclass
class RunConfig:
    """One validated generation run. Field names are the official Wan2.2 flag names."""

    task: str = "ti2v-5B"
    size: str | None = None
    frame_num: int | None = None
    sample_steps: int | None = None
    sample_shift: float | None = None
    sample_guide_scale: float | None = None
    sample_solver: str = "unipc"
    base_seed: int = 42
    prompt: str = DEFAULT_PROMPT
    negative_prompt: str | None = None
    image: str | None = None
    ckpt_dir: str | None = None
    offload_model: bool | None = None
    t5_cpu: bool = False
    convert_model_dtype: bool = False
    ulysses_size: int = 1
    cfg_parallel: bool = False
    save_file: str | None = None
    report_file: str | None = None
    save_latents: str | None = None
    weights: str = "auto"
    memory_budget_gb: float | None = None
    device: str | None = None
    vae_dtype: str = "auto"
    compile: str = "auto"
    attention_backend: str = "auto"
    vae_layout: str = "auto"
    # Filled by validation:
    resolved_weights: str = field(default="", repr=False)
    weights_note: str = field(default="", repr=False)

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


def parse_bool(value: str | bool, name: str) -> bool:
    """Parse the official str2bool flag values (True/False/1/0/yes/no)."""
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("true", "1", "yes", "y", "t"):
        return True
    if v in ("false", "0", "no", "n", "f"):
        return False
    raise ConfigError(f"--{name}: {value!r} is not a boolean; allowed: True, False")


def _missing(root: Path, required: tuple[str, ...]) -> list[str]:
    return [r for r in required if not (root / r).exists()]


def detect_weights(ckpt_dir: str | None, requested: str) -> tuple[str, str]:
    """Resolve --weights against --ckpt_dir. Returns (kind, note) or raises ConfigError."""
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
    root = Path(ckpt_dir)
    if not root.is_dir():
        raise ConfigError(f"--ckpt_dir: {ckpt_dir!r} does not exist or is not a directory")
    if not os.access(root, os.R_OK | os.X_OK):
        raise ConfigError(f"--ckpt_dir: {ckpt_dir!r} is not readable")
    if requested == "auto":
        if not _missing(root, DIFFUSERS_REQUIRED):
            requested = "diffusers"
        elif not _missing(root, OFFICIAL_REQUIRED):
            requested = "official"
        elif (root / "transformer").exists() or (root / "model_index.json").exists():
            requested = "diffusers"
        elif (root / "config.json").exists() or (root / "Wan2.2_VAE.pth").exists():
            requested = "official"
        else:
            raise ConfigError(
                f"--ckpt_dir {ckpt_dir}: neither a diffusers layout (needs {', '.join(DIFFUSERS_REQUIRED)}) "
                f"nor an official layout (needs {', '.join(OFFICIAL_REQUIRED)})"
            )
    required = DIFFUSERS_REQUIRED if requested == "diffusers" else OFFICIAL_REQUIRED
    missing = _missing(root, required)
    if missing:
        raise ConfigError(f"--ckpt_dir {ckpt_dir}: missing {missing[0]} (needed for --weights {requested})")
    return requested, f"{requested} checkpoint from {ckpt_dir}"


def _check_image(path: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--image: {path!r} does not exist or is not a file")
    try:
        from PIL import Image

        with Image.open(p) as im:
            im.verify()
    except Exception as exc:  # noqa: BLE001 - any decoder error means unreadable
        raise ConfigError(f"--image: {path!r} is not a readable image ({type(exc).__name__})") from None


DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")
MAX_SEED = 2**63 - 1


def _check_output_path(flag: str, path: str) -> None:
    """The file's folder must exist or be creatable, and be writable; the path must not be a folder."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"--{flag}: {path!r} is a directory; give a file path")
    parent = p.parent if str(p.parent) else Path(".")
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--{flag}: {path!r} cannot be written ({parent} is not a writable directory)")


def _finite(flag: str, value: float) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"--{flag}: {value} is not allowed; must be a finite number")


def validate(cfg: RunConfig, *, world_size: int | None = None, cuda_available: bool | None = None,
             device_count: int | None = None) -> RunConfig:
    """Fill task defaults into ``cfg`` and check every field; raise ConfigError on the first bad one."""
    if cfg.task not in PRESETS:
        raise ConfigError(f"--task: {cfg.task!r} is not allowed; allowed: {', '.join(PRESETS)}")
    p = cfg.preset
    cfg.size = cfg.size or p.default_size
    cfg.frame_num = p.default_frame_num if cfg.frame_num is None else cfg.frame_num
    cfg.sample_steps = p.default_steps if cfg.sample_steps is None else cfg.sample_steps
    cfg.sample_shift = p.default_shift if cfg.sample_shift is None else cfg.sample_shift
    cfg.sample_guide_scale = p.default_guide_scale if cfg.sample_guide_scale is None else cfg.sample_guide_scale

    if cfg.size not in p.sizes:
        raise ConfigError(f"--size: {cfg.size!r} is not allowed for task {cfg.task}; allowed: {', '.join(p.sizes)}")
    if cfg.frame_num < 1 or (cfg.frame_num - 1) % 4 != 0:
        raise ConfigError(f"--frame_num: {cfg.frame_num} is not allowed; must be 4n+1 and >= 1 (e.g. 81, 121)")
    if cfg.sample_steps < 1:
        raise ConfigError(f"--sample_steps: {cfg.sample_steps} is not allowed; must be >= 1")
    _finite("sample_guide_scale", cfg.sample_guide_scale)
    _finite("sample_shift", cfg.sample_shift)
    if cfg.sample_guide_scale < 0:
        raise ConfigError(f"--sample_guide_scale: {cfg.sample_guide_scale} is not allowed; must be >= 0")
    if cfg.sample_shift <= 0:
        raise ConfigError(f"--sample_shift: {cfg.sample_shift} is not allowed; must be > 0")
    if cfg.sample_solver not in SOLVERS:
        raise ConfigError(f"--sample_solver: {cfg.sample_solver!r} is not allowed; allowed: {', '.join(SOLVERS)}")
    if cfg.vae_dtype not in VAE_DTYPES:
        raise ConfigError(f"--vae_dtype: {cfg.vae_dtype!r} is not allowed; allowed: {', '.join(VAE_DTYPES)}")
    validate_fastpath(cfg.compile, cfg.attention_backend, cfg.ulysses_size, cfg.vae_layout)
    if cfg.base_seed > MAX_SEED:
        raise ConfigError(f"--base_seed: {cfg.base_seed} is not allowed; must be <= {MAX_SEED} (negative: random)")
    if cfg.base_seed < 0:  # official meaning: a random seed, recorded in the report
        cfg.base_seed = random.randint(0, MAX_SEED)
    heads = p.num_heads
    if cfg.ulysses_size < 1 or heads % cfg.ulysses_size != 0:
        divisors = [d for d in range(1, heads + 1) if heads % d == 0]
        raise ConfigError(
            f"--ulysses_size: {cfg.ulysses_size} does not divide the {heads} attention heads of {cfg.task}; "
            f"allowed: {', '.join(map(str, divisors))}"
        )
    ws = env_world_size() if world_size is None else world_size
    w, h = cfg.width_height
    tokens = video_tokens(cfg.frame_num, h, w, p.vae_stride, p.patch_size)
    if tokens % cfg.ulysses_size != 0:
        raise ConfigError(f"--ulysses_size: {cfg.ulysses_size} does not divide the {tokens} video tokens of "
                          f"{cfg.size} x {cfg.frame_num} frames; choose a size/frame_num whose token count it divides")
    if cfg.cfg_parallel and not cfg.guidance:
        raise ConfigError("--cfg_parallel needs classifier-free guidance; --sample_guide_scale 1 turns it off")
    needed = world_size_needed(cfg.ulysses_size, cfg.cfg_parallel)
    if ws != needed:
        how = f"--ulysses_size {cfg.ulysses_size}" + (" x 2 (--cfg_parallel)" if cfg.cfg_parallel else "")
        raise ConfigError(f"{how} needs {needed} processes (torchrun --nproc_per_node {needed}); this run has {ws}")
    if cfg.memory_budget_gb is not None:
        _finite("memory_budget_gb", cfg.memory_budget_gb)
    if cfg.memory_budget_gb is not None and cfg.memory_budget_gb <= 0:
        raise ConfigError(f"--memory_budget_gb: {cfg.memory_budget_gb} is not allowed; must be > 0")
    if cfg.image is not None:
        _check_image(cfg.image)
    if cfg.save_file is not None and not cfg.save_file.lower().endswith(".mp4"):
        raise ConfigError(f"--save_file: {cfg.save_file!r} is not allowed; must end in .mp4")
    if cfg.report_file is not None and not cfg.report_file.lower().endswith(".json"):
        raise ConfigError(f"--report_file: {cfg.report_file!r} is not allowed; must end in .json")
    for flag in ("save_file", "report_file", "save_latents"):
        if getattr(cfg, flag) is not None:
            _check_output_path(flag, getattr(cfg, flag))

    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if cfg.device is None:
        cfg.device = "cuda" if cuda_available else "cpu"
    if not DEVICE_RE.match(cfg.device):
        raise ConfigError(f"--device: {cfg.device!r} is not allowed; allowed: cuda, cuda:N, cpu")
    if cfg.device.startswith("cuda") and not cuda_available:
        raise ConfigError(f"--device: {cfg.device!r} is not available on this machine; allowed: cpu")
    if ":" in cfg.device:
        if device_count is None:
            import torch

            device_count = torch.cuda.device_count()
        if int(cfg.device.split(":")[1]) >= device_count:
            raise ConfigError(f"--device: {cfg.device!r} does not exist; this machine has {device_count} GPU(s): "
                              f"allowed cuda:0 … cuda:{device_count - 1}")
    if cfg.task != "tiny" and cfg.device == "cpu":
        why = "none is available" if not cuda_available else "--device cpu was asked for"
        raise ConfigError(f"--task {cfg.task} needs a CUDA GPU and {why}; use --task tiny on CPU")
    if cfg.ulysses_size > 1 and cfg.device == "cpu":
        raise ConfigError("--ulysses_size > 1 needs CUDA GPUs (diffusers' context parallelism); "
                          "on CPU only --cfg_parallel runs")
    if cfg.memory_budget_gb is not None and cfg.device == "cpu":
        raise ConfigError("--memory_budget_gb needs a CUDA device (it caps GPU memory); this run is on cpu")
    if cfg.attention_backend == "flash4":
        import torch

        from .fastpath import fa4_unavailable

        why = fa4_unavailable(torch.device(cfg.device))
        if why:
            raise ConfigError(f"--attention_backend flash4: {why}; allowed here: auto, native, cudnn, flash, efficient")
    if cfg.vae_dtype == "auto":
        # bf16 on GPUs: PSNR >= 40 dB against fp32 (see README, Performance); fp32 on the CPU.
        cfg.vae_dtype = "bf16" if cfg.device.startswith("cuda") else "fp32"
    if cfg.offload_model is None:
        # Official default: offload on a single GPU, not with several.
        cfg.offload_model = ws == 1 and cfg.device != "cpu"
    cfg.resolved_weights, cfg.weights_note = detect_weights(cfg.ckpt_dir, cfg.weights)
    return cfg
