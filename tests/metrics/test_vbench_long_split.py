"""Our VBench-Long clip rule against ``vbench2_beta_long.utils.split_video_into_clips`` itself.

VBench-Long writes clips with ``torchvision.io.write_video``, which torchvision 0.29 no longer has; the test
gives it a lossless PyAV writer instead, lets vbench's function cut and write the clips, and then finds
where each written clip's frames sit in the source video.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metrics_helpers import import_vbench_long, synthetic_frames

from deepforcing.metrics.protocol import Span, clips_for
from deepforcing.metrics.video import decode, write_lossless


@pytest.fixture
def split_video_into_clips(monkeypatch):
    import_vbench_long(monkeypatch)
    import vbench2_beta_long.utils as vl

    def write_video(filename, video_array, fps, **_):
        a = video_array.numpy() if isinstance(video_array, torch.Tensor) else np.asarray(video_array)
        write_lossless(filename, a.astype(np.uint8), fps)

    monkeypatch.setattr(vl, "write_video", write_video)
    return vl.split_video_into_clips


@pytest.mark.parametrize("num_frames, fps, seconds", [(40, 8, 2), (32, 8, 2), (17, 8, 2), (10, 8, 2), (50, 16, 2),
                                                      (45, 8, 5), (23, 8.0, 1)])
def test_clip_spans_equal_vbench_long(split_video_into_clips, tmp_path, num_frames, fps, seconds):
    frames = synthetic_frames(num_frames, 64, 64, 3, speed=5)
    # a unique stamp per frame so every clip frame can be located in the source
    frames[:, 0, 0, :] = np.arange(num_frames)[:, None]
    src = write_lossless(tmp_path / f"video-{num_frames}.mp4", frames, fps)
    out = split_video_into_clips(str(src), str(tmp_path / "split_clip"), duration=seconds)
    clip_files = sorted((tmp_path / "split_clip" / src.stem).glob("*.mp4"))
    assert out and clip_files
    theirs = []
    for f in clip_files:
        stamps = decode(str(f)).frames[:, 0, 0, 0].tolist()
        assert stamps == list(range(stamps[0], stamps[0] + len(stamps))), "a clip is a contiguous run of frames"
        theirs.append((stamps[0], stamps[-1] + 1))
    ours = [(c.start, c.end) for c in clips_for(Span(0, num_frames), fps, seconds)]
    assert ours == theirs
