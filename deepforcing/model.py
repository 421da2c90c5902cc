"""Causal Wan2.1 text-to-video backbone, in one file.

The module and parameter names are Wan's own (``blocks.{i}.self_attn.q``, ``blocks.{i}.norm3``,
``head.modulation`` ...), so the original checkpoints load without renaming. Every size comes from
:class:`ModelConfig`; tokens per frame follow from the latent size and the patch.

The backbone knows nothing about KV caches. Each block's self-attention computes its raw
(RMS-normed, un-rotated) queries and keys and hands them to an ``attn`` object supplied by the
caller, which rotates them, gathers context and attends. The engine passes a cache-backed object
(:mod:`deepforcing.engine`); tests pass :class:`MaskedAttention` for a full-sequence forward.

Shapes: ``x`` is ``[B, F, C, H, W]`` (frames before channels, as the causal pipelines keep latents),
``t`` is ``[B, F]`` (one diffusion timestep per frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from deepforcing.errors import ConfigError

# ----------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class ModelConfig:
    dim: int = 1536
    ffn_dim: int = 8960
    freq_dim: int = 256
    num_heads: int = 12
    num_layers: int = 30
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int = 4096
    text_len: int = 512
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    rope_theta: float = 10000.0
    # Latent geometry the preset is used with (480x832 video -> 60x104 latents, 4x temporal VAE).
    latent_hw: tuple[int, int] = (60, 104)
    vae_stride: tuple[int, int, int] = (4, 8, 8)
    # The denoising steps the preset is sampled with (nominal steps, warped by the shift) unless a run
    # names its own: the distilled Wan generators take four; an undistilled model needs more.
    sample_steps: tuple[int, ...] = field(default=(1000, 750, 500, 250), compare=False)
    sample_shift: float = field(default=5.0, compare=False)
    sampler: str = field(default="renoise", compare=False)  # deepforcing.engine.SAMPLERS
    name: str = field(default="custom", compare=False)

    def __post_init__(self):
        if self.dim % self.num_heads:
            raise ConfigError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim {self.head_dim} must be even for RoPE")
        self.check_latent_hw(self.latent_hw)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def rope_split(self) -> tuple[int, int, int]:
        """Real widths of the temporal, height and width RoPE bands (Wan: d-4[d/6], 2[d/6], 2[d/6])."""
        d = self.head_dim
        return (d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6))

    def grid(self, latent_hw: tuple[int, int] | None = None) -> tuple[int, int]:
        h, w = self.check_latent_hw(latent_hw or self.latent_hw)
        return h // self.patch_size[1], w // self.patch_size[2]

    def tokens_per_frame(self, latent_hw: tuple[int, int] | None = None) -> int:
        gh, gw = self.grid(latent_hw)
        return gh * gw

    def check_latent_hw(self, latent_hw: tuple[int, int]) -> tuple[int, int]:
        h, w = latent_hw
        ph, pw = self.patch_size[1:]
        if h <= 0 or w <= 0 or h % ph or w % pw:
            raise ConfigError(
                f"latent size {h}x{w} is not divisible by the patch {ph}x{pw}: choose a video size "
                f"whose latent (pixels / {self.vae_stride[1]}) is a multiple of the patch, "
                f"e.g. {self.vae_stride[1] * ph * max(1, h // ph)}x{self.vae_stride[2] * pw * max(1, w // pw)} px"
            )
        return h, w

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Build from a Wan ``config.json`` dict (unknown keys such as ``_class_name`` are ignored)."""
        known = {f.name for f in fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        if d.get("model_type", "t2v") != "t2v":
            raise ConfigError(f"model_type {d.get('model_type')!r} is not supported: only Wan t2v models are")
        return cls(**kw)


def wan21_t2v_1_3b() -> ModelConfig:
    """Wan2.1-T2V-1.3B (Self-Forcing, Causal Forcing, LongLive, Rolling Forcing, CausVid)."""
    return ModelConfig(name="wan21_t2v_1_3b")


def tiny() -> ModelConfig:
    """A random-weights copy of the architecture small enough for CPU tests (12 tokens per frame)."""
    return ModelConfig(
        dim=64, ffn_dim=128, freq_dim=32, num_heads=2, num_layers=2, text_dim=32, text_len=16,
        latent_hw=(6, 8), name="tiny",
    )


def toy() -> ModelConfig:
    """The toy world's backbone (deepforcing.toyworld): 24x24 RGB frames through a 2x2 space-to-depth codec
    (12 latent channels, 12x12 latents, 36 tokens per frame of 48 values each, well under the width)."""
    return ModelConfig(
        dim=128, ffn_dim=512, freq_dim=64, num_heads=4, num_layers=4, in_dim=12, out_dim=12, text_dim=32,
        text_len=20, latent_hw=(12, 12), vae_stride=(1, 2, 2), sample_steps=TOY_SAMPLE_STEPS,
        sample_shift=TOY_SAMPLE_SHIFT, sampler=TOY_SAMPLER, name="toy",
    )


# The toy model is trained without distillation, so it takes more steps than the distilled 4-step models;
# sampler and steps were chosen on held-out tuning prompts, never the reported ones (docs/toyworld.md):
# Self-Forcing's re-noising sampler beat Euler along the flow on the final checkpoint.
TOY_SAMPLE_STEPS = (1000, 900, 800, 700, 600, 500, 400, 300, 200, 100)
TOY_SAMPLE_SHIFT = 3.0
TOY_SAMPLER = "renoise"

PRESETS = {"wan21_t2v_1_3b": wan21_t2v_1_3b, "tiny": tiny, "toy": toy}


def random_init_(model: nn.Module, seed: int = 0, std: float = 0.1) -> nn.Module:
    """The random weights of tiny, test and benchmark models (one initialiser for all): every parameter
    N(0, std^2), drawn on the CPU from one generator seeded ``seed``, in parameter order, then copied to
    the parameter's device and dtype."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()


# ----------------------------------------------------------------------------------------------
# 3-D rotary position embedding


class Rope3D:
    """Wan's 3-D RoPE over interleaved pairs (x[2i], x[2i+1]), computed from positions.

    The head vector is split into a temporal, a height and a width band (``ModelConfig.rope_split``).
    Angles are ``position * theta**(-2j/band_width)`` in float64, as the reference builds its table,
    but without a table: any position works. ``max_pos`` reproduces the reference's 1024-row table
    limit (positions outside ``[0, max_pos)`` raise).
    """

    def __init__(self, cfg: ModelConfig, max_pos: int | None = None):
        self.split = cfg.rope_split
        self.max_pos = max_pos
        theta = cfg.rope_theta
        self.inv = [
            1.0 / torch.pow(theta, torch.arange(0, d, 2, dtype=torch.float64).div(d)) for d in self.split
        ]
        self.pairs = cfg.head_dim // 2
        self._device_inv: dict[torch.device, list[torch.Tensor]] = {}
        self._tables: dict[tuple[int, torch.device], tuple[int, torch.Tensor, torch.Tensor]] = {}

    def _check_limit(self, t: torch.Tensor) -> None:
        if self.max_pos is not None and t.numel():
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= self.max_pos:
                raise ConfigError(
                    f"temporal RoPE position {lo if lo < 0 else hi} is outside the reference table "
                    f"[0, {self.max_pos}); disable the reference position limit (rope_max_pos=None) "
                    f"or generate fewer frames"
                )

    def _inv(self, device: torch.device) -> list[torch.Tensor]:
        if device not in self._device_inv:
            self._device_inv[device] = [f.to(device) for f in self.inv]
        return self._device_inv[device]

    def angles(self, t: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Angles ``[N, head_dim/2]`` (float64) for tokens at temporal ``t``, height ``h``, width ``w``."""
        self._check_limit(t)
        inv_t, inv_h, inv_w = self._inv(t.device)
        return torch.cat(
            [
                torch.outer(t.to(torch.float64), inv_t),
                torch.outer(h.to(torch.float64), inv_h),
                torch.outer(w.to(torch.float64), inv_w),
            ],
            dim=1,
        )

    def _band_table(self, band: int, lo: int, hi: int, device: torch.device) -> tuple[int, torch.Tensor]:
        """(first position, phases) complex64 table of ``band`` covering positions ``[lo, hi]``: each entry
        is ``cos + i sin`` of the float64 angle, each part rounded once to float32. Grown (doubled) when a
        position falls outside, so a rollout builds it a few times at most."""
        key = (band, device)
        have = self._tables.get(key)
        if have is not None and have[0] <= lo and hi < have[0] + have[1].shape[0]:
            return have
        old_lo, old_hi = (have[0], have[0] + have[1].shape[0] - 1) if have is not None else (0, 63)
        lo, hi = min(old_lo, 2 * lo), max(old_hi, 2 * hi)  # room to grow: rebuilt O(log) times
        pos = torch.arange(lo, hi + 1, dtype=torch.float64, device=device)
        ang = torch.outer(pos, self._inv(device)[band])
        table = (lo, torch.complex(ang.cos().float(), ang.sin().float()))
        self._tables[key] = table
        return table

    def phases(self, t: torch.Tensor, h: torch.Tensor, w: torch.Tensor, device: torch.device | None = None
               ) -> torch.Tensor:
        """The fast path's rotations ``[N, head_dim/2]`` (complex64 ``cos + i sin``) on ``device`` for host
        positions, gathered from per-position tables of each band (no float64 arithmetic per token; the index
        goes to the device without blocking). :meth:`angles` is the float64 reference."""
        self._check_limit(t)
        device = torch.device(device) if device is not None else t.device
        parts = []
        for band, p in enumerate((t, h, w)):
            lo, hi = (int(p.min()), int(p.max())) if p.numel() else (0, 0)
            first, table = self._band_table(band, lo, hi, device)
            idx = p - first
            if device.type == "cuda":  # pinned, so the copy does not block the host
                idx = idx.pin_memory().to(device, non_blocking=True)
            else:
                idx = idx.to(device)
            parts.append(table[idx])
        return torch.cat(parts, dim=1)

    @staticmethod
    def rotate_fast(x: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
        """Rotate ``x [B, N, H, D]`` by ``phases [N, D/2]`` (:meth:`phases`) as one complex product per pair
        ``(x[2i] + i x[2i+1]) * (cos + i sin)`` in float32 (one vectorised kernel instead of four strided
        multiplies); returns ``x``'s dtype. Within float32 rounding of :meth:`rotate` (tests/test_rope.py)."""
        xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
        return torch.view_as_real(xc * phases[None, :, None, :]).flatten(-2).to(x.dtype)

    @staticmethod
    def rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """Rotate ``x [B, N, H, D]`` by ``angles [N, D/2]`` in float64; returns ``x``'s dtype."""
        xd = x.to(torch.float64).unflatten(-1, (-1, 2))
        x0, x1 = xd[..., 0], xd[..., 1]
        cos = angles.cos()[None, :, None, :]
        sin = angles.sin()[None, :, None, :]
        out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
        return out.flatten(-2).to(x.dtype)

    def apply(self, x: torch.Tensor, t: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Rotate tokens ``x [B, N, H, D]`` to positions ``(t, h, w)``, each ``[N]``."""
        return self.rotate(x, self.angles(t, h, w))

    def rotate_temporal(self, x: torch.Tensor, delta: torch.Tensor | float) -> torch.Tensor:
        """Shift the temporal phase of already-rotated tokens ``x [B, N, H, D]`` by ``delta`` frames.

        Only the temporal pairs change; spatial bands are untouched. ``delta`` is a scalar or ``[N]``.
        """
        n = x.shape[1]
        delta = torch.as_tensor(delta, dtype=torch.float64, device=x.device).expand(n)
        zero = torch.zeros(n, dtype=torch.float64, device=x.device)
        return self.rotate(x, self.angles(delta, zero, zero))


# ----------------------------------------------------------------------------------------------
# Attention interfaces


class SelfAttentionFn(Protocol):
    """Called by every block with raw (un-rotated) q, k and v ``[B, L, H, D]``; returns ``[B, L, H, D]``."""

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor: ...


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention on ``[B, L, H, D]`` tensors, scale 1/sqrt(D)."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


@dataclass
class TokenPositions:
    """Per-token (t, h, w) positions of a set of frames, flattened frame-major then h then w."""

    t: torch.Tensor
    h: torch.Tensor
    w: torch.Tensor

    @staticmethod
    def of_frames(frame_pos: torch.Tensor, grid: tuple[int, int]) -> TokenPositions:
        gh, gw = grid
        fs = gh * gw
        dev = frame_pos.device
        hw = torch.arange(fs, device=dev)
        return TokenPositions(
            t=frame_pos.repeat_interleave(fs),
            h=(hw // gw).repeat(len(frame_pos)),
            w=(hw % gw).repeat(len(frame_pos)),
        )


class MaskedAttention:
    """Full-sequence self-attention with RoPE at given positions and an optional boolean mask.

    This is the reference path the cached engine is tested against (``mask[i, j]`` = query i may
    attend to key j).
    """

    def __init__(self, rope: Rope3D, pos: TokenPositions, mask: torch.Tensor | None = None):
        self.rope, self.pos, self.mask = rope, pos, mask
        self.angles = rope.angles(pos.t, pos.h, pos.w)

    def __call__(self, layer: int, q, k, v):
        q = Rope3D.rotate(q, self.angles)
        k = Rope3D.rotate(k, self.angles)
        return sdpa(q, k, v, self.mask)


# ----------------------------------------------------------------------------------------------
# Layers


class WanRMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class WanLayerNorm(nn.LayerNorm):
    def __init__(self, dim: int, eps: float, elementwise_affine: bool = False):
        super().__init__(dim, eps=eps, elementwise_affine=elementwise_affine)

    def forward(self, x):
        return super().forward(x.float()).type_as(x)


def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """Wan's timestep sinusoid: ``[cos, sin](t * 10000^(-i/half))`` in float64, ``[N, dim]``."""
    half = dim // 2
    t = t.to(torch.float64)
    arg = torch.outer(t, torch.pow(10000, -torch.arange(half, dtype=torch.float64, device=t.device).div(half)))
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.q = nn.Linear(cfg.dim, cfg.dim)
        self.k = nn.Linear(cfg.dim, cfg.dim)
        self.v = nn.Linear(cfg.dim, cfg.dim)
        self.o = nn.Linear(cfg.dim, cfg.dim)
        self.norm_q = WanRMSNorm(cfg.dim, cfg.eps)  # over the full width, before the head split
        self.norm_k = WanRMSNorm(cfg.dim, cfg.eps)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, _ = x.shape
        heads = (b, n, self.num_heads, self.head_dim)
        return self.norm_q(self.q(x)).view(heads), self.norm_k(self.k(x)).view(heads), self.v(x).view(heads)

    def forward(self, x: torch.Tensor, layer: int, attn: SelfAttentionFn) -> torch.Tensor:
        return self.o(attn(layer, *self.qkv(x)).flatten(2))


class CrossAttention(SelfAttention):
    """Text cross-attention (same projections); the text keys/values come from :meth:`text_kv` once
    per prompt."""

    def text_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, _ = context.shape
        heads = (b, n, self.num_heads, self.head_dim)
        return self.norm_k(self.k(context)).view(heads), self.v(context).view(heads)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.norm_q(self.q(x)).view(b, n, self.num_heads, self.head_dim)
        k, v = kv
        if k.shape[0] != b:  # one prompt shared by the batch
            k, v = k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
        return self.o(sdpa(q, k, v).flatten(2))


class AttentionBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = WanLayerNorm(cfg.dim, cfg.eps)
        self.self_attn = SelfAttention(cfg)
        self.norm3 = WanLayerNorm(cfg.dim, cfg.eps, elementwise_affine=True)
        self.cross_attn = CrossAttention(cfg)
        self.norm2 = WanLayerNorm(cfg.dim, cfg.eps)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, cfg.dim)
        )
        self.modulation = nn.Parameter(torch.randn(1, 6, cfg.dim) / cfg.dim**0.5)

    def forward(self, x, e0, text_kv, layer: int, attn: SelfAttentionFn):
        # x [B, F*S, dim]; e0 [B, F, 6, dim]: one modulation per frame, broadcast over its tokens.
        return self.attn_outputs(x, attn(layer, *self.attn_inputs(x, e0)), e0, text_kv)

    def attn_inputs(self, x, e0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The self-attention's raw q, k, v (the dense part before the cache)."""
        f = e0.shape[1]
        shift1, scale1 = (self.modulation.unsqueeze(1) + e0).chunk(6, dim=2)[:2]
        return self.self_attn.qkv((self.norm1(x).unflatten(1, (f, -1)) * (1 + scale1) + shift1).flatten(1, 2))

    def attn_outputs(self, x, y, e0, text_kv):
        """Everything after the self-attention ``y [B, L, H, D]``: output projection, gated residual,
        text cross-attention and the feed-forward (the dense part after the cache)."""
        f = e0.shape[1]
        _, _, gate1, shift2, scale2, gate2 = (self.modulation.unsqueeze(1) + e0).chunk(6, dim=2)

        def per_frame(z):  # [B, F*S, dim] <-> [B, F, S, dim]
            return z.unflatten(1, (f, -1))

        y = self.self_attn.o(y.flatten(2))
        x = x + (per_frame(y) * gate1).flatten(1, 2)
        x = x + self.cross_attn(self.norm3(x), text_kv)
        y = self.ffn((per_frame(self.norm2(x)) * (1 + scale2) + shift2).flatten(1, 2))
        return x + (per_frame(y) * gate2).flatten(1, 2)


class Head(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = WanLayerNorm(cfg.dim, cfg.eps)
        self.head = nn.Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x, e):
        # e [B, F, dim] (the time embedding, not its projection)
        f = e.shape[1]
        shift, scale = (self.modulation.unsqueeze(1) + e.unsqueeze(2)).chunk(2, dim=2)
        return self.head(self.norm(x).unflatten(1, (f, -1)) * (1 + scale) + shift)


@dataclass
class TextState:
    """A prompt's cross-attention keys and values for every block, computed once per prompt."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]


class CausalWan(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(
            nn.Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.dim, cfg.dim)
        )
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, cfg.dim * 6))
        self.blocks = nn.ModuleList([AttentionBlock(cfg) for _ in range(cfg.num_layers)])
        self.head = Head(cfg)
        self._dense = (AttentionBlock.attn_inputs, AttentionBlock.attn_outputs)  # see compile_dense
        self.compiled: str | None = None

    def compile_dense(self, backend: str | None) -> None:
        """Run the dense parts of every block (before and after the cached self-attention, which stays
        eager: it calls the cache policy) through ``torch.compile``; one graph serves all blocks.
        ``backend``: None (eager), ``"inductor"``, ``"cudagraphs"`` (inductor with CUDA graphs,
        ``mode="reduce-overhead"``: shapes are fixed within a phase) or any torch.compile backend name
        (``"aot_eager"`` checks the capture without code generation)."""
        if backend is None:
            self._dense = (AttentionBlock.attn_inputs, AttentionBlock.attn_outputs)
        else:
            kw = dict(backend="inductor", mode="reduce-overhead") if backend == "cudagraphs" else dict(backend=backend)
            self._dense = tuple(torch.compile(fn, **kw) for fn in (AttentionBlock.attn_inputs,
                                                                   AttentionBlock.attn_outputs))
        self.compiled = backend

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.patch_embedding.weight.device

    def text_state(self, context: torch.Tensor) -> TextState:
        """``context [B, text_len, text_dim]`` (padding already zeroed) -> per-block text K/V."""
        if context.shape[-2:] != (self.cfg.text_len, self.cfg.text_dim):
            raise ConfigError(
                f"text context has shape {tuple(context.shape)}, expected [B, {self.cfg.text_len}, "
                f"{self.cfg.text_dim}] for this model"
            )
        ctx = self.text_embedding(context.to(self.dtype))
        return TextState([blk.cross_attn.text_kv(ctx) for blk in self.blocks])

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: TextState, attn: SelfAttentionFn,
                keys_only: bool = False) -> torch.Tensor | None:
        """``x [B, F, C, H, W]`` at per-frame timesteps ``t [B, F]`` -> flow prediction, same shape.

        ``keys_only``: a pass run only for the keys and values it hands to ``attn`` (a cache commit whose
        output is discarded): the last block stops after its q/k/v, and None is returned."""
        b, f, _, h, w = x.shape
        pt, ph, pw = self.cfg.patch_size
        tokens = self.patch_embedding(x.transpose(1, 2).to(self.dtype))  # [B, dim, F, H/ph, W/pw]
        gf, gh, gw = tokens.shape[2:]
        tokens = tokens.flatten(2).transpose(1, 2)  # [B, F*S, dim], frame-major then h then w

        e = self.time_embedding(sinusoidal_embedding(self.cfg.freq_dim, t.flatten()).to(tokens.dtype))
        e0 = self.time_projection(e).unflatten(1, (6, self.cfg.dim)).unflatten(0, (b, f))  # [B, F, 6, dim]
        last = len(self.blocks) - 1
        inputs, outputs = self._dense
        for i, block in enumerate(self.blocks):
            qkv = inputs(block, tokens, e0)
            if keys_only and i == last:  # only the keys and values reach the cache
                attn(i, *qkv)
                return None
            tokens = outputs(block, tokens, attn(i, *qkv), e0, text.kv[i])
        out = self.head(tokens, e.unflatten(0, (b, f)))  # [B, F, S, prod(patch)*C]

        # Unpatchify: each token's outputs are ordered (pt, ph, pw, c), c fastest.
        c = self.cfg.out_dim
        out = out.reshape(b, gf, gh, gw, pt, ph, pw, c)
        out = out.permute(0, 1, 4, 7, 2, 5, 3, 6)  # b, f, pt, c, h, ph, w, pw
        return out.reshape(b, gf * pt, c, gh * ph, gw * pw)
