"""notebooks/sweep_report.py (jupytext percent format) executes with a real kernel and draws its figures."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import jupytext
import matplotlib.image as mpimg
import pytest
from nbclient import NotebookClient

from deepforcing.compile.demo import DEMO_PROMPTS, build_demo_sweep

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "sweep_report.py"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return build_demo_sweep(tmp_path_factory.getbasetemp() / "compile_store")


def test_notebook_is_percent_format_with_parameters():
    text = NOTEBOOK.read_text()
    assert "format_name: percent" in text
    nb = jupytext.read(NOTEBOOK)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "SWEEPS" in tagged[0].source


def test_notebook_executes_and_draws(store, monkeypatch, tmp_path):
    # the default run, pointed at the shared tiny sweep through the environment (the kernel inherits it)
    monkeypatch.setenv("DEEPFORCING_SWEEPS", str(store))
    nb = jupytext.read(NOTEBOOK)
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "3 finished point(s), 0 failed or incomplete" in text
    markdown = [o.data["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert any("| 30 s · trained-with-sink | Rolling Forcing | 15.79 |" in m for m in markdown)
    assert any("Paired differences against rolling_window" in m for m in markdown)
    pngs = [o.data["image/png"] for o in outputs if "image/png" in o.get("data", {})]
    # drift curve + metric vs sink + two Top-C heatmaps
    assert len(pngs) == 4
    for png in pngs:
        img = mpimg.imread(io.BytesIO(base64.b64decode(png)), format="png")
        assert img.shape[0] > 200 and img.shape[1] > 400 and img[..., :3].std() > 0.02


def test_notebook_runs_as_a_script_on_a_sweep_without_its_baseline_or_published_rows(tmp_path):
    """results/default as `python3 run.py` leaves it: one Deep Forcing point, no rolling_window to pair with."""
    sweep = build_demo_sweep(tmp_path / "results", sweep="default", points=(("deep_forcing", ()),),
                             prompts=DEMO_PROMPTS[:1], num_frames=12)
    env = {**os.environ, "DEEPFORCING_SWEEPS": str(sweep), "DEEPFORCING_PUBLISHED": str(tmp_path / "none.csv"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(NOTEBOOK)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "1 finished point(s), 0 failed or incomplete" in out
    assert "object>" not in out  # plain text, not the repr of IPython display objects
    assert "### Our points, all metrics" in out and "| ours · tiny · 2.8 s · 1 prompts | deep_forcing |" in out
    assert f"no published rows: published results CSV {tmp_path / 'none.csv'} not found" in out
    assert "no paired differences: unknown baseline 'rolling_window'" in out and "Paired differences" not in out
    assert "[figure: Temporal Flickering over time" in out
