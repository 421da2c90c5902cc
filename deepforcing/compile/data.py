"""Read sweep folders of the result store (deepforcing/store.py) into tidy pandas frames.

One :class:`Results` holds every point of the given sweeps (finished, failed and incomplete) and
three long tables built from the finished points' per-video records:

- ``videos``: one row per (point, video, metric): the long score, its error, drift statistics;
  plus one ``metric="fps"`` row per video (generation throughput on the machine that ran it).
- ``series``: one row per (point, video, metric, clip or segment): the score over time.
- ``topc``: one row per Top-C token chosen at a compression chunk (layer 0): its cache slot and
  source latent frame.

Scores stay as the store writes them (fractions in [0, 1]); scaling for display happens in
:mod:`deepforcing.compile.tables`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from deepforcing.errors import ConfigError
from deepforcing.store import DamagedFile, list_points, read_record

log = logging.getLogger(__name__)

VIDEO_COLUMNS = ["sweep", "key", "label", "method", "prompt_index", "prompt", "video", "mp4", "metric", "score",
                 "error", "direction", "abs_drift", "drift_delta", "drift_first", "drift_last", "video_seconds"]
SERIES_COLUMNS = ["sweep", "key", "label", "method", "prompt_index", "prompt", "video", "metric", "kind",
                  "start_s", "end_s", "mid_s", "score"]
TOPC_COLUMNS = ["sweep", "key", "label", "method", "prompt_index", "video", "chunk", "chunk_start", "slot",
                "slot_frame", "frame", "tokens_per_frame", "sink_frames", "candidates", "augmented_tokens"]


@dataclass
class Point:
    """One sweep point as stored: settings, status and (when finished) its per-video records."""

    sweep: str
    key: str
    dir: Path
    method: str
    knobs: dict[str, Any]
    config: dict[str, Any]
    status: str  # "done" | "failed" | "incomplete" | "damaged"
    error: str | None = None
    summary: dict | None = None
    records: list[dict] = field(default_factory=list)
    label: str = ""

    @property
    def policy(self) -> dict:
        return self.config.get("policy") or {}

    @property
    def sink_frames(self) -> int:
        """Sink size in latent frames as the policy ran (0 for policies without a sink)."""
        return int(self.policy.get("sink") or 0)

    @property
    def model_kind(self) -> str:
        return str((self.config.get("model") or {}).get("kind", "?"))

    @property
    def prompts(self) -> list[str]:
        return list(self.config.get("prompts") or [])

    @property
    def base_label(self) -> str:
        if not self.knobs:
            return self.method
        knobs = ", ".join(f"{k}={v}" for k, v in sorted(self.knobs.items()))
        return f"{self.method} ({knobs})"


@dataclass
class Results:
    points: list[Point]
    videos: pd.DataFrame
    series: pd.DataFrame
    topc: pd.DataFrame

    @property
    def done(self) -> list[Point]:
        return [p for p in self.points if p.status == "done"]

    @property
    def problems(self) -> list[Point]:
        return [p for p in self.points if p.status != "done"]

    @property
    def labels(self) -> list[str]:
        return [p.label for p in self.done]

    def point(self, label: str) -> Point:
        for p in self.points:
            if p.label == label:
                return p
        raise KeyError(label)

    def failures(self) -> pd.DataFrame:
        rows = [{"sweep": p.sweep, "key": p.key, "label": p.label, "status": p.status, "error": p.error or "",
                 "dir": str(p.dir)} for p in self.problems]
        return pd.DataFrame(rows, columns=["sweep", "key", "label", "status", "error", "dir"])


def _check_sweep_dir(path: Path) -> None:
    if not path.exists():
        raise ConfigError(f"{path}: no such directory (expected a sweep folder <out_dir>/<sweep>)")
    if not path.is_dir():
        raise ConfigError(f"{path}: not a directory (expected a sweep folder <out_dir>/<sweep>)")
    if (path / "point.json").exists():
        raise ConfigError(f"{path}: this is one point's folder, not a sweep; pass its parent {path.parent}")
    subdirs = [d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if not subdirs:
        raise ConfigError(f"{path}: empty sweep folder (no points); run e.g. "
                          f"`python run.py -m sink_ratio=0.25,0.5 out_dir={path.parent} sweep={path.name}` first")
    if any((d / "point.json").exists() for d in subdirs):
        return
    nested = sorted(d.name for d in subdirs if any((e / "point.json").exists() for e in d.iterdir() if e.is_dir()))
    if nested:
        raise ConfigError(f"{path}: this is a results root, not a sweep; pass one or more of its sweeps: "
                          + ", ".join(str(path / n) for n in nested))
    raise ConfigError(f"{path}: not a sweep folder (no <key>/point.json inside); "
                      "expected the folder written by run.py as <out_dir>/<sweep>")


def _video_metric_rows(p: Point, idx: int, rec: dict, mp4: Path) -> tuple[list[dict], list[dict]]:
    base = {"sweep": p.sweep, "key": p.key, "label": p.label, "method": p.method, "prompt_index": idx,
            "prompt": rec.get("prompt", ""), "video": Path(rec.get("video", "")).stem}
    m = rec.get("metrics") or {}
    fps_video = m.get("fps")
    nframes = m.get("num_frames") or rec.get("frames")
    seconds = nframes / fps_video if (nframes and fps_video) else None
    rows, series = [], []
    rows.append({**base, "mp4": str(mp4), "metric": "fps", "score": rec.get("fps"), "error": None,
                 "direction": "higher", "video_seconds": seconds})
    video_error = m.get("error")
    for name, dim in (m.get("dimensions") or {}).items():
        drift = dim.get("drift") or {}
        err = dim.get("error") or video_error
        rows.append({**base, "mp4": str(mp4), "metric": name, "score": None if err else dim.get("score"),
                     "error": err, "direction": dim.get("direction"), "abs_drift": drift.get("abs_delta"),
                     "drift_delta": drift.get("delta"), "drift_first": drift.get("first"),
                     "drift_last": drift.get("last"), "video_seconds": seconds})
        if err:
            continue
        for kind, spans in (("clip", dim.get("clips") or []), ("segment", dim.get("segments") or [])):
            for s in spans:
                if s.get("score") is None:
                    continue
                series.append({**base, "metric": name, "kind": kind, "start_s": s["start_s"], "end_s": s["end_s"],
                               "mid_s": (s["start_s"] + s["end_s"]) / 2, "score": s["score"]})
    return rows, series


def tokens_per_frame(diagnostics: list[dict]) -> int | None:
    """Tokens per latent frame, read off a chunk whose cache holds whole frames only."""
    for d in diagnostics:
        frames, tokens = d.get("cache_frames"), d.get("cache_tokens")
        if frames and tokens and not d.get("tokens_compressed"):
            return int(round(tokens / frames))
    return None


def _topc_rows(p: Point, idx: int, rec: dict) -> list[dict]:
    diags = rec.get("diagnostics") or []
    tpf = tokens_per_frame(diags)
    rows = []
    for d in diags:
        t = d.get("topc")
        if not t or not tpf:
            continue
        sink_frames = (d.get("tokens_sink") or 0) / tpf
        for slot, frame in zip(t.get("augmented_index") or [], t.get("frames") or [], strict=False):
            rows.append({"sweep": p.sweep, "key": p.key, "label": p.label, "method": p.method, "prompt_index": idx,
                         "video": Path(rec.get("video", "")).stem, "chunk": d.get("index"),
                         "chunk_start": d.get("chunk_start"), "slot": slot, "slot_frame": slot // tpf,
                         "frame": frame, "tokens_per_frame": tpf, "sink_frames": sink_frames,
                         "candidates": t.get("candidates"), "augmented_tokens": t.get("augmented_tokens")})
    return rows


def _load_point(sweep: str, entry: dict) -> Point:
    d = Path(entry["dir"])
    pj = entry["point"] or {}
    damaged = list(entry.get("damaged") or [])
    records = []
    if entry["summary"] is not None and not damaged:
        for f in sorted((d / "videos").glob("*.json")):
            try:
                records.append(read_record(f, "video") | {"_json": str(f)})
            except DamagedFile as e:
                damaged.append(e)
    if damaged:
        for e in damaged:
            log.warning("skipping point %s: damaged file %s (%s); a rerun of its sweep recomputes it",
                        d.name, e.path, e.reason)
        status, err = "damaged", "; ".join(f"damaged file {e.path}: {e.reason}" for e in damaged)
    elif entry["summary"] is not None:
        status, err = "done", None
    elif entry["error"] is not None:
        status, err = "failed", str(entry["error"].get("error", "unknown error"))
    else:
        n = len(list((d / "videos").glob("*.json"))) if (d / "videos").exists() else 0
        status, err = "incomplete", f"no summary.json and no error.json ({n} video(s) finished): running or killed"
    p = Point(sweep=sweep, key=str(pj.get("key", d.name)), dir=d, method=str(pj.get("method", "?")),
              knobs=dict(pj.get("knobs") or {}), config=dict(pj.get("config") or {}), status=status, error=err,
              summary=entry["summary"] if status == "done" else None)
    if status == "done":
        p.records = records
    return p


def _assign_labels(points: list[Point]) -> None:
    """``method (knobs)``; made unique with the sweep name, then with the key, where needed."""
    for p in points:
        p.label = p.base_label
    for make in (lambda p: f"{p.sweep}/{p.base_label}", lambda p: f"{p.sweep}/{p.base_label} [{p.key[:8]}]"):
        counts: dict[str, int] = {}
        for p in points:
            counts[p.label] = counts.get(p.label, 0) + 1
        for p in points:
            if counts[p.label] > 1:
                p.label = make(p)


def load_sweeps(sweep_dirs: list[str | os.PathLike]) -> Results:
    """Every point of the given sweep folders. Raises one ConfigError for bad input."""
    if not sweep_dirs:
        raise ConfigError("no sweep folder given")
    seen: set[Path] = set()
    points: list[Point] = []
    for sd in sweep_dirs:
        path = Path(sd)
        _check_sweep_dir(path)
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        points += [_load_point(path.name, e) for e in list_points(path)]
    _assign_labels(points)
    done = [p for p in points if p.status == "done"]
    if not done:
        lines = "; ".join(f"{p.sweep}/{p.key} {p.status}: {p.error}" for p in points)
        raise ConfigError(f"no finished point in {', '.join(map(str, sweep_dirs))} ({lines})")
    vrows, srows, trows = [], [], []
    for p in done:
        prompt_pos = {q: i for i, q in enumerate(p.prompts)}
        for rec in p.records:
            json_path = Path(rec["_json"])
            idx = prompt_pos.get(rec.get("prompt"), -1)
            if idx < 0:  # fall back on the store's "<index>_<slug>" name
                head = json_path.stem.split("_", 1)[0]
                idx = int(head) if head.isdigit() else len(prompt_pos)
            v, s = _video_metric_rows(p, idx, rec, json_path.with_suffix(".mp4"))
            vrows += v
            srows += s
            trows += _topc_rows(p, idx, rec)
    return Results(points=points, videos=pd.DataFrame(vrows, columns=VIDEO_COLUMNS),
                   series=pd.DataFrame(srows, columns=SERIES_COLUMNS), topc=pd.DataFrame(trows, columns=TOPC_COLUMNS))


def resolve_label(results: Results, name: str) -> str:
    """A finished point's label from its exact label, its method name (if unique) or a key prefix."""
    done = results.done
    for p in done:
        if p.label == name:
            return p.label
    by_method = [p for p in done if p.method == name]
    if len(by_method) == 1:
        return by_method[0].label
    by_key = [p for p in done if len(name) >= 4 and p.key.startswith(name)]
    if len(by_key) == 1:
        return by_key[0].label
    choices = "; ".join(f"{p.label!r} (key {p.key[:8]})" for p in done)
    if len(by_method) > 1:
        raise ConfigError(f"baseline {name!r} matches {len(by_method)} points; name one of: {choices}")
    failed = [p for p in results.problems if name in (p.label, p.method) or p.key.startswith(name)]
    if failed:
        raise ConfigError(f"baseline {name!r} did not finish ({failed[0].status}: {failed[0].error}); "
                          f"choose one of: {choices}")
    raise ConfigError(f"unknown baseline {name!r}; choose a label, method or key prefix of: {choices}")
