"""Streaming mp4 writer (PyAV), atomic on close.

Frames arrive chunk by chunk (uint8 ``[T, H, W, 3]``) and are encoded as they come, so a minute of
video never sits in memory. The file appears under its final name only when it is complete.
Defaults match what the reference pipelines write (``torchvision.io.write_video``: H.264 via
libx264, yuv420p, x264's default CRF 23, 16 fps), but for x264's macroblock tree (below).

The same frames give the same bytes, run after run and machine after machine (same PyAV build):

- frames reach the encoder as C-contiguous arrays, whatever layout they arrive in;
- the encoder runs a fixed number of slice threads (x264 otherwise picks one per core, and the
  slices, hence the bitstream, follow that count);
- x264's macroblock-tree rate control is off (``mbtree=0``): with it, and B-frames, the libx264 that
  PyAV ships read memory it had not written, so the same frames gave a different file from one
  writer to the next in a process, and a different one for every ``MALLOC_PERTURB_`` fill byte.
  Every other x264 setting keeps its default;
- the container carries no creation time (PyAV writes none unless asked).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

# libx264 settings beyond the defaults: reproducible output (see the module docstring)
X264_PARAMS = "mbtree=0"


class VideoWriter:
    def __init__(self, path: str | os.PathLike, fps: float = 16.0, codec: str = "libx264", crf: int | None = 23,
                 pix_fmt: str = "yuv420p", threads: int = 4):
        if threads < 1:
            raise ValueError(f"threads must be >= 1 (a fixed count keeps the file reproducible), got {threads}")
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.fps, self.codec, self.crf, self.pix_fmt, self.threads = fps, codec, crf, pix_fmt, threads
        self._container = None
        self._stream = None
        self.frames = 0

    def _open(self, height: int, width: int) -> None:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.tmp), "w", format="mp4")
        stream = self._container.add_stream(self.codec, rate=Fraction(self.fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, self.pix_fmt
        # a fixed slice-thread count: the encoded slices do not depend on the machine's cores
        stream.codec_context.thread_type = "SLICE"
        stream.codec_context.thread_count = self.threads
        options = {"crf": str(self.crf)} if self.crf is not None else {}
        if self.codec == "libx264":
            options["x264-params"] = X264_PARAMS
        stream.options = options
        self._stream = stream

    def write(self, frames: torch.Tensor | np.ndarray) -> None:
        """Append uint8 RGB frames ``[T, H, W, 3]``."""
        import av

        arr = frames.detach().cpu().numpy() if torch.is_tensor(frames) else np.asarray(frames)
        arr = np.ascontiguousarray(arr)  # e.g. a permuted [T, C, H, W] tensor: encode from plain rows
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames [T, H, W, 3], got {arr.dtype} {arr.shape}")
        if self._container is None:
            self._open(arr.shape[1], arr.shape[2])
        for frame in arr:
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                self._container.mux(packet)
        self.frames += len(arr)

    def close(self) -> Path:
        """Flush, close and move the file to its final name."""
        if self._container is None:
            raise ValueError(f"no frames were written to {self.path}")
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop a half-written file."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:
                pass
            self._container = None
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
