"""Self-Forcing's default cache: every frame is kept, up to the training window."""

from __future__ import annotations

from deepforcing.cache import Geometry
from deepforcing.errors import ConfigError
from deepforcing.policies.base import CachePolicy


class FullCache(CachePolicy):
    name = "full_cache"

    def __init__(self, window: int = 21):
        super().__init__()
        self.window = window

    def capacity_frames(self, geom: Geometry) -> int:
        return self.window

    def validate(self, geom: Geometry) -> None:
        super().validate(geom)
        if geom.num_frames > self.window:
            raise ConfigError(
                f"full_cache holds {self.window} frames but the rollout asks for {geom.num_frames}; "
                "use rolling_window (or another policy) to generate past the window"
            )
