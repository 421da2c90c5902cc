"""eval.compile: bootstrap intervals, paired differences, the paper-layout tables, failed points and bad input.

Statistics are checked against hand-derived values; tables against numbers read straight from the
store's JSON files of a real tiny sweep (3 points x 2 prompts, built once per session).
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepforcing.compile import bootstrap_ci, load_sweeps, paired_differences
from deepforcing.compile.demo import build_demo_sweep
from deepforcing.compile.tables import default_published_path, paired_table, paper_table, read_published
from deepforcing.errors import ConfigError
from deepforcing.store import PointStore, read_record, write_record
from eval.compile import main as cli

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = default_published_path()  # $DEEPFORCING_PUBLISHED or the CSV shipped in deepforcing/data/

# Deep Forcing Table 1 as printed (deep_forcing.md §5): 30-s rows, in the paper's order
TABLE1_30S = [
    ("Rolling Forcing", [15.79, 30.71, 98.75, 20.99, 70.58, 60.24, 98.12, 96.91]),
    ("LongLive", [18.16, 45.55, 98.76, 20.16, 69.07, 61.51, 97.97, 96.83]),
    ("CausVid", [15.78, 47.21, 98.08, 19.15, 66.36, 59.77, 97.92, 96.77]),
    ("Self Forcing", [15.78, 36.62, 98.63, 20.50, 68.58, 59.44, 97.34, 96.47]),
    ("Deep Forcing", [15.75, 57.56, 98.27, 20.54, 69.31, 60.68, 97.34, 96.48]),
]
TABLE1_HEADERS = ["Setting", "Model", "Throughput (FPS) ↑", "Dynamic Degree (×100) ↑", "Motion Smoothness (×100) ↑",
                  "Overall Consistency (×100) ↑", "Imaging Quality (×100) ↑", "Aesthetic Quality (×100) ↑",
                  "Subject Consistency (×100) ↑", "Background Consistency (×100) ↑"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    # shared by the compile, HTML and notebook tests: the store skips points that are already done
    return build_demo_sweep(tmp_path_factory.getbasetemp() / "compile_store")


@pytest.fixture(scope="module")
def published() -> pd.DataFrame:
    if not PUBLISHED.exists():
        pytest.fail(f"published results CSV missing at {PUBLISHED} (set DEEPFORCING_PUBLISHED)")
    return read_published(PUBLISHED)


def point_dirs(store: Path) -> dict[str, Path]:
    """label -> folder, read straight from point.json (independent of the compile code)."""
    out = {}
    for pj in store.glob("*/point.json"):
        p = json.loads(pj.read_text())
        knobs = ", ".join(f"{k}={v}" for k, v in sorted(p["knobs"].items()))
        out[f"{p['method']} ({knobs})" if knobs else p["method"]] = pj.parent
    return out


def tf_scores(point_dir: Path) -> dict[str, float]:
    """prompt -> temporal flickering long score, from the per-video JSON files."""
    out = {}
    for f in sorted((point_dir / "videos").glob("*.json")):
        rec = json.loads(f.read_text())
        out[rec["prompt"]] = rec["metrics"]["dimensions"]["temporal_flickering"]["score"]
    return out


# ----------------------------------------------------------------------------------------------- statistics


def test_bootstrap_all_equal_values_give_zero_width():
    ci = bootstrap_ci([0.7] * 6, n_boot=2000, seed=3)
    assert ci.mean == pytest.approx(0.7)
    assert ci.lo == pytest.approx(0.7, abs=1e-12) and ci.hi == pytest.approx(0.7, abs=1e-12)
    assert ci.n == 6


def test_bootstrap_matches_hand_derived_percentiles():
    # mean of 4 draws from {0,0,0,1} is k/4 with k ~ Binomial(4, 1/4):
    # P(k=0) = 0.316 > 0.025 -> 2.5th pct = 0;  P(k<=2) = 0.949 < 0.975 <= P(k<=3) = 0.996 -> 97.5th pct = 3/4
    ci = bootstrap_ci([0, 0, 0, 1], n_boot=10_000, seed=0)
    assert (ci.mean, ci.lo, ci.hi, ci.n) == (0.25, 0.0, 0.75, 4)
    # two values: the resampled mean is a (1/4), (a+b)/2 (1/2) or b (1/4) -> interval [a, b]
    ci = bootstrap_ci([0.2, 0.6], seed=1)
    assert ci.mean == pytest.approx(0.4) and ci.lo == pytest.approx(0.2) and ci.hi == pytest.approx(0.6)
    # same seed, same answer; NaNs are dropped; one value has no spread; none is NaN with n = 0
    assert bootstrap_ci([1.0, 2.0, 4.0], seed=5) == bootstrap_ci([1.0, np.nan, 2.0, 4.0], seed=5)
    one = bootstrap_ci([0.3])
    assert (one.mean, one.lo, one.hi, one.n) == (0.3, 0.3, 0.3, 1)
    assert bootstrap_ci([]).n == 0 and math.isnan(bootstrap_ci([]).mean)


def test_bootstrap_interval_narrows_with_level():
    x = np.linspace(0, 1, 11)
    wide, narrow = bootstrap_ci(x, level=0.95), bootstrap_ci(x, level=0.5)
    assert wide.lo < narrow.lo < 0.5 < narrow.hi < wide.hi
    with pytest.raises(ConfigError, match="level"):
        bootstrap_ci(x, level=95)


def test_paired_differences_by_hand():
    rows = []
    for prompt, a, b in [("p1", 0.50, 0.60), ("p2", 0.40, 0.60), ("p3", 0.70, 1.00), ("p4", 0.9, None),
                         ("p5", 0.8, np.nan)]:
        rows.append({"label": "A", "metric": "m", "prompt": prompt, "score": a})
        if b is not None:
            rows.append({"label": "B", "metric": "m", "prompt": prompt, "score": b})
    d = paired_differences(pd.DataFrame(rows), "A", seed=0).set_index("label").loc["B"]
    # pairs p1..p3 only (p4 missing in B, p5 NaN): differences 0.1, 0.2, 0.3
    assert d["n"] == 3
    assert d["diff"] == pytest.approx(0.2)
    assert d["baseline_mean"] == pytest.approx((0.5 + 0.4 + 0.7) / 3)
    assert d["mean"] == pytest.approx((0.6 + 0.6 + 1.0) / 3)
    # the resampled mean is 0.1 (all three draws 0.1) with probability 1/27 > 2.5 %, likewise 0.3
    assert d["lo"] == pytest.approx(0.1) and d["hi"] == pytest.approx(0.3)
    with pytest.raises(ConfigError, match="unknown baseline 'C'"):
        paired_differences(pd.DataFrame(rows), "C")


# ----------------------------------------------------------------------------------------------- tables


def test_paper_table_layout_and_values(store, published):
    results = load_sweeps([store])
    t = paper_table(published, "deep_forcing_table1", results, length=30, n_boot=2000)
    df = t.frame()
    # columns: the paper's order with arrows from metric directions, then ours that the paper lacks
    assert list(df.columns) == [*TABLE1_HEADERS, "Temporal Flickering (×100) ↑"]
    # rows: the five 30-s published rows as printed, then one per point of ours
    assert list(df["Model"][:5]) == [m for m, _ in TABLE1_30S]
    for i, (_, values) in enumerate(TABLE1_30S):
        assert list(df.iloc[i, 2:10]) == [f"{v:.2f}" for v in values]
        assert df.iloc[i, 10] == "–"
    dirs = point_dirs(store)
    assert set(df["Model"][5:]) == set(dirs) and len(df) == 5 + len(dirs)
    csv = t.numeric().set_index("model")
    for lab, d in dirs.items():
        s = list(tf_scores(d).values())
        assert len(s) == 2
        mean, lo, hi = 100 * (s[0] + s[1]) / 2, 100 * min(s), 100 * max(s)  # two prompts: CI = [min, max]
        row = df[df["Model"] == lab].iloc[0]
        assert row["Setting"].startswith("ours · tiny · ") and row["Setting"].endswith(" · 2 prompts")
        assert row["Temporal Flickering (×100) ↑"] == f"{mean:.2f} ± {(hi - lo) / 2:.2f}"
        assert row["Dynamic Degree (×100) ↑"] == "–"  # not measured by the tiny sweep
        assert csv.loc[lab, "temporal_flickering_x100"] == pytest.approx(mean)
        assert csv.loc[lab, "temporal_flickering_x100_ci_lo"] == pytest.approx(lo)
        assert csv.loc[lab, "temporal_flickering_x100_ci_hi"] == pytest.approx(hi)
        assert csv.loc[lab, "temporal_flickering_x100_n"] == 2
    md, tex = t.markdown(), t.latex()
    assert "| 30 s · trained-with-sink | Rolling Forcing | 15.79 | 30.71 |" in md
    assert r"Dynamic Degree ($\times$100) $\uparrow$" in tex and r"\toprule" in tex
    assert tex.count(r"\\") == 1 + 5 + len(dirs)  # header + rows


def test_other_tables_and_directions(store, published):
    results = load_sweeps([store])
    t4 = paper_table(published, "Deep Forcing Table 4", results, n_boot=500).frame()
    assert list(t4.columns[2:5]) == ["Dynamic Degree (×100) ↑", "Overall Consistency (×100) ↑",
                                     "Imaging Quality (×100) ↑"]
    assert list(t4["Model"][:3]) == ["SF (Baseline)", "SF + DS", "SF + DS + PC (Deep Forcing)"]
    t6 = paper_table(published, "deep_forcing_table6", results, n_boot=500).frame()
    assert "Latency min (s) ↓" in t6.columns and "Throughput (FPS) ↑" in t6.columns
    assert list(t6.loc[t6["Model"] == "Deep Forcing", "Latency max (s) ↓"]) == ["0.797"]
    with pytest.raises(ConfigError, match="unknown table 'table_99'.*deep_forcing_table1"):
        paper_table(published, "table_99", results)
    with pytest.raises(ConfigError, match="no rows for length 45"):
        paper_table(published, "deep_forcing_table1", results, length=45)


def test_paired_table_against_baseline(store):
    results = load_sweeps([store])
    t = paired_table(results, "rolling_window", n_boot=2000)
    df = t.frame().set_index("Model")
    dirs = point_dirs(store)
    base = tf_scores(dirs["rolling_window"])
    assert "rolling_window" not in df.index and len(df) == len(dirs) - 1
    assert "|Δ drift| Temporal Flickering (×100) ↓" in df.columns
    csv = t.numeric().set_index("model")
    for lab in df.index:
        ours = tf_scores(dirs[lab])
        diffs = [100 * (ours[p] - base[p]) for p in base]
        assert csv.loc[lab, "temporal_flickering_x100"] == pytest.approx(sum(diffs) / 2)
        assert csv.loc[lab, "temporal_flickering_x100_ci_lo"] == pytest.approx(min(diffs))
        assert csv.loc[lab, "temporal_flickering_x100_ci_hi"] == pytest.approx(max(diffs))
        assert df.loc[lab, "Difference"] == "− rolling_window"


def test_loader_reads_topc_and_series(store):
    results = load_sweeps([store])
    dirs = point_dirs(store)
    for lab, d in dirs.items():
        chosen = 0
        for f in (d / "videos").glob("*.json"):
            chosen += sum(len(c["topc"]["augmented_index"]) for c in json.loads(f.read_text())["diagnostics"]
                          if c.get("topc"))
        assert (results.topc["label"] == lab).sum() == chosen
        assert (chosen > 0) == lab.startswith("deep_forcing")  # only compression policies choose Top-C
    # sink sizes as the policy ran: floor(ratio * 21)
    assert {p.label: p.sink_frames for p in results.done} == {
        "rolling_window": 0, "deep_forcing (sink_ratio=0.25)": 5, "deep_forcing (sink_ratio=0.5)": 10}
    clips = results.series[(results.series["kind"] == "clip") & (results.series["label"] == "rolling_window")]
    rec = json.loads(next((dirs["rolling_window"] / "videos").glob("0000_*.json")).read_text())
    hand = [c["score"] for c in rec["metrics"]["dimensions"]["temporal_flickering"]["clips"]]
    assert list(clips[clips["prompt_index"] == 0]["score"]) == pytest.approx(hand)


# ----------------------------------------------------------------------------------------------- failures, bad input


def test_failed_and_incomplete_points_are_listed(store, tmp_path):
    sweep = tmp_path / "demo"
    shutil.copytree(store, sweep)
    failed = PointStore(tmp_path, "demo", "badbadbad0000000")
    failed.start({"key": "badbadbad0000000", "method": "deep_sink", "knobs": {"sink_ratio": 0.9}, "config": {},
                  "metric_versions": {}})
    failed.fail("RuntimeError: CUDA out of memory", "Traceback ...")
    PointStore(tmp_path, "demo", "0ddba11000000000").start(
        {"key": "0ddba11000000000", "method": "streamingllm", "knobs": {}, "config": {}, "metric_versions": {}})
    # one video whose metric failed: left out of its point's mean (n = 1), not counted as zero
    rw = point_dirs(sweep)["rolling_window"]
    first, second = sorted((rw / "videos").glob("*.json"))
    rec = read_record(first, "video")  # a metric that failed when it was scored, stored as the store does
    rec["metrics"]["dimensions"]["temporal_flickering"].update(score=None, error="RuntimeError: decode failed")
    write_record(first, "video", rec)
    kept = json.loads(second.read_text())["metrics"]["dimensions"]["temporal_flickering"]["score"]
    out = tmp_path / "report"
    assert cli([str(sweep), "--out", str(out), "--published-csv", str(PUBLISHED), "--no-figures", "--no-html",
                "--n-boot", "200", "-q"]) == 0
    fails = pd.read_csv(out / "tables" / "failed_points.csv").set_index("key")
    assert fails.loc["badbadbad0000000", "status"] == "failed"
    assert fails.loc["badbadbad0000000", "error"] == "RuntimeError: CUDA out of memory"
    assert fails.loc["0ddba11000000000", "status"] == "incomplete"
    md = (out / "report.md").read_text()
    assert "- demo/badbadbad0000000 (deep_sink (sink_ratio=0.9)): failed: RuntimeError: CUDA out of memory" in md
    ours = pd.read_csv(out / "tables" / "ours.csv").set_index("model")
    assert sorted(ours.index) == sorted(point_dirs(store))  # the finished points only
    assert ours.loc["rolling_window", "temporal_flickering_x100_n"] == 1
    assert ours.loc["rolling_window", "temporal_flickering_x100"] == pytest.approx(100 * kept)
    assert f"| rolling_window | {ours.loc['rolling_window', 'fps']:.2f} ± " in (out / "tables" / "ours.md").read_text()
    assert f"| {100 * kept:.2f} (n=1) |" in (out / "tables" / "ours.md").read_text()


def test_bad_input_gives_one_clear_error(store, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    notsweep = tmp_path / "notsweep"
    (notsweep / "sub").mkdir(parents=True)
    (notsweep / "readme.txt").write_text("x")
    cases = [
        ([str(tmp_path / "missing")], "no such directory"),
        ([str(empty)], "empty sweep folder"),
        ([str(notsweep)], "not a sweep folder"),
        ([str(store.parent)], "results root, not a sweep; pass one or more of its sweeps"),
        ([str(next(store.glob("*/point.json")).parent)], "one point's folder, not a sweep"),
        ([str(store), "--baseline", "full_cache"], "unknown baseline 'full_cache'; choose"),
        ([str(store), "--baseline", "deep_forcing"], "baseline 'deep_forcing' matches 2 points"),
        ([str(store), "--table", "nope"], "unknown table 'nope'"),
        ([str(store), "--published-csv", str(tmp_path / "none.csv")], "published results CSV .* not found"),
    ]
    for argv, msg in cases:
        assert cli([*argv, "--out", str(tmp_path / "out"), "--no-figures", "--no-html", "-q"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1, err
        assert pd.Series([err]).str.contains(msg).item(), (msg, err)
    assert not (tmp_path / "out").exists()  # nothing written on bad input


def test_cli_end_to_end(store, tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "eval.compile", str(store), "--out", str(out), "--baseline", "rolling_window",
         "--published-csv", str(PUBLISHED), "--table", "deep_forcing_table1", "--table", "deep_forcing_table4",
         "--n-boot", "1000"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "### Deep Forcing Table 1: published vs ours" in proc.stdout
    names = sorted(p.name for p in (out / "tables").iterdir())
    assert names == sorted(["failed_points.csv"] + [f"{t}.{e}" for t in ("deep_forcing_table1", "deep_forcing_table4",
                                                                           "ours", "paired_vs_rolling_window")
                                                    for e in ("md", "tex", "csv")])
    figs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figs == ["drift_temporal_flickering.png", "sink_temporal_flickering.png",
                    "topc_deep_forcing_sink_ratio_0_25.png", "topc_deep_forcing_sink_ratio_0_5.png"]
    for f in figs:
        assert (out / "figures" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "index.html").exists()


# ----------------------------------------------------------------------------------------------- where and how


def report_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_default_output_is_the_sweeps_report_folder(store, tmp_path, monkeypatch):
    """Without --out the report goes where run.py's own compile puts it, <results>/reports/<sweep>/."""
    results = tmp_path / "results"
    shutil.copytree(store, results / "demo")
    shutil.copytree(store, results / "demo2")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    quick = ["--published-csv", str(PUBLISHED), "--no-figures", "--no-html", "--n-boot", "200", "-q"]
    assert cli(["../results/demo/", *quick]) == 0
    assert list(cwd.iterdir()) == []
    assert (results / "reports" / "demo" / "report.md").exists()
    assert cli([str(results / "demo"), str(results / "demo2"), *quick]) == 0
    assert sorted(p.name for p in (results / "reports").iterdir()) == ["demo", "demo+demo2"]
    sys.path.insert(0, str(ROOT))
    import run

    monkeypatch.setenv("DEEPFORCING_PUBLISHED", str(PUBLISHED))
    run.compile_sweep(results, "demo")  # what run.py compiles after each point of sweep "demo"
    assert sorted(p.name for p in (results / "reports").iterdir()) == ["demo", "demo+demo2"]
    assert (results / "reports" / "demo" / "index.html").exists()


def test_a_failed_compile_leaves_the_previous_report(store, tmp_path, monkeypatch):
    from deepforcing.compile import compile_report, figures

    out = tmp_path / "report"
    compile_report([store], out, baseline="rolling_window", published_csv=PUBLISHED, n_boot=200, html=False)
    before = report_bytes(out)
    assert "figures/drift_temporal_flickering.png" in before

    def broken(*args, **kwargs):  # the third figure fails, after two were written
        raise RuntimeError("disk full")

    monkeypatch.setattr(figures, "topc_heatmap", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        compile_report([store], out, published_csv=PUBLISHED, n_boot=300)
    assert report_bytes(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no temporary folder left


KILLED = ("import sys; from eval.compile import main; sys.exit(main([sys.argv[1], '--out', sys.argv[2], "
          "'--published-csv', sys.argv[3], '--n-boot', '300', '-q']))")


def test_a_killed_compile_leaves_the_previous_report(store, tmp_path):
    out = tmp_path / "report"
    assert cli([str(store), "--out", str(out), "--published-csv", str(PUBLISHED), "--no-figures", "--no-html",
                "--n-boot", "200", "-q"]) == 0
    before = report_bytes(out)
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(store), str(out), str(PUBLISHED)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(tmp_path.glob(".report.*")):
        time.sleep(0.005)
    proc.kill()  # SIGKILL while the new report is being assembled
    assert proc.wait() == -signal.SIGKILL, "the compile ended before it could be killed"
    assert report_bytes(out) == before
    assert len(list(tmp_path.glob(".report.*.partial"))) == 1  # the dead compile's folder, hidden
    assert cli([str(store), "--out", str(out), "--published-csv", str(PUBLISHED), "--no-html", "--n-boot", "200",
                "-q"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # the next compile removed it
    assert (out / "figures" / "drift_temporal_flickering.png").exists()


def test_an_output_folder_holding_other_files_is_refused(store, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert cli([str(store), "--out", str(out), "--published-csv", str(PUBLISHED), "--no-figures", "-q"]) == 2
    assert "holds more than a report (notes.txt)" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
