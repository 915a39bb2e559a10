"""The run report: JSON schema (build/write/load) and the text formatter."""

from .schema import SCHEMA, SCHEMA_VERSION, build_report, load_report, write_report
from .text import format_report, report_main

__all__ = ["SCHEMA", "SCHEMA_VERSION", "build_report", "format_report", "load_report", "report_main",
           "write_report"]
