"""Cross-GPU compare on hand-written fixture reports (tests/fixtures/reports/): GPU identity, peak memory,
costs by hand, input discovery and bad input. The projection itself: tests/test_projection.py."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from wan_enhanced.bench.compare import compare, compare_main
from wan_enhanced.bench.compare_render import money
from wan_enhanced.bench.cost_model import (
    cost_effectiveness,
    dollars_per_video,
    efficiency,
    videos_per_hour_per_1k,
)
from wan_enhanced.bench.gpus import by_key, load_gpus
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


def test_cost_and_efficiency_by_hand(cat):
    h = cat["h100-sxm"]
    eff, _ = efficiency(2.2e15, 102.0, h, 1)
    assert eff == pytest.approx(2.2e15 / 102 / 989e12)  # 2.18 %
    ce, _ = cost_effectiveness(102.0, h, 1)
    assert ce == pytest.approx((1 / 102) / 30000)
    assert ce * 3.6e6 == pytest.approx(1.1765, abs=1e-4)  # videos/h per $1k
    dv, src = dollars_per_video(102.0, h, 1)
    assert dv == pytest.approx((102 / 3600 * 2.69, 102 / 3600 * 4.18)) and "fixture: cloud snapshot, 2026" == src
    assert videos_per_hour_per_1k(102.0, h)[0] == pytest.approx(3600 / 102 / 30)
    assert money(0.00004) == "$4e-05" and money(0.05) == "$0.0500"
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


def test_parsers_are_the_shared_one_line_parser():
    from wan_enhanced.argparse_util import OneLineParser
    from wan_enhanced.bench import runner
    from wan_enhanced.bench.compare import build_parser
    from wan_enhanced.errors import ConfigError

    for parser in (build_parser(), runner.build_parser()):
        assert isinstance(parser, OneLineParser)
        with pytest.raises(ConfigError, match="unrecognized arguments: .*--nope"):
            parser.parse_args(["x", "--nope"])


def test_compare_reads_suite_run_dirs(tmp_path):
    runs = tmp_path / "machines"
    for machine in ("h100", "rtx4090"):
        run = runs / "deep" / f"run-{machine}"  # suites two levels down are found
        run.mkdir(parents=True)
        shutil.copy(FIX / machine / "01_Offload_Mode.json", run / "01_Offload_Mode.json")
        (run / "suite.json").write_text(json.dumps({
            "schema": "wan-enhanced/suite", "schema_version": 1, "run_id": run.name,
            "cases": [{"name": "01_Offload_Mode", "status": "ok", "report": "01_Offload_Mode.json"}]}))
    path, rows = compare([str(runs)], tmp_path / "c.md", str(CATALOG), targets=["rtx-4090", "h100-sxm"])
    assert [(r.key, r.projected, r.basis) for r in rows] == [("rtx-4090", False, "extrapolated from 2 steps"),
                                                            ("h100-sxm", False, "extrapolated from 2 steps")]


@pytest.mark.parametrize("argv, expected", [
    (["/no/such/dir"], "error: compare: '/no/such/dir' does not exist"),
    ([str(FIX / "h100"), "--targets", "rtx-9999"], "error: --targets: 'rtx-9999' is not in the catalog"),
    ([str(FIX / "h100"), "--catalog", "/no/catalog.json"], "error: --catalog: GPU catalog not found"),
    ([str(FIX / "h100"), "--context-gb", "-1"], "error: --context-gb: -1.0 is not allowed"),
    ([str(Path(__file__).parent / "fixtures" / "official_ti2v5b_keys.json")],
     f"error: {Path(__file__).parent / 'fixtures' / 'official_ti2v5b_keys.json'}: not a wan-enhanced report"),
])
def test_compare_bad_input_is_one_line(tmp_path, capsys, argv, expected):
    if "--catalog" not in argv:
        argv = argv + ["--catalog", str(CATALOG)]
    assert compare_main(argv + ["--output", str(tmp_path / "x.md")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1, err
