"""LongLive's frame sink and prompt-switch KV re-cache, checked against LongLive's own code.

The fixture (tests/fixtures/longlive_tiny, recipe in its README) was made by running NVlabs/LongLive
at 2462895 (its CausalWanModel and InteractiveCausalInferencePipeline) on tiny random weights, CPU
float32: one prompt, and two prompts switching at frame 18 (a recompute) or 9 (<= the window, not a
recompute), each with global_sink true and false.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deepforcing.cache import SINK
from deepforcing.engine import Engine, PromptSchedule, RolloutConfig
from deepforcing.errors import ConfigError
from deepforcing.model import CausalWan, ModelConfig, tiny
from deepforcing.policies import build_policy
from deepforcing.policies.longlive import LongLive
from deepforcing.policies.presets import build_preset

FIXTURE = Path(__file__).parent / "fixtures" / "longlive_tiny"
RUNS = ("single", "switch18_gs1", "switch18_gs0", "switch9_gs1", "switch9_gs0")


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def golden():
    meta = json.loads((FIXTURE / "meta.json").read_text())
    cfg = ModelConfig.from_dict({**meta["model_config"], "latent_hw": [meta["latent_height"], meta["latent_width"]]})
    model = CausalWan(cfg)
    try:
        from deepforcing.loading import load_generator
    except ImportError:  # loader not available: strip the container prefix ourselves
        sd = torch.load(FIXTURE / "longlive_tiny.pt", map_location="cpu")[meta["weights_key"]]
        prefix = meta["weights_prefix"]
        model.load_state_dict({k.removeprefix(prefix): v for k, v in sd.items()}, strict=True)
    else:
        load_generator(model, FIXTURE / "longlive_tiny.pt", kind="longlive")
    io = load_file(FIXTURE / "io.safetensors")
    return meta, model.eval(), io


def policy_for(meta, run):
    gs = meta["runs"][run]["global_sink"]
    return LongLive(sink=meta["sink_size"], window=meta["local_attn_size"], global_sink=gs)


def schedule_for(meta, model, io, run):
    spec = meta["runs"][run]
    texts = {p: model.text_state(io[f"text_{p}"]) for p in set(spec["prompts"])}
    starts = [0, *spec["switch_frame_indices"]]
    return PromptSchedule([(s, texts[p]) for s, p in zip(starts, spec["prompts"], strict=True)])


def rollout_config(meta, run):
    return RolloutConfig(
        num_frames=meta["runs"][run]["num_frames"], chunk_frames=meta["num_frame_per_block"],
        steps=tuple(meta["denoising_step_list"]), shift=meta["timestep_shift"],
        context_noise=float(meta["context_noise"]), rng="reference", seed=meta["seeds"]["SEED_noise_and_pipeline"],
    )


def snapshot_after_switch(policy):
    """Wrap the real policy's switch hook to copy the last layer's cache right after the re-cache."""
    snaps, hook = [], policy.on_prompt_switch

    def spy(switch):
        hook(switch)
        kv = switch.cache.layers[-1]
        frames = kv.frame[: kv.n].clone()
        snaps.append(dict(frames=frames, k=kv.rotated(None, frames).clone(), v=kv.values(None).clone(),
                          tags=kv.tag[: kv.n].clone()))

    policy.on_prompt_switch = spy
    return snaps


# ---- golden: LongLive's own code ---------------------------------------------------------------


@pytest.mark.parametrize("run", RUNS)
def test_engine_reproduces_longlive(golden, run):
    meta, model, io = golden
    policy = policy_for(meta, run)
    snaps = snapshot_after_switch(policy)
    out = Engine(model).generate(schedule_for(meta, model, io, run), policy, rollout_config(meta, run))
    assert rel_err(out, io[f"latents_{run}"]) <= 1e-5
    assert len(snaps) == len(meta["runs"][run]["switch_frame_indices"])
    for snap in snaps:  # which slots the re-cache wrote, and with what (keys roped at absolute positions)
        ref_k, ref_v = io[f"cache_k_after_recache_{run}"], io[f"cache_v_after_recache_{run}"]
        assert snap["k"].shape == ref_k.shape
        assert rel_err(snap["k"], ref_k) <= 1e-5 and rel_err(snap["v"], ref_v) <= 1e-5


def test_reference_noise_equals_fixture_noise(golden):
    meta, model, io = golden
    from deepforcing.engine import NoiseSource

    noise = NoiseSource("reference", meta["seeds"]["SEED_noise_and_pipeline"], tuple(io["noise"].shape),
                        meta["num_frame_per_block"], torch.float32, torch.device("cpu"))
    # same draws; the last bit of randn differs between CPU kernels (a wrong order differs by O(1))
    torch.testing.assert_close(noise.full, io["noise"], rtol=0, atol=1e-5)


def test_single_prompt_is_self_forcing_sink(golden):
    """One prompt: LongLive is Self-Forcing's sink_size cache (attention_sink, absolute positions)."""
    meta, model, io = golden
    rc = rollout_config(meta, "single")
    text = model.text_state(io["text_A"])
    eng = Engine(model)
    ours = eng.generate(text, policy_for(meta, "single"), rc)
    sink = build_policy("attention_sink", sink=meta["sink_size"], window=meta["local_attn_size"], positions="absolute")
    assert torch.equal(ours, eng.generate(text, sink, rc))


def test_switch_at_or_below_window_ignores_global_sink(golden):
    """Reference quirk: a switch at frame <= W re-caches from frame 0, which their code does not treat as
    a recompute, so the sink is rewritten with the new prompt even when global_sink is true."""
    meta, _, io = golden
    assert meta["runs"]["switch9_gs1"]["switch_frame_indices"][0] <= meta["local_attn_size"]
    assert torch.equal(io["latents_switch9_gs1"], io["latents_switch9_gs0"])  # in their code
    assert not torch.equal(io["latents_switch18_gs1"], io["latents_switch18_gs0"])


def test_prompt_switch_changes_the_video_only_after_the_switch(golden):
    meta, _, io = golden
    for run in ("switch18_gs1", "switch9_gs0"):
        at = meta["runs"][run]["switch_frame_indices"][0]
        assert torch.equal(io[f"latents_{run}"][:, :at], io["latents_single"][:, :at])
        assert not torch.allclose(io[f"latents_{run}"][:, at:], io["latents_single"][:, at:])


# ---- index arithmetic, by hand ----------------------------------------------------------------

S, W, CHUNK = 3, 12, 3


def small_model():
    """One layer, 2 tokens per frame: the cache bookkeeping does not depend on model size."""
    torch.manual_seed(0)
    model = CausalWan(ModelConfig(**{**tiny().__dict__, "num_layers": 1, "latent_hw": (2, 4), "name": "small"}))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def small():
    model = small_model()
    cfg = model.cfg
    texts = [model.text_state(torch.randn(1, cfg.text_len, cfg.text_dim, generator=torch.Generator().manual_seed(i)))
             for i in range(8)]
    return model, texts


def run_small(small, switches, global_sink, num_frames, steps=(1000,)):
    """Roll out, recording the re-cache forward's key/query frames and the cached frames after each chunk."""
    model, texts = small
    policy = LongLive(sink=S, window=W, global_sink=global_sink)
    tpf = model.cfg.tokens_per_frame()
    recache_reads = []
    context = policy.context

    def spy_context(layer, kv, step):
        ctx = context(layer, kv, step)
        if step.phase.kind == "recache":
            cached = kv.frame[: kv.n] if ctx.slots is None else kv.frame[ctx.slots]
            own = torch.arange(kv.pending) if ctx.own is None else ctx.own
            keys = torch.cat([cached, kv.frame[kv.n + own]])
            recache_reads.append(dict(keys=keys.unique_consecutive().tolist(), queries=step.span.ids().tolist()))
        return ctx

    policy.context = spy_context
    snaps = snapshot_after_switch(policy)
    chunks = []

    def on_chunk(ev):
        kv = eng._cache.layers[0]
        chunks.append(dict(start=ev.span.start, frames=kv.frames().tolist(), n=kv.n, capacity=kv.capacity,
                           sink_tags=int((kv.tag[: kv.n] == SINK).sum()),
                           sink_slots_tagged=bool((kv.tag[: min(kv.n, S * tpf)] == SINK).all()),
                           layers_agree=all(torch.equal(x.frame[: x.n], kv.frame[: kv.n]) for x in eng._cache.layers)))

    eng = Engine(model)
    sched = PromptSchedule([(0, texts[0])] + [(f, texts[1 + i]) for i, f in enumerate(switches)])
    eng.generate(sched, policy, RolloutConfig(num_frames=num_frames, steps=steps, seed=1), callback=on_chunk)
    return policy, recache_reads, [s["frames"].unique_consecutive().tolist() for s in snaps], chunks


def frames(a, b):
    return list(range(a, b))


@pytest.mark.parametrize("global_sink", [True, False])
def test_recache_indices_switch_after_the_window(small, global_sink):
    cur = 18  # > W: the re-cache covers frames [cur-W, cur) = 6..17 and is a recompute
    policy, reads, after, chunks = run_small(small, [cur], global_sink, 27)
    assert len(reads) == 1 and reads[0]["queries"] == frames(cur - W, cur)
    by_start = {c["start"]: c["frames"] for c in chunks}
    assert by_start[cur - CHUNK] == frames(0, S) + frames(cur - (W - S), cur)  # cache before the switch
    if global_sink:
        # keys: the old-prompt sink 0..2 + the recomputed last W-S frames 9..17; frames 6..8 are queries only
        assert reads[0]["keys"] == frames(0, S) + frames(cur - (W - S), cur)
        assert after == [frames(0, S) + frames(cur - (W - S), cur)]
        assert by_start[cur] == frames(0, S) + frames(cur + CHUNK - (W - S), cur + CHUNK)
        assert policy.switches[0]["stored"] == frames(cur - (W - S), cur)
    else:
        # everything cleared; 6..17 attend to each other and are all stored; 6..8 become the sink
        assert reads[0]["keys"] == frames(cur - W, cur)
        assert after == [frames(cur - W, cur)]
        assert by_start[cur] == frames(cur - W, cur - W + S) + frames(cur + CHUNK - (W - S), cur + CHUNK)
        assert policy.switches[0]["stored"] == frames(cur - W, cur)
    assert all(c["sink_slots_tagged"] for c in chunks)


@pytest.mark.parametrize("global_sink", [True, False])
@pytest.mark.parametrize("cur", [9, 12])
def test_recache_indices_switch_within_the_window(small, global_sink, cur):
    """cur <= W: the re-cache starts at frame 0, is not a recompute, and rewrites the sink too."""
    policy, reads, after, chunks = run_small(small, [cur], global_sink, cur + 2 * CHUNK)
    assert reads[0]["queries"] == frames(0, cur) and reads[0]["keys"] == frames(0, cur)
    assert after == [frames(0, cur)]
    assert policy.switches[0]["stored"] == frames(0, cur) and not policy.switches[0]["keep_sink"]


def test_switch_within_the_window_equals_for_both_global_sink_settings(small):
    model, texts = small
    sched = PromptSchedule([(0, texts[0]), (W - CHUNK, texts[1])])
    rc = RolloutConfig(num_frames=W + 2 * CHUNK, steps=(1000, 500), seed=3)
    eng = Engine(model)
    a, b = (eng.generate(sched, LongLive(S, W, global_sink=g), rc) for g in (True, False))
    assert torch.equal(a, b)
    sched = PromptSchedule([(0, texts[0]), (W + CHUNK, texts[1])])
    rc = RolloutConfig(num_frames=W + 3 * CHUNK, steps=(1000, 500), seed=3)
    a, b = (eng.generate(sched, LongLive(S, W, global_sink=g), rc) for g in (True, False))
    assert not torch.equal(a, b)


@pytest.mark.parametrize("global_sink", [True, False])
def test_invariants_over_100_chunks(small, global_sink):
    switches = [9, 12, 30, 45, 151, 240]  # within and after the window; 151 takes effect at the next chunk
    policy, reads, after, chunks = run_small(small, switches, global_sink, 100 * CHUNK)
    assert len(chunks) == 100 and len(policy.switches) == len(switches)
    model = small[0]
    tpf = model.cfg.tokens_per_frame()
    effective = [-(-f // CHUNK) * CHUNK for f in switches]
    assert [sw["frame"] for sw in policy.switches] == effective
    sink_start = 0
    for c in chunks:
        stop = c["start"] + CHUNK
        if c["start"] in effective and not (global_sink and c["start"] > W):
            sink_start = max(0, c["start"] - W)  # the sink was rewritten by this switch's re-cache
        assert c["n"] <= c["capacity"] == W * tpf and c["layers_agree"]
        assert len(c["frames"]) == min(stop, W)
        if stop > W:
            assert c["frames"] == frames(sink_start, sink_start + S) + frames(stop - (W - S), stop)
            assert c["sink_tags"] == S * tpf and c["sink_slots_tagged"]
        if global_sink:
            assert c["frames"][:S] == frames(0, S)  # the sink is never evicted


# ---- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(sink=12, window=12), "sink < window"),
        (dict(sink=-1, window=12), "sink < window"),
        (dict(global_sink="yes"), "global_sink"),
    ],
)
def test_bad_settings_fail_when_built(kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        build_policy("longlive", **kwargs)


def test_window_without_room_for_a_chunk_fails_before_generation(small):
    model, texts = small
    with pytest.raises(ConfigError, match="no room"):
        Engine(model).generate(texts[0], LongLive(sink=10, window=12), RolloutConfig(num_frames=15))


def test_preset():
    p = build_preset("longlive")
    assert isinstance(p, LongLive) and (p.sink, p.window, p.global_sink) == (S, W, True)
    assert build_preset("longlive", global_sink=False).global_sink is False


def test_recache_of_frames_not_generated_yet_is_refused(small):
    model, texts = small

    class Ahead(LongLive):
        def on_prompt_switch(self, switch):
            switch.recache(switch.span.start - CHUNK, 2 * CHUNK)

    sched = PromptSchedule([(0, texts[0]), (2 * CHUNK, texts[1])])
    with pytest.raises(ValueError, match="not all generated"):
        Engine(model).generate(sched, Ahead(), RolloutConfig(num_frames=4 * CHUNK, steps=(1000,)))


def test_engine_holding_only_a_tail_of_latents_gives_the_same_video(small):
    """keep_latents=False (long rollouts): the latent store holds about two windows, not the video, and
    every re-cache after a prompt switch reads the same latents, so every chunk is the same."""
    import deepforcing.engine as engine_mod

    model, texts = small
    switches = [9, 12, 30, 45, 151, 240]
    sched = PromptSchedule([(0, texts[0])] + [(f, texts[1 + i]) for i, f in enumerate(switches)])
    rc = RolloutConfig(num_frames=100 * CHUNK, steps=(1000, 500), seed=2)
    eng = Engine(model)
    full = eng.generate(sched, LongLive(S, W), rc)
    stores, chunks = [], []
    init = engine_mod.LatentStore.__init__

    def spy(self, *a, **k):
        init(self, *a, **k)
        stores.append(self)

    mp = pytest.MonkeyPatch()
    mp.setattr(engine_mod.LatentStore, "__init__", spy)
    try:
        assert eng.generate(sched, LongLive(S, W), rc, callback=lambda ev: chunks.append(ev.latents.clone()),
                            keep_latents=False) is None
    finally:
        mp.undo()
    assert torch.equal(torch.cat(chunks, dim=1), full)
    assert stores[0].buf.shape[1] == 2 * (W + W) < full.shape[1]
