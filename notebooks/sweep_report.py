# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Sweep report
#
# Loads one or more sweep folders of the result store (`<out_dir>/<sweep>/<key>/...`, see
# `deepforcing/store.py`), prints the tables (published rows beside ours, ×100 like the papers) and
# draws the figures: score over time per point, score and drift against the sink size, and where
# Participative Compression's Top-C tokens come from.
#
# Set `SWEEPS` below (or `DEEPFORCING_SWEEPS`, paths separated by `:`). Left empty, the notebook
# generates a tiny demo sweep on the CPU (random-weights tiny model, about a minute).

# %% tags=["parameters"]
SWEEPS: list[str] = []  # e.g. ["../results/demo", "../results/demo2"]
BASELINE: str | None = "rolling_window"  # a point label, a unique method name or a key prefix; None: no paired table
TABLE = "deep_forcing_table1"
LENGTH: float | None = None  # keep only published rows of this length (s)
PUBLISHED_CSV: str | None = None  # default: $DEEPFORCING_PUBLISHED or ../shared/reference/published_results.csv

# %%
# ruff: noqa: E402
import io
import os
import tempfile

from IPython.display import Image, Markdown, display

from deepforcing.compile import load_sweeps, resolve_label
from deepforcing.compile.figures import drift_curves, metric_vs_sink, topc_heatmap
from deepforcing.compile.tables import ours_table, paired_table, paper_table, read_published


def show(fig):
    """Display a matplotlib Figure as PNG (the figures use the object API, no pyplot state)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    display(Image(buf.getvalue()))


if not SWEEPS and os.environ.get("DEEPFORCING_SWEEPS"):
    SWEEPS = [s for s in os.environ["DEEPFORCING_SWEEPS"].split(os.pathsep) if s]
if not SWEEPS:
    from deepforcing.compile.demo import build_demo_sweep

    SWEEPS = [str(build_demo_sweep(tempfile.mkdtemp(prefix="deepforcing_demo_")))]

results = load_sweeps(SWEEPS)
print(f"{len(results.done)} finished point(s), {len(results.problems)} failed or incomplete")
results.failures()

# %% [markdown]
# ## Tables

# %%
published = read_published(PUBLISHED_CSV)
display(Markdown(paper_table(published, TABLE, results, length=LENGTH).markdown()))
display(Markdown(ours_table(results).markdown()))
if BASELINE:
    display(Markdown(paired_table(results, resolve_label(results, BASELINE)).markdown()))

# %% [markdown]
# ## Score over time (drift curves)

# %%
metrics = list(dict.fromkeys(results.series["metric"]))
for m in metrics:
    show(drift_curves(results, m))

# %% [markdown]
# ## Score and drift vs sink size

# %%
if len({p.sink_frames for p in results.done}) > 1:
    for m in metrics:
        show(metric_vs_sink(results, m))
else:
    print("every point ran with the same sink size: nothing to plot")

# %% [markdown]
# ## Top-C selection heatmaps (Participative Compression, layer 0)

# %%
for lab in dict.fromkeys(results.topc["label"]):
    show(topc_heatmap(results, lab))
