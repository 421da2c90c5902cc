"""The toy world: scenes, prompts, codec, text table, and the rules that read frames back (against the
world's own ground truth and hand-built frames)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deepforcing.errors import ConfigError
from deepforcing.toyworld.codec import ToyCodec, frames_to_signed, orthogonal
from deepforcing.toyworld.rules import MIN_AREA, read_frame
from deepforcing.toyworld.text import ToyTextEncoder
from deepforcing.toyworld.world import (
    BACKGROUNDS,
    OBJECT_SIZE,
    PALETTE,
    SPEEDS,
    VOCABULARY,
    ObjectState,
    Scene,
    parse_prompt,
    render,
)
from deepforcing.vae import VAE, decode_in_chunks


def test_a_scene_is_fixed_by_its_seed_and_its_prompt_reads_back():
    a, b = Scene(123), Scene(123)
    assert a.prompt == b.prompt and np.array_equal(a.frames(30), b.frames(30))
    for seed in range(50):
        sc = Scene(seed)
        assert parse_prompt(sc.prompt) == sc.spec
        assert 1 <= len(sc.spec.objects) <= 3 and len(sc.spec.colours) == len(sc.spec.objects)


def test_objects_keep_their_speed_and_stay_inside_the_frame():
    for seed in range(20):
        sc = Scene(seed)
        lo, hi = SPEEDS[sc.spec.speed]
        for frame in sc.states(200):
            for s in frame:
                assert lo - 1e-9 <= math.hypot(s.vx, s.vy) <= hi + 1e-9
                assert OBJECT_SIZE / 2 <= s.x <= sc.size - OBJECT_SIZE / 2
                assert OBJECT_SIZE / 2 <= s.y <= sc.size - OBJECT_SIZE / 2


def test_a_bounce_reflects_the_velocity():
    sc = Scene(0)
    s = ObjectState("red", "disc", sc.size - OBJECT_SIZE / 2 - 0.25, 10.0, 1.0, 0.0)
    sc.initial = (s,)
    nxt = sc.states(2)[1][0]
    assert nxt.vx == -1.0 and nxt.x == pytest.approx(sc.size - OBJECT_SIZE / 2 - 0.75)


def test_frames_hold_only_world_colours():
    colours = {tuple(c) for c in [*PALETTE.values(), *BACKGROUNDS.values()]}
    f = Scene(4).frames(10).reshape(-1, 3)
    assert {tuple(int(v) for v in p) for p in np.unique(f, axis=0)} <= colours


def test_unknown_words_and_malformed_prompts_are_clear_errors():
    with pytest.raises(ConfigError, match="outside the toy world's vocabulary: cat"):
        parse_prompt("a red cat bounces slowly on a gray background")
    with pytest.raises(ConfigError, match="names objects, a speed and a background"):
        parse_prompt("a red disc bounces on a gray background")
    with pytest.raises(ConfigError, match="each in its own colour"):
        parse_prompt("a red disc and a red square bounce slowly on a gray background")
    with pytest.raises(ConfigError, match="cat"):
        ToyTextEncoder(20, 32).encode(["a cat"])


def test_codec_round_trip_orthogonality_and_streaming():
    q = orthogonal(12, 0)
    assert torch.allclose(q @ q.T, torch.eye(12, dtype=torch.float64), atol=1e-12)
    codec = ToyCodec(2)
    assert isinstance(codec, VAE) and codec.latent_channels == 12 and codec.stride == (1, 2, 2)
    frames = torch.from_numpy(Scene(9).frames(12))[None]
    z = codec.encode(frames_to_signed(frames))
    assert z.shape == (1, 12, 12, 12, 12)
    back = codec.decode(z, "uint8").permute(0, 1, 3, 4, 2)
    assert (back.int() - frames.int()).abs().max() <= 1  # uint8 output truncates, as the real decoders' does
    assert torch.equal(torch.cat(list(decode_in_chunks(codec, z, 3, "uint8")), 1), codec.decode(z, "uint8"))


def test_text_table_marks_words_and_object_phrases():
    enc = ToyTextEncoder(20, 32)
    p = "a red disc and a blue square bounce slowly on a gray background"
    e = enc.encode([p])[0]
    words = p.split()
    v = len(VOCABULARY)
    for i, w in enumerate(words):
        assert e[i, :v].argmax() == VOCABULARY.index(w) and e[i, :v].sum() == 1
    slots = e[: len(words), v:].argmax(1).tolist()
    assert slots[:3] == [0, 0, 0] and slots[4:7] == [1, 1, 1] and set(slots[7:] + [slots[3]]) == {3}
    assert e[len(words):].abs().sum() == 0


def test_rules_read_back_the_ground_truth():
    """Object count, colours, background and positions read from rendered frames equal the scene's truth
    (whenever no object hides another)."""
    checked = 0
    for seed in range(30):
        sc = Scene(seed)
        for st, f in zip(sc.states(40), sc.frames(40), strict=True):
            apart = all(max(abs(a.x - b.x), abs(a.y - b.y)) > OBJECT_SIZE + 1 for i, a in enumerate(st)
                        for b in st[i + 1:])
            if not apart:
                continue
            r = read_frame(f)
            assert r.count == len(st) and r.colours == sc.spec.colours and r.background == sc.spec.background
            assert r.purity == 1.0
            for s in st:
                x, y = r.centroids[s.colour]
                assert abs(x - s.x) <= 0.5 and abs(y - s.y) <= 0.5
            checked += 1
    assert checked > 500


def test_two_blobs_of_one_colour_are_two_objects_and_small_specks_none():
    f = render((), "black")
    f[2:8, 2:8] = PALETTE["red"]
    f[14:20, 14:20] = PALETTE["red"]
    f[0, 23] = PALETTE["blue"]  # one pixel: below MIN_AREA
    r = read_frame(f)
    assert MIN_AREA > 1 and r.count == 2 and r.colours == {"red"} and "red" not in r.centroids


def test_objects_start_at_the_places_of_their_order_in_the_prompt():
    from deepforcing.toyworld.world import START_PLACES

    for seed in range(20):
        sc = Scene(seed)
        assert [f"a {s.colour} {s.shape}" for s in sc.initial] == [f"a {o.colour} {o.shape}" for o in sc.spec.objects]
        for s, (fx, fy) in zip(sc.initial, START_PLACES, strict=False):
            assert (s.x, s.y) == (fx * sc.size, fy * sc.size)
            assert SPEEDS[sc.spec.speed][0] <= (s.vx**2 + s.vy**2) ** 0.5 <= SPEEDS[sc.spec.speed][1]
