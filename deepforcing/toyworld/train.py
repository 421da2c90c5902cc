"""Training of the ``toy`` backbone on the toy world: block-causal flow matching with diffusion forcing.

A batch is ``batch`` scenes of ``clip_frames`` frames (one attention window), encoded by the fixed
codec. The clip is cut into chunks of ``chunk_frames`` latent frames (as the engine generates them);
each chunk gets its own noise level (diffusion forcing): with probability ``clean_prob`` it is left
clean (timestep 0, as the engine's commit pass writes the cache, and not scored), otherwise
``sigma = shift(u)`` with ``u ~ U(0, 1)``. Tokens attend to their own chunk and every earlier one (the
engine's block-causal order) at their frame positions. The model predicts the flow ``noise - x0`` at
``x_t = (1 - sigma) x0 + sigma noise``; the loss is its mean squared error over the noised chunks.

Everything is drawn from generators seeded by ``seed``: the same seed gives the same loss curve on the
same machine (one CPU thread). Training scenes use seeds below :data:`HELDOUT_SEED_BASE`; held-out
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
from deepforcing.toyworld.world import Scene

HELDOUT_SEED_BASE = 1_000_000_000
NUM_TRAIN_TIMESTEPS = 1000


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "toy"
    steps: int = 2000
    batch: int = 8
    clip_frames: int = 21  # one attention window
    chunk_frames: int = 3
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decay to lr * min_lr_ratio
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema: float = 0.999
    clean_prob: float = 0.25
    shift: float = 3.0  # sigma = shift*u / (1 + (shift-1) u)
    seed: int = 0
    log_every: int = 10
    threads: int = 1
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
        cfg = self.cfg
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        seeds = torch.randint(0, HELDOUT_SEED_BASE, (cfg.batch,), generator=gen).tolist()
        scenes = [Scene(s, size=self.size) for s in seeds]
        frames = torch.stack([torch.from_numpy(s.frames(cfg.clip_frames)) for s in scenes])
        x0 = self.codec.encode(frames_to_signed(frames))  # [B, F, C, h, w]
        chunks = cfg.clip_frames // cfg.chunk_frames
        sigma = shifted(torch.rand(cfg.batch, chunks, generator=gen), cfg.shift)
        clean = torch.rand(cfg.batch, chunks, generator=gen) < cfg.clean_prob
        clean[:, -1] = False  # at least one scored chunk per clip
        sigma = torch.where(clean, torch.zeros_like(sigma), sigma)
        sigma = sigma.repeat_interleave(cfg.chunk_frames, dim=1)  # [B, F]
        noise = torch.randn(x0.shape, generator=gen)
        s = sigma[..., None, None, None]
        return {"x0": x0, "noise": noise, "xt": (1 - s) * x0 + s * noise, "sigma": sigma,
                "scored": (sigma > 0).float(), "context": self.text.encode([sc.prompt for sc in scenes])}


def flow_loss(model: CausalWan, batch: dict, attn) -> torch.Tensor:
    text = model.text_state(batch["context"])
    flow = model(batch["xt"], batch["sigma"] * NUM_TRAIN_TIMESTEPS, text, attn)
    err = (flow.float() - (batch["noise"] - batch["x0"])).pow(2).mean(dim=(2, 3, 4))  # [B, F]
    w = batch["scored"]
    return (err * w).sum() / w.sum()


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
    model = CausalWan(mcfg).train()
    if cfg.init:
        from deepforcing.loading import load_generator

        load_generator(model, cfg.init)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    batches = Batches(cfg, mcfg)
    pos = TokenPositions.of_frames(torch.arange(cfg.clip_frames), mcfg.grid())
    attn = BlockCausalAttention(Rope3D(mcfg), pos, cfg.chunk_frames * mcfg.tokens_per_frame())
    log: list[dict] = []
    running, count, tic = 0.0, 0, time.perf_counter()
    last = cfg.stop_at or cfg.steps
    for step in range(last):
        lr = lr_at(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = flow_loss(model, batches(step), attn)
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
