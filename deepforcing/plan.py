"""What a point will cost before it runs: videos, frames, time from measured throughput, disk.

Throughput and mp4 size per frame are measured by earlier points on the same model, dtype and device
and kept in ``<results root>/.cache/throughput.json``; before the first measurement the time is
unknown and said so. A plan over its limits (:class:`PlanLimits`) is refused with one message that
says which limit and how to raise it, unless forced.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from deepforcing.errors import ConfigError

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class PlanLimits:
    max_video_s: float = 3600.0  # one video's length in seconds (an hour: 30x the papers' longest)
    max_hours: float = 48.0  # estimated generation time of the point
    max_disk_gb: float = 500.0  # estimated bytes the point writes (latents + mp4)


@dataclass(frozen=True)
class Plan:
    videos: int
    latent_frames: int
    frames: int  # pixel frames per video
    fps: float  # video frame rate
    gen_fps: float | None  # measured generation throughput (frames/s), None before the first measurement
    latent_bytes: int  # per video
    mp4_bytes_per_frame: float | None

    @property
    def video_seconds(self) -> float:
        return self.frames / self.fps

    @property
    def est_seconds(self) -> float | None:
        return None if not self.gen_fps else self.videos * self.frames / self.gen_fps

    @property
    def disk_bytes(self) -> float:
        mp4 = (self.mp4_bytes_per_frame or 0.0) * self.frames
        return self.videos * (self.latent_bytes + mp4)

    def describe(self) -> str:
        t = (f"~{_duration(self.est_seconds)} at the measured {self.gen_fps:.1f} frames/s" if self.est_seconds
             else "time unknown (no throughput measured yet on this model and device)")
        mp4 = "" if self.mp4_bytes_per_frame else " + mp4 (size not measured yet)"
        return (f"plan: {self.videos} video(s) x {self.frames} frames ({self.video_seconds:.1f} s at {self.fps:g} fps, "
                f"{self.latent_frames} latent frames), {t}, disk ~{self.disk_bytes / 2**20:.1f} MiB{mp4}")

    def check(self, limits: PlanLimits, force: bool = False) -> None:
        over = []
        if self.video_seconds > limits.max_video_s:
            over.append(f"each video is {self.video_seconds:.0f} s > plan.max_video_s={limits.max_video_s:g}")
        if self.est_seconds and self.est_seconds > limits.max_hours * 3600:
            over.append(f"estimated {_duration(self.est_seconds)} > plan.max_hours={limits.max_hours:g}")
        if self.disk_bytes > limits.max_disk_gb * 2**30:
            over.append(f"~{self.disk_bytes / 2**30:.1f} GiB on disk > plan.max_disk_gb={limits.max_disk_gb:g}")
        if over and not force:
            raise ConfigError(f"{self.describe()}: refused, {'; '.join(over)}. Shorten the videos (length_s / "
                              "num_frames), raise the limit, or pass force=true to run it anyway")


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _throughput_file(root: str | os.PathLike) -> Path:
    return Path(root) / ".cache" / "throughput.json"


def machine_key(point) -> str:
    from deepforcing.model import preset

    m = point.model
    h, w = point.rollout.latent_hw or preset(m.config).latent_hw
    return f"{m.kind}/{m.config}/{m.dtype}/{m.torch_device().type}/{h}x{w}"


def measured(root: str | os.PathLike, point) -> dict:
    try:
        return json.loads(_throughput_file(root).read_text()).get(machine_key(point)) or {}
    except (OSError, ValueError, AttributeError):  # absent or unreadable: nothing measured
        return {}


def record_throughput(root: str | os.PathLike, point, records: list[dict], mp4_bytes: int) -> None:
    """Keep the throughput and mp4 size per frame of a finished point for the next plans."""
    from deepforcing.store import write_json_atomic

    frames = sum(r.get("frames") or 0 for r in records)
    secs = sum(r.get("seconds") or 0.0 for r in records)
    if not frames or not secs:
        return
    path = _throughput_file(root)
    try:
        table = json.loads(path.read_text())
        table = table if isinstance(table, dict) else {}
    except (OSError, ValueError):
        table = {}
    table[machine_key(point)] = {"fps": frames / secs, "mp4_bytes_per_frame": mp4_bytes / frames}
    write_json_atomic(path, table)


def plan_point(point, root: str | os.PathLike) -> Plan:
    from deepforcing.model import preset
    from deepforcing.vae import pixel_frames

    cfg = preset(point.model.config)
    h, w = point.rollout.latent_hw or cfg.latent_hw
    f = point.rollout.num_frames
    m = measured(root, point)
    latent_bytes = f * cfg.in_dim * h * w * DTYPE_BYTES[point.model.dtype]
    return Plan(videos=len(point.prompts), latent_frames=f, frames=pixel_frames(f, cfg.vae_stride[0]),
                fps=point.fps, gen_fps=m.get("fps"), latent_bytes=latent_bytes,
                mp4_bytes_per_frame=m.get("mp4_bytes_per_frame"))
