"""FIFO window: the oldest frames leave so that the cache plus the current chunk fit in ``window``
frames (Self-Forcing with ``local_attn_size = window``). Positions stay absolute."""

from __future__ import annotations

from dataclasses import dataclass

from deepforcing.cache import Geometry, KVCache
from deepforcing.errors import ConfigError
from deepforcing.policies import Preset, register
from deepforcing.policies.base import CachePolicy, FrameSpan, evict_oldest


@register
@dataclass(eq=False)
class RollingWindow(CachePolicy):
    name = "rolling_window"
    presets = {"rolling_window": Preset(dict(window=21), "Self-Forcing with local_attn_size=21, sink_size=0: the "
                                        "'Self Forcing' long-video rows of Deep Forcing / LongLive / Rolling Forcing "
                                        "(inferred; no sink)")}
    window: int = 21

    def __post_init__(self):
        super().__post_init__()
        if self.window <= 0:
            raise ConfigError(f"rolling_window: window must be positive, got {self.window}")

    def capacity_frames(self, geom: Geometry) -> int:
        return self.window

    def room_frames(self, geom: Geometry) -> int:
        return geom.chunk_frames  # begin_chunk evicts until the cache plus one chunk fit the window

    def begin_chunk(self, cache: KVCache, span: FrameSpan) -> None:
        evict_oldest(cache, span, self.window)
