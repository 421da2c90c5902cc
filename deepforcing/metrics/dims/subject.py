"""Subject consistency: VBench's first/previous-frame formula on DINO ViT-B/16 CLS features.

Backbone: when a clone of facebookresearch/dino sits where VBench's local mode keeps it
(``<cache>/dino_model/facebookresearch_dino_main``, or ``weights['dino_repo']``), the network is built
from it exactly as vbench does (``torch.hub.load(..., source='local')``). Otherwise timm's ViT-B/16 (the
same architecture and state-dict keys) runs with DINO's own position-embedding interpolation for the
non-square inputs VBench feeds (shorter side 224, aspect kept), so both paths agree (see tests).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..protocol import Span
from ..specs import SPECS
from ..weight_files import dino_backend
from .base import Metric, VideoContext, batched, consistency, vit_tokens


class TimmDino(torch.nn.Module):
    """timm ViT fed like DINO's (and DINOv2's) VisionTransformer: patch conv (floors partial patches), CLS
    token, position embeddings resized with DINO's bicubic ``scale_factor`` rule (offset 0.1, no antialias),
    blocks, norm, CLS output. Default: DINO ViT-B/16; ``arch="vit_base_patch14_dinov2"`` for DINOv2 ViT-B/14
    (its released state dict has the same keys, plus an unused ``mask_token``)."""

    def __init__(self, state_dict: dict, arch: str = "vit_base_patch16_224", fast: bool = True):
        super().__init__()
        import timm

        from ..fastload import load_into, meta_params

        sd = {k: v for k, v in state_dict.items() if k != "mask_token"}
        if fast:  # no random initialisation for the checkpoint to overwrite; same weights (tests)
            with meta_params():
                self.vit = timm.create_model(arch, pretrained=False, num_classes=0)
            load_into(self.vit, sd)
        else:
            self.vit = timm.create_model(arch, pretrained=False, num_classes=0)
            self.vit.load_state_dict(sd, strict=True)
        self.patch = self.vit.patch_embed.proj.kernel_size[0]
        for blk in self.vit.blocks:  # explicit softmax(QK^T)V, as DINO computes it
            blk.attn.fused_attn = False

    def pos_embed(self, h: int, w: int) -> torch.Tensor:
        pe = self.vit.pos_embed
        n = pe.shape[1] - 1
        h0, w0 = h // self.patch, w // self.patch
        s = int(math.sqrt(n))
        if h0 * w0 == n and h == w:  # DINO's test is on pixel sizes, not on the patch grid
            return pe
        grid = pe[:, 1:].float().reshape(1, s, s, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((h0 + 0.1) / s, (w0 + 0.1) / s), mode="bicubic")
        grid = grid.permute(0, 2, 3, 1).reshape(1, -1, pe.shape[-1])
        return torch.cat((pe[:, :1], grid), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        t = self.vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat((self.vit.cls_token.expand(b, -1, -1), t), dim=1)
        t = t + self.pos_embed(h, w)
        t = self.vit.norm(self.vit.blocks(t))
        return t[:, 0]


@functools.lru_cache(maxsize=2)
def load_dino(weights: str, repo: str | None, device: str, fast: bool = True) -> torch.nn.Module:
    """DINO ViT-B/16 with ``weights``, kept loaded for the process: from the facebookresearch/dino clone
    ``repo`` as vbench builds it, else timm's. ``fast``: parameters are not randomly initialised before the
    checkpoint replaces them (``fastload``; same weights, tests); ``fast=False`` is the plain construction."""
    from ..fastload import load_into, meta_params

    sd = torch.load(weights, map_location="cpu")
    if repo:
        if fast:
            with meta_params():
                model = torch.hub.load(repo, "dino_vitb16", source="local", pretrained=False)
            load_into(model, sd)
        else:
            model = torch.hub.load(repo, "dino_vitb16", source="local", pretrained=False)
            model.load_state_dict(sd, strict=True)
    else:
        model = TimmDino(sd, fast=fast)
    return model.to(device).eval()


@functools.lru_cache(maxsize=2)
def load_dinov2(weights: str, device: str) -> torch.nn.Module:
    """DINOv2 ViT-B/14 (``dinov2_vitb14_pretrain.pth``), VBench-Long's clip-to-clip subject encoder."""
    return TimmDino(torch.load(weights, map_location="cpu"), "vit_base_patch14_dinov2").to(device).eval()


def dinov2_transform(n_px: int = 224):
    """VBench-Long's ``dinov2_transform``: bicubic resize of the shorter side to 256 (torchvision's default
    antialias), center crop ``n_px``, /255, ImageNet mean/std."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(n_px),
        transforms.Lambda(lambda x: x.float().div(255.0)),
        transforms.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    ])


class SubjectConsistency(Metric):
    spec = SPECS["subject_consistency"]

    def __init__(self, files: dict[str, Path], device: str, cfg):
        super().__init__(files, device, cfg)
        self.backend, repo = dino_backend(cfg.cache_dir, cfg.weights)
        self.model = load_dino(str(files["dino_vitb16"]), repo, device)

    def prepare(self, ctx: VideoContext, spans: list[Span]) -> None:
        from vbench.utils import dino_transform

        tf = dino_transform(224)
        todo = self._missing(ctx, "dino", {i for s in spans for i in range(s.start, s.end)})
        h, w = ctx.hw  # the transform scales the shorter side to 224
        long = int(224 * max(h, w) / min(h, w))
        for b in batched(todo, self.frames_per_forward(vit_tokens(224, long, 16))):
            x = tf(ctx.float_tchw(b)).to(self.device)
            with torch.no_grad(), self.amp():
                f = F.normalize(self.model(x).float(), dim=-1, p=2)
            for i, row in zip(b, f, strict=True):
                ctx.cache["dino"][i] = row

    def score(self, ctx: VideoContext, span: Span) -> float:
        self.check_span(span)
        total, n = consistency(torch.stack([ctx.cache["dino"][i] for i in range(span.start, span.end)]))
        return total / n
