"""Results on disk (one JSON per video) and a plain-text table. Errors are shown as text, never NaN."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .scorer import VideoResult
from .specs import SPECS


def safe_name(path: str) -> str:
    stem = Path(path).stem or "video"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:120]


def write_json(result: VideoResult, out_dir: str | os.PathLike, name: str | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    p = out / f"{name or safe_name(result.video)}.json"
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result.to_dict(), indent=2, allow_nan=False, default=str))
    os.replace(tmp, p)
    return p


def _cell(r: VideoResult, dim: str, field: str) -> str:
    if r.error:
        return "error"
    d = r.dimensions.get(dim)
    if d is None:
        return "skipped" if dim in r.skipped else "-"
    if d.error:
        return "error"
    if field == "score":
        return f"{d.score:.4f}"
    v = d.drift.get(field)
    return "-" if v is None else f"{v:.4f}"


def _grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    fmt = lambda row: " | ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=False))  # noqa: E731
    return "\n".join([fmt(header), "-+-".join("-" * w for w in widths)] + [fmt(r) for r in rows])


#: how the table's mean row combines videos
AGGREGATIONS = {
    "mean": "plain mean over videos",
    "vbench": "vbench's run score: subject/background consistency weighted by frame pairs "
              "(sum of similarities / sum of pairs), other dimensions plain mean over videos",
}


def _pairs(dr) -> int:
    """Frame pairs behind a consistency score: consecutive pairs of every clip that counts."""
    return sum(c["end_frame"] - c["start_frame"] - 1 for c in dr.clips if c.get("used", True))


def aggregate(results: list[VideoResult], dim: str, how: str = "mean",
              field: str = "score") -> tuple[float, int] | None:
    """(value, number of videos) of one dimension over the videos that have it; None when none has.

    ``how="mean"``: plain mean over videos. ``how="vbench"``: the number vbench 0.1.5 prints for a run in one
    process -- for subject and background consistency the sum of all frame-pair similarities over the sum of
    pairs (each video weighted by its pairs), for the other dimensions the plain mean. Drift fields are always
    plain means."""
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {sorted(AGGREGATIONS)}, got {how!r}")
    vals, weights = [], []
    for r in results:
        dr = r.dimensions.get(dim)
        if r.error or dr is None or dr.error:
            continue
        v = dr.score if field == "score" else dr.drift.get(field)
        if v is None:
            continue
        vals.append(v)
        pair_weighted = how == "vbench" and field == "score" and dim in SPECS and SPECS[dim].vbench_run_mean == "pairs"
        weights.append(_pairs(dr) if pair_weighted else 1)
    if not vals:
        return None
    if sum(weights) == 0:
        return sum(vals) / len(vals), len(vals)
    return sum(v * w for v, w in zip(vals, weights, strict=True)) / sum(weights), len(vals)


def _mean_row(results: list[VideoResult], dims: list[str], field: str, how: str = "mean") -> list[str]:
    row = ["mean" if how == "mean" or field != "score" else f"mean ({how})"]
    for d in dims:
        a = aggregate(results, d, how, field)
        row.append(f"{a[0]:.4f} (n={a[1]})" if a else "-")
    return row


def table(results: list[VideoResult], dims: list[str], drift_field: str | None = "abs_delta",
          aggregation: str = "mean") -> str:
    """Scores (rows = videos + mean, columns = dimensions), then the drift statistic ``drift_field``,
    then skipped dimensions and per-video errors. Dimensions skipped for every video get no column.
    ``aggregation`` (see ``AGGREGATIONS``) sets how the scores' mean row combines videos; the table says which."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {sorted(AGGREGATIONS)}, got {aggregation!r}")
    dims = [d for d in dims if any(d in r.dimensions for r in results) or not results or
            not all(d in r.skipped for r in results)]
    names = [Path(r.video).name for r in results]
    rows = [[n] + [_cell(r, d, "score") for d in dims] for n, r in zip(names, results, strict=True)]
    out = f"Mean row: {AGGREGATIONS[aggregation]}.\n"
    out += _grid(["video"] + dims, rows + [_mean_row(results, dims, "score", aggregation)])
    if drift_field and any(r.dimensions.get(d) and r.dimensions[d].drift for r in results for d in dims):
        out += f"\n\nDrift ({drift_field}; first-last segment unless named otherwise):\n"
        rows = [[n] + [_cell(r, d, drift_field) for d in dims] for n, r in zip(names, results, strict=True)]
        out += _grid(["video"] + dims, rows + [_mean_row(results, dims, drift_field)])
    errs = []
    for r in results:
        if r.error:
            errs.append(f"{r.video}: {r.error}")
        for d in r.dimensions.values():
            if d.error:
                errs.append(f"{r.video}: {d.error}")
    skipped = sorted({m for r in results for m in r.skipped.values()})
    legend = ", ".join(f"{d} ({SPECS[d].direction} is better)" for d in dims if d in SPECS)
    out += "\n\n" + legend + "\n"
    if skipped:
        out += "\nSkipped dimensions:\n" + "\n".join(f"  {m}" for m in skipped) + "\n"
    if errs:
        out += "\nErrors:\n" + "\n".join(f"  {e}" for e in errs) + "\n"
    return out
