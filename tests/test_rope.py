"""3-D RoPE: composition, band layout, split widths, the reference table limit."""

import math

import pytest
import torch

from deepforcing.errors import ConfigError
from deepforcing.model import ModelConfig, Rope3D, TokenPositions


def cfg_with_head_dim(d: int) -> ModelConfig:
    return ModelConfig(dim=2 * d, num_heads=2, ffn_dim=8, freq_dim=8, num_layers=1, text_dim=8, text_len=4,
                       latent_hw=(4, 4))


@pytest.mark.parametrize("d, split", [(128, (44, 42, 42)), (32, (12, 10, 10)), (16, (8, 4, 4)), (64, (24, 20, 20))])
def test_split_widths(d, split):
    cfg = cfg_with_head_dim(d)
    assert cfg.rope_split == split
    assert sum(cfg.rope_split) == d


@pytest.mark.parametrize("d", [16, 32, 128])
def test_rotate_temporal_composes_with_apply(d):
    rope = Rope3D(cfg_with_head_dim(d))
    g = torch.Generator().manual_seed(d)
    n = 40
    x = torch.randn(2, n, 3, d, generator=g, dtype=torch.float64)
    p = torch.randint(0, 300, (n,), generator=g)
    h = torch.randint(0, 30, (n,), generator=g)
    w = torch.randint(0, 52, (n,), generator=g)
    delta = torch.randint(-200, 700, (n,), generator=g)
    lhs = rope.rotate_temporal(rope.apply(x, p, h, w), delta)
    rhs = rope.apply(x, p + delta, h, w)
    assert torch.allclose(lhs, rhs, atol=1e-12, rtol=0)


def test_rotate_temporal_leaves_spatial_bands_untouched():
    d = 128
    rope = Rope3D(cfg_with_head_dim(d))
    x = torch.randn(1, 10, 2, d, dtype=torch.float64)
    y = rope.rotate_temporal(x, 37.0)
    t_width = rope.split[0]
    assert torch.equal(x[..., t_width:], y[..., t_width:])
    assert not torch.allclose(x[..., :t_width], y[..., :t_width])


def test_interleaved_pairs_and_frequencies_by_hand():
    """Pair j of the temporal band rotates (x[2j], x[2j+1]) by p * 10000^(-2j/width)."""
    d = 32
    rope = Rope3D(cfg_with_head_dim(d))
    x = torch.zeros(1, 1, 1, d, dtype=torch.float64)
    x[..., 2] = 1.0  # pair 1, real part
    p, h, w = 5, 2, 3
    y = rope.apply(x, torch.tensor([p]), torch.tensor([h]), torch.tensor([w]))
    tw = rope.split[0]
    theta = p * 10000 ** (-2 * 1 / tw)
    assert math.isclose(float(y[..., 2]), math.cos(theta), abs_tol=1e-15)
    assert math.isclose(float(y[..., 3]), math.sin(theta), abs_tol=1e-15)
    # height band: first pair after the temporal band rotates by h * 10000^0 = h
    x = torch.zeros(1, 1, 1, d, dtype=torch.float64)
    x[..., tw] = 1.0
    y = rope.apply(x, torch.tensor([p]), torch.tensor([h]), torch.tensor([w]))
    assert math.isclose(float(y[..., tw]), math.cos(h), abs_tol=1e-15)
    assert math.isclose(float(y[..., tw + 1]), math.sin(h), abs_tol=1e-15)
    # width band
    hw_ = rope.split[1]
    x = torch.zeros(1, 1, 1, d, dtype=torch.float64)
    x[..., tw + hw_ + 1] = 1.0  # imaginary part of the first width pair
    y = rope.apply(x, torch.tensor([p]), torch.tensor([h]), torch.tensor([w]))
    assert math.isclose(float(y[..., tw + hw_]), -math.sin(w), abs_tol=1e-15)


def test_matches_table_lookup_of_the_reference_layout():
    """Same numbers as a 1024-row complex table indexed by (t, h, w) with interleaved pairs."""
    d = 128
    cfg = cfg_with_head_dim(d)
    rope = Rope3D(cfg)

    def table(width):
        inv = 1.0 / torch.pow(10000.0, torch.arange(0, width, 2, dtype=torch.float64).div(width))
        ang = torch.outer(torch.arange(1024, dtype=torch.float64), inv)
        return torch.polar(torch.ones_like(ang), ang)

    tt, th, tw = (table(s) for s in cfg.rope_split)
    f, gh, gw, start = 3, 4, 5, 17
    pos = TokenPositions.of_frames(torch.arange(start, start + f), (gh, gw))
    freqs = torch.cat([tt[pos.t], th[pos.h], tw[pos.w]], dim=1)  # [N, 64]
    x = torch.randn(1, f * gh * gw, 2, d, dtype=torch.float64)
    expect = torch.view_as_real(torch.view_as_complex(x.reshape(1, -1, 2, d // 2, 2)) * freqs[None, :, None]).flatten(3)
    got = rope.apply(x, pos.t, pos.h, pos.w)
    assert torch.allclose(got, expect, atol=1e-12, rtol=0)


def test_no_position_limit_by_default_and_reference_limit_on_request():
    rope = Rope3D(cfg_with_head_dim(32))
    x = torch.randn(1, 2, 1, 32, dtype=torch.float64)
    far = torch.tensor([5000, 5001])
    zeros = torch.zeros(2, dtype=torch.long)
    assert torch.isfinite(rope.apply(x, far, zeros, zeros)).all()
    limited = Rope3D(cfg_with_head_dim(32), max_pos=1024)
    limited.apply(x, torch.tensor([0, 1023]), zeros, zeros)
    with pytest.raises(ConfigError, match="1024"):
        limited.apply(x, torch.tensor([1023, 1024]), zeros, zeros)


@pytest.mark.parametrize("d", [16, 128])
def test_float32_tables_agree_with_the_float64_reference(d):
    """The fast path (float32 cos/sin tables per position, float32 arithmetic) stays within a few float32
    ulps of the float64 rotation, for positions past the reference table, negative ones (re-aligned
    sinks) and tables grown on demand."""
    rope = Rope3D(cfg_with_head_dim(d))
    g = torch.Generator().manual_seed(d)
    eps = torch.finfo(torch.float32).eps
    for t_range in [(0, 21), (0, 5000), (-40, 30)]:  # the last two grow the first table
        n = 300
        x = torch.randn(2, n, 3, d, generator=g)
        t = torch.randint(*t_range, (n,), generator=g)
        h = torch.randint(0, 30, (n,), generator=g)
        w = torch.randint(0, 52, (n,), generator=g)
        exact = Rope3D.rotate(x.double(), rope.angles(t, h, w))
        fast = Rope3D.rotate_fast(x, rope.phases(t, h, w))
        assert fast.dtype == torch.float32
        # each output is x0*cos - x1*sin: two roundings of cos/sin, two products, one sum
        bound = 8 * eps * float(x.abs().max())
        assert float((fast.double() - exact).abs().max()) <= bound
