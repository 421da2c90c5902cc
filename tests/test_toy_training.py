"""Training of the toy model: a short smoke run reproduces its loss curve and its checkpoint loads through
the ordinary loader."""

from __future__ import annotations

import json

import pytest
import torch

from deepforcing.loading import load_generator
from deepforcing.model import CausalWan, MaskedAttention, Rope3D, TokenPositions, preset
from deepforcing.toyworld.train import BlockCausalAttention, TrainConfig, block_causal_mask, train

SMOKE = TrainConfig(steps=40, stop_at=8, batch=2, log_every=2, warmup=4, seed=3)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_smoke")
    threads = torch.get_num_threads()
    try:
        a = train(SMOKE, out=out)
        b = train(SMOKE)
    finally:
        torch.set_num_threads(threads)
    return out, a, b


def test_the_same_seed_gives_the_same_loss_curve(runs):
    _, (_, log_a), (_, log_b) = runs
    assert [r["step"] for r in log_a] == [2, 4, 6, 8]
    for ra, rb in zip(log_a, log_b, strict=True):
        assert abs(ra["loss"] - rb["loss"]) <= 1e-4 * abs(ra["loss"])
    assert log_a[-1]["loss"] < log_a[0]["loss"]  # it learns from the first steps


def test_another_seed_gives_another_curve():
    _, log = train(TrainConfig(steps=40, stop_at=2, batch=2, log_every=2, warmup=4, seed=4))
    torch.set_num_threads(1)
    assert log[0]["loss"] != pytest.approx(train(SMOKE)[1][0]["loss"], rel=1e-4)


def test_the_checkpoint_loads_strictly_through_the_loader(runs):
    out, (model, log), _ = runs
    assert (out / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((out / "train_config.json").read_text())["seed"] == SMOKE.seed
    assert (out / "loss.csv").read_text().count("\n") == len(log) + 1
    fresh = CausalWan(preset("toy"))
    report = load_generator(fresh, out)
    assert report.num_tensors == len(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_chunked_training_attention_equals_the_masked_reference():
    cfg = preset("toy")
    frames, chunk = 9, 3
    pos = TokenPositions.of_frames(torch.arange(frames), cfg.grid())
    n = cfg.tokens_per_frame()
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, frames * n, cfg.num_heads, cfg.head_dim, generator=g) for _ in range(3))
    ref = MaskedAttention(Rope3D(cfg), pos, block_causal_mask(frames, chunk, n))(0, q, k, v)
    out = BlockCausalAttention(Rope3D(cfg), pos, chunk * n)(0, q, k, v)
    assert torch.allclose(out, ref, atol=1e-5)
