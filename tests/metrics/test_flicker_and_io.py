"""Temporal flickering (no weights) against vbench's own function; decoding; bad input; the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from metrics_helpers import synthetic_frames

from deepforcing.metrics.config import ClipProtocol, EvalConfig
from deepforcing.metrics.reference import long_reference, vbench_scores
from deepforcing.metrics.scorer import Scorer
from deepforcing.metrics.video import VideoError, decode, to_uint8_frames

FLICK = ("temporal_flickering",)


def _yuv420p_mp4(path, frames, fps):
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.height, s.width, s.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return str(path)


def test_decode_matches_vbench_readers(videos, tmp_path):
    """Both backends (decord, the default, and PyAV, the reference) == decord as vbench.utils.load_video
    reads == OpenCV (vbench's cv2 readers), on lossless and on lossy yuv420p H.264."""
    from vbench.temporal_flickering import get_frames
    from vbench.utils import load_video

    lossy = _yuv420p_mp4(tmp_path / "lossy.mp4", synthetic_frames(9, 64, 96, 2, speed=5), 8)
    for path in (str(videos["small"]), str(videos["odd"]), lossy):
        ref = load_video(path).permute(0, 2, 3, 1).to(torch.uint8)
        cv = np.stack(get_frames(path))[..., ::-1]  # BGR -> RGB
        for backend in ("decord", "pyav"):
            v = decode(path, backend=backend)
            assert torch.equal(v.frames, ref), (path, backend)
            assert np.array_equal(v.frames.numpy(), cv), (path, backend)
    assert decode(videos["small"]).fps == 8.0 == decode(videos["small"], backend="pyav").fps
    assert decode(lossy).fps == 8.0
    with pytest.raises(ValueError, match="backend"):
        decode(lossy, backend="cv2")


def test_flicker_equals_vbench_single_clip(videos):
    paths = [str(videos["small"]), str(videos["small2"]), str(videos["odd"])]
    ref = vbench_scores("temporal_flickering", paths, {})
    sc = Scorer(EvalConfig(dimensions=FLICK, clips=ClipProtocol(enabled=False), progress=False))
    ours = [sc.score_file(p).score("temporal_flickering") for p in paths]
    for a, b in zip(ours, ref, strict=False):
        assert abs(a - b) <= 1e-5, (a, b)
    assert len({round(x, 6) for x in ref}) == 3  # the three videos really differ


def test_flicker_long_protocol_equals_vbench_clips(videos):
    """44 frames at 8 fps, 2-s clips: [0,16) [16,32) [28,44) (last padded backwards), mean of clips."""
    long_ref, clip_ref = long_reference("temporal_flickering", str(videos["long"]), {}, 2.0)
    r = Scorer(EvalConfig(dimensions=FLICK, progress=False)).score_file(str(videos["long"]))
    d = r.dimensions["temporal_flickering"]
    assert [(c["start_frame"], c["end_frame"]) for c in d.clips] == [(0, 16), (16, 32), (28, 44)]
    assert len(clip_ref) == 3
    for c, ref in zip(d.clips, clip_ref, strict=False):
        assert abs(c["score"] - ref) <= 1e-5
    assert abs(d.score - long_ref) <= 1e-5
    assert abs(d.score - np.mean(clip_ref)) <= 1e-5


def test_flicker_hand_computed():
    # constant frames except frame 2 is +10 everywhere: pair diffs (0, 10, 10) -> mean 20/3
    f = np.full((4, 8, 8, 3), 100, np.uint8)
    f[2] += 10
    sc = Scorer(EvalConfig(dimensions=FLICK, clips=ClipProtocol(enabled=False), progress=False))
    r = sc.score_frames(f, fps=8)
    assert r.score("temporal_flickering") == pytest.approx((255 - 20 / 3) / 255, abs=1e-9)


def test_frame_layouts_and_float_input():
    f = synthetic_frames(6, 32, 40)
    t = torch.from_numpy(f)
    assert torch.equal(to_uint8_frames(t.permute(0, 3, 1, 2), "TCHW"), t)
    assert torch.equal(to_uint8_frames(t.float() / 255, "THWC"), t)
    assert torch.equal(to_uint8_frames(t.permute(0, 3, 1, 2).float() / 127.5 - 1, "TCHW-pm1"), t)
    with pytest.raises(ValueError, match="3 colour channels"):
        to_uint8_frames(t.permute(0, 3, 1, 2), "THWC")


@pytest.mark.parametrize("key,msg", [("corrupt", "cannot decode"), ("empty", "cannot decode|zero frames"),
                                     ("missing", "no such file")])
def test_bad_files_are_per_video_errors(videos, key, msg, tmp_path):
    path = str(videos.get(key, tmp_path / "nope.mp4"))
    with pytest.raises(VideoError, match=msg):
        decode(path)
    sc = Scorer(EvalConfig(dimensions=FLICK, progress=False))
    r = sc.score_file(path)
    assert r.error and r.dimensions == {}
    ok = sc.score_file(str(videos["small"]))  # the next video is still scored
    assert ok.error is None and ok.score("temporal_flickering") is not None


def test_one_frame_video_is_a_dimension_error(videos):
    r = Scorer(EvalConfig(dimensions=FLICK, progress=False)).score_file(str(videos["one_frame"]))
    d = r.dimensions["temporal_flickering"]
    assert d.score is None and "needs at least 2 frames" in d.error


def test_missing_weights_skip_with_one_message(tmp_path, videos):
    sc = Scorer(EvalConfig(dimensions=("temporal_flickering", "imaging_quality"), cache_dir=str(tmp_path),
                           progress=False))
    assert set(sc.metrics) == {"temporal_flickering"}
    msg = sc.skipped["imaging_quality"]
    assert "musiq_spaq_ckpt-358bb6af.pth" in msg and str(tmp_path) in msg and "https://" in msg
    r = sc.score_file(str(videos["small"]))
    assert r.score("temporal_flickering") is not None and "imaging_quality" in r.skipped


def test_weights_check_cli(tmp_path, random_weights):
    out = subprocess.run([sys.executable, "-m", "eval.weights", "check", "--cache-dir", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    assert "MISSING" in out and "musiq_spaq_ckpt-358bb6af.pth" in out
    assert "ok      temporal_flickering" in out
    random_weights.path("amt_s")
    out = subprocess.run([sys.executable, "-m", "eval.weights", "check", "--cache-dir", str(random_weights.root)],
                         capture_output=True, text=True, check=True).stdout
    line = [x for x in out.splitlines() if "motion_smoothness" in x][0]
    assert line.strip().startswith("ok")


def test_score_cli_writes_json_and_table(videos, tmp_path):
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "eval.score", str(videos["small"]), str(videos["corrupt"]), str(videos["long"]),
           "--out", str(out), "--dimensions", "temporal_flickering", "overall_consistency",
           "--cache-dir", str(tmp_path / "empty_cache"), "--no-progress"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 1, p.stderr  # a corrupt file and a skipped dimension: a script must be able to tell
    assert "overall_consistency: skipped" in p.stderr
    res = {json.loads(line)["video"]: json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()}
    assert len(res) == 3
    long = json.loads((out / "long.json").read_text())
    d = long["dimensions"]["temporal_flickering"]
    assert len(d["clips"]) == 3 and d["segments"] and "abs_delta" in d["drift"]
    bad = json.loads((out / "corrupt.json").read_text())
    assert "cannot decode" in bad["error"]
    table = (out / "table.txt").read_text()
    assert "nan" not in table.lower() and "error" in table and "long.mp4" in table
