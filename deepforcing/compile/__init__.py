"""Compile sweeps of the result store into tables, figures and a static HTML report.

    from deepforcing.compile import compile_report
    compile_report(["results/demo", "results/demo2"], "report", baseline="rolling_window")

Library code (pandas and matplotlib; no Hydra). The command line is ``python -m eval.compile``.
"""

from __future__ import annotations

from .data import Point, Results, load_sweeps, resolve_label
from .report import Report, compile_report
from .stats import CI, aggregate, bootstrap_ci, paired_differences

__all__ = ["CI", "Point", "Report", "Results", "aggregate", "bootstrap_ci", "compile_report", "load_sweeps",
           "paired_differences", "resolve_label"]
