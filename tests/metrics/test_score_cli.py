"""``python -m eval.score``: exit status, default output folder, the table's aggregation (against vbench's
own run score), and the per-frame / per-pair details in the JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from metrics_helpers import synthetic_frames

from deepforcing.metrics.config import ClipProtocol, DriftConfig, EvalConfig
from deepforcing.metrics.reference import vbench_run
from deepforcing.metrics.report import aggregate, table
from deepforcing.metrics.scorer import Scorer
from deepforcing.metrics.video import write_lossless

ROOT = Path(__file__).resolve().parents[2]


def _run(args, cwd):
    env_path = str(ROOT)
    import os

    env = {**os.environ, "PYTHONPATH": env_path + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "eval.score", *args], capture_output=True, text=True, cwd=cwd,
                          env=env)


def test_exit_zero_and_default_out_under_results(videos, tmp_path):
    p = _run([str(videos["small"]), str(videos["long"]), "--dimensions", "temporal_flickering", "--no-progress"],
             tmp_path)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "results" / "scores" / Path(videos["small"]).parent.name
    assert (out / "table.txt").is_file() and (out / "long.json").is_file()
    assert f"written to {Path('results') / 'scores' / out.name}" in p.stderr
    assert not (tmp_path / "eval_results").exists()


def test_exit_nonzero_when_a_dimension_errors(videos, tmp_path):
    # a one-frame video cannot be scored for flickering (a dimension error, the video itself decodes)
    p = _run([str(videos["small"]), str(videos["one_frame"]), "--dimensions", "temporal_flickering",
              "--no-progress", "--out", str(tmp_path / "o")], tmp_path)
    assert p.returncode == 1, p.stderr
    r = json.loads((tmp_path / "o" / "one_frame.json").read_text())
    assert r["error"] is None and r["dimensions"]["temporal_flickering"]["error"]


@pytest.fixture(scope="module")
def uneven_videos(tmp_path_factory) -> list[str]:
    """Videos of different lengths, so weighting by frame pairs and the plain mean differ."""
    d = tmp_path_factory.mktemp("agg")
    return [str(write_lossless(d / "a.mp4", synthetic_frames(16, 128, 160, 0), 8)),
            str(write_lossless(d / "b.mp4", synthetic_frames(5, 128, 160, 1, speed=9), 8)),
            str(write_lossless(d / "c.mp4", synthetic_frames(9, 128, 160, 2, speed=5), 8))]


@pytest.mark.parametrize("dim", ["background_consistency", "temporal_flickering"])
def test_vbench_aggregation_equals_vbench_run_score(dim, uneven_videos, random_weights):
    files = random_weights.files(dim)
    run, per_video = vbench_run(dim, uneven_videos, files)
    sc = Scorer(EvalConfig(dimensions=(dim,), weights={k: str(v) for k, v in files.items()},
                           clips=ClipProtocol(enabled=False), drift=DriftConfig(enabled=False), progress=False))
    res = [sc.score_file(v) for v in uneven_videos]
    vb, n = aggregate(res, dim, "vbench")
    plain, _ = aggregate(res, dim, "mean")
    assert n == 3
    assert abs(vb - run) <= 1e-7, (vb, run)
    assert abs(plain - sum(per_video) / len(per_video)) <= 1e-7
    if dim == "background_consistency":  # the two aggregations really differ here
        assert abs(plain - run) > 1e-6
    text = table(res, [dim], None, aggregation="vbench")
    assert "weighted by frame pairs" in text.splitlines()[0] and "mean (vbench)" in text
    assert "plain mean over videos" in table(res, [dim], None).splitlines()[0]


def test_weights_check_names_the_dino_backend(tmp_path):
    """The backend eval.weights reports is the one SubjectConsistency builds (timm without a clone, the
    clone's torch.hub model when <cache>/dino_model/facebookresearch_dino_main has a hubconf.py)."""
    from deepforcing.metrics.weight_files import dino_backend

    def check(cache):
        out = subprocess.run([sys.executable, "-m", "eval.weights", "check", "--cache-dir", str(cache)],
                             capture_output=True, text=True, check=True, cwd=ROOT).stdout
        return [x for x in out.splitlines() if "DINO backend" in x][0]

    assert "backend: timm" in check(tmp_path) and dino_backend(tmp_path) == ("timm", None)
    clone = tmp_path / "dino_model" / "facebookresearch_dino_main"
    clone.mkdir(parents=True)
    (clone / "hubconf.py").write_text("")
    line = check(tmp_path)
    assert "backend: dino_repo" in line and str(clone) in line
    assert dino_backend(tmp_path) == ("dino_repo", str(clone))


@pytest.mark.parametrize("streaming", [False, True])
def test_details_rebuild_each_clip_score(streaming, random_weights, tmp_path):
    """The per-frame / per-pair values in the JSON are what the scores are made of: each clip's score follows
    from them by the dimension's formula (and VBench's rule for dynamic degree), whole-video and streaming."""
    from deepforcing.metrics.scorer import StreamingScorer
    from deepforcing.metrics.video import decode

    dims = ("imaging_quality", "motion_smoothness", "dynamic_degree", "aesthetic_quality")
    weights = {k: str(v) for d in dims for k, v in random_weights.files(d).items()}
    cfg = EvalConfig(dimensions=dims, weights=weights, drift=DriftConfig(enabled=False), progress=False,
                     details=True)
    sc = Scorer(cfg)
    v = write_lossless(tmp_path / "v.mp4", synthetic_frames(21, 128, 160, 0, speed=9), 8)  # 2-s clips: 16 + 16
    if streaming:
        frames = decode(v).frames
        st = StreamingScorer(sc, fps=8, num_frames=len(frames))
        for k in range(0, len(frames), 6):
            st.push(frames[k : k + 6])
        r = st.finalize()
    else:
        r = sc.score_file(str(v))
    for d in dims:
        assert r.dimensions[d].error is None and len(r.dimensions[d].clips) == 2
    for c in r.dimensions["imaging_quality"].clips:
        assert len(c["frame_mos"]) == c["end_frame"] - c["start_frame"]
        assert abs(sum(c["frame_mos"]) / len(c["frame_mos"]) / 100 - c["score"]) < 1e-9
    for c in r.dimensions["aesthetic_quality"].clips:
        assert abs(sum(c["frame_aesthetic"]) / len(c["frame_aesthetic"]) - c["score"]) < 1e-6
    for c in r.dimensions["motion_smoothness"].clips:
        assert c["amt_frames"] == list(range(c["start_frame"] + 1, c["end_frame"] - 1, 2))
        e = c["amt_abs_error"]
        assert abs((255 - sum(e) / len(e)) / 255 - c["score"]) < 1e-9
    for c in r.dimensions["dynamic_degree"].clips:
        known = [s for s in c["flow_top5"] if s is not None]  # RAFT stops once the count is decided
        assert c["flow_pairs_computed"] == len(known) >= 1
        n_over = sum(s > c["flow_threshold"] for s in known)
        assert c["flow_threshold"] == 6.0 * 128 / 256 and len(c["flow_pairs"]) == len(c["flow_top5"]) == 15
        assert float(n_over >= c["flow_count_needed"]) == c["score"]
    json.dumps(r.to_dict(), allow_nan=False)


def test_all_flow_pairs_option_computes_every_pair_with_the_same_score(random_weights, tmp_path):
    v = write_lossless(tmp_path / "v.mp4", synthetic_frames(17, 128, 128, 1, speed=9), 8)
    raft = random_weights.files("dynamic_degree")["raft_things"]
    out = {}
    for flag in ([], ["--all-flow-pairs"]):
        o = tmp_path / ("all" if flag else "early")
        p = _run([str(v), "--dimensions", "dynamic_degree", "--weight", f"raft_things={raft}", "--no-clips",
                  "--no-drift", "--no-progress", "--out", str(o), *flag], tmp_path)
        assert p.returncode == 0, p.stderr
        out[bool(flag)] = json.loads((o / "v.json").read_text())["dimensions"]["dynamic_degree"]
    (early,), (full,) = out[False]["clips"], out[True]["clips"]
    assert early["score"] == full["score"] == out[False]["score"] == out[True]["score"]
    assert full["flow_pairs_computed"] == len(full["flow_pairs"]) == 16 and None not in full["flow_top5"]
    assert early["flow_pairs_computed"] < 16 and None in early["flow_top5"]
