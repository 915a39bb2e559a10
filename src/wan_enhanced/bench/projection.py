"""Project a measured run of the standard job onto a GPU nobody measured, architecture by architecture.

A measured run (our report, or a peer's record from ``benchmark/peers.py``) becomes a
:class:`RunProfile`: top-level stage seconds with their bound (from the stage registry), the first and
the steady denoising step, the DiT's FLOP plan and attention kernel, the VAE dtype, whether weights
were offloaded and the peak memory. :func:`project` moves each part to the target by what bounds it:

- DiT steps: job steps × (GEMM FLOPs ÷ target GEMM rate + attention FLOPs ÷ target rate of the kernel
  our ``auto`` picks there — or the peer's own kernel — + the rest × bandwidth ratio), see
  :mod:`.perf_model`;
- the cold start (the report's ``cold_start_s``: the first call's excess over a steady step — compile, kernel
  build — host work) kept as measured, never scaled by the GPU ratio; a ``--warmup`` forward is not job time;
- VAE decode / encode by their measured convolution / memory split;
- offload transfers (the denoising loop's time outside its steps when weights were offloaded) over the
  target's host link;
- host stages (loading, T5 on the CPU, mp4, time outside the stages) kept as measured, times
  ``host_scale`` (``compare --host``).

Peak reserved memory is taken as measured (the same program allocates the same tensors); the fit is
``peak reserved + CUDA context ≤ card memory``, "marginal" under 1 GiB of margin. Every result is
labelled projected, names its source run and carries the error band of the validation
(``data/workload.json`` → ``projection_band``).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from .. import stages as st
from ..errors import UserError
from ..models.presets import get_preset
from . import perf_model as pm
from . import reportdata as rd

DEFAULT_CONTEXT_GB = 1.0
MARGINAL_GB = 1.0
JOB_STEPS = 50
#: the part that holds the first step's excess over a steady one: what a warm process does not pay again
WARMUP_PART = f"{st.DENOISING.name} · first-step warm-up"


class ProjectionError(UserError):
    """A run cannot be projected (incomplete, not a GPU run, GPU or rate not in the catalog)."""


@dataclass
class RunProfile:
    """What the projection needs of one measured run."""

    label: str
    source: str  # file the run came from
    gpu_key: str
    count: int
    stages: dict[str, float]  # top-level stages except Denoising, seconds as measured
    bounds: dict[str, str]  # stage → registry bound
    first_step_s: float
    steady_step_s: float
    timed_steps: int
    job_steps: int
    denoise_rest_s: float  # Denoising outside its steps (scheduler set-up, offload onload)
    outside_s: float  # run time outside the top-level stages
    forwards: int  # DiT forwards per step (2 with CFG)
    work: pm.DitWork
    kernel: str  # attention kernel of the source run
    vae_dtype: str
    offload: bool
    pinned: bool
    peak_reserved_gb: float | None
    peak_allocated_gb: float | None
    flags: str
    energy_j: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def job_kind(self) -> str:
        """``measured`` or ``extrapolated from N steps``."""
        return "measured" if self.timed_steps >= self.job_steps else f"extrapolated from {self.timed_steps} steps"

    def job_seconds(self) -> float:
        """The source's own time for the whole job (measured, or its steps extrapolated)."""
        denoise = self.first_step_s + (self.job_steps - 1) * self.steady_step_s + self.denoise_rest_s
        return sum(self.stages.values()) + denoise + self.outside_s


@dataclass
class Part:
    """One piece of the job and its projection."""

    name: str
    bound: str
    measured_s: float
    projected_s: float
    basis: str


@dataclass
class Projection:
    """A run profile projected onto a target GPU (every number here is projected)."""

    profile: RunProfile
    target_key: str
    target_name: str
    parts: list[Part]
    kernel: str
    kernel_why: str
    step_parts: dict[str, float]
    peak_reserved_gb: float | None
    need_gb: float | None
    target_memory_gb: float | None
    fit: str
    band_pct: float | None
    band_source: str
    caveats: list[str] = field(default_factory=list)
    label: str = "projected"

    @property
    def total_s(self) -> float:
        """Projected seconds of the whole job."""
        return sum(p.projected_s for p in self.parts)

    @property
    def steady_step_s(self) -> float:
        """Projected steady denoising step."""
        return sum(v for k, v in self.step_parts.items() if k != "source_rest_s")

    def stage_totals(self) -> dict[str, float]:
        """Projected seconds per top-level stage."""
        out: dict[str, float] = {}
        for p in self.parts:
            top = p.name.split(" ·")[0]
            out[top] = out.get(top, 0.0) + p.projected_s
        return out


# ------------------------------------------------------------------------------------- profiles
def _steps(stage_dicts: list[dict[str, Any]]) -> list[float]:
    steps = [s for s in stage_dicts if st.is_step(str(s.get("name")))]
    steps.sort(key=lambda s: st.step_index(str(s["name"])) or 0)
    return [rd.duration(s) for s in steps]


def _forwards(guide: Any) -> int:
    return 2 if guide is None or float(guide) > 1.0 else 1


def profile_from_report(report: dict[str, Any], entry: dict[str, Any] | None, *, source: str = "",
                        job_steps: int = JOB_STEPS) -> RunProfile:
    """A profile of one of our reports (status ok, on a catalog GPU)."""
    if report.get("status") != "ok":
        raise ProjectionError(f"{source}: report status is {report.get('status')!r}; only complete runs are projected")
    if entry is None:
        raise ProjectionError(f"{source}: GPU {rd.gpu_of(report).label!r} is not in the catalog")
    run = report.get("run") or {}
    preset = get_preset(str(run.get("task") or "ti2v-5B"))
    all_stages = rd.stages(report)
    top = [s for s in all_stages if s.get("parent") == st.TOTAL.name]
    steps = _steps(all_stages)
    if not steps:
        raise ProjectionError(f"{source}: report has no denoising steps")
    stages, bounds = {}, {}
    denoise_rest = 0.0
    # the warm-up forward (--warmup) is not part of the job: its compile share is in cold_start_s
    warmup = sum(rd.duration(s) for s in all_stages if s.get("name") == st.WARMUP.name)
    for s in top:
        name = str(s["name"])
        if name == st.DENOISING.name:
            denoise_rest = max(0.0, rd.duration(s) - sum(steps) - warmup)
            continue
        stages[name] = rd.duration(s)
        bounds[name] = st.bound_of(name, s.get("comment")) or st.HOST_LOAD
    wall = rd.wall_s(report) or 0.0
    outside = max(0.0, wall - sum(rd.duration(s) for s in top))
    fast = run.get("fast_path") or {}
    kernel = pm.BACKEND_KERNEL.get(str(fast.get("attention_backend") or "cudnn"), "cudnn")
    tokens = int(run.get("num_tokens") or 0)
    scalar = bool(fast.get("scalar_timestep")) and not run.get("image")
    work = pm.dit_work(preset.dit, tokens, preset.text_len, per_token_timestep=not scalar)
    residency = str(run.get("residency") or "")
    gpu = rd.gpu_of(report)
    flags = "default flags" if not run.get("memory_budget_gb") else f"--memory_budget_gb {run['memory_budget_gb']:g}"
    if run.get("offload_model") is False and not run.get("memory_budget_gb"):
        flags = "--offload_model False"
    energy = rd.total(report, "energy_j")
    steady = rd.value_of(rd.total(report, "steady_s_per_step"))
    cold = rd.value_of(rd.total(report, "cold_start_s"))
    if steady is None:  # reports before the warm/cold split (or of one step)
        steady = statistics.median(steps[1:]) if len(steps) > 1 else steps[0]
    first = steady + cold if cold is not None else steps[0]
    return RunProfile(
        label=f"ours ({flags}) on {gpu.label}", source=source, gpu_key=str(entry["key"]), count=gpu.count,
        stages=stages, bounds=bounds, first_step_s=first, steady_step_s=steady, timed_steps=len(steps),
        job_steps=job_steps, denoise_rest_s=denoise_rest, outside_s=outside,
        forwards=_forwards(run.get("sample_guide_scale")), work=work, kernel=kernel,
        vae_dtype=str(run.get("vae_dtype") or "bf16"), offload=residency not in ("", "resident"), pinned=True,
        peak_reserved_gb=rd.peak_memory_gb(report, "reserved"), peak_allocated_gb=rd.peak_memory_gb(report, "allocated"),
        flags=flags, energy_j=(energy or {}).get("value") if isinstance(energy, dict) else None)


def profile_from_peer(record: dict[str, Any], meta: dict[str, Any], entry: dict[str, Any], *, source: str = ""
                      ) -> RunProfile:
    """A profile of one peer record of ``benchmark/peers.py`` (``meta``: that file's ``meta``)."""
    preset = get_preset(str(meta.get("task") or "ti2v-5B"))
    w, h = map(int, str(meta["size"]).split("*"))
    from ..models.flops import video_tokens

    tokens = video_tokens(int(meta["frame_num"]), h, w, preset.vae_stride, preset.patch_size)
    flags = record.get("flags") or {}
    steps = list(record.get("steps_s") or [])
    if not steps:
        raise ProjectionError(f"{source}: peer {record.get('peer')} has no steps")
    stages = {k: float(v) for k, v in (record.get("stages") or {}).items() if k != st.DENOISING.name}
    bounds = {}
    for k in stages:
        b = st.bound_of(k)
        if k == st.TEXT_ENCODING.name and flags.get("t5_cpu"):
            b = st.HOST_TEXT_CPU
        bounds[k] = b or st.HOST_LOAD
    denoise = float((record.get("stages") or {}).get(st.DENOISING.name, sum(steps)))
    peer = str(record.get("peer"))
    official = peer.startswith("official")
    # the official code: its adapter's kernel; diffusers: SDPA's default dispatch picks cuDNN on these GPUs, and
    # the levers row pins _native_cudnn
    kernel = {"flash": "flash2", "cudnn": "cudnn"}.get(str(flags.get("attention_kernel") or "flash"), "flash2") \
        if official else "cudnn"
    total = record.get("total_s")
    outside = max(0.0, float(total) - sum((record.get("stages") or {}).values())) if total else 0.0
    return RunProfile(
        label=str(record.get("label") or peer), source=source, gpu_key=str(entry["key"]), count=1, stages=stages,
        bounds=bounds, first_step_s=steps[0],
        steady_step_s=statistics.median(steps[1:]) if len(steps) > 1 else steps[0], timed_steps=len(steps),
        job_steps=int(record.get("job_steps") or JOB_STEPS), denoise_rest_s=max(0.0, denoise - sum(steps)),
        outside_s=outside, forwards=2, work=pm.dit_work(preset.dit, tokens, preset.text_len, per_token_timestep=True),
        kernel=kernel, vae_dtype="fp32" if official or peer.startswith("diffusers") else "bf16",
        offload=bool(flags.get("offload_model")), pinned=not official,
        peak_reserved_gb=record.get("peak_reserved_gb"), peak_allocated_gb=record.get("peak_allocated_gb"),
        flags=", ".join(f"{k}={v}" for k, v in flags.items() if k in ("offload_model", "convert_model_dtype", "t5_cpu",
                                                                      "attention")))


# ------------------------------------------------------------------------------------- projection
def fit_verdict(reserved_gb: float | None, memory_gb: float | None, context_gb: float = DEFAULT_CONTEXT_GB
                ) -> tuple[str, float | None]:
    """("fits" | "marginal" | "does not fit" | "unknown", need GiB): need = peak reserved + CUDA context."""
    if reserved_gb is None or memory_gb is None:
        return "unknown", None
    need = reserved_gb + context_gb
    if need > memory_gb:
        return "does not fit", need
    return ("marginal" if memory_gb - need < MARGINAL_GB else "fits"), need


def projection_band(same_arch: bool) -> tuple[float | None, str]:
    """(± %, source) of the validation's error band: the largest time error of its same-architecture points
    (e.g. H100 ↔ H200) or of its cross-architecture points (Hopper → Ada / Blackwell)."""
    band = pm.workload().get("projection_band") or {}
    kind = "same_arch" if same_arch else "cross_arch"
    v = band.get(kind)
    if not isinstance(v, (int, float)):
        return None, "no validation recorded"
    pts = ", ".join(band.get(f"{kind}_points") or [])
    return float(v), f"largest {kind.replace('_', '-')} error of the validation ({pts}; {band.get('source')})"


def project(profile: RunProfile, source: dict[str, Any], target: dict[str, Any], *, kernel: str | None = None,
            host_scale: float = 1.0, context_gb: float = DEFAULT_CONTEXT_GB, fa4_installed: bool = True) -> Projection:
    """Project ``profile`` (measured on catalog GPU ``source``) onto catalog GPU ``target``.

    ``kernel``: the attention kernel on the target (default: our ``auto`` for our runs, the peer's own
    kernel for peers — pass it).
    """
    for e in (source, target):
        pm.check_entry(e)
    if kernel is None:
        kernel, why = pm.auto_kernel(target, fa4_installed)
    else:
        why = f"{kernel}: the kernel this code runs on any GPU"
    same = source["key"] == target["key"]
    parts: list[Part] = []
    host_basis = "host work: kept as measured" if host_scale == 1.0 else f"host work × {host_scale:g} (--host)"
    for name, sec in profile.stages.items():
        bound = profile.bounds.get(name, st.HOST_LOAD)
        if bound in st.HOST_BOUNDS:
            parts.append(Part(name, bound, sec, sec * host_scale, host_basis))
        elif bound == st.VAE_CONV:
            v, basis = pm.vae_decode_seconds(sec, profile.vae_dtype, source, target)
            parts.append(Part(name, bound, sec, v, basis))
        elif bound == st.TEXT_GPU:
            g_s, g_t = pm.gemm_rate(source)[0], pm.gemm_rate(target)[0]
            parts.append(Part(name, bound, sec, sec * g_s / g_t, f"GEMM rate {g_s:g} → {g_t:g} TFLOP/s"))
        elif bound == st.TRANSFER:
            v, basis = pm.transfer_seconds(sec, source, target, profile.pinned)
            parts.append(Part(name, bound, sec, v, basis))
        else:
            parts.append(Part(name, bound, sec, sec, f"{bound}: kept as measured"))
    step, step_parts, step_basis = pm.step_seconds(profile.steady_step_s, profile.work, profile.forwards, source,
                                                   profile.kernel, target, kernel)
    n = profile.job_steps
    parts.append(Part(f"{st.DENOISING.name} · {n} steps", st.DIT_COMPUTE, n * profile.steady_step_s, n * step,
                      step_basis + ("" if profile.timed_steps >= n else f"; steps {profile.job_kind}")))
    warm = max(0.0, profile.first_step_s - profile.steady_step_s)
    parts.append(Part(WARMUP_PART, st.HOST_COMPILE, warm, warm * host_scale,
                      "first step's excess over a steady step (compile, kernel build, lazy init): " + host_basis))
    if profile.denoise_rest_s > 0:
        if profile.offload:
            v, basis = pm.transfer_seconds(profile.denoise_rest_s, source, target, profile.pinned)
            parts.append(Part(f"{st.DENOISING.name} · outside steps (weights onload)", st.TRANSFER,
                              profile.denoise_rest_s, v, basis))
        else:
            parts.append(Part(f"{st.DENOISING.name} · outside steps", st.HOST_LOAD, profile.denoise_rest_s,
                              profile.denoise_rest_s * host_scale, "scheduler set-up: " + host_basis))
    if profile.outside_s > 0:
        parts.append(Part("(untracked)", st.HOST_LOAD, profile.outside_s, profile.outside_s * host_scale,
                          "outside the stages: " + host_basis))
    mem = float(target["memory_gb"])
    fit, need = fit_verdict(profile.peak_reserved_gb, mem, context_gb)
    band, band_src = projection_band(source.get("arch") == target.get("arch"))
    caveats = []
    if kernel != profile.kernel:
        caveats.append(f"attention kernel changes {profile.kernel} → {kernel}: peak memory taken as measured")
    if profile.count > 1:
        caveats.append(f"{profile.count}-GPU run; interconnect differences ignored")
    if same:
        caveats.append("same GPU as the source: the projection reproduces the source's job time")
    return Projection(profile, str(target["key"]), str(target.get("name") or target["key"]), parts, kernel, why,
                      step_parts, profile.peak_reserved_gb, need, mem, fit, band, band_src, caveats)


def error_percent(projected: float, measured: float) -> float:
    """Signed error of a projection: (projected − measured) ÷ measured × 100."""
    return (projected - measured) / measured * 100.0
