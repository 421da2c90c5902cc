"""W&B dashboards of a sweep, read back from the offline runs with W&B's own reader (`wandb leet inspect`):
videos as media, per-prompt drift series, cache curves, flattened settings, the compile run's tables and
artifact, and the workspace spec written beside the offline runs. No network: runs are offline, the one
server is a real socket on 127.0.0.1 that rejects the key."""

import hashlib
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from loopback_servers import unauthorized_server

from deepforcing import dashboards
from deepforcing.loggers import KNOB_KEYS, flat_config, resolved_knobs
from deepforcing.pipeline import PointConfig

ROOT = Path(__file__).resolve().parents[1]
SWEEP = "dash"
DIM = "temporal_flickering"


def clean_env(tmp: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**env, "WANDB_SILENT": "true", "WANDB_DATA_DIR": str(tmp / "wandb-data"), "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1", **extra}


def run_cli(args, out: Path, **env):
    # the plumbing model (random weights): these tests are about what reaches W&B
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args, "model=tiny", f"out_dir={out}"],
                          capture_output=True,
                          text=True, timeout=600, env=clean_env(out, **env), cwd=ROOT)


def inspect(run_dir: Path) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


class Run:
    """One offline run as W&B's reader gives it back."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir
        self.records = inspect(run_dir)
        self.info = next(r["run"] for r in self.records if r.get("type") == "run")
        self.config = {k: v for k, v in self.info["config"]["update"].items() if k != "_wandb"}
        self.visualize = {}
        for r in self.records:
            if r.get("type") == "config":
                for k, v in r["config"]["update"].items():
                    if k.startswith("_wandb.visualize."):
                        self.visualize[k[len("_wandb.visualize."):]] = v
        self.history = [r["history"]["item"] for r in self.records if r.get("type") == "history"]
        self.summary = {}
        for r in self.records:
            if r.get("type") == "summary":
                self.summary.update(r["summary"].get("update") or {})
        self.artifacts = [r["artifact"] for r in self.records if r.get("type") == "artifact"]

    def media(self, kind: str) -> dict[str, dict]:
        """key -> the media's fields, for every history item of type ``kind`` (video-file, table-file...)."""
        out = {}
        for item in self.history:
            for k, v in item.items():
                if k.endswith("._type") and v == kind:
                    key = k[: -len("._type")]
                    out[key] = {f[len(key) + 1:]: x for f, x in item.items() if f.startswith(key + ".")}
        return out

    def table(self, key: str) -> dict:
        return json.loads((self.dir / "files" / self.media("table-file")[key]["path"]).read_text())

    def series(self, key: str, x: str) -> list[tuple[float, float]]:
        return [(h[x], h[key]) for h in self.history if key in h]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def plain(v):
    if hasattr(v, "item"):
        v = v.item()
    return None if isinstance(v, float) and math.isnan(v) else v


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A two-point sink-ratio sweep logged offline, one video per point as media (two prompts each)."""
    out = tmp_path_factory.mktemp("dash")
    r = run_cli(["-m", "sink_ratio=0.25,0.5", "num_frames=12", "metrics=flicker", "segment_seconds=1",
                 "logger=wandb", "logger.mode=offline", "logger.max_videos=1", f"sweep={SWEEP}"], out)
    assert r.returncode == 0, r.stderr[-3000:]
    runs_dir = out / "wandb" / "wandb"
    runs = [Run(d) for d in sorted(runs_dir.glob("offline-run-*"))]
    points = {p.name: p for p in (out / SWEEP).iterdir() if (p / "point.json").exists()}
    return {"out": out, "runs_dir": runs_dir, "log": r.stdout + r.stderr, "points": points,
            "point_runs": [x for x in runs if x.info["job_type"] != "compile"],
            "compile_runs": [x for x in runs if x.info["job_type"] == "compile"]}


def records_of(point_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((point_dir / "videos").glob("*.json"))}


def point_of(sweep, run: Run) -> Path:
    return sweep["points"][run.config["key"]]


def test_one_run_per_point_and_one_compile_run_in_the_sweeps_group(sweep):
    assert len(sweep["point_runs"]) == 2 and len(sweep["compile_runs"]) == 1
    for run in sweep["point_runs"] + sweep["compile_runs"]:
        assert run.info["run_group"] == SWEEP
        assert [r["exit"]["exit_code"] for r in run.records if r.get("type") == "exit"] == [0]
    assert {r.config["key"] for r in sweep["point_runs"]} == set(sweep["points"])


def test_every_run_has_its_settings_flattened(sweep):
    for run in sweep["point_runs"] + sweep["compile_runs"]:
        assert not any(isinstance(v, dict) for v in run.config.values()), run.config
    by_ratio = {}
    for run in sweep["point_runs"]:
        c = run.config
        assert set(KNOB_KEYS) <= set(c)
        assert (c["method"], c["policy"], c["rope_align"], c["compression"], c["budget"], c["recent"]) == (
            "deep_forcing", "participative_compression", "paper", "participative", 16, 4)
        assert c["knobs_given"] == ["sink_ratio"] and c["sweep"] == SWEEP
        assert c["model/kind"] == "tiny" and c["rollout/steps"] == [1000, 750, 500, 250]
        point = json.loads((point_of(sweep, run) / "point.json").read_text())
        assert {k: c[f"policy/{k}"] for k in point["config"]["policy"] if k != "policy"} == {
            k: v for k, v in point["config"]["policy"].items() if k != "policy"}  # as the policy ran
        by_ratio[c["sink_ratio"]] = c["policy/sink"]
    assert by_ratio == {0.25: 5, 0.5: 10}


@pytest.mark.parametrize("preset, expect", [
    ("rolling_window", {"sink_ratio": 0.0, "rope_align": None, "compression": "none", "budget": None, "recent": None}),
    ("deep_sink", {"sink_ratio": round(10 / 21, 4), "rope_align": "paper", "compression": "none", "budget": None,
                   "recent": None}),
    ("pc_random", {"sink_ratio": round(10 / 21, 4), "rope_align": "paper", "compression": "random", "budget": 16,
                   "recent": 4}),
    ("rolling_forcing", {"sink_ratio": None, "rope_align": None, "compression": "none", "budget": None,
                         "recent": None}),
])
def test_knobs_not_given_are_the_presets_own(preset, expect):
    config = PointConfig(method=preset, prompts=("a",)).semantic()
    assert resolved_knobs(config["policy"]) == expect
    flat = flat_config(config, {})
    assert flat["knobs_given"] == [] and not any(isinstance(v, dict) for v in flat.values())
    given = flat_config(config, {"sink_ratio": 0.3}) if preset == "deep_sink" else None
    assert given is None or (given["sink_ratio"], given["knobs_given"]) == (0.3, ["sink_ratio"])


def test_videos_are_the_stores_mp4s_as_playable_media_capped_per_point(sweep):
    import av

    for run in sweep["point_runs"]:
        videos = run.media("video-file")
        first = sorted(records_of(point_of(sweep, run)))[0]
        assert list(videos) == [f"video/{first}"]  # logger.max_videos=1 of two prompts
        v = videos[f"video/{first}"]
        path = run.dir / "files" / v["path"]
        local = point_of(sweep, run) / "videos" / f"{first}.mp4"
        assert path.suffix == ".mp4" and sha256(path) == sha256(local) == v["sha256"]  # no re-encode
        assert v["caption"] == records_of(point_of(sweep, run))[first]["prompt"]
        with av.open(str(path)) as container:
            frames = sum(1 for _ in container.decode(video=0))
        assert frames == records_of(point_of(sweep, run))[first]["frames"] == 45


def test_drift_series_per_video_keyed_by_prompt(sweep):
    for run in sweep["point_runs"]:
        records = records_of(point_of(sweep, run))
        table = run.table("drift")
        assert table["columns"] == ["video", "prompt", "kind", "dimension", "t_s", "start_s", "end_s", "score"]
        rows = [dict(zip(table["columns"], r, strict=True)) for r in table["data"]]
        assert {r["video"] for r in rows} == set(records)  # every video, not only the capped media
        for name, rec in records.items():
            dim = rec["metrics"]["dimensions"][DIM]
            assert rec["prompt"] and {r["prompt"] for r in rows if r["video"] == name} == {rec["prompt"]}
            for kind, spans in (("segment", dim["segments"]), ("clip", dim["clips"])):
                got = [(r["start_s"], r["end_s"], r["t_s"], r["score"]) for r in rows
                       if r["video"] == name and r["kind"] == kind and r["dimension"] == DIM]
                assert got == [(s["start_s"], s["end_s"], (s["start_s"] + s["end_s"]) / 2, s["score"]) for s in spans]
            assert len(dim["segments"]) == 3  # 2.8 s in 1-s segments
        first = sorted(records)[0]
        segs = records[first]["metrics"]["dimensions"][DIM]["segments"]
        assert run.series(f"drift/{DIM}/{first}", "drift/t_s") == [
            ((s["start_s"] + s["end_s"]) / 2, s["score"]) for s in segs]
        assert not any(f"drift/{DIM}/{name}" in h for h in run.history for name in sorted(records)[1:])
        mean = run.series(f"drift/{DIM}/mean", "drift/t_s")
        all_segs = [records[n]["metrics"]["dimensions"][DIM]["segments"] for n in records]
        assert [t for t, _ in mean] == [(s["start_s"] + s["end_s"]) / 2 for s in segs]
        for i, (_, m) in enumerate(mean):
            assert m == pytest.approx(sum(v[i]["score"] for v in all_segs) / len(all_segs))
        plot = run.visualize[f"drift_plot/{DIM}"]["panel_config"]
        assert plot["panelDefId"] == "wandb/line/v0"
        assert plot["fieldSettings"] == {"x": "t_s", "y": "score", "stroke": "video"}
        line = run.table(f"drift_plot/{DIM}_table")
        assert {r[0] for r in line["data"]} == set(records)


def test_chunk_diagnostics_and_cache_memory_are_curves(sweep):
    from deepforcing.model import preset

    cfg = preset("tiny")
    for run in sweep["point_runs"]:
        records = records_of(point_of(sweep, run))
        diags = [d for name in sorted(records) for d in records[name]["diagnostics"]]
        steps = [h["chunk/step"] for h in run.history if "chunk/step" in h]
        assert steps == list(range(len(diags))) == list(range(8))
        assert run.series("chunk/cache_frames", "chunk/step") == [(i, d["cache_frames"]) for i, d in enumerate(diags)]
        mib = run.series("chunk/cache_mib", "chunk/step")
        assert mib == [(i, d["cache_bytes"] / 2**20) for i, d in enumerate(diags)]
        for d in diags:  # raw keys, rotated-key memo and values of every cached token in every layer (float32)
            assert d["cache_bytes"] == d["cache_tokens"] * cfg.num_layers * 3 * cfg.num_heads * cfg.head_dim * 4
            assert d["cache_capacity_bytes"] >= d["cache_bytes"]
        assert [m for _, m in mib] == sorted(m for _, m in mib[:4]) + sorted(m for _, m in mib[4:])  # grows per video


def test_compile_run_carries_the_compiled_tables_figures_and_report(sweep):
    [run] = sweep["compile_runs"]
    assert run.info["job_type"] == "compile" and run.config["sweep"] == SWEEP
    report = sweep["out"] / "reports" / SWEEP
    csvs = sorted((report / "tables").glob("*.csv"))
    assert {p.stem for p in csvs} == {"deep_forcing_table1", "ours", "failed_points"}
    for csv in csvs:
        table = run.table(f"tables/{csv.stem}")
        df = pd.read_csv(csv)
        assert table["columns"] == list(df.columns)
        assert table["data"] == [[plain(v) for v in row] for row in df.itertuples(index=False)], csv.name
    paper = run.table("paper/deep_forcing_table1")
    assert paper["columns"][:3] == ["Setting", "Model", "Source"]
    sources = [r[2] for r in paper["data"]]
    assert "published" in sources and sources.count("ours") == 2
    ours = [r for r in paper["data"] if r[2] == "ours"]
    col = next(i for i, c in enumerate(paper["columns"]) if c.startswith("Temporal Flickering"))
    assert all(" ± " in r[col] for r in ours)  # mean ± half-width of the bootstrap interval
    images = run.media("image-file")
    figures = sorted((report / "figures").glob("*.png"))
    assert figures and set(images) == {f"figures/{p.stem}" for p in figures}
    for p in figures:
        assert sha256(run.dir / "files" / images[f"figures/{p.stem}"]["path"]) == sha256(p)
    [art] = [a for a in run.artifacts if a["type"] == "report"]
    assert art["name"] == f"report-{SWEEP}"
    files = {p.relative_to(report).as_posix(): p.stat().st_size for p in report.rglob("*") if p.is_file()}
    assert {c["path"]: int(c["size"]) for c in art["manifest"]["contents"]} == files


def _panels(view: dict) -> list[tuple[str, dict]]:
    return [(s["name"], p) for s in view["spec"]["section"]["panelBankConfig"]["sections"] for p in s["panels"]]


def check_workspace(view: dict, sweep: str, videos: list[str], metric: str = DIM) -> None:
    """The panels the issue names, in a view spec keyed to the sweep's group."""
    [runset] = view["spec"]["section"]["runSets"]
    assert {"key": {"section": "run", "name": "group"}, "op": "=", "value": sweep, "disabled": False} in \
        runset["filters"]["filters"]
    panels = _panels(view)
    by_type: dict[str, list[dict]] = {}
    for _, p in panels:
        by_type.setdefault(p["viewType"], []).append(p)
    tables = [json.dumps(p["config"]) for p in by_type["Weave"]]
    assert any('"val": "paper/deep_forcing_table1"' in t for t in tables)  # the paper table
    lines = [p["config"] for p in by_type["Run History Line Plot"]]
    assert {"xAxis": "drift/t_s", "metrics": [f"drift/{metric}/mean"], "groupBy": "method.value"}.items() <= \
        next(c for c in lines if c["metrics"] == [f"drift/{metric}/mean"]).items()  # drift grouped by policy
    for v in videos:
        assert any(c["metrics"] == [f"drift/{metric}/{v}"] for c in lines)  # drift per prompt
    scatter = [p["config"] for p in by_type["Scatter Plot"]]
    assert {"xAxis": "config:sink_ratio.value", "yAxis": f"summary:{metric}"} in [
        {k: c[k] for k in ("xAxis", "yAxis")} for c in scatter]  # metric vs sink ratio
    [pc] = by_type["Parallel Coordinates Plot"]
    assert [c["accessor"] for c in pc["config"]["columns"]][:5] == [f"config:{k}.value" for k in KNOB_KEYS]
    media = [p["config"] for p in by_type["Media Browser"]]
    for v in videos:  # side by side: one panel per prompt, one column per run
        assert {"mediaKeys": [f"video/{v}"], "mode": "grid", "gridSettings": {"xAxis": "run"}}.items() <= \
            next(c for c in media if c["mediaKeys"] == [f"video/{v}"]).items()
    assert any(c["metrics"] == ["chunk/cache_mib"] for c in lines)


def test_workspace_spec_is_written_beside_the_offline_runs(sweep):
    entry = json.loads((sweep["runs_dir"] / "deepforcing" / SWEEP / "workspace.json").read_text())
    assert entry["saved"] is None and "error" not in entry
    first = sorted(records_of(next(iter(sweep["points"].values()))))[0]
    assert entry["recipe"]["videos"] == [[first, "A red fox trots through fresh snow in a birch forest at dawn."]]
    check_workspace(entry["view"], SWEEP, [first])
    recorded = dashboards.registered_runs(sweep["runs_dir"], SWEEP)
    runs = sweep["point_runs"] + sweep["compile_runs"]
    assert sorted(r["dir"] for r in recorded) == sorted(x.dir.name for x in runs)
    assert "python -m eval.wandb publish dash" in sweep["log"]


def test_workspace_is_built_without_a_network(monkeypatch):
    def refuse(self, address):
        raise AssertionError(f"network access to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    recipe = dashboards.Recipe(sweep="ablation", project="deepforcing", paper_tables=["deep_forcing_table1", "ours"],
                               metrics=["imaging_quality", DIM], figures=["drift_imaging_quality"],
                               videos=[["0000_fox", "a fox"], ["0001_sea", "the sea"]])
    view = dashboards.workspace_spec(recipe)
    assert view["displayName"] == "deepforcing sweep ablation" and view["project"] == "deepforcing"
    for metric in recipe.metrics:
        check_workspace(view, "ablation", ["0000_fox", "0001_sea"], metric)
    assert "Report figures" in dashboards.describe(recipe)


def test_publish_dry_run_then_a_rejected_upload_loses_nothing(sweep, tmp_path):
    runs_dir = sweep["runs_dir"]
    kept = [*runs_dir.rglob("*.wandb"), *(p for p in (runs_dir / "deepforcing").rglob("*") if p.is_file())]
    before = {p: sha256(p) for p in kept}
    cmd = [sys.executable, "-m", "eval.wandb", "publish", str(sweep["out"] / SWEEP)]
    r = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env=clean_env(tmp_path, WANDB_MODE="offline"))
    assert r.returncode == 0, r.stderr
    assert "3 run(s) recorded, 3 offline, 3 to upload" in r.stdout
    assert "Would sync 3 run(s)" in r.stderr
    for section in ("Paper tables", "Drift over time, grouped by policy", "Metric vs sink ratio",
                    "Videos side by side"):
        assert section in r.stdout
    with unauthorized_server() as url:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                           env=clean_env(tmp_path, WANDB_API_KEY="0123456789" * 4, WANDB_BASE_URL=url))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "3 of 3 run(s) not uploaded); nothing is lost" in r.stdout
    assert not list(runs_dir.rglob("*.wandb.synced"))
    assert list(runs_dir.glob("debug-cli.*.log"))  # wandb sync's own log lands beside the runs, not in the cwd
    assert {p: sha256(p) for p in before} == before  # the runs and the spec are as they were
    assert json.loads((runs_dir / "deepforcing" / SWEEP / "workspace.json").read_text())["saved"] is None
    r = subprocess.run([sys.executable, "-m", "eval.wandb", "publish", "nosuch", "--out-dir", str(sweep["out"])],
                       capture_output=True, text=True, timeout=120, cwd=ROOT, env=clean_env(tmp_path))
    assert r.returncode == 2 and f"recorded sweeps: {SWEEP}" in r.stderr


def test_a_wandb_failure_costs_no_local_result(tmp_path):
    """logger.dir is a file: every W&B step fails; the points, the report and the exit status do not."""
    (tmp_path / "not-a-dir").write_text("")
    r = run_cli(["num_frames=12", "metrics=flicker", "logger=wandb", "logger.mode=offline",
                 f"logger.dir={tmp_path / 'not-a-dir'}"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    log = r.stdout + r.stderr
    assert "W&B init failed" in log and "W&B: logging the compiled report failed" in log
    assert "the sweep's workspace could not be built" in log
    [point] = [p for p in (tmp_path / "default").iterdir() if (p / "summary.json").exists()]
    assert len(list((point / "videos").glob("*.mp4"))) == 2
    assert (tmp_path / "reports" / "default" / "report.md").exists()
