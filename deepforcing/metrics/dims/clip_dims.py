"""CLIP-based dimensions: background consistency (ViT-B/32), aesthetic quality (ViT-L/14 + LAION head),
and the CLIP text-video score of VBench's competition aggregation (ViT-B/32, 8 middle frames).

Models are OpenAI CLIP loaded with ``clip.load`` (the openai-clip package vbench uses), so the network,
its fp16-on-GPU behaviour and ``vbench.utils.clip_transform`` preprocessing are VBench's own. One model
instance and one set of per-frame embeddings are shared by background consistency and CLIP score.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import protocol
from ..protocol import Span
from ..specs import SPECS
from .base import Metric, VideoContext, batched, consistency, gpu_autocast, vit_tokens


@functools.lru_cache(maxsize=4)
def load_clip(path: str, device: str, fp16_on_cuda: bool = True):
    """The model ``load_clip_reference`` gives (same weights, same dtypes), built without the random
    initialisation that the checkpoint then overwrites (``fastload``); falls back to the reference loader
    on anything unexpected. Kept loaded for the process."""
    import clip

    from ..fastload import load_into, meta_params

    try:
        try:
            sd = torch.jit.load(path, map_location="cpu").state_dict()
        except RuntimeError:  # a plain state dict
            sd = torch.load(path, map_location="cpu")
        orig = clip.model.CLIP.load_state_dict
        # build_model (clip's own: architecture from the state dict, fp16 conversion) then loads the weights
        clip.model.CLIP.load_state_dict = lambda self, s, strict=True: load_into(self, s)
        try:
            with meta_params():
                model = clip.model.build_model(dict(sd)).to(device)
        finally:
            clip.model.CLIP.load_state_dict = orig
    except Exception:
        return load_clip_reference(path, device, fp16_on_cuda)
    if str(device) == "cpu" or not fp16_on_cuda:
        model.float()  # clip.load does this on CPU
    return model.eval()


def load_clip_reference(path: str, device: str, fp16_on_cuda: bool = True):
    """``clip.load`` on a local file (TorchScript archive as OpenAI ships it, or a plain state dict)."""
    import clip

    try:
        model, _ = clip.load(path, device=device)
    except Exception:  # clip.load's state-dict fallback reads an unrewound handle; load it ourselves
        sd = torch.load(path, map_location="cpu")
        model = clip.model.build_model(sd).to(device)
        if str(device) == "cpu":
            model.float()
    if str(device) != "cpu" and not fp16_on_cuda:
        model.float()
    return model.eval()


def _transform():
    from vbench.utils import clip_transform

    return clip_transform(224)


def clip_tokens(model) -> int:
    """Tokens per frame of a CLIP image tower on its 224 x 224 center crop."""
    return vit_tokens(224, 224, model.visual.conv1.kernel_size[0])


def encode_frames(model, ctx: VideoContext, key: str, idx, batch_size: int, device: str, cfg=None) -> None:
    """Cache L2-normalised CLIP image embeddings of frames ``idx`` under ``ctx.cache[key]``, ``batch_size``
    frames per forward."""
    todo = [i for i in sorted(set(idx)) if i not in ctx.cache.setdefault(key, {})]
    tf = _transform()
    for b in batched(todo, batch_size):
        x = tf(ctx.float_tchw(b)).to(device)
        with torch.no_grad(), gpu_autocast(cfg, device):
            f = model.encode_image(x)
        for i, row in zip(b, f, strict=True):
            ctx.cache[key][i] = row


class BackgroundConsistency(Metric):
    spec = SPECS["background_consistency"]

    def __init__(self, files: dict[str, Path], device: str, cfg):
        super().__init__(files, device, cfg)
        self.model = load_clip(str(files["clip_vit_b32"]), device, cfg.clip_fp16_on_cuda)
        self.key = f"clip_img:{files['clip_vit_b32']}"

    def prepare(self, ctx: VideoContext, spans: list[Span]) -> None:
        encode_frames(self.model, ctx, self.key, {i for s in spans for i in range(s.start, s.end)},
                      self.frames_per_forward(clip_tokens(self.model)), self.device, self.cfg)

    def features(self, ctx: VideoContext, idx) -> torch.Tensor:
        return F.normalize(torch.stack([ctx.cache[self.key][i] for i in idx]), dim=-1, p=2)

    def score(self, ctx: VideoContext, span: Span) -> float:
        self.check_span(span)
        total, n = consistency(self.features(ctx, range(span.start, span.end)))
        return total / n


class AestheticQuality(Metric):
    spec = SPECS["aesthetic_quality"]

    def __init__(self, files: dict[str, Path], device: str, cfg):
        super().__init__(files, device, cfg)
        self.model = load_clip(str(files["clip_vit_l14"]), device, cfg.clip_fp16_on_cuda)
        head = torch.nn.Linear(768, 1)
        head.load_state_dict(torch.load(files["aesthetic_head"], map_location="cpu"))
        self.head = head.to(device).eval()

    def prepare(self, ctx: VideoContext, spans: list[Span]) -> None:
        key = "aesthetic"
        todo = self._missing(ctx, key, {i for s in spans for i in range(s.start, s.end)})
        tf = _transform()
        for b in batched(todo, self.frames_per_forward(clip_tokens(self.model))):
            x = tf(ctx.float_tchw(b)).to(self.device)
            with torch.no_grad(), self.amp():
                f = F.normalize(self.model.encode_image(x).to(torch.float32), dim=-1, p=2)
            with torch.no_grad():
                s = self.head(f).squeeze(dim=-1)
            for i, v in zip(b, s, strict=True):
                ctx.cache[key][i] = v

    def score(self, ctx: VideoContext, span: Span) -> float:
        self.check_span(span)
        s = torch.stack([ctx.cache["aesthetic"][i] for i in range(span.start, span.end)]) / 10
        return float(torch.mean(s, dim=0))

    def clip_details(self, ctx: VideoContext, span: Span) -> dict:
        """LAION head output / 10 for every frame of the clip, in frame order."""
        return {"frame_aesthetic": [float(ctx.cache["aesthetic"][i]) / 10 for i in range(span.start, span.end)]}


class ClipScore(Metric):
    """Mean cosine between the prompt's CLIP text embedding and each of the 8 middle frames' image
    embeddings (the frames ViCLIP sees), as VBench's competition text alignment uses."""

    spec = SPECS["clip_score"]

    def __init__(self, files: dict[str, Path], device: str, cfg):
        super().__init__(files, device, cfg)
        self.model = load_clip(str(files["clip_vit_b32"]), device, cfg.clip_fp16_on_cuda)
        self.key = f"clip_img:{files['clip_vit_b32']}"
        self._text: dict[str, torch.Tensor] = {}

    def text_features(self, prompt: str) -> torch.Tensor:
        if prompt not in self._text:
            import clip

            tok = clip.tokenize([prompt], truncate=True).to(self.device)
            with torch.no_grad():
                self._text[prompt] = F.normalize(self.model.encode_text(tok).float(), dim=-1)
        return self._text[prompt]

    def prepare(self, ctx: VideoContext, spans: list[Span]) -> None:
        idx = {i for s in spans for i in protocol.middle_indices(s.start, s.end, 8)}
        encode_frames(self.model, ctx, self.key, idx, self.frames_per_forward(clip_tokens(self.model)), self.device,
                      self.cfg)

    def score(self, ctx: VideoContext, span: Span) -> float:
        self.check_span(span)
        img = torch.stack([ctx.cache[self.key][i] for i in protocol.middle_indices(span.start, span.end, 8)])
        img = F.normalize(img.float(), dim=-1)
        return float((img @ self.text_features(ctx.prompt).T).mean())
