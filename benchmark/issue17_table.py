"""Issue 17's table from generate reports: the job's time without weight loading, the cold start, decode + mp4.

Each report is one run; runs are grouped by their file name without a trailing ``_<k>`` (``art_1.json``,
``art_2.json`` → ``art``), and each group's median (with min–max) is printed and written as JSON.

    python benchmark/issue17_table.py --out summary.json OUT/*.json
    python benchmark/issue17_table.py --peer OUT/peers/diffusers_plain.json OUT/*.json   # + the ratio to the peer

With ``--peer`` (a ``benchmark/peers.py`` peer report, run in the same device call as the reports), each group's
median denoise + decode is set against the peer's (``estimate.core_s``: denoise extrapolated from its timed steps,
and its decode): ``ratio`` = peer ÷ ours, printed after the table and written as ``vs_peer`` in the JSON.

Columns, all read from the reports (stage durations measured by the monitor):
- ``job excl. load``: ``Total`` minus the weight-loading stages (``Load_Text_Encoder``, ``Load_VAE``,
  ``Load_DiT``); ``Load_Compile_Cache`` and ``Prepare_DiT`` stay in (they are part of the cold start; reports
  written before ``Prepare_DiT`` existed, ``h200/s7``–``s9``, have FA4's activation and kernel check inside
  ``Load_DiT``, so their job time leaves it out);
- ``Total`` and the ``loads`` (the three ``Load_*`` stages): work moved into the loads (the compiler's background
  set-up slows the text encoder's load) leaves the job time but not ``Total``;
- ``Prepare_DiT`` (``—`` in reports from before it);
- ``Step_0`` and its ratio to the steady step (``totals.steady_s_per_step``);
- ``decode + mp4``: ``VAE_Decoding`` + ``Save_Video`` (with ``--encode_overlap`` the encoder runs during the decode);
- ``compile in Step_0``: torch's compile timers charged to ``Step_0`` (``run.compile_time``): the whole frame
  compile, and its backend part (AOT autograd and inductor);
- ``AOT cache``: what AOT autograd's cache did for ``Step_0``'s graphs (``hit``, ``miss``, ``bypass``, with counts
  when more than one graph; ``—`` in reports without the counters);
- ``peak alloc``: ``totals.peak_memory_gb``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

LOADS = ("Load_Text_Encoder", "Load_VAE", "Load_DiT")


def row(report: dict[str, Any]) -> dict[str, Any]:
    """The table's numbers of one report (``None`` where the run has no such stage)."""
    st = {s["name"]: s["duration_s"] for s in report["stages"]}
    t = report["totals"]

    def v(key: str) -> float | None:
        x = t.get(key)
        return x.get("value") if isinstance(x, dict) else None

    steady = v("steady_s_per_step")
    step0 = st.get("Step_0")
    dec, save = st.get("VAE_Decoding"), st.get("Save_Video")
    paid = ((report["run"].get("compile_time") or {}).get("by_stage") or {})
    counts = (((report["run"].get("compile_time") or {}).get("counts_by_stage") or {}).get("Step_0") or {})
    aot = {k.rsplit("_", 1)[1]: n for k, n in counts.items() if k.startswith("aot_autograd.autograd_cache_")
           and k.rsplit("_", 1)[1] in ("hit", "miss", "bypass")}
    return {
        "status": report.get("status"),
        "total_s": st.get("Total"),
        "job_excl_load_s": st["Total"] - sum(st.get(k, 0.0) for k in LOADS) if "Total" in st else None,
        "load_s": sum(st.get(k, 0.0) for k in LOADS),
        "load_compile_cache_s": st.get("Load_Compile_Cache"),
        "prepare_dit_s": st.get("Prepare_DiT"),
        "denoising_s": st.get("Denoising"),
        "step0_s": step0,
        "steady_s": steady,
        "step0_over_steady": step0 / steady if step0 and steady else None,
        "vae_decoding_s": dec,
        "save_video_s": save,
        "decode_plus_mp4_s": dec + save if dec is not None and save is not None else None,
        "denoise_plus_decode_s": st["Denoising"] + dec if "Denoising" in st and dec is not None else None,
        "compile_in_step0_s": (paid.get("Step_0") or {}).get("entire_frame_compile"),
        "backend_in_step0_s": (paid.get("Step_0") or {}).get("backend_compile"),
        "aot_cache_step0": " ".join(k if n == 1 else f"{k}×{n}" for k, n in sorted(aot.items())) or None,
        "compile_in_decode_s": (paid.get("VAE_Decoding") or {}).get("entire_frame_compile"),
        "peak_alloc_gib": v("peak_memory_gb"),
        "artifacts": (report["run"].get("compile_cache") or {}).get("artifacts"),
        "vae_compile": (report["run"].get("fast_path") or {}).get("vae_compile"),
        "attention": (report["run"].get("fast_path") or {}).get("attention_backend"),
        "steps": report["run"].get("sample_steps"),
    }


def group_name(path: Path) -> str:
    """``art_2.json`` → ``art``."""
    return re.sub(r"_\d+$", "", path.stem)


def summarize(paths: list[Path]) -> dict[str, Any]:
    """Per group: the runs' rows and, for every numeric column, median / min / max."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in sorted(paths):
        try:
            rep = json.loads(p.read_text(encoding="utf-8"))
            r = row(rep)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"skip {p}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        r["file"] = p.name
        groups.setdefault(group_name(p), []).append(r)
    out = {}
    for g, rows in groups.items():
        stats = {}
        for k in rows[0]:
            vals = [r[k] for r in rows if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]
            if vals:
                stats[k] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}
        out[g] = {"runs": rows, "stats": stats}
    return out


def _fmt(stats: dict[str, Any], key: str, digits: int = 2) -> str:
    s = stats.get(key)
    if s is None:
        return "—"
    if s["n"] == 1:
        return f"{s['median']:.{digits}f}"
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}–{s['max']:.{digits}f}]"


def main(argv: list[str] | None = None) -> int:
    """Print the Markdown table of the reports given (and write the summary JSON with ``--out``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--peer", type=Path, default=None, help="a peer report of benchmark/peers.py (same call)")
    a = ap.parse_args(argv)
    summary = summarize(a.reports)
    try:
        peer = json.loads(a.peer.read_text(encoding="utf-8")) if a.peer else None
    except (OSError, ValueError) as exc:
        print(f"error: --peer {a.peer}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if peer is not None:
        core = (peer.get("estimate") or {}).get("core_s") if isinstance(peer, dict) else None
        if core is None:
            print(f"error: {a.peer}: no estimate.core_s (not a benchmark/peers.py peer report)", file=sys.stderr)
            return 2
        for d in summary.values():
            ours = d["stats"].get("denoise_plus_decode_s", {}).get("median")
            d["vs_peer"] = {"peer": peer.get("peer"), "kind": peer["estimate"].get("kind"), "peer_core_s": core,
                            "ours_s": ours, "ratio": core / ours if ours else None}
    if a.out:
        a.out.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    cols = [("job excl. load", "job_excl_load_s", 2), ("Total", "total_s", 2), ("loads", "load_s", 2),
            ("Prepare_DiT", "prepare_dit_s", 2), ("Step_0", "step0_s", 2), ("÷ steady", "step0_over_steady", 2),
            ("steady", "steady_s", 3), ("decode", "vae_decoding_s", 2), ("mp4", "save_video_s", 2),
            ("decode+mp4", "decode_plus_mp4_s", 2), ("compile@Step_0", "compile_in_step0_s", 2),
            ("backend@Step_0", "backend_in_step0_s", 2), ("peak GiB", "peak_alloc_gib", 2)]
    print("| group | n | " + " | ".join(c[0] for c in cols) + " | AOT cache |")
    print("|---|---:|" + "---:|" * len(cols) + "---|")
    for g, d in summary.items():
        aot = ", ".join(sorted({r["aot_cache_step0"] or "—" for r in d["runs"]}))
        print(f"| {g} | {len(d['runs'])} | " + " | ".join(_fmt(d["stats"], k, n) for _, k, n in cols) + f" | {aot} |")
    if peer is not None:
        print(f"\n| group | ours: denoise + decode (median) | {peer.get('peer')} ({peer['estimate'].get('kind')}) "
              "| peer ÷ ours |\n|---|---:|---:|---:|")
        for g, d in summary.items():
            v = d["vs_peer"]
            print(f"| {g} | " + (f"{v['ours_s']:.2f}" if v["ours_s"] else "—") + f" | {v['peer_core_s']:.2f} | "
                  + (f"{v['ratio']:.3f}×" if v["ratio"] else "—") + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
