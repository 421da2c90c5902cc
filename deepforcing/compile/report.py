"""Everything ``python -m eval.compile`` writes, from sweep folders to ``<out>/index.html``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from deepforcing.errors import ConfigError

from .data import Results, load_sweeps, resolve_label
from .figures import save_all
from .html import write_report
from .tables import Table, ours_table, paired_table, paper_table, read_published

DEFAULT_TABLES = ("deep_forcing_table1",)


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


def compile_report(
    sweep_dirs: list[str | os.PathLike], out_dir: str | os.PathLike, baseline: str | None = None,
    published_csv: str | os.PathLike | None = None, tables: tuple[str, ...] | list[str] = DEFAULT_TABLES,
    length: float | None = None, n_boot: int = 10_000, seed: int = 0, figures: bool = True, html: bool = True,
    copy_videos: bool = False,
) -> Report:
    """Load the sweeps, build every table (and figures and HTML), write them under ``out_dir``.

    Input is checked before anything is written: a bad sweep folder, unknown baseline or table, or a
    missing published CSV raise one :class:`ConfigError`.
    """
    published = read_published(published_csv) if tables else None
    results = load_sweeps(list(sweep_dirs))
    base = resolve_label(results, baseline) if baseline else None
    if base is not None and len(results.done) < 2:
        raise ConfigError(f"baseline {baseline!r} given, but there is no other finished point to compare with it")
    built = [paper_table(published, t, results, length=length, n_boot=n_boot, seed=seed) for t in tables]
    built.append(ours_table(results, n_boot=n_boot, seed=seed))
    if base is not None:
        built.append(paired_table(results, base, n_boot=n_boot, seed=seed))

    out = Path(out_dir)
    report = Report(out=out, results=results, tables=built, baseline=base)
    for t in built:
        report.table_files[t.name] = t.write(out / "tables")
    fails = results.failures()
    fails.to_csv(out / "tables" / "failed_points.csv", index=False)
    (out / "report.md").write_text(report.markdown(), encoding="utf-8")
    if figures:
        report.figures = save_all(results, out / "figures")
    if html:
        notes = [] if base else ["No --baseline given: no paired-difference table."]
        report.html = write_report(results, built, report.figures, out, copy_videos=copy_videos, notes=notes)
    return report
