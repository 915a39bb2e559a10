"""The benchmark scripts' shared timing helper, and the scripts themselves on the tiny preset (CPU)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from wan_enhanced.bench.timing import errors, summarize, time_fn

ROOT = Path(__file__).resolve().parents[1]


def test_summarize_median_spread_and_iqr():
    t = summarize([4.0, 1.0, 3.0, 2.0, 5.0], first_s=9.0, method="m")
    assert (t.median_s, t.min_s, t.max_s, t.first_s) == (3.0, 1.0, 5.0, 9.0)
    assert t.iqr_s == pytest.approx(4.5 - 1.5)  # statistics.quantiles, exclusive method
    assert summarize([1.0, 2.0], 0.0, "m").iqr_s is None  # fewer than 4 repeats: no IQR
    assert "1–5 s over 5 repeats, IQR 3 s" == t.spread
    with pytest.raises(ValueError):
        summarize([], 0.0, "m")


def test_time_fn_on_cpu_times_each_repeat_and_the_first_call_apart():
    calls = []

    def fn() -> None:
        calls.append(1)
        sum(range(2000))

    t = time_fn(fn, repeats=4, warmup=2, device="cpu")
    # first call, one untimed warm-up, then four measurements (the Timer adds two untimed calls before each)
    assert len(calls) == 1 + 1 + 4 * 3 and len(t.times_s) == 4
    assert t.min_s <= t.median_s <= t.max_s and t.first_s > 0 and t.method == "torch.utils.benchmark.Timer"
    with pytest.raises(ValueError):
        time_fn(fn, repeats=0, device="cpu")


def test_errors():
    import torch

    ref = torch.tensor([1.0, 2.0, 2.0])
    e = errors(ref + torch.tensor([0.0, 0.0, 0.3]), ref)
    assert e["max_abs"] == pytest.approx(0.3) and e["rel_l2"] == pytest.approx(0.1)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmark" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.mark.slow
def test_peers_script_runs_every_peer_it_can_on_the_tiny_preset(tmp_path):
    peers = ["ours", "diffusers_plain"] + (["official_flash"] if importlib.util.find_spec("wan") else [])
    rc = _script("peers").main(["--task", "tiny", "--device", "cpu", "--out", str(tmp_path / "o"), "--ckpt_dir",
                                str(tmp_path / "ck"), "--steps", "2", "--job_steps", "5", "--peers", ",".join(peers)])
    assert rc == 0
    res = json.loads((tmp_path / "o" / "peers.json").read_text())
    assert [r["peer"] for r in res["records"]] == peers and not res["failures"]
    assert [r["peer"] for r in res["ratios"]] == peers[1:]
    for r in res["records"]:
        e = r["estimate"]
        assert e["kind"] == "extrapolated from 2 steps" and e["job_steps"] == 5
        assert e["denoise_s"] == pytest.approx(e["first_step_s"] + 4 * e["steady_step_s"]
                                               + max(0.0, r["stages"]["Denoising"] - sum(r["steps_s"])))
    assert "| peer | denoise + decode (s) |" in (tmp_path / "o" / "peers.md").read_text()


def test_load_official_script_on_the_tiny_preset(tmp_path):
    out = tmp_path / "load.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmark" / "load_official.py"), "--task", "tiny", "--device",
                           "cpu", "--dir", str(tmp_path / "ck"), "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert {(r["cache"], r["model"]) for r in res["runs"]} == {(c, m) for c in ("cold", "warm") for m in ("dit", "t5", "vae")}


def test_issue17_table_groups_runs_and_takes_the_loading_out(tmp_path, capsys):
    """benchmark/issue17_table.py: job excl. load = Total − the three Load_* stages; art_1 + art_2 → one group."""
    gold = json.loads((ROOT / "tests" / "fixtures" / "golden" / "tiny_t2v_issue15.json").read_text())
    st = {s["name"]: s["duration_s"] for s in gold["stages"]}
    for k in (1, 2):
        (tmp_path / f"art_{k}.json").write_text(json.dumps(gold))
    mod = _script("issue17_table")
    summary = mod.summarize(sorted(tmp_path.glob("art_*.json")))
    assert list(summary) == ["art"] and len(summary["art"]["runs"]) == 2
    r = summary["art"]["runs"][0]
    loads = st["Load_Text_Encoder"] + st["Load_VAE"] + st["Load_DiT"]
    assert r["job_excl_load_s"] == pytest.approx(st["Total"] - loads)
    assert r["decode_plus_mp4_s"] is None and r["vae_decoding_s"] == st["VAE_Decoding"]  # no mp4 in that run
    assert summary["art"]["stats"]["job_excl_load_s"]["n"] == 2
    assert r["aot_cache_step0"] is None and r["backend_in_step0_s"] is None  # the tiny run compiles nothing
    assert r["total_s"] == st["Total"] and r["load_s"] == pytest.approx(loads) and r["prepare_dit_s"] is None
    assert mod.main([str(p) for p in sorted(tmp_path.glob("art_*.json"))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| group | n | job excl. load | Total | loads | Prepare_DiT | Step_0 |")
    cell = "{0:.2f} [{0:.2f}–{0:.2f}]".format  # two equal runs: median [min–max]
    assert f"| art | 2 | {cell(st['Total'] - loads)} | {cell(st['Total'])} | {cell(loads)} | — |" in out
    prep = dict(gold, stages=gold["stages"] + [{"name": "Prepare_DiT", "parent": "Total", "duration_s": 0.5}])
    assert mod.row(prep)["prepare_dit_s"] == 0.5 and mod.row(prep)["job_excl_load_s"] == r["job_excl_load_s"]
    gold["run"]["compile_time"] = {"by_stage": {"Step_0": {"backend_compile": 1.25, "entire_frame_compile": 2.0}},
                                   "counts_by_stage": {"Step_0": {"aot_autograd.autograd_cache_hit": 2,
                                                                  "aot_autograd.autograd_cache_bypass": 1,
                                                                  "inductor.fxgraph_cache_hit": 3}}}
    r = mod.row(gold)
    assert (r["aot_cache_step0"], r["backend_in_step0_s"], r["compile_in_step0_s"]) == ("bypass hit×2", 1.25, 2.0)


def test_issue17_table_sets_each_group_against_the_peer_of_the_same_call(tmp_path, capsys):
    """--peer: ratio = the peer's denoise + decode (estimate.core_s) ÷ the group's median denoise + decode."""
    gold = json.loads((ROOT / "tests" / "fixtures" / "golden" / "tiny_t2v_issue15.json").read_text())
    st = {s["name"]: s["duration_s"] for s in gold["stages"]}
    (tmp_path / "art_1.json").write_text(json.dumps(gold))
    ours = st["Denoising"] + st["VAE_Decoding"]
    peer = {"peer": "diffusers_plain", "estimate": {"kind": "extrapolated from 3 steps", "core_s": 3 * ours}}
    (tmp_path / "peer.json").write_text(json.dumps(peer))
    mod = _script("issue17_table")
    assert mod.main(["--peer", str(tmp_path / "peer.json"), "--out", str(tmp_path / "s.json"),
                     str(tmp_path / "art_1.json")]) == 0
    out = capsys.readouterr().out
    assert f"| art | {ours:.2f} | {3 * ours:.2f} | 3.000× |" in out
    v = json.loads((tmp_path / "s.json").read_text())["art"]["vs_peer"]
    assert v["ratio"] == pytest.approx(3.0) and v["peer"] == "diffusers_plain" and v["ours_s"] == pytest.approx(ours)
    (tmp_path / "bad.json").write_text(json.dumps({"peer": "x"}))
    assert mod.main(["--peer", str(tmp_path / "bad.json"), str(tmp_path / "art_1.json")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'bad.json'}: no estimate.core_s")
    assert mod.main(["--peer", str(tmp_path / "missing.json"), str(tmp_path / "art_1.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --peer {tmp_path / 'missing.json'}: FileNotFoundError") and err.count("\n") == 1
