"""KV-cache policies, one small file each, behind :class:`~deepforcing.policies.base.CachePolicy`.

``POLICIES`` is a lazy registry: a name maps to its class without importing it.
"""

from deepforcing.registry import Registry

POLICIES = Registry("cache policy")
POLICIES.register("full_cache", "deepforcing.policies.full_cache:FullCache")
POLICIES.register("rolling_window", "deepforcing.policies.rolling_window:RollingWindow")
POLICIES.register("attention_sink", "deepforcing.policies.attention_sink:AttentionSink")
POLICIES.register("deep_sink", "deepforcing.policies.deep_sink:DeepSink")
POLICIES.register("longlive", "deepforcing.policies.longlive:LongLive")
POLICIES.register("participative_compression", "deepforcing.policies.participative:ParticipativeCompression")
POLICIES.register("rolling_forcing", "deepforcing.policies.rolling_forcing:RollingForcingAnchor")


def build_policy(name: str, **kwargs):
    """Instantiate the policy ``name`` with its keyword arguments."""
    return POLICIES.get(name)(**kwargs)
