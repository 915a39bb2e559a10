#!/usr/bin/env bash
# Issue 15 on one lent H200, two calls on the same machine (the packages do not fit one call's carry):
#   call 1 (carry .fa: FA4 + CuTe DSL + diffusers):  bash benchmark/device_h200_issue15.sh gpu
#   call 2 (carry .ff: imageio-ffmpeg + diffusers):   bash benchmark/device_h200_issue15.sh jobs
# Packages unpack into .site (git-ignored, so it stays on the machine between calls). Outputs go to $OUT.
set -uo pipefail
mkdir -p .site "$OUT"
for t in .fa/*.tar.xz .ff/*.tar.xz; do [ -f "$t" ] && { tar -xJf "$t" -C .site || exit 3; }; done
if compgen -G ".fa/whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .site .fa/whl/*.whl
fi
chmod +x .site/imageio_ffmpeg/binaries/* 2>/dev/null  # the zip extraction of the bundle drops the exec bit
export PYTHONPATH=$PWD/.site:$PWD/.site/nvidia_cutlass_dsl/dsl_packages:$PWD/src
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit,persistence_mode --format=csv > "$OUT/gpu.txt" 2>&1
python3 -c "import flash_attn.cute, imageio_ffmpeg" >> "$OUT/gpu.txt" 2>&1 && echo "fa4+ffmpeg: present" >> "$OUT/gpu.txt"
case ${1:?gpu or jobs} in
  gpu)
    timeout 420 python3 -m pytest -m gpu -q -s tests > "$OUT/gpu_tests.log" 2>&1; echo "pytest rc=$?"
    grep -E "passed|failed|overhead|verdict|ours:" "$OUT/gpu_tests.log" | tail -8 ;;
  jobs)
    # fresh compile caches: the standard job pays what a fresh machine pays (Dynamo, inductor, Triton)
    export TORCHINDUCTOR_CACHE_DIR=/tmp/i15_inductor TRITON_CACHE_DIR=/tmp/i15_triton
    rm -rf /tmp/i15_inductor /tmp/i15_triton
    timeout 300 python3 generate.py --task ti2v-5B --weights random --quiet --sample_steps 50 \
      --save_file /tmp/std.mp4 --report_file "$OUT/std50.json" > "$OUT/std50.log" 2>&1; echo "std50 rc=$?"
    timeout 280 python3 benchmark/run.py --config benchmark/config_repeats.json --run-id rep3 \
      --reports-dir "$OUT/suite" --output "$OUT/suite/benchmark_report.md" > "$OUT/suite.log" 2>&1; echo "suite rc=$?"
    tar -czf "$OUT/suite.tgz" --exclude='*.pt' --exclude='*.mp4' -C "$OUT" suite && rm -rf "$OUT/suite"
    python3 format_report.py "$OUT/std50.json" > "$OUT/std50.txt" 2>&1
    python3 - "$OUT/std50.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); t = r["totals"]
for k in ("wall_s", "video_s_warm", "cold_start_s", "steady_s_per_step", "first_step_s", "peak_reserved_gb"):
    print(f"{k:20s} {t[k]['value']}")
print("attention", r["run"]["fast_path"].get("attention_backend"), "| verdict:", r["gpu_state"]["verdict"][:300])
PY
    tail -6 "$OUT/suite.log" ;;
esac
