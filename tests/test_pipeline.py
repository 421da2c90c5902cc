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


def test_video_is_scored_while_streaming_with_one_clip_of_frames_held(tmp_path, monkeypatch):
    """The record's metrics equal whole-video scoring of exactly the frames the mp4 writer received; the
    scorer was told the length, so it held about one 2-s clip of frames (plus a chunk), not the video."""
    import deepforcing.pipeline as pipeline
    from deepforcing.metrics.scorer import StreamingScorer

    written = []

    class Capture(pipeline.VideoWriter):
        def write(self, frames):
            written.append(frames.clone())
            super().write(frames)

    held = []
    push = StreamingScorer.push

    def spy(self, frames):
        out = push(self, frames)
        held.append(self.ctx.num_frames - self.ctx.released)
        return out

    monkeypatch.setattr(pipeline, "VideoWriter", Capture)
    monkeypatch.setattr(StreamingScorer, "push", spy)
    point = PointConfig(model=ModelSpec(device="cpu"), prompts=("a cat",), rollout=RolloutConfig(num_frames=45))
    runtime = Runtime()
    rec = pipeline.generate_video(runtime, point, "a cat", tmp_path / "v.mp4", "v")
    frames = torch.cat(written)
    assert rec["frames"] == len(frames) == 4 * 45 - 3 and rec["metrics"]["num_frames"] == len(frames)
    offline = runtime.scorer(point.metrics, point.segment_seconds, point.clips).score_frames(
        frames, point.fps, prompt="a cat", name="v").to_dict()
    for d in (offline, rec["metrics"]):
        d.pop("decode_seconds")
        for dim in d["dimensions"].values():
            dim.pop("seconds")
    dim = rec["metrics"]["dimensions"]["temporal_flickering"]
    assert dim["error"] is None and len(dim["segments"]) == 3 and dim["drift"]["vde"] is not None
    assert rec["metrics"] == offline
    assert max(held) <= 32 + 12 - 1  # 2-s clips at 16 fps, 12-frame chunks
