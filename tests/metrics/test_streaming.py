"""Streaming scoring with bounded memory: ``StreamingScorer(..., num_frames=T)`` scores each clip as its last
frame arrives and releases frames and features no later clip needs. The reference is the whole-video path
(``Scorer.score_frames`` on all frames at once): every field of the result must be the same, for the
VBench-Long clips (backward-padded last clip), drift segments, FramePack edge windows, VDE chunks and the
static filter, while the frames held stay within one clip (plus one pushed chunk)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metrics_helpers import synthetic_frames

from deepforcing.errors import ConfigError
from deepforcing.metrics import protocol
from deepforcing.metrics.config import ClipProtocol, DriftConfig, EvalConfig, SlowFastConfig
from deepforcing.metrics.dims.base import Metric
from deepforcing.metrics.dims.overall import OverallConsistency
from deepforcing.metrics.scorer import Scorer, StreamingScorer

SIZES = (9, 12, 5, 12, 1)  # pushed chunk sizes, cycled: the pipeline's first chunk is 9 frames, then 12


def _plain(res) -> dict:
    d = res.to_dict()
    d.pop("decode_seconds")
    for dim in d["dimensions"].values():
        dim.pop("seconds")
    return d


def assert_same(a, b, tol: float, path: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], tol, f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: {a} != {b}"
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, tol, f"{path}[{k}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert abs(a - b) <= tol, f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def stream(sc: Scorer, frames, fps: float, prompt: str | None = None, sizes=SIZES, num_frames: int | None = -1):
    """Push ``frames`` in chunks; returns (result, emitted segment records, most frames held, most entries in
    any per-frame cache, the push count after which each segment was emitted)."""
    seen = []
    st = StreamingScorer(sc, fps, prompt=prompt, on_segment=seen.append, name="v",
                         num_frames=len(frames) if num_frames == -1 else num_frames)
    st.push(frames[:0])  # an empty chunk is allowed, also first
    held = cached = 0
    emitted_at = []
    a, k = 0, 0
    while a < len(frames):
        b = min(len(frames), a + sizes[k % len(sizes)])
        before = len(seen)
        st.push(frames[a:b])
        emitted_at += [b] * (len(seen) - before)
        held = max(held, st.ctx.num_frames - st.ctx.released)
        cached = max([cached] + [len(c) for c in st.ctx.cache.values() if isinstance(c, dict)])
        a, k = b, k + 1
    return st.finalize(), seen, held, cached, emitted_at


def flicker_frames(t: int, seed: int = 0, h: int = 16, w: int = 16) -> np.ndarray:
    """Per-frame levels with a random walk of random step sizes, plus sparse pixel noise: every clip, segment
    and window scores differently."""
    rng = np.random.default_rng(seed)
    steps = rng.integers(0, 6, size=t) * (rng.random(t) < 0.7)
    level = (np.cumsum(steps) % 180 + 40).astype(np.int16)
    f = np.repeat(level[:, None, None, None], 3, axis=3).repeat(h, 1).repeat(w, 2)
    noise = (rng.random(f.shape) < 0.03) * rng.choice([-1, 1], size=f.shape)
    return (f + noise).clip(0, 255).astype(np.uint8)


def flicker_scorer(**kw) -> Scorer:
    return Scorer(EvalConfig(dimensions=("temporal_flickering",), progress=False, **kw))


CASES = {  # name: (frames, fps, config)
    # 8 fps: 16-frame clips, 40-frame segments (last padded back), edge windows of 29, 10 VDE chunks of 18-19
    "default": (189, 8, {}),
    # 3-s clips, 4-s segments, wide edges, 4 VDE chunks with log weights: remainders everywhere
    "remainders": (150, 8, dict(clips=ClipProtocol(seconds={"temporal_flickering": 3}),
                                drift=DriftConfig(segment_seconds=4, edge_fraction=0.3, vde_chunks=4,
                                                  vde_weighting="log"))),
    # VDE chunks and edge windows shorter than a clip: each is one clip of its own length
    "short_windows": (60, 8, {}),
    "shorter_than_a_clip": (13, 8, {}),
    # VDE chunks of one frame: no flickering score (vde_error), as on the whole video
    "one_frame_chunks": (7, 8, {}),
    "one_frame": (1, 8, {}),
    "drift_off": (100, 8, dict(drift=DriftConfig(enabled=False))),
    "segment_shorter_than_clip": (90, 16, dict(drift=DriftConfig(segment_seconds=1.5))),
    # 29.97 fps: clips of int(fps) * 2 = 58 frames
    "ntsc": (200, 29.97, {}),
    # plain VBench: the whole video is one clip, so it is held whole until the end
    "no_clips": (120, 8, dict(clips=ClipProtocol(enabled=False))),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_flickering_stream_equals_whole_video(case):
    t, fps, kw = CASES[case]
    frames = flicker_frames(t, seed=len(case))
    sc = flicker_scorer(**kw)
    offline = sc.score_frames(frames, fps, name="v")
    res, seen, held, cached, emitted_at = stream(sc, frames, fps)
    assert_same(_plain(res), _plain(offline), 1e-12)
    d = offline.dimensions["temporal_flickering"]
    if case not in ("one_frame", "one_frame_chunks"):
        assert d.error is None and d.score is not None
    # memory: at most one clip of frames (the longest: the video itself without clips) plus one pushed chunk
    clip = t if case == "no_clips" else protocol.frames_per_clip(fps, sc.cfg.clips.seconds_for("temporal_flickering"))
    assert held <= min(t, clip + max(SIZES) - 1)
    assert cached <= min(t, clip)
    # segments are reported as soon as their last frame is in, with the whole-video segment scores
    seg = protocol.frames_per_clip(fps, sc.cfg.drift.segment_seconds)
    assert len(seen) == t // seg
    for k, (rec, at) in enumerate(zip(seen, emitted_at, strict=True)):
        assert at - max(SIZES) < (k + 1) * seg <= at
        if d.segments:
            assert rec["scores"]["temporal_flickering"] == pytest.approx(d.segments[k]["score"], abs=1e-12)


def test_default_windows_are_all_exercised():
    """The default case really has a padded last clip and padded last segment, edge windows and VDE chunks
    that split into several clips, each with its own score."""
    frames = flicker_frames(189, seed=len("default"))
    d = flicker_scorer().score_frames(frames, 8, name="v").dimensions["temporal_flickering"]
    assert [(c["start_frame"], c["end_frame"]) for c in d.clips][-2:] == [(160, 176), (173, 189)]
    assert [(s["start_frame"], s["end_frame"]) for s in d.segments] == [(0, 40), (40, 80), (80, 120), (120, 160),
                                                                        (149, 189)]
    assert len({c["score"] for c in d.clips}) == len(d.clips)
    for key in ("edge_start", "edge_end", "vde", "delta", "range", "slope_per_10s"):
        assert d.drift[key] is not None and d.drift[key] != 0, key


def test_long_video_holds_one_clip():
    """20 minutes at 8 fps (9600 frames): memory does not grow with the video; same result as offline."""
    frames = flicker_frames(9600, seed=5, h=4, w=4)
    sc = flicker_scorer()
    res, _, held, cached, _ = stream(sc, frames, 8, sizes=(12,))
    assert held <= 16 + 12 - 1 and cached <= 16
    assert_same(_plain(res), _plain(sc.score_frames(frames, 8, name="v")), 1e-12)


def test_wrong_frame_count_is_an_error():
    frames = flicker_frames(50)
    sc = flicker_scorer()
    st = StreamingScorer(sc, 8, num_frames=40)
    st.push(frames[:40])
    with pytest.raises(ConfigError, match="41 frames pushed, but num_frames=40"):
        st.push(frames[40:41])
    res, *_ = stream(sc, frames[:30], 8, num_frames=40)
    assert res.error and "30 frames pushed, but num_frames=40" in res.error
    with pytest.raises(ConfigError):
        StreamingScorer(sc, 8, num_frames=0)


def test_without_length_or_with_scene_split_every_frame_is_kept():
    """The modes that need the whole video still give the whole-video result."""
    frames = flicker_frames(100)
    for sc, n in ((flicker_scorer(), None), (flicker_scorer(clips=ClipProtocol(scene_split=True)), 100)):
        res, _, held, _, _ = stream(sc, frames, 8, num_frames=n)
        assert held == 100
        assert_same(_plain(res), _plain(sc.score_frames(frames, 8, name="v")), 1e-12)


# -- the static filter (VBench-Long's RAFT test on each clip, wrap-around pairs included) -----------------
@pytest.fixture
def flow_by_difference(monkeypatch, tmp_path):
    """RAFT replaced by a cheap stand-in: a pair's 'flow' is the mean absolute difference of its two frames,
    read from the context as RAFT would read them (so a frame released too early fails the test)."""
    import deepforcing.metrics.dims.dynamic as dynamic

    def pairs(vb, ctx, todo, device, batch=4, **options):  # options: fast path, GPU settings
        cache = ctx.cache.setdefault("raft", {})
        for i, j in sorted(set(todo)):
            if (i, j) not in cache:
                v = float((ctx.frame(i).float() - ctx.frame(j).float()).abs().mean())
                cache[(i, j)] = {"top5": v, "top2": v}

    monkeypatch.setattr(dynamic, "load_raft", lambda *a, **k: None)
    monkeypatch.setattr(dynamic, "raft_pairs", pairs)
    weights = tmp_path / "raft-things.pth"
    weights.write_bytes(b"")
    return str(weights)


def still_and_moving(t: int, seed: int) -> np.ndarray:
    """Still stretches (sparse +-1 pixel noise: 'flow' below the static threshold) between moving ones."""
    rng = np.random.default_rng(seed)
    level, levels, moving = 100.0, [], False
    while len(levels) < t:
        n = int(rng.integers(4, 30))
        for _ in range(n):
            level += rng.integers(2, 5) if moving else 0
            levels.append(level % 200 + 20)
        moving = not moving
    f = np.repeat(np.array(levels[:t])[:, None, None, None], 3, axis=3).repeat(16, 1).repeat(16, 2)
    noise = (rng.random(f.shape) < 0.02) * rng.choice([-1, 1], size=f.shape)
    return (f + noise).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("max_clips", [None, 2])
def test_static_filter_stream_equals_whole_video(flow_by_difference, max_clips):
    frames = still_and_moving(230, seed=3)
    sc = flicker_scorer(clips=ClipProtocol(static_filter=True, static_max_clips=max_clips),
                        drift=DriftConfig(vde_chunks=6), weights={"raft_things": flow_by_difference})
    offline = sc.score_frames(frames, 8, name="v")
    d = offline.dimensions["temporal_flickering"]
    used = [c.get("used", True) for c in d.clips]
    assert d.error is None and any(used) and not all(used)  # the filter keeps some clips, drops others
    res, seen, held, _, _ = stream(sc, frames, 8)
    assert_same(_plain(res), _plain(offline), 1e-12)
    assert held <= 16 + max(SIZES) - 1
    assert [r["errors"] or r["scores"] for r in seen]  # segments without a static clip report an error


# -- dimensions with models (random weights) -------------------------------------------------------------
#: per-frame features are computed in other batches than on the whole video: float rounding only, which
#: differs between CPU kernels (AVX2 / AVX-512 / default) and which drift statistics such as VDE amplify
#: (1.6e-6 seen with ATEN_CPU_CAPABILITY=default); the metrics' stated tolerance against vbench is 1e-5
MODEL_TOL = 1e-5


def _weights(random_weights, *dims) -> dict[str, str]:
    return {k: str(v) for d in dims for k, v in random_weights.files(d).items()}


def test_clip_dimensions_stream_equals_whole_video(random_weights):
    """Per-frame CLIP features (shared by background consistency and CLIP score) and aesthetic scores;
    CLIP score reads the 8 middle frames of 10-s clips, so its clips are held longer than 2-s ones."""
    dims = ("background_consistency", "clip_score", "aesthetic_quality")
    sc = Scorer(EvalConfig(dimensions=dims, weights=_weights(random_weights, *dims), progress=False))
    frames = synthetic_frames(70, 64, 80, 11, speed=4)  # 4 fps: 8-frame clips, 40-frame CLIP-score clips
    offline = sc.score_frames(frames, 4, prompt="a red square", name="v")
    res, seen, held, _, _ = stream(sc, frames, 4, prompt="a red square")
    assert all(d.error is None for d in offline.dimensions.values())
    assert len(offline.dimensions["clip_score"].clips) == 2
    assert_same(_plain(res), _plain(offline), MODEL_TOL)
    assert held <= 40 + max(SIZES) - 1
    assert len(seen) == 3


class _FakeViCLIP(torch.nn.Module):
    """Stands in for ViCLIP (a full ViT-L is too slow here): a fixed projection of the 8 frames' mean colours."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = torch.randn(8 * 3, 16, generator=g)
        self.text = torch.randn(1, 16, generator=g)

    def encode_vision(self, x, test=True):
        return x.mean(dim=(-1, -2)).reshape(1, -1) @ self.proj

    def encode_text(self, prompt):
        return self.text


class _OverallStandIn(OverallConsistency):
    def __init__(self, cfg):
        Metric.__init__(self, {}, "cpu", cfg)
        self.model, self._text = _FakeViCLIP(), {}


def test_overall_consistency_windows_stream_equals_whole_video():
    """ViCLIP embeds the 8 middle frames of each clip (features per clip, not per frame): each clip's
    frames must be there when it completes, and its embedding is dropped once scored."""
    cfg = EvalConfig(dimensions=("temporal_flickering",), progress=False,
                     clips=ClipProtocol(seconds={"overall_consistency": 5}))
    sc = Scorer(cfg)
    sc.metrics = {"overall_consistency": _OverallStandIn(cfg)}
    frames = synthetic_frames(130, 32, 32, 12, speed=2)  # 8 fps: 40-frame clips, last one padded back
    offline = sc.score_frames(frames, 8, prompt="a red square", name="v")
    d = offline.dimensions["overall_consistency"]
    assert d.error is None and len(d.clips) == 4 and d.drift["vde"] > 0
    res, _, held, cached, _ = stream(sc, frames, 8, prompt="a red square")
    assert_same(_plain(res), _plain(offline), 1e-12)
    clips = {c for ws in sc.windows_for(130, 8).values() for w in ws for c in protocol.clips_for(w, 8, 5)}
    assert held <= 40 + max(SIZES) - 1 and cached <= 6 < len(clips)  # embeddings of the clips in flight only


@pytest.mark.slow
def test_flow_and_frame_model_dimensions_stream_equals_whole_video(random_weights):
    """AMT pairs (both frame parities) and RAFT pairs of the ~8-fps sampled frames (per-frame features are
    covered by the CLIP dimensions above)."""
    dims = ("motion_smoothness", "dynamic_degree")
    sc = Scorer(EvalConfig(dimensions=dims, weights=_weights(random_weights, *dims), progress=False,
                           drift=DriftConfig(segment_seconds=3, vde_chunks=3)))
    frames = synthetic_frames(18, 128, 128, 13, speed=5)  # 4 fps: 8-frame clips, 12-frame segments
    offline = sc.score_frames(frames, 4, name="v")
    assert all(d.error is None for d in offline.dimensions.values())
    res, _, held, _, _ = stream(sc, frames, 4)
    assert_same(_plain(res), _plain(offline), MODEL_TOL)
    assert held <= 8 + max(SIZES) - 1


@pytest.mark.slow
def test_slow_fast_fusion_stream_equals_whole_video(random_weights, tmp_path):
    """Slow-fast fusion needs each clip's first-frame features at the end: they are kept (DINOv2's computed
    while the frame is there), the frames are not."""
    table = tmp_path / "table.yaml"
    table.write_text("0.0: 0.5\n1.0: 0.9\n")
    dims = ("subject_consistency", "background_consistency")
    weights = {**_weights(random_weights, *dims), "dinov2_vitb14": str(random_weights.path("dinov2_vitb14"))}
    sc = Scorer(EvalConfig(dimensions=dims, weights=weights, progress=False, drift=DriftConfig(enabled=False),
                           slow_fast=SlowFastConfig(enabled=True, mapping_tables={d: str(table) for d in dims})))
    frames = synthetic_frames(20, 64, 64, 14, speed=5)  # 4 fps: clips at 0, 8, 12
    offline = sc.score_frames(frames, 4, name="v")
    for d in offline.dimensions.values():
        assert d.error is None and d.drift["slow_fast"]["clip2clip"] is not None
    res, _, held, _, _ = stream(sc, frames, 4)
    assert_same(_plain(res), _plain(offline), MODEL_TOL)
    assert held <= 8 + max(SIZES) - 1
