"""The per-architecture projection, the answer table of ``compare`` and the peer records (CPU, fixtures)."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from wan_enhanced import stages as st
from wan_enhanced.bench import perf_model as pm
from wan_enhanced.bench.compare import compare, compare_main
from wan_enhanced.bench.gpus import by_key, load_gpus
from wan_enhanced.bench.projection import fit_verdict, profile_from_report, project
from wan_enhanced.errors import ConfigError
from wan_enhanced.peers.record import job_estimate, ratio_rows, record_from_stages
from wan_enhanced.report.schema import load_report

ROOT = Path(__file__).resolve().parents[1]
FIX = Path(__file__).parent / "fixtures" / "reports"
CATALOG = FIX / "gpus_catalog.json"
DIT = {"num_attention_heads": 24, "attention_head_dim": 128, "ffn_dim": 14336, "num_layers": 30, "in_channels": 48,
       "out_channels": 48, "text_dim": 4096, "freq_dim": 256, "patch_size": (1, 2, 2)}


@pytest.fixture(scope="module")
def cat() -> dict:
    return by_key(load_gpus(CATALOG))


def _std(rep: dict, *, backend: str = "flash4") -> dict:
    """A fixture report made a standard-job report of our fast path (27,280 tokens, scalar timestep)."""
    rep = copy.deepcopy(rep)
    rep["run"].update(num_tokens=27280, fast_path={"attention_backend": backend, "scalar_timestep": True},
                      residency="resident", vae_dtype="bf16")
    return rep


@pytest.fixture(scope="module")
def h100() -> dict:
    return _std(load_report(FIX / "h100" / "01_Offload_Mode.json"))


def test_dit_work_splits_the_flop_plan_into_gemm_and_attention():
    w = pm.dit_work(DIT, 27280, 512, per_token_timestep=False)
    # self-attention 4·N²·d·L = 274.3 TFLOP + cross-attention 5.15; linear layers: q,k,v,o + cross q,o over the
    # video tokens, cross k,v over the text, the FFN (237.5 TFLOP; + 3.65 with the per-token time embedding)
    n, d, layers = 27280, 3072, 30
    assert w.attention_flops == pytest.approx(4 * n**2 * d * layers + 4 * n * 512 * d * layers)
    linear = layers * (6 * 2 * n * d * d + 2 * 2 * 512 * d * d + 2 * 2 * n * d * 14336)
    assert w.gemm_flops == pytest.approx(linear, rel=1e-3)  # + patch/time/text embeddings and proj_out
    per_token = pm.dit_work(DIT, n, 512, per_token_timestep=True)
    assert (per_token.gemm_flops - w.gemm_flops) / 1e12 == pytest.approx(3.65, abs=0.05)


def test_step_model_by_hand(cat):
    src, tgt = cat["h100-sxm"], cat["rtx-4090"]
    w = pm.DitWork(gemm_flops=200e12, attention_flops=280e12, tokens=27280)
    step, parts, basis = pm.step_seconds(1.6, w, 2, src, "fa4", tgt, "cudnn")
    rest_src = 1.6 - 2 * 200 / 800 - 2 * 280 / 700  # 0.3 s left after GEMM and FA4 time on the H100
    assert parts["source_rest_s"] == pytest.approx(rest_src)
    assert parts["gemm_s"] == pytest.approx(2 * 200 / 160) and parts["attention_s"] == pytest.approx(2 * 280 / 150)
    assert parts["rest_s"] == pytest.approx(rest_src * 3350 / 1008)
    assert step == pytest.approx(sum(parts[k] for k in ("gemm_s", "attention_s", "rest_s")))
    assert "cudnn 150 TFLOP/s" in basis and "bandwidth 3350/1008" in basis
    same, _, _ = pm.step_seconds(1.6, w, 2, src, "fa4", src, "fa4")
    assert same == pytest.approx(1.6)


@pytest.mark.parametrize("cc, kernel", [("8.9", "cudnn"), ("9.0", "fa4"), ("10.0", "fa4"), ("12.0", "cudnn"),
                                        ("8.0", "cudnn")])
def test_auto_kernel_follows_our_auto_rule(cc, kernel):
    assert pm.auto_kernel({"compute_capability": cc})[0] == kernel
    assert pm.auto_kernel({"compute_capability": cc}, fa4_installed=False)[0] == "cudnn"


def test_attention_rate_falls_back_when_the_gpu_has_no_rate_for_the_kernel(cat):
    rate, used, why = pm.attention_rate(cat["rtx-4090"], "fa4")  # FA4 cannot run on 8.9
    assert (rate, used) == (150, "cudnn") and "cudnn 150" in why


def test_vae_decode_moves_by_its_conv_and_memory_split(cat):
    conv = pm.workload()["vae_decode"]["conv_fraction"]
    src, tgt = cat["h100-sxm"], cat["rtx-4090"]
    v, basis = pm.vae_decode_seconds(6.0, "bf16", src, tgt)
    assert v == pytest.approx(6.0 * (conv * 800 / 160 + (1 - conv) * 3350 / 1008))
    v32, basis32 = pm.vae_decode_seconds(10.0, "fp32", src, tgt)
    assert v32 == pytest.approx(10.0 * (conv * 500 / 80 + (1 - conv) * 3350 / 1008)) and "TF32" in basis32


def test_same_gpu_projection_reproduces_the_job_time(h100, cat):
    prof = profile_from_report(h100, cat["h100-sxm"], source="fixture")
    assert prof.job_kind == "extrapolated from 2 steps" and prof.forwards == 2 and prof.kernel == "fa4"
    # 8 + 2 + 1 + 5 stages, first step 31, 49 × 30 s steady, 1 s of the loop outside its steps, decode 20, mp4 3,
    # 1 s outside the stages
    assert prof.job_seconds() == pytest.approx(8 + 2 + 1 + 5 + 31 + 49 * 30 + 1 + 20 + 3 + 1)
    p = project(prof, cat["h100-sxm"], cat["h100-sxm"])
    assert p.total_s == pytest.approx(prof.job_seconds())
    assert "same GPU as the source" in " ".join(p.caveats)


def test_host_stages_are_kept_and_scaled_only_by_the_host_profile(h100, cat):
    prof = profile_from_report(h100, cat["h100-sxm"])
    p1 = project(prof, cat["h100-sxm"], cat["rtx-4090"])
    p2 = project(prof, cat["h100-sxm"], cat["rtx-4090"], host_scale=2.0)
    by1, by2 = {x.name: x for x in p1.parts}, {x.name: x for x in p2.parts}
    for name in ("Load_Text_Encoder", "Load_DiT", "Save_Video", "Denoising · first-step warm-up"):
        assert by1[name].projected_s == pytest.approx(by1[name].measured_s)
        assert by2[name].projected_s == pytest.approx(2 * by1[name].measured_s)
    assert by1["Denoising · first-step warm-up"].bound == st.HOST_COMPILE
    assert by1["Denoising · first-step warm-up"].measured_s == pytest.approx(1.0)  # 31 − 30
    steps = by1["Denoising · 50 steps"]
    assert steps.projected_s == pytest.approx(50 * p1.steady_step_s) and p1.kernel == "cudnn"
    assert by1["VAE_Decoding"].projected_s > by1["VAE_Decoding"].measured_s


def test_warm_seconds_drop_only_the_first_steps_excess_not_the_dits_set_up(h100, cat):
    """Prepare_DiT (FA4's activation, the compile wrappers) is host_compile work every process pays, warm caches or
    not: like the measured rows and the report's video_s_warm, a projected row's warm time keeps it."""
    from wan_enhanced.bench.answer import projected_row
    from wan_enhanced.bench.compare_inputs import Measured
    from wan_enhanced.bench.projection import WARMUP_PART

    rep = copy.deepcopy(h100)
    load = next(s for s in rep["stages"] if s["name"] == "Load_DiT")
    prep = copy.deepcopy(load)
    load["duration_s"] -= 4.0  # the same run, with 4 s of its Load_DiT recorded as its own stage
    prep.update(name="Prepare_DiT", comment=st.PREPARE_DIT.comment, duration_s=4.0)
    rep["stages"].insert(rep["stages"].index(load) + 1, prep)
    m = Measured(case="c", report=rep, path=Path("r.json"), gpu=None, entry=cat["h100-sxm"], status="ok", created="")
    row = projected_row(cat["rtx-4090"], [(m, cat["h100-sxm"])], host_scale=1.0, context_gb=1.0)
    parts = {x.name: x for x in row.projection.parts}
    assert parts["Prepare_DiT"].bound == st.HOST_COMPILE and parts["Prepare_DiT"].projected_s == pytest.approx(4.0)
    assert row.warm_seconds == pytest.approx(row.seconds - parts[WARMUP_PART].projected_s)
    assert parts[WARMUP_PART].measured_s == pytest.approx(1.0)


def test_offloaded_runs_move_their_onload_over_the_link(h100, cat):
    rep = copy.deepcopy(h100)
    rep["run"]["residency"] = "offload"  # Denoising's 1 s outside its two steps is then the DiT's onload
    prof = profile_from_report(rep, cat["h100-sxm"])
    p = project(prof, cat["h100-sxm"], cat["rtx-4090"])
    part = next(x for x in p.parts if "onload" in x.name)
    assert part.bound == st.TRANSFER and part.projected_s == pytest.approx(1.0 * 50 / 25)


@pytest.mark.parametrize("reserved, memory, verdict", [(14.3, 24, "fits"), (22.5, 24, "marginal"),
                                                       (23.5, 24, "does not fit"), (None, 24, "unknown")])
def test_fit_verdict_with_marginal(reserved, memory, verdict):
    assert fit_verdict(reserved, memory, 1.0)[0] == verdict


def test_missing_catalog_field_is_named(cat):
    broken = dict(cat["rtx-4090"])
    del broken["rates"]
    with pytest.raises(ConfigError, match="lacks 'rates'"):
        pm.check_entry(broken)


def _dirs(tmp_path: Path, h100: dict) -> Path:
    root = tmp_path / "results" / "machines"  # two levels down: compare searches recursively
    (root / "h100" / "suite").mkdir(parents=True)
    (root / "h100" / "suite" / "01_Offload_Mode.json").write_text(json.dumps(h100))
    (root / "rtx4090").mkdir()
    shutil.copy(FIX / "rtx4090" / "01_Offload_Mode.json", root / "rtx4090" / "01_Offload_Mode.json")
    (root / "notes.json").write_text(json.dumps({"something": "else"}))  # not a report: skipped
    return tmp_path / "results"


def test_answer_table_first_measured_and_projected(tmp_path, h100, capsys):
    out = tmp_path / "cmp.md"
    rc = compare_main([str(_dirs(tmp_path, h100)), "--catalog", str(CATALOG), "--output", str(out)])
    assert rc == 0, capsys.readouterr().err
    text = out.read_text()
    assert text.startswith("# How long does one video take, does it fit, what does it cost")
    table = [line for line in text.splitlines() if line.startswith("| NVIDIA")][:3]
    assert len(table) == 3
    h, r4090, pro = table
    assert h.startswith("| NVIDIA H100 SXM | **1542** |") and "extrapolated from 2 steps" in h
    assert r4090.startswith("| NVIDIA GeForce RTX 4090 |") and "extrapolated from 2 steps" in r4090
    assert pro.startswith("| NVIDIA RTX PRO 6000 Blackwell |") and "(projected)" in pro and "projected from" in pro
    band = pm.workload()["projection_band"]["cross_arch"]  # Hopper → Blackwell: the cross-architecture band
    assert f"±{band:g} %: validation, cross-architecture" in pro
    from wan_enhanced.bench.reportdata import peak_memory_gb

    need = peak_memory_gb(load_report(FIX / "rtx4090" / "01_Offload_Mode.json"), "reserved") + 1.0
    assert f"fits ({need:.1f} of 24 GiB)" in r4090  # peak reserved + 1 GiB context
    assert (tmp_path / "cmp_files" / "answer.png").is_file()
    assert "Step_1" not in text.split("## Projections")[1]  # per-step rows collapsed


def test_targets_filter_every_table(tmp_path, h100):
    out = tmp_path / "t.md"
    _, rows = compare([str(_dirs(tmp_path, h100))], out, str(CATALOG), targets=["rtx-pro-6000-blackwell"])
    assert [r.key for r in rows] == ["rtx-pro-6000-blackwell"] and rows[0].projected
    text = out.read_text()
    assert "RTX 4090 | " not in text.split("## GPU catalog")[0]  # neither measured table nor answer shows it


@pytest.mark.parametrize("argv, expected", [
    (["--targets", "rtx-9999"], "error: --targets: 'rtx-9999' is not in the catalog; allowed: rtx-4090, "),
    (["--host", "0"], "error: --host: 0.0 is not allowed; must be > 0"),
])
def test_compare_bad_input_is_one_line(tmp_path, capsys, argv, expected, h100):
    assert compare_main([str(_dirs(tmp_path, h100)), "--catalog", str(CATALOG), "--output",
                         str(tmp_path / "x.md"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1, err


def test_catalog_entry_missing_a_model_field_is_one_line(tmp_path, capsys, h100):
    c = json.loads(CATALOG.read_text())
    del c["gpus"][1]["rates"]["gemm_bf16"]
    bad = tmp_path / "cat.json"
    bad.write_text(json.dumps(c))
    assert compare_main([str(_dirs(tmp_path, h100)), "--catalog", str(bad), "--targets", "rtx-pro-6000-blackwell",
                         "--output", str(tmp_path / "x.md")]) == 2
    err = capsys.readouterr().err
    assert err == ("error: catalog entry 'rtx-pro-6000-blackwell' lacks rates.gemm_bf16, which the projection "
                   "needs\n")


# ------------------------------------------------------------------------------------------ peer records
def _stage(name: str, dur: float, parent: str | None = st.TOTAL.name, peak: float | None = None) -> dict:
    return {"name": name, "parent": parent, "duration_s": dur, "memory": {"peak_gb": {"value": peak},
                                                                        "peak_reserved_gb": {"value": peak}}}


def test_peer_record_extrapolates_the_steps_and_labels_it():
    stages = [_stage("Total", 30.0, None), _stage("Load_DiT", 5.0), _stage("Text_Encoding", 1.0),
              _stage("Denoising", 12.5), _stage("Step_0", 5.0, "Denoising"), _stage("Step_1", 3.0, "Denoising"),
              _stage("Step_2", 4.0, "Denoising", peak=20.0), _stage("VAE_Decoding", 10.0, peak=30.0)]
    rec = record_from_stages("p", stages, flags={}, job_steps=50, label="peer")
    e = rec["estimate"]
    assert e["kind"] == "extrapolated from 3 steps" and e["steady_step_s"] == 3.5
    assert e["denoise_s"] == pytest.approx(5.0 + 49 * 3.5 + 0.5)  # 0.5 s of the loop outside its steps
    assert e["core_s"] == pytest.approx(e["denoise_s"] + 10.0)
    assert e["total_s"] == pytest.approx(5 + 1 + e["denoise_s"] + 10 + 1.5)  # 1.5 s outside the stages
    assert rec["peak_reserved_gb"] == 30.0
    full = dict(rec, job_steps=3)
    assert job_estimate(full)["kind"] == "measured" and job_estimate(full)["denoise_s"] == 12.5
    rows = ratio_rows(rec, [dict(rec, peer="q", label="slower", estimate=dict(e, core_s=2 * e["core_s"]))])
    assert rows[0]["core_ratio"] == pytest.approx(2.0)


def _peers_module():
    spec = importlib.util.spec_from_file_location("peers_script", ROOT / "benchmark" / "peers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.mark.parametrize("argv, expected", [
    (["--peers", "bogus"], "error: --peers: 'bogus' is not a peer; allowed: ours, diffusers_plain"),
    (["--device", "cpu"], "error: --device cpu: only --task tiny runs on the CPU"),
    (["--task", "tiny", "--device", "cpu", "--steps", "0"], "error: --steps 0: must be 1..--job_steps (50)"),
])
def test_peers_bad_input_is_one_line_before_any_model(tmp_path, capsys, argv, expected):
    mod = _peers_module()
    base = ["--out", str(tmp_path / "o"), "--ckpt_dir", str(tmp_path / "ck")]
    if "--device" not in argv:
        argv = argv + ["--device", "cpu", "--task", "tiny"]
    assert mod.main(base + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1, err
    assert not (tmp_path / "ck").exists()  # nothing was written


def test_committed_validation_has_every_point_with_its_error():
    v = json.loads((ROOT / "benchmark" / "results" / "validation.json").read_text())
    keys = {p["key"] for p in v["points"]}
    assert {"official-readme-4090", "seed-fork-pro6000", "ours-h100-sxm-to-h200-sxm",
            "ours-h200-sxm-to-h100-sxm"} <= keys
    for p in v["points"]:
        assert isinstance(p["time"]["error_pct"], float) and p["verdict"]
    band = pm.workload()["projection_band"]
    errs = [abs(p["time"]["error_pct"]) for p in v["points"] if not p["same_arch"]]
    assert band["cross_arch"] == round(max(errs) + 0.5)


def test_readme_answer_table_is_what_compare_computes_from_the_committed_runs():
    from wan_enhanced.bench.answer import answer_rows
    from wan_enhanced.bench.compare_inputs import collect

    catalog = load_gpus()
    runs, _ = collect([ROOT / "benchmark" / "results"], catalog)
    rows, _ = answer_rows(runs, catalog, None)
    readme = (ROOT / "README.md").read_text().split("## The answer")[1].split("\n\n")[2]
    short = {"h100-sxm": "H100 SXM", "h200-sxm": "H200 SXM", "rtx-4090": "RTX 4090",
             "rtx-pro-6000-blackwell": "RTX PRO 6000 Blackwell"}
    assert [r.key for r in rows] == list(short)
    for r in rows:
        line = next(x for x in readme.splitlines() if x.startswith(f"| {short[r.key]} |"))
        assert f"| **{r.seconds:.0f}**" in line and f"{r.band[0]:.0f}–{r.band[1]:.0f} s" in line, (line, r)
        assert r.fit in line
