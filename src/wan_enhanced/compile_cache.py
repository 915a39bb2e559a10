"""Compile caches that persist and travel: one project cache directory, and torch's portable compile artifacts.

Inductor's, Triton's and FlashAttention-4's (CuTe DSL, switched on) on-disk caches go under one directory (``--cache_dir``, else ``$WAN_ENHANCED_CACHE_DIR``,
else ``$XDG_CACHE_HOME/wan-enhanced`` or ``~/.cache/wan-enhanced``), so a second run on a machine reuses the
first one's kernels and the directory can be copied to another machine. ``wan-enhanced warmup`` also saves
``torch.compiler.save_cache_artifacts()`` there under a *key* — GPU, compute capability, driver, Python / torch /
Triton / CUDA / diffusers versions, and the settings that shape the compiled graphs — and a run whose key matches loads
them (``torch.compiler.load_cache_artifacts``) before anything compiles. Artifacts made for another key are
never loaded: the run says which field differs, instead of silently compiling from scratch. A user's own
``TORCHINDUCTOR_CACHE_DIR`` / ``TRITON_CACHE_DIR`` are respected and said. Warmup also packs the inductor and Triton
folders (when they are this directory's own), and with FlashAttention-4 its compiled kernels (torch's artifacts do not hold them), beside the artifacts;
a matching run restores them first, never replacing a file, so a fresh machine starts as a copied folder would.

Why this module is long (~520 lines): the cache folder, the key, the artifacts with the compilers' folders, the AOT-cache
marks for diffusers' ``sdpa_kernel``, the compile clock and the background set-up all answer one question — what
a process must compile and what it can reuse — and change together when torch's caching does.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

CACHE_ENV = "WAN_ENHANCED_CACHE_DIR"
TOOL_DIRS = {"TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton",
             "FLASH_ATTENTION_CUTE_DSL_CACHE_DIR": "fa4_cute"}
#: FlashAttention-4's CuTe DSL disk cache is off unless this is "1" (read when flash_attn.cute is imported)
FA4_CACHE_SWITCH = "FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED"
#: the settings of a run that change what is compiled (besides the machine and the packages)
KEY_SETTINGS = ("task", "size", "frame_num", "compile", "attention_backend", "vae_dtype", "vae_layout",
                "vae_compile", "fused_qk_rope", "sample_guide_scale", "ulysses_size", "cfg_parallel")


def default_cache_dir() -> Path:
    """``$WAN_ENHANCED_CACHE_DIR``, else ``$XDG_CACHE_HOME/wan-enhanced``, else ``~/.cache/wan-enhanced``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wan-enhanced"


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def machine_key(device: Any) -> dict[str, Any]:
    """What a compiled kernel depends on of the machine and the packages (``None`` where not known)."""
    import sys

    import torch

    key: dict[str, Any] = {"python": f"{sys.version_info.major}.{sys.version_info.minor}",
                           "torch": torch.__version__, "cuda": torch.version.cuda, "triton": _version("triton"),
                           "diffusers": _version("diffusers"), "flash_attn_4": _version("flash-attn-4"),
                           "gpu": None, "compute_capability": None, "driver": None}
    if getattr(device, "type", None) == "cuda" and torch.cuda.is_available():
        idx = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        key["gpu"], key["compute_capability"] = props.name, f"{props.major}.{props.minor}"
        from .monitor.system import _driver_version

        key["driver"] = _driver_version()
    return key


def cache_key(device: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """The artifacts' key: the machine's and the compile-shaping settings (resolved values)."""
    return {**machine_key(device), **{k: settings.get(k) for k in KEY_SETTINGS}}


def key_id(key: dict[str, Any]) -> str:
    """A short stable name of a key (its file name in the cache)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class CacheState:
    """What the run did with the caches (the report's ``run.compile_cache``)."""

    dir: str
    env: dict[str, str] = field(default_factory=dict)  # the tool cache variables in force, and who set them
    artifacts: str = "none"  # loaded | none | mismatch | not needed | failed
    reason: str = ""
    key_id: str | None = None
    seconds: float | None = None
    prefetch: CompilePrefetch | dict[str, Any] | None = None  # the compiler's set-up in the background, or why not

    def to_dict(self) -> dict[str, Any]:
        """As recorded in reports."""
        out = asdict(replace(self, prefetch=None))
        out["prefetch"] = self.prefetch.to_dict() if isinstance(self.prefetch, CompilePrefetch) else self.prefetch
        return out


def use_cache_dir(cache_dir: Path) -> dict[str, str]:
    """Point inductor and Triton at ``cache_dir`` unless the user set them; returns ``{variable: 'path (by …)'}``."""
    out = {}
    torch_default = _torch_default_inductor_dir()
    for var, sub in TOOL_DIRS.items():
        # inductor writes its default into the environment the first time it looks: that one is not the user's
        if os.environ.get(var) and not (var == "TORCHINDUCTOR_CACHE_DIR" and os.environ[var] == torch_default):
            out[var] = f"{os.environ[var]} (set by the user)"
            continue
        path = cache_dir / sub
        path.mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(path)
        out[var] = f"{path} (set by wan-enhanced)"
    if FA4_CACHE_SWITCH not in os.environ:
        os.environ[FA4_CACHE_SWITCH] = "1"
        out[FA4_CACHE_SWITCH] = "1 (set by wan-enhanced)"
    else:
        out[FA4_CACHE_SWITCH] = f"{os.environ[FA4_CACHE_SWITCH]} (set by the user)"
    import sys

    if "flash_attn.cute.cache_utils" in sys.modules:  # read at its import: too late for this process
        out["FLASH_ATTENTION_CUTE_DSL_CACHE_DIR"] += "; flash_attn.cute was imported before: not in effect here"
    return out


def _torch_default_inductor_dir() -> str | None:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir as torch_default

        return str(torch_default())
    except Exception:  # noqa: BLE001 - a torch without it: every set value counts as the user's
        return None


def artifacts_dir(cache_dir: Path) -> Path:
    """Where the portable artifacts and their key files are."""
    return cache_dir / "artifacts"


#: the tool caches packed beside torch's artifacts, each as ``<key id>.<part>.tar``: part -> (its folder's variable,
#: the file ending that travels, or None: every cache file). Torch's artifacts do not hold FA4's kernels at all, and
#: with only them a fresh H200 machine's ``Step_0`` took 6.25 s against 4.65 s with the whole cache folder copied
#: (benchmark/results/h200/s10, one fresh machine each): the inductor and Triton folders travel too.
CACHE_PARTS: dict[str, tuple[str, str | None]] = {"fa4": ("FLASH_ATTENTION_CUTE_DSL_CACHE_DIR", ".o"),
                                                  "inductor": ("TORCHINDUCTOR_CACHE_DIR", None),
                                                  "triton": ("TRITON_CACHE_DIR", None)}


def _part_dir(part: str) -> Path | None:
    """The folder of cache ``part`` in this process (FA4's only when its disk cache is on), else None."""
    d = os.environ.get(CACHE_PARTS[part][0])
    if part == "fa4" and os.environ.get(FA4_CACHE_SWITCH) != "1":
        return None
    return Path(d) if d else None


#: the most a whole tool folder (inductor's, Triton's) may pack: the H200 job's were 2.9 + 2.6 MB (h200/s10)
PART_MAX_BYTES = 256 * 2**20


def _packable(cache_dir: Path, part: str, src: Path) -> str | None:
    """Why ``src`` (the folder of ``part``) is not packed whole, or None: inductor's and Triton's folders travel
    only when they are this cache directory's own (below it, not holding its artifacts): a user's own folder may be
    shared with other work and is left alone."""
    if CACHE_PARTS[part][1] is not None:  # FA4's kernels (one file type) travel from wherever its cache is
        return None
    try:
        root, folder = cache_dir.resolve(), src.resolve()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    if folder == root or not folder.is_relative_to(root) or artifacts_dir(root).is_relative_to(folder):
        return f"{src} is not this cache directory's own folder ({CACHE_PARTS[part][0]} set by the user)"
    return None


def _triton_group_rewrite(folder: Path) -> Callable[[str], Callable[[bytes], bytes] | None]:
    """Triton's ``__grp__*.json`` name their files by absolute path (``child_paths``) on the machine they were made
    on, and a group whose files are missing is a cache miss: point each at its file restored in ``folder``."""
    def rewrite(name: str) -> Callable[[bytes], bytes] | None:
        member = PurePosixPath(name)
        if not (member.name.startswith("__grp__") and member.name.endswith(".json")):
            return None

        def relocate(data: bytes) -> bytes:
            try:
                grp = json.loads(data)
                paths = grp["child_paths"]
                grp["child_paths"] = {c: str(folder / member.parent / PurePosixPath(p).name)
                                      if PurePosixPath(p).parent.name == member.parent.name else p
                                      for c, p in paths.items()}
            except (ValueError, KeyError, TypeError, AttributeError):
                return data  # not a group file Triton wrote: as it is (Triton treats a bad one as a miss)
            return json.dumps(grp).encode()
        return relocate
    return rewrite


def bundle_path(cache_dir: Path, kid: str, part: str) -> Path:
    """The tar of cache ``part`` saved beside the artifacts of key ``kid``."""
    return artifacts_dir(cache_dir) / f"{kid}.{part}.tar"


def _restore_part(cache_dir: Path, kid: str, part: str) -> str | None:
    """Unpack cache ``part`` saved with the artifacts into this process's folder of it; what happened (None: no
    bundle). Files already there are kept."""
    from .file_bundle import BundleError, unpack

    src = bundle_path(cache_dir, kid, part)
    if not src.is_file():
        return None
    dest = _part_dir(part)
    if dest is None:
        why = "its disk cache is off here" if part == "fa4" else f"{CACHE_PARTS[part][0]} is not set"
        return f"{part} not restored ({why})"
    try:
        n = unpack(src, dest, CACHE_PARTS[part][1], rewrite=_triton_group_rewrite(dest) if part == "triton" else None)
    except BundleError as exc:  # a broken bundle costs only the compiling of what it did not restore
        return f"{part} not all restored ({exc}; {exc.count.written} written before: the rest is compiled again)"
    refused = f", {n.refused} refused" if n.refused else ""
    return f"{part} {n.written} restored ({n.bytes / 2**20:.1f} MiB), {n.present} already there{refused}"


def _restore_parts(cache_dir: Path, kid: str) -> str:
    """Every cache part saved with the artifacts of ``kid``, restored: '' when there are none, else '; cache
    files: …' for the reason."""
    said = [r for r in (_restore_part(cache_dir, kid, part) for part in CACHE_PARTS) if r is not None]
    return "; cache files: " + "; ".join(said) if said else ""


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [f"{k} {b.get(k)!r} (this run: {a.get(k)!r})" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def load_artifacts(cache_dir: Path, key: dict[str, Any]) -> tuple[str, str]:
    """Load the artifacts made for ``key``: ``("loaded" | "none" | "mismatch" | "failed", reason)``."""
    import time

    import torch

    folder = artifacts_dir(cache_dir)
    kid = key_id(key)
    blob = folder / f"{kid}.bin"
    if blob.is_file():
        t0 = time.perf_counter()
        parts = _restore_parts(cache_dir, kid)  # restored first (as in a copied folder), and whatever torch's part does
        try:
            torch.compiler.load_cache_artifacts(blob.read_bytes())
        except Exception as exc:  # noqa: BLE001 - a broken file: compile from scratch, and say so
            return "failed", f"{blob}: {type(exc).__name__}: {str(exc)[:200]}; compiling from scratch{parts}"
        took = time.perf_counter() - t0  # the cache files' restoring included
        return "loaded", f"{blob} ({blob.stat().st_size / 2**20:.1f} MiB; {took:.2f} s with its cache files){parts}"
    others = []
    for meta in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            others.append(json.loads(meta.read_text(encoding="utf-8"))["key"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if not others:
        return "none", f"no artifacts in {folder}: run `wan-enhanced warmup` with this run's flags to make them"
    nearest = min(others, key=lambda o: len(_differences(key, o)))
    return "mismatch", (f"artifacts in {folder} were made for another setup — " + "; ".join(
        _differences(key, nearest)) + ": not loaded (compiling from scratch; `wan-enhanced warmup` here makes "
        "matching ones)")


def save_artifacts(cache_dir: Path, key: dict[str, Any]) -> Path | None:
    """Save this process's compile artifacts under ``key``; ``None`` when torch produced none.

    Beside them go the tool caches of :data:`CACHE_PARTS` (``<key id>.<part>.tar``; FA4's only when
    ``key["attention_backend"] == "flash4"``), which ``load_artifacts`` restores. The key file's ``cache_parts`` says
    per part what was packed (null: nothing; ``{"skipped": why}``: a user's own inductor or Triton folder, left
    alone; ``{"error": …}``: packing failed, the rest is saved all the same); the key file is written last. A folder
    holds what this machine compiled for every setup, so each key's bundle carries the others' kernels too.
    """
    import tarfile

    import torch

    from .atomic import atomic_output
    from .file_bundle import BundleError, pack

    got = torch.compiler.save_cache_artifacts()
    if got is None:
        return None
    data, info = got
    folder = artifacts_dir(cache_dir)
    kid = key_id(key)
    with atomic_output(folder / f"{kid}.bin") as tmp:
        tmp.write_bytes(data)
    parts: dict[str, dict[str, Any] | None] = {}
    for part, (_, suffix) in CACHE_PARTS.items():
        src = _part_dir(part) if part != "fa4" or key.get("attention_backend") == "flash4" else None
        bundle = bundle_path(cache_dir, kid, part)
        skip = _packable(cache_dir, part, src) if src is not None else None
        try:
            packed = pack(src, suffix, bundle, max_bytes=PART_MAX_BYTES) if src is not None and not skip else None
            parts[part] = ({"skipped": skip} if skip else
                           {"files": packed.written, "bytes": packed.bytes} if packed is not None else None)
        except (OSError, tarfile.TarError, BundleError) as exc:  # torch's artifacts stand on their own: say why
            parts[part] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        if parts[part] is None or "files" not in parts[part]:
            bundle.unlink(missing_ok=True)  # an older bundle under this key is not this warmup's: never restored
    meta = {"key": key, "bytes": len(data), "info": {k: len(v) for k, v in vars(info).items()
                                                     if isinstance(v, list)} if info is not None else None,
            "cache_parts": parts}
    with atomic_output(folder / f"{kid}.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return folder / f"{kid}.bin"


class CompilePrefetch:
    """The compiler's per-process set-up, done in a background thread while the weights load.

    A warm process's first compile still imports inductor (~550 modules) and computes the caches' keys, which hash
    torch's and Triton's own files (Triton's ~500 MB ``libtriton.so`` among them) — about 2.4 s measured on this
    project's 2-core CPU machine (one run: 0.9 s imports, 1.4 s keys, torch 2.13 + Triton 3.9), time torch charges to the
    first compile (``Step_0``). ``start`` runs exactly that work in a thread (torch caches the results per process:
    ``torch_key``, ``CacheBase.get_system``). It starts after the artifacts are loaded (which import part of inductor
    themselves) and ``join`` is called before anything else touches the compiler — the first thing ``apply_vae`` (a
    compiled VAE) and ``apply_dit`` (FA4, the Triton op, the compile) do — so the only imports beside it are the
    model loaders'; ``join`` says how long it waited. The thread's own torch timers land in ``run.compile_time`` under
    the stage that ended next (a load stage). ``WAN_ENHANCED_COMPILE_PREFETCH=0`` switches it off (to measure it).

    ``imports``: modules the thread imports after that — FlashAttention-4's (``wan_enhanced.attention_fa4``, which
    imports ``flash_attn.cute`` and the CuTe DSL) when the run uses FA4: ``Prepare_DiT``'s ``fa4_activation`` was
    that import, 3.7–4.7 s on an H200 (``h200/s11/g``). ``WAN_ENHANCED_FA4_PREFETCH=0`` leaves it to
    ``Prepare_DiT``. A failed import is only recorded: FA4's activation imports again and says why.
    """

    ENV = "WAN_ENHANCED_COMPILE_PREFETCH"
    FA4_ENV = "WAN_ENHANCED_FA4_PREFETCH"
    WHAT = "import torch._inductor.compile_fx; torch_key(); CacheBase.get_system() (in a thread)"

    def __init__(self, device_index: int | None = None, imports: tuple[str, ...] = ()) -> None:
        import threading

        self.device_index = device_index  # the run's GPU: get_system() reads the current device's name
        self.imports = imports
        self.what = self.WHAT if not imports else self.WHAT.replace(" (in a thread)", "; import " +
                                                                    ", ".join(imports) + " (in a thread)")
        self.parts: dict[str, float] = {}  # the thread's seconds: "compiler", then each module of ``imports``
        self.seconds: float | None = None
        self.wait_s: float | None = None
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="wan-enhanced-compile-prefetch", daemon=True)

    @classmethod
    def enabled(cls) -> bool:
        """Unless ``WAN_ENHANCED_COMPILE_PREFETCH`` is ``0``."""
        return os.environ.get(cls.ENV, "1").strip() != "0"

    @classmethod
    def fa4_enabled(cls) -> bool:
        """Unless ``WAN_ENHANCED_FA4_PREFETCH`` is ``0``: FA4's import goes into the thread."""
        return os.environ.get(cls.FA4_ENV, "1").strip() != "0"

    @classmethod
    def check_env(cls) -> None:
        """A one-line ``ConfigError`` for a value of ``WAN_ENHANCED_COMPILE_PREFETCH`` or
        ``WAN_ENHANCED_FA4_PREFETCH`` other than 0 or 1."""
        for env in (cls.ENV, cls.FA4_ENV):
            value = os.environ.get(env)
            if value is not None and value.strip() not in ("0", "1"):
                from .errors import ConfigError

                raise ConfigError(f"{env}: {value!r} is not allowed; allowed: 0 (off), 1 (on, the default)")

    @classmethod
    def switched_off(cls) -> dict[str, Any]:
        """The report's entry when a compiled run had it switched off."""
        return {"what": cls.WHAT, "enabled": False, "why": f"{cls.ENV}=0", "seconds": None, "parts": {},
                "wait_s": None, "error": None}

    def start(self) -> CompilePrefetch:
        """Begin in the background (Dynamo is imported here first, in the calling thread)."""
        import torch._dynamo  # noqa: F401 - the thread then imports only inductor's own modules

        self._thread.start()
        return self

    def _run(self) -> None:
        import time

        t0 = time.perf_counter()
        try:
            import torch

            if self.device_index is not None:  # a new thread's current device is GPU 0
                torch.cuda.set_device(self.device_index)
            import torch._inductor.compile_fx  # noqa: F401 - the import is the work
            from torch._inductor.codecache import CacheBase, torch_key

            torch_key()
            CacheBase.get_system()  # Triton's key and the GPU's name
        except Exception as exc:  # noqa: BLE001 - the compile does this work itself then; said in the report
            self.error = f"{type(exc).__name__}: {exc}"[:300]
        self.parts["compiler"] = round(time.perf_counter() - t0, 4)
        for name in self.imports:
            t1 = time.perf_counter()
            try:
                importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001 - its user imports it again and says why
                self.error = "; ".join(filter(None, [self.error, f"import {name}: {type(exc).__name__}: {exc}"[:300]]))
            self.parts[name] = round(time.perf_counter() - t1, 4)
        self.seconds = round(time.perf_counter() - t0, 4)

    def join(self, timeout: float | None = None) -> float:
        """Wait for the thread (if it was started; at most ``timeout`` s); returns the seconds waited (``wait_s``
        adds up every join)."""
        import time

        t0 = time.perf_counter()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        waited = time.perf_counter() - t0
        self.wait_s = round((self.wait_s or 0.0) + waited, 4)  # all joins together (a compiled VAE's, the DiT's)
        return round(waited, 4)

    def to_dict(self) -> dict[str, Any]:
        """As recorded in reports (``run.compile_cache.prefetch``)."""
        return {"what": self.what, "enabled": True, "why": None, "seconds": self.seconds, "parts": dict(self.parts),
                "wait_s": self.wait_s, "error": self.error}


#: the torch helpers Dynamo writes into a graph for ``with torch.nn.attention.sdpa_kernel(...)`` (diffusers'
#: ``_native_*`` attention backends run attention inside one); the names AOT autograd's cache check builds
SDPA_KERNEL_HELPERS = ("torch.nn.attention._backend_from_string", "torch.nn.attention._sdpa_kernel")


def allow_sdpa_kernel_graphs_in_cache() -> dict[str, str]:
    """Let AOT autograd's cache keep graphs that hold an ``sdpa_kernel`` block; returns ``{helper: cache key}``.

    AOT autograd's cache refuses a graph holding a private torch function (``check_node_safe``), and Dynamo writes
    ``sdpa_kernel``'s enter and exit as calls to two private helpers of ``torch.nn.attention``. So every process
    re-traced the compiled blocks and re-ran the joint-graph passes (``autograd_cache_bypass``), even with warm
    caches or loaded artifacts; inductor's own cache still hit. The helpers only set which SDPA kernels are allowed,
    with the backends as literal arguments in the graph (so in the cache key); this marks them cacheable through
    torch's own knob (``torch._inductor.config.unsafe_marked_cacheable_functions``), keyed by what else decides the
    kernel at trace time: the torch version, SDPA's priority order and the flash-attention implementation in force
    (call it after FA4 is activated). The compiled code is the same either way.
    """
    import torch
    import torch.nn.attention as attn

    try:
        order = ",".join(str(int(b)) for b in torch._C._get_sdp_priority_order())
    except Exception:  # noqa: BLE001 - no priority API in this torch: the version alone
        order = "unknown"
    impl = attn.current_flash_attention_impl() if hasattr(attn, "current_flash_attention_impl") else None
    value = f"torch {torch.__version__}; sdp priority {order}; flash impl {impl or 'default'}"
    marked = {name: value for name in SDPA_KERNEL_HELPERS if hasattr(attn, name.rsplit(".", 1)[1])}
    knob = torch._inductor.config.unsafe_marked_cacheable_functions
    torch._inductor.config.unsafe_marked_cacheable_functions = {**knob, **marked}
    return marked


def refresh_sdpa_kernel_marks() -> None:
    """Re-key the marks of ``allow_sdpa_kernel_graphs_in_cache`` if this process set them (the flash-attention
    implementation or SDPA's priority order changed): a graph traced under another kernel choice is never reused."""
    import torch

    if any(name in torch._inductor.config.unsafe_marked_cacheable_functions for name in SDPA_KERNEL_HELPERS):
        allow_sdpa_kernel_graphs_in_cache()


class CompileClock:
    """Where the run's compile time went: torch's own compile timers and cache counters, split by stage.

    A monitor listener (``on_stage_end``): at each stage's end it reads torch's cumulative compile timers
    (``torch._dynamo.utils.calculate_time_spent``: Dynamo tracing and guards, AOT autograd, inductor, the wait for
    async kernel compiles; plus every finer timer of ``compilation_time_metrics`` — they nest, so they do not add up
    — of which ``DETAIL`` names those that say what a warm cache still costs) and the compile caches' hit / miss
    counters, and charges what grew since the last read
    to the stage that ended (stages nest, so that is the innermost one running then; time between two stages goes
    to the next one to end). ``flush(name)`` charges what is left to a stage that failed (its end is not heard). Time a kernel library spends building its own kernels outside
    torch.compile (FlashAttention-4's CuTe DSL) is not in these timers.
    """

    SOURCE = ("torch._dynamo.utils.calculate_time_spent() and compilation_time_metrics (seconds), "
              "torch._dynamo.utils.counters (cache hits / misses); cumulative in this process, charged to the "
              "stage that ended")
    #: finer timers read first: Dynamo's bytecode tracing and guards, loading a cached compiled graph (AOT autograd's
    #: and inductor's caches), inductor's module load, the wait for kernels compiled in the background; always kept
    #: when they grew, the other timers of ``compilation_time_metrics`` only from ``MIN_S`` on
    DETAIL = ("bytecode_tracing", "build_guards", "AOTAutogradCache.inductor_load", "PyCodeCache.load_by_key_path",
              "async_compile.wait")
    MIN_S = 1e-3
    #: cache counters: (counters group, key)
    COUNTERS = (("aot_autograd", "autograd_cache_hit"), ("aot_autograd", "autograd_cache_miss"),
                ("aot_autograd", "autograd_cache_bypass"), ("inductor", "fxgraph_cache_hit"),
                ("inductor", "fxgraph_cache_miss"), ("inductor", "fxgraph_cache_bypass"),
                ("stats", "unique_graphs"))

    def __init__(self) -> None:
        self._last = self._read() or ({}, {})
        self.by_stage: dict[str, dict[str, float]] = {}
        self.counts_by_stage: dict[str, dict[str, int]] = {}

    @classmethod
    def _read(cls) -> tuple[dict[str, float], dict[str, int]] | None:
        """torch's cumulative timers and counters now; ``None`` if they could not be read this time."""
        try:
            from torch._dynamo.utils import calculate_time_spent, compilation_time_metrics, counters

            times = {k: float(v) for k, v in calculate_time_spent().items()}
            # every timer torch keeps ("~": the minor ones); copied first, as CompilePrefetch's thread may add some
            for k, v in list(dict(compilation_time_metrics).items()):
                if k not in times:
                    times[k if k in cls.DETAIL else f"~{k}"] = float(sum(list(v)))
            counts = {f"{g}.{k}": int(counters[g][k]) for g, k in cls.COUNTERS if counters[g][k]}
            return times, counts
        except Exception:  # noqa: BLE001 - a torch without these timers, or a read racing the prefetch thread
            return None

    def on_stage_end(self, rec: Any) -> None:
        """Monitor listener: charge the compile time that grew during ``rec`` to it (never raises)."""
        now = self._read()
        if now is None:  # keep the last reading: what grew goes to the next stage that reads, never twice
            return
        (t_now, c_now), (t_last, c_last) = now, self._last
        self._last = now
        grew = {k.lstrip("~"): round(v - t_last.get(k, 0.0), 4) for k, v in t_now.items()
                if v - t_last.get(k, 0.0) > (self.MIN_S if k.startswith("~") else 1e-4)}
        counted = {k: v - c_last.get(k, 0) for k, v in c_now.items() if v - c_last.get(k, 0) > 0}
        if grew:
            slot = self.by_stage.setdefault(rec.name, {})
            for k, v in grew.items():
                slot[k] = round(slot.get(k, 0.0) + v, 4)
        if counted:
            cslot = self.counts_by_stage.setdefault(rec.name, {})
            for k, n in counted.items():
                cslot[k] = cslot.get(k, 0) + n

    def flush(self, name: str | None) -> None:
        """Charge what grew since the last stage's end to ``name`` (a failed stage), if anything did."""
        if name:
            from types import SimpleNamespace

            self.on_stage_end(SimpleNamespace(name=name))

    def to_dict(self) -> dict[str, Any]:
        """As recorded in reports (``run.compile_time``)."""
        return {"source": self.SOURCE, "by_stage": self.by_stage, "counts_by_stage": self.counts_by_stage}
