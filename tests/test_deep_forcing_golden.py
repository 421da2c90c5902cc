"""Golden fixtures from the released Deep Forcing code (commit ea9961a): our presets reproduce it.

``tests/fixtures/deep_forcing_tiny`` holds the outputs and per-compression records of the release's
own model and inference loop, run on the tiny random config in fp32 on CPU (recipe in its
README.md). Three runs: DS+PC (sink 10, budget 16, recent 4, reuse cap 7), DS-only (sink 14) and
DS+PC with reuse cap 2, so that the cap binds within 48 frames. Our ``deep_forcing_code`` and
``deep_sink_only`` presets must give, in every layer and at every compression or roll, the same
kept-token indices (positions in the augmented set: cache then the new chunk), the same Top-C reuse
counters and the same sink temporal positions; the same cache-length cycle; and the same latents
within ``REL_TOL``.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deepforcing.engine import Engine, RolloutConfig
from deepforcing.loading import load_generator
from deepforcing.model import CausalWan, tiny
from deepforcing.policies.presets import build_preset

FIXTURE = Path(__file__).parent / "fixtures" / "deep_forcing_tiny"
REL_TOL = 1e-5  # fp32: max |ours - reference| / max |reference|
PC_RUNS = ("ds_pc", "ds_pc_reuse2")
RUNS = {"ds_pc": "deep_forcing_code", "ds_only": "deep_sink_only", "ds_pc_reuse2": "deep_forcing_code"}


@cache
def fixture() -> tuple[dict, dict, dict]:
    meta = json.loads((FIXTURE / "meta.json").read_text())
    events = json.loads((FIXTURE / "events.json").read_text())
    io = load_file(FIXTURE / "io.safetensors")
    return meta, events, io


@cache
def model() -> CausalWan:
    meta, _, _ = fixture()
    cfg = tiny()
    ref = meta["model"]
    assert (cfg.dim, cfg.ffn_dim, cfg.freq_dim, cfg.num_heads, cfg.num_layers, cfg.text_dim, cfg.text_len) == (
        ref["dim"], ref["ffn_dim"], ref["freq_dim"], ref["num_heads"], ref["num_layers"], ref["text_dim"],
        ref["text_len"]), "the fixture was made for another tiny config"
    assert list(cfg.latent_hw) == meta["latent_hw"]
    m = CausalWan(cfg)
    load_generator(m, FIXTURE / "weights.pt", key="generator_ema")  # strict; strips the wrapper's "model."
    return m.eval()


def policy_for(tag: str):
    meta, _, _ = fixture()
    run = meta["runs"][tag]
    overrides = {}
    if run["extra_model_kwargs"].get("PC_topc_max_reuse") is not None:
        overrides["reuse_cap"] = run["extra_model_kwargs"]["PC_topc_max_reuse"]
    return build_preset(RUNS[tag], **overrides)


@cache
def rollout(tag: str) -> tuple[torch.Tensor, list[dict]]:
    meta, _, io = fixture()
    m = model()
    logs: list[dict] = []
    rc = RolloutConfig(num_frames=meta["num_frames"], chunk_frames=meta["chunk_frames"], rng="reference",
                       seed=meta["noise_seed"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only spin, badly so on a loaded machine
    try:
        out = Engine(m).generate(m.text_state(io["text"]), policy_for(tag), rc,
                                 callback=lambda ev: logs.append(ev.diagnostics))
    finally:
        torch.set_num_threads(threads)
    return out, logs


def rolls_by_chunk(tag: str) -> dict[int, dict]:
    return {r["chunk"]: r for r in fixture()[1][tag]["rolls"]}


# ---- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", list(RUNS))
def test_preset_settings_equal_the_release_run(tag):
    meta, _, _ = fixture()
    run, pol = meta["runs"][tag], policy_for(tag)
    tpf = meta["tokens_per_frame"]
    release = (run["sink_frames"], run["window_frames"], "code", "delta")
    assert (pol.sink, pol.window, pol.align, pol.rotation) == release
    if run["pc"] is None:
        assert pol.name == "deep_sink"
        return
    pc = run["pc"]
    assert pc["enable"] and pc["keep_sinks"] and pc["fusion"] == pol.fusion == "sum"
    assert (pol.budget * tpf, pol.recent * tpf, pol.reuse_cap) == (pc["capacity_tokens"], pc["window_tokens"],
                                                                    pc["topc_max_reuse"])
    assert (pol.query_source, pol.score, pol.heads, pol.topc_align) == ("both", "dot", "shared", "none")


def test_the_release_rng_order_is_ours():
    """The release draws the whole noise first, then one chunk-sized draw per denoising step but the last."""
    meta, _, io = fixture()
    steps = len(RolloutConfig().steps)
    for run in meta["runs"].values():
        assert run["rng_draws_after_initial_noise"] == meta["num_frames"] // meta["chunk_frames"] * (steps - 1)
        assert run["draw_shape"][0] == meta["chunk_frames"]
    gen = torch.Generator().manual_seed(meta["noise_seed"])
    torch.testing.assert_close(torch.randn(io["noise"].shape, generator=gen), io["noise"], rtol=0, atol=1e-5)
    # ^ same draws; the last bit of randn differs between CPU kernels (a wrong order differs by O(1))


# ---- outputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", list(RUNS))
def test_latents_match_the_release(tag):
    out, _ = rollout(tag)
    ref = fixture()[2][f"latents_{tag}"]
    assert out.shape == ref.shape
    rel = float((out - ref).abs().max() / ref.abs().max())
    assert rel <= REL_TOL, f"{tag}: max relative error {rel:.3g} > {REL_TOL}"


def test_the_tolerance_separates_the_modes():
    """The fixtures discriminate: DS+PC and DS-only differ far beyond REL_TOL once the cache rolls."""
    io = fixture()[2]
    a, b = io["latents_ds_pc"], io["latents_ds_only"]
    assert float((a - b).abs().max() / b.abs().max()) > 100 * REL_TOL


# ---- cache bookkeeping -------------------------------------------------------------------------


@pytest.mark.parametrize("tag", list(RUNS))
def test_rolls_and_cache_lengths_match(tag):
    meta, events, _ = fixture()
    _, logs = rollout(tag)
    tpf, chunk = meta["tokens_per_frame"], meta["chunk_frames"]
    ref_len = events[tag]["cache_tokens_after_commit"]
    assert [d["cache_tokens"] for d in logs] == ref_len
    key = "compressed" if tag in PC_RUNS else "rolled"
    assert [c for c, d in enumerate(logs) if d[key]] == sorted(rolls_by_chunk(tag))
    run = meta["runs"][tag]
    frames = [n // tpf for n in ref_len]
    first = min(rolls_by_chunk(tag))
    if run["pc"] is not None:  # budget <-> budget + chunk after the first compression (16 <-> 19)
        budget = run["pc"]["capacity_tokens"] // tpf
        assert frames[first:] == [budget + chunk * (i % 2) for i in range(len(frames) - first)]
        assert len(rolls_by_chunk(tag)) >= 4
    else:
        assert frames[first:] == [run["window_frames"]] * (len(frames) - first)


@pytest.mark.parametrize("tag", PC_RUNS)
def test_kept_tokens_and_reuse_counters_match_in_every_layer(tag):
    meta, _, _ = fixture()
    new_tokens = meta["chunk_frames"] * meta["tokens_per_frame"]
    _, logs = rollout(tag)
    for c, roll in rolls_by_chunk(tag).items():
        ours = logs[c]["topc_layers"]
        assert len(ours) == len(roll["layers"])
        for mine, ref in zip(ours, roll["layers"], strict=True):
            where = f"{tag} chunk {c} layer {ref['layer']}"
            assert mine["augmented_tokens"] == ref["augmented_tokens"], where
            assert mine["candidates"] == ref["candidates_allowed"], where
            assert len(ref["selected"]) == ref["top_c"], where
            assert mine["augmented_index"] == ref["selected"], where
            # counters of the kept cached slots; the chunk in flight (the rest) starts at zero
            n = len(mine["reuse"])
            assert mine["reuse"] == ref["reuse_after"][:n], where
            assert not any(ref["reuse_after"][n:]), where
            assert n + new_tokens == ref["cache_tokens"], where  # after compression: kept slots + the chunk


def test_the_reuse_cap_binds_in_the_capped_run():
    meta, events, _ = fixture()
    cap = meta["runs"]["ds_pc_reuse2"]["extra_model_kwargs"]["PC_topc_max_reuse"]
    layers = [lay for r in events["ds_pc_reuse2"]["rolls"] for lay in r["layers"]]
    assert any(lay["candidates_allowed"] < lay["candidates"] for lay in layers)
    assert max(max(lay["reuse_after"]) for lay in layers) == cap


@pytest.mark.parametrize("tag", list(RUNS))
def test_sink_positions_match_in_every_layer(tag):
    meta, _, _ = fixture()
    _, logs = rollout(tag)
    run = meta["runs"][tag]
    tpf, sink = meta["tokens_per_frame"], run["sink_frames"]
    after = run["pc"]["capacity_tokens"] // tpf if run["pc"] is not None else run["window_frames"]
    rolls = rolls_by_chunk(tag)
    current = None
    for c, d in enumerate(logs):
        if c in rolls:
            current = [ref["sink_positions"] for ref in rolls[c]["layers"]]
            start = rolls[c]["start_frame"]
            # the release's rule: at every roll the sink moves to [P - L, P - L + S)
            assert all(p == list(range(start - after, start - after + sink)) for p in current)
            assert all(ref["sink_delta"] == ref["sink_base"] - (ref["sink_base_before"] or 0)
                       for ref in rolls[c]["layers"])
        if current is not None:  # between rolls the sink stays where the last roll put it
            assert d["sink_positions"] == current, f"{tag} chunk {c}"
