"""Training of the toy model: a short smoke run reproduces its loss curve and its checkpoint loads through
the ordinary loader."""

from __future__ import annotations

import json

import pytest
import torch

from deepforcing.loading import load_generator
from deepforcing.model import CausalWan, MaskedAttention, Rope3D, TokenPositions, preset
from deepforcing.toyworld.train import (
    Batches,
    BlockCausalAttention,
    TeacherForcingAttention,
    TrainConfig,
    block_causal_mask,
    teacher_forcing_mask,
    train,
)

SMOKE = TrainConfig(steps=40, stop_at=8, batch=2, first_batch=4, log_every=2, warmup=4, seed=3)


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
    _, log = train(TrainConfig(steps=40, stop_at=2, batch=2, first_batch=4, log_every=2, warmup=4, seed=4))
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


def test_teacher_forcing_attention_equals_the_masked_reference():
    """[clean clip, noisy clip]: a noisy chunk reads the clean earlier chunks and itself, nothing else."""
    cfg = preset("toy")
    frames, chunk = 9, 3
    n = cfg.tokens_per_frame()
    both = TokenPositions.of_frames(torch.arange(frames).repeat(2), cfg.grid())
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2 * frames * n, cfg.num_heads, cfg.head_dim, generator=g) for _ in range(3))
    ref = MaskedAttention(Rope3D(cfg), both, teacher_forcing_mask(frames, chunk, n))(0, q, k, v)
    one = TokenPositions.of_frames(torch.arange(frames), cfg.grid())
    out = TeacherForcingAttention(Rope3D(cfg), one, chunk * n)(0, q, k, v)
    assert torch.allclose(out, ref, atol=1e-5)


def test_teacher_forcing_mask_by_hand():
    # 4 frames, chunks of 2, one token per frame: rows/cols are clean 0-3 then noisy 0-3.
    m = teacher_forcing_mask(4, 2, 1).int().tolist()
    assert m == [
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 1, 1, 0, 0],
        [1, 1, 0, 0, 0, 0, 1, 1],
        [1, 1, 0, 0, 0, 0, 1, 1],
    ]


def test_object_weight_marks_the_latents_objects_cover():
    cfg = TrainConfig(batch=2, first_batch=3, object_weight=5.0)
    batches = Batches(cfg, preset("toy"))
    b = batches(0)
    first = batches.first_chunks(0)
    assert first["x0"].shape[1] == cfg.chunk_frames and first["x0"].shape[0] == cfg.first_batch
    assert bool((first["scored"] == 1).all())
    w = b["weight"]  # [B, F, h, w]
    assert set(w.unique().tolist()) == {1.0, 5.0}
    # a 6-px object covers 3x3 to 4x4 latents of 2x2 pixels each, per object and frame
    per_frame = (w == 5.0).sum(dim=(2, 3))
    assert bool((per_frame >= 9).all()) and bool((per_frame <= 16 * 3).all())


def test_context_noise_corrupts_only_the_clean_copy():
    plain = Batches(TrainConfig(batch=2, first_batch=2), preset("toy"))(5)
    noisy_cfg = TrainConfig(batch=2, first_batch=2, context_noise=0.3)
    batches = Batches(noisy_cfg, preset("toy"))
    noisy = batches(5)
    assert "context_x0" not in plain and "context_x0" not in batches.first_chunks(5)
    for k in ("x0", "noise", "xt", "sigma"):  # the same scenes, targets and noise as without it
        assert torch.equal(plain[k], noisy[k]), k
    diff = noisy["context_x0"] - noisy["x0"]
    assert 0 < diff.abs().max() and diff.std() < 0.3


def test_self_context_is_the_models_one_step_estimate():
    """At sigma 0 the model's estimate of a clean chunk is the chunk itself; above it, it is x_s - s * flow
    of the teacher-forcing forward over [clean clip, noised clip]. The batch's targets do not change."""
    from deepforcing.toyworld.train import TeacherForcingAttention, self_context, train

    mcfg = preset("toy")
    cfg = TrainConfig(batch=2, first_batch=2, context_self=0.6)
    plain = Batches(TrainConfig(batch=2, first_batch=2), mcfg)(3)
    b = Batches(cfg, mcfg)(3)
    for k in ("x0", "noise", "xt", "sigma"):
        assert torch.equal(plain[k], b[k]), k
    s = b["self_sigma"]
    assert s.shape == b["sigma"].shape and 0 <= float(s.min()) and float(s.max()) <= 0.6
    torch.manual_seed(0)
    model = CausalWan(mcfg).eval()
    pos = TokenPositions.of_frames(torch.arange(cfg.clip_frames), mcfg.grid())
    attn = TeacherForcingAttention(Rope3D(mcfg), pos, cfg.chunk_frames * mcfg.tokens_per_frame())
    zero = self_context(model, {**b, "self_sigma": torch.zeros_like(s)}, attn)
    torch.testing.assert_close(zero["context_x0"], b["x0"], rtol=0, atol=0)
    est = self_context(model, b, attn)["context_x0"]
    assert est.shape == b["x0"].shape and not torch.allclose(est, b["x0"])
    with pytest.raises(ValueError, match="teacher_forcing"):
        train(TrainConfig(objective="diffusion_forcing", context_self=0.5, steps=1))


def test_second_round_of_self_context_reads_the_first_rounds_estimates():
    """Round 2 is the one-step estimate of the same noised chunks, read against round 1's estimates of the
    earlier chunks in place of the clean ones (by hand: the teacher-forcing forward with that context)."""
    from deepforcing.toyworld.train import NUM_TRAIN_TIMESTEPS, TeacherForcingAttention, self_context, train

    mcfg = preset("toy")
    cfg = TrainConfig(batch=2, first_batch=2, context_self=0.6, context_self_rounds=2)
    b = Batches(cfg, mcfg)(4)
    torch.manual_seed(0)
    model = CausalWan(mcfg).eval()
    pos = TokenPositions.of_frames(torch.arange(cfg.clip_frames), mcfg.grid())
    attn = TeacherForcingAttention(Rope3D(mcfg), pos, cfg.chunk_frames * mcfg.tokens_per_frame())
    one = self_context(model, b, attn)["context_x0"]
    two = self_context(model, b, attn, rounds=2)["context_x0"]
    s = b["self_sigma"][..., None, None, None]
    xs = (1 - s) * b["x0"] + s * b["self_noise"]
    t = b["self_sigma"] * NUM_TRAIN_TIMESTEPS
    with torch.no_grad():
        flow = model(torch.cat([one, xs], dim=1), torch.cat([torch.zeros_like(t), t], dim=1),
                     model.text_state(b["context"]), attn)[:, -xs.shape[1]:]
    torch.testing.assert_close(two, xs - s * flow, rtol=0, atol=1e-6)
    f = cfg.chunk_frames  # the first chunk reads no context: both rounds give the same estimate of it
    torch.testing.assert_close(two[:, :f], one[:, :f], rtol=0, atol=1e-6)
    assert not torch.allclose(two[:, f:], one[:, f:])
    zero = self_context(model, {**b, "self_sigma": torch.zeros_like(b["self_sigma"])}, attn, rounds=2)
    torch.testing.assert_close(zero["context_x0"], b["x0"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="context_self_rounds"):
        train(TrainConfig(context_self=0.5, context_self_rounds=0, steps=1))
