"""The engine: a causal Wan backbone run under any KV-cache policy, one model call at a time.

The loops that order the calls (Self-Forcing's chunk-wise loop, Rolling Forcing's joint window) are in
:mod:`deepforcing.rollouts`. In every call the engine rotates and stages the forward's tokens, asks the
policy for its context, attends, and commits through the policy in the clean pass. Not storing noisy
K/V equals Self-Forcing's overwrite-in-place, and the key order (cached slots, then the chunk) equals
its buffer order. The engine also owns the attention probe (:class:`AttentionProbe`): how much of the
queries' attention lands on each cache region, sampled so that it costs little when on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from deepforcing.attention import attend, key_importance, resolve_backend
from deepforcing.cache import TAG_NAMES, Geometry, KVCache
from deepforcing.errors import ConfigError
from deepforcing.model import CausalWan, Rope3D, TextState, TokenPositions, sdpa
from deepforcing.policies.base import CachePolicy, FrameSpan, Phase, Step
from deepforcing.seeding import hashed_generator

RNG_MODES = ("reference", "per_chunk")
# How a chunk moves from one denoising step to the next: "renoise" predicts x0 and adds fresh noise at the
# next level (Self-Forcing's sampler, made for few-step distilled generators); "euler" follows the flow
# to the next level (the probability-flow ODE, for undistilled flow-matching models such as the toy model).
SAMPLERS = ("renoise", "euler")
ROPE_PRECISIONS = ("float32", "float64")


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
    rope_precision: str = "float32"  # the forward's q/k rotation: "float32" (per-position tables) or "float64"
    # (the reference's arithmetic; slower); moved cache slots are always re-rotated in float64
    attn_backend: str = "auto"
    rollout: str | None = None  # "block" (chunk by chunk), "rolling" (Rolling Forcing's joint window); None: the
    # policy's (``CachePolicy.needs``), else "block"
    sampler: str = "renoise"  # "renoise" (Self-Forcing) or "euler" (SAMPLERS)

    def loop_for(self, policy) -> str:
        """The rollout this config runs ``policy`` under; a policy that needs its own loop gets it."""
        from deepforcing.rollouts import ROLLOUTS

        if policy.needs is not None and self.rollout not in (None, policy.needs):
            raise ConfigError(f"policy {policy.name} runs only under rollout={policy.needs!r}, not {self.rollout!r}; "
                              "leave rollout unset")
        name = self.rollout or policy.needs or "block"
        ROLLOUTS.check(name)
        return name

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
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        from deepforcing.attention import BACKENDS

        if self.attn_backend not in BACKENDS:
            raise ConfigError(f"unknown attention backend {self.attn_backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.rope_precision not in ROPE_PRECISIONS:
            raise ConfigError(f"unknown rope_precision {self.rope_precision!r}; choose one of "
                              f"{', '.join(ROPE_PRECISIONS)}")
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
        gen = hashed_generator(self.seed, chunk, draw)
        return torch.randn(self._chunk_shape(), generator=gen).to(self.device, self.dtype)

    def initial(self, chunk: int) -> torch.Tensor:
        if self.mode == "reference":
            return self.full[:, chunk * self.cf : (chunk + 1) * self.cf]
        return self._derived(chunk, 0)

    def step(self, chunk: int, step: int) -> torch.Tensor:
        if self.mode == "reference":
            return torch.randn(self._chunk_shape(), generator=self.gen, dtype=self.dtype, device=self.device)
        return self._derived(chunk, step + 1)


class LatentStore:
    """The rollout's clean latents ``[B, F, C, H, W]``, written and read by frame index.

    ``keep=None`` holds the whole video (``full``). Otherwise only the last ``keep`` frames before the latest
    write stay readable (what a prompt switch re-caches), in a buffer of ``2 * (keep + max_write)`` frames,
    so a long rollout whose chunks are consumed by a callback does not grow with the video.
    """

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, keep: int | None = None,
                 max_write: int = 0):
        b, f, *rest = shape
        self.keep = keep
        cap = f if keep is None else min(f, 2 * (keep + max_write))
        self.buf = torch.empty((b, cap, *rest), dtype=dtype, device=device)
        self.offset = 0  # frame index of buf[:, 0]

    def write(self, first: int, x: torch.Tensor) -> None:
        stop = first + x.shape[1]
        if stop - self.offset > self.buf.shape[1]:  # bounded store: move the readable tail to the front
            lo = max(self.offset, first - self.keep)
            tail = self.buf[:, lo - self.offset : first - self.offset].clone()
            self.buf[:, : tail.shape[1]] = tail
            self.offset = lo
        self.buf[:, first - self.offset : stop - self.offset] = x

    def read(self, first: int, stop: int) -> torch.Tensor:
        if first < self.offset:
            raise ValueError(f"latent frames [{first}, {stop}) are no longer held (held from frame {self.offset})")
        return self.buf[:, first - self.offset : stop - self.offset]

    @property
    def full(self) -> torch.Tensor | None:
        """Every latent of the video (None when only a tail is kept)."""
        return self.buf if self.keep is None else None


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


@dataclass
class AttentionProbe:
    """Share of the queries' attention (softmax, averaged over the sampled queries and all heads; a
    per-head key mask is ignored) that lands on each cache region and on the forward's own tokens.

    Measured in the clean commit pass of every ``every``-th chunk (0: never), in one layer (``layer``;
    None: the middle one), over at most ``queries`` query tokens spread evenly over the chunk, so that
    it costs little when on and nothing when off. Read from ``ChunkEvent.diagnostics["attention_mass"]``.
    """

    every: int = 4
    queries: int = 256
    layer: int | None = None
    block: int = 32  # queries per softmax slab: the probe's peak memory is block x keys x heads floats
    _armed: bool = False
    _mass: dict | None = None

    @contextmanager
    def armed(self, chunk: int) -> Iterator[None]:
        self._armed = self.every > 0 and chunk % self.every == 0
        try:
            yield
        finally:
            self._armed = False

    def wants(self, layer: int, num_layers: int) -> bool:
        return self._armed and layer == (num_layers // 2 if self.layer is None else self.layer)

    def measure(self, kv, slots, q: torch.Tensor, keys: torch.Tensor) -> None:
        stride = max(1, math.ceil(q.shape[1] / self.queries))
        q = q[:, ::stride]
        probs = key_importance(q, keys, mode="softmax", block=self.block).sum(0)
        probs = probs / (q.shape[0] * q.shape[1] * q.shape[2])
        n_read = kv.n if slots is None else len(slots)
        tags = kv.tags() if slots is None else kv.tags()[slots]
        probs = probs.cpu()
        mass = {name: float(probs[:n_read][tags == tag].sum()) for tag, name in TAG_NAMES.items()}
        mass["own"] = float(probs[n_read:].sum())
        self._mass = mass

    def take(self) -> dict | None:
        mass, self._mass = self._mass, None
        return mass


class CachedAttention:
    """Self-attention of one forward: rotates, stages the forward's tokens, asks the policy for its
    context, attends, and commits through the policy in the commit pass."""

    def __init__(self, engine: Engine, cache: KVCache, policy: CachePolicy, span: FrameSpan, phase: Phase,
                 keys_only: bool = False):
        self.cache, self.policy, self.span, self.phase, self.keys_only = cache, policy, span, phase, keys_only
        self.backend, self.probe = engine.backend, engine.probe
        geom = cache.geom
        q_time = policy.query_positions(span, phase)
        self.q_time = span.ids() if q_time is None else q_time
        frames = span.ids()
        pos = TokenPositions.of_frames(frames, geom.grid)
        self.frame_tok = pos.t
        self.t_tok = self.q_time.repeat_interleave(geom.tokens_per_frame)
        self.h_tok, self.w_tok = pos.h, pos.w
        dev = engine.model.device
        if engine.rope_precision == "float32":  # per-position float32 tables
            phases = engine.rope.phases(self.t_tok, pos.h, pos.w, dev)
            self.rotate = lambda x: Rope3D.rotate_fast(x, phases)
        else:  # the float64 reference
            angles = engine.rope.angles(self.t_tok.to(dev), pos.h.to(dev), pos.w.to(dev))
            self.rotate = lambda x: Rope3D.rotate(x, angles)

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        kv = self.cache.layers[layer]
        q = self.rotate(q)
        kv.stage(k, self.rotate(k), v, self.frame_tok, self.t_tok, self.h_tok, self.w_tok)
        step = Step(self.span, self.phase, q, self.q_time)
        ctx = self.policy.context(layer, kv, step)
        probe = self.probe.wants(layer, len(self.cache.layers))
        # nobody reads the last layer's output of a keys-only pass; the probe needs only its own queries
        need_out = not (self.keys_only and layer == len(self.cache.layers) - 1)
        out = self._attend(kv, ctx, q, need_out, probe) if need_out or probe else None
        if self.phase.writes:
            self.policy.commit(layer, kv, step)
        kv.end_forward()
        return out

    def _attend(self, kv, ctx, q: torch.Tensor, need_out: bool, probe: bool) -> torch.Tensor | None:
        slots = ctx.slots
        k_time = ctx.k_time if ctx.k_time is not None else (kv.frame[: kv.n] if slots is None else kv.frame[slots])
        # without a mask or the probe, attention does not depend on the key order: read in buffer order
        keys, values = kv.read(slots, k_time, ctx.own, ordered=probe or ctx.mask is not None)
        out = None
        if need_out and ctx.mask is not None:
            out = sdpa(q, keys, values, ctx.mask.to(q.device, non_blocking=True)[None, :, None, :])
        elif need_out:
            out = attend(q, keys, values, self.backend)
        if probe:
            self.probe.measure(kv, slots, q, keys)
        return out


class Engine:
    """Owns a backbone and runs rollouts; the policy is chosen per call."""

    def __init__(self, model: CausalWan, rope_max_pos: int | None = None, attn_backend: str = "auto",
                 probe: AttentionProbe | None = None, compact_cache: bool = False, compile: str | None = None):
        """``compact_cache``: the reference cache layout, whose evictions gather the kept slots to the front
        (the default refills evicted rows in place and reads the window in buffer order). ``compile``: the
        one switch for ``torch.compile`` of the model's dense parts (:meth:`CausalWan.compile_dense`: None,
        ``"inductor"``, ``"cudagraphs"``, or a debug backend such as ``"aot_eager"``)."""
        self.model = model.eval()
        if compile != model.compiled:
            model.compile_dense(compile)
        self.compact_cache = compact_cache
        self.probe = probe if probe is not None else AttentionProbe()
        self.cfg = model.cfg
        self.rope = Rope3D(self.cfg, max_pos=rope_max_pos)
        self.rope_precision = "float32"
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
        cap, raw = policy.capacity_frames(geom), policy.raw_keys()
        scratch = max(0, span_frames - policy.room_frames(geom))  # what the policy's free room cannot take
        key = (geom, cap, scratch, batch, self.model.dtype, str(self.model.device), self.rope.max_pos, raw,
               self.compact_cache)
        if self._cache is None or self._cache.key != key:
            self._cache = None  # free the old buffers first
            self._cache = KVCache(geom, cap, scratch, batch, self.rope, self.model.dtype, self.model.device,
                                  raw, self.compact_cache)
        self._cache.reset()
        return self._cache

    @torch.no_grad()
    def forward(self, x: torch.Tensor, t: float | torch.Tensor, text: TextState, cache: KVCache,
                policy: CachePolicy, span: FrameSpan, phase: Phase, keys_only: bool = False) -> torch.Tensor | None:
        """One model call over the frames ``span`` (``x [B, F, C, H, W]``) at timestep ``t`` (a scalar or
        one per frame ``[B, F]``) with the policy's view of the cache. ``keys_only`` (a writing pass whose
        output nobody reads): the cache is written exactly as by the full pass, the work after the last
        layer's keys and values is skipped, and None is returned."""
        if keys_only and not phase.writes:
            raise ValueError(f"a keys-only pass must write the cache; {phase.kind} does not")
        tt = per_frame(t, x)
        attn = CachedAttention(self, cache, policy, span, phase, keys_only)
        return self.model(x, tt.to(x.device), text, attn, keys_only=keys_only)

    @torch.no_grad()
    def generate(
        self,
        text: TextState | PromptSchedule,
        policy: CachePolicy,
        rc: RolloutConfig,
        callback: Callable[[ChunkEvent], None] | None = None,
        trace: Callable[[ForwardRecord], None] | None = None,
        keep_latents: bool = True,
    ) -> torch.Tensor | None:
        """Generate ``rc.num_frames`` latent frames ``[B, F, C, H, W]`` for one prompt (or a schedule).

        ``keep_latents=False``: return None and hold only the latents a prompt switch may re-cache, not the
        whole video (each chunk still reaches ``callback``); memory then does not grow with the rollout."""
        geom = self.geometry(rc)
        schedule = text if isinstance(text, PromptSchedule) else PromptSchedule([(0, text)])
        schedule.validate(rc.num_frames)
        if rc.rope_max_pos != self.rope.max_pos:
            self.rope = Rope3D(self.cfg, max_pos=rc.rope_max_pos)
        self.backend = resolve_backend(rc.attn_backend, self.model.dtype, self.model.device)
        self.rope_precision = rc.rope_precision
        from deepforcing.rollouts import ROLLOUTS

        rollout = ROLLOUTS.get(rc.loop_for(policy))(self, policy, rc, geom)
        policy.reset(geom)
        h, w = rc.latent_hw or self.cfg.latent_hw
        shape = (rc.batch, rc.num_frames, self.cfg.in_dim, h, w)
        noise = NoiseSource(rc.rng, rc.seed, shape, rc.chunk_frames, self.model.dtype, self.model.device)
        cache = self._kv_cache(geom, policy, rollout.span_frames, rc.batch)
        keep = None if keep_latents else policy.max_recache_frames(geom)
        out = LatentStore(shape, self.model.dtype, self.model.device, keep, rollout.span_frames)
        rollout.run(schedule, cache, noise, out, callback, trace)
        return out.full


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
