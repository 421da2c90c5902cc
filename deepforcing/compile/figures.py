"""Figures from a loaded sweep (matplotlib, Agg): drift curves, metric vs sink size, Top-C heatmaps.

Each function draws into a new :class:`matplotlib.figure.Figure` (object API, no pyplot state, so it
works under any backend: saved by the CLI, shown with ``display(fig)`` in a notebook) and returns it;
:func:`save_all` writes PNGs and returns their paths with a caption. Scores are plotted ×100 like the
tables.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from deepforcing.atomic import atomic_path

from .data import Results
from .stats import bootstrap_ci
from .tables import header, label, scale


def file_slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:80] or "x"


def drift_curves(results: Results, metric: str, kind: str = "clip") -> Figure:
    """Score over time (one line per point): mean over prompts of each clip/segment, min–max band."""
    s = results.series[(results.series["metric"] == metric) & (results.series["kind"] == kind)]
    fig = Figure(figsize=(7.5, 4.2), dpi=110)
    ax = fig.subplots()
    k = scale(metric)
    for lab, g in s.groupby("label", sort=False):
        by = g.groupby("mid_s")["score"]
        x = np.array(by.mean().index)
        ax.plot(x, by.mean().to_numpy() * k, marker="o", ms=3, label=lab)
        if g["prompt_index"].nunique() > 1:
            ax.fill_between(x, by.min().to_numpy() * k, by.max().to_numpy() * k, alpha=0.15)
    ax.set_xlabel(f"time in video (s, centre of each {kind})")
    ax.set_ylabel(header(metric))
    ax.set_title(f"{label(metric)} over time ({kind}s; line: mean over prompts, band: min–max)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def metric_vs_sink(results: Results, metric: str) -> Figure:
    """Mean score and |first − last| drift (95 % bootstrap intervals) against the sink size, per method."""
    v = results.videos[results.videos["metric"] == metric]
    sinks = {p.label: (p.method, p.sink_frames) for p in results.done}
    fig = Figure(figsize=(10, 4), dpi=110)
    axes = fig.subplots(1, 2)
    k = scale(metric)
    for ax, value, title in ((axes[0], "score", header(metric)),
                             (axes[1], "abs_drift", header(metric + "/abs_drift"))):
        rows = []
        for lab, g in v.groupby("label", sort=False):
            ci = bootstrap_ci(g[value].to_numpy(dtype=float))
            if ci.n:
                rows.append({"method": sinks[lab][0], "sink": sinks[lab][1], "mean": ci.mean * k, "lo": ci.lo * k,
                             "hi": ci.hi * k})
        df = pd.DataFrame(rows, columns=["method", "sink", "mean", "lo", "hi"])
        for method, g in df.groupby("method", sort=False):
            g = g.sort_values("sink")
            ax.errorbar(g["sink"], g["mean"], yerr=[g["mean"] - g["lo"], g["hi"] - g["mean"]], marker="o",
                        capsize=3, label=method)
        ax.set_xlabel("sink size (latent frames, as the policy ran)")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{label(metric)} vs sink size (mean over prompts, 95 % bootstrap interval)")
    fig.tight_layout()
    return fig


def topc_heatmap(results: Results, point_label: str) -> Figure:
    """Where Participative Compression's Top-C tokens come from, per compression chunk (layer 0).

    Left: the cache slot they held (in frame units; the line marks the end of the sink). Right: the
    latent frame they were generated at. Colour: share of the chosen tokens, averaged over prompts.
    """
    t = results.topc[results.topc["label"] == point_label]
    fig = Figure(figsize=(11, 4.2), dpi=110)
    axes = fig.subplots(1, 2)
    n_videos = max(t["video"].nunique(), 1)
    for ax, col, xlabel in ((axes[0], "slot_frame", "cache slot (frames; sink first)"),
                            (axes[1], "frame", "latent frame the token was generated at")):
        counts = t.groupby(["chunk", col]).size().unstack(fill_value=0)
        per_chunk = t.groupby("chunk").size()
        share = counts.div(per_chunk, axis=0)  # summed over prompts, so each row sums to 1
        lo, hi = (0 if col == "slot_frame" else int(t[col].min())), int(t[col].max())  # slots: show the sink
        share = share.reindex(columns=range(lo, hi + 1), fill_value=0.0)
        im = ax.imshow(share.to_numpy(), aspect="auto", cmap="magma", interpolation="nearest",
                       extent=(lo - 0.5, hi + 0.5, len(share) - 0.5, -0.5))
        ax.set_yticks(range(len(share)))
        ax.set_yticklabels([str(c) for c in share.index])
        ax.set_ylabel("compression chunk index")
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if col == "slot_frame":
            ax.axvline(t["sink_frames"].iloc[0] - 0.5, color="cyan", lw=1.5, ls="--", label="end of sink")
            ax.legend(fontsize=8, loc="lower right")
        fig.colorbar(im, ax=ax, label="share of Top-C tokens")
    fig.suptitle(f"Top-C selection, {point_label} (layer 0, {n_videos} prompt(s))")
    fig.tight_layout()
    return fig


def save_all(results: Results, out_dir: str | os.PathLike) -> list[tuple[Path, str]]:
    """Every figure the data allow, as PNGs under ``out_dir``: [(path, caption)]."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved: list[tuple[Path, str]] = []

    def save(fig: Figure, name: str, caption: str) -> None:
        path = out / f"{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        saved.append((path, caption))

    metrics = [m for m in dict.fromkeys(results.series["metric"])]
    for m in metrics:
        save(drift_curves(results, m), f"drift_{m}", f"{label(m)} over time, per point (2-s clips)")
    sinks = {p.sink_frames for p in results.done}
    if len(sinks) > 1:
        for m in metrics:
            save(metric_vs_sink(results, m), f"sink_{m}", f"{label(m)} and its drift vs sink size")
    for lab in dict.fromkeys(results.topc["label"]):
        save(topc_heatmap(results, lab), f"topc_{file_slug(lab)}", f"Top-C selection heatmap: {lab}")
    return saved
