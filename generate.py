"""Seed entry point: ``python generate.py --task ti2v-5B --size 1280*704 ...`` (official flags)."""

import sys
from pathlib import Path

try:
    from wan_enhanced.cli import generate_main
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from wan_enhanced.cli import generate_main

if __name__ == "__main__":
    raise SystemExit(generate_main(sys.argv[1:], prog="generate.py"))
