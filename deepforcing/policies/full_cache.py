"""Self-Forcing's default cache: every frame is kept, up to the training window."""

from __future__ import annotations

from dataclasses import dataclass

from deepforcing.cache import Geometry
from deepforcing.errors import ConfigError
from deepforcing.policies import Preset, register
from deepforcing.policies.base import CachePolicy


@register
@dataclass(eq=False)
class FullCache(CachePolicy):
    name = "full_cache"
    presets = {"full_cache": Preset(dict(window=21), "Self-Forcing configs/self_forcing_dmd.yaml (local_attn_size -1: "
                                                     "21 frames, never evicts)")}
    window: int = 21

    def capacity_frames(self, geom: Geometry) -> int:
        return self.window

    def validate(self, geom: Geometry) -> None:
        super().validate(geom)
        if geom.num_frames > self.window:
            raise ConfigError(
                f"full_cache holds {self.window} frames but the rollout asks for {geom.num_frames}; "
                "use rolling_window (or another policy) to generate past the window"
            )
