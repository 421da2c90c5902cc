"""VBench-Long's optional slow-fast fusion for subject / background consistency.

fused = w_inclip * in-clip score + w_clip2clip * mapped clip-to-clip score, or the in-clip score alone
when the mapped score is 0 (vbench2_beta_long ``fuse_inclip_clip2clip``). The clip-to-clip score applies
the first/previous-frame consistency formula to the first frame of every clip; the mapping is VBench's
piecewise-linear table (``configs/{subject,background}_mapping_table.yaml``: ``{clip2clip: in-clip}``).

Deviation: VBench encodes those first frames with DINOv2 ViT-B/14 (subject) and DreamSim (background);
we use the dimension's own encoder (DINO ViT-B/16 / CLIP ViT-B/32), so fused numbers are not VBench's.
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
    key = "dino" if metric.spec.name == "subject_consistency" else metric.key
    feats = torch.stack([ctx.cache[key][i] for i in firsts])
    feats = torch.nn.functional.normalize(feats, dim=-1, p=2)
    total, n = consistency(feats)
    c2c = total / n
    mapped = map_score(table, c2c)
    fused = out.score * sf.w_inclip + mapped * sf.w_clip2clip if mapped != 0.0 else out.score
    result.update(clip2clip=c2c, mapped=mapped, fused=fused)
    return result


__all__ = ["fuse", "map_score"]
