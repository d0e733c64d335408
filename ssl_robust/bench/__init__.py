"""Benchmark: spec → runner → report (Markdown/CSV tables, PNG figures)."""

from .report import load_results, render_report, validate_results, write_figures, write_tables

__all__ = [
    "load_results",
    "render_report",
    "validate_results",
    "write_figures",
    "write_tables",
]
