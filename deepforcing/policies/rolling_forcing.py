"""Rolling Forcing (TencentARC/RollingForcing): joint rolling-window denoising and a re-indexed anchor.

**Rollout** (:class:`deepforcing.rollouts.RollingRollout`, ``rollout="rolling"``, which this policy
``needs``). With ``W`` denoising
steps the window holds ``W`` chunks at staggered noise levels: a chunk enters the window as fresh
noise at ``steps[0]``, moves one level per window and leaves after ``steps[W-1]``. Window ``w`` covers
chunks ``[max(0, w-W+1), min(n-1, w)]`` (``n + W - 1`` windows for ``n`` chunks); chunk ``c`` sits at
level ``w - c``. Each window is **one** forward with per-frame timesteps over all its frames, which
attend to each other bidirectionally. Afterwards every chunk but the one at the last level is
re-noised to its next level, the window's x0 is written to the output (so a chunk's final value
comes from the window in which it is the oldest), and a clean pass at ``context_noise`` over the
window's **oldest** chunk commits that chunk's keys and values.

**Policy** (:class:`RollingForcingAnchor`). The first ``anchor`` frames are an attention anchor that
is never evicted; the cache holds ``capacity`` frames (anchor included) and evicts the oldest
non-anchor frames. A denoising forward over frames ``[q0, q0 + F)`` reads the anchor plus the last
``n_work = min(available, max_attention - F - anchor)`` committed frames, with the working frames at
their absolute positions and the anchor re-indexed right before them: ``[q0 - n_work - S, q0 - n_work)``
(S = anchor frames). Keys are cached un-rotated, so the anchor is rotated exactly wherever it sits.

Reference quirks (both on by default, for exact reproduction):

- ``commit_anchor_quirk``: the clean commit pass reads the last ``max_attention`` frames of the cache
  (its own chunk included) at absolute positions; the anchor is read (at its natural position 0)
  only while it lies inside that slice, i.e. until more than ``max_attention`` frames are cached.
  Off: the commit pass reads like a denoising forward (re-indexed anchor plus working frames).
- ``window_noise_quirk`` (``rng="reference"`` only): each chunk's re-noising draws a Gaussian of the
  **whole window's** shape and uses only that chunk's slice. Off: one chunk-shaped draw per chunk.

Deviation, by design: for videos shorter than the window (fewer than ``W`` chunks) the reference
loop feeds fresh noise and the noisiest levels to a window that is both its first and its last; here
every chunk always sits at level ``w - c``. For ``n >= W`` chunks both agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deepforcing.cache import ANCHOR, Geometry, KVCache, LayerKV
from deepforcing.errors import ConfigError
from deepforcing.policies import Preset, register
from deepforcing.policies.base import CachePolicy, Context, FrameSpan, Step, check_room, evict_oldest


def _distinct(frames: torch.Tensor) -> torch.Tensor:
    """Distinct values of a slot-ordered frame-id vector, in order of first appearance."""
    if not frames.numel():
        return frames
    first = torch.ones_like(frames, dtype=torch.bool)
    first[1:] = frames[1:] != frames[:-1]
    return frames[first]


@register
@dataclass(eq=False)
class RollingForcingAnchor(CachePolicy):
    name = "rolling_forcing"
    needs = "rolling"
    presets = {"rolling_forcing": Preset(
        dict(anchor=3, max_attention=21, capacity=24, commit_anchor_quirk=True, window_noise_quirk=True),
        "Rolling Forcing (TencentARC/RollingForcing a1477d0): 3-frame anchor re-indexed before the working frames, "
        "24-frame cache, 21-frame attention, reference quirks on; its joint rolling window: 5 chunks denoised "
        "together at staggered levels, steps 1000/800/600/400/200",
        rollout=dict(steps=[1000, 800, 600, 400, 200]))}
    anchor: int = 3
    max_attention: int = 21
    capacity: int = 24
    commit_anchor_quirk: bool = True
    window_noise_quirk: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.capacity <= 0 or self.max_attention <= 0:
            raise ConfigError(f"{self.name}: capacity and max_attention must be positive, "
                              f"got capacity={self.capacity}, max_attention={self.max_attention}")
        if not 0 <= self.anchor < self.capacity:
            raise ConfigError(f"{self.name}: need 0 <= anchor < capacity, got anchor={self.anchor}, "
                              f"capacity={self.capacity}")
        if self.anchor >= self.max_attention:
            raise ConfigError(f"{self.name}: the anchor ({self.anchor} frames) leaves no room in "
                              f"max_attention={self.max_attention}")
        self._layout: dict = {}

    # --- configuration ---------------------------------------------------------------------
    def raw_keys(self) -> bool:
        return True  # the anchor is rotated exactly wherever it sits, as the reference does

    def capacity_frames(self, geom: Geometry) -> int:
        return self.capacity

    def check_window(self, geom: Geometry, frames: int) -> None:
        """Raise ConfigError unless one forward over ``frames`` query frames fits ``max_attention``
        together with the anchor."""
        if self.max_attention < frames + self.anchor:
            raise ConfigError(
                f"{self.name}: a {frames}-frame forward plus the {self.anchor}-frame anchor exceeds "
                f"max_attention={self.max_attention}; raise max_attention to at least {frames + self.anchor} "
                "or use fewer denoising steps (the rolling window has one chunk per step)"
            )

    def validate(self, geom: Geometry) -> None:
        super().validate(geom)
        check_room(self, geom, self.capacity, self.anchor, what="anchor")
        self.check_window(geom, geom.chunk_frames)

    def reset(self, geom: Geometry) -> None:
        super().reset(geom)
        self._layout = {}

    # --- hooks -----------------------------------------------------------------------------
    def begin_chunk(self, cache: KVCache, span: FrameSpan) -> None:
        """Before the forward whose oldest chunk is ``span``: drop a stale copy of ``span`` (the warm-up
        windows re-commit chunk 0), then the oldest non-anchor frames until ``span`` fits."""
        kv0 = cache.layers[0]
        cached = kv0.frames()
        stale = cached[(cached >= span.start) & (cached < span.stop)]
        if stale.numel():
            for kv in cache.layers:
                kv.evict_frames(stale)
        protected = int((kv0.frames() < self.anchor).sum())
        evict_oldest(cache, span, self.capacity, protected=protected)

    def _working_layout(self, kv: LayerKV, span: FrameSpan) -> tuple[Context, dict]:
        """Anchor (re-indexed) + the last working frames before ``span`` (own tokens follow)."""
        f = kv.frame[: kv.n]
        is_anchor = f < self.anchor
        anchor_slots = torch.nonzero(is_anchor).flatten()
        other = torch.nonzero(~is_anchor & (f < span.start)).flatten()
        other_frames = _distinct(f[other])
        n_work = max(0, min(len(other_frames), self.max_attention - span.frames - self.anchor))
        work_slots = other[torch.isin(f[other], other_frames[len(other_frames) - n_work:])]
        anchor_frames = torch.unique(f[anchor_slots])
        anchor_start = span.start - n_work - len(anchor_frames)
        anchor_time = anchor_start + torch.searchsorted(anchor_frames, f[anchor_slots])
        slots = torch.cat([anchor_slots, work_slots])
        k_time = torch.cat([anchor_time, f[work_slots]])
        layout = {"q_start": span.start, "q_frames": span.frames, "n_work": n_work,
                  "anchor_frames": len(anchor_frames),
                  "anchor_start": anchor_start if len(anchor_frames) else None,
                  "key_frames": len(anchor_frames) + n_work + span.frames}
        return Context(slots=slots, k_time=k_time), layout

    def _commit_quirk_layout(self, kv: LayerKV, span: FrameSpan) -> Context:
        """The reference clean pass: the last ``max_attention`` frames of (cache + own chunk), absolute."""
        frames = kv.frames()
        room = max(0, self.max_attention - span.frames)
        if room >= len(frames):
            return Context()
        keep = frames[len(frames) - room:]
        return Context(slots=torch.nonzero(torch.isin(kv.frame[: kv.n], keep)).flatten())

    def context(self, layer: int, kv: LayerKV, step: Step) -> Context:
        if kv.n == 0:
            if layer == 0 and step.phase.kind == "denoise":
                self._layout = {"q_start": step.span.start, "q_frames": step.span.frames, "n_work": 0,
                                "anchor_frames": 0, "anchor_start": None, "key_frames": step.span.frames}
            return Context()
        if step.phase.kind == "commit" and self.commit_anchor_quirk:
            return self._commit_quirk_layout(kv, step.span)
        ctx, layout = self._working_layout(kv, step.span)
        if layer == 0 and step.phase.kind == "denoise":
            self._layout = layout  # reported by diagnostics()
        return ctx

    def commit(self, layer: int, kv: LayerKV, step: Step) -> None:
        kv.commit()
        kv.mark(kv.frame[: kv.n] < self.anchor, ANCHOR)

    def diagnostics(self, cache: KVCache, span: FrameSpan) -> dict:
        return {**super().diagnostics(cache, span), **{f"denoise_{k}": v for k, v in self._layout.items()}}
