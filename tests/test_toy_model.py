"""The packaged toy model through the real pipeline: it loads through the ordinary loader, generates
toy-world videos that the world's rules read back as what the prompt asked for, and the sweep store
records the toy-world metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepforcing.engine import RolloutConfig
from deepforcing.errors import ConfigError, WeightsError
from deepforcing.metrics import TOY_METRICS
from deepforcing.model import toy
from deepforcing.model_files import TOY_CHECKPOINT
from deepforcing.pipeline import ModelSpec, PointConfig, Runtime, run_point, seams
from deepforcing.toyworld.codec import ToyCodec
from deepforcing.toyworld.rules import read_frame
from deepforcing.toyworld.samples import rollout_frames
from deepforcing.toyworld.text import ToyTextEncoder
from deepforcing.toyworld.train import HELDOUT_SEED_BASE
from deepforcing.toyworld.world import Scene

SPEC = ModelSpec(kind="toy", config="toy", device="cpu")


@pytest.fixture(scope="module")
def runtime():
    torch.set_num_threads(1)
    return Runtime()


def test_the_checkpoint_ships_in_the_package_and_loads_strictly(runtime):
    assert (TOY_CHECKPOINT / "config.json").is_file()
    assert (TOY_CHECKPOINT / "diffusion_pytorch_model.safetensors").is_file()
    model = runtime.engine(SPEC).model
    assert model.cfg == toy()
    assert isinstance(runtime.vae(SPEC), ToyCodec) and isinstance(runtime.text_encoder(SPEC), ToyTextEncoder)


def test_a_missing_or_mismatched_toy_setting_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="model.checkpoint"):
        ModelSpec(kind="toy", config="toy", checkpoint=str(tmp_path / "none")).check_files()
    with pytest.raises(ConfigError, match="does not go with"):
        ModelSpec(kind="toy", config="tiny").validate()


def test_inside_the_training_length_the_frames_show_what_the_prompt_asks_for(runtime):
    """Held-out scenes (never trained on), one training length each: the world's rules read the prompt's
    background from every decoded frame, and its object count and colours from most (docs/toyworld.md has
    the 32-scene numbers; these eight scenes, three of them among the four worst, give 0.82 there)."""
    from deepforcing.toyworld.world import parse_prompt

    model = runtime.engine(SPEC).model
    background, both = [], []
    for i in range(8):
        sc = Scene(HELDOUT_SEED_BASE + i)
        spec = parse_prompt(sc.prompt)
        with torch.no_grad():
            frames = rollout_frames(model, sc.prompt, 21, seed=i)
        for f in frames:
            r = read_frame(f)
            background.append(r.background == spec.background)
            both.append(r.background == spec.background and r.count == len(spec.objects)
                        and r.colours == spec.colours)
    assert np.mean(background) == 1.0
    assert np.mean(both) >= 0.7


def test_a_toy_point_stores_the_toy_metrics_per_segment(runtime, tmp_path):
    point = PointConfig(model=SPEC, method="rolling_window", prompts=(Scene(HELDOUT_SEED_BASE).prompt,),
                        rollout=RolloutConfig(num_frames=24, steps=toy().sample_steps, shift=toy().sample_shift),
                        metrics=(*TOY_METRICS, "chunk_seam_flicker"), segment_seconds=0.75)
    assert seams(point) == (3, 3)  # one latent frame is one pixel frame: chunks of 3 frames
    summary = run_point(point, runtime, tmp_path, "toy", progress=False)
    assert summary["videos"] == 1
    for m in point.metrics:
        assert summary[m] is not None, m
    assert 0 <= summary["toy_object_count"] <= 1 and summary["toy_sharpness"] > 0.5


def test_a_retrained_toy_checkpoint_at_the_same_path_is_a_new_point(tmp_path):
    """The toy checkpoint ships with the package and is replaced in place when retrained: the point key
    follows its content, so a store never reports stale videos as up to date."""
    import shutil

    from deepforcing.model_files import TOY_CHECKPOINT
    from deepforcing.store import point_key

    ck = tmp_path / "toy"
    shutil.copytree(TOY_CHECKPOINT, ck)
    point = PointConfig(model=ModelSpec(kind="toy", config="toy", checkpoint=str(ck), device="cpu"),
                        method="rolling_window", prompts=(Scene(HELDOUT_SEED_BASE).prompt,))
    packaged = PointConfig(model=SPEC, method="rolling_window", prompts=point.prompts)
    before = point_key(point.generation())
    assert point.generation()["model"]["weights_sha256"] == packaged.generation()["model"]["weights_sha256"]
    weights = ck / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    assert point_key(point.generation()) != before
    tiny = PointConfig(model=ModelSpec(), method="rolling_window", prompts=("a cat",))
    assert "weights_sha256" not in tiny.generation()["model"]
