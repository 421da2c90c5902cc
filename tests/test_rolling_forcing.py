"""Rolling Forcing: golden outputs of the reference loop, window schedule, anchor re-indexing, invariants.

The fixture (tests/fixtures/rolling_forcing_tiny, recipe in its README) was made by running
TencentARC/RollingForcing at a1477d0 (its model and its inference_rolling_forcing loop) on a tiny
random Wan, fp32 CPU, 36 latent frames, with its own RNG draw order. Our engine replays that order
with ``rng="reference"``.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_files import random_model

import deepforcing.engine as engine_mod
from deepforcing.cache import ANCHOR
from deepforcing.engine import Engine, PromptSchedule, RolloutConfig
from deepforcing.errors import ConfigError
from deepforcing.model import CausalWan, ModelConfig
from deepforcing.policies import build_policy
from deepforcing.policies.presets import build_preset, presets, sources
from deepforcing.scheduler import FlowMatch

FIXTURE = Path(__file__).parent / "fixtures" / "rolling_forcing_tiny"
TOL = 1e-5


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


def load_weights(model: CausalWan, path: Path) -> None:
    try:
        from deepforcing.loading import load_generator
    except ImportError:  # the loader module is optional for this test
        sd = torch.load(path, map_location="cpu")["generator_ema"]
        model.load_state_dict({k.removeprefix("model."): v for k, v in sd.items()}, strict=True)
    else:
        load_generator(model, path, kind="rolling_forcing")


class AttendSpy:
    """Records the key count of every self-attention call and delegates to the real kernel."""

    def __init__(self, monkeypatch):
        self.keys: list[int] = []
        real = engine_mod.attend

        def spy(q, k, v, backend):
            self.keys.append(k.shape[1])
            return real(q, k, v, backend)

        monkeypatch.setattr(engine_mod, "attend", spy)


@pytest.fixture(scope="module")
def golden():
    meta = json.loads((FIXTURE / "meta.json").read_text())
    cfg = ModelConfig.from_dict({**meta["model_config"], "latent_hw": [meta["latent_height"], meta["latent_width"]]})
    model = CausalWan(cfg)
    load_weights(model, FIXTURE / "weights.pt")
    return meta, model.eval(), load_file(FIXTURE / "io.safetensors")


def golden_rc(meta, **kw) -> RolloutConfig:
    return RolloutConfig(
        num_frames=meta["num_frames"], chunk_frames=meta["num_frame_per_block"],
        steps=tuple(meta["denoising_step_list"]), shift=meta["timestep_shift"], warp=meta["warp_denoising_step"],
        context_noise=meta["context_noise"],
        rng="reference", seed=meta["seeds"]["noise_and_pipeline"], rollout="rolling", **kw,
    )


def golden_policy(meta, **kw):
    c = meta["reference_cache"]
    return build_policy("rolling_forcing", anchor=c["anchor_frames"], max_attention=c["max_attention_frames"],
                        capacity=c["capacity_frames"], **kw)


@pytest.fixture(scope="module")
def golden_run(golden):
    """One engine run of the fixture's settings, with every forward, key count and anchor position recorded."""
    meta, model, io = golden
    mp = pytest.MonkeyPatch()
    spy = AttendSpy(mp)
    engine = Engine(model)
    records, anchor_pos = [], []

    def trace(rec):
        records.append(rec)
        kv = engine._cache.layers[0]
        slots = torch.nonzero(kv.tag[: kv.n] == ANCHOR).flatten()
        # Keys are cached un-rotated; rot_t is where each slot was rotated for this forward's read.
        anchor_pos.append((int(kv.rot_t[slots].min()) if slots.numel() else None, kv.frames().tolist()))

    policy = golden_policy(meta)
    try:
        out = engine.generate(model.text_state(io["text"]), policy, golden_rc(meta), trace=trace)
    finally:
        mp.undo()
    layers = model.cfg.num_layers
    return out, records, spy.keys[::layers], anchor_pos, policy


def test_golden_latents_reproduced(golden, golden_run):
    meta, _, io = golden
    out = golden_run[0]
    assert meta["num_frames"] // meta["num_frame_per_block"] > len(meta["denoising_step_list"])
    assert rel_err(out, io["latents"]) <= TOL


def test_golden_windows_reproduced(golden, golden_run):
    """Inputs (noise carry-over, fresh noise, RNG replay) and x0 of the recorded windows."""
    meta, _, io = golden
    denoise = [r for r in golden_run[1] if r.phase.kind == "denoise"]
    sched = FlowMatch(shift=meta["timestep_shift"])
    for w in meta["debug_windows"]:
        assert rel_err(denoise[w].x, io[f"input_window{w}"]) <= TOL, w
        x0 = sched.flow_to_x0(denoise[w].flow, denoise[w].x, denoise[w].t)
        assert rel_err(x0, io[f"x0_window{w}"]) <= TOL, w


def test_calls_and_key_counts_match_reference(golden, golden_run):
    """Every generator call: kind, first frame, frames, timesteps and the number of keys attended."""
    meta, model, _ = golden
    _, records, keys, _, _ = golden_run
    tpf = meta["tokens_per_frame"]
    cf = meta["num_frame_per_block"]
    assert len(records) == len(meta["calls"]) == len(keys)
    for rec, ref, k in zip(records, meta["calls"], keys, strict=True):
        assert rec.phase.kind == ref["kind"]
        assert (rec.span.start, rec.span.frames) == (ref["start_frame"], ref["frames"])
        assert rec.t[0, ::cf].tolist() == pytest.approx(ref["timesteps_per_chunk"], abs=1e-3)
        assert k == ref["key_frames"] * tpf


def test_anchor_reindexed_before_working_frames(golden, golden_run):
    """Denoising forwards read the anchor at q_start - n_work - S, n_work = min(cached, max_attn - F - S)."""
    meta, _, _ = golden
    _, records, keys, anchor_pos, policy = golden_run
    tpf = meta["tokens_per_frame"]
    S, max_attn = policy.anchor, policy.max_attention
    seen = set()
    for rec, k, (pos, cached) in zip(records, keys, anchor_pos, strict=True):
        if rec.phase.kind != "denoise" or not any(f < S for f in cached):
            continue
        q0, nq = rec.span.start, rec.span.frames
        working = [f for f in cached if S <= f < q0]
        n_work = min(len(working), max_attn - nq - S)
        assert k == (S + n_work + nq) * tpf
        assert pos == q0 - n_work - S
        seen.add(n_work)
    # full windows, the first anchor read and the longer working sets of tail windows all occurred
    assert len(seen) >= 3


def test_quirk_flags_change_the_result(golden, golden_run):
    """Each reference quirk matters on this run; turning it off departs from the golden."""
    meta, model, io = golden
    text = model.text_state(io["text"])
    cf, S = meta["num_frame_per_block"], meta["reference_cache"]["anchor_frames"]
    no_commit_quirk = Engine(model).generate(text, golden_policy(meta, commit_anchor_quirk=False), golden_rc(meta))
    # the commit pass of a chunk stops seeing the anchor once the cache plus the chunk exceed max_attention;
    # frames finished before such a commit influences anything are identical
    first_excluded = (meta["reference_cache"]["max_attention_frames"] - S) // cf + 1  # first chunk committed without it
    # that chunk is final in the window of its own commit; later chunks read its keys
    unaffected = (first_excluded + 1) * cf
    assert torch.equal(no_commit_quirk[:, :unaffected], golden_run[0][:, :unaffected])
    assert rel_err(no_commit_quirk, io["latents"]) > 10 * TOL
    no_window_noise = Engine(model).generate(text, golden_policy(meta, window_noise_quirk=False), golden_rc(meta))
    assert rel_err(no_window_noise, io["latents"]) > 100 * TOL


# ---- schedule, invariants, configuration on a micro model -------------------------------------------

MICRO = ModelConfig(dim=32, ffn_dim=32, freq_dim=16, num_heads=1, num_layers=1, text_dim=8, text_len=4,
                    latent_hw=(2, 4), name="micro")
RF_STEPS = (1000, 800, 600, 400, 200)


@pytest.fixture(scope="module")
def micro():
    model = random_model(MICRO, seed=3)
    torch.manual_seed(5)
    return model, model.text_state(torch.randn(1, MICRO.text_len, MICRO.text_dim))


def test_window_schedule_hand_computed(micro):
    model, text = micro
    rc = RolloutConfig(num_frames=21, steps=RF_STEPS, rollout="rolling")  # 7 chunks, 5-chunk window
    records, finished = [], []
    Engine(model).generate(text, build_policy("rolling_forcing"), rc, callback=finished.append, trace=records.append)
    # (first chunk, last chunk) and each chunk's level (index into the step list), oldest first
    expected = [
        ((0, 0), [0]), ((0, 1), [1, 0]), ((0, 2), [2, 1, 0]), ((0, 3), [3, 2, 1, 0]),  # warm-up
        ((0, 4), [4, 3, 2, 1, 0]), ((1, 5), [4, 3, 2, 1, 0]), ((2, 6), [4, 3, 2, 1, 0]),  # full
        ((3, 6), [4, 3, 2, 1]), ((4, 6), [4, 3, 2]), ((5, 6), [4, 3]), ((6, 6), [4]),  # tail
    ]
    steps = FlowMatch(shift=rc.shift).step_list(rc.steps, warp=rc.warp)
    cf = rc.chunk_frames
    assert len(records) == 2 * len(expected)
    for i, ((first, last), levels) in enumerate(expected):
        den, com = records[2 * i], records[2 * i + 1]
        assert den.phase.kind == "denoise" and com.phase.kind == "commit"
        assert (den.span.start, den.span.frames) == (first * cf, (last - first + 1) * cf)
        want_t = torch.tensor([steps[a] for a in levels]).repeat_interleave(cf)
        assert torch.equal(den.t[0], want_t)
        assert (com.span.start, com.span.frames) == (first * cf, cf)  # the oldest chunk is committed
        assert torch.equal(com.t, torch.full_like(com.t, rc.context_noise))
        x0 = FlowMatch(shift=rc.shift).flow_to_x0(den.flow, den.x, den.t)
        assert torch.equal(com.x, x0[:, :cf])  # committed at its clean x0
    # every chunk is finished exactly once, in order, in the window where it is the oldest at the last level
    assert [e.index for e in finished] == list(range(rc.num_frames // cf))


def test_invariants_over_long_rollout(micro):
    model, text = micro
    policy = build_preset("rolling_forcing")
    n_chunks = 102
    rc = RolloutConfig(num_frames=3 * n_chunks, steps=RF_STEPS, rollout="rolling")
    engine = Engine(model)
    tpf = engine.geometry(rc).tokens_per_frame
    out = engine.generate(text, policy, rc)
    assert torch.isfinite(out).all()
    log = policy.log
    assert len(log) == n_chunks + len(RF_STEPS) - 1  # one entry per window
    anchor = list(range(policy.anchor))
    for entry in log:
        assert entry["cache_frames"] <= policy.capacity
        assert entry["frames"][: policy.anchor] == anchor  # the anchor leads the cache, never evicted
        assert entry["tokens_anchor"] == policy.anchor * tpf
        if entry["denoise_anchor_start"] is not None:
            assert entry["denoise_anchor_start"] == entry["denoise_q_start"] - entry["denoise_n_work"] - policy.anchor
            assert entry["denoise_key_frames"] <= policy.max_attention
    assert max(e["cache_frames"] for e in log) == policy.capacity  # the cache did fill and roll


def test_per_chunk_rng_prefix_invariance(micro):
    """With per-chunk noise, chunks finished before the shorter video's tail windows are identical."""
    model, text = micro
    w = len(RF_STEPS)
    short, long_ = w + 2, w + 4
    outs = [Engine(model).generate(text, build_policy("rolling_forcing"),
                                   RolloutConfig(num_frames=3 * n, steps=RF_STEPS, rollout="rolling", rng="per_chunk"))
            for n in (short, long_)]
    same = (short - w + 1) * 3  # chunk c is final in window c + w - 1, identical while that window is
    assert torch.equal(outs[0][:, :same], outs[1][:, :same])
    assert not torch.allclose(outs[0][:, same:], outs[1][:, same : 3 * short])


def test_anchor_policy_runs_under_block_rollout(micro):
    model, text = micro
    policy = build_policy("rolling_forcing")
    rc = RolloutConfig(num_frames=3 * 12, steps=RF_STEPS)
    Engine(model).generate(text, policy, rc)
    for entry in policy.log:
        assert entry["cache_frames"] <= policy.capacity
        if entry["denoise_anchor_start"] is not None:
            assert entry["denoise_anchor_start"] == entry["denoise_q_start"] - entry["denoise_n_work"] - policy.anchor


def test_config_errors(micro):
    model, text = micro
    with pytest.raises(ConfigError, match="anchor"):
        build_policy("rolling_forcing", anchor=24, capacity=24)
    with pytest.raises(ConfigError, match="max_attention"):  # 8 steps -> 24-frame window + anchor > 21
        Engine(model).generate(text, build_policy("rolling_forcing"),
                               RolloutConfig(num_frames=30, steps=tuple(range(1000, 200, -100)), rollout="rolling"))
    with pytest.raises(ConfigError, match="no room"):
        Engine(model).generate(text, build_policy("rolling_forcing", anchor=3, capacity=5, max_attention=21),
                               RolloutConfig(num_frames=30, steps=RF_STEPS, rollout="rolling"))
    with pytest.raises(ConfigError, match="single prompt"):
        Engine(model).generate(PromptSchedule([(0, text), (6, text)]), build_policy("rolling_forcing"),
                               RolloutConfig(num_frames=30, steps=RF_STEPS, rollout="rolling"))


def test_preset_registered():
    assert presets()["rolling_forcing"][0] == "rolling_forcing" and "rolling_forcing" in sources()
    assert build_preset("rolling_forcing").describe()["policy"] == "rolling_forcing"


def test_the_preset_gets_its_rollout_whatever_builds_it(micro):
    """build_preset('rolling_forcing') under a default RolloutConfig runs the joint rolling window (the
    same latents as asking for it); asking for the block loop explicitly is an error."""
    from deepforcing.policies.presets import resolve_preset

    model, text = micro
    rc = RolloutConfig(num_frames=21, steps=RF_STEPS)
    assert rc.loop_for(build_preset("rolling_forcing")) == "rolling"
    default = Engine(model).generate(text, build_preset("rolling_forcing"), rc)
    explicit = Engine(model).generate(text, build_preset("rolling_forcing"), RolloutConfig(
        num_frames=21, steps=RF_STEPS, rollout="rolling"))
    assert torch.equal(default, explicit)
    with pytest.raises(ConfigError, match="runs only under rollout='rolling'"):
        Engine(model).generate(text, build_preset("rolling_forcing"), RolloutConfig(num_frames=21, rollout="block"))
    assert resolve_preset("rolling_forcing")[0] == "rolling_forcing"
