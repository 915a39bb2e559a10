"""Issue 7: multi-GPU scaling of one video — 1, 2 and 4 GPUs (Ulysses, CFG parallel) on one host.

Runs ``generate.py`` under torchrun for each layout (random weights, same seed and flags), reads each
report, and compares the denoised latents with the 1-GPU run. Efficiency = T1 / (N · TN) on the
denoising time (the part that is parallelised) and on the end-to-end time without model loading.

    python benchmark/scaling.py --out benchmark/results/h100x4/scaling.json --gpus 4 --steps 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
LOADS = ("Load_Text_Encoder", "Load_VAE", "Load_DiT")


def layouts(gpus: int) -> list[tuple[str, int, int, bool]]:
    """(name, nproc, ulysses, cfg_parallel) for up to ``gpus`` GPUs."""
    out = [("1 GPU", 1, 1, False)]
    if gpus >= 2:
        out += [("2 GPU Ulysses 2", 2, 2, False), ("2 GPU CFG parallel", 2, 1, True)]
    if gpus >= 4:
        out += [("4 GPU Ulysses 4", 4, 4, False), ("4 GPU Ulysses 2 x CFG", 4, 2, True)]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--gpus", type=int, default=torch.cuda.device_count())
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", default="1280*704")
    ap.add_argument("--frame_num", type=int, default=121)
    ap.add_argument("--workdir", default="/tmp/scaling")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows, ref = [], None
    for name, n, u, cfgp in layouts(args.gpus):
        tag = name.replace(" ", "_")
        rep, lat = work / f"{tag}.json", work / f"{tag}.pt"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port", "29533",
               str(ROOT / "generate.py"), "--task", "ti2v-5B", "--weights", "random", "--size", args.size,
               "--frame_num", str(args.frame_num), "--sample_steps", str(args.steps), "--base_seed", "11",
               "--offload_model", "False", "--compile", "none", "--ulysses_size", str(u),
               "--report_file", str(rep), "--save_latents", str(lat), "--quiet"]
        if cfgp:
            cmd.append("--cfg_parallel")
        print(f"== {name}: {' '.join(cmd[3:6])} ...", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        (work / f"{tag}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            rows.append({"layout": name, "nproc": n, "status": "failed", "log_tail": (proc.stderr or "")[-1500:]})
            print(proc.stderr[-1500:], flush=True)
            continue
        r = json.loads(rep.read_text())
        st = {s["name"]: s["duration_s"] for s in r["stages"]}
        steps = [s["duration_s"] for s in r["stages"] if s["name"].startswith("Step_")]
        no_load = st["Total"] - sum(st.get(k, 0.0) for k in LOADS)
        latents = torch.load(lat).float()
        if ref is None:
            ref = latents
        err = {"max_abs": float((latents - ref).abs().max()), "rel_l2": float((latents - ref).norm() / ref.norm())}
        comm = [x.get("communication_s") for x in r.get("parallel", {}).get("ranks", [])]
        rows.append({"layout": name, "nproc": n, "ulysses": u, "cfg_parallel": cfgp, "status": r["status"],
                     "denoise_s": st["Denoising"], "step_s_median": sorted(steps)[len(steps) // 2],
                     "step_s_rest_mean": sum(steps[1:]) / max(1, len(steps) - 1),
                     "total_without_loading_s": no_load, "peak_gb": r["totals"]["peak_memory_gb"]["value"],
                     "latents_vs_1gpu": err, "communication_s_per_rank": comm})
    base = next((x for x in rows if x["nproc"] == 1 and x["status"] == "ok"), None)
    for x in rows:
        if base and x["status"] == "ok":
            x["speedup_denoise"] = base["step_s_rest_mean"] / x["step_s_rest_mean"]
            x["efficiency_denoise"] = x["speedup_denoise"] / x["nproc"]
            x["efficiency_e2e_no_load"] = base["total_without_loading_s"] / x["total_without_loading_s"] / x["nproc"]
    out = {"device": torch.cuda.get_device_name(), "gpus": args.gpus, "torch": torch.__version__, "args": vars(args),
           "weights": "random (real architecture)", "rows": rows,
           "efficiency_definition": "T1 / (N * TN) on the mean step time after the first step"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"{'layout':24s} {'step s':>8s} {'speedup':>8s} {'eff':>6s} {'e2e eff':>8s} {'rel err':>9s}")
    for x in rows:
        if x["status"] != "ok":
            print(f"{x['layout']:24s} FAILED")
            continue
        print(f"{x['layout']:24s} {x['step_s_rest_mean']:8.3f} {x.get('speedup_denoise', 0):8.2f} "
              f"{x.get('efficiency_denoise', 0):6.1%} {x.get('efficiency_e2e_no_load', 0):8.1%} "
              f"{x['latents_vs_1gpu']['rel_l2']:9.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
