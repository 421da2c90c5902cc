"""Block-autoregressive rollout of a causal Wan backbone under any KV-cache policy.

For every chunk of ``chunk_frames`` latent frames: the policy updates the cache, the chunk is
denoised in a few steps (each step attends to the policy's context plus the chunk itself; nothing
is stored), then one clean pass at ``context_noise`` writes the chunk's keys and values through the
policy's ``commit``. Not storing noisy K/V equals Self-Forcing's overwrite-in-place, and the key
order (cached slots, then the chunk) equals its buffer order.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from deepforcing.attention import attend, key_importance, resolve_backend
from deepforcing.cache import TAG_NAMES, Geometry, KVCache
from deepforcing.errors import ConfigError
from deepforcing.model import CausalWan, Rope3D, TextState, TokenPositions, sdpa
from deepforcing.policies.base import CachePolicy, FrameSpan, Phase, PromptSwitch, Step
from deepforcing.registry import Registry
from deepforcing.scheduler import FlowMatch

RNG_MODES = ("reference", "per_chunk")
# How a chunk moves from one denoising step to the next: "renoise" predicts x0 and adds fresh noise at the
# next level (Self-Forcing's sampler, made for few-step distilled generators); "euler" follows the flow
# to the next level (the probability-flow ODE, for undistilled flow-matching models such as the toy model).
SAMPLERS = ("renoise", "euler")


@dataclass(frozen=True)
class RolloutConfig:
    num_frames: int = 21  # latent frames
    chunk_frames: int = 3
    latent_hw: tuple[int, int] | None = None  # None: the model config's
    steps: tuple[int, ...] = (1000, 750, 500, 250)  # nominal denoising steps
    shift: float = 5.0
    warp: bool = True
    context_noise: float = 0.0  # timestep of the clean commit pass
    rng: str = "per_chunk"
    seed: int = 0
    batch: int = 1
    rope_max_pos: int | None = None  # 1024 reproduces the reference RoPE table limit
    attn_backend: str = "auto"
    rollout: str = "block"  # "block" (chunk by chunk) or "rolling" (Rolling Forcing's joint window)
    sampler: str = "renoise"  # "renoise" (Self-Forcing) or "euler" (SAMPLERS)

    def validate(self) -> None:
        if self.chunk_frames <= 0:
            raise ConfigError(f"chunk_frames must be positive, got {self.chunk_frames}")
        if self.num_frames <= 0 or self.num_frames % self.chunk_frames:
            raise ConfigError(
                f"num_frames={self.num_frames} is not a positive multiple of the chunk ({self.chunk_frames} "
                f"latent frames); use e.g. {max(1, round(self.num_frames / self.chunk_frames)) * self.chunk_frames}"
            )
        if self.rng not in RNG_MODES:
            raise ConfigError(f"unknown rng mode {self.rng!r}; choose one of {', '.join(RNG_MODES)}")
        if not self.steps:
            raise ConfigError("the denoising step list is empty")
        if self.batch <= 0:
            raise ConfigError(f"batch must be positive, got {self.batch}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if self.rollout == "rolling" and self.sampler != "renoise":
            raise ConfigError("the rolling rollout re-noises its window (Rolling Forcing): use sampler='renoise'")


def per_frame(t: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Timestep(s) as a float32 ``[B, F]`` host tensor for latents ``x [B, F, ...]``."""
    if torch.is_tensor(t) and t.dim() > 0:
        return t.to("cpu", torch.float32).expand(x.shape[:2])
    return torch.full(x.shape[:2], float(t), dtype=torch.float32)


class NoiseSource:
    """Gaussian noise for the rollout.

    - ``reference``: Self-Forcing's draw order from one generator seeded with ``seed``: the initial
      noise of the whole video first, then one draw per chunk and denoising step (all but the last).
    - ``per_chunk``: every draw is derived from ``(seed, chunk, draw index)``, so rollouts of any
      length and under any policy share identical noise for identical chunks.
    """

    def __init__(self, mode: str, seed: int, shape: tuple[int, ...], chunk_frames: int,
                 dtype: torch.dtype, device: torch.device):
        self.mode, self.seed, self.shape, self.cf = mode, seed, shape, chunk_frames
        self.dtype, self.device = dtype, device
        if mode == "reference":
            self.gen = torch.Generator(device=device).manual_seed(seed)
            self.full = torch.randn(shape, generator=self.gen, dtype=dtype, device=device)

    def _chunk_shape(self) -> tuple[int, ...]:
        b, _, *rest = self.shape
        return (b, self.cf, *rest)

    def _derived(self, chunk: int, draw: int) -> torch.Tensor:
        digest = hashlib.sha256(f"{self.seed}:{chunk}:{draw}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
        return torch.randn(self._chunk_shape(), generator=gen).to(self.device, self.dtype)

    def initial(self, chunk: int) -> torch.Tensor:
        if self.mode == "reference":
            return self.full[:, chunk * self.cf : (chunk + 1) * self.cf]
        return self._derived(chunk, 0)

    def step(self, chunk: int, step: int) -> torch.Tensor:
        if self.mode == "reference":
            return torch.randn(self._chunk_shape(), generator=self.gen, dtype=self.dtype, device=self.device)
        return self._derived(chunk, step + 1)


@dataclass
class ForwardRecord:
    """One model call of the rollout (for tests and debugging)."""

    span: FrameSpan
    phase: Phase
    x: torch.Tensor
    t: torch.Tensor
    flow: torch.Tensor


@dataclass
class ChunkEvent:
    """Emitted after each chunk is committed."""

    index: int
    num_chunks: int
    span: FrameSpan
    latents: torch.Tensor  # the chunk's clean latents [B, F, C, H, W]
    seconds: float
    diagnostics: dict = field(default_factory=dict)


class CachedAttention:
    """Self-attention of one forward: rotates, stages the forward's tokens, asks the policy for its
    context, attends, and commits through the policy in the commit pass."""

    def __init__(self, engine: Engine, cache: KVCache, policy: CachePolicy, span: FrameSpan, phase: Phase):
        self.cache, self.policy, self.span, self.phase = cache, policy, span, phase
        self.backend = engine.backend
        geom = cache.geom
        q_time = policy.query_positions(span, phase)
        self.q_time = span.ids() if q_time is None else q_time
        frames = span.ids()
        pos = TokenPositions.of_frames(frames, geom.grid)
        self.frame_tok = pos.t
        self.t_tok = self.q_time.repeat_interleave(geom.tokens_per_frame)
        self.h_tok, self.w_tok = pos.h, pos.w
        dev = engine.model.device
        self.angles = engine.rope.angles(self.t_tok.to(dev), pos.h.to(dev), pos.w.to(dev))

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        kv = self.cache.layers[layer]
        q = Rope3D.rotate(q, self.angles)
        kv.stage(k, Rope3D.rotate(k, self.angles), v, self.frame_tok, self.t_tok, self.h_tok, self.w_tok)
        step = Step(self.span, self.phase, q, self.q_time)
        ctx = self.policy.context(layer, kv, step)
        slots = ctx.slots
        k_time = ctx.k_time if ctx.k_time is not None else (kv.frame[: kv.n] if slots is None else kv.frame[slots])
        keys, values = kv.window(slots, k_time, ctx.own)
        if ctx.mask is not None:
            out = sdpa(q, keys, values, ctx.mask.to(q.device)[None, :, None, :])
        else:
            out = attend(q, keys, values, self.backend)
        if self.phase.is_commit and layer == self.policy.mass_layer:
            self.policy.attention_mass = self._mass_by_region(kv, slots, ctx, q, keys)
        if self.phase.writes:
            self.policy.commit(layer, kv, step)
        kv.pending = 0
        return out

    @staticmethod
    def _mass_by_region(kv, slots, ctx, q, keys) -> dict[str, float]:
        """Share of the queries' attention (softmax, averaged over queries and heads; a per-head key
        mask is ignored) that lands on each cache region and on the forward's own tokens."""
        probs = key_importance(q, keys, mode="softmax").sum(0) / (q.shape[0] * q.shape[1] * q.shape[2])
        n_read = kv.n if slots is None else len(slots)
        tags = kv.tag[: kv.n] if slots is None else kv.tag[slots]
        probs = probs.cpu()
        mass = {name: float(probs[:n_read][tags == tag].sum()) for tag, name in TAG_NAMES.items()}
        mass["own"] = float(probs[n_read:].sum())
        return mass


class Engine:
    """Owns a backbone and runs rollouts; the policy is chosen per call."""

    def __init__(self, model: CausalWan, rope_max_pos: int | None = None, attn_backend: str = "auto"):
        self.model = model.eval()
        self.cfg = model.cfg
        self.rope = Rope3D(self.cfg, max_pos=rope_max_pos)
        self.backend = resolve_backend(attn_backend, model.dtype, model.device)
        self._cache: KVCache | None = None

    def geometry(self, rc: RolloutConfig) -> Geometry:
        rc.validate()
        latent_hw = rc.latent_hw or self.cfg.latent_hw
        return Geometry(
            grid=self.cfg.grid(latent_hw), chunk_frames=rc.chunk_frames, num_frames=rc.num_frames,
            num_layers=self.cfg.num_layers, num_heads=self.cfg.num_heads, head_dim=self.cfg.head_dim,
        )

    def _kv_cache(self, geom: Geometry, policy: CachePolicy, span_frames: int, batch: int) -> KVCache:
        cap = policy.capacity_frames(geom)
        key = (geom, cap, span_frames, batch, self.model.dtype, str(self.model.device))
        if self._cache is None or self._cache.key != key:
            self._cache = None  # free the old buffers first
            self._cache = KVCache(geom, cap, span_frames, batch, self.rope, self.model.dtype, self.model.device)
        self._cache.reset()
        return self._cache

    @torch.no_grad()
    def forward(self, x: torch.Tensor, t: float | torch.Tensor, text: TextState, cache: KVCache,
                policy: CachePolicy, span: FrameSpan, phase: Phase) -> torch.Tensor:
        """One model call over the frames ``span`` (``x [B, F, C, H, W]``) at timestep ``t`` (a scalar or
        one per frame ``[B, F]``) with the policy's view of the cache."""
        tt = per_frame(t, x)
        attn = CachedAttention(self, cache, policy, span, phase)
        return self.model(x, tt.to(x.device), text, attn)

    @torch.no_grad()
    def generate(
        self,
        text: TextState | PromptSchedule,
        policy: CachePolicy,
        rc: RolloutConfig,
        callback: Callable[[ChunkEvent], None] | None = None,
        trace: Callable[[ForwardRecord], None] | None = None,
    ) -> torch.Tensor:
        """Generate ``rc.num_frames`` latent frames ``[B, F, C, H, W]`` for one prompt (or a schedule)."""
        geom = self.geometry(rc)
        schedule = text if isinstance(text, PromptSchedule) else PromptSchedule([(0, text)])
        schedule.validate(rc.num_frames)
        if rc.rope_max_pos != self.rope.max_pos:
            self.rope = Rope3D(self.cfg, max_pos=rc.rope_max_pos)
        rollout = ROLLOUTS.get(rc.rollout)(self, policy, rc, geom)
        policy.reset(geom)
        h, w = rc.latent_hw or self.cfg.latent_hw
        shape = (rc.batch, rc.num_frames, self.cfg.in_dim, h, w)
        noise = NoiseSource(rc.rng, rc.seed, shape, rc.chunk_frames, self.model.dtype, self.model.device)
        cache = self._kv_cache(geom, policy, rollout.span_frames, rc.batch)
        out = torch.empty(shape, dtype=self.model.dtype, device=self.model.device)
        return rollout.run(schedule, cache, noise, out, callback, trace)


class PromptSchedule:
    """Prompts by latent frame: ``[(0, text_a), (40, text_b), ...]``; a switch takes effect at the first
    chunk starting at or after its frame."""

    def __init__(self, segments: list[tuple[int, TextState]]):
        self.segments = sorted(segments, key=lambda s: s[0])

    def validate(self, num_frames: int) -> None:
        starts = [s for s, _ in self.segments]
        if not starts or starts[0] != 0:
            raise ConfigError("a prompt schedule must start at frame 0")
        if len(set(starts)) != len(starts) or starts[-1] >= num_frames:
            raise ConfigError(f"prompt switch frames {starts} must be distinct and below num_frames={num_frames}")

    def at(self, frame: int) -> tuple[int, TextState]:
        """(segment index, text) in force for a chunk starting at ``frame``."""
        idx = max(i for i, (s, _) in enumerate(self.segments) if s <= frame)
        return idx, self.segments[idx][1]


class BlockRollout:
    """Self-Forcing's chunk-wise rollout (also LongLive's and Deep Forcing's)."""

    def __init__(self, engine: Engine, policy: CachePolicy, rc: RolloutConfig, geom: Geometry):
        self.engine, self.policy, self.rc, self.geom = engine, policy, rc, geom
        self.span_frames = max(rc.chunk_frames, policy.max_recache_frames(geom))
        self.sched = FlowMatch(shift=rc.shift)
        self.steps = self.sched.step_list(rc.steps, warp=rc.warp)

    def call(self, x, t, text, span, phase):
        flow = self.engine.forward(x, t, text, self.cache, self.policy, span, phase)
        if self.trace is not None:
            self.trace(ForwardRecord(span, phase, x, per_frame(t, x), flow))
        return flow

    def run(self, schedule: PromptSchedule, cache: KVCache, noise: NoiseSource, out: torch.Tensor,
            callback, trace) -> torch.Tensor:
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
            self.call(x0, rc.context_noise, text, span, Phase("commit", 0, rc.context_noise))
            out[:, span.start : span.stop] = x0
            policy.end_chunk(cache, span)
            if callback is not None:
                callback(ChunkEvent(c, self.geom.num_chunks, span, x0, time.perf_counter() - tic,
                                    policy.log[-1] if policy.log else {}))
        return out

    def _switch(self, span: FrameSpan, text: TextState, out: torch.Tensor) -> PromptSwitch:
        def recache(first: int, count: int) -> None:
            if count <= 0:
                return
            if not (0 <= first and first + count <= span.start):
                raise ValueError(f"re-cache frames [{first}, {first + count}) are not all generated yet")
            t = self.rc.context_noise
            self.call(out[:, first : first + count], t, text, FrameSpan(first, count), Phase("recache", 0, t))

        return PromptSwitch(self.cache, span, text, out[:, : span.start], recache)


ROLLOUTS = Registry("rollout")
ROLLOUTS.register("block", "deepforcing.engine:BlockRollout")
ROLLOUTS.register("rolling", "deepforcing.policies.rolling_forcing:RollingForcingRollout")
