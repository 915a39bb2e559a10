"""Every second accounted for, and cold vs warm: each parent = its children + an explicit ``(untracked)``
remainder in the JSON, the text table, the Markdown and the charts' data; ``Warmup``, ``steady_s_per_step``,
``cold_start_s``, ``video_s_warm``; the FLOP scope of throughput and MFU."""

from __future__ import annotations

import pytest
import torch

from wan_enhanced import stages
from wan_enhanced.bench import reportdata as rd
from wan_enhanced.bench.markdown import Notes, stage_table
from wan_enhanced.config import RunConfig, validate
from wan_enhanced.report.build import warm_totals
from wan_enhanced.report.text import format_table
from wan_enhanced.report.values import fmt_num
from wan_enhanced.run import run_generation


def _run(tmp, **kw) -> dict:
    cfg = validate(RunConfig(task="tiny", device="cpu", save_file=str(tmp / "v.mp4"), **kw), cuda_available=False)
    out = run_generation(cfg, progress=False)
    assert out.status == "ok", out.message
    return out


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("warm"), warmup=True)


@pytest.mark.parametrize("which", ["plain", "warm"])
def test_every_parent_is_its_children_plus_its_untracked_remainder(which, request):
    report = request.getfixturevalue(which).report
    by_index = {s["index"]: s for s in report["stages"]}
    parents = {s["parent_index"] for s in report["stages"] if s["parent_index"] is not None}
    assert {by_index[i]["name"] for i in parents} == {"Total", "Denoising"}
    for i in parents:
        p = by_index[i]
        kids = [s for s in report["stages"] if s["parent_index"] == i]
        assert p["children_s"] == pytest.approx(sum(k["duration_s"] for k in kids), abs=1e-6)
        assert p["children_s"] + p["untracked_s"] == pytest.approx(p["duration_s"], rel=1e-3, abs=2e-6)
        assert p["untracked_s"] >= -1e-6
    total = by_index[0]
    # the work between stages (freeing models, saving latents) has stages of its own: little is left untracked
    assert total["untracked_s"] < 0.05 * total["duration_s"], total


def test_the_text_table_and_the_markdown_show_the_remainder_rows_that_close_each_parent(plain):
    report = plain.report
    total = next(s for s in report["stages"] if s["name"] == "Total")
    den = next(s for s in report["stages"] if s["name"] == "Denoising")
    lines = format_table(report).splitlines()
    rem = [ln for ln in lines if ln.strip().startswith("(untracked)")]
    assert len(rem) == 2
    assert rem[0].startswith("    (untracked)") and "Denoising outside its child stages" in rem[0]
    assert rem[1].startswith("  (untracked)") and "Total outside its child stages" in rem[1]
    # the Denoising remainder row follows its last step, the Total one ends the table body
    names = [ln.split("|")[0].strip() for ln in lines if "|" in ln]
    assert names[names.index("Step_3") + 1] == "(untracked)" and names[-1] == "(untracked)"
    md = stage_table(report, Notes())
    md_rem = [ln for ln in md if "(untracked)" in ln]
    assert len(md_rem) == 2
    assert md_rem[0].split(" | ")[1] == fmt_num(den["untracked_s"], 3)
    assert md_rem[1].split(" | ")[1] == fmt_num(total["untracked_s"], 3)
    seconds = rd.top_stage_seconds(report)
    assert list(seconds)[-1] == stages.UNTRACKED
    assert sum(seconds.values()) == pytest.approx(total["duration_s"], rel=1e-3)  # the chart's bar = Total
    assert seconds[stages.UNTRACKED] == pytest.approx(total["untracked_s"], abs=1e-6)


def test_warmup_is_its_own_child_before_step_0_and_changes_no_arithmetic(plain, warm):
    names = [s["name"] for s in warm.report["stages"] if s["parent"] == "Denoising"]
    assert names == ["Warmup", "Step_0", "Step_1", "Step_2", "Step_3"]
    assert "Warmup" not in [s["name"] for s in plain.report["stages"]]
    assert torch.equal(plain.result.latents, warm.result.latents)
    st = {s["name"]: s for s in warm.report["stages"]}
    assert st["Warmup"]["flops"]["value"] == st["Step_0"]["flops"]["value"] > 0  # a step's DiT forwards


def test_warm_totals_take_the_first_call_apart():
    steps = [{"duration_s": d} for d in (5.0, 1.0, 1.2, 0.9)]
    t = warm_totals(steps, None, wall_s=20.0)
    assert t["steady_s_per_step"]["value"] == 1.0 and t["steady_s_per_step"]["reason"] == "median of steps 2..4"
    assert t["cold_start_s"]["value"] == 4.0 and t["cold_start_s"]["reason"].startswith("Step_0 − steady step")
    assert t["video_s_warm"]["value"] == 16.0
    # with a warm-up forward: cold = Warmup + Step_0 − 2 × steady; warm video = wall − (Warmup + Step_0 − steady)
    t = warm_totals([{"duration_s": d} for d in (1.2, 1.0, 1.0)], 3.0, wall_s=20.0)
    assert t["cold_start_s"]["value"] == pytest.approx(2.2) and t["video_s_warm"]["value"] == pytest.approx(16.8)
    t = warm_totals([{"duration_s": 1.5}], 3.0, wall_s=9.0)
    assert t["steady_s_per_step"]["value"] == 1.5 and t["cold_start_s"]["value"] == pytest.approx(1.5)
    t = warm_totals([{"duration_s": 1.5}], None, wall_s=9.0)
    assert all(m["value"] is None and "only one step" in m["reason"] for m in t.values())


def test_totals_carry_the_warm_figures_and_the_flop_scope_of_throughput(plain, warm):
    for out in (plain, warm):
        t = out.report["totals"]
        assert t["steady_s_per_step"]["value"] > 0
        # the arithmetic, not its sign: on a loaded 2-core CPU the tiny preset's Step_0 can beat the median step
        st = {s["name"]: s["duration_s"] for s in out.report["stages"]}
        first = st.get("Warmup", 0.0) + st["Step_0"] - t["steady_s_per_step"]["value"]
        assert t["video_s_warm"]["value"] == pytest.approx(t["wall_s"]["value"] - first, abs=1e-5)
        den = next(s for s in out.report["stages"] if s["name"] == "Denoising")
        assert t["scope_flops"]["value"] == den["flops"]["value"]
        assert t["tflops_per_s"]["value"] == pytest.approx(den["flops"]["value"] / den["duration_s"] / 1e12, rel=1e-3)
        step = next(s for s in out.report["stages"] if s["name"] == "Step_1")
        assert t["steady_tflops_per_s"]["value"] == pytest.approx(
            step["flops"]["value"] / t["steady_s_per_step"]["value"] / 1e12, rel=1e-3)
    assert "incl. the warm-up forward" in warm.report["totals"]["tflops_per_s"]["reason"]
    assert "incl. the first step's compile" in plain.report["totals"]["tflops_per_s"]["reason"]


def test_the_seconds_before_total_are_in_the_report_and_the_text(plain):
    """The process's time before Total (imports, checks, set-up) is measured (psutil), never left out silently."""
    import psutil

    from wan_enhanced.report.text import format_report

    proc = plain.report["run"]["process"]
    import time

    age_now = time.time() - psutil.Process().create_time()
    assert 0 < proc["start_to_total_s"] < age_now  # this test process started before the run's Total
    assert proc["source"] == "psutil.Process().create_time() to Total's start"
    assert "report's writing and the process's exit come after Total" in proc["note"]
    text = format_report(plain.report)
    assert f"Before Total: {proc['start_to_total_s']:.2f} s since the process started" in text
    assert "torch.compile's own timers" not in text  # nothing compiled in this run
