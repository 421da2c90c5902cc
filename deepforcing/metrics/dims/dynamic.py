"""Dynamic degree: RAFT (vbench's vendored network, 20 iterations) on frames sampled at ~8 fps; a clip is
dynamic (1) when at least round(4 N / 16) pairs have a top-5 % flow magnitude above 6 * min(H, W) / 256.

The threshold and count rule are vbench's own ``DynamicDegree`` methods; the pair score is its formula
(top-5 % mean flow magnitude, checked pair by pair against ``get_score`` in the tests). RAFT runs once per
ordered frame pair (batched); what the flow is reduced to -- the top-5 % mean used here and the top-2 %
mean of VBench-Long's static filter -- is cached per pair in ``ctx.cache["raft"]``, so the two share flows.

A clip's score is a yes/no count, so once enough pairs are above the threshold (dynamic), or too few pairs
are left to get there (static), the remaining pairs cannot change it: with ``EvalConfig.flow_early_exit``
(default) RAFT stops there, in frame order, in batches no larger than the fewest pairs that could decide.
The score is vbench's exactly; the clip's details list the flows computed (``None`` for the pairs
skipped). ``flow_early_exit=False`` computes every pair.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from ..protocol import Span
from ..specs import SPECS
from .base import Metric, MetricInputError, VideoContext, gpu_autocast, pairs_per_forward


def sample_indices(span: Span, fps: float) -> list[int]:
    """VBench: keep every ``max(1, round(fps / 8))``-th frame from the clip's first frame."""
    return list(range(span.start, span.end, max(1, round(fps / 8))))


@functools.lru_cache(maxsize=2)
def load_raft(weights: str, device: str):
    """vbench's ``DynamicDegree`` wrapper: RAFT (vendored, ``small=False``) loaded exactly as vbench does,
    plus its ``get_score`` / ``set_params`` / ``check_move``. Shared by every metric that needs flow."""
    from easydict import EasyDict
    from vbench.dynamic_degree import DynamicDegree as VBenchDD

    args = EasyDict(model=weights, small=False, mixed_precision=False, alternate_corr=False)
    return VBenchDD(args, device)


def top_means(flow: torch.Tensor, fractions: tuple[float, ...]) -> list[float]:
    """Means of the largest ``int(h * w * f)`` flow magnitudes of one [2,H,W] flow, for each fraction f,
    from one sort (float32 numpy, as VBench computes them). With 0.05 this is ``DynamicDegree.get_score``;
    with 0.02, VBench-Long's ``StaticFilter.get_score``."""
    f = flow.permute(1, 2, 0).cpu().numpy()
    rad = np.sqrt(np.square(f[:, :, 0]) + np.square(f[:, :, 1]))
    h, w = rad.shape
    desc = abs(np.sort(-rad.flatten()))
    return [float(np.mean(desc[: int(h * w * fr)])) for fr in fractions]


def raft_test_flow(model, fmap1: torch.Tensor, fmap2: torch.Tensor, cnet: torch.Tensor,
                   iters: int = 20) -> torch.Tensor:
    """The full-resolution flow RAFT's ``forward(..., test_mode=True)`` returns, from the feature maps of
    the two frames (``model.fnet``) and the context features of the first (``model.cnet``).

    The same operations on the same values, minus what test mode throws away: the upsampling mask and the
    convex upsampling are computed for the last iteration only (``forward`` computes them in every
    iteration and returns the last); per-frame encoder features come in, so a frame shared by two pairs is
    encoded once. (vbench's RAFT runs with ``mixed_precision=False``: its autocast blocks are no-ops.)"""
    from vbench.third_party.RAFT.core.corr import CorrBlock

    hdim, cdim = model.hidden_dim, model.context_dim
    corr_fn = CorrBlock(fmap1.float(), fmap2.float(), radius=model.args.corr_radius)
    net, inp = torch.split(cnet, [hdim, cdim], dim=1)
    net, inp = torch.tanh(net), torch.relu(inp)
    n, _, h8, w8 = fmap1.shape
    coords0, coords1 = model.initialize_flow(torch.empty(n, 3, 8 * h8, 8 * w8, device=fmap1.device))
    ub = model.update_block
    for _ in range(iters):
        corr = corr_fn(coords1)
        flow = coords1 - coords0
        motion = ub.encoder(flow, corr)
        net = ub.gru(net, torch.cat([inp, motion], dim=1))
        coords1 = coords1 + ub.flow_head(net)
    mask = 0.25 * ub.mask(net)
    return model.upsample_flow(coords1 - coords0, mask)


def raft_pairs(vb, ctx: VideoContext, pairs, device: str, batch: int | None = None, fast: bool = True,
               cfg=None, plan=None) -> None:
    """Run RAFT (20 iterations, test mode, frames padded to /8 as VBench pads them) on every ordered pair
    not cached yet; cache ``{"top5": ..., "top2": ...}`` per pair in ``ctx.cache["raft"]``.

    ``fast`` (default): ``raft_test_flow`` with each frame's feature map computed once per batch of pairs
    (consecutive pairs share a frame); ``fast=False``: RAFT's own ``forward`` per batch of pairs (the
    reference; the two agree to float rounding, tests). ``plan(cache)``, when given, is asked before each
    batch (pairs in frame order) how many pairs the batch may hold at most; 0 stops."""
    from vbench.third_party.RAFT.core.utils_core.utils import InputPadder

    cache = ctx.cache.setdefault("raft", {})
    todo = sorted(p for p in set(pairs) if p not in cache)
    if not todo:
        return
    h, w = ctx.hw
    batch = batch or pairs_per_forward(cfg, device, (h, w))
    padder = InputPadder((1, 3, h, w))
    model = vb.model.module if hasattr(vb.model, "module") else vb.model
    kept: dict[int, torch.Tensor] = {}  # feature maps of frames the previous batch encoded
    cl = str(device).startswith("cuda") and getattr(cfg, "gpu_channels_last", False)
    layout = (lambda x: x.contiguous(memory_format=torch.channels_last)) if cl else (lambda x: x)  # noqa: E731
    if cl:
        model.to(memory_format=torch.channels_last)
    start = 0
    while start < len(todo):
        n = batch if plan is None else min(batch, plan(cache))
        if n <= 0:
            break
        b, start = todo[start : start + n], start + n
        with torch.no_grad(), gpu_autocast(cfg, device):
            if fast:
                frames = sorted({i for p in b for i in p})
                new = [i for i in frames if i not in kept]
                fmaps = dict(kept)
                if new:
                    x = padder.pad(ctx.float_tchw(new).to(device))[0]
                    x = layout((2 * (x / 255.0) - 1.0).contiguous())
                    fmaps.update(zip(new, model.fnet(x).float(), strict=True))
                x0 = padder.pad(ctx.float_tchw([i for i, _ in b]).to(device))[0]
                cnet = model.cnet(layout((2 * (x0 / 255.0) - 1.0).contiguous())).float()
                flow = raft_test_flow(model, torch.stack([fmaps[i] for i, _ in b]),
                                      torch.stack([fmaps[j] for _, j in b]), cnet)
                kept = {i: fmaps[i] for i in (max(b[-1]),)}
            else:
                x0 = ctx.float_tchw([i for i, _ in b]).to(device)
                x1 = ctx.float_tchw([j for _, j in b]).to(device)
                x0, x1 = padder.pad(x0, x1)
                _, flow = vb.model(x0, x1, iters=20, test_mode=True)
        for k, p in enumerate(b):
            top5, top2 = top_means(flow[k], (0.05, 0.02))
            cache[p] = {"top5": top5, "top2": top2}


class DynamicDegree(Metric):
    spec = SPECS["dynamic_degree"]

    def __init__(self, files: dict[str, Path], device: str, cfg):
        super().__init__(files, device, cfg)
        self.vb = load_raft(str(files["raft_things"]), device)

    def prepare(self, ctx: VideoContext, spans: list[Span]) -> None:
        if not getattr(self.cfg, "flow_early_exit", False):
            pairs = set()
            for s in spans:
                idx = sample_indices(s, ctx.fps)
                pairs |= set(zip(idx[:-1], idx[1:], strict=True))
            raft_pairs(self.vb, ctx, pairs, self.device, cfg=self.cfg)
            return
        for s in spans:  # clip by clip, each stopping once its count is decided
            idx = sample_indices(s, ctx.fps)
            pairs = list(zip(idx[:-1], idx[1:], strict=True))
            threshold, needed = rule(self.vb, ctx.hw, len(idx))
            raft_pairs(self.vb, ctx, pairs, self.device, cfg=self.cfg,
                       plan=lambda cache, pairs=pairs, t=threshold, n=needed: pairs_to_decide(
                           [cache[p]["top5"] for p in pairs if p in cache], len(pairs), t, n))

    def pair_scores(self, ctx: VideoContext, span: Span) -> list[float | None]:
        """Top-5 % flow of each sampled pair, in frame order; ``None`` for a pair the early exit skipped."""
        idx = sample_indices(span, ctx.fps)
        cache = ctx.cache["raft"]
        return [cache[p]["top5"] if p in cache else None for p in zip(idx[:-1], idx[1:], strict=True)]

    def clip_details(self, ctx: VideoContext, span: Span) -> dict:
        """Per sampled pair: the two frame indices, its top-5 % mean flow magnitude (px; ``None`` where the
        count was decided without it), and the threshold and count VBench's rule compares them with."""
        idx = sample_indices(span, ctx.fps)
        pairs = list(zip(idx[:-1], idx[1:], strict=True))
        threshold, needed = rule(self.vb, ctx.hw, len(idx))
        scores = self.pair_scores(ctx, span)
        return {"flow_pairs": [list(p) for p in pairs], "flow_top5": scores,
                "flow_pairs_computed": sum(x is not None for x in scores),
                "flow_threshold": threshold, "flow_count_needed": needed}

    def score(self, ctx: VideoContext, span: Span) -> float:
        self.check_span(span)
        idx = sample_indices(span, ctx.fps)
        if len(idx) < 2:
            raise MetricInputError(
                f"a clip of {span.length} frames at {ctx.fps:g} fps keeps {len(idx)} frame after sampling at "
                "~8 fps; dynamic degree needs at least 2. Use longer clips."
            )
        scores = self.pair_scores(ctx, span)
        known = [x for x in scores if x is not None]
        if len(known) < len(scores):  # the early exit skipped some: the count must be decided without them
            threshold, needed = rule(self.vb, ctx.hw, len(idx))
            if settled(known, len(scores), threshold, needed) is None:
                raise RuntimeError(f"dynamic degree: {len(scores) - len(known)} flow pair(s) of frames "
                                   f"{span.start}-{span.end} were not computed and the count is not decided")
        return float(decide(self.vb, ctx.hw, len(idx), known))


def rule(vb, hw: tuple[int, int], num_frames: int) -> tuple[float, int]:
    """VBench's threshold (px) and number of pairs above it that make a clip of ``num_frames`` sampled
    frames of size ``hw`` dynamic (``DynamicDegree.set_params``)."""
    vb.set_params(frame=torch.empty(1, 3, *hw), count=num_frames)
    return float(vb.params["thres"]), int(vb.params["count_num"])


def settled(known: list[float], total: int, threshold: float, needed: int) -> bool | None:
    """What VBench's count rule will say for a clip of ``total`` pairs of which ``known`` are computed,
    whatever the rest are: True (dynamic: ``needed`` pairs above ``threshold`` already, and at least one
    pair, as ``check_move`` needs), False (static: too few pairs left to get there), None (not yet)."""
    above = sum(x > threshold for x in known)
    if known and above >= needed:
        return True
    if above + (total - len(known)) < needed:
        return False
    return None


def pairs_to_decide(known: list[float], total: int, threshold: float, needed: int) -> int:
    """The fewest further pairs that could decide the count (0: decided): the pairs still needed above the
    threshold, or the pairs below it that would leave too few to get there, whichever is fewer. Batches of
    this size never compute a pair the decision did not need."""
    if settled(known, total, threshold, needed) is not None:
        return 0
    above, left = sum(x > threshold for x in known), total - len(known)
    return max(1, min(needed - above, left - (needed - above) + 1))


def decide(vb, hw: tuple[int, int], num_frames: int, scores: list[float]) -> bool:
    """VBench's rule (``DynamicDegree.set_params`` + ``check_move``) for frames of size ``hw``."""
    vb.set_params(frame=torch.empty(1, 3, *hw), count=num_frames)
    return vb.check_move(scores)
