"""Training of the ``toy`` backbone on the toy world: block-causal flow matching.

A batch is ``batch`` scenes of ``clip_frames`` frames (one attention window), encoded by the fixed
codec and cut into chunks of ``chunk_frames`` latent frames (as the engine generates them). Each chunk
gets its own noise level ``sigma = shift(u)``, ``u ~ U(0, 1)``. Two objectives:

- ``teacher_forcing`` (default): the model sees ``[clean clip, noisy clip]``; a noisy chunk attends to
  the clean tokens of the earlier chunks (at timestep 0, as the engine's commit pass writes the cache)
  and to itself, so every chunk is trained on exactly the context it has at inference
  (:func:`teacher_forcing_mask`); the clean half only provides that context and is not scored.
- ``diffusion_forcing``: one clip, each chunk at its own level or (probability ``clean_prob``) clean and
  not scored; a chunk attends to its own and all earlier chunks (:func:`block_causal_mask`).

Tokens sit at their frame positions. The model predicts the flow ``noise - x0`` at
``x_t = (1 - sigma) x0 + sigma noise``; the loss is its squared error over the scored chunks, with the
latent positions an object covers weighted ``object_weight`` (objects are a small part of each frame,
and the only part the text's colours and shapes decide) and the first chunk ``first_chunk_weight``.
With ``context_noise`` the clean copy is corrupted with Gaussian noise (a level per clip, up to that std)
while still labelled timestep 0, so that imperfect context, like the model's own frames, is in the
training distribution (an experiment: the packaged checkpoint does not use it; docs/toyworld.md).
With ``context_self`` the context is instead the model's own one-step estimate of each chunk from a
noised copy (no gradient through it; :func:`self_context`), the kind of frame it generates itself; the
packaged checkpoint's second stage (500 steps from the first) uses it (docs/toyworld.md). With
``context_self_rounds`` > 1 each chunk's estimate reads the previous round's estimates of the earlier
chunks instead of the clean ones, so the context's errors compound over chunks as at inference.
``first_batch`` more scenes per step are trained on their first chunk alone: the chunk generated from
the text with no context, where the colours and the count must come from the prompt.

Everything is drawn from generators seeded by ``seed``: the same seed gives the same loss curve on the
same machine with the same ``threads``. Training scenes use seeds below :data:`HELDOUT_SEED_BASE`; held-out
evaluation uses seeds from it upwards.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from deepforcing.model import CausalWan, ModelConfig, Rope3D, TokenPositions, preset, sdpa
from deepforcing.toyworld.codec import ToyCodec, frames_to_signed
from deepforcing.toyworld.text import ToyTextEncoder
from deepforcing.toyworld.world import BACKGROUNDS, Scene

HELDOUT_SEED_BASE = 1_000_000_000
NUM_TRAIN_TIMESTEPS = 1000
OBJECTIVES = ("teacher_forcing", "diffusion_forcing")


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "toy"
    steps: int = 3000
    batch: int = 5
    clip_frames: int = 21  # one attention window
    chunk_frames: int = 3
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decay to lr * min_lr_ratio
    warmup: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema: float = 0.995
    clean_prob: float = 0.25  # diffusion forcing: chance that a chunk stays clean (context only)
    objective: str = "teacher_forcing"  # or "diffusion_forcing" (OBJECTIVES)
    first_chunk_weight: float = 1.0  # loss weight of the first chunk (the one generated from the text alone)
    first_batch: int = 16  # extra scenes per step trained on their first chunk only (text -> first frames)
    context_noise: float = 0.0  # teacher forcing: the clean copy gets N(0, s^2) noise, s ~ U(0, this), still at t=0
    context_self: float = 0.0  # teacher forcing: the context is the model's own x0 estimate at sigma ~ U(0, this)
    context_self_rounds: int = 1  # estimates of estimates: round r reads round r-1's context, not the clean clip
    object_weight: float = 4.0  # loss weight of latent positions an object covers (the background's is 1)
    shift: float = 3.0  # sigma = shift*u / (1 + (shift-1) u)
    seed: int = 0
    log_every: int = 10
    threads: int = 2
    stop_at: int = 0  # stop after this many steps (0: all); the schedule still spans ``steps``
    init: str = ""  # start from this checkpoint folder (a previous stage) instead of random weights


def block_causal_mask(num_frames: int, chunk_frames: int, tokens_per_frame: int) -> torch.Tensor:
    """``mask[i, j]``: token i may attend to token j (j's chunk is i's or earlier)."""
    chunk = torch.arange(num_frames).div(chunk_frames, rounding_mode="floor").repeat_interleave(tokens_per_frame)
    return chunk[:, None] >= chunk[None, :]


class BlockCausalAttention:
    """Block-causal self-attention over a whole clip, one chunk of queries at a time (each chunk reads its
    own and the earlier chunks' keys), so no work is spent on masked pairs. Equal to
    ``MaskedAttention`` with :func:`block_causal_mask`; RoPE is applied in float32 (the engine rotates
    in float64 and casts back: the same to float32 rounding)."""

    def __init__(self, rope: Rope3D, pos: TokenPositions, chunk_tokens: int):
        angles = rope.angles(pos.t, pos.h, pos.w)
        self.cos, self.sin = angles.cos().float()[None, :, None, :], angles.sin().float()[None, :, None, :]
        self.chunk_tokens = chunk_tokens

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        x0, x1 = x.unflatten(-1, (-1, 2)).unbind(-1)
        return torch.stack([x0 * self.cos - x1 * self.sin, x0 * self.sin + x1 * self.cos], dim=-1).flatten(-2)

    def __call__(self, layer: int, q, k, v):
        q, k = self.rotate(q), self.rotate(k)
        n = self.chunk_tokens
        return torch.cat([sdpa(q[:, a : a + n], k[:, : a + n], v[:, : a + n]) for a in range(0, q.shape[1], n)],
                         dim=1)


def teacher_forcing_mask(num_frames: int, chunk_frames: int, tokens_per_frame: int) -> torch.Tensor:
    """Mask over ``[clean clip, noisy clip]`` (``2 * num_frames`` frames): a clean token reads the clean
    tokens of its own and earlier chunks; a noisy token reads the clean tokens of the earlier chunks and
    the noisy tokens of its own chunk, which is what the engine's cache holds when it denoises a chunk."""
    chunk = torch.arange(num_frames).div(chunk_frames, rounding_mode="floor").repeat_interleave(tokens_per_frame)
    ci, cj = chunk[:, None], chunk[None, :]
    clean_clean, noisy_clean, noisy_noisy = ci >= cj, ci > cj, ci == cj
    top = torch.cat([clean_clean, torch.zeros_like(clean_clean)], dim=1)
    return torch.cat([top, torch.cat([noisy_clean, noisy_noisy], dim=1)], dim=0)


class TeacherForcingAttention(BlockCausalAttention):
    """Attention of :func:`teacher_forcing_mask` over ``[clean clip, noisy clip]``, one chunk of queries at
    a time, reading only the keys the mask allows. ``pos`` holds the positions of one clip (both halves
    sit at the same frame positions)."""

    def __init__(self, rope: Rope3D, pos: TokenPositions, chunk_tokens: int):
        two = TokenPositions(torch.cat([pos.t, pos.t]), torch.cat([pos.h, pos.h]), torch.cat([pos.w, pos.w]))
        super().__init__(rope, two, chunk_tokens)

    def __call__(self, layer: int, q, k, v):
        q, k = self.rotate(q), self.rotate(k)
        n, half = self.chunk_tokens, q.shape[1] // 2
        out = [sdpa(q[:, a : a + n], k[:, : a + n], v[:, : a + n]) for a in range(0, half, n)]
        for a in range(0, half, n):
            b = half + a
            kk = torch.cat([k[:, :a], k[:, b : b + n]], dim=1)
            vv = torch.cat([v[:, :a], v[:, b : b + n]], dim=1)
            out.append(sdpa(q[:, b : b + n], kk, vv))
        return torch.cat(out, dim=1)


def shifted(u: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * u / (1 + (shift - 1) * u)


class Batches:
    """Deterministic training batches: step ``k`` always gives the same scenes and noise."""

    def __init__(self, cfg: TrainConfig, mcfg: ModelConfig):
        self.cfg, self.mcfg = cfg, mcfg
        self.codec = ToyCodec.from_config(mcfg)
        self.text = ToyTextEncoder(mcfg.text_len, mcfg.text_dim)
        self.size = mcfg.latent_hw[0] * mcfg.vae_stride[1]

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        return self.draw(gen, self.cfg.batch, self.cfg.clip_frames)

    def first_chunks(self, step: int) -> dict[str, torch.Tensor]:
        """``first_batch`` other scenes, one chunk each (their first), all noised and scored."""
        gen = torch.Generator().manual_seed((self.cfg.seed * 1_000_003 + step) * 2 + 1)
        return self.draw(gen, self.cfg.first_batch, self.cfg.chunk_frames, context=False)

    def draw(self, gen: torch.Generator, batch: int, clip_frames: int, context: bool = True) -> dict:
        cfg = self.cfg
        seeds = torch.randint(0, HELDOUT_SEED_BASE, (batch,), generator=gen).tolist()
        scenes = [Scene(s, size=self.size) for s in seeds]
        frames = torch.stack([torch.from_numpy(s.frames(clip_frames)) for s in scenes])
        x0 = self.codec.encode(frames_to_signed(frames))  # [B, F, C, h, w]
        bg = torch.tensor([BACKGROUNDS[s.spec.background] for s in scenes], dtype=frames.dtype)
        covered = (frames != bg[:, None, None, None, :]).any(-1)  # [B, F, H, W]: pixels an object covers
        stride = frames.shape[-2] // x0.shape[-1]
        covered = torch.nn.functional.max_pool2d(covered.float(), stride)  # [B, F, h, w]
        weight = 1 + (cfg.object_weight - 1) * covered
        chunks = clip_frames // cfg.chunk_frames
        sigma = shifted(torch.rand(batch, chunks, generator=gen), cfg.shift)
        clean = torch.rand(batch, chunks, generator=gen) < cfg.clean_prob
        clean[:, -1] = False  # at least one scored chunk per clip
        if cfg.objective == "teacher_forcing" or not context:  # every chunk scored (TF: clean copy as context)
            clean[:] = False
        sigma = torch.where(clean, torch.zeros_like(sigma), sigma)
        sigma = sigma.repeat_interleave(cfg.chunk_frames, dim=1)  # [B, F]
        noise = torch.randn(x0.shape, generator=gen)
        s = sigma[..., None, None, None]
        extra = {}
        if cfg.context_noise > 0 and context:  # corrupted context, labelled clean: robust to imperfect frames
            level = torch.rand(batch, 1, 1, 1, 1, generator=gen) * cfg.context_noise
            extra["context_x0"] = x0 + level * torch.randn(x0.shape, generator=gen)
        if cfg.context_self > 0 and context:  # levels at which the model re-estimates its own context
            level = (torch.rand(batch, chunks, generator=gen) * cfg.context_self).repeat_interleave(
                cfg.chunk_frames, dim=1)
            extra["self_sigma"] = level
            extra["self_noise"] = torch.randn(x0.shape, generator=gen)
        return {**extra, "x0": x0, "noise": noise, "xt": (1 - s) * x0 + s * noise, "sigma": sigma,
                "scored": (sigma > 0).float(), "weight": weight,
                "context": self.text.encode([sc.prompt for sc in scenes])}


def flow_loss(model: CausalWan, batch: dict, attn, teacher_forcing: bool = False,
              first_weight: float = 1.0, chunk_frames: int = 1) -> torch.Tensor:
    text = model.text_state(batch["context"])
    x, t = batch["xt"], batch["sigma"] * NUM_TRAIN_TIMESTEPS
    if teacher_forcing:  # [clean clip at t = 0, noisy clip]; only the noisy half is scored
        clean = batch.get("context_x0", batch["x0"])
        x, t = torch.cat([clean, x], dim=1), torch.cat([torch.zeros_like(t), t], dim=1)
    flow = model(x, t, text, attn)[:, -batch["xt"].shape[1]:]
    err = (flow.float() - (batch["noise"] - batch["x0"])).pow(2).mean(dim=2)  # [B, F, h, w]
    err = (err * batch["weight"]).mean(dim=(2, 3))  # [B, F]
    w = batch["scored"].clone()
    w[:, :chunk_frames] *= first_weight
    return (err * w).sum() / w.sum()


@torch.no_grad()
def self_context(model: CausalWan, batch: dict, attn, rounds: int = 1) -> dict:
    """Replace the clean context by the model's own estimate of it: every chunk noised to its
    ``self_sigma`` and denoised in one step, reading the clean earlier chunks (teacher forcing). The
    model's generated frames are such estimates (its last sampling step is one), blurred where it is
    unsure, so the next chunk learns to continue from frames like its own towards the true clip.

    With ``rounds`` > 1 the estimate is repeated, each round reading the previous round's estimates of the
    earlier chunks instead of the clean ones (the same noised chunks), so errors compound over chunks as
    they do when the model reads its own frames at inference."""
    if rounds < 1:
        raise ValueError(f"context_self_rounds must be at least 1, got {rounds}")
    s = batch["self_sigma"][..., None, None, None]
    x0 = batch["x0"]
    xs = (1 - s) * x0 + s * batch["self_noise"]
    t = batch["self_sigma"] * NUM_TRAIN_TIMESTEPS
    text = model.text_state(batch["context"])
    tt = torch.cat([torch.zeros_like(t), t], dim=1)
    context = x0
    for _ in range(rounds):
        flow = model(torch.cat([context, xs], dim=1), tt, text, attn)[:, -x0.shape[1]:].float()
        context = xs - s * flow
    return {**batch, "context_x0": context}


def lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


def train(cfg: TrainConfig, out: str | Path | None = None, on_log: Callable[[dict], None] | None = None,
          on_snapshot: Callable[[int, CausalWan], None] | None = None,
          snapshot_every: int = 0) -> tuple[CausalWan, list[dict]]:
    """Train from scratch; returns (EMA model, loss log). With ``out``, writes the checkpoint folder
    (``config.json`` + ``diffusion_pytorch_model.safetensors``, the loader's Wan folder layout), the
    training config and the loss curve CSV there."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    mcfg = preset(cfg.preset)
    if cfg.clip_frames % cfg.chunk_frames:
        raise ValueError(f"clip_frames {cfg.clip_frames} is not a multiple of chunk_frames {cfg.chunk_frames}")
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {cfg.objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if (cfg.context_self or cfg.context_noise) and cfg.objective != "teacher_forcing":
        raise ValueError("context_self and context_noise corrupt teacher forcing's clean copy; "
                         "use objective='teacher_forcing' or set them to 0")
    if cfg.context_self_rounds < 1:
        raise ValueError(f"context_self_rounds must be at least 1, got {cfg.context_self_rounds}")
    model = CausalWan(mcfg).train()
    if cfg.init:
        from deepforcing.loading import load_generator

        load_generator(model, cfg.init)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    batches = Batches(cfg, mcfg)
    pos = TokenPositions.of_frames(torch.arange(cfg.clip_frames), mcfg.grid())
    tf = cfg.objective == "teacher_forcing"
    first_pos = TokenPositions.of_frames(torch.arange(cfg.chunk_frames), mcfg.grid())
    first_attn = BlockCausalAttention(Rope3D(mcfg), first_pos, cfg.chunk_frames * mcfg.tokens_per_frame())
    attn = (TeacherForcingAttention if tf else BlockCausalAttention)(
        Rope3D(mcfg), pos, cfg.chunk_frames * mcfg.tokens_per_frame())
    log: list[dict] = []
    running, count, tic = 0.0, 0, time.perf_counter()
    last = cfg.stop_at or cfg.steps
    for step in range(last):
        lr = lr_at(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = batches(step)
        if "self_sigma" in batch:
            batch = self_context(model, batch, attn, cfg.context_self_rounds)
        loss = flow_loss(model, batch, attn, tf, cfg.first_chunk_weight, cfg.chunk_frames)
        if cfg.first_batch:
            loss = loss + flow_loss(model, batches.first_chunks(step), first_attn)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        decay = min(cfg.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - decay)
        running += float(loss.detach())
        count += 1
        if (step + 1) % cfg.log_every == 0 or step + 1 == last:
            row = {"step": step + 1, "loss": running / count, "lr": lr, "seconds": time.perf_counter() - tic}
            log.append(row)
            running, count = 0.0, 0
            if on_log is not None:
                on_log(row)
        if on_snapshot is not None and snapshot_every and (step + 1) % snapshot_every == 0:
            on_snapshot(step + 1, ema)
    if out is not None:
        save(ema, cfg, log, out)
    return ema, log


def save(model: CausalWan, cfg: TrainConfig, log: list[dict], out: str | Path) -> Path:
    from deepforcing.checkpoints import save_model_folder

    out = Path(out)
    save_model_folder(model.state_dict(), out, model.cfg)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    with open(out / "loss.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "loss", "lr", "seconds"])
        w.writeheader()
        w.writerows(log)
    return out
