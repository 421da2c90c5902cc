"""Hand-computed cases: dynamic degree's threshold and count rule on constructed flows, the consistency
formula on constructed features, the aesthetic/imaging aggregation, the registry contract."""

from __future__ import annotations

import math

import pytest
import torch

from deepforcing.metrics import METRICS, SPECS
from deepforcing.metrics.dims.base import consistency
from deepforcing.metrics.dims.dynamic import decide, sample_indices
from deepforcing.metrics.protocol import Span


@pytest.fixture(scope="module")
def vbench_dd():
    from vbench.dynamic_degree import DynamicDegree

    return DynamicDegree.__new__(DynamicDegree)  # the rule's methods need no network


def flow_with_top(h: int, w: int, base: float, top: float, frac: float = 0.05) -> torch.Tensor:
    """A flow field whose magnitudes are ``base`` everywhere except ``frac`` of the pixels at ``top``."""
    mag = torch.full((h * w,), base)
    mag[: int(h * w * frac)] = top
    f = torch.zeros(1, 2, h, w)
    f[0, 0] = mag.reshape(h, w)  # horizontal flow only: |f| = u
    return f


def test_pair_score_is_mean_of_top_5_percent(vbench_dd):
    img = torch.zeros(1, 3, 64, 64)
    assert vbench_dd.get_score(img, flow_with_top(64, 64, 1.0, 9.0)) == pytest.approx(9.0)
    # top 5 % of 4096 = 204 pixels; 102 at 10 and the rest at 2 -> (102*10 + 102*2) / 204 = 6
    f = flow_with_top(64, 64, 2.0, 10.0, frac=0.025)
    assert vbench_dd.get_score(img, f) == pytest.approx(6.0)


def test_threshold_scales_with_short_side(vbench_dd):
    # 480x832: threshold 6 * 480 / 256 = 11.25 px; 16 frames -> 4 pairs needed
    hw = (480, 832)
    assert decide(vbench_dd, hw, 16, [11.3] * 4 + [0.0] * 11) is True
    assert decide(vbench_dd, hw, 16, [11.25] * 15) is False  # strictly greater than the threshold
    assert decide(vbench_dd, hw, 16, [12.0] * 3 + [0.0] * 12) is False
    assert vbench_dd.params == {"thres": 11.25, "count_num": 4}
    # 256x256: threshold 6
    assert decide(vbench_dd, (256, 256), 16, [6.01] * 4) is True


def test_count_rule_rounds_like_python(vbench_dd):
    for n, need in [(16, 4), (8, 2), (10, 2), (12, 3), (6, 2), (2, 0), (40, 10)]:  # round(2.5) == 2
        decide(vbench_dd, (256, 256), n, [])
        assert vbench_dd.params["count_num"] == need, n
    # count_num 0 with one pair: dynamic whatever the flow; no pair at all: static
    assert decide(vbench_dd, (256, 256), 2, [0.0]) is True
    assert decide(vbench_dd, (256, 256), 1, []) is False


def test_sampling_every_round_fps_over_8():
    assert sample_indices(Span(0, 32), 16) == list(range(0, 32, 2))
    assert sample_indices(Span(10, 20), 8) == list(range(10, 20))
    assert sample_indices(Span(0, 60), 30) == list(range(0, 60, 4))  # round(3.75) = 4
    assert sample_indices(Span(0, 24), 24) == list(range(0, 24, 3))


def test_consistency_formula_hand_computed():
    s = 1 / math.sqrt(2)
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [s, s], [-1.0, 0.0]])
    total, n = consistency(f)
    # i=1: (max(0, 0) + max(0, 0))/2 = 0; i=2: (s + s)/2 = s; i=3: (max(0,-s) + max(0,-1))/2 = 0
    assert n == 3 and total == pytest.approx(s)
    same = torch.tensor([[0.6, 0.8]] * 5)
    assert consistency(same) == (pytest.approx(4.0), 4)


def test_registry_entries_declare_contract():
    assert set(METRICS.names()) == set(SPECS)
    for name in METRICS.names():
        spec = SPECS[name]
        assert spec.direction in ("higher", "lower") and spec.version and spec.aggregation
        cls = METRICS.get(name)  # lazy import happens here
        assert cls.spec is spec
    with pytest.raises(ValueError, match="Did you mean"):
        METRICS.check("imaging_qualty")
