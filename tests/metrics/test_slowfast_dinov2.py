"""Slow-fast fusion, subject consistency: VBench-Long's DINOv2 clip-to-clip score.

Golden values (tests/fixtures/vbench_long_dinov2, recipe in its README) come from vbench 0.1.5's own
``subject_consistency_dinov2`` with DINOv2 ViT-B/14 built from facebookresearch/dinov2's hub code, on the
random weights ``RandomWeights`` writes; here our timm-based DINOv2 must reproduce them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from metrics_helpers import import_vbench_long, synthetic_frames
from vbench_long_dinov2_case import case_frames, same_init

from deepforcing.metrics.config import DriftConfig, EvalConfig, SlowFastConfig
from deepforcing.metrics.dims.base import VideoContext
from deepforcing.metrics.dims.subject import dinov2_transform, load_dinov2
from deepforcing.metrics.scorer import Scorer
from deepforcing.metrics.video import write_lossless

GOLDEN = json.loads((Path(__file__).parents[1] / "fixtures" / "vbench_long_dinov2" / "golden.json").read_text())
TOL = 1e-5


@pytest.fixture(scope="module")
def dinov2_weights(random_weights):
    p = random_weights.path("dinov2_vitb14")
    assert same_init(torch.load(p, map_location="cpu"), GOLDEN["weights_fingerprint"]), (
        "the random DINOv2 weights differ from those the golden values were made with (torch/timm changed?); "
        "regenerate with tests/fixtures/vbench_long_dinov2/make_golden.py")
    return p


def test_dinov2_transform_is_vbench_long_s(monkeypatch):
    import_vbench_long(monkeypatch)
    from vbench2_beta_long.utils import dinov2_transform as theirs

    x = torch.from_numpy(synthetic_frames(3, 144, 176, 2)).permute(0, 3, 1, 2).float()
    assert torch.equal(dinov2_transform(224)(x), theirs(224)(x))


def test_dinov2_features_and_clip2clip_match_golden(dinov2_weights):
    from deepforcing.metrics.dims.base import consistency

    frames = case_frames()
    assert int(frames.astype("int64").sum()) == GOLDEN["frames_sum"]
    model = load_dinov2(str(dinov2_weights), "cpu")
    with torch.no_grad():
        f = model(dinov2_transform(224)(torch.from_numpy(frames).permute(0, 3, 1, 2).float()))
    assert max(abs(a - b) for r, g in zip(f[:, :8].tolist(), GOLDEN["features_first8"], strict=True)
               for a, b in zip(r, g, strict=True)) <= 1e-4
    assert f.norm(dim=-1).tolist() == pytest.approx(GOLDEN["feature_norms"], abs=1e-4)
    total, n = consistency(torch.nn.functional.normalize(f, dim=-1))
    print(f"DINOv2 clip2clip: ours {total / n:.8f} vbench-long {GOLDEN['clip2clip']:.8f}")
    assert abs(total / n - GOLDEN["clip2clip"]) <= TOL
    assert 1 - GOLDEN["clip2clip"] > 100 * TOL  # the frames are distinguishable: the check can fail


def test_fusion_uses_dinov2_on_clip_first_frames(dinov2_weights, random_weights, tmp_path):
    """End to end: a 40-frame video at 8 fps has clips starting at 0, 16, 24 (and the fused score follows
    VBench-Long's formula with the table given); its clip-to-clip score is the DINOv2 consistency of
    exactly those three frames."""
    from deepforcing.metrics.dims.base import consistency

    frames = synthetic_frames(40, 144, 176, 21, speed=7)
    path = str(write_lossless(tmp_path / "v.mp4", frames, 8))
    table = tmp_path / "sb.yaml"
    table.write_text("0.0: 0.5\n1.0: 0.9\n")
    files = {**random_weights.files("subject_consistency"), "dinov2_vitb14": dinov2_weights}
    sc = Scorer(EvalConfig(dimensions=("subject_consistency",), weights={k: str(v) for k, v in files.items()},
                           drift=DriftConfig(enabled=False), progress=False,
                           slow_fast=SlowFastConfig(enabled=True, mapping_tables={"subject_consistency": str(table)})))
    d = sc.score_file(path).dimensions["subject_consistency"]
    assert d.error is None, d.error
    sf = d.drift["slow_fast"]
    assert sf["encoder"] == "dinov2_vitb14"
    model = load_dinov2(str(dinov2_weights), "cpu")
    ctx = VideoContext(torch.from_numpy(frames), 8.0)
    with torch.no_grad():
        f = model(dinov2_transform(224)(ctx.float_tchw([0, 16, 24])))
    total, n = consistency(torch.nn.functional.normalize(f, dim=-1))
    assert sf["clip2clip"] == pytest.approx(total / n, abs=1e-6)
    assert d.score == pytest.approx(0.5 * sf["inclip"] + 0.5 * (0.5 + 0.4 * sf["clip2clip"]), abs=1e-9)


def test_missing_dinov2_weights_skip_subject_with_a_message(random_weights, tmp_path):
    files = {k: str(v) for k, v in random_weights.files("subject_consistency").items()}
    missing = str(tmp_path / "dinov2_vitb14_pretrain.pth")
    sc = Scorer(EvalConfig(dimensions=("subject_consistency",), weights={**files, "dinov2_vitb14": missing},
                           progress=False, slow_fast=SlowFastConfig(enabled=True)))
    msg = sc.skipped["subject_consistency"]
    assert missing in msg and "dl.fbaipublicfiles.com/dinov2" in msg
    # with the DINO encoder instead, no DINOv2 file is needed
    sc = Scorer(EvalConfig(dimensions=("subject_consistency",), weights=files, progress=False,
                           slow_fast=SlowFastConfig(enabled=True, subject_encoder="dino")))
    assert "subject_consistency" in sc.metrics
