"""A tiny real sweep (random-weights tiny model on the CPU) for examples, the notebook and tests."""

from __future__ import annotations

import os
from pathlib import Path

#: (preset, knobs): a FIFO baseline and Deep Forcing at two sink sizes (5 and 10 of 21 frames)
DEMO_POINTS = (
    ("rolling_window", ()),
    ("deep_forcing", (("sink_ratio", 0.25),)),
    ("deep_forcing", (("sink_ratio", 0.5),)),
)
DEMO_PROMPTS = (
    "A red fox trots through fresh snow in a birch forest at dawn.",
    "Waves roll onto a rocky beach under a stormy sky.",
)


def build_demo_sweep(root: str | os.PathLike, sweep: str = "demo", points=DEMO_POINTS, prompts=DEMO_PROMPTS,
                     num_frames: int = 30, runtime=None) -> Path:
    """Generate (or reuse: the store skips finished points) a small sweep; returns its folder.

    30 latent frames = 10 chunks, enough for Deep Forcing to compress twice past the 21-frame window.
    """
    from deepforcing.engine import RolloutConfig
    from deepforcing.pipeline import PointConfig, Runtime, run_point

    runtime = runtime or Runtime()
    for method, knobs in points:
        point = PointConfig(method=method, knobs=tuple(knobs), rollout=RolloutConfig(num_frames=num_frames),
                            prompts=tuple(prompts), fps=16.0, metrics=("temporal_flickering",), segment_seconds=1.0)
        run_point(point, runtime, root, sweep, progress=False)
    return Path(root) / sweep
