"""Fixtures for the metrics tests: synthetic videos and a VBench cache dir of RANDOM weights.

Weight files are written on first use, in VBench's own file names and formats, into one session-wide
temporary cache dir, so a test that needs no weights builds none.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from metrics_helpers import RandomWeights, synthetic_frames  # noqa: F401

from deepforcing.metrics.video import write_lossless


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    out = {}
    out["small"] = write_lossless(d / "a red square moves.mp4", synthetic_frames(16, 128, 160, 0), 8)
    out["small2"] = write_lossless(d / "clip2.mp4", synthetic_frames(12, 136, 128, 1, speed=9), 8)
    out["long"] = write_lossless(d / "long.mp4", synthetic_frames(44, 64, 80, 2, decay=0.02), 8)
    out["tiny"] = write_lossless(d / "tiny.mp4", synthetic_frames(16, 64, 64, 3), 8)
    out["odd"] = write_lossless(d / "odd.mp4", synthetic_frames(10, 131, 157, 4), 8)
    one = d / "one_frame.mp4"
    write_lossless(one, synthetic_frames(1, 64, 64, 5), 8)
    out["one_frame"] = one
    bad = d / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    out["corrupt"] = bad
    empty = d / "empty.mp4"
    empty.write_bytes(b"")
    out["empty"] = empty
    return out


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> RandomWeights:
    torch.manual_seed(0)
    return RandomWeights(tmp_path_factory.mktemp("vbench_cache"))
