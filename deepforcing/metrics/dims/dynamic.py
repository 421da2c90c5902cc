"""Dynamic degree: RAFT (vbench's vendored network, 20 iterations) on frames sampled at ~8 fps; a clip is
dynamic (1) when at least round(4 N / 16) pairs have a top-5 % flow magnitude above 6 * min(H, W) / 256.

The pair score, threshold and count rule are vbench's own ``DynamicDegree`` methods; flows are cached
per frame pair and batched.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..protocol import Span
from ..specs import SPECS
from .base import Metric, MetricInputError, VideoContext, batched


def sample_indices(span: Span, fps: float) -> list[int]:
    """VBench: keep every ``max(1, round(fps / 8))``-th frame from the clip's first frame."""
    return list(range(span.start, span.end, max(1, round(fps / 8))))


class DynamicDegree(Metric):
    spec = SPECS["dynamic_degree"]

    def __init__(self, files: dict[str, Path], device: str, cfg):
        super().__init__(files, device, cfg)
        from easydict import EasyDict
        from vbench.dynamic_degree import DynamicDegree as VBenchDD

        args = EasyDict(model=str(files["raft_things"]), small=False, mixed_precision=False, alternate_corr=False)
        self.vb = VBenchDD(args, device)  # loads RAFT exactly as vbench does

    def prepare(self, ctx: VideoContext, spans: list[Span]) -> None:
        from vbench.third_party.RAFT.core.utils_core.utils import InputPadder

        pairs = set()
        for s in spans:
            idx = sample_indices(s, ctx.fps)
            pairs |= set(zip(idx[:-1], idx[1:], strict=True))
        todo = sorted(p for p in pairs if p not in ctx.cache.setdefault("raft", {}))
        if not todo:
            return
        h, w = ctx.hw
        padder = InputPadder((1, 3, h, w))
        for b in batched(todo, 4):
            x0 = ctx.float_tchw([i for i, _ in b]).to(self.device)
            x1 = ctx.float_tchw([j for _, j in b]).to(self.device)
            x0, x1 = padder.pad(x0, x1)
            with torch.no_grad():
                _, flow = self.vb.model(x0, x1, iters=20, test_mode=True)
            for k, p in enumerate(b):
                ctx.cache["raft"][p] = self.vb.get_score(x0[k : k + 1], flow[k : k + 1])

    def pair_scores(self, ctx: VideoContext, span: Span) -> list[float]:
        idx = sample_indices(span, ctx.fps)
        return [ctx.cache["raft"][p] for p in zip(idx[:-1], idx[1:], strict=True)]

    def score(self, ctx: VideoContext, span: Span) -> float:
        self.check_span(span)
        idx = sample_indices(span, ctx.fps)
        if len(idx) < 2:
            raise MetricInputError(
                f"a clip of {span.length} frames at {ctx.fps:g} fps keeps {len(idx)} frame after sampling at "
                "~8 fps; dynamic degree needs at least 2. Use longer clips."
            )
        return float(decide(self.vb, ctx.hw, len(idx), self.pair_scores(ctx, span)))


def decide(vb, hw: tuple[int, int], num_frames: int, scores: list[float]) -> bool:
    """VBench's rule (``DynamicDegree.set_params`` + ``check_move``) for frames of size ``hw``."""
    vb.set_params(frame=torch.empty(1, 3, *hw), count=num_frames)
    return vb.check_move(scores)
