import pytest
import torch

from deepforcing.errors import ConfigError
from deepforcing.scheduler import FlowMatch


def test_self_forcing_warped_steps():
    # sigma(s) = 5s / (1 + 4s) at s = 1, 0.75, 0.5, 0.25
    got = FlowMatch(shift=5.0).step_list([1000, 750, 500, 250])
    assert got == pytest.approx([1000.0, 937.5, 833.3333, 625.0], abs=1e-3)


def test_rolling_forcing_warped_steps():
    got = FlowMatch(shift=5.0).step_list([1000, 800, 600, 400, 200])
    assert got == pytest.approx([1000.0, 952.381, 882.353, 769.231, 555.556], abs=1e-3)


def test_unwarped_steps_are_used_as_given():
    assert FlowMatch(shift=8.0).step_list([1000, 757, 522], warp=False) == [1000.0, 757.0, 522.0]


def test_warp_of_zero_is_zero():
    assert FlowMatch().step_list([0]) == [0.0]


def test_add_noise_and_x0_conversion_by_hand():
    fm = FlowMatch(shift=5.0)
    t = torch.full((1, 2), 937.5)
    x0 = torch.randn(1, 2, 3, 4, 4)
    eps = torch.randn_like(x0)
    xt = fm.add_noise(x0, eps, t)
    assert torch.allclose(xt, 0.0625 * x0 + 0.9375 * eps, atol=1e-6)
    flow = eps - x0  # the model's target
    assert torch.allclose(fm.flow_to_x0(flow, xt, t), x0, atol=1e-5)


def test_sigma_uses_nearest_table_entry():
    fm = FlowMatch(shift=5.0)
    assert float(fm.sigma(torch.tensor([937.4]))) == pytest.approx(0.9375, abs=1e-6)
    assert float(fm.sigma(torch.tensor([0.0]))) == pytest.approx(float(fm.sigmas[-1]))


def test_bad_steps():
    with pytest.raises(ConfigError):
        FlowMatch().step_list([1200])
    with pytest.raises(ConfigError):
        FlowMatch().step_list([])


def test_an_euler_step_along_the_true_flow_lands_on_the_next_noise_level():
    """With the exact flow (noise - x0), one Euler step from level t reaches x0 and the same noise mixed at
    the next level, for any pair of table timesteps."""
    from deepforcing.scheduler import FlowMatch

    sched = FlowMatch(shift=3.0)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 3, 4, 5, 5, generator=g), torch.randn(2, 3, 4, 5, 5, generator=g)
    steps = sched.step_list([1000, 700, 300])
    for t, t_next in zip(steps[:-1], steps[1:], strict=True):
        tt, tn = torch.full((2, 3), t), torch.full((2, 3), t_next)
        x_t = sched.add_noise(x0, eps, tt)
        out = sched.euler_step(eps - x0, x_t, tt, tn)
        assert torch.allclose(out, sched.add_noise(x0, eps, tn), atol=1e-5)
