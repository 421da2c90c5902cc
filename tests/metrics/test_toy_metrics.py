"""Toy-world metrics and chunk-boundary flicker against the world's ground truth and hand-built videos."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deepforcing.metrics import SPECS, TOY_METRICS
from deepforcing.metrics.config import DriftConfig, EvalConfig
from deepforcing.metrics.dims.seams import boundary_starts
from deepforcing.metrics.scorer import Scorer, StreamingScorer
from deepforcing.toyworld.world import BACKGROUNDS, FPS, OBJECT_SIZE, PALETTE, SPEEDS, ObjectState, Scene, render

SEAMS = ("chunk_seam_flicker",)


def scorer(dims, segment_frames=16, seams=(3, 3), clip_seconds=None):
    clips = {"enabled": True, "seconds": {d: clip_seconds for d in dims}} if clip_seconds else {}
    from deepforcing.metrics.config import ClipProtocol

    return Scorer(EvalConfig(dimensions=dims, drift=DriftConfig(segment_seconds=segment_frames / FPS),
                             seams=seams, progress=False, clips=ClipProtocol(**clips)))


def test_specs_are_registered_with_direction_aggregation_and_version():
    for name in (*TOY_METRICS, *SEAMS):
        s = SPECS[name]
        assert s.direction in ("higher", "lower") and s.aggregation and s.version and s.weights == ()
    assert SPECS["toy_colour_drift"].direction == "lower" and SPECS["chunk_seam_flicker"].direction == "lower"


def one_object_scene(vx: float, vy: float, speed: str = "slowly") -> Scene:
    sc = Scene(0)
    sc.spec = type(sc.spec)((type(sc.spec.objects[0])("red", "square"),), speed, "gray")
    sc.initial = (ObjectState("red", "square", 12.0, 12.0, vx, vy),)
    return sc


def test_ground_truth_scores_full_marks_and_the_world_speed():
    v = 0.5
    sc = one_object_scene(v, 0.0)
    frames = torch.from_numpy(sc.frames(64))
    res = scorer(TOY_METRICS).score_frames(frames, FPS, prompt=sc.prompt)
    d = {k: r.score for k, r in res.dimensions.items()}
    assert d["toy_object_count"] == 1.0 and d["toy_colour_fidelity"] == 1.0 and d["toy_sharpness"] == 1.0
    # hard-edged rendering moves the centroid in whole pixels: over the video it averages to the true speed
    lo, hi = SPEEDS["slowly"]
    assert d["toy_motion"] == pytest.approx(v / ((lo + hi) / 2), rel=0.1)
    assert d["toy_colour_drift"] == pytest.approx(0.0, abs=1e-3)  # an object moving over one background
    assert len(res.dimensions["toy_object_count"].segments) == 4


def test_a_frozen_video_has_no_motion_and_wrong_prompts_lose_count_and_colour():
    sc = one_object_scene(0.5, 0.0)
    frozen = torch.from_numpy(np.repeat(sc.frames(1), 32, axis=0))
    wrong = "a blue disc and a green square bounce slowly on a gray background"
    d = {k: r.score for k, r in scorer(TOY_METRICS).score_frames(frozen, FPS, prompt=wrong).dimensions.items()}
    assert d["toy_motion"] == 0.0 and d["toy_object_count"] == 0.0 and d["toy_colour_fidelity"] == 0.0


def test_colour_drift_is_the_total_variation_from_the_first_segment():
    """First 16 frames plain gray; the next 16 with a quarter of the frame turned blue: the second
    segment's histogram differs by 0.25 in total variation (hand computed)."""
    base = render((), "gray")
    changed = base.copy()
    changed[:12, :12] = PALETTE["blue"]
    frames = torch.from_numpy(np.stack([base] * 16 + [changed] * 16))
    res = scorer(("toy_colour_drift",), clip_seconds=1.0).score_frames(frames, FPS, prompt=None)
    segs = [s["score"] for s in res.dimensions["toy_colour_drift"].segments]
    assert segs == pytest.approx([0.0, 0.25])


def test_sharpness_counts_pixels_away_from_every_world_colour():
    f = render((), "black")
    f[:6, :] = (128, 60, 200)  # far from every world colour: a quarter of the frame
    res = scorer(("toy_sharpness",)).score_frames(torch.from_numpy(np.stack([f] * 4)), FPS)
    assert res.dimensions["toy_sharpness"].score == pytest.approx(0.75)
    nearest = min(math.dist((128, 60, 200), c) for c in [*PALETTE.values(), *BACKGROUNDS.values()])
    assert nearest > 40


def test_a_non_toy_prompt_is_an_error_for_the_prompt_metrics_only():
    frames = torch.from_numpy(Scene(1).frames(20))
    res = scorer(TOY_METRICS).score_frames(frames, FPS, prompt="A red fox trots through fresh snow.")
    assert "not a toy-world prompt" in res.dimensions["toy_object_count"].error
    assert res.dimensions["toy_sharpness"].error is None


def seam_video(first: int, later: int, n: int, within: int, across: int) -> torch.Tensor:
    """Gray frames whose level rises by ``within`` inside a chunk and by ``across`` at each chunk start."""
    starts = boundary_starts(n, first, later)
    level, out = 40, []
    for i in range(n):
        if i:
            level += across if i in starts else within
        out.append(np.full((24, 24, 3), level, dtype=np.uint8))
    return torch.from_numpy(np.stack(out))


@pytest.mark.parametrize("seams", [(3, 3), (9, 12)])
def test_chunk_seam_flicker_is_the_boundary_jump_over_the_in_chunk_change(seams):
    frames = seam_video(*seams, n=64, within=1, across=4)
    res = scorer(SEAMS, seams=seams).score_frames(frames, FPS)
    assert res.dimensions["chunk_seam_flicker"].score == pytest.approx((4 - 1) / 255)
    smooth = seam_video(*seams, n=64, within=2, across=2)
    assert scorer(SEAMS, seams=seams).score_frames(smooth, FPS).dimensions["chunk_seam_flicker"].score == 0.0


def test_streamed_toy_scores_equal_whole_video_scores():
    sc = Scene(11)
    frames = torch.from_numpy(sc.frames(48))
    dims = (*TOY_METRICS, *SEAMS)
    whole = scorer(dims).score_frames(frames, FPS, prompt=sc.prompt)
    stream = StreamingScorer(scorer(dims), FPS, prompt=sc.prompt)
    for a in range(0, 48, 3):
        stream.push(frames[a:a + 3])
    streamed = stream.finalize()
    for d in dims:
        assert streamed.dimensions[d].score == whole.dimensions[d].score
        assert streamed.dimensions[d].segments == whole.dimensions[d].segments


def test_object_size_and_min_area_are_consistent():
    from deepforcing.toyworld.rules import MIN_AREA

    assert MIN_AREA < OBJECT_SIZE * OBJECT_SIZE * math.pi / 4  # a whole disc always counts
