"""Named policy settings: every baseline and Deep Forcing variant, with where its numbers come from.

A preset is a policy name plus keyword arguments. ``build_preset(name, **overrides)`` applies sweep
overrides on top (``sink_ratio`` replaces a preset's ``sink``). Sources are in ``SOURCES``.
"""

from __future__ import annotations

from deepforcing.errors import ConfigError
from deepforcing.policies import POLICIES, build_policy

PAPER_DS = dict(window=21, sink=10)
PAPER_PC = dict(window=21, sink=10, budget=16, recent=4, align="paper", topc_align="compact",
                query_source="both", score="dot", fusion="sum", heads="shared")

PRESETS: dict[str, tuple[str, dict]] = {
    "full_cache": ("full_cache", dict(window=21)),
    "rolling_window": ("rolling_window", dict(window=21)),
    "self_forcing_sink": ("attention_sink", dict(sink=3, window=21, positions="absolute")),
    "streamingllm": ("attention_sink", dict(sink=3, window=21, positions="cache_relative")),
    "deep_sink": ("deep_sink", dict(**PAPER_DS, align="paper")),
    "deep_sink_no_rope": ("deep_sink", dict(**PAPER_DS, align="none")),
    "deep_sink_only": ("deep_sink", dict(window=21, sink=14, align="code", rotation="delta")),
    "deep_forcing": ("participative_compression", dict(PAPER_PC)),
    "deep_forcing_code": ("participative_compression", dict(
        window=21, sink=10, budget=16, recent=4, align="code", rotation="delta", topc_align="none",
        query_source="both", score="dot", fusion="sum", heads="shared", reuse_cap=7)),
    "pc_only_denoise": ("participative_compression", dict(PAPER_PC, query_source="denoise")),
    "pc_only_past": ("participative_compression", dict(PAPER_PC, query_source="past")),
    "pc_random": ("participative_compression", dict(PAPER_PC, select="random")),
    "pc_recency": ("participative_compression", dict(PAPER_PC, select="recency")),
    "pc_h2o": ("participative_compression", dict(PAPER_PC, select="h2o")),
    "pc_snapkv": ("participative_compression", dict(PAPER_PC, select="snapkv")),
    "rolling_forcing": ("rolling_forcing", dict(anchor=3, max_attention=21, capacity=24,
                                                commit_anchor_quirk=True, window_noise_quirk=True)),
    "longlive": ("longlive", dict(sink=3, window=12, global_sink=True)),
}

SOURCES = {
    "full_cache": "Self-Forcing configs/self_forcing_dmd.yaml (local_attn_size -1: 21 frames, never evicts)",
    "rolling_window": "Self-Forcing with local_attn_size=21, sink_size=0: the 'Self Forcing' long-video rows "
                      "of Deep Forcing / LongLive / Rolling Forcing (inferred; no sink)",
    "self_forcing_sink": "Self-Forcing sink_size=3 at absolute positions (Deep Forcing App. A 'LongLive-style sink')",
    "streamingllm": "StreamingLLM: 3-frame sink, positions within the cache",
    "deep_sink": "Deep Forcing Table 4 'SF+DS' (S=10, W=21), sink contiguous with the tail (paper Eq. 3-6)",
    "deep_sink_no_rope": "Deep Sink without RoPE re-alignment (paper App. A ablation)",
    "deep_sink_only": "released Deep Forcing DS_inference.sh (S=14), released-code sink rule and bf16 delta rotation",
    "deep_forcing": "Deep Forcing paper defaults S=10, N=16, R=4, queries 'both', Top-C unification",
    "deep_forcing_code": "released Deep Forcing code, commit ea9961a: sink [P-N, P-N+S), reuse cap 7, "
                         "Top-C keep their positions, incremental bf16 sink rotation",
    "pc_only_denoise": "Deep Forcing Table 5 'Only Denoising'",
    "pc_only_past": "Deep Forcing Table 5 'Only Past'",
    "pc_random": "Deep Forcing App. D random Top-C",
    "pc_recency": "ablation: keep the newest candidates",
    "pc_h2o": "ablation: H2O-style accumulated attention",
    "pc_snapkv": "ablation: SnapKV-style pooled observation-window scores",
    "rolling_forcing": "Rolling Forcing (TencentARC/RollingForcing a1477d0): 3-frame anchor re-indexed before the "
                       "working frames, 24-frame cache, 21-frame attention, reference quirks on; run it with "
                       "RolloutConfig(rollout='rolling', steps=(1000, 800, 600, 400, 200))",
    "longlive": "LongLive-1.0 (NVlabs/LongLive 2462895) configs/longlive_inference.yaml: local_attn_size 12, "
                "sink_size 3, global_sink true; KV re-cache on prompt switch",
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def resolve_preset(name: str, **overrides) -> tuple[str, dict]:
    """(policy name, kwargs) of preset ``name`` with ``overrides`` applied. ``None`` overrides are ignored."""
    if name not in PRESETS:
        if name in POLICIES:
            policy, kwargs = name, {}
        else:
            raise ConfigError(f"unknown policy preset {name!r}; known presets: {', '.join(preset_names())}")
    else:
        policy, kwargs = PRESETS[name]
        kwargs = dict(kwargs)
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "sink_ratio":
            kwargs.pop("sink", None)
        kwargs[key] = value
    return policy, kwargs


def build_preset(name: str, **overrides):
    policy, kwargs = resolve_preset(name, **overrides)
    try:
        return build_policy(policy, **kwargs)
    except TypeError as e:
        raise ConfigError(f"preset {name!r} ({policy}) does not take these settings: {e}") from None
