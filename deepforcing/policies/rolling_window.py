"""FIFO window: the oldest frames leave so that the cache plus the current chunk fit in ``window``
frames (Self-Forcing with ``local_attn_size = window``). Positions stay absolute."""

from __future__ import annotations

from deepforcing.cache import Geometry, KVCache
from deepforcing.errors import ConfigError
from deepforcing.policies.base import CachePolicy, FrameSpan, evict_oldest


class RollingWindow(CachePolicy):
    name = "rolling_window"

    def __init__(self, window: int = 21):
        super().__init__()
        if window <= 0:
            raise ConfigError(f"rolling_window: window must be positive, got {window}")
        self.window = window

    def capacity_frames(self, geom: Geometry) -> int:
        return self.window

    def begin_chunk(self, cache: KVCache, span: FrameSpan) -> None:
        evict_oldest(cache, span, self.window)
