"""Temporal flickering (no weights): (255 - mean over consecutive pairs of mean |x_t+1 - x_t|) / 255.

With ``clips.static_filter`` (VBench-Long's ``--static_filter_flag``) only static clips count. VBench-Long's
static test on one clip of N frames: RAFT flow (20 iterations) on every consecutive pair and on the two
wrap-around pairs (first -> last, then last -> first); each pair's score is the mean of
its top 2 % flow magnitudes; with thres = 3 * min(H, W) / 256 and count = round(2 N / 16), the clip is
static unless more than ``count`` consecutive pairs exceed thres, or a wrap pair exceeds 2 * count * thres.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..protocol import Span
from ..specs import SPECS
from .base import Metric, VideoContext


def static_pairs(span: Span) -> list[tuple[int, int]]:
    """The ordered pairs VBench-Long's static filter runs RAFT on for one clip."""
    i = list(range(span.start, span.end))
    return list(zip(i[:-1], i[1:], strict=True)) + [(i[0], i[-1]), (i[-1], i[0])]


def is_static(scores: list[float], hw: tuple[int, int], num_frames: int) -> bool:
    """VBench-Long's ``StaticFilter.set_params`` + ``check_static`` on the pair scores of one clip."""
    thres = 3.0 * (min(hw) / 256.0)
    count_num = round(2 * (num_frames / 16.0))
    count = 0
    for s in scores[:-2]:
        if s > thres:
            count += 1
        if count > count_num:
            return False
    return not any(s > thres * count_num * 2 for s in scores[-2:])


def flicker_maes(ctx: VideoContext, todo: list[int], cache: dict, chunk: int = 16) -> None:
    """cache[i] = mean |frame i+1 - frame i| (exact: integer sums, one float64 division), for every i in
    ``todo``: runs of consecutive pairs in chunks, in numpy (one thread, no small torch ops, which slow down
    far more than numpy's when the machine is oversubscribed). Equal to ``flicker_mae_reference``."""
    k = 0
    while k < len(todo):
        run = [todo[k]]
        while k + len(run) < len(todo) and todo[k + len(run)] == run[-1] + 1 and len(run) < chunk:
            run.append(todo[k + len(run)])
        x = ctx.take(range(run[0], run[-1] + 2)).numpy().astype(np.int16)
        d = np.abs(x[1:] - x[:-1]).reshape(len(run), -1)
        sums = d.sum(axis=1, dtype=np.int64)
        for i, s in zip(run, sums, strict=True):
            cache[i] = float(s) / d.shape[1]
        k += len(run)


def flicker_mae_reference(ctx: VideoContext, i: int) -> float:
    """Mean |frame i+1 - frame i| with torch, pair by pair (the reference for ``flicker_maes``)."""
    a = ctx.frame(i).float()
    b = ctx.frame(i + 1).float()
    return float((a - b).abs().mean(dtype=torch.float64))


class TemporalFlickering(Metric):
    spec = SPECS["temporal_flickering"]

    def __init__(self, files: dict[str, Path], device: str, cfg):
        super().__init__(files, device, cfg)
        self.static_filter = bool(cfg.clips.static_filter) if cfg is not None else False
        self.max_clips = cfg.clips.static_max_clips if self.static_filter else None
        if self.static_filter:
            from .dynamic import load_raft

            self.vb = load_raft(str(files["raft_things"]), device)

    def prepare(self, ctx: VideoContext, spans: list[Span]) -> None:
        pairs = {i for s in spans for i in range(s.start, s.end - 1)}
        todo = self._missing(ctx, "flicker_mae", pairs)
        flicker_maes(ctx, todo, ctx.cache["flicker_mae"])
        if self.static_filter:
            from .dynamic import raft_pairs

            raft_pairs(self.vb, ctx, [p for s in spans if s.length >= 2 for p in static_pairs(s)], self.device,
                       cfg=self.cfg)

    def keeps(self, ctx: VideoContext, span: Span) -> bool:
        if not self.static_filter:
            return True
        if span.length < 2:
            return False
        scores = [ctx.cache["raft"][p]["top2"] for p in static_pairs(span)]
        return is_static(scores, ctx.hw, span.length)

    def score(self, ctx: VideoContext, span: Span) -> float:
        self.check_span(span)
        c = ctx.cache["flicker_mae"]
        maes = [c[i] for i in range(span.start, span.end - 1)]
        return (255.0 - sum(maes) / len(maes)) / 255.0
