"""Vectorised paths against the loops they replace (each loop is VBench's formulation, kept as reference)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from metrics_helpers import synthetic_frames

from deepforcing.metrics.dims.base import VideoContext, consistency, consistency_reference
from deepforcing.metrics.dims.flicker import flicker_mae_reference, flicker_maes


def test_flicker_maes_equal_the_pairwise_reference():
    frames = torch.from_numpy(synthetic_frames(40, 64, 80, 0, speed=7))
    ctx = VideoContext(frames[:17], 8)
    ctx.append(frames[17:])  # two chunks: pairs across the chunk boundary too
    todo = [0, 1, 2, 5, 6, 15, 16, 17, 18] + list(range(20, 39))  # gaps, and runs longer than one chunk
    got: dict = {}
    flicker_maes(ctx, todo, got, chunk=8)
    assert sorted(got) == todo
    for i in todo:
        assert got[i] == flicker_mae_reference(ctx, i), i


def test_consistency_equals_the_row_by_row_reference():
    g = torch.Generator().manual_seed(0)
    for n, d in [(2, 8), (17, 512), (160, 768)]:
        f = F.normalize(torch.randn(n, d, generator=g) + 0.3 * torch.randn(1, d, generator=g), dim=-1)
        f[n // 2] = -f[n // 2]  # negative cosines are clamped at 0
        total, pairs = consistency(f)
        ref_total, ref_pairs = consistency_reference(f)
        assert pairs == ref_pairs == n - 1
        assert abs(total / pairs - ref_total / ref_pairs) <= 1e-7, (n, total, ref_total)
    assert consistency(f[:1]) == (0.0, 0)
