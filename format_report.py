#!/usr/bin/env python3
"""Print the text analysis of a wan-enhanced JSON report: ``python format_report.py REPORT.json``."""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from wan_enhanced.cli import report_main
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from wan_enhanced.cli import report_main

if __name__ == "__main__":
    sys.exit(report_main(sys.argv[1:], prog="format_report.py"))
