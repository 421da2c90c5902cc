"""The static HTML report renders in headless Chromium: tables, figures, failed points and videos load.

Any Chromium or Chrome binary will do: ``$DEEPFORCING_CHROMIUM``, else the first of the usual names
on the PATH. ``.ci/run`` installs Debian's ``chromium`` package when none is there; the tests skip,
saying so, only when no browser can be found.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from deepforcing.compile import compile_report
from deepforcing.compile.demo import build_demo_sweep
from deepforcing.compile.tables import default_published_path
from deepforcing.store import PointStore

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = default_published_path()  # $DEEPFORCING_PUBLISHED or the CSV shipped in deepforcing/data/
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
BROWSER_ENV = "DEEPFORCING_CHROMIUM"
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", "/usr/local/bin", "/snap/bin"])


def find_chromium() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name, path=SEARCH_PATH)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    given = os.environ.get(BROWSER_ENV)
    if given:
        if not shutil.which(given):
            pytest.fail(f"${BROWSER_ENV}={given!r} is not an executable")
        return shutil.which(given)
    path = find_chromium()
    if not path:
        pytest.skip(f"no Chromium or Chrome found (looked for {', '.join(BROWSERS)}): install one, e.g. Debian's "
                    f"chromium package (.ci/run does), or set ${BROWSER_ENV} to its path")
    return path


def run_chromium(binary: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=120)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    assert PUBLISHED.exists(), f"published results CSV missing at {PUBLISHED} (set DEEPFORCING_PUBLISHED)"
    store = build_demo_sweep(tmp_path_factory.getbasetemp() / "compile_store")
    root = tmp_path_factory.mktemp("html")
    shutil.copytree(store, root / "demo")
    bad = PointStore(root, "demo", "badbadbad0000000")
    bad.start({"key": "badbadbad0000000", "method": "deep_sink", "knobs": {}, "config": {}, "metric_versions": {}})
    bad.fail("RuntimeError: CUDA out of memory", "Traceback ...")
    return compile_report([root / "demo"], root / "report", baseline="rolling_window", published_csv=PUBLISHED,
                          n_boot=500)


def test_report_renders_in_chromium(chromium, report):
    page = report.html
    assert page == report.out / "index.html"
    proc = run_chromium(chromium, "--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    check = re.search(r'<p id="render-check"([^>]*)>([^<]*)</p>', dom)
    assert check, "the page's load handler did not run"
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', check.group(1)))
    n_fig = len(report.figures)
    assert n_fig == 4  # drift curve, metric vs sink, one Top-C heatmap per Deep Forcing point
    assert attrs["images"] == attrs["images-loaded"] == str(n_fig), attrs
    assert attrs["tables"] == "4", attrs  # Table 1, ours, paired differences, failed points
    # 3 points x 2 prompts, side by side per prompt; each mp4 decodes far enough to know its size
    assert attrs["videos"] == "6" and attrs["videos-loaded"] == "6" and attrs["videos-failed"] == "0", attrs
    assert attrs["video-size"] == "64x48"
    for text in ("Deep Forcing Table 1: published vs ours", "Rolling Forcing", "deep_forcing (sink_ratio=0.25)",
                 "Paired differences against rolling_window", "RuntimeError: CUDA out of memory",
                 "A red fox trots through fresh snow in a birch forest at dawn."):
        assert text in dom, text
    assert dom.count('<h3 class="prompt">') == 2
    assert len(re.findall(r'<tr class="ours">', dom)) == 3 + 3 + 2  # Table 1, ours, paired


def test_report_screenshot_is_not_blank(chromium, report, tmp_path):
    shot = tmp_path / "page.png"
    proc = run_chromium(chromium, "--window-size=1200,1600", f"--screenshot={shot}", report.html.as_uri())
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    img = mpimg.imread(shot)
    assert img.shape[:2] == (1600, 1200)
    assert img[..., :3].std() > 0.05  # text, table rules and figures, not an empty page
