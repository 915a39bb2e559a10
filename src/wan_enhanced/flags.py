"""The one declaration of every ``generate`` flag (official Wan2.2 names).

Why this module is long (~400 lines): it is the table itself — 28 flag declarations with their help and
README text — plus the few functions that render it; splitting the table would split the one declaration.

``GENERATE_FLAGS`` is the source of:

- the argparse parser of ``generate`` (:func:`add_generate_args`),
- the defaults of :class:`~wan_enhanced.config.RunConfig` and the per-value checks of
  :func:`~wan_enhanced.config.validate` (:func:`check_value`),
- the suite config's allowed keys and JSON types (``bench/suite_config.py``),
- the argv the benchmark runner passes to ``generate`` (:func:`to_argv`),
- the README's "## generate flags" table (:func:`render_flag_table`; ``tests/test_flags.py`` fails
  when the README drifts; ``python -m wan_enhanced.flags README.md`` rewrites it).

Kinds (the argparse type and the suite config's JSON type): ``int``, ``float``, ``str``,
``bool`` (official ``str2bool``: passed as True/False), ``switch`` (store_true: passed bare when
true), ``choice`` (a string among ``choices``, checked as soon as it is read — the suite config
checks it when loading), ``size`` (``W*H``), ``device`` (``cuda``, ``cuda:N``, ``cpu``). Other
``choices`` (they may depend on the machine, e.g. ``flash4``) are checked by ``validate``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .fastpath import ATTENTION_BACKENDS, COMPILE_MODES, FUSED_QK_ROPE_MODES, VAE_COMPILE_MODES, VAE_LAYOUTS
from .models.presets import PRESETS, ModelPreset
from .writable import output_problem

SOLVERS = ("unipc", "dpm++")
WEIGHT_KINDS = ("auto", "diffusers", "official", "random")
VAE_DTYPES = ("auto", "fp32", "bf16")
DEFAULT_PROMPT = (
    "Two anthropomorphic cats in comfy boxing gear and bright gloves fight intensely on a spotlighted stage."
)
MAX_SEED = 2**63 - 1
DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")
SIZE_RE = re.compile(r"^[1-9][0-9]*\*[1-9][0-9]*$")
KINDS = ("int", "float", "str", "bool", "switch", "choice", "size", "device")
README_SECTION = "## generate flags"

# A validator gets the value (never None) and the task's preset; it raises ConfigError (one line).
Validator = Callable[[Any, ModelPreset], None]


@dataclass(frozen=True)
class Flag:
    """One ``generate`` flag.

    ``default`` is the value before validation (None: resolved by ``validate``, from the task's
    preset when ``per_task`` names a ``ModelPreset`` attribute). ``readme_default`` replaces the
    rendered default in the README where the rule is not a plain value. ``config`` is False for a
    flag of the command line only (not a ``RunConfig`` field, not a suite config key); ``runner``
    marks a flag the benchmark runner sets itself for every case.
    """

    name: str
    kind: str
    help: str | None
    doc: str
    default: Any = None
    per_task: str | None = None
    readme_default: str | None = None
    choices: tuple[str, ...] | None = None
    validator: Validator | None = None
    config: bool = True
    runner: bool = False

    @property
    def option(self) -> str:
        """The flag as typed: ``--name``."""
        return f"--{self.name}"

    def task_default(self, preset: ModelPreset) -> Any:
        """The default for ``preset``'s task (``default`` when it does not depend on the task)."""
        return getattr(preset, self.per_task) if self.per_task else self.default


# --- validators (value-only rules; cross-flag rules stay in config.validate) -----------------------------


def _finite(flag: str, value: float) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"--{flag}: {value} is not allowed; must be a finite number")


def _size(value: str, p: ModelPreset) -> None:
    if value not in p.sizes:
        raise ConfigError(f"--size: {value!r} is not allowed for task {p.name}; allowed: {', '.join(p.sizes)}")


def _frame_num(value: int, p: ModelPreset) -> None:
    if value < 1 or (value - 1) % 4 != 0:
        raise ConfigError(f"--frame_num: {value} is not allowed; must be 4n+1 and >= 1 (e.g. 81, 121)")


def _sample_steps(value: int, p: ModelPreset) -> None:
    if value < 1:
        raise ConfigError(f"--sample_steps: {value} is not allowed; must be >= 1")


def _sample_shift(value: float, p: ModelPreset) -> None:
    _finite("sample_shift", value)
    if value <= 0:
        raise ConfigError(f"--sample_shift: {value} is not allowed; must be > 0")


def _guide_scale(value: float, p: ModelPreset) -> None:
    _finite("sample_guide_scale", value)
    if value < 0:
        raise ConfigError(f"--sample_guide_scale: {value} is not allowed; must be >= 0")


def _base_seed(value: int, p: ModelPreset) -> None:
    if value > MAX_SEED:
        raise ConfigError(f"--base_seed: {value} is not allowed; must be <= {MAX_SEED} (negative: random)")


def _image(value: str, p: ModelPreset) -> None:
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"--image: {value!r} does not exist or is not a file")
    from .images import ImageError, check_image  # PIL and numpy: imported only when an image is given

    try:
        check_image(path)  # the whole file is decoded: a truncated image fails here, not after the models load
    except ImageError as exc:
        raise ConfigError(f"--image: {exc}") from None


def _ulysses_size(value: int, p: ModelPreset) -> None:
    heads = p.num_heads
    if value < 1 or heads % value != 0:
        divisors = [d for d in range(1, heads + 1) if heads % d == 0]
        raise ConfigError(f"--ulysses_size: {value} does not divide the {heads} attention heads of {p.name}; "
                          f"allowed: {', '.join(map(str, divisors))}")


def _memory_budget(value: float, p: ModelPreset) -> None:
    _finite("memory_budget_gb", value)
    if value <= 0:
        raise ConfigError(f"--memory_budget_gb: {value} is not allowed; must be > 0")


def _device(value: str, p: ModelPreset) -> None:
    if not DEVICE_RE.match(value):
        raise ConfigError(f"--device: {value!r} is not allowed; allowed: cuda, cuda:N, cpu")


def _output_path(flag: str, suffix: str | None) -> Validator:
    """The file must end in ``suffix`` and be writable for real: a file is created and removed in its
    folder (or a folder in the nearest existing ancestor), see ``wan_enhanced.writable``."""

    def check(value: str, p: ModelPreset) -> None:
        if suffix is not None and not value.lower().endswith(suffix):
            raise ConfigError(f"--{flag}: {value!r} is not allowed; must end in {suffix}")
        problem = output_problem(value)
        if problem is not None:
            raise ConfigError(f"--{flag}: {value!r} {problem}")

    return check


def _cache_dir(value: str, p: ModelPreset) -> None:
    """The compile cache folder must accept files (it is created when missing)."""
    from .writable import nearest_existing, os_reason, probe_directory

    path = Path(value)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--cache_dir: {value!r} is not a directory")
    target = path if path.is_dir() else nearest_existing(path)
    try:
        probe_directory(target, "file" if path.is_dir() else "folder")
    except OSError as exc:
        raise ConfigError(f"--cache_dir: {value!r} cannot be used ({target} refuses new files: {os_reason(exc)})"
                          ) from None


# --- the table ---------------------------------------------------------------------------------------------

GENERATE_FLAGS: tuple[Flag, ...] = (
    Flag("task", "choice", f"one of {', '.join(PRESETS)} (default ti2v-5B)",
         " or ".join(f"`{t}`" for t in PRESETS), default="ti2v-5B", choices=tuple(PRESETS)),
    Flag("size", "size", "W*H; ti2v-5B: 1280*704 (default) or 704*1280",
         "`W*H`. ti2v-5B allows `1280*704` and `704*1280` only (the official default `1280*720` is rejected for "
         "this task); tiny: `64*64`, `96*64`, `64*96`, `128*64`",
         per_task="default_size", validator=_size),
    Flag("frame_num", "int", "frames, 4n+1 (default 121 for ti2v-5B)", "frames, 4n+1 (121 = 5 s at 24 fps)",
         per_task="default_frame_num", validator=_frame_num),
    Flag("sample_steps", "int", "denoising steps (default 50)", "denoising steps",
         per_task="default_steps", validator=_sample_steps),
    Flag("sample_shift", "float", "flow shift (default 5.0)", "flow shift",
         per_task="default_shift", validator=_sample_shift),
    Flag("sample_guide_scale", "float", "CFG scale (default 5.0)", "CFG scale; 1 turns the unconditional pass off",
         per_task="default_guide_scale", validator=_guide_scale),
    Flag("sample_solver", "str", f"one of {', '.join(SOLVERS)}", " or ".join(f"`{s}`" for s in SOLVERS),
         default="unipc", choices=SOLVERS),
    Flag("base_seed", "int", None,
         "seed of the initial noise (CPU generator: same noise on every device); negative: a random seed, "
         "recorded in the report", default=42, validator=_base_seed),
    Flag("prompt", "str", None, "the text prompt", default=DEFAULT_PROMPT, readme_default="a fixed test prompt"),
    Flag("negative_prompt", "str", "default: the official negative prompt",
         "negative prompt; defaults to the official Chinese one", readme_default="official"),
    Flag("image", "str", "input image: makes it image→video (transparency composited onto white)",
         "input image: image→video (first latent frame = the encoded image, timestep 0, re-blended every step); "
         "resized and centre-cropped to `--size`; any PIL mode: 16-bit and float greyscale scaled by their range, "
         "transparency composited onto white; decoded whole during validation", validator=_image),
    Flag("ckpt_dir", "str", "diffusers-layout or official-layout checkpoint dir",
         "diffusers-layout or official-layout checkpoint directory (see Checkpoints)"),
    Flag("weights", "str", f"one of {', '.join(WEIGHT_KINDS)}",
         "`auto` (the layout of `--ckpt_dir`; random weights without one), `diffusers`, `official`, `random` "
         "(see Checkpoints)", default="auto", choices=WEIGHT_KINDS),
    Flag("offload_model", "bool",
         "True/False: move each model to CPU when its stage ends (official default: True on one GPU)",
         "only the current stage's model on the GPU; models keep a pinned host copy so moving off is free and "
         "moving on runs at full link speed; the VAE is prefetched during the last step",
         readme_default="True on one GPU, False with several (official)"),
    Flag("t5_cpu", "switch", "run the text encoder on the CPU", "run the text encoder on the CPU", default=False),
    Flag("convert_model_dtype", "switch", "accepted for compatibility with the official flags and ignored "
         "(the DiT is always bf16 here)",
         "accepted for compatibility with the official flags and ignored: the DiT is always bf16 here "
         "(fp32-sensitive modules stay fp32, as diffusers does)", default=False),
    Flag("ulysses_size", "int", "Ulysses sequence-parallel degree (torchrun)",
         "Ulysses sequence-parallel degree: multi-GPU under `torchrun` (below); must divide the attention heads",
         default=1, validator=_ulysses_size),
    Flag("cfg_parallel", "switch",
         "run the cond/uncond CFG passes on two GPU groups (torchrun, N = 2 x ulysses_size)",
         "run the cond/uncond CFG passes on two GPU groups: multi-GPU under `torchrun` (below)", default=False),
    Flag("save_file", "str", "output .mp4 (24 fps)", "mp4, 24 fps", validator=_output_path("save_file", ".mp4")),
    Flag("save_latents", "str", "also save the denoised latents (torch .pt)",
         "also keep the denoised latents (`.pt`)", validator=_output_path("save_latents", None)),
    Flag("report_file", "str", "write the JSON performance report here",
         "JSON report (schema in `docs/report-schema.md`), written even when the run fails",
         validator=_output_path("report_file", ".json"), runner=True),
    Flag("memory_budget_gb", "float", "cap this process's GPU memory (does it fit a 24/16 GB card?)",
         "cap this process's GPU allocator at N GiB: \"does it fit a 24/16 GB card?\"; an OOM is reported as "
         "\"does not fit within N GB\"", validator=_memory_budget),
    Flag("vae_dtype", "str", f"one of {', '.join(VAE_DTYPES)} (auto: bf16 on GPU, fp32 on CPU)",
         "`auto` = bf16 on GPU, fp32 on CPU; `fp32`, `bf16`", default="auto", choices=VAE_DTYPES),
    Flag("compile", "str",
         f"one of {', '.join(COMPILE_MODES)} (auto: regional torch.compile of the DiT blocks on GPU)",
         "`auto` = regional `torch.compile` of the DiT blocks on GPU (first step pays the compile); `none`, "
         "`blocks`", default="auto", choices=COMPILE_MODES),
    Flag("encode_overlap", "bool", "True/False: encode the mp4 while the VAE decodes (default True)",
         "hand each decoded chunk's frames to the H.264 encoder as the VAE produces them, so `Save_Video` overlaps "
         "`VAE_Decoding` (same frames, same file); `False` encodes after decoding", default=True),
    Flag("cache_dir", "str", "compile caches and artifacts (default $WAN_ENHANCED_CACHE_DIR or ~/.cache/wan-enhanced)",
         "where inductor's and Triton's caches and `wan-enhanced warmup`'s portable compile artifacts live (default "
         "`$WAN_ENHANCED_CACHE_DIR`, else `~/.cache/wan-enhanced`); a run loads the artifacts made for its GPU, "
         "packages and settings, and says why when they do not match", readme_default="see text",
         validator=_cache_dir),
    Flag("warmup", "switch", "one untimed warm-up forward before Step_0 (its own Warmup stage)",
         "run the first step's DiT forwards once before `Step_0`, as its own `Warmup` stage (MLPerf-style): compile "
         "and kernel build leave the timed steps; the report's `cold_start_s` and `video_s_warm` say what they cost",
         default=False),
    Flag("attention_backend", "str", f"one of {', '.join(ATTENTION_BACKENDS)}",
         "diffusers attention dispatcher: `auto` (FlashAttention-4 when installed on a compute-capability 9.x/10.x "
         "GPU and not under Ulysses, else SDPA — cuDNN pinned under compile), `native`, `cudnn`, `flash`, "
         "`efficient`, `flash3` (if FlashAttention-3 is installed), `flash4` (if `flash-attn-4` is installed)",
         default="auto", choices=tuple(ATTENTION_BACKENDS)),
    Flag("vae_layout", "str",
         f"one of {', '.join(VAE_LAYOUTS)} (memory layout of the VAE convolutions; same output to rounding)",
         "memory layout of the VAE convolutions: `auto` = `channels_last` on GPU (faster, less memory, same output "
         "to rounding), `contiguous` on CPU", default="auto", choices=VAE_LAYOUTS),
    Flag("vae_compile", "str", f"one of {', '.join(VAE_COMPILE_MODES)} (auto: none; see the README)",
         "`torch.compile` of the VAE decoder's residual blocks: `auto` = `none` (on an H200 the compiled decode saved "
         "1 s but a warm process still spent 12 s compiling it, and it took 3.4 GiB more), `blocks` to measure it",
         default="auto", choices=VAE_COMPILE_MODES),
    Flag("fused_qk_rope", "str", f"one of {', '.join(FUSED_QK_ROPE_MODES)} (auto: on with a GPU and Triton)",
         "the self-attention's q/k RMSNorm + RoPE as one Triton pass on the GPU (the compiled forward on an H200: "
         "0.8295 → 0.8209 s, the same error against fp32): `auto` = `on` on CUDA where Triton is installed, else "
         "`off`; `on`, `off`; not with Ulysses", default="auto", choices=FUSED_QK_ROPE_MODES),
    Flag("device", "device", "cuda (default when present), cuda:N or cpu", "`cuda`, `cuda:N`, `cpu`",
         readme_default="`cuda` if present", validator=_device),
    Flag("quiet", "switch", "no progress bar", "no progress bar", default=False, config=False),
    Flag("flags_file", "str", "read flags from a JSON object {flag: value} (flags on the command line win)",
         "read flags from a JSON object `{flag: value}` (the suite runner passes each case's settings this way, "
         "so a long prompt never meets the OS's argument limit); flags on the command line win", config=False),
)

FLAGS: Mapping[str, Flag] = {f.name: f for f in GENERATE_FLAGS}
# The flags that are RunConfig fields and suite config keys (all but the command-line-only ones).
CONFIG_FLAGS: tuple[Flag, ...] = tuple(f for f in GENERATE_FLAGS if f.config)


def _check_table() -> None:
    for f in GENERATE_FLAGS:
        assert f.kind in KINDS, f"{f.name}: unknown kind {f.kind!r}"
        assert f.kind != "choice" or f.choices, f"{f.name}: a choice flag needs choices"
        assert f.default is None or f.per_task is None, f"{f.name}: default and per_task both set"


_check_table()


# --- values ------------------------------------------------------------------------------------------------


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


def check_choice(flag: Flag, value: Any) -> None:
    """One-line error when ``value`` is not among ``flag.choices``."""
    if flag.choices is not None and value not in flag.choices:
        raise ConfigError(f"{flag.option}: {value!r} is not allowed; allowed: {', '.join(flag.choices)}")


def check_value(flag: Flag, value: Any, preset: ModelPreset) -> None:
    """The flag's own rules (choices, then its validator) for a resolved value; None is not checked."""
    if value is None:
        return
    check_choice(flag, value)
    if flag.validator is not None:
        flag.validator(value, preset)


# --- argparse ----------------------------------------------------------------------------------------------


def _bool_type(name: str) -> Callable[[str], bool]:
    def parse(value: str) -> bool:
        try:
            return parse_bool(value, name)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = "bool"
    return parse


_ARG_TYPES: dict[str, Any] = {"int": int, "float": float}


def add_generate_args(parser: argparse.ArgumentParser, flags: Iterable[Flag] = GENERATE_FLAGS) -> None:
    """Add every declared flag to ``parser`` (choices are checked by validation, for one-line messages)."""
    for f in flags:
        kw: dict[str, Any] = {"default": f.default, "help": f.help}
        if f.kind == "switch":
            kw["action"] = "store_true"
        elif f.kind == "bool":
            kw["type"] = _bool_type(f.name)
        elif f.kind in _ARG_TYPES:
            kw["type"] = _ARG_TYPES[f.kind]
        parser.add_argument(f.option, **kw)


def to_argv(values: Mapping[str, Any]) -> list[str]:
    """Flags as ``generate`` argv, in table order: switches bare when true, bools as True/False."""
    argv: list[str] = []
    for f in GENERATE_FLAGS:
        if f.name not in values or values[f.name] is None:
            continue
        value = values[f.name]
        if f.kind == "switch":
            if value:
                argv.append(f.option)
        elif f.kind == "bool":
            argv += [f.option, "True" if value else "False"]
        elif f.kind == "float":
            argv += [f.option, repr(float(value))]
        else:
            argv += [f.option, str(value)]
    return argv


# --- README ------------------------------------------------------------------------------------------------


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "—"
    if kind == "switch":
        return "on" if value else "off"
    if isinstance(value, str):
        return f"`{value}`"
    return str(value)


def readme_default(flag: Flag) -> str:
    """The README's default column for ``flag``: per task as ``121 (tiny 9)``."""
    if flag.readme_default is not None:
        return flag.readme_default
    if not flag.per_task:
        return _fmt(flag.default, flag.kind)
    first, *others = PRESETS.values()
    main = _fmt(flag.task_default(first), flag.kind)
    differ = [f"{p.name} {_fmt(flag.task_default(p), flag.kind)}" for p in others
              if flag.task_default(p) != flag.task_default(first)]
    return f"{main} ({', '.join(differ)})" if differ else main


def render_flag_table() -> str:
    """The README's generate flag table (Markdown, one row per flag, table order)."""
    rows = ["| flag | default | meaning |", "|---|---|---|"]
    for f in GENERATE_FLAGS:
        rows.append(f"| `{f.option}` | {readme_default(f)} | {f.doc} |".replace("\n", " "))
    return "\n".join(rows) + "\n"


def readme_table(text: str) -> tuple[int, int]:
    """(start, end) character offsets of the table in the README's generate flags section."""
    head = text.index(f"\n{README_SECTION}\n") + len(README_SECTION) + 2
    start = text.index("\n|", head - 1) + 1
    nxt = text.find("\n## ", head)
    if nxt != -1 and start > nxt:
        raise ValueError(f"no table in {README_SECTION!r}")
    end = start
    while end < len(text) and text.startswith("|", end):
        end = text.index("\n", end) + 1 if "\n" in text[end:] else len(text)
    return start, end


def sync_readme(path: str | Path) -> bool:
    """Rewrite the README's flag table from the declaration; True when it changed."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    start, end = readme_table(text)
    new = text[:start] + render_flag_table() + text[end:]
    if new != text:
        p.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":  # python -m wan_enhanced.flags [README.md]
    if len(sys.argv) > 1:
        print("rewritten" if sync_readme(sys.argv[1]) else "up to date")
    else:
        sys.stdout.write(render_flag_table())
