"""VBench-Long's static-clip filter for temporal flickering.

Reference: ``vbench2_beta_long.static_filter.StaticFilter`` of vbench 0.1.5 itself (imported with
``import_vbench_long``, which stands in for its unused, unimportable dependencies), run with vbench's own
``infer`` on each clip file.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metrics_helpers import import_vbench_long, synthetic_frames

from deepforcing.metrics.config import ClipProtocol, DriftConfig, EvalConfig
from deepforcing.metrics.dims.base import VideoContext
from deepforcing.metrics.dims.flicker import is_static, static_pairs
from deepforcing.metrics.protocol import Span
from deepforcing.metrics.reference import vbench_scores
from deepforcing.metrics.scorer import Scorer
from deepforcing.metrics.video import write_lossless

TOL = 1e-5


# -- the rule, by hand -------------------------------------------------------------------------------
def test_static_pairs_order():
    assert static_pairs(Span(4, 8)) == [(4, 5), (5, 6), (6, 7), (4, 7), (7, 4)]


@pytest.mark.parametrize(
    "scores, hw, n, expected",
    [
        # 256 px: thres = 3.0; 16 frames: count = 2 -> up to 2 consecutive pairs above thres are allowed
        ([3.1, 3.2] + [1.0] * 13 + [0.0, 0.0], (256, 320), 16, True),
        ([3.1, 3.2, 3.3] + [1.0] * 12 + [0.0, 0.0], (256, 320), 16, False),
        ([3.0] * 15 + [0.0, 0.0], (256, 320), 16, True),  # "above" is strict
        # wrap pairs: limit 2 * count * thres = 12.0
        ([0.0] * 15 + [12.0, 11.0], (256, 320), 16, True),
        ([0.0] * 15 + [0.0, 12.01], (256, 320), 16, False),
        # 128 px: thres = 1.5; 8 frames: count = 1; wrap limit 3.0
        ([1.6] + [0.0] * 6 + [2.9, 0.0], (128, 128), 8, True),
        ([1.6, 1.6] + [0.0] * 5 + [0.0, 0.0], (128, 128), 8, False),
        ([0.0] * 7 + [3.1, 0.0], (128, 128), 8, False),
        # 4 frames: count = round(0.5) = 0 (banker's rounding, as Python's round): one pair above thres fails,
        # and the wrap limit is 0, so any wrap-around flow fails
        ([1.4, 1.4, 1.4, 0.0, 0.0], (128, 128), 4, True),
        ([1.6, 0.0, 0.0, 0.0, 0.0], (128, 128), 4, False),
        ([0.0, 0.0, 0.0, 0.1, 0.0], (128, 128), 4, False),
    ],
)
def test_is_static_rule(scores, hw, n, expected):
    assert is_static(scores, hw, n) is expected


def _scorer(static: bool, **clip_kw) -> Scorer:
    return Scorer(EvalConfig(dimensions=("temporal_flickering",), progress=False, drift=DriftConfig(enabled=False),
                             clips=ClipProtocol(static_filter=static, **clip_kw), weights={"raft_things": "/nowhere"}
                             if static else {}))


def test_static_filter_needs_raft_and_says_so():
    sc = _scorer(True)
    assert "temporal_flickering" not in sc.metrics
    msg = sc.skipped["temporal_flickering"]
    assert "/nowhere" in msg and "raft" in msg.lower()
    assert "temporal_flickering" in _scorer(False).metrics  # without the filter no weights are needed


def test_used_clips_and_cap_by_hand(random_weights):
    """Aggregation over kept clips, from hand-set pair scores: 40 frames at 8 fps -> clips [0,16) [16,32)
    [24,40); clip 2 has three pairs above thres (not static), clips 1 and 3 none."""
    files = random_weights.files("dynamic_degree")
    frames = torch.from_numpy(synthetic_frames(40, 128, 128, 7, speed=4))

    def run(max_clips):
        sc = Scorer(EvalConfig(dimensions=("temporal_flickering",), progress=False, drift=DriftConfig(enabled=False),
                               clips=ClipProtocol(static_filter=True, static_max_clips=max_clips),
                               weights={"raft_things": str(files["raft_things"])}))
        ctx = VideoContext(frames, 8.0)
        stats = ctx.cache.setdefault("raft", {})
        for c in (Span(0, 16), Span(16, 32), Span(24, 40)):
            for p in static_pairs(c):
                stats[p] = {"top5": 0.0, "top2": 0.5}
        for p in [(17, 18), (18, 19), (19, 20)]:  # inside clip 2 only
            stats[p] = {"top5": 9.0, "top2": 9.0}
        return sc.score_video(_video(frames), ctx=ctx).dimensions["temporal_flickering"]

    plain = Scorer(EvalConfig(dimensions=("temporal_flickering",), progress=False, drift=DriftConfig(enabled=False)))
    clip_scores = [c["score"] for c in plain.score_frames(frames, 8.0).dimensions["temporal_flickering"].clips]
    assert len(clip_scores) == 3 and len(set(clip_scores)) == 3
    r = run(5)
    assert [c.get("used", True) for c in r.clips] == [True, False, True]
    assert r.score == pytest.approx((clip_scores[0] + clip_scores[2]) / 2, abs=1e-12)
    r1 = run(1)
    assert [c.get("used", True) for c in r1.clips] == [True, False, False]
    assert r1.score == pytest.approx(clip_scores[0], abs=1e-12)


def _video(frames):
    from deepforcing.metrics.video import Video

    return Video(frames, 8.0, "<memory>")


# -- against vbench's own StaticFilter ------------------------------------------------------------------
@pytest.fixture
def vbench_static_filter(monkeypatch):
    import_vbench_long(monkeypatch)
    import vbench2_beta_long.static_filter as sfm

    monkeypatch.setattr(sfm, "DEVICE", "cpu")  # the module sends frames to 'cuda' unconditionally
    return sfm


def _static_filter(sfm, weights):
    from easydict import EasyDict

    seen = []

    class Spy(sfm.StaticFilter):
        def check_static(self, score_list):
            seen.append([float(s) for s in score_list])
            return super().check_static(score_list)

    args = EasyDict(model=str(weights), small=False, mixed_precision=False, alternate_corr=False)
    return Spy(args, "cpu"), seen


@pytest.mark.slow
def test_static_filter_matches_vbench_long(vbench_static_filter, random_weights, tmp_path):
    """Per-pair top-2 % flow scores and each clip's decision equal vbench's on the clip files; with random
    RAFT weights (flow of ~10 px) no clip is static and the video gets a clear error, never a number. A copy
    whose flow head is zeroed gives zero flow: every clip is static and the score is the mean of vbench's
    temporal flickering over the clips."""
    raft = random_weights.path("raft_things")
    sd = torch.load(raft, map_location="cpu")
    still = tmp_path / "raft_zero_flow.pth"
    torch.save({k: (v * 0 if "flow_head.conv2" in k else v) for k, v in sd.items()}, still)

    fps = 4  # 2-s clips of 8 frames keep this test short
    video = write_lossless(tmp_path / "v.mp4", synthetic_frames(12, 128, 128, 5, speed=3), fps)
    frames = torch.from_numpy(synthetic_frames(12, 128, 128, 5, speed=3))
    clips = [Span(0, 8), Span(4, 12)]
    clip_files = [str(write_lossless(tmp_path / f"v_{k:03d}.mp4", frames[c.start:c.end].numpy(), fps))
                  for k, c in enumerate(clips)]

    for weights, expect_static in ((raft, False), (still, True)):
        ref, seen = _static_filter(vbench_static_filter, weights)
        ref_static = [bool(ref.infer(p)) for p in clip_files]
        assert ref_static == [expect_static] * 2
        sc = Scorer(EvalConfig(dimensions=("temporal_flickering",), progress=False, drift=DriftConfig(enabled=False),
                               clips=ClipProtocol(static_filter=True), weights={"raft_things": str(weights)}))
        from deepforcing.metrics.video import decode

        v = decode(str(video))
        ctx = VideoContext(v.frames, v.fps)
        r = sc.score_video(v, ctx=ctx).dimensions["temporal_flickering"]
        ours_pairs = [[ctx.cache["raft"][p]["top2"] for p in static_pairs(c)] for c in clips]
        diff = max(abs(a - b) for o, s in zip(ours_pairs, seen, strict=True) for a, b in zip(o, s, strict=True))
        print(f"static filter ({weights.name}): max |pair score diff| = {diff:.3g}; vbench static = {ref_static}")
        assert diff <= 1e-4 * max(1.0, max(map(max, seen)))
        assert [is_static(o, ctx.hw, c.length) for o, c in zip(ours_pairs, clips, strict=True)] == ref_static
        if expect_static:
            assert r.error is None
            want = np.mean(vbench_scores("temporal_flickering", clip_files, {}))
            assert abs(r.score - want) <= TOL
        else:
            assert r.score is None and "static filter" in r.error
