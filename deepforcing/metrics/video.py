"""Decode a video once into uint8 RGB frames shared by every dimension.

Frames come from decord (VBench's own ``load_video`` reader, one thread), the fastest of the three readers
VBench uses on our machines (a 33-frame 480x832 H.264 clip: decord 103 ms, OpenCV 151 ms, PyAV 191 ms
unthreaded and 348 ms with FFmpeg's frame threads); the frame rate comes from the container via PyAV.
``backend="pyav"`` decodes with PyAV alone (RGB24 conversion), the reference and the fallback for files
decord cannot open. On H.264 (yuv420p and lossless libx264rgb) both yield byte-identical frames, also
to OpenCV (VBench's temporal flickering, motion smoothness and dynamic degree readers);
``tests/metrics`` checks this.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepforcing.errors import ConfigError


class VideoError(ConfigError):
    """A video cannot be used: unreadable, empty or malformed. The message says how to fix it."""


@dataclass
class Video:
    """Frames as a uint8 tensor [T, H, W, 3] (RGB), with the frame rate."""

    frames: torch.Tensor
    fps: float
    path: str = "<memory>"

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def _decord_frames(path: str) -> np.ndarray | None:
    """All frames by decord with one thread, as VBench's ``load_video`` reads them; None if it cannot."""
    try:
        import decord

        decord.bridge.set_bridge("native")
        reader = decord.VideoReader(path, num_threads=1)
        n = len(reader)
        return reader.get_batch(list(range(n))).asnumpy() if n else None
    except Exception:  # decord missing or the file is one it cannot read: PyAV decides
        return None


def decode(path: str | Path, backend: str = "decord") -> Video:
    """Read every frame of ``path`` (any container FFmpeg reads) at native frame rate.

    ``backend``: "decord" (default; PyAV when decord cannot read the file) or "pyav" (the reference)."""
    import av

    if backend not in ("decord", "pyav"):
        raise ValueError(f"backend={backend!r}; use 'decord' or 'pyav'")
    path = str(path)
    if not Path(path).is_file():
        raise VideoError(f"{path}: no such file.")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: the file has no video stream.")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            frames = _decord_frames(path) if backend == "decord" else None
            if frames is None:
                decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
                frames = np.stack(decoded) if decoded else None
    except VideoError:
        raise
    except Exception as e:  # av.error.* and friends
        raise VideoError(
            f"{path}: cannot decode ({type(e).__name__}: {e}). The file is corrupt or not a video; "
            "re-encode it (e.g. H.264 mp4) or remove it from the input."
        ) from e
    if frames is None:
        raise VideoError(f"{path}: the video has zero frames.")
    if rate is None or float(rate) <= 0:
        raise VideoError(f"{path}: the video has no frame rate; re-mux it with an explicit fps.")
    return Video(torch.from_numpy(frames), float(rate), path)


def to_uint8_frames(frames, layout: str = "THWC") -> torch.Tensor:
    """Engine output -> uint8 [T, H, W, 3].

    ``frames``: a tensor or array, ``layout`` "THWC" ([T,H,W,3]) or "TCHW" ([T,3,H,W]). uint8 is taken
    as is; floats must be in [0, 1] (or [-1, 1] with ``layout`` suffixed by ``"-pm1"``, e.g. "TCHW-pm1"),
    and are rounded to the nearest 8-bit level, as an encoder would store them.
    """
    t = torch.as_tensor(frames).detach().cpu()
    base, _, rng = layout.partition("-")
    if t.ndim != 4:
        raise ConfigError(f"frames must have 4 dims ({base}), got shape {tuple(t.shape)}.")
    if base == "TCHW":
        t = t.permute(0, 2, 3, 1)
    elif base != "THWC":
        raise ConfigError(f"layout must be 'THWC' or 'TCHW' (optionally '-pm1'), got {layout!r}.")
    if t.shape[-1] != 3:
        raise ConfigError(f"frames must have 3 colour channels in layout {base}, got shape {tuple(t.shape)}.")
    if t.dtype == torch.uint8:
        return t.contiguous()
    if not t.is_floating_point():
        raise ConfigError(f"frames must be uint8 or float, got {t.dtype}.")
    t = t.float()
    if rng == "pm1":
        t = (t + 1) / 2
    if torch.isnan(t).any():
        raise ConfigError("frames contain NaN values.")
    return (t.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()


def write_lossless(path: str | Path, frames, fps: float) -> Path:
    """Write uint8 [T,H,W,3] RGB frames as lossless RGB H.264 (libx264rgb, qp 0): decoders return the
    exact frames, which is what bit-exact comparisons with vbench's own functions need."""
    import av

    f = to_uint8_frames(frames).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from fractions import Fraction

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264rgb", rate=Fraction(fps).limit_denominator(1001))
        s.width, s.height, s.pix_fmt = f.shape[2], f.shape[1], "rgb24"
        s.options = {"qp": "0"}
        for fr in f:
            for p in s.encode(av.VideoFrame.from_ndarray(fr, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path
