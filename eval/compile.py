"""Compile sweeps into tables (paper layout, published rows beside ours), figures and an HTML report.

Examples::

    python -m eval.compile results/demo --baseline rolling_window     # -> results/reports/demo/
    python -m eval.compile results/demo results/demo2 --out report --baseline rolling_window
    python -m eval.compile results/demo --table deep_forcing_table1 --table deep_forcing_table4 --length 30
    python -m eval.compile results/demo --published-csv my_rows.csv --no-html

Writes under ``--out`` (default ``<results>/reports/<sweep>/`` beside the sweep, where run.py's own
compile puts it; ``<sweep1>+<sweep2>`` for several sweeps): ``tables/<table>.{md,tex,csv}`` (one per
``--table``, plus ``ours`` with every metric and its drift, and ``paired_vs_<baseline>`` with
``--baseline``), ``tables/failed_points.csv``, ``report.md``, ``figures/*.png`` and ``index.html``;
prints the markdown tables. The folder is assembled beside ``--out`` and swapped in whole: a reader
sees the old report or the new one, and a failed compile leaves the old one. Being replaced whole,
it must hold nothing but a report.

Scores are stored as fractions in [0, 1] and shown ×100 like the papers (headers say so); ours are
``mean ± half-width`` of a 95 % percentile-bootstrap interval over prompts. The published CSV is
``--published-csv``, else ``$DEEPFORCING_PUBLISHED``, else the one shipped with the package
(``deepforcing/data/published_results.csv``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from deepforcing.errors import ConfigError

log = logging.getLogger("eval.compile")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.compile", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweeps", nargs="+", help="sweep folders (<out_dir>/<sweep>) written by run.py")
    p.add_argument("--out", help="output folder (default: <results>/reports/<sweep> beside the first sweep)")
    p.add_argument("--baseline", help="point to compare against (paired differences): a label shown in the "
                                      "tables, a method name that is unique in the sweeps, or a key prefix")
    p.add_argument("--published-csv", help="published results CSV (default: $DEEPFORCING_PUBLISHED or "
                                           "the CSV shipped in deepforcing/data/)")
    p.add_argument("--table", action="append", dest="tables", metavar="NAME",
                   help="published table to lay out, e.g. deep_forcing_table1 (default), deep_forcing_table4, "
                        "'LongLive Table 3'; repeat for several")
    p.add_argument("--length", type=float, help="keep only published rows of this video length (s), e.g. 30")
    p.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--no-figures", action="store_true", help="skip the matplotlib figures")
    p.add_argument("--no-html", action="store_true", help="skip index.html")
    p.add_argument("--copy-videos", action="store_true",
                   help="copy the mp4s next to the report (default: link them by relative path)")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the tables")
    return p


def default_out(sweeps: list[str]) -> Path:
    """``<results>/reports/<sweep>``, as run.py names a sweep's report; several sweeps: names joined by +."""
    dirs = [Path(os.path.abspath(s)) for s in sweeps]
    return dirs[0].parent / "reports" / "+".join(dict.fromkeys(d.name for d in dirs))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from deepforcing.compile import compile_report

    try:
        report = compile_report(
            args.sweeps, args.out or default_out(args.sweeps), baseline=args.baseline, published_csv=args.published_csv,
            tables=tuple(args.tables or ("deep_forcing_table1",)), length=args.length, n_boot=args.n_boot,
            seed=args.seed, figures=not args.no_figures, html=not args.no_html, copy_videos=args.copy_videos,
        )
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(report.markdown())
    n_fail = len(report.results.problems)
    if n_fail:
        log.warning("%d point(s) failed or are incomplete: listed in %s", n_fail, report.out / "report.md")
    log.info("wrote %s (%d tables, %d figures)%s", report.out, len(report.tables), len(report.figures),
             f"; open {report.html}" if report.html else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
