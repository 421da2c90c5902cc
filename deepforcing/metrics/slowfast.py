"""VBench-Long's optional slow-fast fusion for subject / background consistency.

fused = w_inclip * in-clip score + w_clip2clip * mapped clip-to-clip score, or the in-clip score alone
when the mapped score is 0 (vbench2_beta_long ``fuse_inclip_clip2clip``). The clip-to-clip score applies
the first/previous-frame consistency formula to the first frame of every clip; the mapping is VBench's
piecewise-linear table (``configs/{subject,background}_mapping_table.yaml``: ``{clip2clip: in-clip}``).

First-frame encoders (``SlowFastConfig``): subject DINOv2 ViT-B/14 with VBench-Long's ``dinov2_transform``
(its default) or the dimension's DINO; background the dimension's CLIP ViT-B/32 (VBench-Long's ``clip``
choice; its default, DreamSim, is not available). VBench-Long re-encodes the first frames into an mp4
before scoring them; we use the decoded frames themselves.
"""

from __future__ import annotations

from bisect import bisect_left

import torch

from deepforcing.errors import ConfigError

from .dims.base import consistency


def map_score(table: dict[float, float], x: float) -> float:
    keys = sorted(table)
    i = bisect_left(keys, x)
    if i == 0:
        return float(table[keys[0]])
    if i == len(keys):
        return float(table[keys[-1]])
    k0, k1 = keys[i - 1], keys[i]
    return float(table[k0] + (table[k1] - table[k0]) * (x - k0) / (k1 - k0))


def fuse(metric, ctx, out, cfg) -> dict:
    import yaml

    sf = cfg.slow_fast
    path = sf.mapping_tables.get(metric.spec.name)
    if not path:
        raise ConfigError(
            f"slow_fast.enabled needs slow_fast.mapping_tables[{metric.spec.name!r}]: the path of VBench's "
            "configs/subject_mapping_table.yaml or background_mapping_table.yaml (GitHub Vchitect/VBench, "
            "vbench2_beta_long/configs)."
        )
    with open(path) as f:
        table = {float(k): float(v) for k, v in yaml.safe_load(f).items()}
    firsts = [c["start_frame"] for c in out.clips]
    result = {"inclip": out.score, "clip2clip": None, "mapped": 0.0, "fused": out.score,
              "encoder": metric.spec.weights[0]}
    if len(firsts) < 2:  # vbench skips videos with a single clip
        return result
    if metric.spec.name == "subject_consistency" and sf.subject_encoder == "dinov2":
        feats = dinov2_features(metric, ctx, firsts)
        result["encoder"] = "dinov2_vitb14"
    else:
        key = "dino" if metric.spec.name == "subject_consistency" else metric.key
        feats = torch.stack([ctx.cache[key][i] for i in firsts])
    feats = torch.nn.functional.normalize(feats, dim=-1, p=2)
    total, n = consistency(feats)
    c2c = total / n
    mapped = map_score(table, c2c)
    fused = out.score * sf.w_inclip + mapped * sf.w_clip2clip if mapped != 0.0 else out.score
    result.update(clip2clip=c2c, mapped=mapped, fused=fused)
    return result


def dinov2_features(metric, ctx, frames: list[int]) -> torch.Tensor:
    """DINOv2 CLS features of ``frames`` (cached per frame in ``ctx.cache["dinov2"]``)."""
    from .dims.base import batched, frames_per_forward, vit_tokens
    from .dims.subject import dinov2_transform, load_dinov2

    model = load_dinov2(str(metric.files["dinov2_vitb14"]), metric.device)
    cache = ctx.cache.setdefault("dinov2", {})
    tf = dinov2_transform(224)
    n = frames_per_forward(metric.cfg, metric.device, vit_tokens(224, 224, 14))  # 224 center crop, patches of 14
    for b in batched(sorted({i for i in frames if i not in cache}), n):
        with torch.no_grad():
            f = model(tf(ctx.float_tchw(b)).to(metric.device))
        for i, row in zip(b, f, strict=True):
            cache[i] = row
    return torch.stack([cache[i] for i in frames])


__all__ = ["fuse", "map_score"]
