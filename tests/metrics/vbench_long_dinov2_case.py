"""The fixed inputs of the DINOv2 clip-to-clip golden case (shared by its test and its recipe)."""

from __future__ import annotations

import numpy as np
import torch
from metrics_helpers import synthetic_frames


def case_frames() -> np.ndarray:
    """Four 'first frames of clips' (uint8 [4,144,176,3], not square: resize + crop both act)."""
    return synthetic_frames(40, 144, 176, 21, speed=7)[[0, 16, 24, 39]]


def fingerprint(sd: dict[str, torch.Tensor]) -> list[float]:
    """float64 sum and sum of squares over every tensor, in key order (detects another random init)."""
    s = sum(v.double().sum().item() for _, v in sorted(sd.items()))
    q = sum(v.double().square().sum().item() for _, v in sorted(sd.items()))
    return [s, q]
