"""Everything ``python -m eval.compile`` writes, from sweep folders to ``<out>/index.html``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from deepforcing.atomic import atomic_dir, write_text_atomic
from deepforcing.errors import ConfigError

from .data import Results, load_sweeps, resolve_label
from .figures import save_all
from .html import write_report
from .tables import Table, ours_table, paired_table, paper_table, read_published

DEFAULT_TABLES = ("deep_forcing_table1",)
#: what a report folder holds; compile_report replaces such a folder whole, and no other
REPORT_ENTRIES = {"tables", "figures", "videos", "report.md", "index.html"}


@dataclass
class Report:
    out: Path
    results: Results
    tables: list[Table]
    table_files: dict[str, dict[str, Path]] = field(default_factory=dict)
    figures: list[tuple[Path, str]] = field(default_factory=list)
    html: Path | None = None
    baseline: str | None = None

    def markdown(self) -> str:
        lines = [t.markdown() for t in self.tables]
        fails = self.results.failures()
        if not fails.empty:
            lines.append("### Failed and incomplete points\n")
            lines += [f"- {r.sweep}/{r.key} ({r.label}): {r.status}: {r.error}" for r in fails.itertuples()]
        return "\n".join(lines) + "\n"

    def moved(self, src: Path, dst: Path) -> Report:
        """This report's paths with folder ``src`` renamed to ``dst``."""
        def move(p: Path) -> Path:
            return dst / p.relative_to(src)

        self.out = move(self.out)
        self.table_files = {t: {k: move(p) for k, p in files.items()} for t, files in self.table_files.items()}
        self.figures = [(move(p), caption) for p, caption in self.figures]
        self.html = move(self.html) if self.html else None
        return self


def check_report_dir(out: Path) -> None:
    """compile_report replaces ``out`` whole: refuse a folder that holds anything but a report."""
    if out.is_dir() and (other := sorted(p.name for p in out.iterdir() if p.name not in REPORT_ENTRIES)):
        raise ConfigError(f"output folder {out} holds more than a report ({', '.join(other[:5])}"
                          f"{', ...' if len(other) > 5 else ''}), and the report replaces it whole; "
                          "choose a new or report-only folder")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output folder {out} is a file")


def compile_report(
    sweep_dirs: list[str | os.PathLike], out_dir: str | os.PathLike, baseline: str | None = None,
    published_csv: str | os.PathLike | None = None, tables: tuple[str, ...] | list[str] = DEFAULT_TABLES,
    length: float | None = None, n_boot: int = 10_000, seed: int = 0, figures: bool = True, html: bool = True,
    copy_videos: bool = False,
) -> Report:
    """Load the sweeps, build every table (and figures and HTML), write them under ``out_dir``.

    Input is checked before anything is written: a bad sweep folder, unknown baseline or table, a
    missing published CSV, or an output folder holding more than a report raise one
    :class:`ConfigError`. The report is assembled in a temporary folder beside ``out_dir`` and then
    replaces ``out_dir`` whole, so a reader never sees part of one, and a failed compile leaves the
    previous report as it was.
    """
    check_report_dir(Path(out_dir))
    published = read_published(published_csv) if tables else None
    results = load_sweeps(list(sweep_dirs))
    base = resolve_label(results, baseline) if baseline else None
    if base is not None and len(results.done) < 2:
        raise ConfigError(f"baseline {baseline!r} given, but there is no other finished point to compare with it")
    built = [paper_table(published, t, results, length=length, n_boot=n_boot, seed=seed) for t in tables]
    built.append(ours_table(results, n_boot=n_boot, seed=seed))
    if base is not None:
        built.append(paired_table(results, base, n_boot=n_boot, seed=seed))

    with atomic_dir(out_dir) as out:  # a sibling of out_dir: relative links to the videos hold after the swap
        report = Report(out=out, results=results, tables=built, baseline=base)
        for t in built:
            report.table_files[t.name] = t.write(out / "tables")
        fails = results.failures()
        write_text_atomic(out / "tables" / "failed_points.csv", fails.to_csv(index=False))
        write_text_atomic(out / "report.md", report.markdown())
        if figures:
            report.figures = save_all(results, out / "figures")
        if html:
            notes = [] if base else ["No --baseline given: no paired-difference table."]
            report.html = write_report(results, built, report.figures, out, copy_videos=copy_videos, notes=notes)
    return report.moved(out, Path(out_dir))
