"""Participative Compression (with Deep Sink): prune the cache to the tokens recent queries attend to.

Budget ``N`` frames' worth of tokens after compression, of which the first ``S`` frames are the sink
and the last ``R`` frames (including the chunk being generated) are recent; the remaining
``C = N - R - S`` frames' worth of tokens (Top-C) are chosen among the candidates in between.

Compression triggers at the first denoising step of a chunk whose insertion would overflow the
window. Each layer decides on its own, from its own queries, one token set shared by all heads
(``heads="shared"``, as the released code) or one per head (``heads="per_head"``: the union stays in
the cache and a key mask hides each head's unselected tokens). Kept tokens keep their temporal
order; sink and recent tokens are never candidates.

Options:

- ``query_source``: ``both`` (the last ``R`` frames of queries seen in any forward: at compression
  time one clean past frame plus the chunk's noisy queries, the released code's buffer),
  ``denoise`` (only the chunk's noisy queries at the first step), ``past`` (the last ``R`` frames of
  clean commit-pass queries);
- ``score``: ``dot`` (raw rotated q.k logits) or ``softmax`` (attention probabilities normalised over
  all keys the queries see); ``fusion`` over queries: ``sum`` or ``max``;
- ``select`` (what ranks the candidates, :mod:`deepforcing.policies.pc_scorers`; the ``compression``
  sweep knob names the same): ``participative`` (the above), ``random`` (scores drawn from
  N(0, 1), paper App. D), ``recency`` (the newest candidates), ``h2o`` (attention mass accumulated over
  every forward since the token was written), ``snapkv`` (observation-window softmax scores,
  max-pooled over neighbouring tokens with kernel ``pool``);
- ``reuse_cap``: a token already chosen this many times is no longer a candidate (released code: 7);
- ``topc_align``: ``none`` (Top-C keep their absolute positions, the released code) or ``compact``
  (their frames are renumbered consecutively right before the recent frames: the paper's
  "temporal RoPE unification").

Sink alignment and rotation are Deep Sink's (``align``, ``rotation``); with ``code`` alignment the
sink moves to ``[P - N, P - N + S)`` at every compression.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

from deepforcing.cache import COMPRESSED, SINK, Geometry, KVCache, LayerKV
from deepforcing.errors import ConfigError
from deepforcing.policies import Preset, register
from deepforcing.policies.base import Context, FrameSpan, Step
from deepforcing.policies.deep_sink import DeepSink
from deepforcing.policies.pc_scorers import scorer

QUERY_SOURCES = ("both", "denoise", "past")
SCORES = ("dot", "softmax")
FUSIONS = ("sum", "max")
HEADS = ("shared", "per_head")
TOPC_ALIGN = ("none", "compact")
PAPER_PC = dict(window=21, sink=10, budget=16, recent=4, align="paper", topc_align="compact",
                query_source="both", score="dot", fusion="sum", heads="shared")


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"participative_compression: unknown {name} {value!r}; choose one of {', '.join(allowed)}")


@register
@dataclass(eq=False)
class ParticipativeCompression(DeepSink):
    name = "participative_compression"
    presets = {
        "deep_forcing": Preset(dict(PAPER_PC), "Deep Forcing paper defaults S=10, N=16, R=4, queries 'both', Top-C "
                               "unification"),
        "deep_forcing_code": Preset(dict(
            window=21, sink=10, budget=16, recent=4, align="code", rotation="delta", topc_align="none",
            query_source="both", score="dot", fusion="sum", heads="shared", reuse_cap=7),
            "released Deep Forcing code, commit ea9961a: sink [P-N, P-N+S), reuse cap 7, Top-C keep their "
            "positions, incremental bf16 sink rotation"),
        "pc_only_denoise": Preset(dict(PAPER_PC, query_source="denoise"), "Deep Forcing Table 5 'Only Denoising'"),
        "pc_only_past": Preset(dict(PAPER_PC, query_source="past"), "Deep Forcing Table 5 'Only Past'"),
        "pc_random": Preset(dict(PAPER_PC, select="random"), "Deep Forcing App. D random Top-C"),
        "pc_recency": Preset(dict(PAPER_PC, select="recency"), "ablation: keep the newest candidates"),
        "pc_h2o": Preset(dict(PAPER_PC, select="h2o"), "ablation: H2O-style accumulated attention"),
        "pc_snapkv": Preset(dict(PAPER_PC, select="snapkv"), "ablation: SnapKV-style pooled observation-window "
                                                             "scores"),
    }
    knobs = {**DeepSink.knobs, "budget": "budget", "recent": "recent"}
    sink: int | None = 10
    budget: int = 16
    recent: int = 4
    query_source: str = "both"
    score: str = "dot"
    fusion: str = "sum"
    heads: str = "shared"
    select: str = "participative"  # the candidate scorer (deepforcing.policies.pc_scorers); = compression knob
    reuse_cap: int | None = None
    topc_align: str = "none"
    pool: int = 7
    seed: int = 0

    def __post_init__(self):
        if self.sink is not None and self.sink_ratio is not None:
            self.sink = None  # a ratio given explicitly wins over the default sink size
        super().__post_init__()
        for name, allowed in [("query_source", QUERY_SOURCES), ("score", SCORES), ("fusion", FUSIONS),
                              ("heads", HEADS), ("topc_align", TOPC_ALIGN)]:
            _choice(name, getattr(self, name), allowed)
        self._scorer = scorer(self.select)
        if self.budget > self.window:
            raise ConfigError(f"participative_compression: budget {self.budget} exceeds the window {self.window}")
        if self.budget < self.sink + self.recent:
            raise ConfigError(
                f"participative_compression: budget {self.budget} < sink {self.sink} + recent {self.recent}; "
                "the budget must hold the sink and the recent frames"
            )
        if self.reuse_cap is not None and self.reuse_cap < 1:
            raise ConfigError(f"participative_compression: reuse_cap must be >= 1 or None, got {self.reuse_cap}")
        if self.pool < 1 or self.pool % 2 == 0:
            raise ConfigError(f"participative_compression: pool must be a positive odd kernel size, got {self.pool}")

    @classmethod
    def with_knob(cls, settings: dict[str, Any], knob: str, value: Any) -> tuple[str, dict[str, Any]]:
        if knob != "compression":
            return super().with_knob(settings, knob, value)
        if value == "none":  # Deep Sink alone: keep its settings
            return DeepSink.name, {k: v for k, v in settings.items() if k in {f.name for f in fields(DeepSink)}}
        scorer(value)  # unknown names fail here, listing the scorers
        return cls.name, {**settings, "select": value}

    @property
    def top_c(self) -> int:
        return self.budget - self.recent - self.sink

    def validate(self, geom: Geometry) -> None:
        super().validate(geom)
        if self.recent < geom.chunk_frames:
            raise ConfigError(
                f"participative_compression: recent {self.recent} < chunk {geom.chunk_frames}; the recent "
                "region includes the chunk being generated"
            )

    def reset(self, geom: Geometry) -> None:
        super().reset(geom)
        self.queries: list[torch.Tensor | None] = [None] * geom.num_layers
        self.compress_now = False
        self.selected: dict = {}  # layer 0's last compression
        self.selected_layers: list[dict] = [{} for _ in range(geom.num_layers)]  # every layer's last compression
        self.compressions = 0

    def room_frames(self, geom: Geometry) -> int:
        return 0  # the chunk is staged on a full window, then the cache is compressed

    def raw_keys(self) -> bool:
        return super().raw_keys() or (self.rotation == "read_time" and self.topc_align != "none")

    # --- membership ------------------------------------------------------------------------
    def make_room(self, cache: KVCache, span: FrameSpan) -> bool:
        # Count tokens, not frames: after a compression the Top-C tokens come from many frames.
        tpf = self.geom.tokens_per_frame
        self.compress_now = cache.layers[0].n + span.frames * tpf > self.window * tpf
        return self.compress_now

    def frames_after_insertion(self, cache: KVCache, span: FrameSpan) -> int:
        return self.budget

    def _remember_queries(self, layer: int, step: Step) -> None:
        if self.query_source == "denoise" or (self.query_source == "past" and not step.phase.is_commit):
            return
        keep = self.recent * self.geom.tokens_per_frame
        prev = self.queries[layer]
        q = step.q if prev is None else torch.cat([prev, step.q], dim=1)
        self.queries[layer] = q[:, -keep:]

    def key_positions(self, layer: int, kv: LayerKV, step: Step) -> torch.Tensor | None:
        """Temporal positions the cached keys hold right now (Deep Sink's alignment)."""
        return super().context(layer, kv, step).k_time

    def scoring_queries(self, layer: int, step: Step) -> torch.Tensor:
        if self.query_source == "denoise":
            return step.q
        return self.queries[layer]

    def context(self, layer: int, kv: LayerKV, step: Step) -> Context:
        self._remember_queries(layer, step)
        self._scorer.observe(self, layer, kv, step)
        if step.phase.first_step and self.compress_now:
            self._compress(layer, kv, step)
        ctx = super().context(layer, kv, step)
        if self.heads == "per_head":
            hidden = kv.register_aux("head_hidden", torch.bool, width=self.geom.num_heads)[: kv.n].T
            own = torch.ones(self.geom.num_heads, kv.pending, dtype=torch.bool)
            ctx.mask = torch.cat([~hidden, own], dim=1)
        return ctx

    def end_chunk(self, cache: KVCache, span: FrameSpan) -> None:
        super().end_chunk(cache, span)
        self.compress_now = False

    # --- positions -------------------------------------------------------------------------
    def tail_positions(self, layer: int, kv: LayerKV) -> torch.Tensor:
        t = kv.frame[: kv.n].clone()
        if self.topc_align == "compact":
            tags = kv.tags()
            top = tags == COMPRESSED
            if top.any():
                recent = t[(tags != SINK) & ~top]
                first_recent = int(recent.min()) if recent.numel() else self.span.start
                frames, ordinal = torch.unique(t[top], return_inverse=True)
                t[top] = first_recent - len(frames) + ordinal
        return t

    # --- compression -----------------------------------------------------------------------
    def _compress(self, layer: int, kv: LayerKV, step: Step) -> None:
        tpf = self.geom.tokens_per_frame
        n, pending = kv.n, kv.pending
        keep_recent = self.recent * tpf - pending  # cached tokens inside the recent region
        tags = kv.tags()
        slots = torch.arange(n)
        is_sink = tags == SINK
        is_recent = slots >= n - keep_recent
        cand = slots[~is_sink & ~is_recent]
        if self.reuse_cap is not None:
            reuse = kv.register_aux("reuse")
            cand = cand[reuse[cand] < self.reuse_cap]
        c_tokens = min(self.top_c * tpf, len(cand))
        keys = None
        if self._scorer.uses_keys:  # the cached keys at the positions they hold now, then the staged ones
            keys = torch.cat([kv.rotated(None, self.key_positions(layer, kv, step)), kv.staged_keys()], dim=1)
        scores = self._scorer.score(self, layer, kv, step, cand, keys, per_head=self.heads == "per_head")
        if self.heads == "per_head":
            per_head = torch.topk(scores, c_tokens, dim=-1).indices  # [H, C]
            chosen = torch.zeros(len(cand), dtype=torch.bool)
            chosen[per_head.flatten()] = True
            top = cand[chosen]
            head_sel = torch.zeros(len(cand), self.geom.num_heads, dtype=torch.bool)
            head_sel[per_head.T, torch.arange(self.geom.num_heads)] = True
            # a kept token is hidden from the heads that did not choose it (new tokens: visible)
            kv.register_aux("head_hidden", torch.bool, width=self.geom.num_heads)[cand] = ~head_sel
        else:
            top = cand[torch.topk(scores, c_tokens).indices.sort().values]
        keep = torch.sort(torch.cat([slots[is_sink], top, slots[is_recent]])).values
        kv.mark(top, COMPRESSED)
        if self.reuse_cap is not None:
            kv.aux["reuse"][top] += 1
        info = {"augmented_index": top.tolist(), "frames": kv.frame[top].tolist(),
                "candidates": len(cand), "augmented_tokens": n + pending}
        kv.keep(keep)
        if self.reuse_cap is not None:
            info["reuse"] = kv.aux["reuse"][: kv.n].tolist()  # per kept cached slot, after this selection
        self.selected_layers[layer] = info
        if layer == 0:
            self.selected = info
            self.compressions += 1

    def diagnostics(self, cache: KVCache, span: FrameSpan) -> dict:
        d = super().diagnostics(cache, span)
        d.update(compressed=self.compress_now, topc=self.selected if self.compress_now else None,
                 topc_layers=[dict(x) for x in self.selected_layers] if self.compress_now else None)
        return d
