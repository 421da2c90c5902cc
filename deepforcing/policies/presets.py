"""Named policy settings: every baseline and Deep Forcing variant, with where its numbers come from.

Presets are declared beside their policy class (``presets = {...}``); this module is the read-only view
over the catalogue. ``build_preset(name, **overrides)`` applies settings on top.
"""

from __future__ import annotations

from typing import Any

from deepforcing.errors import ConfigError
from deepforcing.policies import build_policy, preset, preset_names


def resolve_preset(name: str, **overrides: Any) -> tuple[str, dict]:
    """(policy name, settings) of preset ``name`` with ``overrides`` applied. ``None`` overrides are ignored.
    A sweep knob among the overrides (``sink_ratio``) is applied the way the policy applies it."""
    cls, p = preset(name)
    policy, settings = cls.name, dict(p.settings)
    for key, value in overrides.items():
        if value is None:
            continue
        if key in cls.knobs and key not in settings and cls.knobs[key] == key:
            policy, settings = cls.with_knob(settings, key, value)
        else:
            settings[key] = value
    return policy, settings


def build_preset(name: str, **overrides: Any):
    policy, settings = resolve_preset(name, **overrides)
    try:
        return build_policy(policy, **settings)
    except ConfigError as e:
        raise ConfigError(f"preset {name!r}: {e}") from None


def sources() -> dict[str, str]:
    return {n: preset(n)[1].source for n in preset_names()}


def presets() -> dict[str, tuple[str, dict]]:
    return {n: (preset(n)[0].name, dict(preset(n)[1].settings)) for n in preset_names()}


__all__ = ["build_preset", "resolve_preset", "preset_names", "presets", "sources"]
