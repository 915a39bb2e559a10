#!/usr/bin/env bash
# On a lent GPU machine: unpack the carried packages (benchmark/device_bundle.sh fa4 .fa, plus the peers' wheels
# in .fa/whl), then run the command given, e.g.
#   bash benchmark/device_peers.sh python3 benchmark/peers.py --out $OUT/peers --ckpt_dir /tmp/ckpt --steps 3
set -uo pipefail
bundle=${BUNDLE:-.fa}
mkdir -p /tmp/site
for t in "$bundle"/*.tar.xz; do tar -xJf "$t" -C /tmp/site || exit 3; done
if compgen -G "$bundle/whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$bundle"/whl/*.whl || exit 3
fi
export PYTHONPATH=/tmp/site:/tmp/site/nvidia_cutlass_dsl/dsl_packages:$PWD/src
"$@"
