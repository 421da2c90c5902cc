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


def _mean_row(results: list[VideoResult], dims: list[str], field: str) -> list[str]:
    row = ["mean"]
    for d in dims:
        vals = []
        for r in results:
            dr = r.dimensions.get(d)
            if r.error or dr is None or dr.error:
                continue
            v = dr.score if field == "score" else dr.drift.get(field)
            if v is not None:
                vals.append(v)
        row.append(f"{sum(vals) / len(vals):.4f} (n={len(vals)})" if vals else "-")
    return row


def table(results: list[VideoResult], dims: list[str], drift_field: str | None = "abs_delta") -> str:
    """Scores (rows = videos + mean, columns = dimensions), then the drift statistic ``drift_field``,
    then skipped dimensions and per-video errors. Dimensions skipped for every video get no column."""
    dims = [d for d in dims if any(d in r.dimensions for r in results) or not results or
            not all(d in r.skipped for r in results)]
    names = [Path(r.video).name for r in results]
    rows = [[n] + [_cell(r, d, "score") for d in dims] for n, r in zip(names, results, strict=True)]
    out = _grid(["video"] + dims, rows + [_mean_row(results, dims, "score")])
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
