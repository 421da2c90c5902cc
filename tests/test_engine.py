"""The cached, chunk-by-chunk engine against one full-sequence forward with a block mask."""

import pytest
import torch

from deepforcing.engine import AttentionProbe, Engine, LatentStore, RolloutConfig
from deepforcing.errors import ConfigError
from deepforcing.model import MaskedAttention, Rope3D, TokenPositions
from deepforcing.policies import build_policy


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def block_mask(num_frames: int, chunk: int, tokens_per_frame: int, window: int | None) -> torch.Tensor:
    """mask[i, j]: query token i may see key token j. Block-causal over chunks; with a window,
    a query in the chunk ending at frame e sees only key frames >= e - window."""
    f = torch.arange(num_frames)
    chunk_end = (f // chunk + 1) * chunk
    allowed = f[None, :] < chunk_end[:, None]
    if window is not None:
        allowed &= f[None, :] >= (chunk_end - window)[:, None]
    return allowed.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)


def check_against_masked_forward(model, text, policy, rc, window):
    eng = Engine(model)
    records = []
    latents = eng.generate(text, policy, rc, trace=records.append)
    rope = Rope3D(model.cfg)
    grid = model.cfg.grid()
    tpf = grid[0] * grid[1]
    worst = 0.0
    for rec in records:
        stop = rec.span.stop
        x = torch.cat([latents[:, : rec.span.start], rec.x], dim=1)
        t = torch.cat([torch.full((1, rec.span.start), rc.context_noise), rec.t], dim=1)
        pos = TokenPositions.of_frames(torch.arange(stop), grid)
        attn = MaskedAttention(rope, pos, block_mask(stop, rc.chunk_frames, tpf, window))
        with torch.no_grad():
            flow = model(x, t, text, attn)[:, rec.span.start :]
        worst = max(worst, rel_err(rec.flow, flow))
    # every chunk: 4 denoising forwards + 1 commit forward
    assert len(records) == (rc.num_frames // rc.chunk_frames) * (len(rc.steps) + 1)
    return worst


def test_full_cache_equals_block_causal_full_sequence(tiny_model, tiny_text):
    rc = RolloutConfig(num_frames=21, seed=3)
    worst = check_against_masked_forward(tiny_model, tiny_text, build_policy("full_cache"), rc, window=None)
    assert worst <= 1e-5


def test_rolling_window_equals_windowed_mask(tiny_model, tiny_text):
    rc = RolloutConfig(num_frames=30, seed=4)
    worst = check_against_masked_forward(
        tiny_model, tiny_text, build_policy("rolling_window", window=9), rc, window=9
    )
    assert worst <= 1e-5


def test_window_that_is_not_a_chunk_multiple(tiny_model, tiny_text):
    rc = RolloutConfig(num_frames=24, seed=5)
    worst = check_against_masked_forward(
        tiny_model, tiny_text, build_policy("rolling_window", window=7), rc, window=7
    )
    assert worst <= 1e-5


def test_per_chunk_noise_gives_identical_prefixes(tiny_model, tiny_text):
    eng = Engine(tiny_model)
    short = eng.generate(tiny_text, build_policy("full_cache"), RolloutConfig(num_frames=12, seed=7))
    long = eng.generate(tiny_text, build_policy("rolling_window", window=12), RolloutConfig(num_frames=24, seed=7))
    assert torch.equal(short, long[:, :12])
    assert not torch.allclose(long[:, 12:15], long[:, 9:12])


def test_reference_noise_depends_on_total_length(tiny_model, tiny_text):
    eng = Engine(tiny_model)
    a = eng.generate(tiny_text, build_policy("full_cache"), RolloutConfig(num_frames=6, rng="reference", seed=7))
    b = eng.generate(tiny_text, build_policy("full_cache"), RolloutConfig(num_frames=9, rng="reference", seed=7))
    # the reference draws the whole initial noise first, so the chunk noise differs with the length
    assert not torch.allclose(a[:, 3:6], b[:, 3:6])
    # and it is repeatable
    a2 = eng.generate(tiny_text, build_policy("full_cache"), RolloutConfig(num_frames=6, rng="reference", seed=7))
    assert torch.equal(a, a2)


def test_two_videos_in_one_engine_equal_fresh_engines(tiny_model, tiny_text):
    rc = RolloutConfig(num_frames=15, seed=11)
    policy = build_policy("rolling_window", window=6)
    eng = Engine(tiny_model)
    first = eng.generate(tiny_text, policy, rc)
    eng.generate(tiny_text, policy, RolloutConfig(num_frames=9, seed=12))
    again = eng.generate(tiny_text, policy, rc)
    fresh = Engine(tiny_model).generate(tiny_text, build_policy("rolling_window", window=6), rc)
    assert torch.equal(first, again) and torch.equal(first, fresh)


def test_callback_sees_every_chunk(tiny_model, tiny_text):
    events = []
    Engine(tiny_model).generate(
        tiny_text, build_policy("rolling_window", window=6), RolloutConfig(num_frames=12), callback=events.append
    )
    assert [e.index for e in events] == [0, 1, 2, 3]
    assert [e.diagnostics["cache_frames"] for e in events] == [3, 6, 6, 6]
    assert events[-1].diagnostics["frames"] == [6, 7, 8, 9, 10, 11]


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(num_frames=20), "multiple of the chunk"),
        (dict(num_frames=9, rng="bogus"), "unknown rng mode"),
        (dict(num_frames=9, latent_hw=(5, 8)), "not divisible by the patch"),
        (dict(num_frames=9, steps=()), "empty"),
    ],
)
def test_bad_rollout_config_fails_before_work(tiny_model, tiny_text, kwargs, msg):
    with pytest.raises(ConfigError, match=msg):
        Engine(tiny_model).generate(tiny_text, build_policy("rolling_window"), RolloutConfig(**kwargs))


def test_full_cache_refuses_to_run_past_its_window(tiny_model, tiny_text):
    with pytest.raises(ConfigError, match="rolling_window"):
        Engine(tiny_model).generate(tiny_text, build_policy("full_cache"), RolloutConfig(num_frames=24))


def test_rope_limit_and_backend_follow_each_rollout_on_a_reused_engine(tiny_model, tiny_text):
    """The reused KV cache must not keep the RoPE table of an earlier rollout, and the attention backend
    is the rollout's, not the engine's first."""
    eng = Engine(tiny_model)
    short = RolloutConfig(num_frames=9, rope_max_pos=10, attn_backend="sdpa")
    eng.generate(tiny_text, build_policy("rolling_window", window=9), short)
    assert eng.backend == "sdpa"
    longer = RolloutConfig(num_frames=15)  # frames past 9: fine without the limit
    out = eng.generate(tiny_text, build_policy("rolling_window", window=9), longer)
    fresh = Engine(tiny_model).generate(tiny_text, build_policy("rolling_window", window=9), longer)
    assert torch.equal(out, fresh)
    with pytest.raises(Exception, match="outside the reference table"):
        eng.generate(tiny_text, build_policy("rolling_window", window=9), RolloutConfig(num_frames=15, rope_max_pos=10))
    with pytest.raises(ConfigError, match="unknown attention backend"):
        RolloutConfig(attn_backend="fast").validate()


def test_latent_store_keeps_the_last_frames_only_when_told():
    x = torch.arange(39.0).reshape(1, 39, 1, 1, 1)
    whole = LatentStore((1, 39, 1, 1, 1), torch.float32, torch.device("cpu"))
    tail = LatentStore((1, 39, 1, 1, 1), torch.float32, torch.device("cpu"), keep=5, max_write=3)
    assert tail.buf.shape[1] == 16
    for first in range(0, 39, 3):
        for s in (whole, tail):
            s.write(first, x[:, first : first + 3])
        assert torch.equal(tail.read(max(0, first - 5), first + 3), x[:, max(0, first - 5) : first + 3])
    assert torch.equal(whole.full, x) and tail.full is None
    with pytest.raises(ValueError, match="no longer held"):
        tail.read(20, 25)
    tail.write(36, x[:, 36:39] * 0)  # a rewrite of recent frames (the rolling rollout's window) is allowed
    assert torch.equal(tail.read(31, 39), torch.cat([x[:, 31:36], 0 * x[:, 36:39]], dim=1))


def test_rolling_rollout_with_a_tail_of_latents_gives_the_same_chunks(tiny_model, tiny_text):
    rc = RolloutConfig(num_frames=24, seed=4, rollout="rolling")
    eng = Engine(tiny_model)
    policy = build_policy("rolling_forcing", anchor=3, max_attention=15, capacity=18)
    full = eng.generate(tiny_text, policy, rc)
    chunks = []
    assert eng.generate(tiny_text, policy, rc, callback=lambda ev: chunks.append(ev.latents.clone()),
                        keep_latents=False) is None
    assert torch.equal(torch.cat(chunks, dim=1), full)


# ---- memory and in-place re-rotation -------------------------------------------------------------------


@pytest.mark.parametrize("name, settings", [("rolling_window", dict(window=9)),
                                            ("attention_sink", dict(sink=2, window=9, positions="absolute"))])
def test_cache_is_the_reference_layout_size(tiny_model, tiny_text, name, settings):
    """Self-Forcing's cache per layer is K and V of ``window`` frames (the chunk in flight included);
    ours holds no more: keys once (rotated), values, no scratch beyond the window."""
    cfg = tiny_model.cfg
    eng = Engine(tiny_model)
    eng.generate(tiny_text, build_policy(name, **settings), RolloutConfig(num_frames=15, seed=0))
    element = torch.finfo(tiny_model.dtype).bits // 8
    reference = cfg.num_layers * 2 * settings["window"] * cfg.tokens_per_frame() * cfg.dim * element
    assert eng._cache.nbytes() == reference


def test_in_place_rerotation_equals_rotation_from_raw_keys(tiny_model, tiny_text, monkeypatch):
    """A policy whose keys move every chunk (cache-relative sink): rotating the stored keys in place by the
    change of position gives the exact rotation from raw keys up to float rounding."""
    rc = RolloutConfig(num_frames=24, seed=5)
    settings = dict(sink=2, window=9, positions="cache_relative")
    exact = Engine(tiny_model).generate(tiny_text, build_policy("attention_sink", **settings), rc)
    policy = build_policy("attention_sink", **settings)
    monkeypatch.setattr(policy, "raw_keys", lambda: False)
    eng = Engine(tiny_model)
    moved = eng.generate(tiny_text, policy, rc)
    assert eng._cache.layers[0].k_raw is None
    assert rel_err(moved, exact) <= 1e-5


@pytest.mark.parametrize("name, settings", [("rolling_window", dict(window=9)), ("deep_sink", dict(window=9, sink=3)),
                                            ("longlive", dict(sink=3, window=9))])
def test_keys_only_commit_writes_the_same_cache_as_the_full_pass(tiny_model, tiny_text, name, settings):
    """The commit pass's output is discarded, so it stops after the last layer's keys and values; a trace
    (which records every output) forces full passes: both rollouts are bit-identical."""
    rc = RolloutConfig(num_frames=24, seed=6)
    fast = Engine(tiny_model).generate(tiny_text, build_policy(name, **settings), rc)
    records = []
    full = Engine(tiny_model).generate(tiny_text, build_policy(name, **settings), rc, trace=records.append)
    assert all(r.flow is not None for r in records)
    assert torch.equal(fast, full)


def test_float32_rope_rollout_agrees_with_the_float64_reference(tiny_model, tiny_text):
    fast = Engine(tiny_model).generate(tiny_text, build_policy("rolling_window", window=9),
                                       RolloutConfig(num_frames=18, seed=8))
    exact = Engine(tiny_model).generate(tiny_text, build_policy("rolling_window", window=9),
                                        RolloutConfig(num_frames=18, seed=8, rope_precision="float64"))
    assert rel_err(fast, exact) <= 1e-5


def test_unknown_rope_precision_fails_before_work(tiny_model, tiny_text):
    with pytest.raises(ConfigError, match="rope_precision"):
        Engine(tiny_model).generate(tiny_text, build_policy("rolling_window", window=9),
                                    RolloutConfig(num_frames=6, rope_precision="float16"))


# ---- ring layout: evicted rows refilled in place vs the compacting reference layout -------------------

RING_CASES = [
    ("rolling_window", dict(window=9), {}),
    ("attention_sink", dict(sink=2, window=9, positions="absolute"), {}),
    ("attention_sink", dict(sink=2, window=9, positions="cache_relative"), {}),
    ("deep_sink", dict(window=9, sink=4, align="code", rotation="delta"), {}),
    ("participative_compression", dict(window=12, sink=4, budget=9, recent=3), {}),
    ("participative_compression", dict(window=12, sink=4, budget=9, recent=3, heads="per_head"), {}),
    ("rolling_forcing", {}, dict(steps=(1000, 750, 500), rollout="rolling")),
]


@pytest.mark.parametrize("name, settings, rollout", RING_CASES)
def test_ring_layout_equals_the_compacting_layout(tiny_model, tiny_text, name, settings, rollout):
    """Evictions only re-map slots to rows (no K/V copy) and a window is read in buffer order; the old
    layout gathers kept slots to the front and reads in slot order. Same rollout up to float summation
    order (softmax attention does not depend on the key order)."""
    rc = RolloutConfig(num_frames=30, seed=9, **rollout)
    ring = Engine(tiny_model).generate(tiny_text, build_policy(name, **settings), rc)
    compact = Engine(tiny_model, compact_cache=True).generate(tiny_text, build_policy(name, **settings), rc)
    assert rel_err(ring, compact) <= 1e-5


def test_a_rolling_window_reads_its_keys_without_copying(tiny_model, tiny_text, monkeypatch):
    """Once the window rolls, every read of a FIFO window (with a sink too) is one view of the buffers, one
    contiguous block per head (the layout attention kernels read fastest), evictions copy no K/V rows, and
    no per-layer index goes to the device."""
    from deepforcing.cache import LayerKV

    views, original = [], LayerKV.read

    def spy(self, *args, **kwargs):
        keys, values = original(self, *args, **kwargs)
        views.append(keys.untyped_storage().data_ptr() == self.k_rot.untyped_storage().data_ptr()
                     and values.untyped_storage().data_ptr() == self.v.untyped_storage().data_ptr()
                     and all(t.stride(1) == t.shape[-1] and t.stride(-1) == 1 for t in (keys, values)))
        return keys, values

    moved, indexed = [], []
    monkeypatch.setattr(LayerKV, "read", spy)
    monkeypatch.setattr(LayerKV, "_compact", lambda self, count: moved.append(count))
    monkeypatch.setattr(LayerKV, "_dev", lambda self, idx: indexed.append(idx) or idx)
    for policy in (build_policy("rolling_window", window=9),
                   build_policy("attention_sink", sink=2, window=9, positions="absolute")):
        views.clear()
        engine = Engine(tiny_model, probe=AttentionProbe(every=0))
        engine.generate(tiny_text, policy, RolloutConfig(num_frames=30, seed=1))
        assert views and all(views)
        assert not moved  # no K/V row was ever copied by an eviction
        assert not indexed  # and no index tensor had to reach the device (on CUDA: no host-device copy)


def test_gathered_reads_are_the_chosen_rows_copied_head_major():
    """A read of chosen slots (a compression's selection, own tokens after them) returns exactly those tokens
    in that order, copied in the buffers' head-major layout (one contiguous block per head)."""
    from deepforcing.cache import LayerKV
    from deepforcing.model import tiny

    cfg = tiny()
    heads, d, tpf = cfg.num_heads, cfg.head_dim, 2
    kv = LayerKV(1, 6 * tpf, tpf, heads, d, (1, tpf), Rope3D(cfg), torch.float32, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    keys, values = [], []
    for f in range(7):  # six committed frames, then one staged
        k, v = torch.randn(2, 1, tpf, heads, d, generator=g)
        keys.append(k)
        values.append(v)
        fr = torch.full((tpf,), f)
        kv.stage(k, k, v, fr, fr, torch.zeros(tpf, dtype=torch.long), torch.arange(tpf))
        if f < 6:
            kv.commit()
    slots = torch.tensor([0, 1, 8, 9, 4])  # frame 0, frame 4, the first token of frame 2
    got_k, got_v = kv.read(slots, kv.frame[slots])
    want_k = torch.cat([torch.cat(keys[:6], dim=1)[:, slots], keys[6]], dim=1)
    want_v = torch.cat([torch.cat(values[:6], dim=1)[:, slots], values[6]], dim=1)
    assert torch.equal(got_k, want_k) and torch.equal(got_v, want_v)
    assert all(t.stride(1) == d and t.stride(-1) == 1 for t in (got_k, got_v))
    rows = kv._gather(kv.v, slots)  # the gather alone, before the staged tokens are appended
    assert torch.equal(rows, want_v[:, : len(slots)]) and rows.stride(1) == d


def test_compiled_dense_path_equals_eager(tiny_model, tiny_text):
    """torch.compile behind Engine(compile=...): the captured graphs (aot_eager: capture and
    functionalisation without code generation, fast enough for CPU tests) give the eager rollout."""
    rc = RolloutConfig(num_frames=15, seed=2)
    eager = Engine(tiny_model).generate(tiny_text, build_policy("rolling_window", window=9), rc)
    try:
        compiled = Engine(tiny_model, compile="aot_eager").generate(
            tiny_text, build_policy("rolling_window", window=9), rc)
    finally:
        tiny_model.compile_dense(None)
    assert tiny_model.compiled is None
    assert rel_err(compiled, eager) <= 1e-6
