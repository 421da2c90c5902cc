"""Sweep knobs -> policy settings.

The top-level knobs researchers sweep (``sink_ratio``, ``rope_align``, ``compression``, ``budget``,
``recent``) are applied to a preset's settings here, in the library, so the mapping is tested once for
every preset. Which policy takes which knob, and how, is declared by the policy class itself
(``knobs`` and ``with_knob``). A knob a preset cannot use is an error, never silently ignored.
"""

from __future__ import annotations

import math
from typing import Any

from deepforcing.errors import ConfigError
from deepforcing.policies import policies_using, policy_class, preset

#: The top-level sweep knobs (Hydra keys); ``compression`` first, since it may change the policy.
KNOBS = ("compression", "sink_ratio", "rope_align", "budget", "recent")


def apply_knobs(preset_name: str, *, base: dict | None = None, **knobs: Any) -> tuple[str, dict]:
    """(policy name, settings) for ``preset_name``, its settings changed by ``base`` (settings given
    field by field), with the non-None ``knobs`` applied."""
    unknown = set(knobs) - set(KNOBS)
    if unknown:
        raise ConfigError(f"unknown knob(s) {sorted(unknown)}; the sweep knobs are {', '.join(KNOBS)}")
    cls, p = preset(preset_name)
    name, settings = cls.name, {**p.settings, **(base or {})}
    for knob in KNOBS:
        value = knobs.get(knob)
        if value is None:
            continue
        cls = policy_class(name)
        if knob not in cls.knobs:
            raise ConfigError(
                f"{knob}={value} has no effect on preset {preset_name!r} (policy {name}); it applies to "
                f"{', '.join(policies_using(knob))} presets"
            )
        name, settings = cls.with_knob(settings, knob, value)
    return name, settings


def latent_frames_for_seconds(seconds: float, fps: float, temporal_stride: int, chunk: int) -> int:
    """Latent frames for at least ``seconds`` of video: the fewest whole chunks whose
    ``stride * (T - 1) + 1`` pixel frames cover ``seconds * fps`` (5 s at 16 fps -> 21)."""
    if seconds <= 0:
        raise ConfigError(f"length_s must be positive, got {seconds}")
    pixels = math.ceil(seconds * fps - 1e-9)
    latents = math.ceil((pixels - 1) / temporal_stride) + 1
    return chunk * math.ceil(latents / chunk)
