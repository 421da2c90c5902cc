"""W&B dashboards of a sweep: the compile run, the saved workspace, and publishing offline sweeps later.

The point runs (deepforcing/loggers.py) carry each point's videos, drift series, cache curves and
flattened settings. Once the sweep is compiled, :func:`log_report` puts the report into one more run
of the sweep's group (job_type ``compile``):

- ``tables/<table>``: each compiled table exactly as its CSV (``reports/<sweep>/tables/<table>.csv``:
  values, 95 % bootstrap bounds and n per metric, ``source`` = ``published`` or ``ours``), plus
  ``tables/failed_points``;
- ``paper/<table>``: the same table as the report prints it (paper layout, ``mean ± h`` cells, a
  ``Source`` column marking the published rows);
- ``figures/<name>``: the report's figures; the report folder as an artifact ``report-<sweep>``
  (type ``report``).

Then the sweep's workspace is built with ``wandb-workspaces`` (:func:`build_workspace`), filtered to
the sweep's group: the paper tables, drift curves grouped by policy (``method``), metric and drift vs
sink ratio with parallel coordinates over the knobs, the videos side by side per prompt, per-prompt
drift curves, cache memory and chunk latency, the figures. Online it is saved; otherwise its recipe and
view spec go to ``<wandb dir>/deepforcing/<sweep>/workspace.json`` beside the offline runs, and
``python -m eval.wandb publish <sweep>`` uploads the runs (``wandb sync``) and saves it later.

Every run a logger opens is recorded in ``<wandb dir>/deepforcing/<sweep>/runs/<run id>.json``, so
publishing uploads exactly the sweep's runs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deepforcing.errors import ConfigError
from deepforcing.loggers import KNOB_KEYS
from deepforcing.store import write_json_atomic

log = logging.getLogger(__name__)
INDEX = "deepforcing"  # folder of the sweep indexes inside wandb's run folder


# --------------------------------------------------------------------------------------------------- index


def sweep_index(runs_dir: str | os.PathLike, sweep: str) -> Path:
    """``<wandb dir>/deepforcing/<sweep>``: the sweep's run records and workspace spec."""
    return Path(runs_dir) / INDEX / sweep


def register_run(runs_dir: str | os.PathLike, sweep: str, run: Any, mode: str) -> Path:
    runs_dir = Path(runs_dir)
    run_dir = Path(run.dir).parent  # <runs_dir>/<offline-run-...>/files -> the run folder
    try:
        rel = run_dir.resolve().relative_to(runs_dir.resolve()).as_posix()
    except ValueError:
        rel = str(run_dir.resolve())
    path = sweep_index(runs_dir, sweep) / "runs" / f"{run.id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"id": run.id, "name": run.name, "job_type": run.job_type, "mode": mode, "dir": rel,
                             "project": run.project, "started": time.time()})
    return path


def registered_runs(runs_dir: str | os.PathLike, sweep: str) -> list[dict]:
    d = sweep_index(runs_dir, sweep) / "runs"
    runs = [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.is_dir() else []
    return sorted(runs, key=lambda r: r.get("started", 0))


def run_path(runs_dir: str | os.PathLike, entry: dict) -> Path:
    return Path(runs_dir) / entry["dir"]


def is_synced(run_dir: Path) -> bool:
    """Whether ``wandb sync`` has uploaded the run (it leaves ``run-<id>.wandb.synced`` beside the log)."""
    return any(run_dir.glob("*.wandb.synced"))


# --------------------------------------------------------------------------------------------------- compile run


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):  # numpy scalars
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def table_from_frame(df) -> Any:
    """A ``wandb.Table`` with the frame's columns and values (NaN as an empty cell)."""
    import wandb

    return wandb.Table(columns=[str(c) for c in df.columns],
                       data=[[_plain(v) for v in row] for row in df.itertuples(index=False)])


def compile_config(report: Any, sweep: str) -> dict:
    results = report.results
    return {"sweep": sweep, "sweeps": list(dict.fromkeys(p.sweep for p in results.points)),
            "points_done": len(results.done), "points_failed": len(results.problems),
            "tables": [t.name for t in report.tables], "baseline": report.baseline, "report_dir": str(report.out)}


def artifact_name(sweep: str) -> str:
    return "report-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", sweep).strip("-") or "sweep")


def log_report(run: Any, report: Any) -> None:
    """The compiled report into ``run``: its CSV tables, paper-layout tables, figures and folder."""
    import pandas as pd
    import wandb

    data: dict[str, Any] = {}
    for name, files in report.table_files.items():
        data[f"tables/{name}"] = table_from_frame(pd.read_csv(files["csv"]))
    failed = report.out / "tables" / "failed_points.csv"
    if failed.exists():
        data["tables/failed_points"] = table_from_frame(pd.read_csv(failed))
    for t in report.tables:
        df = t.frame()
        df.insert(2, "Source", [r.source for r in t.rows])
        data[f"paper/{t.name}"] = table_from_frame(df)
    for path, caption in report.figures:
        data[f"figures/{Path(path).stem}"] = wandb.Image(str(path), caption=caption)
    run.log(data)
    run.summary["points_done"] = len(report.results.done)
    run.summary["points_failed"] = len(report.results.problems)
    run.notes = "\n\n".join(f"{t.title}. {t.note}" for t in report.tables)
    art = wandb.Artifact(artifact_name(run.group or "sweep"), type="report",
                         description="Compiled sweep report: tables (md, tex, csv), figures, report.md, index.html",
                         metadata=compile_config(report, run.group or ""))
    art.add_dir(str(report.out))
    run.log_artifact(art)


# --------------------------------------------------------------------------------------------------- workspace


@dataclass
class Recipe:
    """What a sweep's workspace is built from (JSON-able; stored beside offline runs for publishing)."""

    sweep: str
    project: str
    entity: str | None = None
    paper_tables: list[str] = field(default_factory=list)  # logged as paper/<name> by the compile run
    metrics: list[str] = field(default_factory=list)  # scored dimensions: summary <m>, <m>/abs_drift, drift/<m>/*
    videos: list[list[str]] = field(default_factory=list)  # [video name, prompt]: video/<name>, drift/<m>/<name>
    figures: list[str] = field(default_factory=list)  # figures/<name> of the compile run
    knobs: list[str] = field(default_factory=lambda: list(KNOB_KEYS))

    @property
    def title(self) -> str:
        return f"deepforcing sweep {self.sweep}"


def recipe_from_report(report: Any, sweep: str, project: str, entity: str | None, max_videos: int) -> Recipe:
    v = report.results.videos
    metrics = [m for m in dict.fromkeys(v["metric"]) if m != "fps"]
    names = v[v["metric"] == "fps"].drop_duplicates("video").sort_values("video")
    videos = [[str(r.video), str(r.prompt)] for r in names.itertuples()][:max_videos]
    return Recipe(sweep=sweep, project=project, entity=entity, paper_tables=[t.name for t in report.tables],
                  metrics=metrics, videos=videos, figures=[Path(p).stem for p, _ in report.figures])


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def build_workspace(recipe: Recipe, entity: str | None = None):
    """The sweep's W&B workspace (``wandb_workspaces.workspaces.Workspace``); builds offline."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    full = wr.Layout(w=24, h=10)
    summary_metrics = recipe.metrics + [f"{m}/abs_drift" for m in recipe.metrics] + ["fps"]

    tables = [wr.MarkdownPanel(
        markdown=(f"**Sweep `{recipe.sweep}`** (W&B group). Rows with `Source = published` are the papers' numbers; "
                  "ours are mean ± half-width of the 95 % bootstrap interval over prompts (exact bounds in "
                  "`tables/<table>` of the compile run, equal to the report's CSV). The report folder is the "
                  f"artifact `{artifact_name(recipe.sweep)}`."),
        layout=wr.Layout(w=24, h=3))]
    tables += [wr.WeavePanelSummaryTable(table_name=f"paper/{name}", layout=full) for name in recipe.paper_tables]

    drift = [wr.LinePlot(title=f"{m} over time: mean over prompts, grouped by policy (band: min-max)",
                         x="drift/t_s", y=[f"drift/{m}/mean"], groupby=wr.Config("method"), groupby_aggfunc="mean",
                         groupby_rangefunc="minmax", title_x="time in video (s, segment centre)", title_y=m)
             for m in recipe.metrics]

    sink = []
    for m in recipe.metrics:
        sink.append(wr.ScatterPlot(title=f"{m} vs sink ratio", x=wr.Config("sink_ratio"), y=wr.SummaryMetric(m)))
        sink.append(wr.ScatterPlot(title=f"|first - last segment| drift of {m} vs sink ratio",
                                   x=wr.Config("sink_ratio"), y=wr.SummaryMetric(f"{m}/abs_drift")))
    sink.append(wr.ParallelCoordinatesPlot(
        title="knobs and scores", layout=full,
        columns=[wr.ParallelCoordinatesPlotColumn(metric=wr.Config(k)) for k in recipe.knobs]
        + [wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(m)) for m in summary_metrics]))

    videos = [wr.MediaBrowser(title=_short(prompt), media_keys=[f"video/{name}"], mode="grid", grid_x_axis="run",
                              layout=full) for name, prompt in recipe.videos]

    per_prompt = [wr.LinePlot(title=f"{m}: {_short(prompt)}", x="drift/t_s", y=[f"drift/{m}/{name}"],
                              title_x="time in video (s, segment centre)", title_y=m)
                  for m in recipe.metrics for name, prompt in recipe.videos]

    cache = [wr.LinePlot(title=title, x="chunk/step", y=[f"chunk/{k}"], title_y=k)
             for k, title in (("cache_frames", "frames in the KV cache after each chunk"),
                              ("cache_mib", "KV cache memory held (MiB, all layers)"),
                              ("cache_capacity_mib", "KV cache memory allocated (MiB)"),
                              ("seconds", "chunk latency (s)"))]
    cache.append(wr.BarPlot(title="generation throughput (FPS)", metrics=[wr.SummaryMetric("fps")],
                            groupby=wr.Config("method")))

    figures = [wr.MediaBrowser(title=name, media_keys=[f"figures/{name}"]) for name in recipe.figures]

    sections = [
        ws.Section(name="Paper tables", panels=tables, is_open=True, pinned=True),
        ws.Section(name="Drift over time, grouped by policy", panels=drift, is_open=True),
        ws.Section(name="Metric vs sink ratio", panels=sink, is_open=True),
        ws.Section(name="Videos side by side", panels=videos, is_open=True),
        ws.Section(name="Drift per prompt", panels=per_prompt),
        ws.Section(name="KV cache and throughput", panels=cache),
        ws.Section(name="Report figures", panels=figures),
    ]
    return ws.Workspace(
        entity=entity or recipe.entity or "", project=recipe.project, name=recipe.title, sections=sections,
        runset_settings=ws.RunsetSettings(
            filters=[expr.Metric("Group") == recipe.sweep],
            pinned_columns=["config:method"] + [f"config:{k}" for k in recipe.knobs]
            + [f"summary:{m}" for m in summary_metrics]),
    )


def workspace_spec(recipe: Recipe, entity: str | None = None) -> dict:
    """The workspace as the view spec W&B stores (built without a network)."""
    return build_workspace(recipe, entity)._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")


def save_workspace(recipe: Recipe) -> str:
    """Save the workspace to the W&B server (needs a login); returns its URL."""
    import wandb

    entity = recipe.entity or wandb.Api().default_entity
    if not entity:
        raise ConfigError("no W&B entity: set logger.entity, or log in (`wandb login`)")
    return build_workspace(recipe, entity).save().url


def spec_path(runs_dir: str | os.PathLike, sweep: str) -> Path:
    return sweep_index(runs_dir, sweep) / "workspace.json"


def store_workspace(runs_dir: str | os.PathLike, recipe: Recipe, online: bool) -> dict:
    """Save the workspace when online; always write its recipe and spec to ``spec_path`` (with the URL,
    or with why it is not saved yet)."""
    entry: dict[str, Any] = {"recipe": asdict(recipe), "view": workspace_spec(recipe), "saved": None}
    if online:
        try:
            entry["saved"] = {"url": save_workspace(recipe), "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        except Exception as e:
            entry["error"] = f"{type(e).__name__}: {e}"
            log.warning("W&B: saving the workspace of sweep %s failed (%s); save it later with: "
                        "python -m eval.wandb publish %s", recipe.sweep, entry["error"], recipe.sweep)
    path = spec_path(runs_dir, recipe.sweep)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, entry)
    if entry["saved"]:
        log.info("W&B workspace of sweep %s: %s", recipe.sweep, entry["saved"]["url"])
    elif not online:
        log.info("W&B workspace of sweep %s: spec written to %s; upload the runs and save it with: "
                 "python -m eval.wandb publish %s", recipe.sweep, path, recipe.sweep)
    return entry


def read_spec(runs_dir: str | os.PathLike, sweep: str) -> dict | None:
    p = spec_path(runs_dir, sweep)
    return json.loads(p.read_text()) if p.exists() else None


# --------------------------------------------------------------------------------------------------- publish


def describe(recipe: Recipe) -> str:
    """The workspace's sections and panels, one line each (what ``publish --dry-run`` prints)."""
    w = build_workspace(recipe)
    lines = [f"workspace {recipe.title!r} (project {recipe.project}, runs of group {recipe.sweep!r}):"]
    for s in w.sections:
        titles = [getattr(p, "title", None) or getattr(p, "table_name", None) or
                  ("notes" if hasattr(p, "markdown") else type(p).__name__) for p in s.panels]
        lines.append(f"  {s.name}: {len(s.panels)} panel(s)" + (f": {'; '.join(titles[:3])}" if titles else "")
                     + ("; ..." if len(titles) > 3 else ""))
    return "\n".join(lines)


def publish(runs_dir: str | os.PathLike, sweep: str, dry_run: bool = False, out=print) -> int:
    """Upload the sweep's offline runs (``wandb sync``), then save its workspace. Returns an exit code;
    a failed upload leaves everything in place to publish again."""
    runs_dir = Path(runs_dir)
    if not sweep_index(runs_dir, sweep).is_dir():
        known = sorted(p.name for p in (runs_dir / INDEX).iterdir()) if (runs_dir / INDEX).is_dir() else []
        raise ConfigError(f"no W&B record of sweep {sweep!r} under {runs_dir} (run it with logger=wandb)"
                          + (f"; recorded sweeps: {', '.join(known)}" if known else ""))
    runs = registered_runs(runs_dir, sweep)
    offline = [r for r in runs if r.get("mode") == "offline"]
    missing = [r for r in offline if not run_path(runs_dir, r).is_dir()]
    for r in missing:
        out(f"missing run folder {run_path(runs_dir, r)} ({r['name']}): skipped")
    todo = [r for r in offline if r not in missing and not is_synced(run_path(runs_dir, r))]
    out(f"sweep {sweep}: {len(runs)} run(s) recorded, {len(offline)} offline, {len(todo)} to upload")
    if todo:
        cmd = [sys.executable, "-m", "wandb", "sync", *(str(run_path(runs_dir, r)) for r in todo)]
        if dry_run:
            cmd.append("--dry-run")
        out("$ wandb sync " + " ".join(cmd[4:]))
        rc = subprocess.run(cmd, cwd=runs_dir.parent).returncode  # its debug log goes beside the runs
        # wandb sync may exit 0 when uploads fail: a run is uploaded once it carries the .synced marker
        left = [] if dry_run else [r for r in todo if not is_synced(run_path(runs_dir, r))]
        if rc != 0 or left:
            out(f"wandb sync failed (exit {rc}; {len(left)} of {len(todo)} run(s) not uploaded); nothing is lost: "
                f"the runs stay in {runs_dir}; publish again later")
            return 1
    entry = read_spec(runs_dir, sweep)
    if entry is None:
        out("no workspace spec for this sweep (it was not compiled with logger=wandb); runs only")
        return 0
    recipe = Recipe(**entry["recipe"])
    if dry_run:
        out(describe(recipe))
        if entry.get("saved"):
            out(f"already saved: {entry['saved']['url']}")
        return 0
    if entry.get("saved"):
        out(f"workspace already saved: {entry['saved']['url']}")
        return 0
    try:
        url = save_workspace(recipe)
    except Exception as e:
        out(f"saving the workspace failed ({type(e).__name__}: {e}); the runs are uploaded; publish again later")
        return 1
    entry["saved"] = {"url": url, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    entry.pop("error", None)
    write_json_atomic(spec_path(runs_dir, sweep), entry)
    out(f"workspace saved: {url}")
    return 0
