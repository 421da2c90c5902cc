"""Overall consistency: ViCLIP (vbench's vendored model) video embedding of the clip's 8 middle frames
against the prompt's text embedding; cosine of the two L2-normalised vectors."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from .. import protocol
from ..protocol import Span
from ..specs import SPECS
from ..vbench_compat import quiet_viclip_import
from .base import Metric, VideoContext


@functools.lru_cache(maxsize=2)
def load_viclip(weights: str, bpe: str, device: str):
    """(tokenizer, ViCLIP in eval mode) with ``weights``, kept loaded for the process. Built without the
    random initialisation the checkpoint overwrites (``fastload``): the same weights as
    ``load_viclip_reference``, which it falls back to on anything unexpected."""
    ViCLIP = quiet_viclip_import()
    from vbench.third_party.ViCLIP.simple_tokenizer import SimpleTokenizer

    from ..fastload import load_into, meta_params

    tokenizer = SimpleTokenizer(bpe)
    try:
        sd = torch.load(weights, map_location="cpu")["model"]  # what ViCLIP's constructor loads (strict)
        with meta_params():
            model = ViCLIP(tokenizer=tokenizer, pretrain=None)
        model = load_into(model, sd)
        model.is_pretrain = weights
    except Exception:
        return load_viclip_reference(weights, bpe, device)
    return tokenizer, model.to(device).eval()


def load_viclip_reference(weights: str, bpe: str, device: str):
    """ViCLIP as vbench builds it (the constructor loads ``weights``), in eval mode."""
    ViCLIP = quiet_viclip_import()
    from vbench.third_party.ViCLIP.simple_tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer(bpe)
    return tokenizer, ViCLIP(tokenizer=tokenizer, pretrain=weights).to(device).eval()


class OverallConsistency(Metric):
    spec = SPECS["overall_consistency"]

    def __init__(self, files: dict[str, Path], device: str, cfg):
        super().__init__(files, device, cfg)
        self.tokenizer, self.model = load_viclip(str(files["viclip"]), str(files["viclip_bpe"]), device)
        self._text: dict[str, torch.Tensor] = {}

    def text_features(self, prompt: str) -> torch.Tensor:
        if prompt not in self._text:
            with torch.no_grad():
                t = self.model.encode_text(prompt).float()
                self._text[prompt] = t / t.norm(dim=-1, keepdim=True)
        return self._text[prompt]

    def prepare(self, ctx: VideoContext, spans: list[Span]) -> None:
        from vbench.utils import clip_transform

        tf = clip_transform(224)
        cache = ctx.cache.setdefault("viclip", {})
        for s in spans:
            idx = tuple(protocol.middle_indices(s.start, s.end, 8))
            if idx in cache:
                continue
            # vbench resizes the uint8 frames (read_frames_decord_by_fps), then divides by 255
            x = tf(ctx.take(idx).permute(0, 3, 1, 2)).to(self.device)
            with torch.no_grad(), self.amp():
                f = self.model.encode_vision(x.unsqueeze(0), test=True).float()
            cache[idx] = f / f.norm(dim=-1, keepdim=True)

    def score(self, ctx: VideoContext, span: Span) -> float:
        self.check_span(span)
        v = ctx.cache["viclip"][tuple(protocol.middle_indices(span.start, span.end, 8))]
        return float((v @ self.text_features(ctx.prompt).T)[0][0])
