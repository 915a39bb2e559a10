"""The run report: built from monitor measurements (``build``), schema write/load (``schema``), metric
dicts and number formatting (``values``), and the text formatter (``text``)."""

from .build import build_report
from .schema import SCHEMA, SCHEMA_VERSION, load_report, write_report
from .text import format_report, report_main

__all__ = ["SCHEMA", "SCHEMA_VERSION", "build_report", "format_report", "load_report", "report_main",
           "write_report"]
