"""Bad input for weight-bearing dimensions: small frames, odd sizes, missing prompts, corrupt weights."""

from __future__ import annotations

import json

from deepforcing.metrics.config import ClipProtocol, DriftConfig, EvalConfig
from deepforcing.metrics.report import table
from deepforcing.metrics.scorer import Scorer


def _scorer(random_weights, dims, **kw):
    w = {k: str(v) for d in dims for k, v in random_weights.files(d).items()}
    return Scorer(EvalConfig(dimensions=tuple(dims), weights=w, drift=DriftConfig(enabled=False),
                             clips=ClipProtocol(enabled=False), progress=False, **kw))


def test_frames_below_128px_are_an_error_not_nan(videos, random_weights):
    # with the released checkpoints vbench's RAFT and AMT give NaN flow below 128 px a side, so we refuse
    # such frames with a message instead of reporting a number
    sc = _scorer(random_weights, ["motion_smoothness", "dynamic_degree", "imaging_quality"])
    r = sc.score_file(str(videos["tiny"]))
    for d in ("motion_smoothness", "dynamic_degree"):
        assert r.dimensions[d].score is None
        assert "64x64" in r.dimensions[d].error and "128 px" in r.dimensions[d].error
    assert r.dimensions["imaging_quality"].error is None  # other dimensions still scored
    text = table([r], ["motion_smoothness", "dynamic_degree", "imaging_quality"])
    assert "nan" not in text.lower().split("errors:")[0] and "128 px" in text
    json.dumps(r.to_dict(), allow_nan=False)  # no NaN anywhere in the JSON


def test_odd_sizes_score(videos, random_weights):
    sc = _scorer(random_weights, ["motion_smoothness", "background_consistency"])
    r = sc.score_file(str(videos["odd"]))  # 131 x 157
    for d in r.dimensions.values():
        assert d.error is None and 0 < d.score <= 1


def test_missing_prompt_is_a_per_video_error(videos, random_weights):
    sc = _scorer(random_weights, ["clip_score", "temporal_flickering"])
    r = sc.score_file(str(videos["small"]), prompt=None)
    assert "no prompt" in r.dimensions["clip_score"].error and "--prompts" in r.dimensions["clip_score"].error
    assert r.dimensions["temporal_flickering"].error is None
    assert sc.score_file(str(videos["small"]), prompt="a red square").dimensions["clip_score"].error is None


def test_corrupt_weight_file_skips_dimension(tmp_path, videos):
    bad = tmp_path / "amt-s.pth"
    bad.write_bytes(b"not a checkpoint")
    sc = Scorer(EvalConfig(dimensions=("motion_smoothness", "temporal_flickering"), weights={"amt_s": str(bad)},
                           progress=False))
    assert "motion_smoothness" in sc.skipped and str(bad) in sc.skipped["motion_smoothness"]
    assert sc.score_file(str(videos["small"])).score("temporal_flickering") is not None
