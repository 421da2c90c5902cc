"""VBench-Long's optional scene-cut split (``--use_semantic_splitting``).

VBench-Long runs PySceneDetect's ``ContentDetector`` (threshold 35, its ``preprocess`` default; the
library's other defaults) through a ``SceneManager`` over the video file, writes each detected scene as its
own video and cuts every scene into clips separately. A video without a detected cut is used whole. Here
the same ``SceneManager`` reads the already-decoded frames through :class:`FrameStream` (a PySceneDetect
``VideoStream`` over memory, BGR like its OpenCV backend), so no file is written or decoded again.
"""

from __future__ import annotations

import numpy as np
import torch
from scenedetect.frame_timecode import FrameTimecode
from scenedetect.video_stream import VideoStream

from .protocol import Span

#: VBench-Long's ``preprocess(threshold=35.0)``
SCENE_THRESHOLD = 35.0


class FrameStream(VideoStream):
    """Frames [T,H,W,3] uint8 RGB in memory, served as PySceneDetect's OpenCV backend serves a file."""

    BACKEND_NAME = "memory"

    def __init__(self, frames: torch.Tensor | np.ndarray, fps: float, name: str = "<memory>"):
        super().__init__()
        self._frames = frames
        self._fps = float(fps)
        self._name = name
        self._next = 0  # frames read so far

    # -- properties of the stream ------------------------------------------------------------------
    @property
    def base_timecode(self) -> FrameTimecode:
        return FrameTimecode(timecode=0, fps=self._fps)

    @property
    def path(self) -> str:
        return self._name

    @property
    def name(self) -> str:
        return self._name

    @property
    def is_seekable(self) -> bool:
        return True

    @property
    def frame_rate(self) -> float:
        return self._fps

    @property
    def duration(self) -> FrameTimecode:
        return self.base_timecode + len(self._frames)

    @property
    def frame_size(self) -> tuple[int, int]:
        return int(self._frames.shape[2]), int(self._frames.shape[1])

    @property
    def aspect_ratio(self) -> float:
        return 1.0

    @property
    def position(self) -> FrameTimecode:
        return self.base_timecode + max(0, self._next - 1)

    @property
    def position_ms(self) -> float:
        return max(0, self._next - 1) * 1000.0 / self._fps

    @property
    def frame_number(self) -> int:
        return self._next

    # -- reading -------------------------------------------------------------------------------------
    def _bgr(self, i: int) -> np.ndarray:
        f = self._frames[i]
        f = f.numpy() if isinstance(f, torch.Tensor) else np.asarray(f)
        return np.ascontiguousarray(f[:, :, ::-1])

    def read(self, decode: bool = True, advance: bool = True):
        if advance:
            if self._next >= len(self._frames):
                return False
            self._next += 1
        if self._next == 0:
            return False
        return self._bgr(self._next - 1) if decode else True

    def reset(self) -> None:
        self._next = 0

    def seek(self, target) -> None:
        n = target.get_frames() if isinstance(target, FrameTimecode) else (
            round(target * self._fps) if isinstance(target, float) else int(target))
        self._next = max(0, min(int(n), len(self._frames)))


def detect_scenes(frames: torch.Tensor | np.ndarray, fps: float, threshold: float = SCENE_THRESHOLD) -> list[Span]:
    """Scenes of a video as frame spans; the whole video as one span when no cut is found."""
    from scenedetect import ContentDetector, SceneManager

    sm = SceneManager()
    sm.add_detector(ContentDetector(threshold=threshold))
    sm.detect_scenes(video=FrameStream(frames, fps))
    scenes = [Span(int(a.get_frames()), int(b.get_frames())) for a, b in sm.get_scene_list()]
    return [s for s in scenes if s.length > 0] or [Span(0, len(frames))]
