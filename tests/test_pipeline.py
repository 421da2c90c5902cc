"""The generation job on real-format files: loader, umT5, Wan VAE, streaming mp4 and metrics."""

import json

import pytest
import torch
from tiny_files import write_self_forcing_root

from deepforcing.engine import RolloutConfig
from deepforcing.errors import WeightsError
from deepforcing.metrics.video import decode
from deepforcing.model import tiny
from deepforcing.pipeline import ModelSpec, PointConfig, Runtime, run_point


def test_missing_weights_are_listed_before_anything_loads(tmp_path):
    point = PointConfig(model=ModelSpec(kind="self_forcing", config="wan21_t2v_1_3b", weights_root=str(tmp_path)),
                        prompts=("a cat",))
    with pytest.raises(WeightsError) as info:
        point.validate()
    msg = str(info.value)
    for name in ("config.json", "self_forcing_dmd.pt", "models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl",
                 "Wan2.1_VAE.pth", "gdhe17/Self-Forcing"):
        assert name in msg
    assert not any(tmp_path.iterdir())


def test_self_forcing_kind_end_to_end_on_tiny_real_files(tmp_path, tiny_model):
    root = write_self_forcing_root(tmp_path / "weights", tiny(), tiny_model.state_dict())
    spec = ModelSpec(kind="self_forcing", config="tiny", weights_root=str(root), dtype="float32", device="cpu")
    point = PointConfig(model=spec, method="deep_sink", prompts=("A fox in the snow.", "Waves at night."),
                        rollout=RolloutConfig(num_frames=27, seed=1), metrics=("temporal_flickering",))
    runtime = Runtime()
    summary = run_point(point, runtime, tmp_path / "results", "e2e", progress=False)
    assert summary["videos"] == 2 and 0 < summary["temporal_flickering"] <= 1
    engine = runtime.engine(spec)
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(engine.model.state_dict()[k], v), k
    # models are loaded once for both videos; the text cache holds both prompts
    assert runtime.loads == {"backbone": 1, "text": 1, "vae": 1, "metrics": 1}
    assert len(list((tmp_path / "results" / ".cache" / "text").rglob("*.safetensors"))) == 2
    point_dir = next((tmp_path / "results" / "e2e").iterdir())
    for rec_path in (point_dir / "videos").glob("*.json"):
        rec = json.loads(rec_path.read_text())
        video = decode(point_dir / "videos" / rec["video"])
        assert video.frames.shape[0] == 4 * 27 - 3 == rec["frames"]
        assert video.frames.shape[1:3] == (6 * 8, 8 * 8)
        assert len(rec["diagnostics"]) == 9
    # a second run of the same point is skipped
    again = run_point(point, runtime, tmp_path / "results", "e2e", progress=False)
    assert again["skipped"] and runtime.loads["backbone"] == 1
