"""Cache policies: worked index tables, invariants over long rollouts, prefix invariance, equivalences."""

import pytest
import torch

from deepforcing.cache import COMPRESSED, SINK
from deepforcing.engine import Engine, RolloutConfig
from deepforcing.errors import ConfigError
from deepforcing.policies import build_policy
from deepforcing.policies.presets import build_preset


def rollout(model, text, policy, frames, inspect=None, seed=0):
    """Run a rollout; ``inspect(event, cache)`` is called after every chunk."""
    eng = Engine(model)
    events = []

    def cb(ev):
        events.append(ev)
        if inspect is not None:
            inspect(ev, eng._cache)

    out = eng.generate(text, policy, RolloutConfig(num_frames=frames, seed=seed), callback=cb)
    return out, events


# ---- worked tables (deep_forcing.md §2.3) ------------------------------------------------------


def test_deep_sink_only_code_table(tiny_model, tiny_text):
    """DS-only, S=14, W=21: sink 0..13 until the first roll (cs=21, delta 0), then cs-21..cs-8;
    tail cs-4..cs+2 (the cached tail cs-4..cs-1 plus the queries cs..cs+2). Positions are those the
    commit pass of chunk cs reads."""
    _, events = rollout(tiny_model, tiny_text, build_preset("deep_sink_only"), 3 * 45)
    assert len(events) >= 40
    for ev in events:
        cs = ev.span.start
        pos = ev.diagnostics["positions"]
        sink = pos.get("sink", [])  # positions read by the commit pass: cached frames only
        tail = pos.get("recent", []) + pos["query"]
        if cs < 14:
            assert sink == list(range(0, cs))
        elif cs <= 21:
            assert sink == list(range(0, 14))
            assert tail == list(range(14 if cs < 21 else cs - 4, cs + 3))
        else:
            assert sink == list(range(cs - 21, cs - 7)), cs
            assert tail == list(range(cs - 4, cs + 3)), cs
        assert ev.diagnostics["rolled"] == (cs >= 21)


def test_deep_forcing_code_table(tiny_model, tiny_text):
    """DS+PC, S=10, N=16, R=4: first compression at cs=21 (sink 5..14), then every second chunk;
    the cache holds 16 frames after a compression and 19 after an append; sink cs-16..cs-7."""
    tpf = tiny_model.cfg.tokens_per_frame()
    _, events = rollout(tiny_model, tiny_text, build_preset("deep_forcing_code"), 3 * 45)
    sink_pos = None
    for ev in events:
        cs = ev.span.start
        d = ev.diagnostics
        if cs < 21:
            assert not d["compressed"] and d["positions"].get("sink", []) == list(range(0, min(cs, 10)))
            continue
        compress = (cs - 21) % 6 == 0
        assert d["compressed"] == compress, cs
        assert d["cache_frames"] == (16 if compress else 19), cs
        if compress:
            sink_pos = list(range(cs - 16, cs - 6))
            assert d["topc"]["augmented_tokens"] == (24 if cs == 21 else 22) * tpf
            assert d["tokens_compressed"] == (16 - 4 - 10) * tpf
        assert d["positions"]["sink"] == sink_pos, cs
        # whole frames after the sink: cs-1.. after a compression, cs-4.. after an append (table)
        assert d["positions"]["query"] == [cs, cs + 1, cs + 2]
        assert d["positions"]["recent"] == list(range(cs - 1 if compress else cs - 4, cs))


def test_deep_sink_paper_alignment_is_contiguous(tiny_model, tiny_text):
    _, events = rollout(tiny_model, tiny_text, build_preset("deep_sink"), 60)
    for ev in events:
        pos = ev.diagnostics["positions"]
        seq = pos.get("sink", []) + pos.get("recent", []) + pos["query"]
        assert seq == list(range(seq[0], seq[0] + len(seq))), ev.span.start
        assert len(pos.get("sink", [])) == min(10, ev.span.start)


def test_sink_ratio_rounding():
    assert build_preset("deep_sink", sink_ratio=0.5).sink == 10  # floor(10.5)
    assert build_preset("deep_sink", sink_ratio=0.25).sink == 5
    assert build_preset("deep_sink", sink_ratio=2 / 3).sink == 14
    assert build_preset("deep_forcing", sink_ratio=0.25).sink == 5


# ---- invariants over long rollouts -------------------------------------------------------------

LONG = 3 * 100  # 100 chunks

INVARIANT_PRESETS = [
    "rolling_window", "self_forcing_sink", "streamingllm", "deep_sink", "deep_sink_only",
    "deep_forcing", "deep_forcing_code", "pc_random", "pc_recency", "pc_h2o", "pc_snapkv", "pc_only_past",
]


@pytest.mark.parametrize("preset", INVARIANT_PRESETS)
def test_invariants_over_100_chunks(tiny_model, tiny_text, preset):
    policy = build_preset(preset)
    tpf = tiny_model.cfg.tokens_per_frame()
    window = policy.window
    sink = getattr(policy, "sink", 0)
    pc = hasattr(policy, "budget")

    def check(ev, cache):
        for layer, kv in enumerate(cache.layers):
            assert kv.n <= kv.capacity and kv.n <= window * tpf
            frames = kv.frame[: kv.n]
            # the sink: every token of frames < S stays, tagged as sink
            if sink and ev.span.stop >= sink:
                in_sink = frames < sink
                assert int(in_sink.sum()) == sink * tpf, (preset, layer, ev.span.start)
                assert bool((kv.tag[: kv.n][in_sink] == SINK).all())
            # slots are in temporal order
            assert bool((frames[1:] >= frames[:-1]).all())
            if pc and ev.diagnostics.get("compressed"):
                top = kv.tag[: kv.n] == COMPRESSED
                fresh = top & (frames < ev.span.start - (policy.recent - 3))
                assert int(top.sum()) <= policy.top_c * tpf
                assert int(fresh.sum()) == int(top.sum())

    _, events = rollout(tiny_model, tiny_text, policy, LONG, inspect=check)
    assert len(events) == 100


def test_pc_keeps_exactly_c_candidates_at_each_compression(tiny_model, tiny_text):
    policy = build_preset("deep_forcing")
    tpf = tiny_model.cfg.tokens_per_frame()
    seen = []

    def check(ev, cache):
        if ev.diagnostics["compressed"]:
            seen.append(ev.span.start)
            sel = ev.diagnostics["topc"]["augmented_index"]
            assert len(sel) == policy.top_c * tpf
            assert sel == sorted(sel)
            for kv in cache.layers:
                assert int((kv.tag[: kv.n] == COMPRESSED).sum()) == policy.top_c * tpf

    rollout(tiny_model, tiny_text, policy, 60, inspect=check)
    assert seen == [21, 27, 33, 39, 45, 51, 57]


@pytest.mark.parametrize("preset", ["deep_forcing_code", "deep_sink_only", "streamingllm", "pc_h2o"])
def test_two_videos_in_one_process_equal_separate_processes(tiny_model, tiny_text, preset):
    policy = build_preset(preset)
    eng = Engine(tiny_model)
    rc_a, rc_b = RolloutConfig(num_frames=36, seed=1), RolloutConfig(num_frames=36, seed=2)
    a1 = eng.generate(tiny_text, policy, rc_a)
    b1 = eng.generate(tiny_text, policy, rc_b)
    a_fresh = Engine(tiny_model).generate(tiny_text, build_preset(preset), rc_a)
    b_fresh = Engine(tiny_model).generate(tiny_text, build_preset(preset), rc_b)
    assert torch.equal(a1, a_fresh) and torch.equal(b1, b_fresh)


# ---- prefix invariance and equivalences --------------------------------------------------------

ALL_WINDOW_21 = ["full_cache", "rolling_window", "self_forcing_sink", "streamingllm", "deep_sink",
                 "deep_sink_no_rope", "deep_sink_only", "deep_forcing", "deep_forcing_code", "pc_random",
                 "pc_recency", "pc_h2o", "pc_snapkv", "pc_only_denoise", "pc_only_past"]


def test_prefix_invariance_until_the_window_fills(tiny_model, tiny_text):
    """With per-chunk noise every policy generates the same first 21 frames (nothing evicted yet)."""
    eng = Engine(tiny_model)
    ref = None
    for preset in ALL_WINDOW_21:
        frames = 21 if preset == "full_cache" else 27
        out = eng.generate(tiny_text, build_preset(preset), RolloutConfig(num_frames=frames, seed=5))
        if ref is None:
            ref = out[:, :21]
        assert torch.allclose(out[:, :21], ref, atol=1e-6, rtol=0), preset


def test_streamingllm_equals_deep_sink_paper_alignment(tiny_model, tiny_text):
    """Same relative geometry (sink contiguous before the tail, queries after), only a global shift
    differs, so outputs agree up to float rounding of the rotation angles."""
    eng = Engine(tiny_model)
    rc = RolloutConfig(num_frames=45, seed=9)
    a = eng.generate(tiny_text, build_policy("attention_sink", sink=3, window=21, positions="cache_relative"), rc)
    b = eng.generate(tiny_text, build_policy("deep_sink", sink=3, window=21, align="paper"), rc)
    c = eng.generate(tiny_text, build_policy("attention_sink", sink=3, window=21, positions="absolute"), rc)
    err = float((a - b).abs().max() / b.abs().max())
    assert err < 1e-4
    assert float((a - c)[:, 24:].abs().max()) > 50 * float((a - b).abs().max())


def test_delta_rotation_error_is_measurable_in_bf16(tiny_model, tiny_text):
    """Incremental in-place rotation in bf16 drifts from exact read-time rotation; in fp32 it stays tiny."""
    rc = RolloutConfig(num_frames=60, seed=3)
    exact = Engine(tiny_model).generate(tiny_text, build_policy("deep_sink", sink=14, align="code"), rc)
    delta = Engine(tiny_model).generate(
        tiny_text, build_policy("deep_sink", sink=14, align="code", rotation="delta"), rc
    )
    assert float((exact - delta).abs().max()) < 1e-3


# ---- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kwargs, msg",
    [
        ("deep_sink", dict(sink=21, window=21), "sink < window"),
        ("deep_sink", dict(sink_ratio=1.0), r"\[0, 1\)"),
        ("deep_sink", dict(sink_ratio=-0.1), r"\[0, 1\)"),
        ("participative_compression", dict(sink=10, budget=12, recent=4), "budget"),
        ("participative_compression", dict(query_source="future"), "query_source"),
        ("participative_compression", dict(select="oracle"), "select"),
        ("attention_sink", dict(sink=21, window=21), "sink < window"),
        ("rolling_window", dict(window=0), "positive"),
    ],
)
def test_bad_policy_settings_fail_when_built(name, kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        build_policy(name, **kwargs)


def test_recent_smaller_than_chunk_fails_before_generation(tiny_model, tiny_text):
    policy = build_policy("participative_compression", sink=10, budget=16, recent=2)
    with pytest.raises(ConfigError, match="recent"):
        Engine(tiny_model).generate(tiny_text, policy, RolloutConfig(num_frames=30))


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown policy preset"):
        build_preset("deep_forcin")


@pytest.mark.parametrize("preset", ["deep_forcing", "streamingllm", "rolling_window"])
def test_attention_mass_per_region_is_a_distribution(tiny_model, tiny_text, preset):
    """Sampled by default: every 4th chunk (0, 4, 8), one layer, a subset of the queries."""
    _, events = rollout(tiny_model, tiny_text, build_preset(preset), 30)
    measured = [ev for ev in events if "attention_mass" in ev.diagnostics]
    assert [ev.index for ev in measured] == [0, 4, 8]
    for ev in measured:
        mass = ev.diagnostics["attention_mass"]
        assert abs(sum(mass.values()) - 1) < 1e-4 and min(mass.values()) >= 0
        if ev.span.start == 0:
            assert mass["own"] == pytest.approx(1.0)  # nothing cached yet
    last = measured[-1].diagnostics["attention_mass"]
    if preset != "rolling_window":
        assert last["sink"] > 0
    if preset == "deep_forcing":
        assert last["compressed"] > 0


def test_attention_probe_off_costs_nothing_and_sampled_equals_full_on_all_queries(tiny_model, tiny_text):
    """Off: no measurement and the same latents; with every query sampled the probe equals the mass
    computed by hand from the softmax over the layer's keys (the queries and keys the forward used)."""
    from deepforcing.engine import AttentionProbe

    rc = RolloutConfig(num_frames=12, seed=1)
    on = Engine(tiny_model, probe=AttentionProbe(every=1, queries=10**6))
    off = Engine(tiny_model, probe=AttentionProbe(every=0))
    ev_on, ev_off = [], []
    a = on.generate(tiny_text, build_preset("self_forcing_sink", window=9), rc, callback=ev_on.append)
    b = off.generate(tiny_text, build_preset("self_forcing_sink", window=9), rc, callback=ev_off.append)
    assert torch.equal(a, b)
    assert all("attention_mass" not in ev.diagnostics for ev in ev_off)
    assert all("attention_mass" in ev.diagnostics for ev in ev_on)
    # by hand, in the last chunk's commit pass of the probed layer: softmax over the keys it reads
    import deepforcing.engine as engine_mod

    layer = tiny_model.cfg.num_layers // 2
    calls = []
    orig = engine_mod.attend

    def record(q, k, v, backend="sdpa"):
        calls.append((q, k))
        return orig(q, k, v, backend)

    engine_mod.attend = record
    try:
        ev = []
        # a trace makes the commit passes full (else the last layer attends only for the probe)
        on.generate(tiny_text, build_preset("self_forcing_sink", window=9), rc, callback=ev.append,
                    trace=lambda _record: None)
    finally:
        engine_mod.attend = orig
    q, k = calls[-len(tiny_model.blocks) + layer]  # the last forward is the last chunk's commit pass
    p = torch.softmax((q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2)) / q.shape[-1] ** 0.5, dim=-1)
    per_key = p.mean(dim=(0, 1, 2))
    cached = k.shape[1] - q.shape[1]
    mass = ev[-1].diagnostics["attention_mass"]
    assert mass["own"] == pytest.approx(float(per_key[cached:].sum()), abs=1e-5)
    assert mass["sink"] + mass["recent"] == pytest.approx(float(per_key[:cached].sum()), abs=1e-5)
