"""Imaging quality: MUSIQ-SPAQ (pyiqa's architecture) per frame, VBench's resize rule, mean / 100.

Frames go through :func:`..musiq_fast.musiq_mos` (MUSIQ without its padded tokens, same scores);
``ImagingQuality.unpadded = False`` runs pyiqa's own ``MUSIQ.forward`` (the reference path)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from ..musiq_fast import musiq_mos
from ..protocol import Span
from ..specs import SPECS
from .base import Metric, VideoContext, batched


def load_musiq_reference(path: str, device: str):
    """pyiqa's own construction, as VBench's ``imaging_quality`` makes it (random init, then the weights)."""
    from pyiqa.archs.musiq_arch import MUSIQ

    return MUSIQ(pretrained_model_path=path).to(device).eval()


@functools.lru_cache(maxsize=2)
def load_musiq(path: str, device: str):
    """The same network as :func:`load_musiq_reference` (same tensors, tested), built without the random
    initialisation the checkpoint overwrites (``fastload``) and kept loaded for the process; falls back
    to the reference construction on anything unexpected."""
    from pyiqa.archs.arch_util import clean_state_dict
    from pyiqa.archs.musiq_arch import MUSIQ

    from ..fastload import load_into, meta_params

    try:
        sd = clean_state_dict(torch.load(path, map_location="cpu"))
        with meta_params():
            model = MUSIQ(pretrained=False)
        load_into(model, sd)
    except Exception:
        return load_musiq_reference(path, device)
    return model.to(device).eval()


class ImagingQuality(Metric):
    spec = SPECS["imaging_quality"]
    unpadded = True  # False: pyiqa's MUSIQ.forward with its padded sequence (reference; same scores)

    def __init__(self, files: dict[str, Path], device: str, cfg):
        super().__init__(files, device, cfg)
        # VBench sets model.training = False; MUSIQ has no active dropout, so .eval() gives the same outputs
        self.model = load_musiq(str(files["musiq_spaq"]), str(device))
        self.conv_net(self.model)

    def prepare(self, ctx: VideoContext, spans: list[Span]) -> None:
        from vbench.imaging_quality import transform

        todo = self._missing(ctx, "musiq", {i for s in spans for i in range(s.start, s.end)})
        # MUSIQ's multiscale patching differs per image size only, so frames of one video batch together on
        # a GPU; on a CPU one frame at a time is fastest (about 15 % faster than batches of 8, measured)
        n = 1 if str(self.device).startswith("cpu") else max(1, min(self.cfg.batch_size, 8))
        for b in batched(todo, n):
            x = self.channels_last(transform(ctx.float_tchw(b), self.cfg.imaging_preprocess).to(self.device))
            with torch.no_grad(), self.amp():
                s = (musiq_mos(self.model, x) if self.unpadded else self.model(x)).reshape(-1).float()
            for i, v in zip(b, s, strict=True):
                ctx.cache["musiq"][i] = float(v)

    def clip_details(self, ctx: VideoContext, span: Span) -> dict:
        """MUSIQ MOS (0-100) of every frame of the clip, in frame order."""
        return {"frame_mos": [ctx.cache["musiq"][i] for i in range(span.start, span.end)]}

    def score(self, ctx: VideoContext, span: Span) -> float:
        self.check_span(span)
        c = ctx.cache["musiq"]
        return sum(c[i] for i in range(span.start, span.end)) / span.length / 100.0
