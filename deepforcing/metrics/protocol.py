"""VBench-Long clip splitting and the time windows used for drift (pure index arithmetic)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """Frames [start, end) of one clip, segment or window."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def seconds(self, fps: float) -> tuple[float, float]:
        return self.start / fps, self.end / fps


def frames_per_clip(fps: float, seconds: float) -> int:
    """VBench-Long counts a clip as ``int(fps) * seconds`` frames (fps truncated to an integer)."""
    return max(1, int(int(fps) * seconds))


def split_fixed(start: int, end: int, length: int) -> list[Span]:
    """VBench-Long's ``split_video_into_clips`` on frames [start, end):

    consecutive clips of ``length`` frames; a remainder becomes one more full-length clip padded
    backwards (it overlaps its predecessor and ends at the last frame); a range shorter than one clip is
    a single clip covering all of it.
    """
    n = end - start
    if n <= 0:
        return []
    if n < length:
        return [Span(start, end)]
    spans = [Span(start + i * length, start + (i + 1) * length) for i in range(n // length)]
    if n % length:
        spans.append(Span(end - length, end))
    return spans


def clips_for(span: Span, fps: float, seconds: float | None) -> list[Span]:
    """Clips of one dimension inside ``span`` (``seconds=None``: the span is one clip)."""
    if seconds is None:
        return [span] if span.length > 0 else []
    return split_fixed(span.start, span.end, frames_per_clip(fps, seconds))


def segments(num_frames: int, fps: float, seconds: float) -> list[Span]:
    """Drift segments: non-overlapping windows of ``seconds``; the last is padded backwards."""
    return split_fixed(0, num_frames, frames_per_clip(fps, seconds))


def edge_windows(num_frames: int, fraction: float) -> tuple[Span, Span]:
    """FramePack's start/end windows: the first and last ``ceil(fraction * T)`` frames (at least 2)."""
    k = min(num_frames, max(2, math.ceil(fraction * num_frames)))
    return Span(0, k), Span(num_frames - k, num_frames)


def equal_chunks(num_frames: int, n: int) -> list[Span]:
    """BlockVid's VDE chunks: ``n`` near-equal consecutive chunks (boundaries floor(i*T/n))."""
    n = max(1, min(n, num_frames))
    b = [(i * num_frames) // n for i in range(n + 1)]
    return [Span(b[i], b[i + 1]) for i in range(n)]


def middle_indices(start: int, end: int, num: int = 8) -> list[int]:
    """VBench's ``get_frame_indices(num, vlen, sample='middle')`` on frames [start, end)."""
    import numpy as np

    vlen = end - start
    acc = min(num, vlen)
    intervals = np.linspace(start=0, stop=vlen, num=acc + 1).astype(int)
    idx = [int((intervals[i] + intervals[i + 1] - 1) // 2) for i in range(acc)]
    if len(idx) < num:
        idx = idx + [idx[-1]] * (num - len(idx))
    return [start + i for i in idx]
