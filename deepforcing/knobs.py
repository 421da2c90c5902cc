"""Sweep knobs -> policy settings.

The top-level knobs researchers sweep (``sink_ratio``, ``rope_align``, ``compression``, ``budget``,
``recent``) are mapped onto a preset's policy here, in the library, so the mapping is tested once
for every preset. A knob a preset cannot use is an error, never silently ignored.
"""

from __future__ import annotations

import math
from typing import Any

from deepforcing.errors import ConfigError
from deepforcing.policies.presets import resolve_preset

COMPRESSION = ("none", "participative", "random", "recency", "h2o", "snapkv")
ROPE_ALIGN = ("none", "paper", "code")
KNOB_TO_PARAM = {"sink_ratio": "sink_ratio", "rope_align": "align", "budget": "budget", "recent": "recent"}
USES = {  # which policies take each knob
    "sink_ratio": ("deep_sink", "participative_compression"),
    "rope_align": ("deep_sink", "participative_compression"),
    "budget": ("participative_compression",),
    "recent": ("participative_compression",),
}


def apply_knobs(preset: str, **knobs: Any) -> tuple[str, dict]:
    """(policy name, kwargs) for ``preset`` with the non-None ``knobs`` applied."""
    knobs = {k: v for k, v in knobs.items() if v is not None}
    policy, kwargs = resolve_preset(preset)
    compression = knobs.pop("compression", None)
    if compression is not None:
        if compression not in COMPRESSION:
            raise ConfigError(f"compression={compression!r}: choose one of {', '.join(COMPRESSION)}")
        if policy not in ("deep_sink", "participative_compression"):
            raise ConfigError(f"compression={compression!r} needs a Deep Sink / Deep Forcing preset, not {preset!r}")
        if compression == "none":
            keep = ("window", "sink", "sink_ratio", "align", "rotation")
            policy, kwargs = "deep_sink", {k: v for k, v in kwargs.items() if k in keep}
        else:
            if policy == "deep_sink":
                policy = "participative_compression"
                kwargs = {**resolve_preset("deep_forcing")[1], **kwargs}
            kwargs["select"] = "attention" if compression == "participative" else compression
    if "rope_align" in knobs and knobs["rope_align"] not in ROPE_ALIGN:
        raise ConfigError(f"rope_align={knobs['rope_align']!r}: choose one of {', '.join(ROPE_ALIGN)}")
    for knob, value in knobs.items():
        if knob not in KNOB_TO_PARAM:
            raise ConfigError(f"unknown knob {knob!r}")
        if policy not in USES[knob]:
            raise ConfigError(
                f"{knob}={value} has no effect on preset {preset!r} (policy {policy}); it applies to "
                f"{', '.join(USES[knob])} presets"
            )
        if knob == "sink_ratio":
            kwargs.pop("sink", None)
        kwargs[KNOB_TO_PARAM[knob]] = value
    return policy, kwargs


def latent_frames_for_seconds(seconds: float, fps: float, temporal_stride: int, chunk: int) -> int:
    """Latent frames for at least ``seconds`` of video: the fewest whole chunks whose
    ``stride * (T - 1) + 1`` pixel frames cover ``seconds * fps`` (5 s at 16 fps -> 21)."""
    if seconds <= 0:
        raise ConfigError(f"length_s must be positive, got {seconds}")
    pixels = math.ceil(seconds * fps - 1e-9)
    latents = math.ceil((pixels - 1) / temporal_stride) + 1
    return chunk * math.ceil(latents / chunk)
