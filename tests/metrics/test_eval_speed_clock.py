"""benchmarks/eval_speed.py's ForwardClock: the time inside network forwards that its breakdown table reports.
A forward nested in another is counted once, torchvision's transforms (modules too) are not counted, and
the hooks are gone afterwards."""

import importlib.util
import time
from pathlib import Path

import torch
from torchvision import transforms

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "eval_speed.py"


def _clock_class():
    spec = importlib.util.spec_from_file_location("eval_speed_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ForwardClock


class Sleep(torch.nn.Module):
    def __init__(self, seconds: float, inner: torch.nn.Module | None = None):
        super().__init__()
        self.seconds, self.inner = seconds, inner

    def forward(self, x):
        time.sleep(self.seconds)
        return self.inner(x) if self.inner is not None else x


def test_forward_clock_counts_outermost_forwards_only():
    ForwardClock = _clock_class()
    net = Sleep(0.05, Sleep(0.05))  # 0.1 s in one top-level forward; the inner 0.05 s is part of it
    resize = transforms.Resize(8, antialias=False)
    x = torch.rand(1, 3, 16, 16)
    with ForwardClock() as fc:
        t0 = time.perf_counter()
        net(x)
        resize(x)  # a transform: not a network forward
        time.sleep(0.05)  # outside any forward
        net(x)
        wall = time.perf_counter() - t0
    assert 0.2 <= fc.total < wall - 0.04, (fc.total, wall)
    with ForwardClock() as only_transform:
        resize(x)
    assert only_transform.total == 0.0
    before = fc.total
    net(x)  # after the block: the hooks are removed
    assert fc.total == before
