"""The streaming mp4 writer gives the same bytes for the same frames, whatever their layout and the machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deepforcing.metrics.video import decode
from deepforcing.video import VideoWriter

ROOT = Path(__file__).resolve().parents[1]


def frames_tchw(t=8, h=64, w=96, seed=0) -> torch.Tensor:
    """A moving gradient plus noise, uint8 [T, 3, H, W] (the VAE decoder's layout)."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    base = torch.stack([(x * 2) % 256, (y * 3) % 256, (x + y) % 256]).float()
    out = [(base.roll(4 * i, dims=2) + 40 * torch.rand(3, h, w, generator=g)).clamp(0, 255) for i in range(t)]
    return torch.stack(out).to(torch.uint8)


def write(path: Path, chunks) -> bytes:
    with VideoWriter(path) as w:
        for c in chunks:
            w.write(c)
    return path.read_bytes()


def test_same_frames_give_the_same_bytes_in_any_layout(tmp_path):
    x = frames_tchw()
    permuted = [x[:3].permute(0, 2, 3, 1), x[3:].permute(0, 2, 3, 1)]  # as generate_video hands them over
    assert not permuted[0].is_contiguous()
    first = write(tmp_path / "a.mp4", permuted)
    again = write(tmp_path / "b.mp4", [x[:3].permute(0, 2, 3, 1), x[3:].permute(0, 2, 3, 1)])
    contiguous = write(tmp_path / "c.mp4", [x.permute(0, 2, 3, 1).contiguous().numpy()])
    # a non-contiguous numpy view (every other column of a wider array) of the same pixels
    wide = np.zeros((8, 64, 192, 3), np.uint8)
    wide[:, :, ::2] = x.permute(0, 2, 3, 1).numpy()
    strided = write(tmp_path / "d.mp4", [wide[:, :, ::2]])
    assert first == again == contiguous == strided
    video = decode(tmp_path / "a.mp4")
    assert tuple(video.frames.shape) == (8, 64, 96, 3) and video.fps == 16  # lossy, but the right frames
    assert (video.frames.float() - x.permute(0, 2, 3, 1).float()).abs().mean() < 12


WRITE = r"""
import os, sys
ncpu, out, here = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:ncpu])
sys.path.insert(0, here)
from test_video import frames_tchw
from deepforcing.video import VideoWriter
x = frames_tchw(t=24, h=256, w=64).permute(0, 2, 3, 1)
for name in ("a", "b"):  # twice in one process: the second writer finds memory the first one used
    with VideoWriter(os.path.join(out, name + ".mp4")) as w:
        w.write(x[:9])
        w.write(x[9:])
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs at least two CPUs to compare the file written on one and on all")
def test_bytes_depend_on_the_frames_alone(tmp_path):
    """Not on the number of cores (x264 sizes its slices by it when left to count them), nor on what
    was in memory before (MALLOC_PERTURB_ fills every allocation with a given byte)."""
    # 256 rows: tall enough that x264 would use several slice threads if left to count the cores
    files = []
    for ncpu, fill in ((1, "85"), (len(os.sched_getaffinity(0)), "170")):
        out = tmp_path / f"cpus{ncpu}"
        out.mkdir()
        proc = subprocess.run([sys.executable, "-c", WRITE, str(ncpu), str(out), str(Path(__file__).parent)], cwd=ROOT,
                              env={**os.environ, "MALLOC_PERTURB_": fill}, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        files += [(out / "a.mp4").read_bytes(), (out / "b.mp4").read_bytes()]
    assert all(f == files[0] for f in files)


def test_threads_must_be_a_fixed_count(tmp_path):
    with pytest.raises(ValueError, match="threads must be >= 1"):
        VideoWriter(tmp_path / "x.mp4", threads=0)
