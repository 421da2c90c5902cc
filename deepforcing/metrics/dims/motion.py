"""Motion smoothness: AMT-S (vbench's vendored network and loader) interpolates each odd frame from its
even neighbours; score = (255 - mean |real - interpolated|) / 255 over the clip.

Interpolations are cached per frame pair, so overlapping clips, segments and windows reuse them; pairs
are batched.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from ..protocol import Span
from ..specs import SPECS
from .base import Metric, VideoContext, batched, pairs_per_forward


@functools.lru_cache(maxsize=2)
def load_amt(path: str, device: str):
    """vbench's ``MotionSmoothness`` (its AMT-S network and loader), built once per process and kept."""
    import vbench
    from vbench.motion_smoothness import MotionSmoothness as VBenchMS

    amt_cfg = str(Path(vbench.__file__).parent / "third_party/amt/cfgs/AMT-S.yaml")
    return VBenchMS(amt_cfg, path, device)


class MotionSmoothness(Metric):
    spec = SPECS["motion_smoothness"]

    def __init__(self, files: dict[str, Path], device: str, cfg):
        super().__init__(files, device, cfg)
        self.vb = load_amt(str(files["amt_s"]), str(device))  # loads the network as vbench does
        self.conv_net(self.vb.model)

    def _scale(self, h: int, w: int) -> float:
        vb = self.vb  # VBench's memory-based rescaling rule (scale 1 on CPU and on large GPUs)
        scale = vb.anchor_resolution / (h * w) * np.sqrt((vb.vram_avail - vb.anchor_memory_bias) / vb.anchor_memory)
        scale = 1 if scale > 1 else scale
        return 1 / np.floor(1 / np.sqrt(scale) * 16) * 16

    def _pairs(self, span: Span) -> list[int]:
        """Left frame i of each (i, i+2) pair whose middle frame i+1 the clip compares."""
        return [i for i in range(span.start, span.end - 2, 2)]

    def prepare(self, ctx: VideoContext, spans: list[Span]) -> None:
        from vbench.third_party.amt.utils.utils import InputPadder, img2tensor, tensor2img

        todo = self._missing(ctx, "amt", {i for s in spans for i in self._pairs(s)})
        if not todo:
            return
        h, w = ctx.hw
        scale = self._scale(h, w)
        padder = InputPadder((1, 3, h, w), int(16 / scale))
        for b in batched(todo, pairs_per_forward(self.cfg, self.device, (h, w))):
            x0 = torch.cat([img2tensor(ctx.frame(i).numpy()) for i in b]).to(self.device)
            x1 = torch.cat([img2tensor(ctx.frame(i + 2).numpy()) for i in b]).to(self.device)
            x0, x1 = (self.channels_last(x) for x in padder.pad(x0, x1))
            embt = self.vb.embt.expand(len(b), 1, 1, 1)
            with torch.no_grad(), self.amp():
                pred = self.vb.model(x0, x1, embt, scale_factor=scale, eval=True)["imgt_pred"]
            pred = padder.unpad(pred.float().cpu())
            for k, i in enumerate(b):
                img = tensor2img(pred[k : k + 1])
                real = ctx.frame(i + 1).numpy()
                ctx.cache["amt"][i] = float(np.mean(np.abs(real.astype(np.int16) - img.astype(np.int16))))

    def clip_details(self, ctx: VideoContext, span: Span) -> dict:
        """Per interpolated (odd) frame: its index and mean |real - AMT interpolation| in 0-255 units."""
        idx = self._pairs(span)
        return {"amt_frames": [i + 1 for i in idx], "amt_abs_error": [ctx.cache["amt"][i] for i in idx]}

    def score(self, ctx: VideoContext, span: Span) -> float:
        self.check_span(span)
        diffs = [ctx.cache["amt"][i] for i in self._pairs(span)]
        return (255.0 - float(np.mean(np.array(diffs)))) / 255.0
