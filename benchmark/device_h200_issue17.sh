#!/usr/bin/env bash
# Issue 17 on one lent H200 — written in the session that built levers 1 and 2 on the CPU, NOT YET RUN on a GPU.
# Two calls on the same machine (the packages do not fit one call's carry; .site/ is git-ignored and stays):
#   call 1 (carry .fa):  bash benchmark/device_h200_issue17.sh caches    # cold machine: do this first
#   call 2 (carry .ff):  bash benchmark/device_h200_issue17.sh overlap
set -uo pipefail
mkdir -p .site "$OUT"
for t in .fa/*.tar.xz .ff/*.tar.xz; do [ -f "$t" ] && { tar -xJf "$t" -C .site || exit 3; }; done
chmod +x .site/imageio_ffmpeg/binaries/* 2>/dev/null
export PYTHONPATH=$PWD/.site:$PWD/.site/nvidia_cutlass_dsl/dsl_packages:$PWD/src
J="--task ti2v-5B --weights random --quiet"
case ${1:?caches or overlap} in
  caches)
    # (a) a fresh machine: warmup builds the caches and saves the artifacts (its time = the cold start paid once)
    /usr/bin/time -f "warmup %e s" python3 -m wan_enhanced.cli warmup $J --cache_dir /tmp/c17a > "$OUT/warmup.log" 2>&1
    # (b) a "fresh machine with the artifacts": empty compiler caches, only the artifacts copied
    mkdir -p /tmp/c17b && cp -r /tmp/c17a/artifacts /tmp/c17b/
    python3 generate.py $J --sample_steps 4 --cache_dir /tmp/c17b --report_file "$OUT/art4.json" > "$OUT/art4.log" 2>&1
    # (c) the warm machine: its own caches (and the artifacts)
    python3 generate.py $J --sample_steps 4 --cache_dir /tmp/c17a --report_file "$OUT/warm4.json" > "$OUT/warm4.log" 2>&1
    # (d) a fresh cache dir without artifacts, for the cold reference in the same call
    python3 generate.py $J --sample_steps 4 --cache_dir /tmp/c17c --report_file "$OUT/cold4.json" > "$OUT/cold4.log" 2>&1
    for r in cold4 art4 warm4; do python3 - "$OUT/$r.json" "$r" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); t = r["totals"]; st = {s["name"]: s["duration_s"] for s in r["stages"]}
print(f"{sys.argv[2]:6s} Step_0 {st.get('Step_0', 0):7.2f} s  steady {t['steady_s_per_step']['value']:.3f}  "
      f"cold {t['cold_start_s']['value']:.2f}  cache {r['run']['compile_cache']['artifacts']}")
PY
    done ;;
  overlap)
    # VAE_Decoding + Save_Video with the encoder overlapped or after decoding, ABAB, warm caches
    for k in 1 2; do for o in True False; do
      python3 generate.py $J --sample_steps 2 --encode_overlap $o --cache_dir /tmp/c17a --save_file /tmp/o.mp4 \
        --report_file "$OUT/ov_${o}_$k.json" > "$OUT/ov_${o}_$k.log" 2>&1
    done; done
    python3 - "$OUT" <<'PY'
import glob, json, sys
for f in sorted(glob.glob(sys.argv[1] + "/ov_*.json")):
    st = {s["name"]: s["duration_s"] for s in json.load(open(f))["stages"]}
    print(f.split("/")[-1], f"decode {st['VAE_Decoding']:.2f} + save {st['Save_Video']:.2f} = "
          f"{st['VAE_Decoding'] + st['Save_Video']:.2f} s")
PY
    ;;
esac
