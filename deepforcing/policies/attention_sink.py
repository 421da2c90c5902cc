"""Attention sink: the first ``sink`` frames are never evicted; the rest is a FIFO window.

- ``positions="absolute"``: Self-Forcing's ``sink_size`` (and LongLive's frame sink). Every token
  keeps its absolute temporal position, so the sink drifts away from the queries as time goes on.
- ``positions="cache_relative"``: StreamingLLM proper. Keys sit at their frame's ordinal within the
  cache (0, 1, ...) and the queries right after the last cached frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deepforcing.cache import SINK, KVCache, LayerKV
from deepforcing.errors import ConfigError
from deepforcing.policies import Preset, register
from deepforcing.policies.base import Context, FrameSpan, Phase, SinkWindowPolicy, Step, evict_oldest

POSITIONS = ("absolute", "cache_relative")


def tag_sink(kv: LayerKV, sink: int) -> None:
    """Mark the slots of frames ``< sink`` (the first frames generated) as sink."""
    kv.mark(kv.frame[: kv.n] < sink, SINK)


def frame_ordinals(kv: LayerKV) -> torch.Tensor:
    """Each cached slot's frame ordinal within the cache (slot order; frames are contiguous runs)."""
    return torch.cumsum(kv.run_starts().long(), 0) - 1


@register
@dataclass(eq=False)
class AttentionSink(SinkWindowPolicy):
    name = "attention_sink"
    presets = {
        "self_forcing_sink": Preset(dict(sink=3, window=21, positions="absolute"),
                                    "Self-Forcing sink_size=3 at absolute positions (Deep Forcing App. A "
                                    "'LongLive-style sink')"),
        "streamingllm": Preset(dict(sink=3, window=21, positions="cache_relative"),
                               "StreamingLLM: 3-frame sink, positions within the cache"),
    }
    sink: int = 3
    window: int = 21
    positions: str = "absolute"

    def __post_init__(self):
        super().__post_init__()
        if self.positions not in POSITIONS:
            raise ConfigError(f"attention_sink: positions must be one of {POSITIONS}, got {self.positions!r}")
        if not 0 <= self.sink < self.window:
            raise ConfigError(f"attention_sink: need 0 <= sink < window, got sink={self.sink}, window={self.window}")
        self._cached_frames = 0

    def raw_keys(self) -> bool:
        return self.positions == "cache_relative"  # every slot moves as the window rolls: rotate exactly

    def begin_chunk(self, cache: KVCache, span: FrameSpan) -> None:
        evict_oldest(cache, span, self.window, protected=self.sink)
        self._cached_frames = len(cache.layers[0].frames())

    def query_positions(self, span: FrameSpan, phase: Phase) -> torch.Tensor | None:
        if self.positions == "absolute":
            return None
        return torch.arange(self._cached_frames, self._cached_frames + span.frames)

    def context(self, layer: int, kv: LayerKV, step: Step) -> Context:
        if self.positions == "absolute":
            return Context()
        return Context(k_time=frame_ordinals(kv))

    def commit(self, layer: int, kv: LayerKV, step: Step) -> None:
        kv.commit()
        tag_sink(kv, self.sink)
