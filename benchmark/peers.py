"""Peers in the same run: ours vs diffusers' WanPipeline vs the official Wan2.2 code, one GPU, one after another.

Every peer reads the same random-weight checkpoint in the official layout (written once by our writer,
``--ckpt_dir``; the real 5B architecture, the video is noise), with the same prompt, negative prompt,
seed, size, frames, solver, shift and CFG scale, and runs in its own process (so one peer's compile
caches, attention registrations or memory fragments never reach the next):

- ``ours``: ``generate.py`` with default flags (``--weights official``);
- ``diffusers_plain``: diffusers ``WanPipeline(expand_timesteps=True)`` as its docs show it (fp32 VAE);
- ``diffusers_levers``: the same plus regional compile and its cuDNN attention backend;
- ``official_offload``: the Wan team's ``wan22`` package with the published 4090 flags
  (``offload_model=True, convert_model_dtype=True, t5_cpu=True``), attention through our adapter onto
  SDPA's flash kernel (FlashAttention-2);
- ``official_flash`` / ``official_cudnn``: the same code without offload (T5 on the GPU), the adapter onto
  SDPA's flash kernel / onto cuDNN.

``--steps N`` times N of the job's ``--job_steps`` (50) steps; the job's time is extrapolated as first step
+ (job − 1) × median later step and labelled so. Writes one JSON per peer, ``peers.json`` (all records and
the ratio table) and ``peers.md`` under ``--out``.

    python benchmark/peers.py --out OUT --ckpt_dir /tmp/ckpt --steps 4               # GPU: the standard job
    python benchmark/peers.py --task tiny --device cpu --out OUT --ckpt_dir /tmp/tck  # CPU smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from wan_enhanced.argparse_util import OneLineParser
from wan_enhanced.config import DEFAULT_PROMPT
from wan_enhanced.errors import UserError
from wan_enhanced.models.presets import OFFICIAL_NEGATIVE_PROMPT, PRESETS, get_preset
from wan_enhanced.peers.record import ratio_rows, record_from_stages
from wan_enhanced.report.schema import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
PEERS = ("ours", "diffusers_plain", "diffusers_levers", "official_offload", "official_flash", "official_cudnn")
OFFICIAL = {  # peer → (offload_model, convert_model_dtype, t5_cpu, attention adapter)
    "official_offload": (True, True, True, "flash"),
    "official_flash": (False, True, False, "flash"),
    "official_cudnn": (False, True, False, "cudnn"),
}


def needs(peer: str) -> str | None:
    """The Python package a peer needs (None: only ours)."""
    if peer.startswith("diffusers"):
        return "diffusers"
    if peer.startswith("official"):
        return "wan"
    return None


def check_args(args: argparse.Namespace) -> list[str]:
    """Validate everything before any model is built; returns the peer list. Raises UserError."""
    peers = [p for p in args.peers.split(",") if p]
    for p in peers:
        if p not in PEERS:
            raise UserError(f"--peers: {p!r} is not a peer; allowed: {', '.join(PEERS)}")
    if not peers:
        raise UserError(f"--peers: empty; allowed: {', '.join(PEERS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: no CUDA GPU here; allowed: cpu (with --task tiny)")
    if args.device == "cpu" and args.task != "tiny":
        raise UserError(f"--device cpu: only --task tiny runs on the CPU (got {args.task!r})")
    for p in peers:
        pkg = needs(p)
        if pkg and importlib.util.find_spec(pkg) is None:
            extra = "pip install -e '.[peers]'" if pkg == "wan" else "pip install diffusers"
            raise UserError(f"--peers {p}: package {pkg!r} is not installed here ({extra}); "
                            f"runnable here: {', '.join(q for q in PEERS if not needs(q) or importlib.util.find_spec(needs(q)))}")
    if not 1 <= args.steps <= args.job_steps:
        raise UserError(f"--steps {args.steps}: must be 1..--job_steps ({args.job_steps})")
    preset = get_preset(args.task)
    size = f"{args.size[0]}*{args.size[1]}" if isinstance(args.size, tuple) else args.size
    if size not in preset.sizes:
        raise UserError(f"--size {size}: not allowed for {args.task}; allowed: {', '.join(preset.sizes)}")
    if (args.frame_num - 1) % 4:
        raise UserError(f"--frame_num {args.frame_num}: must be 4n+1")
    return peers


def write_checkpoint(ckpt_dir: Path, task: str, device: str) -> dict[str, Any]:
    """Write a random checkpoint in the official layout (with a byte-level HF tokenizer), unless present."""
    from wan_enhanced.models.official import write_official_checkpoint
    from wan_enhanced.models.random_init import random_dit, random_t5, random_vae
    from wan_enhanced.models.tokenizer import byte_level_hf_tokenizer

    marker = ckpt_dir / ".written"
    if marker.exists():
        return json.loads(marker.read_text())
    preset, dev = get_preset(task), torch.device(device)
    t0 = time.perf_counter()
    dit, t5, vae = random_dit(preset, dev, torch.float32), random_t5(preset, dev), random_vae(preset, dev)
    tok = byte_level_hf_tokenizer(int(preset.t5["vocab_size"]))
    write_official_checkpoint(ckpt_dir, dit, t5, vae, tokenizer=tok, text_len=preset.text_len)
    del dit, t5, vae
    info = {"write_s": time.perf_counter() - t0, "task": task,
            "bytes": sum(p.stat().st_size for p in ckpt_dir.rglob("*") if p.is_file()),
            "weights": "random (real architecture), official layout written by write_official_checkpoint, "
                       "byte-level stand-in tokenizer"}
    marker.write_text(json.dumps(info))
    return info


def run_ours(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """``generate.py`` with default flags on the shared checkpoint; the record comes from its report."""
    report = out / "ours_report.json"
    cmd = [sys.executable, str(ROOT / "generate.py"), "--task", args.task, "--size", args.size,
           "--frame_num", str(args.frame_num), "--sample_steps", str(args.steps), "--weights", "official",
           "--ckpt_dir", str(args.ckpt_dir), "--base_seed", str(args.seed), "--prompt", args.prompt,
           "--report_file", str(report), "--device", args.device]
    log = out / "ours.log"
    with open(log, "w") as fh:
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    if code != 0:
        raise RuntimeError(f"ours: generate.py exited {code}; see {log}")
    rep = json.loads(report.read_text())
    flags = {"command": " ".join(cmd[1:]).replace(str(ROOT) + "/", ""), "fast_path": rep.get("run", {}).get("fast_path"),
             "offload_model": rep.get("run", {}).get("offload_model")}
    return record_from_stages("ours", rep["stages"], flags=flags, job_steps=args.job_steps,
                              label="ours, default flags", notes=[f"weights: {rep.get('weights', {}).get('kind')}"])


def run_one(peer: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Run one peer in this process (the orchestrator gives each its own)."""
    preset = get_preset(args.task)
    w, h = map(int, args.size.split("*"))
    neg = OFFICIAL_NEGATIVE_PROMPT
    if peer == "ours":
        return run_ours(args, out)
    if peer.startswith("diffusers"):
        from wan_enhanced.peers.diffusers_wan import run_diffusers

        return run_diffusers(args.ckpt_dir, preset, variant=peer.split("_", 1)[1], device=args.device, width=w,
                             height=h, frame_num=args.frame_num, steps=args.steps, job_steps=args.job_steps,
                             prompt=args.prompt, negative_prompt=neg, seed=args.seed)
    from wan_enhanced.peers.official_wan import run_official

    offload, convert, t5_cpu, attention = OFFICIAL[peer]
    raw = run_official(args.ckpt_dir, size=(w, h), frame_num=args.frame_num, sample_steps=args.steps,
                       guide_scale=5.0, shift=5.0, seed=args.seed, offload_model=offload,
                       convert_model_dtype=convert, t5_cpu=t5_cpu, attention=attention, prompt=args.prompt,
                       task=args.task, device=args.device)
    flags = {"offload_model": offload, "convert_model_dtype": convert, "t5_cpu": t5_cpu, "attention_kernel": attention,
             "attention": raw.get("adapter", attention), "package": raw.get("peer"), "stubs": raw.get("stubs")}
    label = (f"official Wan2.2 (wan22), offload_model={offload}, convert_model_dtype, "
             f"{'t5_cpu, ' if t5_cpu else ''}attention adapter → {attention}")
    return record_from_stages(peer, raw["stages"], flags=flags, job_steps=args.job_steps, label=label,
                              notes=list(raw.get("notes", [])))


def render_markdown(records: list[dict[str, Any]], rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The ratio table and the per-peer stage table, as Markdown."""
    lines = [f"# Peers, same GPU, same run — {meta['device']}", "",
             f"Job: {meta['task']} {meta['size']}×{meta['frame_num']}, {meta['job_steps']} steps, CFG 5, seed "
             f"{meta['seed']}; each peer timed for {meta['steps']} steps (the rest extrapolated: first step + "
             f"{meta['job_steps'] - 1} × median later step). Weights: {meta['weights']}.", "",
             "| peer | denoise + decode (s) | ours (s) | peer ÷ ours | end to end (s) | ours (s) | peer ÷ ours | "
             "steady step (s) | peak reserved (GiB) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "unavailable" in r:
            lines.append(f"| {r['label']} | unavailable: {r['unavailable']} | | | | | | | |")
            continue
        pk = r["peer_peak_reserved_gb"]
        lines.append(f"| {r['label']} | {r['peer_core_s']:.1f} | {r['ours_core_s']:.1f} | **{r['core_ratio']:.2f}×** | "
                     f"{r['peer_total_s']:.1f} | {r['ours_total_s']:.1f} | {r['total_ratio']:.2f}× | "
                     f"{r['peer_steady_step_s']:.3f} vs {r['ours_steady_step_s']:.3f} | "
                     f"{'—' if pk is None else f'{pk:.2f}'} |")
    lines += ["", "Per peer (seconds; Denoising extrapolated to the job):", "",
              "| peer | kind | " + " | ".join(("load", "text", "first step", "steady step", "Denoising",
                                                "VAE_Decoding", "Save_Video", "total")) + " |",
              "|---|---|" + "---:|" * 8]
    for rec in records:
        e = rec["estimate"]
        s = e.get("stages_s", {})
        load = sum(v for k, v in s.items() if k.startswith("Load"))

        def f(x: Any) -> str:
            return "—" if x is None else f"{x:.2f}"
        lines.append(f"| {rec['label']} | {e.get('kind')} | {f(load)} | {f(s.get('Text_Encoding'))} | "
                     f"{f(e.get('first_step_s'))} | {f(e.get('steady_step_s'))} | {f(e.get('denoise_s'))} | "
                     f"{f(s.get('VAE_Decoding'))} | {f(s.get('Save_Video'))} | {f(e.get('total_s'))} |")
    notes = [n for rec in records for n in rec.get("notes", [])]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in dict.fromkeys(notes)]
    return "\n".join(lines) + "\n"


def merge(dirs: list[Path], out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Merge per-peer records of several runs (``DIR/<peer>.json``) into one peers.json + peers.md.

    Ratios are taken against the ``ours`` record of the same directory (the same device call); a directory
    without one (a call that timed out before its ours record came back) is compared with the ours of the
    next directory that has one, and its rows say so.
    """
    groups = []
    for d in dirs:
        recs = [json.loads(f.read_text()) for f in sorted(d.glob("*.json")) if f.stem in PEERS]
        for r in recs:
            r["run_dir"] = str(d)
        groups.append((d, recs))
    records, rows = [], []
    for i, (d, recs) in enumerate(groups):
        ours = next((r for r in recs if r["peer"] == "ours"), None)
        label = ""
        if ours is None:
            later = next(((dd, r) for dd, rr in groups[i + 1:] for r in rr if r["peer"] == "ours"), None)
            if later is None:
                continue
            ours = later[1]
            label = f" (vs ours of {later[0].name}: the next call on the same machine)"
        records += recs
        for row in ratio_rows(ours, [r for r in recs if r["peer"] != "ours"]):
            row["label"] += label
            row["run_dir"] = str(d)
            rows.append(row)
    result = {"schema": "wan-enhanced/peers", "version": 1, "meta": meta, "records": records, "ratios": rows,
              "failures": {}}
    write_json_atomic(out / "peers.json", result)
    (out / "peers.md").write_text(render_markdown(records, rows, meta), encoding="utf-8")
    return result


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of the peer benchmark."""
    ap = OneLineParser(prog="peers.py", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--ckpt_dir", required=True, type=Path, help="official-layout checkpoint; written if missing")
    ap.add_argument("--task", default="ti2v-5B", choices=list(PRESETS))
    ap.add_argument("--size", default=None, help="W*H (default: the task's default size)")
    ap.add_argument("--frame_num", type=int, default=None)
    ap.add_argument("--steps", type=int, default=4, help="steps timed per peer")
    ap.add_argument("--job_steps", type=int, default=50, help="steps of the job the times are extrapolated to")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--prompt", default=DEFAULT_PROMPT)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--merge", nargs="+", type=Path, default=None,
                    help="merge the per-peer records of these run folders into --out (no GPU needed)")
    ap.add_argument("--device_name", default=None, help="with --merge: the GPU the records were measured on")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point: validate, write the checkpoint, run each peer in its own process, write the tables."""
    ap = build_parser()
    try:
        args = ap.parse_args(argv)
        preset = get_preset(args.task)
        args.size = args.size or preset.default_size
        args.frame_num = args.frame_num or preset.default_frame_num
        if args.merge:
            missing = [str(d) for d in args.merge if not d.is_dir()]
            if missing:
                raise UserError(f"--merge: {missing[0]!r} is not a directory")
            if not args.device_name:
                raise UserError("--merge needs --device_name (the GPU the records were measured on)")
            meta = {"task": args.task, "size": args.size, "frame_num": args.frame_num, "steps": args.steps,
                    "job_steps": args.job_steps, "seed": args.seed, "device": args.device_name,
                    "merged_from": [str(d) for d in args.merge],
                    "weights": "random (real architecture), official layout written by write_official_checkpoint, "
                               "byte-level stand-in tokenizer"}
            args.out.mkdir(parents=True, exist_ok=True)
            print(render_markdown((r := merge(args.merge, args.out, meta))["records"], r["ratios"], meta))
            return 0
        peers = check_args(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.one:  # child: one peer, record to OUT/<peer>.json
        rec = run_one(args.one, args, out)
        write_json_atomic(out / f"{args.one}.json", rec)
        return 0
    meta: dict[str, Any] = {"task": args.task, "size": args.size, "frame_num": args.frame_num, "steps": args.steps,
                            "job_steps": args.job_steps, "seed": args.seed, "peers": peers,
                            "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                            "torch": torch.__version__}
    meta["checkpoint"] = write_checkpoint(args.ckpt_dir, args.task, args.device)
    meta["weights"] = meta["checkpoint"]["weights"]
    records, failures = [], {}
    base = [a for a in (argv if argv is not None else sys.argv[1:])]
    for peer in peers:
        t0 = time.perf_counter()
        log = out / f"{peer}.log"
        with open(log, "w") as fh:
            code = subprocess.run([sys.executable, str(Path(__file__).resolve()), *base, "--one", peer],
                                  stdout=fh, stderr=subprocess.STDOUT, env=os.environ.copy()).returncode
        wall = time.perf_counter() - t0
        path = out / f"{peer}.json"
        if code == 0 and path.exists():
            rec = json.loads(path.read_text())
            rec["process_wall_s"] = wall
            records.append(rec)
            print(f"[peers] {peer}: {rec['estimate'].get('kind')}, job {rec['estimate'].get('total_s', 0):.1f} s "
                  f"(process {wall:.1f} s)", flush=True)
        else:
            failures[peer] = f"exit {code}; log {log.name}: " + " | ".join(log.read_text().splitlines()[-3:])
            print(f"[peers] {peer}: FAILED ({failures[peer]})", flush=True)
    ours = next((r for r in records if r["peer"] == "ours"), None)
    rows = ratio_rows(ours, [r for r in records if r is not ours]) if ours else []
    result = {"schema": "wan-enhanced/peers", "version": 1, "meta": meta, "records": records, "ratios": rows,
              "failures": failures}
    write_json_atomic(out / "peers.json", result)
    (out / "peers.md").write_text(render_markdown(records, rows, meta), encoding="utf-8")
    print(render_markdown(records, rows, meta), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
