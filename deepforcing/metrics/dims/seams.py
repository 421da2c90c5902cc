"""Chunk-boundary flicker (no weights): how much more frames change across generated-chunk boundaries
than within chunks.

An autoregressive generator emits its video chunk by chunk; a policy that drops or shifts context when
its window rolls can make every boundary flash. With ``d_i = mean |x_{i+1} - x_i|`` over pixels and
channels (0..255), a clip's score is ``(mean of d_i over pairs that cross a boundary - mean of d_i over
pairs inside a chunk) / 255``: 0 when seams are invisible, positive when boundaries jump.

Boundaries come from ``EvalConfig.seams = (first, later)``: the first chunk decodes to ``first`` pixel
frames and every later one to ``later`` (the pipeline sets it from the chunk size and the decoder's
temporal stride; the default is Wan's 3-latent-frame chunk: 9, then 12).
"""

from __future__ import annotations

import torch

from ..protocol import Span
from ..specs import SPECS
from .base import Metric, MetricInputError, VideoContext

DEFAULT_SEAMS = (9, 12)


def boundary_starts(num_frames: int, first: int, later: int) -> set[int]:
    """Indices of the first frame of every chunk after the first."""
    return set(range(first, num_frames, later))


class ChunkSeamFlicker(Metric):
    spec = SPECS["chunk_seam_flicker"]

    def __init__(self, files, device, cfg):
        super().__init__(files, device, cfg)
        self.first, self.later = tuple(getattr(cfg, "seams", None) or DEFAULT_SEAMS)

    def prepare(self, ctx: VideoContext, spans: list[Span]) -> None:
        pairs = {i for s in spans for i in range(s.start, s.end - 1)}
        todo = self._missing(ctx, "flicker_mae", pairs)  # the same pair differences temporal flickering uses
        cache = ctx.cache["flicker_mae"]
        f = ctx.frames
        for i in todo:
            cache[i] = float((f[i].float() - f[i + 1].float()).abs().mean(dtype=torch.float64))

    def score(self, ctx: VideoContext, span: Span) -> float:
        self.check_span(span)
        starts = boundary_starts(ctx.num_frames, self.first, self.later)
        c = ctx.cache["flicker_mae"]
        across = [c[i] for i in range(span.start, span.end - 1) if i + 1 in starts]
        within = [c[i] for i in range(span.start, span.end - 1) if i + 1 not in starts]
        if not across or not within:
            raise MetricInputError(
                f"frames {span.start}-{span.end} hold {len(across)} chunk boundaries and {len(within)} in-chunk "
                f"frame pairs (chunks of {self.first}, then {self.later} frames); a clip needs both: use longer "
                "clips (clips.seconds) or check EvalConfig.seams")
        return (sum(across) / len(across) - sum(within) / len(within)) / 255.0
