"""Benchmark: spec → runner → report (Markdown/CSV tables, PNG figures).

>>> from ssl_robust.bench import default_spec, run_benchmark  # doctest: +SKIP
>>> run_benchmark(default_spec(), out="results/default")      # doctest: +SKIP
"""

from .report import load_results, render_report, validate_results, write_figures, write_tables
from .runner import run_benchmark
from .spec import (
    AttackSpec,
    BenchSpec,
    DatasetSpec,
    DeACLSpec,
    EncoderSpecEntry,
    EvalSpec,
    HeadSpec,
    default_spec,
    load_spec,
    spec_from_dict,
)
from .suites import (
    DefenseSpec,
    SuiteSpec,
    get_defense,
    get_suite,
    list_defenses,
    list_suites,
    register_defense,
    register_suite,
)

__all__ = [
    "AttackSpec",
    "BenchSpec",
    "DatasetSpec",
    "DeACLSpec",
    "DefenseSpec",
    "EncoderSpecEntry",
    "EvalSpec",
    "HeadSpec",
    "SuiteSpec",
    "default_spec",
    "get_defense",
    "get_suite",
    "list_defenses",
    "list_suites",
    "load_results",
    "load_spec",
    "register_defense",
    "register_suite",
    "render_report",
    "run_benchmark",
    "spec_from_dict",
    "validate_results",
    "write_figures",
    "write_tables",
]
