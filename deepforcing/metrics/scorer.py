"""Score videos: decode once, share frames and features across dimensions, keep models resident.

``Scorer`` loads each requested dimension once (skipping, with one message, those whose weight files
are missing) and scores any number of videos. ``StreamingScorer`` takes decoded chunks as an engine
emits them, reports each drift segment's scores as soon as the segment is complete and, told the video's
length, holds only the frames of clips still to be scored.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from deepforcing.errors import ConfigError, WeightsError

from . import METRICS, drift, protocol
from .config import EvalConfig
from .dims.base import Metric, MetricInputError, VideoContext
from .protocol import Span
from .specs import SPECS
from .video import Video, VideoError, decode, to_uint8_frames
from .weight_files import resolve

log = logging.getLogger(__name__)


@dataclass
class DimensionResult:
    name: str
    score: float | None = None
    error: str | None = None
    direction: str = "higher"
    version: str = ""
    clip_seconds: float | None = None
    clips: list[dict] = field(default_factory=list)
    scenes: list[dict] = field(default_factory=list)  # per-scene scores when the video was split at scene cuts
    segments: list[dict] = field(default_factory=list)
    drift: dict = field(default_factory=dict)
    seconds: float = 0.0  # wall time spent on this dimension for this video


@dataclass
class VideoResult:
    video: str
    prompt: str | None = None
    fps: float | None = None
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    error: str | None = None
    dimensions: dict[str, DimensionResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    decode_seconds: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        return d

    def score(self, dim: str) -> float | None:
        r = self.dimensions.get(dim)
        return None if r is None else r.score


def _span_dict(s: Span, fps: float, score: float, used: bool = True) -> dict:
    a, b = s.seconds(fps)
    d = {"start_frame": s.start, "end_frame": s.end, "start_s": round(a, 6), "end_s": round(b, 6), "score": score}
    if not used:
        d["used"] = False  # scored, but left out of the mean (static filter / clip cap)
    return d


class Scorer:
    def __init__(self, cfg: EvalConfig | None = None):
        self.cfg = cfg or EvalConfig()
        self.device = self.cfg.resolved_device()
        self.metrics: dict[str, Metric] = {}
        self.skipped: dict[str, str] = {}
        for dim in self.cfg.dimensions:
            try:
                files = resolve(dim, self.cfg.cache_dir, self.cfg.weights, self.cfg.weight_keys(dim))
            except WeightsError as e:
                self.skipped[dim] = str(e)
                log.warning("%s", e)
                continue
            cls = METRICS.get(dim)
            try:
                self.metrics[dim] = cls(files, self.device, self.cfg)
            except Exception as e:  # a file in the wrong format: skip this dimension, say which file
                msg = (f"{dim}: skipped, could not load {', '.join(map(str, files.values()))} "
                       f"({type(e).__name__}: {e}). Replace the file with the original release.")
                self.skipped[dim] = msg
                log.warning("%s", msg)

    # ------------------------------------------------------------------------------------------
    def score_file(self, path: str, prompt: str | None = None) -> VideoResult:
        t0 = time.perf_counter()
        try:
            video = decode(path)
        except VideoError as e:
            return VideoResult(video=str(path), prompt=prompt, error=str(e), skipped=dict(self.skipped))
        res = self.score_video(video, prompt)
        res.decode_seconds = time.perf_counter() - t0 - sum(d.seconds for d in res.dimensions.values())
        return res

    def score_frames(self, frames, fps: float, prompt: str | None = None, layout: str = "THWC",
                     name: str = "<memory>") -> VideoResult:
        return self.score_video(Video(to_uint8_frames(frames, layout), float(fps), name), prompt)

    def score_video(self, video: Video, prompt: str | None = None, ctx: VideoContext | None = None) -> VideoResult:
        res = VideoResult(video=video.path, prompt=prompt, fps=video.fps, num_frames=video.num_frames,
                          height=video.height, width=video.width, skipped=dict(self.skipped))
        if video.num_frames == 0:
            res.error = f"{video.path}: the video has zero frames."
            return res
        return self._score_all(res, ctx or VideoContext(video.frames, video.fps, prompt, video.path))

    def _score_all(self, res: VideoResult, ctx: VideoContext, sources: dict | None = None) -> VideoResult:
        for dim, metric in self.metrics.items():
            res.dimensions[dim] = self._score_dim(metric, ctx, source=(sources or {}).get(dim))
        return res

    # ------------------------------------------------------------------------------------------
    def _windows(self, ctx: VideoContext) -> dict[str, list[Span]]:
        if self.cfg.clips.enabled and self.cfg.clips.scene_split:
            if "scenes" not in ctx.cache:
                from .scenes import detect_scenes

                ctx.cache["scenes"] = detect_scenes(ctx.frames, ctx.fps, self.cfg.clips.scene_threshold)
            return {**self.windows_for(ctx.num_frames, ctx.fps), "video": ctx.cache["scenes"]}
        return self.windows_for(ctx.num_frames, ctx.fps)

    def windows_for(self, num_frames: int, fps: float) -> dict[str, list[Span]]:
        """The windows of a video of ``num_frames`` frames (without scene cuts): ``video`` (the VBench-Long
        score's), and with drift on ``segments``, ``edges`` (FramePack) and ``vde`` (BlockVid)."""
        T, dc = num_frames, self.cfg.drift
        w: dict[str, list[Span]] = {"video": [Span(0, T)]}
        if dc.enabled:
            w["segments"] = protocol.segments(T, fps, dc.segment_seconds)
            if dc.edge_windows:
                w["edges"] = list(protocol.edge_windows(T, dc.edge_fraction))
            if dc.vde:
                w["vde"] = protocol.equal_chunks(T, dc.vde_chunks)
        return w

    def window_score(self, metric: Metric, ctx: VideoContext, span: Span, max_clips: int | None = None,
                     source: ClipSource | None = None) -> tuple[float, list[tuple[Span, float, bool]]]:
        """VBench-Long score of frames ``span``: mean over its kept clips (all clips unless a filter drops
        some; at most ``max_clips`` of them, in clip order). Returns (score, [(clip, score, used)])."""
        source = source or DirectSource(metric, ctx)
        clips = protocol.clips_for(span, ctx.fps, self.cfg.clips.seconds_for(metric.spec.name))
        scores, used = [], 0
        for c in clips:
            s, keep = source.result(c)
            use = keep and (max_clips is None or used < max_clips)
            used += use
            scores.append((c, s, use))
        if not used:
            raise MetricInputError(
                f"none of the {len(clips)} clip(s) of frames {span.start}-{span.end} passed VBench-Long's static "
                "filter, so this window has no score (set clips.static_filter=false to score every clip)."
            )
        return sum(s for _, s, u in scores if u) / used, scores

    def _score_dim(self, metric: Metric, ctx: VideoContext, windows: dict | None = None,
                   source: ClipSource | None = None) -> DimensionResult:
        spec = metric.spec
        secs = self.cfg.clips.seconds_for(spec.name)
        out = DimensionResult(spec.name, direction=spec.direction, version=spec.version, clip_seconds=secs)
        source = source or DirectSource(metric, ctx)
        t0 = time.perf_counter()
        try:
            metric.validate(ctx)
            windows = windows or self._windows(ctx)
            main = [c for w in windows["video"] for c in protocol.clips_for(w, ctx.fps, secs)]
            for c in main:
                metric.check_span(c)
            extra = []
            for key, ws in windows.items():
                if key != "video":
                    extra += [c for s in ws for c in protocol.clips_for(s, ctx.fps, secs)
                              if c.length >= spec.min_frames]
            # one batched pass over every frame any clip, segment or window needs
            source.prepare(sorted(set(main) | set(extra), key=lambda s: (s.start, s.end)))
            # the VBench-Long score: mean over the video's clips, or over scenes of their clip means
            per_scene = [self.window_score(metric, ctx, w, metric.max_clips, source) for w in windows["video"]]
            out.score = sum(v for v, _ in per_scene) / len(per_scene)
            out.clips = [_span_dict(c, ctx.fps, s, u) for _, clips in per_scene for c, s, u in clips]
            if self.cfg.details:
                for d, (c, _, _) in zip(out.clips, [x for _, clips in per_scene for x in clips], strict=True):
                    d.update(source.details(c) or {})
            if len(per_scene) > 1:
                out.scenes = [_span_dict(w, ctx.fps, v) for w, (v, _) in zip(windows["video"], per_scene, strict=True)]
        except MetricInputError as e:
            out.error = f"{spec.name}: {e}"
        except Exception as e:  # never let one dimension take the others down
            log.exception("%s failed on %s", spec.name, ctx.path)
            out.error = f"{spec.name}: internal error {type(e).__name__}: {e}"
        if out.error is None and "segments" in windows:
            try:
                self._drift(metric, ctx, windows, out, source)
            except Exception as e:
                out.segments = []
                out.drift = {"error": f"{type(e).__name__}: {e}"}
        if out.error is None and self.cfg.slow_fast.enabled and spec.name in SLOW_FAST_DIMS:
            from .slowfast import fuse

            try:
                out.drift["slow_fast"] = fuse(metric, ctx, out, self.cfg)
                out.score = out.drift["slow_fast"]["fused"]
            except Exception as e:
                out.error = f"{spec.name}: slow-fast fusion failed: {e}"
                out.score = None
        out.seconds = time.perf_counter() - t0 + source.seconds
        return out

    def _drift(self, metric: Metric, ctx: VideoContext, windows: dict, out: DimensionResult,
               source: ClipSource) -> None:
        dc = self.cfg.drift
        vals = []
        for seg in windows["segments"]:
            v, _ = self.window_score(metric, ctx, seg, source=source)
            vals.append(v)
            out.segments.append(_span_dict(seg, ctx.fps, v))
        out.drift = drift.summarize([seg.seconds(ctx.fps) for seg in windows["segments"]], vals, dc.slope_seconds)
        out.drift["segment_seconds"] = dc.segment_seconds
        if "edges" in windows:
            try:
                a, b = (self.window_score(metric, ctx, s, source=source)[0] for s in windows["edges"])
                out.drift.update(edge_fraction=dc.edge_fraction, edge_start=a, edge_end=b,
                                 edge_delta=a - b, edge_abs_delta=abs(a - b))
            except MetricInputError as e:
                out.drift["edge_error"] = str(e)
        if "vde" in windows:
            try:
                chunk_vals = [self.window_score(metric, ctx, s, source=source)[0] for s in windows["vde"]]
                out.drift.update(vde=drift.safe_vde(chunk_vals, dc.vde_weighting), vde_chunks=len(chunk_vals),
                                 vde_weighting=dc.vde_weighting)
            except MetricInputError as e:
                out.drift["vde_error"] = f"{e} (a video needs {dc.vde_chunks} chunks of that length for VDE)"


SLOW_FAST_DIMS = ("subject_consistency", "background_consistency")


def clip_result(metric: Metric, ctx: VideoContext, c: Span) -> tuple[float, bool]:
    """(score, counts towards its window) of one clip; raises MetricInputError on a non-finite score."""
    s = float(metric.score(ctx, c))
    if math.isnan(s) or math.isinf(s):
        raise MetricInputError(
            f"the model returned a non-finite score on frames {c.start}-{c.end}; "
            "check the weight file and the frame size."
        )
    return s, bool(metric.keeps(ctx, c))


class ClipSource:
    """Where a dimension's clip scores come from while a video's result is assembled."""

    seconds = 0.0  # time already spent on this dimension before the result is assembled

    def prepare(self, spans: list[Span]) -> None:
        raise NotImplementedError

    def result(self, c: Span) -> tuple[float, bool]:
        raise NotImplementedError

    def details(self, c: Span) -> dict | None:
        """Per-frame / per-pair values behind clip ``c``'s score (``Metric.clip_details``), if any."""
        return None


class DirectSource(ClipSource):
    """Computed now, from the frames in the context (the whole-video path)."""

    def __init__(self, metric: Metric, ctx: VideoContext):
        self.metric, self.ctx = metric, ctx

    def prepare(self, spans: list[Span]) -> None:
        self.metric.prepare(self.ctx, spans)

    def result(self, c: Span) -> tuple[float, bool]:
        return clip_result(self.metric, self.ctx, c)

    def details(self, c: Span) -> dict | None:
        return self.metric.clip_details(self.ctx, c)


class StoredSource(ClipSource):
    """Computed earlier, clip by clip, while the video streamed in: each clip's (score, kept) or the
    exception scoring it raised, and the exception preparing its features raised, if any (re-raised
    where the whole-video path would raise it, so both paths give the same result)."""

    def __init__(self):
        self.results: dict[Span, tuple[float, bool] | Exception] = {}
        self.clip_details: dict[Span, dict | None] = {}
        self.error: Exception | None = None
        self.seconds = 0.0

    def prepare(self, spans: list[Span]) -> None:
        if self.error is not None:
            raise self.error

    def result(self, c: Span) -> tuple[float, bool]:
        r = self.results[c]
        if isinstance(r, Exception):
            raise r
        return r

    def details(self, c: Span) -> dict | None:
        return self.clip_details.get(c)


def _forget_locals(e: Exception) -> Exception:
    """Keep an exception for later without the frames (and tensors) its traceback refers to."""
    traceback.clear_frames(e.__traceback__)
    return e


@dataclass
class _Plan:
    """Every clip one dimension will score in a video of known length, in the order they complete."""

    metric: Metric
    clips: list[Span]  # sorted by end frame
    min_start: list[int]  # min_start[k] = earliest first frame of clips[k:]
    source: StoredSource = field(default_factory=StoredSource)
    done: int = 0  # clips[:done] are scored
    active: bool = True  # False once nothing more will be computed (input rejected, or preparing failed)
    pin_first: bool = False  # keep the features of each clip's first frame (slow-fast fusion)

    def pending_from(self, num_frames: int) -> int:
        """First frame that a clip still to be scored needs (``num_frames`` when none is left)."""
        return self.min_start[self.done] if self.active and self.done < len(self.clips) else num_frames


class StreamingScorer:
    """Score a video while it is generated.

    ``push(frames)`` takes decoded pixel frames chunk by chunk: uint8 or float tensors/arrays, layout
    [T,H,W,3] (``layout="THWC"``, default) or [T,3,H,W] (``"TCHW"``); floats in [0,1] (append ``"-pm1"``
    for [-1,1]). Whenever a drift segment (``cfg.drift.segment_seconds``) is complete, its per-dimension
    scores are returned (and passed to ``on_segment``). ``finalize()`` returns the full ``VideoResult``,
    identical to scoring the whole video at once.

    Memory. With ``num_frames`` (the number of frames that will be pushed; the pipeline knows it from the
    rollout) every clip of every window -- the VBench-Long clips including the backward-padded last one,
    drift segments, FramePack edge windows, VDE chunks -- is known in advance. Each clip is scored as soon as
    its last frame arrives, only its (score, kept) pair is kept, and frames and cached features that no clip
    still to come needs are released. Memory is then bounded by the longest clip, not the video: with the
    default 2-s clips about 2 s of frames (plus one pushed chunk) are held whatever the length.

    Modes that hold the whole video until ``finalize()``: no ``num_frames`` (the FramePack windows and the VDE
    chunk boundaries depend on the length), ``clips.scene_split`` (the scenes, hence the clips, are known only
    once every frame is in), and ``clips.enabled=False`` (plain VBench: the whole video is one clip).

    Results: temporal flickering's are identical to the whole-video path's; dimensions with a network encode
    the same frames in other batches, so their numbers can differ by float rounding (below 1e-6 in the tests).
    """

    def __init__(self, scorer: Scorer, fps: float, prompt: str | None = None, layout: str = "THWC",
                 name: str = "<stream>", on_segment: Callable[[dict], None] | None = None,
                 num_frames: int | None = None):
        self.scorer, self.fps, self.prompt, self.layout, self.name = scorer, float(fps), prompt, layout, name
        self.on_segment = on_segment
        self.ctx: VideoContext | None = None
        self.seg_len = protocol.frames_per_clip(self.fps, scorer.cfg.drift.segment_seconds)
        self.emitted: list[dict] = []
        if num_frames is not None and num_frames < 1:
            raise ConfigError(f"num_frames must be >= 1, got {num_frames}.")
        self.expected = num_frames
        clips = scorer.cfg.clips
        self.bounded = num_frames is not None and not (clips.enabled and clips.scene_split)
        self.plans: dict[str, _Plan] = {}

    # ------------------------------------------------------------------------------------------
    def _make_plans(self) -> None:
        T, fps, sc = self.expected, self.fps, self.scorer
        windows = sc.windows_for(T, fps)
        # the segments push() reports (also when drift statistics are off)
        windows["emitted"] = [Span(k * self.seg_len, (k + 1) * self.seg_len) for k in range(T // self.seg_len)]
        for dim, metric in sc.metrics.items():
            secs = sc.cfg.clips.seconds_for(dim)
            clips = sorted({c for ws in windows.values() for w in ws for c in protocol.clips_for(w, fps, secs)},
                           key=lambda s: (s.end, s.start))
            min_start = [T] * (len(clips) + 1)
            for k in range(len(clips) - 1, -1, -1):
                min_start[k] = min(clips[k].start, min_start[k + 1])
            pin = sc.cfg.slow_fast.enabled and dim in SLOW_FAST_DIMS
            plan = _Plan(metric, clips, min_start, pin_first=pin)
            try:
                metric.validate(self.ctx)  # rejected input: finalize() reports it; nothing to compute
            except Exception:
                plan.active = False
            self.plans[dim] = plan

    def _advance(self) -> None:
        """Score every clip whose frames are all in, then release what no later clip needs."""
        ctx, n = self.ctx, self.ctx.num_frames
        for plan in self.plans.values():
            if not plan.active:
                continue
            k = plan.done
            while k < len(plan.clips) and plan.clips[k].end <= n:
                k += 1
            new = plan.clips[plan.done : k]
            plan.done = k
            if not new:
                continue
            t0 = time.perf_counter()
            metric = plan.metric
            try:  # the frames of clips too short for the dimension are not encoded (scoring them says why)
                metric.prepare(ctx, sorted((c for c in new if c.length >= metric.spec.min_frames),
                                           key=lambda s: (s.start, s.end)))
                if plan.pin_first:
                    self._pin_first(plan, new)
            except Exception as e:
                plan.source.error = _forget_locals(e)
                plan.active = False
            else:
                for c in new:
                    try:
                        plan.source.results[c] = clip_result(metric, ctx, c)
                        if self.scorer.cfg.details:  # kept now: the cached values go with the frames
                            plan.source.clip_details[c] = metric.clip_details(ctx, c)
                    except Exception as e:
                        plan.source.results[c] = _forget_locals(e)
            plan.source.seconds += time.perf_counter() - t0
        ctx.release(min((p.pending_from(n) for p in self.plans.values()), default=n))

    def _pin_first(self, plan: _Plan, clips: list[Span]) -> None:
        """Slow-fast fusion encodes the first frame of every clip at the end: keep those features (computing
        DINOv2's now, while the frames are here)."""
        cfg, metric, ctx = self.scorer.cfg, plan.metric, self.ctx
        firsts = sorted({c.start for c in clips if c.length >= metric.spec.min_frames})
        ctx.pinned.update(firsts)
        if metric.spec.name == "subject_consistency" and cfg.slow_fast.subject_encoder == "dinov2" \
                and cfg.slow_fast.mapping_tables.get(metric.spec.name):
            from .slowfast import dinov2_features

            dinov2_features(metric, ctx, firsts)

    def push(self, frames) -> list[dict]:
        f = to_uint8_frames(frames, self.layout)
        if self.ctx is None:
            self.ctx = VideoContext(f, self.fps, self.prompt, self.name)
        else:
            self.ctx.append(f)
        n = self.ctx.num_frames
        if self.expected is not None and n > self.expected:
            raise ConfigError(f"{self.name}: {n} frames pushed, but num_frames={self.expected} were announced.")
        if self.bounded and n:
            if not self.plans:
                self._make_plans()
            self._advance()
        new = []
        while (len(self.emitted) + 1) * self.seg_len <= n:
            k = len(self.emitted)
            seg = Span(k * self.seg_len, (k + 1) * self.seg_len)
            rec = {"index": k, "start_s": seg.start / self.fps, "end_s": seg.end / self.fps, "scores": {},
                   "errors": {}}
            for dim, metric in self.scorer.metrics.items():
                source = self.plans[dim].source if self.bounded else None
                r = self.scorer._score_dim(metric, self.ctx, windows={"video": [seg]}, source=source)
                if r.error:
                    rec["errors"][dim] = r.error
                else:
                    rec["scores"][dim] = r.score
            self.emitted.append(rec)
            new.append(rec)
            if self.on_segment:
                self.on_segment(rec)
        return new

    def finalize(self) -> VideoResult:
        if self.ctx is None or self.ctx.num_frames == 0:
            return VideoResult(video=self.name, prompt=self.prompt, error=f"{self.name}: no frames were pushed.",
                               skipped=dict(self.scorer.skipped))
        n = self.ctx.num_frames
        if self.expected is not None and n != self.expected:
            h, w = self.ctx.hw
            return VideoResult(video=self.name, prompt=self.prompt, fps=self.fps, num_frames=n, height=h, width=w,
                               skipped=dict(self.scorer.skipped),
                               error=f"{self.name}: {n} frames pushed, but num_frames={self.expected} were announced.")
        h, w = self.ctx.hw
        res = VideoResult(video=self.name, prompt=self.prompt, fps=self.fps, num_frames=n, height=h, width=w,
                          skipped=dict(self.scorer.skipped))
        sources = {dim: p.source for dim, p in self.plans.items()} if self.bounded else None
        return self.scorer._score_all(res, self.ctx, sources)


def available_dimensions() -> list[str]:
    return sorted(SPECS)


__all__ = ["Scorer", "StreamingScorer", "VideoResult", "DimensionResult"]
