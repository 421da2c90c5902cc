"""The cache/policy seam.

The engine runs the model; a policy decides what the KV cache holds and how it is read:

- ``capacity_frames(geom)``: how many committed frames the per-layer buffers must hold;
- ``begin_chunk(cache, span)``: membership changes before a chunk is denoised (eviction);
- ``query_positions(span, phase)``: temporal positions of the query frames (``None``: absolute);
- ``context(layer, kv, step)``: called in every layer of every forward, after the forward's own
  tokens are staged in the cache and before attention. Returns which cached slots the queries
  read and at which temporal positions. It may also record what it needs (recent queries) and
  change membership (compression at the first denoising step);
- ``commit(layer, kv, step)``: after attention in the commit pass; default stores the whole span.

The engine never knows which policy runs. One policy object serves one rollout at a time and is
``reset`` for every video.

A policy is a dataclass: its fields are its settings (a point's identity is :meth:`describe`, the
fields as they run). Beside the class it declares, as class variables, its ``name``, the ``presets``
it offers (:class:`~deepforcing.policies.Preset`: settings, source, rollout settings), the sweep
``knobs`` it accepts (knob -> field; :meth:`with_knob` for knobs that need more) and the rollout it
``needs`` (``None``: the chunk-by-chunk block loop); ``@register`` adds it to the catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from deepforcing.cache import TAG_NAMES, Geometry, KVCache, LayerKV
from deepforcing.errors import ConfigError


@dataclass(frozen=True)
class FrameSpan:
    """The latent frames of the forward in flight: ``[start, start + frames)``."""

    start: int
    frames: int

    @property
    def stop(self) -> int:
        return self.start + self.frames

    def ids(self) -> torch.Tensor:
        return torch.arange(self.start, self.stop)


@dataclass(frozen=True)
class Phase:
    """``denoise`` (step index, timestep), ``commit`` (the clean pass that writes the cache) or ``recache``."""

    kind: str
    step: int = 0
    t: float = 0.0

    @property
    def is_commit(self) -> bool:
        return self.kind == "commit"

    @property
    def writes(self) -> bool:
        """Passes whose keys and values the policy may store: the commit pass and a re-cache."""
        return self.kind in ("commit", "recache")

    @property
    def first_step(self) -> bool:
        return self.kind == "denoise" and self.step == 0


@dataclass
class Step:
    """What a policy sees of the forward in flight, in one layer."""

    span: FrameSpan
    phase: Phase
    q: torch.Tensor  # queries rotated to their positions, [B, L, H, D]
    q_time: torch.Tensor  # temporal position of each query frame (host), [frames]


@dataclass
class Context:
    """What one forward attends to in one layer.

    - ``slots``: cached slots read, in this order (``None``: all of ``[0, n)``);
    - ``k_time``: temporal position of each read slot (``None``: its absolute frame);
    - ``own``: which of the forward's own staged tokens are keys too (``None``: all);
    - ``mask``: optional boolean key mask ``[H, K]`` over the K keys (read slots then own tokens),
      for per-head selections; ``None`` lets every head see every key.
    """

    slots: torch.Tensor | None = None
    k_time: torch.Tensor | None = None
    own: torch.Tensor | None = None
    mask: torch.Tensor | None = None


@dataclass
class PromptSwitch:
    """Handed to ``CachePolicy.on_prompt_switch`` before the first chunk of a new prompt."""

    cache: KVCache
    span: FrameSpan  # the first chunk generated with the new prompt
    text: Any  # the new prompt's TextState
    history: torch.Tensor  # clean latents generated so far [B, F, C, H, W] (the last ones if the engine keeps a tail)
    recache: Any  # recache(first_frame, num_frames): one re-cache forward over history frames


@dataclass(eq=False)
class CachePolicy:
    name: ClassVar[str] = "base"
    presets: ClassVar[dict] = {}  # preset name -> deepforcing.policies.Preset
    knobs: ClassVar[dict[str, str]] = {}  # sweep knob -> the field it sets
    needs: ClassVar[str | None] = None  # the rollout this policy runs under (None: "block")

    def __post_init__(self):
        self.geom: Geometry | None = None
        self.log: list[dict[str, Any]] = []

    @classmethod
    def with_knob(cls, settings: dict[str, Any], knob: str, value: Any) -> tuple[str, dict[str, Any]]:
        """(policy name, settings) once the sweep knob ``knob`` is applied to this policy's ``settings``."""
        return cls.name, {**settings, cls.knobs[knob]: value}

    # --- configuration ---------------------------------------------------------------------
    def capacity_frames(self, geom: Geometry) -> int:
        raise NotImplementedError

    def validate(self, geom: Geometry) -> None:
        """Raise ConfigError if this policy cannot run the rollout ``geom`` describes."""
        if self.capacity_frames(geom) < geom.chunk_frames:
            raise ConfigError(f"{self.name}: the cache must hold at least one chunk ({geom.chunk_frames} frames)")

    def room_frames(self, geom: Geometry) -> int:
        """Frames of the capacity this policy keeps free whenever a forward's tokens are staged (the
        engine adds scratch slots only for the rest of the forward). 0, the default, is always safe;
        a policy that evicts so that the cache plus the chunk fit the window keeps a chunk free, and then
        its buffers are the window itself, as in the reference's cache."""
        return 0

    def raw_keys(self) -> bool:
        """Whether the cache must also keep un-rotated keys, so that a slot read at a new temporal
        position is rotated there exactly from its raw key. False (the default, and all a policy with
        absolute positions needs): keys are stored once, rotated, and a slot that moves is rotated in
        place by the change of position, which rounds once per move in the cache dtype."""
        return False

    def max_recache_frames(self, geom: Geometry) -> int:
        """The most frames one re-cache forward covers (sizes the engine's scratch region)."""
        return 0

    def reset(self, geom: Geometry) -> None:
        self.validate(geom)
        self.geom = geom
        self.log = []

    # --- hooks -----------------------------------------------------------------------------
    def begin_chunk(self, cache: KVCache, span: FrameSpan) -> None:
        pass

    def query_positions(self, span: FrameSpan, phase: Phase) -> torch.Tensor | None:
        return None

    def context(self, layer: int, kv: LayerKV, step: Step) -> Context:
        return Context()

    def commit(self, layer: int, kv: LayerKV, step: Step) -> None:
        kv.commit()

    def on_prompt_switch(self, switch: PromptSwitch) -> None:
        """A new prompt takes over at ``switch.span``. Default: only the text cross-attention changes
        (the engine already uses the new prompt's text K/V); policies may re-cache (LongLive)."""

    def end_chunk(self, cache: KVCache, span: FrameSpan) -> None:
        self.log.append(self.diagnostics(cache, span))

    # --- reporting -------------------------------------------------------------------------
    def diagnostics(self, cache: KVCache, span: FrameSpan) -> dict[str, Any]:
        """Per-chunk facts about layer 0's cache after the commit (all shipped policies so far
        decide identically in every layer), and the cache's memory over all layers: ``cache_bytes``
        held by the cached tokens, ``cache_capacity_bytes`` allocated."""
        kv = cache.layers[0]
        tpf = cache.geom.tokens_per_frame
        tags = kv.tags()
        return {
            "chunk_start": span.start,
            "cache_tokens": kv.n,
            "cache_frames": kv.n / tpf,
            "frames": kv.frames().tolist(),
            "cache_bytes": cache.used_nbytes(),
            "cache_capacity_bytes": cache.nbytes(),
            **{f"tokens_{name}": int((tags == tag).sum()) for tag, name in TAG_NAMES.items()},
        }

    def describe(self) -> dict[str, Any]:
        """The policy's name and settings as they run (what makes two runs comparable)."""
        return {"policy": self.name, **{f.name: getattr(self, f.name) for f in fields(self)}}


def check_room(policy: CachePolicy, geom: Geometry, frames: int, protected: int, what: str = "sink") -> None:
    """A cache of ``frames`` frames whose first ``protected`` never leave must still fit a chunk."""
    if frames - protected < geom.chunk_frames:
        raise ConfigError(
            f"{policy.name}: {frames} cache frames minus the {protected}-frame {what} leave no room for a "
            f"{geom.chunk_frames}-frame chunk; shrink the {what} or grow the window"
        )


@dataclass(eq=False)
class SinkWindowPolicy(CachePolicy):
    """A window of ``self.window`` frames whose first ``self.sink`` frames never leave."""

    def capacity_frames(self, geom: Geometry) -> int:
        return self.window

    def room_frames(self, geom: Geometry) -> int:
        return geom.chunk_frames  # begin_chunk evicts until the cache plus one chunk fit the window

    def validate(self, geom: Geometry) -> None:
        super().validate(geom)
        check_room(self, geom, self.window, self.sink)


def evict_oldest(cache: KVCache, span: FrameSpan, window: int, protected: int = 0) -> torch.Tensor:
    """Evict the oldest non-protected frames so that cached + span frames fit in ``window``.

    The first ``protected`` cached frames (a sink) are never evicted. Every layer holds the same
    frames, so the decision is made once. Returns the evicted frame ids.
    """
    frames = cache.layers[0].frames()
    excess = len(frames) + span.frames - window
    if excess <= 0:
        return frames[:0]
    evict = frames[protected : protected + excess]
    for kv in cache.layers:
        kv.evict_frames(evict)
    return evict
