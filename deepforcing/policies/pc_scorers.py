"""What ranks Participative Compression's candidates: one small object per rule, selected by name.

``compression=<name>`` (the sweep knob) and ``ParticipativeCompression(select=<name>)`` name the same
scorer. A scorer sees the policy, the layer's cache and the forward in flight, and returns one score
per candidate slot (``[len(cand)]``), or one per head and candidate (``[H, len(cand)]``) when the policy
selects per head. ``observe`` runs in every forward of every layer (H2O accumulates there).
A new rule is one class here, or in a plug-in module of the ``deepforcing.policies`` entry points.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from deepforcing.attention import key_importance
from deepforcing.errors import ConfigError
from deepforcing.seeding import hashed_generator

SCORERS: dict[str, type[CandidateScorer]] = {}


def register_scorer(cls: type[CandidateScorer]) -> type[CandidateScorer]:
    SCORERS[cls.name] = cls
    return cls


def scorer(name: str) -> CandidateScorer:
    from deepforcing.policies import _load

    _load()  # plug-in scorers register on import
    if name not in SCORERS:
        raise ConfigError(f"participative_compression: unknown select (candidate scorer) {name!r}; choose one of "
                          f"{', '.join(sorted(SCORERS))}")
    return SCORERS[name]()


class CandidateScorer:
    name: ClassVar[str]
    uses_keys: ClassVar[bool] = False  # wants the layer's keys at their current positions

    def observe(self, pc, layer: int, kv, step) -> None:
        pass

    def score(self, pc, layer: int, kv, step, cand: torch.Tensor, keys: torch.Tensor | None,
              per_head: bool) -> torch.Tensor:
        raise NotImplementedError


def _per_head(s: torch.Tensor, pc, per_head: bool) -> torch.Tensor:
    return s.expand(pc.geom.num_heads, -1) if per_head else s


@register_scorer
class Participative(CandidateScorer):
    """The paper's rule: how much the recent queries attend to each candidate (``score``, ``fusion``)."""

    name = "participative"
    uses_keys = True
    softmax_only = False

    def score(self, pc, layer, kv, step, cand, keys, per_head):
        q = pc.scoring_queries(layer, step)
        cd = cand.to(keys.device)
        rest = torch.ones(keys.shape[1], dtype=torch.bool, device=keys.device)
        rest[cd] = False
        mode = "softmax" if self.softmax_only else pc.score
        s = key_importance(q, keys.index_select(1, cd), mode=mode, fuse=pc.fusion,
                           heads="none" if per_head else "sum",
                           extra_keys=keys[:, rest] if mode == "softmax" else None)
        return self.pool(s.sum(0), pc, len(cand), per_head).float().cpu()  # summed over the batch

    def pool(self, s, pc, n, per_head):
        return s


@register_scorer
class SnapKV(Participative):
    """SnapKV-style: observation-window softmax scores, max-pooled over neighbouring tokens (``pool``)."""

    name = "snapkv"
    softmax_only = True

    def pool(self, s, pc, n, per_head):
        s = F.max_pool1d(s.reshape(-1, 1, s.shape[-1]), pc.pool, stride=1, padding=pc.pool // 2)
        return s.reshape(-1, n) if per_head else s.reshape(n)


@register_scorer
class RandomScores(CandidateScorer):
    """Scores drawn from N(0, 1), seeded by (seed, chunk, layer) (paper App. D)."""

    name = "random"

    def score(self, pc, layer, kv, step, cand, keys, per_head):
        gen = hashed_generator(pc.seed, pc.span.start, layer)
        return torch.randn((pc.geom.num_heads, len(cand)) if per_head else (len(cand),), generator=gen)


@register_scorer
class Recency(CandidateScorer):
    """The newest candidates first."""

    name = "recency"

    def score(self, pc, layer, kv, step, cand, keys, per_head):
        return _per_head(cand.float(), pc, per_head)


@register_scorer
class H2O(CandidateScorer):
    """H2O-style: attention mass accumulated over every forward since the token was written."""

    name = "h2o"

    def observe(self, pc, layer, kv, step):
        acc = kv.register_aux("h2o", torch.float32, device=kv.device)
        if kv.n == 0:
            return
        keys = kv.rotated(None, pc.key_positions(layer, kv, step))
        own = kv.staged_keys()
        acc[: kv.n] += key_importance(step.q, keys, mode="softmax", extra_keys=own).sum(0)

    def score(self, pc, layer, kv, step, cand, keys, per_head):
        return _per_head(kv.aux["h2o"][cand.to(kv.aux["h2o"].device)].float().cpu(), pc, per_head)
