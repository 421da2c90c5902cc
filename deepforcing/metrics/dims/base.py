"""Shared plumbing for dimensions: per-video context with feature caches, and the Metric base class."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import torch

from ..protocol import Span
from ..specs import MetricSpec


class MetricInputError(ValueError):
    """This video (or clip) cannot be scored by this dimension; the message says why and what to do."""


class VideoContext:
    """Frames of one video (uint8 [T,H,W,3] on CPU) plus caches that every dimension shares.

    Per-frame features are cached by frame index, so a frame is encoded once however many clips,
    segments and drift windows contain it. Frames may be appended (streaming); cached entries stay valid.

    Frames are addressed by their index in the whole video (``frame``, ``take``). A streaming scorer
    releases what no clip still to be scored needs (``release``): frames before an index, and the cache
    entries that involve them. Every per-frame cache is a dict keyed by a frame index or by a tuple of frame
    indices (a pair of frames, ViCLIP's 8 frames); an entry goes when its first index is released, unless
    that index is pinned (``pinned``: features kept for the end of the video, e.g. slow-fast's first frames).
    """

    def __init__(self, frames: torch.Tensor, fps: float, prompt: str | None = None, path: str = "<memory>"):
        self._chunks: list[torch.Tensor] = []
        self._starts: list[int] = []  # index of each chunk's first frame in the video
        self._total = 0
        self._shape: tuple[int, ...] | None = None
        self._frames: torch.Tensor | None = None
        self.released = 0  # frames before this index are gone
        self.pinned: set[int] = set()
        self.fps = float(fps)
        self.prompt = prompt
        self.path = path
        self.cache: dict = {}
        if frames is not None and len(frames):
            self.append(frames)

    def append(self, frames: torch.Tensor) -> None:
        if self._shape is not None and tuple(frames.shape[1:]) != self._shape:
            raise MetricInputError(
                f"chunk frame size {tuple(frames.shape[1:])} differs from earlier chunks "
                f"{self._shape}; every chunk of one video must have the same size."
            )
        if not len(frames):
            return
        self._shape = tuple(frames.shape[1:])
        self._chunks.append(frames)
        self._starts.append(self._total)
        self._total += int(frames.shape[0])
        self._frames = None

    @property
    def frames(self) -> torch.Tensor:
        """All frames of the video as one tensor (only while none has been released)."""
        if self.released:
            raise RuntimeError(f"frames before {self.released} of {self.path} were released while streaming; "
                               "the whole video is not in memory.")
        if self._frames is None:
            if not self._chunks:
                raise MetricInputError("no frames")
            self._frames = self._chunks[0] if len(self._chunks) == 1 else torch.cat(self._chunks)
            self._chunks, self._starts = [self._frames], [0]
        return self._frames

    @property
    def num_frames(self) -> int:
        """Frames of the video so far, released ones included."""
        return self._total

    @property
    def hw(self) -> tuple[int, int]:
        if self._shape is None:
            raise MetricInputError("no frames")
        return int(self._shape[0]), int(self._shape[1])

    def frame(self, i: int) -> torch.Tensor:
        """Frame ``i`` of the video, uint8 [H,W,3]."""
        if not self.released <= i < self._total:
            raise IndexError(f"frame {i} is not held (held: {self.released}..{self._total - 1})")
        k = bisect_right(self._starts, i) - 1
        return self._chunks[k][i - self._starts[k]]

    def take(self, idx: Iterable[int]) -> torch.Tensor:
        """Frames ``idx`` (video indices) as uint8 [N,H,W,3]; read-only: a run of consecutive frames inside one
        decoded chunk is returned as a view of it (no copy), anything else as a new tensor."""
        idx = list(idx)
        if idx and idx == list(range(idx[0], idx[0] + len(idx))) and self.released <= idx[0]:
            k = bisect_right(self._starts, idx[0]) - 1
            lo = idx[0] - self._starts[k] if k >= 0 else -1
            if lo >= 0 and lo + len(idx) <= int(self._chunks[k].shape[0]):
                return self._chunks[k][lo : lo + len(idx)]
        return torch.stack([self.frame(i) for i in idx])

    def float_tchw(self, idx: Iterable[int]) -> torch.Tensor:
        """Frames ``idx`` as float32 [N,3,H,W] in 0..255, exactly what ``vbench.utils.load_video`` returns."""
        return self.take(idx).permute(0, 3, 1, 2).float()

    def release(self, before: int) -> None:
        """Drop frames before ``before`` (whole chunks) and the cache entries whose first frame is before it."""
        before = min(before, self._total)
        if before <= self.released:
            return
        while len(self._chunks) > 1 and self._starts[1] <= before:
            self._chunks.pop(0)
            self._starts.pop(0)
        if self._chunks and self._starts[0] + int(self._chunks[0].shape[0]) <= before:
            self._chunks, self._starts = [], []
        self._frames = None
        self.released = self._starts[0] if self._starts else self._total
        for c in self.cache.values():
            if isinstance(c, dict):
                for k in [k for k in c if _released(k, before, self.pinned)]:
                    del c[k]


def _released(key, before: int, pinned: set[int]) -> bool:
    first = min(key) if isinstance(key, tuple) and key else key
    return isinstance(first, int) and first < before and first not in pinned


class Metric:
    spec: ClassVar[MetricSpec]

    def __init__(self, files: dict[str, Path], device: str, cfg):
        self.files = files
        self.device = device
        self.cfg = cfg

    # -- input checks -------------------------------------------------------------------------
    def validate(self, ctx: VideoContext) -> None:
        h, w = ctx.hw
        if min(h, w) < self.spec.min_side:
            raise MetricInputError(
                f"frames are {w}x{h}; {self.spec.name} needs at least {self.spec.min_side} px on each side "
                "(the model gives NaN or no output below that). Score a larger video or drop this dimension."
            )
        if self.spec.needs_prompt and not (ctx.prompt and ctx.prompt.strip()):
            raise MetricInputError(
                f"no prompt for this video; {self.spec.name} compares the video with its text prompt. "
                "Pass prompts (eval.score --prompts FILE or --prompt-from-filename)."
            )

    def check_span(self, span: Span) -> None:
        if span.length < self.spec.min_frames:
            raise MetricInputError(
                f"a clip of {span.length} frame(s) is too short: {self.spec.name} needs at least "
                f"{self.spec.min_frames} frames per clip."
            )

    # -- GPU options ----------------------------------------------------------------------------
    @property
    def on_cuda(self) -> bool:
        return str(self.device).startswith("cuda")

    def frames_per_forward(self, tokens_per_frame: int) -> int:
        return frames_per_forward(self.cfg, self.device, tokens_per_frame)

    def amp(self):
        """``torch.autocast`` for model forwards when ``cfg.gpu_autocast`` is set and the model is on a GPU;
        a no-op otherwise (the CPU path is always fp32)."""
        return gpu_autocast(self.cfg, self.device)

    def channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in channels-last layout when ``cfg.gpu_channels_last`` is set on a GPU, else ``x``."""
        if self.on_cuda and getattr(self.cfg, "gpu_channels_last", False):
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def conv_net(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` converted to channels-last when ``cfg.gpu_channels_last`` is set on a GPU."""
        if self.on_cuda and getattr(self.cfg, "gpu_channels_last", False):
            model.to(memory_format=torch.channels_last)
        return model

    # -- scoring --------------------------------------------------------------------------------
    def prepare(self, ctx: VideoContext, spans: list[Span]) -> None:
        """Compute (and cache) whatever ``score`` needs for these spans, batched."""

    def score(self, ctx: VideoContext, span: Span) -> float:
        raise NotImplementedError

    def clip_details(self, ctx: VideoContext, span: Span) -> dict | None:
        """What the clip's score is made of (per-frame or per-pair values from the caches), written into the
        clip's entry of the JSON for whoever debugs a score; None when the dimension has nothing to add."""
        return None

    def keeps(self, ctx: VideoContext, span: Span) -> bool:
        """Whether this clip counts towards a window's score (VBench-Long's static filter says no to some)."""
        return True

    #: at most this many kept clips make up the video's score (None: all)
    max_clips: int | None = None

    def _missing(self, ctx: VideoContext, key: str, idx: Iterable[int]) -> list[int]:
        c = ctx.cache.setdefault(key, {})
        return sorted({i for i in idx if i not in c})


def frames_per_forward(cfg, device, tokens_per_frame: int) -> int:
    """Frames per ViT forward: ``cfg.batch_size`` on a GPU; on a CPU about ``cfg.cpu_tokens_per_forward``
    tokens (at least one frame, at most ``batch_size``). Batching never changes a frame's features beyond
    float rounding (tests)."""
    if str(device).startswith("cuda"):
        return cfg.batch_size
    return max(1, min(cfg.batch_size, cfg.cpu_tokens_per_forward // max(1, tokens_per_frame)))


def pairs_per_forward(cfg, device, hw: tuple[int, int], gpu: int = 4) -> int:
    """Frame pairs per RAFT / AMT forward: ``gpu`` on a GPU; on a CPU about ``cfg.cpu_pixels_per_forward``
    pixels (frame pixels x pairs; at least one pair, at most ``cfg.batch_size``)."""
    if cfg is None or str(device).startswith("cuda"):
        return gpu
    return max(1, min(cfg.batch_size, cfg.cpu_pixels_per_forward // max(1, hw[0] * hw[1])))


def vit_tokens(h: int, w: int, patch: int) -> int:
    """Tokens of a ViT on an ``h x w`` input with square patches ``patch`` (partial patches floored) + CLS."""
    return (h // patch) * (w // patch) + 1


def gpu_autocast(cfg, device):
    import contextlib

    mode = getattr(cfg, "gpu_autocast", None)
    if not mode or not str(device).startswith("cuda"):
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if mode == "bf16" else torch.float16)


def batched(seq: list, n: int):
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def consistency(features: torch.Tensor) -> tuple[float, int]:
    """VBench's subject/background formula on L2-normalised features [N, D].

    s_i = (max(0, cos(f_{i-1}, f_i)) + max(0, cos(f_0, f_i))) / 2 for i >= 1; returns (Σ s_i, N - 1).
    Every cosine in two tensor operations; the sum is taken in the same order and precision (Python floats)
    as ``consistency_reference`` (VBench's loop), which it equals to float32 rounding (tests).
    """
    import torch.nn.functional as F

    n = len(features)
    if n < 2:
        return 0.0, n - 1
    cur = features[1:]
    pre = F.cosine_similarity(features[:-1], cur).clamp_min(0).tolist()
    fir = F.cosine_similarity(features[:1].expand_as(cur), cur).clamp_min(0).tolist()
    total = 0.0
    for a, b in zip(pre, fir, strict=True):
        total += (a + b) / 2
    return total, n - 1


def consistency_reference(features: torch.Tensor) -> tuple[float, int]:
    """``consistency`` as VBench computes it: per-pair cosines one row at a time."""
    import torch.nn.functional as F

    total = 0.0
    for i in range(1, len(features)):
        cur = features[i].unsqueeze(0)
        sim_pre = max(0.0, F.cosine_similarity(features[i - 1].unsqueeze(0), cur).item())
        sim_fir = max(0.0, F.cosine_similarity(features[0].unsqueeze(0), cur).item())
        total += (sim_pre + sim_fir) / 2
    return total, len(features) - 1
