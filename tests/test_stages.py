"""The stage registry is the one source of stage names: a tiny run records exactly its stages, in
pipeline order, each known to the registry with its bound; the bench modules import without a cycle."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wan_enhanced import stages
from wan_enhanced.config import RunConfig, validate
from wan_enhanced.run import run_generation

SRC = Path(__file__).resolve().parents[1] / "src"


def _report(tmp: Path, **kw) -> dict:
    cfg = validate(RunConfig(task="tiny", device="cpu", save_file=str(tmp / "v.mp4"), **kw), cuda_available=False)
    out = run_generation(cfg, progress=False, monitor_enabled=False)
    assert out.status == "ok", out.message
    return out.report


@pytest.fixture(scope="module")
def t2v(tmp_path_factory):
    return _report(tmp_path_factory.mktemp("t2v"))


@pytest.fixture(scope="module")
def i2v_t5_cpu(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("i2v")
    import numpy as np
    from PIL import Image

    arr = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(tmp / "input.png")
    return _report(tmp, image=str(tmp / "input.png"), t5_cpu=True, save_latents=str(tmp / "latents.pt"))


def _top(report: dict) -> list[str]:
    return [s["name"] for s in report["stages"] if s.get("parent") == stages.TOTAL.name]


def test_t2v_records_the_pipeline_order_without_image_encoding(t2v):
    assert [s["name"] for s in t2v["stages"] if s["depth"] == 0] == [stages.TOTAL.name]
    assert _top(t2v) == [k.name for k in stages.PIPELINE_ORDER
                         if k not in (stages.IMAGE_ENCODING, stages.PREPARE_DIT, stages.SAVE_LATENTS)]
    assert _top(t2v) == ["Load_Text_Encoder", "Text_Encoding", "Free_Text_Encoder", "Load_VAE", "Load_DiT", "Denoising",
                         "Free_DiT", "VAE_Decoding", "Save_Video"]


def test_i2v_records_every_stage_of_the_pipeline_order(i2v_t5_cpu):
    assert _top(i2v_t5_cpu) == [k.name for k in stages.PIPELINE_ORDER if k is not stages.PREPARE_DIT]  # nothing to set up


@pytest.fixture(scope="module")
def t2v_native(tmp_path_factory):
    """A run whose fast path has DiT set-up to do (an attention backend pinned): no compile, so it stays quick."""
    return _report(tmp_path_factory.mktemp("t2v_native"), attention_backend="native")


def test_the_dits_kernel_set_up_is_its_own_stage_after_load_dit_not_part_of_it(t2v, t2v_native):
    # FA4's activation and kernel check, the fused op, the backend and the compile wrappers are not weight loading;
    # on an H200 Load_DiT with them was 7-13 s against 3.5-5 s without FA4 or a compile (h200/s9 vs s7/a)
    assert _top(t2v_native) == ["Load_Text_Encoder", "Text_Encoding", "Free_Text_Encoder", "Load_VAE", "Load_DiT",
                                "Prepare_DiT", "Denoising", "Free_DiT", "VAE_Decoding", "Save_Video"]
    assert _top(t2v_native) == [k.name for k in stages.PIPELINE_ORDER
                                if k not in (stages.IMAGE_ENCODING, stages.SAVE_LATENTS)]
    prep = next(s for s in t2v_native["stages"] if s["name"] == "Prepare_DiT")
    assert prep["comment"] == stages.PREPARE_DIT.comment == "attention kernels and compile set-up"
    assert stages.bound_of("Prepare_DiT") == stages.HOST_COMPILE and stages.PREPARE_DIT.is_host()
    assert "Prepare_DiT" not in _top(t2v)  # nothing to set up: no empty stage


def test_has_dit_setup_says_whether_apply_dit_has_work():
    import torch

    from wan_enhanced.fastpath import FastPath

    cpu = torch.device("cpu")
    assert not FastPath().resolve(cpu).has_dit_setup()
    for kw in ({"compile": "blocks"}, {"attention_backend": "native"}, {"attention_backend": "flash4"},
               {"fused_qk_rope": "on"}):
        assert FastPath(**kw).has_dit_setup(), kw
    assert FastPath(prefetch=object()).resolve(cpu).has_dit_setup() is False  # resolve drops it: a run sets it after
    fp = FastPath().resolve(cpu)
    fp.prefetch = object()
    assert fp.has_dit_setup()  # the compiler's background set-up is joined there


@pytest.mark.parametrize("run", ["t2v", "i2v_t5_cpu", "t2v_native"])
def test_every_recorded_stage_is_known_with_its_bound_and_parent(run, request):
    report = request.getfixturevalue(run)
    steps = [s for s in report["stages"] if stages.is_step(s["name"])]
    assert [stages.step_index(s["name"]) for s in steps] == list(range(report["run"]["sample_steps"]))
    for s in report["stages"]:
        kind = stages.kind_of(s["name"], s.get("comment"))
        assert kind is not None, s["name"]
        assert stages.bound_of(s["name"], s.get("comment")) == kind.bound in stages.BOUNDS
        assert s.get("parent") == kind.parent, s["name"]
        if kind is stages.VAE_DECODING:  # the pipeline adds the VAE dtype
            assert s["comment"].startswith(f"{kind.comment} ("), s["comment"]
        elif kind is stages.SAVE_VIDEO:  # overlapped with decoding, it says so
            assert s["comment"].startswith(f"{kind.comment}: the rest of the H.264 encoding"), s["comment"]
        elif kind is not stages.DENOISING:  # its comment is the run's step count and CFG
            assert s["comment"] == kind.comment, s["name"]


def test_text_encoding_is_host_work_with_t5_cpu_and_gpu_work_otherwise(t2v, i2v_t5_cpu):
    def text(report):
        s = next(s for s in report["stages"] if s["name"] == stages.TEXT_ENCODING.name)
        return stages.bound_of(s["name"], s["comment"])

    assert text(i2v_t5_cpu) == stages.HOST_TEXT_CPU
    assert text(t2v) == stages.TEXT_GPU
    assert stages.text_encoding(True) is stages.TEXT_ENCODING_CPU and stages.TEXT_ENCODING_CPU.is_host()
    assert stages.text_encoding(False) is stages.TEXT_ENCODING and not stages.TEXT_ENCODING.is_host()


@pytest.mark.parametrize("i", [0, 1, 9, 49, 1234])
def test_step_name_round_trip(i):
    name = stages.step_name(i)
    assert stages.step_index(name) == i and stages.is_step(name)
    assert stages.kind_of(name) is stages.STEP and stages.bound_of(name) == stages.DIT_COMPUTE


@pytest.mark.parametrize("name", ["", "Frobnicate", "Step_", "Step_x", "Step_1a", "step_1", "Total ", "Sampling"])
def test_unknown_names_have_no_kind(name):
    assert stages.kind_of(name) is None and stages.bound_of(name) is None
    assert stages.step_index(name) is None and not stages.is_step(name)


def test_host_and_gpu_bounds_are_bounds():
    assert stages.HOST_BOUNDS <= set(stages.BOUNDS) and stages.GPU_BOUNDS <= set(stages.BOUNDS)
    assert not stages.HOST_BOUNDS & stages.GPU_BOUNDS


# ------------------------------------------------------------------------------------ imports
def _import_graph() -> dict[str, set[str]]:
    """Module → the package modules it imports anywhere in its body (function-level imports too)."""
    root = SRC / "wan_enhanced"
    mods: dict[str, tuple[Path, bool]] = {}
    for p in root.rglob("*.py"):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    graph: dict[str, set[str]] = {}
    for mod, (path, is_pkg) in mods.items():
        pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(pkg[:len(pkg) - node.level + 1] + ([node.module] if node.module else []))
                for a in node.names:
                    if f"{base}.{a.name}" in mods:
                        deps.add(f"{base}.{a.name}")
                    elif base in mods:
                        deps.add(base)
        graph[mod] = deps - {mod}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(u: str) -> None:
        state[u] = 1
        path.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                found.append(path[path.index(v):] + [v])
            elif v not in state:
                visit(v)
        path.pop()
        state[u] = 2

    for u in sorted(graph):
        if u not in state:
            visit(u)
    return found


def test_the_package_has_no_import_cycle():
    graph = _import_graph()
    assert "wan_enhanced.bench.manifest" in graph["wan_enhanced.bench.runner"]
    assert "wan_enhanced.bench.manifest" in graph["wan_enhanced.bench.markdown"]
    assert "wan_enhanced.bench.runner" not in graph["wan_enhanced.bench.markdown"]
    assert _cycles(graph) == []


def test_the_monitor_knows_nothing_of_the_stage_registry():
    graph = _import_graph()
    assert not [m for m, deps in graph.items() if m.startswith("wan_enhanced.monitor") and "wan_enhanced.stages" in deps]


def test_manifest_imports_neither_runner_nor_markdown():
    code = ("import sys; import wan_enhanced.bench.manifest; "
            "print(sorted(m for m in sys.modules if m.startswith('wan_enhanced.bench.') "
            "and m != 'wan_enhanced.bench.manifest'))")
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         env=dict(os.environ, PYTHONPATH=path))
    assert out.stdout.strip() == "[]"
