"""Deep Sink: a deep persistent sink (about half the window) whose temporal RoPE phase is re-aligned.

The sink is the first ``sink`` latent frames generated. The rest of the window is a FIFO tail.

``sink`` is given in frames, or as ``sink_ratio`` of the window with the rule
``sink = floor(sink_ratio * window)`` (0.5 of 21 -> 10, the paper's default; 2/3 of 21 -> 14).

Sink alignment (``align``):

- ``none``: the sink keeps its absolute positions (Self-Forcing's ``sink_size``);
- ``paper``: the sink sits contiguously right before the earliest position the rest of the cache
  occupies, ``[tail_start - S, tail_start)`` (the paper's Eq. 3-6 read as "contiguous with the tail");
  with a FIFO tail this is the geometry of StreamingLLM's cache-relative positions;
- ``code``: the released code's rule: at every roll (a chunk whose insertion overflows the window)
  the sink moves to ``[P - L, P - L + S)``, ``P`` the chunk's first frame and ``L`` the cached frames
  after insertion; between rolls it stays. This leaves a one-chunk gap before the tail.

Queries keep their absolute positions in every mode.

Rotation (``rotation``): ``read_time`` rotates the raw sink keys straight to their position (exact);
``delta`` rotates the stored rotated keys in place by the change of position, in the cache dtype,
as the released code does, to measure the error that incremental bf16 rotation accumulates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch

from deepforcing.cache import SINK, TAG_NAMES, Geometry, KVCache, LayerKV
from deepforcing.errors import ConfigError
from deepforcing.policies import Preset, register
from deepforcing.policies.attention_sink import tag_sink
from deepforcing.policies.base import Context, FrameSpan, SinkWindowPolicy, Step, evict_oldest

ALIGN = ("none", "paper", "code")
ROTATION = ("read_time", "delta")


def sink_frames(window: int, sink: int | None, sink_ratio: float | None) -> int:
    """The sink size in frames: ``sink`` if given, else ``floor(sink_ratio * window)``."""
    if (sink is None) == (sink_ratio is None):
        raise ConfigError("deep_sink: give exactly one of sink (frames) or sink_ratio (fraction of the window)")
    if sink_ratio is not None:
        if not 0 <= sink_ratio < 1:
            raise ConfigError(f"deep_sink: sink_ratio must lie in [0, 1), got {sink_ratio}")
        sink = math.floor(sink_ratio * window + 1e-9)
    if not 0 <= sink < window:
        raise ConfigError(f"deep_sink: need 0 <= sink < window, got sink={sink}, window={window}")
    return sink


PAPER_DS = dict(window=21, sink=10)


@register
@dataclass(eq=False)
class DeepSink(SinkWindowPolicy):
    name = "deep_sink"
    presets = {
        "deep_sink": Preset(dict(PAPER_DS, align="paper"), "Deep Forcing Table 4 'SF+DS' (S=10, W=21), sink "
                            "contiguous with the tail (paper Eq. 3-6)"),
        "deep_sink_no_rope": Preset(dict(PAPER_DS, align="none"),
                                    "Deep Sink without RoPE re-alignment (paper App. A ablation)"),
        "deep_sink_only": Preset(dict(window=21, sink=14, align="code", rotation="delta"),
                                 "released Deep Forcing DS_inference.sh (S=14), released-code sink rule and bf16 "
                                 "delta rotation"),
    }
    knobs = {"sink_ratio": "sink_ratio", "rope_align": "align", "compression": "compression"}
    window: int = 21
    sink: int | None = None
    sink_ratio: float | None = None
    align: str = "paper"
    rotation: str = "read_time"

    def __post_init__(self):
        super().__post_init__()
        if self.align not in ALIGN:
            raise ConfigError(f"{self.name}: align must be one of {ALIGN}, got {self.align!r}")
        if self.rotation not in ROTATION:
            raise ConfigError(f"{self.name}: rotation must be one of {ROTATION}, got {self.rotation!r}")
        if self.window <= 0:
            raise ConfigError(f"{self.name}: window must be positive, got {self.window}")
        self.sink = sink_frames(self.window, self.sink, self.sink_ratio)

    @classmethod
    def with_knob(cls, settings: dict[str, Any], knob: str, value: Any) -> tuple[str, dict[str, Any]]:
        if knob == "sink_ratio":  # the ratio replaces the preset's sink size
            return cls.name, {**{k: v for k, v in settings.items() if k != "sink"}, "sink_ratio": value}
        if knob == "compression":  # Deep Sink plus a compression policy is Participative Compression
            from deepforcing.policies.participative import ParticipativeCompression

            if value == "none":
                return cls.name, settings
            pc = ParticipativeCompression
            keep = {k: v for k, v in settings.items() if k in {f.name for f in fields(cls)}}
            return pc.with_knob({**pc.presets["deep_forcing"].settings, **keep}, knob, value)
        return super().with_knob(settings, knob, value)

    def reset(self, geom: Geometry) -> None:
        super().reset(geom)
        self.offset = 0  # code alignment: sink position = frame + offset
        self.applied = [0] * geom.num_layers  # delta rotation already applied per layer
        self.span = FrameSpan(0, geom.chunk_frames)
        self.rolled = False
        self.positions_used: dict[str, list[int]] = {}
        self.sink_positions: list[list[int]] = [[] for _ in range(geom.num_layers)]  # per layer, commit pass

    def raw_keys(self) -> bool:
        # read_time re-aligns the sink exactly from its raw keys; delta rotates the stored keys in place
        return self.rotation == "read_time" and self.align != "none"

    # --- membership ------------------------------------------------------------------------
    def make_room(self, cache: KVCache, span: FrameSpan) -> bool:
        """Evict the oldest tail frames if the chunk would overflow; returns whether the cache rolled."""
        return evict_oldest(cache, span, self.window, protected=self.sink).numel() > 0

    def begin_chunk(self, cache: KVCache, span: FrameSpan) -> None:
        self.span = span
        self.rolled = self.make_room(cache, span)
        if self.rolled and self.align == "code":
            self.offset = span.start - self.frames_after_insertion(cache, span)

    def frames_after_insertion(self, cache: KVCache, span: FrameSpan) -> int:
        return len(cache.layers[0].frames()) + span.frames

    def commit(self, layer: int, kv: LayerKV, step: Step) -> None:
        kv.commit()
        tag_sink(kv, self.sink)

    # --- positions -------------------------------------------------------------------------
    def tail_positions(self, layer: int, kv: LayerKV) -> torch.Tensor:
        """Temporal positions of every cached slot, sink slots still at their absolute frames."""
        return kv.frame[: kv.n].clone()

    def sink_offset(self, t: torch.Tensor, is_sink: torch.Tensor) -> int:
        if self.align == "none" or not is_sink.any():
            return 0
        if self.align == "code":
            return self.offset
        tail = t[~is_sink]
        tail_start = int(tail.min()) if tail.numel() else self.span.start
        first_sink = int(t[is_sink].min())
        n_sink = int(t[is_sink].max()) - first_sink + 1
        return tail_start - n_sink - first_sink

    def context(self, layer: int, kv: LayerKV, step: Step) -> Context:
        t = self.tail_positions(layer, kv)
        is_sink = kv.tags() == SINK
        off = self.sink_offset(t, is_sink)
        if self.rotation == "delta" and off != self.applied[layer]:
            kv.shift_rotation(torch.nonzero(is_sink).flatten(), off - self.applied[layer])
            self.applied[layer] = off
        t[is_sink] += off
        if step.phase.is_commit:
            self.sink_positions[layer] = sorted(set(t[is_sink].tolist()))
        if layer == 0 and step.phase.is_commit:
            self.positions_used = {
                TAG_NAMES[tag]: sorted(set(t[kv.tags() == tag].tolist())) for tag in TAG_NAMES
            }
            self.positions_used["query"] = step.q_time.tolist()
        return Context(k_time=t)

    def diagnostics(self, cache: KVCache, span: FrameSpan) -> dict:
        d = super().diagnostics(cache, span)
        d.update(rolled=self.rolled, sink_offset=self.offset if self.align == "code" else None,
                 positions={k: v for k, v in self.positions_used.items() if v},
                 sink_positions=[list(p) for p in self.sink_positions])
        return d
