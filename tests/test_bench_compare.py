"""Cross-GPU compare and projection on hand-written fixture reports (tests/fixtures/reports/),
with the arithmetic checked against numbers computed by hand."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from wan_enhanced.bench.compare import (
    _money,
    compare,
    compare_main,
    cost_effectiveness,
    dollars_per_video,
    efficiency,
)
from wan_enhanced.bench.gpus import by_key, load_gpus
from wan_enhanced.bench.projection import (
    ProjectionError,
    classify_stage,
    error_percent,
    project_report,
    split_check,
)
from wan_enhanced.bench.reportdata import gpu_of, peak_memory, peak_memory_gb
from wan_enhanced.report.schema import load_report

FIX = Path(__file__).parent / "fixtures" / "reports"
CATALOG = FIX / "gpus_catalog.json"


@pytest.fixture(scope="module")
def cat() -> dict:
    return by_key(load_gpus(CATALOG))


@pytest.fixture(scope="module")
def h100() -> dict:
    return load_report(FIX / "h100" / "01_Offload_Mode.json")


def test_projection_math_by_hand(h100, cat):
    p = project_report(h100, cat["h100-sxm"], cat["rtx-4090"], case="01")
    kinds = {part.name: part.kind for part in p.parts}
    assert kinds == {
        "Load_Text_Encoder": "host", "Text_Encoding": "compute", "Load_VAE": "host", "Load_DiT": "host",
        "Step_0": "compute", "Step_1": "compute", "Denoising (outside sub-stages)": "compute",
        "VAE_Decoding": "memory", "Save_Video": "host", "Total (outside sub-stages)": "host",
    }
    # Hand: host 8+1+5+3+1 = 18 s unchanged; compute 2+31+30+1 = 64 s × 989/165.2 = 63296/165.2 = 383.1477 s;
    # memory (VAE decode, DRAM 70 % > tensor 20 %) 20 s × 3350/1008 = 67000/1008 = 66.4683 s.
    assert p.measured_total_s == pytest.approx(102.0)
    assert p.projected_total_s == pytest.approx(18 + 383.1477 + 66.4683, abs=1e-3)
    assert p.projected_total_s == pytest.approx(467.616, abs=1e-3)
    st = p.stage_totals()
    assert st["Denoising"] == pytest.approx(62 * 989 / 165.2)
    assert st["VAE_Decoding"] == pytest.approx(66.4683, abs=1e-4)
    assert st["Load_DiT"] == 5.0 and st["other"] == 1.0
    assert p.factors["transfer"][0] == pytest.approx(2.0)  # PCIe 64 / 32, no transfer stage here
    # Memory: peak 22.0 GB reserved (21.0 allocated) + 1 GB context = 23 GB <= 24 GB.
    assert p.peak_memory_gb == 22.0 and p.need_gb == 23.0 and p.fits is True
    assert p.label == "projected" and "989 ÷ 165.2" in p.method

    q = project_report(h100, cat["h100-sxm"], cat["rtx-pro-6000-blackwell"])
    # Hand: 18 + 63296/503.8 + 67000/1792 = 18 + 125.6372 + 37.3884 = 181.0256 s.
    assert q.projected_total_s == pytest.approx(181.0256, abs=1e-3)
    assert error_percent(467.616, 480.0) == pytest.approx(-2.58, abs=0.01)


def test_projection_same_gpu_is_identity(h100, cat):
    p = project_report(h100, cat["h100-sxm"], cat["h100-sxm"])
    assert p.projected_total_s == pytest.approx(102.0)


def test_first_step_warmup_is_not_scaled(h100, cat):
    rep = copy.deepcopy(h100)
    steps = {s["name"]: s for s in rep["stages"]}
    steps["Step_0"]["duration_s"] = 45.0  # 15 s of compile on top of a 30 s step
    steps["Step_0"]["end_s"] = steps["Step_0"]["start_s"] + 45.0
    p = project_report(rep, cat["h100-sxm"], cat["rtx-4090"])
    parts = {part.name: part for part in p.parts}
    assert parts["Step_0"].measured_s == 30.0 and parts["Step_0"].kind == "compute"
    warm = parts["Step_0 warm-up (above the median step)"]
    assert warm.measured_s == 15.0 and warm.kind == "host" and warm.projected_s == 15.0


def test_projection_error_split_into_scaled_and_kept_parts(h100, cat):
    # The "measured target" differs from the source by +10 s of loading (host) and +1 s in Step_1 (compute).
    target = copy.deepcopy(h100)
    st = {s["name"]: s for s in target["stages"]}
    for name, extra in (("Load_Text_Encoder", 10.0), ("Step_1", 1.0)):
        st[name]["duration_s"] += extra
    for name in ("Denoising", "Total"):
        st[name]["duration_s"] += 11.0 if name == "Total" else 1.0
    p = project_report(h100, cat["h100-sxm"], cat["h100-sxm"])
    split = split_check(p, target)
    # Hand (see test_projection_math_by_hand): scaled = compute 64 + memory 20 = 84 s; host 18 s.
    assert split["scaled"] == pytest.approx((84.0, 85.0))
    assert split["kept"] == pytest.approx((18.0, 28.0))


def _stage(name, sm=None, src="gpm", tensor=None, dram=None, short=False):
    m = lambda v: {"value": v, "unit": "%", "source": src if v is not None else "unavailable", "reason": None}  # noqa: E731
    return {"name": name, "duration_s": 1.0, "sm": m(sm), "tensor_util": m(tensor), "dram_util": m(dram),
            "short_window": short}


@pytest.mark.parametrize("stage, kind", [
    (_stage("Text_Encoding", sm=3), "host"),  # T5 on the CPU: GPU idle
    (_stage("Text_Encoding", sm=3, short=True), "compute"),  # too short to trust SM: by kind
    (_stage("Text_Encoding"), "compute"),  # no telemetry: by kind
    (_stage("Step_7", sm=95, src="nvml_util"), "compute"),
    (_stage("VAE_Decoding", sm=80, tensor=20, dram=70), "memory"),
    (_stage("VAE_Decoding", sm=80, tensor=60, dram=55), "compute"),
    (_stage("Load_DiT", sm=90), "host"),
    (_stage("Offload_DiT"), "transfer"),
    (_stage("Mystery", sm=30), "host"),
    (_stage("Mystery", sm=70), "compute"),
])
def test_stage_classification(stage, kind):
    assert classify_stage(stage).kind == kind


def test_projection_refuses_incomplete_or_unrated(h100, cat):
    oom = load_report(FIX / "h100" / "05_Budget_16GB.json")
    with pytest.raises(ProjectionError, match="only complete runs"):
        project_report(oom, cat["h100-sxm"], cat["rtx-4090"])
    unrated = dict(cat["rtx-4090"], bf16_dense_tflops=None, key="x")
    with pytest.raises(ProjectionError, match="no bf16_dense_tflops for x"):
        project_report(h100, cat["h100-sxm"], unrated)


def test_cost_and_efficiency_by_hand(cat):
    h = cat["h100-sxm"]
    eff, _ = efficiency(2.2e15, 102.0, h, 1)
    assert eff == pytest.approx(2.2e15 / 102 / 989e12)  # 2.18 %
    ce, _ = cost_effectiveness(102.0, h, 1)
    assert ce == pytest.approx((1 / 102) / 30000)
    assert ce * 3.6e6 == pytest.approx(1.1765, abs=1e-4)  # videos/h per $1k
    dv, src = dollars_per_video(102.0, h, 1)
    assert dv == pytest.approx((102 / 3600 * 2.69, 102 / 3600 * 4.18)) and "fixture: cloud snapshot, 2026" == src
    ce2, _ = cost_effectiveness(102.0, h, 2)  # two cards cost twice as much
    assert ce2 == pytest.approx(ce / 2)
    assert efficiency(None, 102.0, h, 1) == (None, "report has no FLOP count")
    none, why = cost_effectiveness(10.0, dict(h, purchase_usd={"value": None}), 1)
    assert none is None and "no purchase price" in why


def test_gpu_identity_and_peak(h100):
    catalog = load_gpus(CATALOG)
    gpu = gpu_of(h100, catalog)
    assert gpu.key == "h100-sxm" and gpu.count == 1
    multi = copy.deepcopy(h100)
    multi["run"]["ulysses_size"] = 2
    assert gpu_of(multi, catalog).count == 2
    cpu = copy.deepcopy(h100)
    cpu["system"]["gpu"] = None
    assert gpu_of(cpu, catalog).key is None


def test_gpu_count_is_gpus_used_cfg_parallel_and_world_size(h100):
    catalog = load_gpus(CATALOG)
    rep = copy.deepcopy(h100)
    rep["run"]["cfg_parallel"] = True  # --cfg_parallel on 2 GPUs, ulysses_size 1
    assert gpu_of(rep, catalog).count == 2 and gpu_of(rep, catalog).label == "2× NVIDIA H100 80GB HBM3"
    rep["run"]["ulysses_size"] = 2
    assert gpu_of(rep, catalog).count == 4
    rep["parallel"] = {"world_size": 3}  # the merged report's world size wins over the flags
    assert gpu_of(rep, catalog).count == 3
    rep["system"]["gpu"]["count"] = 8  # system.gpu.count is not read for the run's GPUs
    assert gpu_of(rep, catalog).count == 3


def test_peak_memory_is_one_definition_allocated_and_reserved(h100):
    assert peak_memory_gb(h100, "allocated") == 21.0 and peak_memory_gb(h100, "reserved") == 22.0
    assert peak_memory(h100, "reserved") is h100["totals"]["peak_reserved_gb"]
    rep = copy.deepcopy(h100)
    rep["totals"]["peak_reserved_gb"]["value"] = 23.5  # the run's root window can exceed every stage
    assert peak_memory_gb(rep, "reserved") == 23.5 and peak_memory_gb(rep, "allocated") == 21.0
    del rep["totals"]["peak_reserved_gb"]  # a report from before totals.peak_reserved_gb: max over stages
    m = peak_memory(rep, "reserved")
    assert m["value"] == 22.0 and "stages" in m["reason"]
    rep["parallel"] = {"world_size": 2, "ranks": [{"rank": 0, "totals": h100["totals"]},
                                                   {"rank": 1, "totals": {"peak_reserved_gb": {"value": 30.0},
                                                                          "peak_memory_gb": {"value": 29.0}}}]}
    assert peak_memory_gb(rep, "reserved") == 30.0 and peak_memory_gb(rep, "allocated") == 29.0  # per card: max
    cpu = copy.deepcopy(h100)
    for s in cpu["stages"]:
        s["memory"] = {}
    cpu["totals"]["peak_memory_gb"] = {"value": None, "unit": "GiB", "source": "unavailable", "reason": "no CUDA device"}
    del cpu["totals"]["peak_reserved_gb"]
    assert peak_memory_gb(cpu, "allocated") is None and peak_memory(cpu, "allocated")["reason"] == "no CUDA device"
    assert peak_memory(cpu, "reserved")["source"] == "unavailable"
    with pytest.raises(ValueError):
        peak_memory(h100, "max")


def _case_dir(tmp_path: Path, name: str, rep: dict) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "01_Offload_Mode.json").write_text(json.dumps(rep))
    return d


def test_fit_uses_peak_reserved_and_says_so(tmp_path, h100):
    rep = copy.deepcopy(h100)
    rep["totals"]["peak_reserved_gb"]["value"] = 23.5  # allocated 21.0 + 1 would fit a 24 GB card; reserved not
    out = tmp_path / "fit.md"
    compare([str(_case_dir(tmp_path, "h", rep))], out, str(CATALOG))
    text = out.read_text()
    assert "| NVIDIA GeForce RTX 4090 | 24 | 24.50 | does not fit (-0.5 GB) |" in text
    assert "Need = peak **reserved** memory 23.50 GB (held by PyTorch's caching allocator; 21.00 GB allocated" in text
    assert "Fit: measured peak reserved memory" in text and "| Need GB (reserved + context) |" in text


def test_multi_gpu_efficiency_uses_all_rank_flops_and_gpus_used(tmp_path, h100):
    rep = copy.deepcopy(h100)
    rep["run"]["cfg_parallel"] = True
    rep["parallel"] = {"world_size": 2, "ulysses_size": 1, "cfg_parallel": True, "ranks": []}
    rep["totals"]["flops"] = {"value": 4.4e15, "unit": "FLOP", "source": "analytic", "reason": "sum over 2 ranks"}
    out = tmp_path / "multi.md"
    _, comps = compare([str(_case_dir(tmp_path, "m", rep))], out, str(CATALOG), targets=["h100-sxm"])
    row = comps[0].rows[0]
    assert row.label == "2× NVIDIA H100 80GB HBM3" and row.count == 2 and row.flops == 4.4e15
    eff, _ = efficiency(row.flops, row.total_s, row.entry, row.count)
    assert eff == pytest.approx(4.4e15 / 102 / (989e12 * 2))  # = the 1-GPU run's 2.18 %, not twice it
    assert "| 2× NVIDIA H100 80GB HBM3 | measured | 102.00 | 2.2 % |" in out.read_text()


def test_tiny_efficiency_and_money_never_print_as_zero(tmp_path, h100):
    rep = copy.deepcopy(h100)
    rep["totals"]["flops"]["value"] = 1e9  # a tiny run: 1e-8 of peak
    out = tmp_path / "tiny.md"
    compare([str(_case_dir(tmp_path, "t", rep))], out, str(CATALOG), targets=["h100-sxm"])
    row = next(line for line in out.read_text().splitlines() if line.startswith("| NVIDIA H100 80GB HBM3 | measured | 102"))
    assert "| 9.9e-07 % |" in row and "| 0.0 % |" not in row
    assert _money(0.00004) == "$4e-05" and _money(0.05) == "$0.0500"


def test_parsers_are_the_shared_one_line_parser():
    from wan_enhanced.argparse_util import OneLineParser
    from wan_enhanced.bench import runner
    from wan_enhanced.bench.compare import build_parser
    from wan_enhanced.errors import ConfigError

    for parser in (build_parser(), runner.build_parser()):
        assert isinstance(parser, OneLineParser)
        with pytest.raises(ConfigError, match="unrecognized arguments: .*--nope"):
            parser.parse_args(["x", "--nope"])


def test_compare_report_on_fixtures(tmp_path, capsys):
    out = tmp_path / "cmp.md"
    rc = compare_main([str(FIX / "h100"), str(FIX / "rtx4090"), "--catalog", str(CATALOG), "--output", str(out)])
    assert rc == 0
    assert "2 cases, 3 measured and 1 projected rows" in capsys.readouterr().out
    text = out.read_text()
    case = text.split("## 01_Offload_Mode")[1].split("## 05_Budget_16GB")[0]
    # measured rows, and a projection for the catalog GPU that was not measured (RTX PRO 6000)
    assert ("| NVIDIA H100 80GB HBM3 | measured | ok | 102.00 | 8.00 | 2.00 | 1.00 | 5.00 | 62.00 | 20.00 | 3.00 | 1.00 |"
            in case)  # main stages, then "other" = 1 s between them
    assert "| NVIDIA GeForce RTX 4090 | measured | ok | 480.00 |" in case
    assert "| NVIDIA RTX PRO 6000 Blackwell | projected from NVIDIA H100 80GB HBM3 | — | 181.03 |" in case
    # projected vs measured where both exist, with the error
    assert "| NVIDIA GeForce RTX 4090 | NVIDIA H100 SXM | 467.62 | 480.00 | -2.6 % |" in case
    # efficiency, cost-effectiveness (×3.6e6), $ per video from hourly low–high, measured Wh
    assert "| NVIDIA H100 80GB HBM3 | measured | 102.00 | 2.2 % | 1.18 (0.25× best) | $0.0762–$0.118 | 10.000 |" in case
    assert "| NVIDIA GeForce RTX 4090 | measured | 480.00 | 2.8 % | 4.69 (1.00× best) | $0.0453–$0.149 | 50.000 |" in case
    assert "energy is not projected" in text  # projected Wh is n/a with the reason
    # fit: 22.0 GB peak + 1 GB allowance
    assert "| NVIDIA GeForce RTX 4090 | 24 | 23.00 | fits (+1.0 GB) |" in case
    # prices carry source and date
    assert "$1,599 (fixture: launch MSRP, 2022-10)" in text and "$2.69–4.18 (fixture: cloud snapshot, 2026)" in text
    budget = text.split("## 05_Budget_16GB")[1]
    assert "oom: does not fit within 16 GB" in budget and "**does not fit within 16 GB**" in budget
    for png in ("total_time.png", "cost_effectiveness.png", "stage_times.png"):
        assert (tmp_path / "cmp_files" / png).is_file()


def test_compare_reads_suite_run_dirs(tmp_path):
    runs = tmp_path / "machines"
    for machine in ("h100", "rtx4090"):
        run = runs / f"run-{machine}"
        run.mkdir(parents=True)
        shutil.copy(FIX / machine / "01_Offload_Mode.json", run / "01_Offload_Mode.json")
        (run / "suite.json").write_text(json.dumps({
            "schema": "wan-enhanced/suite", "schema_version": 1, "run_id": run.name,
            "cases": [{"name": "01_Offload_Mode", "status": "ok", "report": "01_Offload_Mode.json"}]}))
    path, comps = compare([str(runs)], tmp_path / "c.md", str(CATALOG), targets=["rtx-4090", "h100-sxm"])
    assert [c.case for c in comps] == ["01_Offload_Mode"]
    rows = comps[0].rows
    assert [(r.label, r.projected) for r in rows] == [("NVIDIA H100 80GB HBM3", False),
                                                     ("NVIDIA GeForce RTX 4090", False)]
    assert len(comps[0].checks) == 2  # each measured GPU projected from the other


@pytest.mark.parametrize("argv, expected", [
    (["/no/such/dir"], "error: compare: '/no/such/dir' does not exist"),
    ([str(FIX / "h100"), "--targets", "rtx-9999"], "error: --targets: 'rtx-9999' is not in the catalog"),
    ([str(FIX / "h100"), "--catalog", "/no/catalog.json"], "error: --catalog: GPU catalog not found"),
    ([str(FIX / "h100"), "--context-gb", "-1"], "error: --context-gb: -1.0 is not allowed"),
])
def test_compare_bad_input_is_one_line(tmp_path, capsys, argv, expected):
    if "--catalog" not in argv:
        argv = argv + ["--catalog", str(CATALOG)]
    assert compare_main(argv + ["--output", str(tmp_path / "x.md")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1, err
