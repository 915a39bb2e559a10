"""Loading speed of a 5B-sized official-layout checkpoint (random weights), disk → GPU.

Writes the official ``ckpt_dir`` layout (DiT fp32 in 3 safetensors shards, T5 bf16 ``.pth``,
VAE fp32 ``.pth``) from random models, evicts the files from the page cache, then loads each model
with our loaders to the GPU, cold and then warm (page cache). Writes one JSON file.

    python benchmark/load_official.py --dir /tmp/ckpt --out benchmark/results/h100/load_official.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from wan_enhanced.argparse_util import OneLineParser
from wan_enhanced.errors import UserError
from wan_enhanced.models.official import (
    load_official_dit,
    load_official_t5,
    load_official_vae,
    write_official_checkpoint,
)
from wan_enhanced.models.presets import PRESETS, get_preset
from wan_enhanced.models.random_init import random_dit, random_t5, random_vae


def evict(folder: Path) -> str:
    """Drop ``folder``'s files from the page cache; returns how."""
    for p in folder.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    try:
        subprocess.run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"], check=True, capture_output=True)
        return "posix_fadvise(DONTNEED) + drop_caches"
    except Exception:  # noqa: BLE001
        return "posix_fadvise(DONTNEED) only"


def main() -> int:
    ap = OneLineParser(prog="load_official.py")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--task", default="ti2v-5B", choices=list(PRESETS))
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: try the script on --task tiny")
    try:
        args = ap.parse_args()
        if args.device == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA GPU here; allowed: cpu")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    preset, dev, root = get_preset(args.task), torch.device(args.device), Path(args.dir)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    dit, t5, vae = random_dit(preset, dev), random_t5(preset, dev), random_vae(preset, dev)
    write_official_checkpoint(root, dit, t5, vae, text_len=preset.text_len)
    write_s = time.perf_counter() - t0
    del dit, t5, vae
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    sizes = {p.name: p.stat().st_size for p in root.iterdir() if p.is_file()}
    out = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "torch": torch.__version__, "write_s": write_s,
           "files": sizes, "weights": "random (real architecture), official layout written by write_official_checkpoint",
           "runs": []}
    print(f"wrote {sum(sizes.values()) / 1e9:.2f} GB in {write_s:.1f} s", flush=True)
    for temp in ("cold", "warm"):
        how = evict(root) if temp == "cold" else "page cache (just read)"
        for name, fn in (("dit", load_official_dit), ("t5", load_official_t5), ("vae", load_official_vae)):
            if temp == "cold":
                evict(root)
            model, st = fn(root, preset, dev)
            sync()
            row = {"cache": temp, "how": how, "model": name, "bytes_read": st.bytes_read, "seconds": st.seconds,
                   "gb_per_s": st.gb_per_s, "files": [Path(f).name for f in st.files]}
            out["runs"].append(row)
            print(f"{temp:5s} {name:4s} {st.bytes_read / 1e9:6.2f} GB in {st.seconds:6.2f} s = {st.gb_per_s:5.2f} GB/s",
                  flush=True)
            del model
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
