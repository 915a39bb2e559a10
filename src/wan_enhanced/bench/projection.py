"""Project a measured run onto a catalog GPU that was not measured (a roofline-style estimate).

The measured stage tree is cut into non-overlapping parts (leaf stages, plus each parent's time
outside its children). Each part is classified and scaled by a ratio of catalog rates
(source GPU ÷ target GPU):

- **compute-bound** (GPM tensor util ≥ 30 % or SM ≥ 50 %, or by kind: ``Step_i``, ``Denoising``,
  ``Text_Encoding``, ``Image_Encoding``, ``VAE_*``): × dense bf16 TFLOPS ratio;
- **memory-bound** (GPM DRAM util ≥ 50 % and above tensor util): × memory bandwidth ratio;
- **transfer** (stages named for host↔device copies: offload/onload/H2D/D2H/transfer): × PCIe ratio;
- **host-bound** (``Load_*``, ``Save_Video``, time outside stages, stages where the GPU sat below
  20 % SM, e.g. T5 on the CPU, and the first step's excess over the median step — compile,
  autotune, lazy init): unchanged — they depend on the host, disk and CPU, not the GPU.

The peak reserved memory is taken as measured (the same program allocates the same tensors), so the
fit on the target is ``peak reserved + CUDA-context allowance ≤ target memory``. Everything returned is
labelled ``projected``; nothing here is a measurement.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from ..monitor.metrics import value_of
from . import reportdata as rd
from .gpus import num

SM_COMPUTE = 50.0
TENSOR_COMPUTE = 30.0
DRAM_MEMORY = 50.0
SM_IDLE = 20.0
DEFAULT_CONTEXT_GB = 1.0
WARMUP_RATIO = 1.2  # a first step this much slower than the median step has a warm-up part
COMPUTE_PREFIXES = ("Step_", "Denoising", "Text_Encoding", "Image_Encoding", "VAE_")
HOST_PREFIXES = ("Load_", "Save_", "Model_Initialization", "Init")
TRANSFER_WORDS = ("offload", "onload", "h2d", "d2h", "transfer", "to_cpu", "to_gpu", "to_device")
KINDS = ("compute", "memory", "transfer", "host")


class ProjectionError(UserError):
    """A report cannot be projected (no GPU, GPU or rate not in the catalog)."""


@dataclass
class StageClass:
    """How one stage's time scales to another GPU."""

    kind: str  # compute | memory | transfer | host
    why: str


@dataclass
class StagePart:
    """One non-overlapping piece of measured time and its projection."""

    name: str
    top: str  # the main stage it belongs to (a child of Total), or "other"
    kind: str
    why: str
    measured_s: float
    factor: float
    projected_s: float


@dataclass
class Projection:
    """A measured run projected onto a target GPU (every number here is projected)."""

    case: str
    source_key: str
    source_name: str
    target_key: str
    target_name: str
    count: int
    parts: list[StagePart]
    measured_total_s: float
    projected_total_s: float
    factors: dict[str, tuple[float, str]]
    peak_memory_gb: float | None  # peak reserved (``peak_memory(report, "reserved")``), as measured
    need_gb: float | None
    target_memory_gb: float | None
    fits: bool | None
    method: str
    caveats: list[str] = field(default_factory=list)
    label: str = "projected"

    def stage_totals(self) -> dict[str, float]:
        """Projected seconds per main stage (plus ``other`` for time outside them)."""
        out: dict[str, float] = {}
        for p in self.parts:
            out[p.top] = out.get(p.top, 0.0) + p.projected_s
        return out

    def kind_totals(self) -> dict[str, tuple[float, float]]:
        """(measured s, projected s) per kind."""
        out: dict[str, tuple[float, float]] = {}
        for p in self.parts:
            m, q = out.get(p.kind, (0.0, 0.0))
            out[p.kind] = (m + p.measured_s, q + p.projected_s)
        return out


def _pct(stage: dict[str, Any], key: str) -> tuple[float | None, str | None]:
    m = stage.get(key)
    return value_of(m), rd.msource(m)


def classify_stage(stage: dict[str, Any]) -> StageClass:
    """Classify a stage as compute / memory / transfer / host from its name and telemetry."""
    name = str(stage.get("name", ""))
    low = name.lower()
    if any(w in low for w in TRANSFER_WORDS):
        return StageClass("transfer", "host↔device copy (by name)")
    if name.startswith(HOST_PREFIXES):
        return StageClass("host", "loading / saving: disk, CPU and host-side work (by name)")
    sm, sm_src = _pct(stage, "sm")
    tensor, _ = _pct(stage, "tensor_util")
    dram, _ = _pct(stage, "dram_util")
    short = bool(stage.get("short_window"))
    if dram is not None and dram >= DRAM_MEMORY and (tensor is None or dram > tensor):
        return StageClass("memory", f"DRAM util {dram:.0f} % ≥ {DRAM_MEMORY:.0f} % and above tensor util "
                                    f"{'n/a' if tensor is None else f'{tensor:.0f} %'} (gpm)")
    if tensor is not None and tensor >= TENSOR_COMPUTE:
        return StageClass("compute", f"tensor util {tensor:.0f} % ≥ {TENSOR_COMPUTE:.0f} % (gpm)")
    if sm is not None and sm >= SM_COMPUTE:
        return StageClass("compute", f"SM {sm:.0f} % ≥ {SM_COMPUTE:.0f} % ({sm_src})")
    if sm is not None and sm < SM_IDLE and not short:
        return StageClass("host", f"GPU mostly idle: SM {sm:.0f} % < {SM_IDLE:.0f} % ({sm_src}) — CPU/IO-bound")
    if name.startswith(COMPUTE_PREFIXES):
        return StageClass("compute", "GPU compute stage (by kind: " + name.split("_")[0] + ")"
                          + ("" if sm is None else f"; SM {sm:.0f} % ({sm_src})"))
    return StageClass("host", "unclassified stage: kept as measured")


def _parts(report: dict[str, Any]) -> list[tuple[str, str, dict[str, Any] | None, float, StageClass]]:
    """(name, top stage, stage, seconds, class) of every non-overlapping piece of the run."""
    all_stages = rd.stages(report)
    kids: dict[str, list[dict[str, Any]]] = {}
    for s in all_stages:
        if s.get("parent"):
            kids.setdefault(str(s["parent"]), []).append(s)
    out: list[tuple[str, str, dict[str, Any] | None, float, StageClass]] = []

    steps = [s for s in all_stages if str(s.get("name", "")).startswith("Step_")]
    first = min(steps, key=lambda s: float(s.get("start_s") or 0.0)) if len(steps) >= 2 else None
    rest = [rd.duration(s) for s in steps if s is not first]
    median = statistics.median(rest) if rest else 0.0

    def walk(stage: dict[str, Any], top: str, is_root: bool) -> None:
        ch = kids.get(str(stage["name"]), [])
        dur = rd.duration(stage)
        if not ch and stage is first and median > 0 and dur > WARMUP_RATIO * median:
            # The first step also pays one-off costs (torch.compile, cuDNN autotune, lazy init):
            # the part above the median step is kept as measured.
            out.append((str(stage["name"]), top, stage, median, classify_stage(stage)))
            out.append((f"{stage['name']} warm-up (above the median step)", top, stage, dur - median,
                        StageClass("host", "first-step warm-up (compile, autotune, lazy init) beyond the median "
                                           "step: kept as measured")))
            return
        if not ch:
            out.append((str(stage["name"]), top, stage, dur, classify_stage(stage)))
            return
        for c in ch:
            walk(c, str(c["name"]) if is_root else top, False)
        rest = dur - sum(rd.duration(c) for c in ch)
        if rest > 1e-6:
            cls = (StageClass("host", "time between the pipeline's stages (Python, synchronisation): kept as "
                                      "measured") if is_root else classify_stage(stage))
            out.append((f"{stage['name']} (outside sub-stages)", "other" if is_root else top, stage, rest, cls))

    roots = rd.roots(report)
    for r in roots:
        walk(r, "other" if kids.get(str(r["name"])) else str(r["name"]), True)
    wall = rd.wall_s(report)
    covered = sum(rd.duration(r) for r in roots)
    if wall is not None and wall - covered > 1e-6:
        out.append(("outside the monitored stages", "other", None, wall - covered,
                    StageClass("host", "not inside any stage: kept as measured")))
    return out


def scale_factors(source: dict[str, Any], target: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """(factor, basis) per kind: time on target = time on source × factor."""
    f: dict[str, tuple[float, str]] = {}
    st, tt = num(source, "bf16_dense_tflops"), num(target, "bf16_dense_tflops")
    if st is None or tt is None:
        raise ProjectionError(f"no bf16_dense_tflops for {source.get('key') if st is None else target.get('key')} "
                              "in the catalog")
    f["compute"] = (st / tt, f"dense bf16 {st:g} ÷ {tt:g} TFLOPS")
    sb, tb = num(source, "bandwidth_gbps"), num(target, "bandwidth_gbps")
    f["memory"] = ((sb / tb, f"memory bandwidth {sb:g} ÷ {tb:g} GB/s") if sb and tb else
                   (st / tt, "no bandwidth in the catalog: compute ratio used"))
    sp, tp = num(source, "pcie_gbps"), num(target, "pcie_gbps")
    f["transfer"] = ((sp / tp, f"PCIe {sp:g} ÷ {tp:g} GB/s") if sp and tp else
                     (1.0, "no PCIe rate in the catalog: unchanged"))
    f["host"] = (1.0, "unchanged (host-bound)")
    return f


def project_report(report: dict[str, Any], source: dict[str, Any], target: dict[str, Any], *, case: str = "",
                   context_gb: float = DEFAULT_CONTEXT_GB) -> Projection:
    """Project ``report`` (measured on catalog GPU ``source``) onto catalog GPU ``target``."""
    if report.get("status") != "ok":
        raise ProjectionError(f"report status is {report.get('status')!r}; only complete runs are projected")
    factors = scale_factors(source, target)
    parts = [StagePart(name, top, cls.kind, cls.why, sec, factors[cls.kind][0], sec * factors[cls.kind][0])
             for name, top, _, sec, cls in _parts(report)]
    if not parts:
        raise ProjectionError("report has no stages to project")
    gpu = rd.gpu_of(report)
    count = gpu.count
    peak = rd.peak_memory_gb(report, "reserved")
    mem = num(target, "memory_gb")
    need = None if peak is None else peak + context_gb
    fits = None if need is None or mem is None else need <= mem
    method = ("per-stage roofline scaling from the measured run: compute-bound × "
              f"{factors['compute'][1]}, memory-bound × {factors['memory'][1]}, transfers × "
              f"{factors['transfer'][1]}, host-bound unchanged; peak reserved memory as measured + "
              f"{context_gb:g} GB CUDA-context allowance")
    caveats = ["assumes the target runs the same kernels at the same fraction of its peak as the source"]
    if count > 1:
        caveats.append(f"{count}-GPU run: projected onto {count} target GPUs; interconnect differences ignored")
    return Projection(
        case=case, source_key=str(source["key"]), source_name=str(source.get("name") or source["key"]),
        target_key=str(target["key"]), target_name=str(target.get("name") or target["key"]), count=count,
        parts=parts, measured_total_s=sum(p.measured_s for p in parts),
        projected_total_s=sum(p.projected_s for p in parts), factors=factors, peak_memory_gb=peak, need_gb=need,
        target_memory_gb=mem, fits=fits, method=method, caveats=caveats,
    )


def split_check(p: Projection, measured_report: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Where a projection's error comes from: for the parts it scaled (kind ≠ host) and for the parts it kept
    as measured (host), the (projected s, measured s on the target) pair, matched by part name.

    The measured run is cut into parts the same way as the source run, so a first step's warm-up lands in
    the host parts on both sides.
    """
    kinds = {q.name: q.kind for q in p.parts}
    scaled = sum(q.projected_s for q in p.parts if q.kind != "host")
    kept = sum(q.projected_s for q in p.parts if q.kind == "host")
    m_scaled = m_kept = 0.0
    for name, _, _, sec, cls in _parts(measured_report):
        if kinds.get(name, cls.kind) != "host":
            m_scaled += sec
        else:
            m_kept += sec
    return {"scaled": (scaled, m_scaled), "kept": (kept, m_kept)}


def error_percent(projected: float, measured: float) -> float:
    """Signed error of a projection: (projected − measured) ÷ measured × 100."""
    return (projected - measured) / measured * 100.0
