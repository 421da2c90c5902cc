"""Rollouts: how a video's chunks are denoised and committed, under any KV-cache policy.

- ``block`` (:class:`BlockRollout`): Self-Forcing's chunk-wise loop (also LongLive's and Deep
  Forcing's). For every chunk the policy updates the cache, the chunk is denoised in a few steps (each
  attends to the policy's context plus the chunk itself; nothing is stored), then one clean pass at
  ``context_noise`` writes the chunk's keys and values through the policy's ``commit``.
- ``rolling`` (:class:`RollingRollout`): Rolling Forcing's joint rolling window. With ``W`` denoising
  steps the window holds ``W`` chunks at staggered noise levels: a chunk enters the window as fresh
  noise at ``steps[0]``, moves one level per window and leaves after ``steps[W-1]``. Window ``w`` covers
  chunks ``[max(0, w-W+1), min(n-1, w)]`` (``n + W - 1`` windows for ``n`` chunks); chunk ``c`` sits at
  level ``w - c``. Each window is **one** forward with per-frame timesteps over all its frames, which
  attend to each other bidirectionally. Afterwards every chunk but the one at the last level is
  re-noised to its next level, the window's x0 is written to the output (so a chunk's final value comes
  from the window in which it is the oldest), and a clean pass at ``context_noise`` over the window's
  **oldest** chunk commits that chunk's keys and values. Deviation, by design: for videos shorter than
  the window the reference loop feeds fresh noise and the noisiest levels to a window that is both its
  first and its last; here every chunk always sits at level ``w - c`` (for ``n >= W`` both agree).

:class:`Rollout` holds what they share: the scheduler set-up, the model call with its trace, the
clean commit pass (where the engine's sampled attention probe runs) and the chunk event. A policy that
needs its own loop names it (``CachePolicy.needs``); a new loop is a subclass registered in ``ROLLOUTS``.
"""

from __future__ import annotations

import time

import torch

from deepforcing.cache import Geometry, KVCache
from deepforcing.engine import (
    ChunkEvent,
    Engine,
    ForwardRecord,
    LatentStore,
    NoiseSource,
    PromptSchedule,
    RolloutConfig,
    per_frame,
)
from deepforcing.errors import ConfigError
from deepforcing.model import TextState
from deepforcing.policies.base import CachePolicy, FrameSpan, Phase, PromptSwitch
from deepforcing.registry import Registry
from deepforcing.scheduler import FlowMatch


class Rollout:
    def __init__(self, engine: Engine, policy: CachePolicy, rc: RolloutConfig, geom: Geometry):
        self.engine, self.policy, self.rc, self.geom = engine, policy, rc, geom
        self.sched = FlowMatch(shift=rc.shift)
        self.steps = self.sched.step_list(rc.steps, warp=rc.warp)
        self.span_frames = max(rc.chunk_frames, policy.max_recache_frames(geom))
        self.cache: KVCache | None = None
        self.trace = None

    def call(self, x, t, text, span, phase, keys_only: bool = False):
        """One model call; ``keys_only`` (a writing pass whose output is discarded) skips the work after the
        last layer's keys and values unless a trace records the output."""
        keys_only = keys_only and self.trace is None
        flow = self.engine.forward(x, t, text, self.cache, self.policy, span, phase, keys_only)
        if self.trace is not None:
            self.trace(ForwardRecord(span, phase, x, per_frame(t, x), flow))
        return flow

    def commit(self, chunk: int, x0: torch.Tensor, text: TextState, span: FrameSpan) -> None:
        """The clean pass that writes ``span``'s keys and values (the attention probe samples it)."""
        t = self.rc.context_noise
        with self.engine.probe.armed(chunk):
            self.call(x0, t, text, span, Phase("commit", 0, t), keys_only=True)

    def emit(self, callback, chunk: int, span: FrameSpan, latents: torch.Tensor, tic: float) -> None:
        diagnostics = dict(self.policy.log[-1]) if self.policy.log else {}
        mass = self.engine.probe.take()
        if mass is not None:
            diagnostics["attention_mass"] = mass
        if callback is not None:
            callback(ChunkEvent(chunk, self.geom.num_chunks, span, latents, time.perf_counter() - tic, diagnostics))

    def run(self, schedule: PromptSchedule, cache: KVCache, noise: NoiseSource, out: LatentStore,
            callback, trace) -> None:
        raise NotImplementedError


class BlockRollout(Rollout):
    """Self-Forcing's chunk-wise rollout (also LongLive's and Deep Forcing's)."""

    def run(self, schedule: PromptSchedule, cache: KVCache, noise: NoiseSource, out: LatentStore,
            callback, trace) -> None:
        self.cache, self.trace = cache, trace
        rc, policy, sched, steps = self.rc, self.policy, self.sched, self.steps
        segment = 0
        for c in range(self.geom.num_chunks):
            tic = time.perf_counter()
            span = FrameSpan(c * rc.chunk_frames, rc.chunk_frames)
            seg, text = schedule.at(span.start)
            if seg != segment:
                segment = seg
                policy.on_prompt_switch(self._switch(span, text, out))
            policy.begin_chunk(cache, span)
            x = noise.initial(c)
            for i, t in enumerate(steps):
                flow = self.call(x, t, text, span, Phase("denoise", i, t))
                x0 = sched.flow_to_x0(flow, x, per_frame(t, x))
                if i + 1 < len(steps) and rc.sampler == "euler":
                    x = sched.euler_step(flow, x, per_frame(t, x), per_frame(steps[i + 1], x))
                elif i + 1 < len(steps):
                    x = sched.add_noise(x0, noise.step(c, i), per_frame(steps[i + 1], x))
            self.commit(c, x0, text, span)
            out.write(span.start, x0)
            policy.end_chunk(cache, span)
            self.emit(callback, c, span, x0, tic)

    def _switch(self, span: FrameSpan, text: TextState, out: LatentStore) -> PromptSwitch:
        def recache(first: int, count: int) -> None:
            if count <= 0:
                return
            if not (0 <= first and first + count <= span.start):
                raise ValueError(f"re-cache frames [{first}, {first + count}) are not all generated yet")
            t = self.rc.context_noise
            self.call(out.read(first, first + count), t, text, FrameSpan(first, count), Phase("recache", 0, t),
                      keys_only=True)

        return PromptSwitch(self.cache, span, text, out.read(out.offset, span.start), recache)


class RollingRollout(Rollout):
    """Rolling Forcing's joint rolling-window denoising (see the module docstring).

    RNG: ``rng="per_chunk"`` draws chunk ``c``'s initial noise and its re-noising after level ``a``
    from ``(seed, c, a + 1)``, independent of the window; ``rng="reference"`` replays the reference
    order from one generator: the whole initial noise, then per window, oldest chunk first, one draw
    per chunk that is not at its last level (of the window's shape when the policy's
    ``window_noise_quirk`` is on, as in the reference; else of the chunk's shape).
    """

    def __init__(self, engine: Engine, policy: CachePolicy, rc: RolloutConfig, geom: Geometry):
        super().__init__(engine, policy, rc, geom)
        if rc.sampler != "renoise":
            raise ConfigError("the rolling rollout re-noises its window (Rolling Forcing): use sampler='renoise'")
        self.window_chunks = len(self.steps)
        self.window_frames = self.window_chunks * rc.chunk_frames
        check = getattr(policy, "check_window", None)
        if check is not None:
            check(geom, self.window_frames)
        self.window_noise = bool(getattr(policy, "window_noise_quirk", True))
        self.span_frames = max(self.window_frames, policy.max_recache_frames(geom))

    def windows(self) -> list[tuple[int, int]]:
        """(first chunk, last chunk) of every window, inclusive."""
        n, w = self.geom.num_chunks, self.window_chunks
        return [(max(0, i - w + 1), min(n - 1, i)) for i in range(n + w - 1)]

    def _renoise_draw(self, noise, chunk: int, level: int, pos: int, window_shape: tuple[int, ...]) -> torch.Tensor:
        """Noise that moves ``chunk`` (at offset ``pos`` chunks into the window) past ``level``."""
        if noise.mode != "reference":
            return noise.step(chunk, level)
        cf = self.rc.chunk_frames
        if self.window_noise:
            eps = torch.randn(window_shape, generator=noise.gen, dtype=noise.dtype, device=noise.device)
            return eps[:, pos * cf : (pos + 1) * cf]
        b, _, *rest = window_shape
        return torch.randn((b, cf, *rest), generator=noise.gen, dtype=noise.dtype, device=noise.device)

    def run(self, schedule, cache: KVCache, noise, out, callback, trace) -> None:
        if len(schedule.segments) != 1:
            raise ConfigError("the rolling rollout supports a single prompt; a window spans several chunks, "
                              "so prompt switches are not defined for it")
        text = schedule.segments[0][1]
        self.cache, self.trace = cache, trace
        policy, sched, steps, cf = self.policy, self.sched, self.steps, self.rc.chunk_frames
        last_level = self.window_chunks - 1
        noisy: dict[int, torch.Tensor] = {}  # chunk -> latents at its next level
        tic = time.perf_counter()
        for w, (first, last) in enumerate(self.windows()):
            chunks = range(first, last + 1)
            span = FrameSpan(first * cf, len(chunks) * cf)
            oldest = FrameSpan(first * cf, cf)
            policy.begin_chunk(cache, oldest)
            x = torch.cat([noise.initial(c) if c == w else noisy.pop(c) for c in chunks], dim=1)
            levels = [w - c for c in chunks]
            t = torch.tensor([steps[a] for a in levels], dtype=torch.float32).repeat_interleave(cf)
            t = t[None].expand(x.shape[0], -1)
            flow = self.call(x, t, text, span, Phase("denoise", 0, steps[levels[-1]]))
            x0 = sched.flow_to_x0(flow, x, t)
            out.write(span.start, x0)
            for pos, (c, a) in enumerate(zip(chunks, levels, strict=True)):
                if a == last_level:
                    continue
                eps = self._renoise_draw(noise, c, a, pos, tuple(x0.shape))
                xc = x0[:, pos * cf : (pos + 1) * cf]
                noisy[c] = sched.add_noise(xc, eps, per_frame(steps[a + 1], xc))
            clean = x0[:, :cf]
            self.commit(first, clean, text, oldest)
            policy.end_chunk(cache, oldest)
            if levels[0] == last_level:
                self.emit(callback, first, oldest, clean, tic)
                tic = time.perf_counter()


ROLLOUTS = Registry("rollout")
ROLLOUTS.register("block", "deepforcing.rollouts:BlockRollout")
ROLLOUTS.register("rolling", "deepforcing.rollouts:RollingRollout")
