"""Vectorised paths against the loops they replace (each loop is VBench's formulation, kept as reference)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from metrics_helpers import synthetic_frames

from deepforcing.metrics.dims.base import VideoContext, consistency, consistency_reference
from deepforcing.metrics.dims.flicker import flicker_mae_reference, flicker_maes


def test_flicker_maes_equal_the_pairwise_reference():
    frames = torch.from_numpy(synthetic_frames(40, 64, 80, 0, speed=7))
    ctx = VideoContext(frames[:17], 8)
    ctx.append(frames[17:])  # two chunks: pairs across the chunk boundary too
    todo = [0, 1, 2, 5, 6, 15, 16, 17, 18] + list(range(20, 39))  # gaps, and runs longer than one chunk
    got: dict = {}
    flicker_maes(ctx, todo, got, chunk=8)
    assert sorted(got) == todo
    for i in todo:
        assert got[i] == flicker_mae_reference(ctx, i), i


def test_take_views_runs_inside_a_chunk_and_copies_everything_else():
    """``take`` returns the frames it is asked for, in order, whether it can answer with a view of a decoded chunk
    (a run of consecutive frames inside one chunk) or has to gather them (across chunks, gaps, repeats)."""
    frames = torch.from_numpy(synthetic_frames(12, 16, 24, 0))
    ctx = VideoContext(frames[:5], fps=8)
    ctx.append(frames[5:])  # chunks: frames 0-4 and 5-11
    for idx in [range(0, 5), range(1, 4), range(6, 12), range(3, 8), [2, 4, 6], [7, 7], [9], range(11, 12)]:
        got = ctx.take(idx)
        assert torch.equal(got, torch.stack([frames[i] for i in idx])), list(idx)
    assert ctx.take(range(1, 4)).data_ptr() == ctx.frame(1).data_ptr()  # a view, no copy
    assert ctx.take(range(3, 8)).data_ptr() != ctx.frame(3).data_ptr()  # across the chunk boundary: gathered
    ctx.release(5)
    assert torch.equal(ctx.take(range(5, 9)), frames[5:9])
    try:
        ctx.take(range(4, 7))
    except IndexError as e:
        assert "frame 4 is not held" in str(e)
    else:
        raise AssertionError("a released frame was returned")
    ctx.release(12)  # every frame gone: the same error, not a failed lookup
    try:
        ctx.take(range(12, 14))
    except IndexError as e:
        assert "frame 12 is not held" in str(e)
    else:
        raise AssertionError("a frame past the end was returned")


def test_consistency_equals_the_row_by_row_reference():
    g = torch.Generator().manual_seed(0)
    for n, d in [(2, 8), (17, 512), (160, 768)]:
        f = F.normalize(torch.randn(n, d, generator=g) + 0.3 * torch.randn(1, d, generator=g), dim=-1)
        f[n // 2] = -f[n // 2]  # negative cosines are clamped at 0
        total, pairs = consistency(f)
        ref_total, ref_pairs = consistency_reference(f)
        assert pairs == ref_pairs == n - 1
        assert abs(total / pairs - ref_total / ref_pairs) <= 1e-7, (n, total, ref_total)
    assert consistency(f[:1]) == (0.0, 0)


def test_raft_shared_features_equal_raft_forward(random_weights):
    """Per-frame encoder features shared by consecutive pairs and the upsampling done once: the same pair
    scores as RAFT's own forward (VBench's call), to float rounding."""
    from deepforcing.metrics.dims.dynamic import load_raft, raft_pairs
    from deepforcing.metrics.dims.flicker import static_pairs
    from deepforcing.metrics.protocol import Span

    vb = load_raft(str(random_weights.path("raft_things")), "cpu")
    frames = torch.from_numpy(synthetic_frames(9, 128, 160, 3, speed=9))
    pairs = [(i, i + 1) for i in range(8)] + static_pairs(Span(0, 9))[-2:] + [(0, 2), (2, 4)]
    fast, ref = VideoContext(frames, 8), VideoContext(frames, 8)
    raft_pairs(vb, fast, pairs, "cpu")
    raft_pairs(vb, ref, pairs, "cpu", fast=False)
    assert set(fast.cache["raft"]) == set(ref.cache["raft"]) == set(pairs)
    worst = 0.0
    for p in pairs:
        for k in ("top5", "top2"):
            a, b = fast.cache["raft"][p][k], ref.cache["raft"][p][k]
            worst = max(worst, abs(a - b) / max(1.0, abs(b)))
    print("largest relative difference", worst)
    assert worst <= 1e-5


def test_gpu_options_leave_the_cpu_path_alone(random_weights, tmp_path):
    """gpu_autocast / gpu_channels_last act on a GPU only: on the CPU the numbers are the fp32 path's."""
    import pytest

    from deepforcing.errors import ConfigError
    from deepforcing.metrics.config import ClipProtocol, DriftConfig, EvalConfig
    from deepforcing.metrics.scorer import Scorer
    from deepforcing.metrics.video import write_lossless

    with pytest.raises(ConfigError, match="gpu_autocast"):
        EvalConfig(gpu_autocast="int8")
    dims = ("background_consistency", "imaging_quality", "dynamic_degree")
    v = str(write_lossless(tmp_path / "v.mp4", synthetic_frames(6, 128, 144, 2, speed=9), 8))
    weights = {k: str(p) for d in dims for k, p in random_weights.files(d).items()}
    scores = []
    for opts in ({}, {"gpu_autocast": "bf16", "gpu_channels_last": True}):
        sc = Scorer(EvalConfig(dimensions=dims, device="cpu", weights=weights, clips=ClipProtocol(enabled=False),
                               drift=DriftConfig(enabled=False), progress=False, **opts))
        r = sc.score_file(v)
        scores.append([r.score(d) for d in dims])
    assert None not in scores[0] and scores[0] == scores[1]


def test_unpadded_musiq_equals_pyiqa_forward():
    """MUSIQ without its padded tokens gives pyiqa's MOS on non-square frames (where padding exists), on
    the SPAQ head (one output) and a distribution head (AVA's ten)."""
    import torch
    from pyiqa.archs.musiq_arch import MUSIQ

    from deepforcing.metrics.musiq_fast import musiq_mos

    torch.manual_seed(0)
    for num_class in (1, 10):
        m = MUSIQ(pretrained=False, num_class=num_class, num_layers=2).eval()
        for h, w in ((96, 160), (160, 96), (64, 64)):
            x = torch.rand(2, 3, h, w)
            with torch.no_grad():
                ref = m(x)
            fast = musiq_mos(m, x)
            assert fast.shape == ref.shape
            torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    m.train()
    import pytest

    with pytest.raises(ValueError, match="eval mode"):
        musiq_mos(m, x)


def test_cpu_frames_per_forward_follow_the_token_budget():
    """Hand-computed: on a CPU a forward takes about cpu_tokens_per_forward tokens, on a GPU batch_size."""
    import pytest

    from deepforcing.errors import ConfigError
    from deepforcing.metrics.config import EvalConfig
    from deepforcing.metrics.dims.base import frames_per_forward, vit_tokens

    assert vit_tokens(224, 224, 16) == 197 and vit_tokens(224, 336, 16) == 295 and vit_tokens(224, 224, 14) == 257
    assert vit_tokens(224, 224, 32) == 50 and vit_tokens(224, 398, 16) == 14 * 24 + 1  # partial patch floored
    cfg = EvalConfig()
    assert [frames_per_forward(cfg, "cpu", t) for t in (197, 295, 257, 50, 5000)] == [5, 3, 3, 20, 1]
    assert frames_per_forward(cfg, "cuda:0", 197) == cfg.batch_size == 32
    assert frames_per_forward(EvalConfig(batch_size=2), "cpu", 50) == 2  # never more than batch_size
    with pytest.raises(ConfigError, match="cpu_tokens_per_forward"):
        EvalConfig(cpu_tokens_per_forward=0)


def test_scores_do_not_depend_on_frames_per_forward(random_weights, tmp_path):
    """One frame per forward (vbench's subject-consistency loop), the CPU token budget, and every frame in
    one forward give the same scores to float rounding, on a portrait clip (non-square DINO input)."""
    from deepforcing.metrics.config import ClipProtocol, DriftConfig, EvalConfig
    from deepforcing.metrics.scorer import Scorer
    from deepforcing.metrics.video import write_lossless

    dims = ("subject_consistency", "background_consistency", "aesthetic_quality")
    v = str(write_lossless(tmp_path / "v.mp4", synthetic_frames(9, 144, 128, 4, speed=9), 8))
    weights = {k: str(p) for d in dims for k, p in random_weights.files(d).items()}
    scores = []
    for opts in ({"cpu_tokens_per_forward": 1}, {}, {"cpu_tokens_per_forward": 10**6}):
        sc = Scorer(EvalConfig(dimensions=dims, device="cpu", weights=weights, clips=ClipProtocol(enabled=False),
                               drift=DriftConfig(enabled=False), progress=False, **opts))
        r = sc.score_file(v)
        scores.append([r.score(d) for d in dims])
    assert None not in scores[0]
    for s in scores[1:]:
        assert max(abs(a - b) for a, b in zip(s, scores[0], strict=True)) <= 1e-6, scores


def test_cpu_pairs_per_forward_follow_the_pixel_budget():
    """Hand-computed: RAFT / AMT pairs per forward from the frame size on a CPU, 4 on a GPU."""
    import pytest

    from deepforcing.errors import ConfigError
    from deepforcing.metrics.config import EvalConfig
    from deepforcing.metrics.dims.base import pairs_per_forward

    cfg = EvalConfig()
    sizes = ((480, 832), (128, 192), (128, 128), (64, 64))
    assert [pairs_per_forward(cfg, "cpu", hw) for hw in sizes] == [1, 10, 16, 32]  # 2**18 // (h * w), at most 32
    assert pairs_per_forward(cfg, "cuda", (128, 128)) == 4 and pairs_per_forward(None, "cpu", (480, 832)) == 4
    with pytest.raises(ConfigError, match="cpu_pixels_per_forward"):
        EvalConfig(cpu_pixels_per_forward=0)


def test_pair_scores_do_not_depend_on_pairs_per_forward(random_weights, tmp_path):
    """AMT and RAFT one pair per forward (vbench's loops), the CPU budget, and all pairs in one forward: the
    same per-pair results to float rounding (dynamic degree's flows, motion smoothness' AMT errors)."""
    from deepforcing.metrics.config import ClipProtocol, DriftConfig, EvalConfig
    from deepforcing.metrics.scorer import Scorer
    from deepforcing.metrics.video import write_lossless

    dims = ("motion_smoothness", "dynamic_degree")
    v = str(write_lossless(tmp_path / "v.mp4", synthetic_frames(9, 128, 144, 4, speed=9), 8))
    weights = {k: str(p) for d in dims for k, p in random_weights.files(d).items()}
    details = []
    for budget in (1, 2**18, 10**9):
        sc = Scorer(EvalConfig(dimensions=dims, device="cpu", weights=weights, clips=ClipProtocol(enabled=False),
                               drift=DriftConfig(enabled=False), progress=False, cpu_pixels_per_forward=budget))
        r = sc.score_file(v)
        details.append((r.score("motion_smoothness"), r.score("dynamic_degree")))
    ref_ms, ref_dd = details[0]
    for ms, dd in details[1:]:
        assert abs(ms - ref_ms) <= 1e-6 and dd == ref_dd, details
    # dynamic degree is a yes/no per video: compare RAFT's per-pair flow statistics themselves
    from deepforcing.metrics.dims.base import VideoContext
    from deepforcing.metrics.dims.dynamic import load_raft, raft_pairs

    vb = load_raft(weights["raft_things"], "cpu")
    frames = torch.from_numpy(synthetic_frames(9, 128, 144, 4, speed=9))
    pairs = [(i, i + 1) for i in range(8)]
    one, budget = VideoContext(frames, 8), VideoContext(frames, 8)
    raft_pairs(vb, one, pairs, "cpu", batch=1)
    raft_pairs(vb, budget, pairs, "cpu", cfg=EvalConfig())
    for p in pairs:
        assert abs(one.cache["raft"][p]["top5"] - budget.cache["raft"][p]["top5"]) <= 1e-4, p


def test_flow_early_exit_decides_what_vbench_decides_from_every_pair():
    """``settled`` on any prefix of a clip's pair scores either abstains or says what vbench's ``check_move``
    says on all of them; on the full list it always decides; batches sized by ``pairs_to_decide`` end at the
    first prefix that decides. Exhaustive over small cases plus random ones."""
    import itertools
    import random
    from types import SimpleNamespace

    from vbench.dynamic_degree import DynamicDegree

    from deepforcing.metrics.dims.dynamic import pairs_to_decide, settled

    def vbench(scores, t, n):
        return DynamicDegree.check_move(SimpleNamespace(params={"thres": t, "count_num": n}), scores)

    cases = [list(c) for k in range(1, 7) for c in itertools.product((1.0, 9.0), repeat=k)]
    rnd = random.Random(0)
    cases += [[rnd.uniform(0, 12) for _ in range(rnd.randint(1, 40))] for _ in range(300)]
    for scores in cases:
        for t in (6.0, 3.0):
            for n in {0, 1, 2, round(4 * (len(scores) + 1) / 16), len(scores), len(scores) + 1}:
                full = vbench(scores, t, n)
                assert settled(scores, len(scores), t, n) == full
                for k in range(len(scores)):
                    early = settled(scores[:k], len(scores), t, n)
                    assert early is None or early == full, (scores, t, n, k)
                # batches of pairs_to_decide stop exactly at the first prefix that decides
                first = next(j for j in range(len(scores) + 1) if settled(scores[:j], len(scores), t, n) is not None)
                k = 0
                while (m := pairs_to_decide(scores[:k], len(scores), t, n)) > 0:
                    k += m
                assert k == first, (scores, t, n)
    # by hand: two of fifteen pairs above 6 px with two needed decide "dynamic" after the second pair;
    # thirteen of fifteen below with three needed decide "static" after the thirteenth
    assert settled([7.0], 15, 6.0, 2) is None and settled([7.0, 8.0], 15, 6.0, 2) is True
    assert settled([1.0] * 12, 15, 6.0, 3) is None and settled([1.0] * 13, 15, 6.0, 3) is False
    # and the batch sizes that never compute a pair the decision did not need
    assert pairs_to_decide([], 15, 6.0, 4) == 4 and pairs_to_decide([7.0, 7.0], 15, 6.0, 4) == 2
    assert pairs_to_decide([1.0] * 11, 15, 6.0, 4) == 1 and pairs_to_decide([7.0] * 4, 15, 6.0, 4) == 0
    assert pairs_to_decide([], 15, 6.0, 0) == 1 and pairs_to_decide([], 3, 6.0, 3) == 1


def test_flow_early_exit_stops_raft_and_keeps_every_score(random_weights, tmp_path):
    """RAFT batches follow ``plan`` (pairs in frame order; 0 stops); VBench-Long clips and drift windows get the
    same dynamic degree with and without the early exit, and what a clip's details list as computed decides it."""
    from deepforcing.metrics.config import DriftConfig, EvalConfig
    from deepforcing.metrics.dims.base import VideoContext
    from deepforcing.metrics.dims.dynamic import load_raft, raft_pairs, settled
    from deepforcing.metrics.scorer import Scorer
    from deepforcing.metrics.video import write_lossless

    weights = {k: str(p) for k, p in random_weights.files("dynamic_degree").items()}
    vb = load_raft(weights["raft_things"], "cpu")
    frames = torch.from_numpy(synthetic_frames(6, 128, 128, 2, speed=5))
    ctx = VideoContext(frames, 8)
    asked = []
    raft_pairs(vb, ctx, [(i, i + 1) for i in range(5)], "cpu", batch=8,
               plan=lambda cache: asked.append(len(cache)) or (2 if not cache else 1 if len(cache) == 2 else 0))
    assert sorted(ctx.cache["raft"]) == [(0, 1), (1, 2), (2, 3)] and asked == [0, 2, 3]

    v = str(write_lossless(tmp_path / "v.mp4", synthetic_frames(40, 128, 128, 3, speed=7), 8))
    runs = {}
    for early in (True, False):
        sc = Scorer(EvalConfig(dimensions=("dynamic_degree",), device="cpu", weights=weights, progress=False,
                               details=True, flow_early_exit=early, drift=DriftConfig(segment_seconds=2.5)))
        runs[early] = sc.score_file(v).to_dict()["dimensions"]["dynamic_degree"]
    early, full = runs[True], runs[False]
    assert early["error"] is None and full["error"] is None
    assert early["score"] == full["score"] and early["drift"] == full["drift"]
    assert len(early["clips"]) == len(full["clips"]) >= 2
    skipped = 0
    for a, b in zip(early["clips"], full["clips"], strict=True):
        assert a["score"] == b["score"] and b["flow_pairs_computed"] == len(b["flow_pairs"])
        known = [(x, y) for x, y in zip(a["flow_top5"], b["flow_top5"], strict=True) if x is not None]
        assert a["flow_pairs_computed"] == len(known) >= 1
        assert all(abs(x - y) <= 1e-4 * max(1.0, y) for x, y in known)
        skipped += len(b["flow_pairs"]) - len(known)
        if len(known) < len(b["flow_pairs"]):  # what was computed decides the clip on its own
            assert settled([x for x, _ in known], len(b["flow_pairs"]), a["flow_threshold"],
                           a["flow_count_needed"]) == bool(a["score"])
    assert skipped > 0, "the early exit never triggered: the test video does not exercise it"
