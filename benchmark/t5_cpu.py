"""``--t5_cpu`` on its own: build the TI2V-5B text encoder on the CPU and time encoding the prompts.

Times (each printed and written to ``--out`` as soon as it is known): building the encoder with random
weights on the CPU; encoding the default prompt and negative prompt as ``generate`` does (the prompt's
tokens only); and, with ``--padded``, the same two prompts at all ``text_len`` positions as the official
code runs them. Also records the CPU and what torch reports of its vector/matrix units.

    python benchmark/t5_cpu.py --out t5_cpu.json [--padded]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from wan_enhanced.config import RunConfig
from wan_enhanced.models.random_init import random_t5
from wan_enhanced.models.tokenizer import ByteTokenizer


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--task", default="ti2v-5B")
    ap.add_argument("--padded", action="store_true", help="also encode at all text_len positions (official)")
    ap.add_argument("--warmup", type=int, default=0,
                    help="untimed encodes of the prompt before timing (0, as in the committed run: the first "
                         "timed encode then includes oneDNN's first-call cost)")
    args = ap.parse_args()
    cfg = RunConfig(task=args.task)
    preset = cfg.preset
    out: dict = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                 "cpu_capability": torch.backends.cpu.get_cpu_capability(), "weights": "random (real architecture)",
                 "dtype": "bfloat16 (the official t5_dtype)", "tokenizer": ByteTokenizer.name}

    def save(key: str, value) -> None:
        out[key] = value
        Path(args.out).write_text(json.dumps(out, indent=1))
        print(f"[t5_cpu] {key}: {value}", flush=True)

    save("cpu_info", {k: out[k] for k in ("cpu", "threads", "cpu_capability")})
    t0 = time.perf_counter()
    t5 = random_t5(preset, torch.device("cpu"), torch.bfloat16)
    save("build_s", time.perf_counter() - t0)
    tok = ByteTokenizer(preset.t5["vocab_size"])
    prompts = {"prompt": cfg.prompt, "negative_prompt": cfg.effective_negative_prompt}
    warm = tok([" ".join(cfg.prompt.split())], max_length=preset.text_len)
    with torch.no_grad():
        for _ in range(args.warmup):
            t5(warm.input_ids, warm.attention_mask)
    for mode in ("prompt_tokens", "padded") if args.padded else ("prompt_tokens",):
        res = {}
        for name, text in prompts.items():
            b = tok([" ".join(text.split())], max_length=preset.text_len)
            n = int(b.attention_mask.sum()) if mode == "prompt_tokens" else preset.text_len
            with torch.no_grad():
                t0 = time.perf_counter()
                t5(b.input_ids[:, :n], b.attention_mask[:, :n])
                res[name] = {"tokens": n, "s": time.perf_counter() - t0}
        res["total_s"] = sum(r["s"] for r in res.values())
        save(f"encode_{mode}", res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
