"""Toy-world metrics: the toy world's rules (deepforcing.toyworld.rules) applied to decoded frames.

No learned weights. Each frame is read once (nearest world colour per pixel, blobs, centroids) and
cached on the video context; clips, segments and drift windows reuse the readings. The metrics that
compare with what was asked for read the prompt with the world's grammar; a prompt outside the world's
vocabulary makes them report an error for that video (they are for toy-world videos only).
"""

from __future__ import annotations

import numpy as np

from deepforcing.errors import ConfigError

from ..protocol import Span, frames_per_clip
from ..specs import SPECS
from .base import Metric, MetricInputError, VideoContext


def _readings(ctx: VideoContext, idx) -> list:
    from deepforcing.toyworld.rules import read_frame

    cache = ctx.cache.setdefault("toy_reading", {})
    frames = None
    for i in idx:
        if i not in cache:
            frames = ctx.frames if frames is None else frames
            cache[i] = read_frame(frames[i].numpy())
    return [cache[i] for i in idx]


class ToyMetric(Metric):
    def validate(self, ctx: VideoContext) -> None:
        super().validate(ctx)
        if self.spec.needs_prompt:
            self.asked(ctx)

    def asked(self, ctx: VideoContext):
        from deepforcing.toyworld.world import parse_prompt

        try:
            return parse_prompt(ctx.prompt or "")
        except ConfigError as e:
            raise MetricInputError(f"not a toy-world prompt, so {self.spec.name} has no ground truth: {e}") from None

    def prepare(self, ctx: VideoContext, spans: list[Span]) -> None:
        _readings(ctx, sorted({i for s in spans for i in range(s.start, s.end)}))


class ToyObjectCount(ToyMetric):
    """Fraction of frames showing as many objects as the prompt names."""

    spec = SPECS["toy_object_count"]

    def score(self, ctx: VideoContext, span: Span) -> float:
        n = len(self.asked(ctx).objects)
        return float(np.mean([r.count == n for r in _readings(ctx, range(span.start, span.end))]))


class ToyColourFidelity(ToyMetric):
    """Fraction of frames whose object colours are exactly the prompt's and whose background is the prompt's."""

    spec = SPECS["toy_colour_fidelity"]

    def score(self, ctx: VideoContext, span: Span) -> float:
        asked = self.asked(ctx)
        return float(np.mean([r.colours == asked.colours and r.background == asked.background
                              for r in _readings(ctx, range(span.start, span.end))]))


class ToyMotion(ToyMetric):
    """Mean object speed over consecutive frames, relative to the middle of the prompt's speed class."""

    spec = SPECS["toy_motion"]

    def score(self, ctx: VideoContext, span: Span) -> float:
        from deepforcing.toyworld.rules import speeds
        from deepforcing.toyworld.world import SPEEDS

        self.check_span(span)
        lo, hi = SPEEDS[self.asked(ctx).speed]
        r = _readings(ctx, range(span.start, span.end))
        steps = [d for a, b in zip(r[:-1], r[1:], strict=True) for d in speeds(a, b, max_step=3 * max(
            v for _, v in SPEEDS.values()))]
        return float(np.mean(steps)) / ((lo + hi) / 2) if steps else 0.0


class ToySharpness(ToyMetric):
    """Fraction of pixels within the purity distance of a world colour."""

    spec = SPECS["toy_sharpness"]

    def score(self, ctx: VideoContext, span: Span) -> float:
        return float(np.mean([r.purity for r in _readings(ctx, range(span.start, span.end))]))


class ToyColourDrift(ToyMetric):
    """Total-variation distance between the world-colour histogram of the clip and that of the video's first
    drift segment (0: the same colours in the same amounts as at the start)."""

    spec = SPECS["toy_colour_drift"]

    def first_segment(self, ctx: VideoContext) -> Span:
        seconds = self.cfg.drift.segment_seconds if self.cfg is not None else 5.0
        return Span(0, min(ctx.num_frames, frames_per_clip(ctx.fps, seconds)))

    def prepare(self, ctx: VideoContext, spans: list[Span]) -> None:
        super().prepare(ctx, [*spans, self.first_segment(ctx)])

    def score(self, ctx: VideoContext, span: Span) -> float:
        ref = self.first_segment(ctx)
        h0 = np.mean([r.histogram for r in _readings(ctx, range(ref.start, ref.end))], axis=0)
        h = np.mean([r.histogram for r in _readings(ctx, range(span.start, span.end))], axis=0)
        return float(0.5 * np.abs(h - h0).sum())
