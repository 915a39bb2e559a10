#!/usr/bin/env bash
# Pack the Python packages a device call needs into xz tarballs small enough for one call's 64 MiB carry.
#
#   bash benchmark/device_bundle.sh fa4 .fa   # FlashAttention-4 + CuTe DSL + diffusers (about 60 MB)
#   bash benchmark/device_bundle.sh mp4 .ff   # imageio-ffmpeg + diffusers (about 20 MB)
#
# On the device: mkdir -p /tmp/site && for t in DIR/*.tar.xz; do tar -xJf $t -C /tmp/site; done
#   export PYTHONPATH=/tmp/site:/tmp/site/nvidia_cutlass_dsl/dsl_packages:$PWD/src
# (the CuTe DSL wheel adds dsl_packages through a .pth file, which Python reads only in site directories).
# The FA4 wheels as zip files are 102 MB; xz with the x86 filter and a 256 MiB dictionary makes them 57 MB (plus 2 MB of diffusers).
set -euo pipefail
what=${1:?fa4 or mp4}; dest=${2:?output folder}
pyplat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 --platform manylinux2010_x86_64)
case $what in
  fa4) pkgs=(flash-attn-4==4.0.0b36 nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1
             nvidia-cutlass-dsl-libs-core==4.8.1 nvidia-cutlass-dsl-libs-cu13==4.8.1 apache-tvm-ffi==0.1.11
             torch-c-dlpack-ext==0.1.5 quack-kernels==0.6.5) ;;
  mp4) pkgs=(imageio-ffmpeg==0.5.1) ;;
  *) echo "error: bundle '$what' is not allowed; allowed: fa4, mp4" >&2; exit 2 ;;
esac
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$dest" "$work/wheels" "$work/site" "$work/diffusers"
python3 -m pip download -q --no-deps "${pyplat[@]}" -d "$work/wheels" "${pkgs[@]}"
python3 -m pip download -q --no-deps --only-binary=:all: -d "$work/diffusers" diffusers==0.42.1
for w in "$work"/wheels/*.whl; do python3 -m zipfile -e "$w" "$work/site"; done
# zipfile drops the exec bit: the ffmpeg binary of imageio-ffmpeg must run (tar keeps the mode)
chmod +x "$work"/site/imageio_ffmpeg/binaries/* 2>/dev/null || true
python3 -m zipfile -e "$work"/diffusers/*.whl "$work/diffusers/site"
tar -cf - -C "$work/site" . | xz -T1 --x86 --lzma2=preset=9e,dict=256MiB > "$dest/$what.tar.xz"
tar -cf - -C "$work/diffusers/site" . | xz -T1 -9 > "$dest/diffusers.tar.xz"
ls -l "$dest"
