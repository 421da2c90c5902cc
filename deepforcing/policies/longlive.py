"""LongLive-1.0's frame sink and KV re-cache on a prompt switch (NVlabs/LongLive @ 2462895).

Single prompt: the first ``sink`` frames are never evicted, the rest is a FIFO window; a chunk
attends to the sink plus the last ``window - sink`` frames (its own included), every key at its
absolute RoPE position. This is Self-Forcing's ``sink_size`` cache with ``local_attn_size=window``.

Prompt switch at frame ``cur`` (``pipeline/interactive_causal_inference.py::_recache_after_switch``
with ``CausalWanSelfAttention``'s write rules), before the first chunk of the new prompt:

- one forward, with the new prompt at ``t = context_noise``, over the last ``n = min(window, cur)``
  clean frames ``[cur - n, cur)``, at their absolute positions;
- *recompute* (``cur - n > 0``, i.e. ``cur > window``) with ``global_sink``: the old-prompt sink
  slots stay; only the last ``window - sink`` frames are rewritten. The forward's keys are the old
  sink followed by those frames, so the first ``sink`` frames of the forward are queries only:
  their keys/values are neither attended to nor stored;
- otherwise (``global_sink`` false, or ``cur <= window``, where the reference's ``current_start > 0``
  test fails and the forward is not a recompute): every slot is rewritten by the ``n`` frames, which
  attend to each other bidirectionally; the first ``sink`` of them become the new sink;
- the cross-attention uses the new prompt from the re-cache on. Frame pointers do not move.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deepforcing.cache import RECENT, SINK, Geometry, KVCache, LayerKV
from deepforcing.errors import ConfigError
from deepforcing.policies import Preset, register
from deepforcing.policies.base import Context, FrameSpan, PromptSwitch, SinkWindowPolicy, Step, evict_oldest


@register
@dataclass(eq=False)
class LongLive(SinkWindowPolicy):
    name = "longlive"
    presets = {"longlive": Preset(dict(sink=3, window=12, global_sink=True),
                                  "LongLive-1.0 (NVlabs/LongLive 2462895) configs/longlive_inference.yaml: "
                                  "local_attn_size 12, sink_size 3, global_sink true; KV re-cache on prompt switch")}
    sink: int = 3
    window: int = 12
    global_sink: bool = True

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.global_sink, bool):
            raise ConfigError(f"longlive: global_sink must be true or false, got {self.global_sink!r}")
        if not 0 <= self.sink < self.window:
            raise ConfigError(f"longlive: need 0 <= sink < window, got sink={self.sink}, window={self.window}")
        self._skip_frames = 0  # leading frames of the re-cache forward that are queries only
        self.switches: list[dict] = []

    def max_recache_frames(self, geom: Geometry) -> int:
        return self.window

    def reset(self, geom: Geometry) -> None:
        super().reset(geom)
        self._skip_frames = 0
        self.switches = []

    # --- single prompt ---------------------------------------------------------------------
    def begin_chunk(self, cache: KVCache, span: FrameSpan) -> None:
        evict_oldest(cache, span, self.window, protected=self.sink)

    def commit(self, layer: int, kv: LayerKV, step: Step) -> None:
        tpf = self.geom.tokens_per_frame
        kv.commit(tag=RECENT, skip=self._skip_frames * tpf if step.phase.kind == "recache" else 0)
        kv.mark(slice(0, min(kv.n, self.sink * tpf)), SINK)  # the sink is the first `sink` frame slots

    # --- prompt switch ---------------------------------------------------------------------
    def on_prompt_switch(self, switch: PromptSwitch) -> None:
        cur = switch.span.start
        if cur == 0:
            return
        count = min(self.window, cur)
        first = cur - count
        keep_sink = self.global_sink and first > 0  # the reference's "is_recompute" (current_start > 0)
        tpf = self.geom.tokens_per_frame
        for kv in switch.cache.layers:
            kv.keep(torch.arange(min(kv.n, self.sink * tpf)) if keep_sink else torch.arange(0))
        self._skip_frames = count - (self.window - self.sink) if keep_sink else 0
        self.switches.append(dict(frame=cur, first=first, count=count, keep_sink=keep_sink,
                                  stored=list(range(first + self._skip_frames, cur))))
        try:
            switch.recache(first, count)
        finally:
            self._skip_frames = 0

    def context(self, layer: int, kv: LayerKV, step: Step) -> Context:
        if step.phase.kind == "recache" and self._skip_frames:
            tpf = self.geom.tokens_per_frame
            return Context(own=torch.arange(self._skip_frames * tpf, step.span.frames * tpf))
        return Context()
