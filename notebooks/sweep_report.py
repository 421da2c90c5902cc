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
# generates a tiny demo sweep on the CPU (random-weights tiny model, about a minute). Run as a plain
# script (`python3 notebooks/sweep_report.py`) it prints the tables as markdown text and names the
# figures (`python -m eval.compile` writes them as PNGs).

# %% tags=["parameters"]
SWEEPS: list[str] = []  # e.g. ["../results/demo", "../results/demo2"]
BASELINE: str | None = "rolling_window"  # a point label, a unique method name or a key prefix; None or
# not in the sweeps: no paired table (a note says why)
TABLE = "deep_forcing_table1"
LENGTH: float | None = None  # keep only published rows of this length (s)
PUBLISHED_CSV: str | None = None  # default: $DEEPFORCING_PUBLISHED or the CSV shipped in deepforcing/data/

# %%
# ruff: noqa: E402
import io
import os
import tempfile

from deepforcing.compile import load_sweeps, resolve_label
from deepforcing.compile.figures import drift_curves, metric_vs_sink, topc_heatmap
from deepforcing.compile.tables import ours_table, paired_table, paper_table, read_published
from deepforcing.errors import ConfigError

try:  # a Jupyter kernel (or IPython) shows rich output; a plain script prints text
    from IPython import get_ipython

    IN_IPYTHON = get_ipython() is not None
except ImportError:
    IN_IPYTHON = False


def show_markdown(text: str) -> None:
    if IN_IPYTHON:
        from IPython.display import Markdown, display

        display(Markdown(text))
    else:
        print(text)


def show_frame(df) -> None:
    if IN_IPYTHON:
        from IPython.display import display

        display(df)
    elif not df.empty:
        print(df.to_string(index=False))


def show(fig):
    """Display a matplotlib Figure as PNG (the figures use the object API, no pyplot state)."""
    if not IN_IPYTHON:
        title = fig.get_suptitle() or (fig.axes[0].get_title() if fig.axes else "")
        print(f"[figure: {title}]")
        return
    from IPython.display import Image, display

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
show_frame(results.failures())

# %% [markdown]
# ## Tables

# %%
try:
    published = read_published(PUBLISHED_CSV)
except ConfigError as e:
    published = None
    print(f"no published rows: {e}")
if published is not None:
    show_markdown(paper_table(published, TABLE, results, length=LENGTH).markdown())
show_markdown(ours_table(results).markdown())
baseline = None
if BASELINE:
    try:
        baseline = resolve_label(results, BASELINE)
    except ConfigError as e:  # e.g. results/default: one Deep Forcing point, no rolling_window
        print(f"no paired differences: {e}")
if baseline is not None and len(results.done) < 2:
    print(f"no paired differences: {baseline} is the only finished point")
    baseline = None
if baseline is not None:
    show_markdown(paired_table(results, baseline).markdown())

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
