"""VBench-Long's optional scene-cut split: PySceneDetect on memory frames equals PySceneDetect on the file,
and the long score is the mean over scenes of each scene's clip mean (clips cut per scene)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metrics_helpers import synthetic_frames

from deepforcing.metrics.config import ClipProtocol, DriftConfig, EvalConfig
from deepforcing.metrics.protocol import Span
from deepforcing.metrics.reference import vbench_scores
from deepforcing.metrics.scenes import SCENE_THRESHOLD, detect_scenes
from deepforcing.metrics.scorer import Scorer
from deepforcing.metrics.video import decode, write_lossless


def _scene(n: int, color, seed: int) -> np.ndarray:
    f = synthetic_frames(n, 96, 128, seed, speed=0).astype(np.float32)
    return np.clip(f * 0.3 + np.asarray(color, np.float32) * 0.7, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def three_scenes(tmp_path_factory):
    """Red (20 frames) | blue (20) | red (22): two hard cuts, at frames 20 and 40."""
    a = np.concatenate([_scene(20, (200, 40, 40), 1), _scene(20, (40, 60, 200), 2), _scene(22, (200, 40, 40), 3)])
    return a, write_lossless(tmp_path_factory.mktemp("scenes") / "three.mp4", a, 8)


def test_memory_stream_equals_scenedetect_on_the_file(three_scenes):
    from scenedetect import ContentDetector, detect

    frames, path = three_scenes
    ref = [(int(a.get_frames()), int(b.get_frames())) for a, b in detect(str(path), ContentDetector(SCENE_THRESHOLD))]
    ours = detect_scenes(decode(str(path)).frames, 8)
    assert ref == [(0, 20), (20, 40), (40, 62)]
    assert [(s.start, s.end) for s in ours] == ref


def test_no_cut_gives_the_whole_video():
    frames = torch.from_numpy(synthetic_frames(30, 96, 128, 4, speed=0))
    assert detect_scenes(frames, 8) == [Span(0, 30)]


def test_scene_split_score_against_vbench_clips(three_scenes, tmp_path):
    """Scenes of 20/20/22 frames at 8 fps, 16-frame clips per scene:
    [0,16) [4,20) | [20,36) [24,40) | [40,56) [46,62); score = mean over scenes of vbench's temporal
    flickering on each scene's clip files."""
    frames, path = three_scenes
    sc = Scorer(EvalConfig(dimensions=("temporal_flickering",), progress=False, drift=DriftConfig(enabled=False),
                           clips=ClipProtocol(scene_split=True)))
    r = sc.score_file(str(path)).dimensions["temporal_flickering"]
    assert r.error is None
    spans = [(c["start_frame"], c["end_frame"]) for c in r.clips]
    assert spans == [(0, 16), (4, 20), (20, 36), (24, 40), (40, 56), (46, 62)]
    files = [str(write_lossless(tmp_path / f"c{a}.mp4", frames[a:b], 8)) for a, b in spans]
    ref = vbench_scores("temporal_flickering", files, {})
    scene_means = [np.mean(ref[0:2]), np.mean(ref[2:4]), np.mean(ref[4:6])]
    assert [s["score"] for s in r.scenes] == pytest.approx(scene_means, abs=1e-9)
    assert r.score == pytest.approx(np.mean(scene_means), abs=1e-9)
    # without the split the same video is clipped straight through: other clips, another score
    plain = Scorer(EvalConfig(dimensions=("temporal_flickering",), progress=False, drift=DriftConfig(enabled=False)))
    p = plain.score_file(str(path)).dimensions["temporal_flickering"]
    assert [(c["start_frame"], c["end_frame"]) for c in p.clips] == [(0, 16), (16, 32), (32, 48), (46, 62)]
    assert p.scenes == [] and abs(p.score - r.score) > 1e-6


def test_bad_scene_threshold_is_rejected():
    from deepforcing.errors import ConfigError

    with pytest.raises(ConfigError, match="scene_threshold"):
        EvalConfig(clips=ClipProtocol(scene_split=True, scene_threshold=0))
