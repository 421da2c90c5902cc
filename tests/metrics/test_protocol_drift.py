"""VBench-Long clip splitting, drift windows and drift statistics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepforcing.metrics import drift, protocol
from deepforcing.metrics.config import DriftConfig, EvalConfig
from deepforcing.metrics.protocol import Span
from deepforcing.metrics.scorer import Scorer, StreamingScorer


def test_split_like_vbench_long():
    # 16 fps, 2 s -> 32 frames; 80 frames = 2 full clips + remainder 16 padded back to [48, 80)
    assert protocol.split_fixed(0, 80, 32) == [Span(0, 32), Span(32, 64), Span(48, 80)]
    assert protocol.split_fixed(0, 64, 32) == [Span(0, 32), Span(32, 64)]
    assert protocol.split_fixed(0, 20, 32) == [Span(0, 20)]  # shorter than a clip: scored whole
    assert protocol.split_fixed(10, 50, 16) == [Span(10, 26), Span(26, 42), Span(34, 50)]
    assert protocol.frames_per_clip(16.0, 2) == 32
    assert protocol.frames_per_clip(29.97, 2) == 58  # int(fps) * seconds, as VBench-Long
    assert protocol.frames_per_clip(16.0, 10) == 160


def test_vbench_long_splitter_agrees():
    """Our spans == the frame ranges vbench2_beta_long.utils.split_video_into_clips slices (its arithmetic)."""
    for n, seg in [(80, 32), (64, 32), (33, 32), (161, 16), (5, 16)]:
        if n < seg:
            expect = [(0, n)]
        else:
            expect = [(i * seg, (i + 1) * seg) for i in range(n // seg)]
            if n % seg:
                expect.append((max(0, (n // seg) * seg - (seg - n % seg)), n))
        assert [(s.start, s.end) for s in protocol.split_fixed(0, n, seg)] == expect


def test_middle_indices_match_vbench():
    from vbench.utils import get_frame_indices

    for vlen in (1, 5, 8, 9, 33, 160):
        assert protocol.middle_indices(0, vlen, 8) == [int(i) for i in get_frame_indices(8, vlen, sample="middle")]
    assert protocol.middle_indices(100, 108, 8) == list(range(100, 108))


def test_windows():
    a, b = protocol.edge_windows(100, 0.15)
    assert (a, b) == (Span(0, 15), Span(85, 100))
    assert protocol.edge_windows(10, 0.15) == (Span(0, 2), Span(8, 10))  # ceil(1.5)=2
    ch = protocol.equal_chunks(25, 10)
    assert len(ch) == 10 and ch[0].start == 0 and ch[-1].end == 25
    assert all(c.end == d.start for c, d in zip(ch, ch[1:], strict=False))
    assert protocol.segments(16 * 12, 16, 5) == [Span(0, 80), Span(80, 160), Span(112, 192)]


def test_drift_statistics_hand_computed():
    series = [0.60, 0.55, 0.50, 0.45]  # falls 0.05 per 5-s segment
    times = [(0, 5), (5, 10), (10, 15), (15, 20)]
    s = drift.summarize(times, series, slope_seconds=10.0)
    assert s["delta"] == pytest.approx(0.15)  # positive = the metric fell (degradation)
    assert s["abs_delta"] == pytest.approx(0.15)
    assert s["range"] == pytest.approx(0.15)
    assert s["slope_per_10s"] == pytest.approx(-0.10)  # -0.05 per 5 s
    up = drift.summarize(times, series[::-1])
    assert up["delta"] == pytest.approx(-0.15) and up["abs_delta"] == pytest.approx(0.15)
    assert up["slope_per_10s"] == pytest.approx(0.10)
    assert drift.summarize([(0, 5)], [0.3])["slope_per_10s"] is None


def test_vde_hand_computed():
    m = [0.5, 0.4, 0.6, 0.5]  # N = 4: weights 3, 2, 1 on |m_i - m_1| / m_1 = 0.2, 0.2, 0
    assert drift.vde(m, "linear") == pytest.approx(3 * 0.2 + 2 * 0.2 + 1 * 0.0)
    assert drift.vde(m, "log") == pytest.approx(math.log(3) * 0.2 + math.log(2) * 0.2)
    assert drift.vde([0.7]) == 0.0
    with pytest.raises(ValueError):
        drift.vde([0.0, 0.1])
    assert drift.safe_vde([0.0, 0.1], "linear") is None


def test_lsq_slope_matches_polyfit():
    rng = np.random.default_rng(0)
    t = np.arange(7) * 5 + 2.5
    v = rng.normal(size=7)
    assert drift.lsq_slope(t, v, per=10) == pytest.approx(np.polyfit(t, v, 1)[0] * 10)


def _ramp_frames(t: int, fps: int = 8) -> np.ndarray:
    """Frame k is constant; the step between frames grows linearly with time (flicker worsens)."""
    steps = np.arange(t) // fps  # +s per frame during second s
    vals = np.cumsum(steps) % 200 + 20
    return np.repeat(vals[:, None, None, None], 3, axis=3).repeat(16, 1).repeat(16, 2).astype(np.uint8)


def test_drift_sign_on_degrading_video():
    """Flicker gets worse over time: segment scores fall, delta > 0, slope < 0."""
    f = _ramp_frames(8 * 12)  # 12 s at 8 fps
    cfg = EvalConfig(dimensions=("temporal_flickering",), drift=DriftConfig(segment_seconds=4), progress=False)
    d = Scorer(cfg).score_frames(f, fps=8).dimensions["temporal_flickering"]
    seg = [s["score"] for s in d.segments]
    assert len(seg) == 3 and seg[0] > seg[1] > seg[2]
    assert d.drift["delta"] > 0 and d.drift["slope_per_10s"] < 0
    assert d.drift["edge_delta"] > 0 and d.drift["vde"] > 0
    # segment k's value is exactly the VBench-Long score of its frames
    sc = Scorer(EvalConfig(dimensions=("temporal_flickering",), drift=DriftConfig(enabled=False), progress=False))
    ref = sc.score_frames(f[32:64], fps=8).score("temporal_flickering")
    assert seg[1] == pytest.approx(ref, abs=1e-12)


def test_streaming_matches_offline():
    f = _ramp_frames(8 * 11)
    cfg = EvalConfig(dimensions=("temporal_flickering",), drift=DriftConfig(segment_seconds=4), progress=False)
    sc = Scorer(cfg)
    seen = []
    st = StreamingScorer(sc, fps=8, on_segment=seen.append)
    emitted_after = []
    for i in range(0, len(f), 12):  # 12-frame chunks, not aligned with 32-frame segments
        st.push(f[i:i + 12])
        emitted_after.append(len(seen))
    assert emitted_after[2] == 1 and emitted_after[5] == 2  # a segment appears as soon as it is complete
    final = st.finalize().dimensions["temporal_flickering"]
    offline = sc.score_frames(f, fps=8).dimensions["temporal_flickering"]
    assert final.score == pytest.approx(offline.score, abs=1e-12)
    assert [s["score"] for s in final.segments] == pytest.approx([s["score"] for s in offline.segments])
    for rec, seg in zip(seen, offline.segments[:2], strict=False):
        assert rec["scores"]["temporal_flickering"] == pytest.approx(seg["score"], abs=1e-12)
