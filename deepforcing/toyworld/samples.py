"""Pictures of the toy model: frame strips of rollouts, and the training loss curve."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from deepforcing.toyworld.train import HELDOUT_SEED_BASE


def rollout_frames(model, prompt: str, num_frames: int, policy=None, seed: int = 0, steps=None,
                   shift=None, sampler=None) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` frames of one engine rollout of ``model`` (rolling window by default)."""
    from deepforcing.engine import Engine, RolloutConfig
    from deepforcing.policies.presets import build_preset
    from deepforcing.toyworld.codec import ToyCodec
    from deepforcing.toyworld.text import ToyTextEncoder

    cfg = model.cfg
    engine = Engine(model)
    text = model.text_state(ToyTextEncoder(cfg.text_len, cfg.text_dim).encode([prompt]))
    rc = RolloutConfig(num_frames=num_frames, steps=tuple(steps or cfg.sample_steps),
                       shift=shift or cfg.sample_shift, sampler=sampler or cfg.sampler, seed=seed)
    lat = engine.generate(text, policy or build_preset("rolling_window"), rc)
    return ToyCodec.from_config(cfg).decode(lat, "uint8")[0].permute(0, 2, 3, 1).numpy()


def strip(rows: list[np.ndarray], every: int = 1, scale: int = 3, gap: int = 2) -> np.ndarray:
    """Rows of frames ``[T, H, W, 3]`` (every ``every``-th) tiled into one uint8 image, upscaled."""
    rows = [r[::every] for r in rows]
    t = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    img = np.full((len(rows) * (h + gap), t * (w + gap), 3), 255, dtype=np.uint8)
    for i, r in enumerate(rows):
        for j, f in enumerate(r):
            img[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = f
    return img.repeat(scale, 0).repeat(scale, 1)


def save_png(img: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def sample_strip(model, path: str | Path, seeds=range(HELDOUT_SEED_BASE, HELDOUT_SEED_BASE + 4),
                 num_frames: int = 21) -> Path:
    """Ground truth above each rollout, for held-out scenes (every 2nd frame)."""
    from deepforcing.toyworld.world import Scene

    rows = []
    for s in seeds:
        sc = Scene(s, size=model.cfg.latent_hw[0] * model.cfg.vae_stride[1])
        rows += [sc.frames(num_frames), rollout_frames(model, sc.prompt, num_frames)]
    return save_png(strip(rows, every=2), path)


def loss_plot(csv_path: str | Path, png_path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows])
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return Path(png_path)
