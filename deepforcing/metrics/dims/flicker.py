"""Temporal flickering (no weights): (255 - mean over consecutive pairs of mean |x_t+1 - x_t|) / 255."""

from __future__ import annotations

from ..protocol import Span
from ..specs import SPECS
from .base import Metric, VideoContext


class TemporalFlickering(Metric):
    spec = SPECS["temporal_flickering"]

    def prepare(self, ctx: VideoContext, spans: list[Span]) -> None:
        pairs = {i for s in spans for i in range(s.start, s.end - 1)}
        todo = self._missing(ctx, "flicker_mae", pairs)
        cache = ctx.cache["flicker_mae"]
        f = ctx.frames
        for i in todo:
            a = f[i].float()
            b = f[i + 1].float()
            cache[i] = float((a - b).abs().mean(dtype=torch_float64()))

    def score(self, ctx: VideoContext, span: Span) -> float:
        self.check_span(span)
        c = ctx.cache["flicker_mae"]
        maes = [c[i] for i in range(span.start, span.end - 1)]
        return (255.0 - sum(maes) / len(maes)) / 255.0


def torch_float64():
    import torch

    return torch.float64
