"""Experiment loggers. Local results in the store are the source of truth; W&B mirrors them.

One W&B run per sweep point (group = sweep, job_type = method, config = the resolved settings):
per-chunk cache diagnostics, per-segment metric curves, summary metrics, a per-video table and the
video paths. ``mode="online"`` falls back to ``offline`` when no API key is configured; any W&B
error is reported once and disables logging for the point, never the run.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)
MODES = ("online", "offline", "disabled")


class NullLogger:
    def start(self, key: str, config: dict) -> None: ...
    def chunk(self, video: str, event: Any) -> None: ...
    def video(self, video: str, record: dict, path: Any) -> None: ...
    def finish(self, summary: dict) -> None: ...
    def fail(self, error: str) -> None: ...


def _base_url() -> str:
    from wandb.sdk import wandb_setup

    return wandb_setup.singleton().settings.base_url


def _has_credentials() -> bool:
    """Whether ``wandb.init`` would find credentials for the base URL; prints nothing, no network."""
    try:
        from wandb.sdk.lib import wbauth

        return wbauth.authenticate_session(host=_base_url(), source="deepforcing", prompt=False,
                                           update_session=False) is not None
    except Exception:
        return bool(os.environ.get("WANDB_API_KEY"))


class WandbLogger(NullLogger):
    def __init__(self, project: str = "deepforcing", group: str = "default", mode: str = "offline",
                 dir: str | os.PathLike | None = None, entity: str | None = None, tags: tuple[str, ...] = ()):
        if mode not in MODES:
            from deepforcing.errors import ConfigError

            raise ConfigError(f"logger mode {mode!r}: choose one of {', '.join(MODES)}")
        if mode == "online" and not _has_credentials():
            log.warning("W&B: not logged in, logging offline (sync later with `wandb sync`)")
            mode = "offline"
        self.project, self.group, self.mode, self.dir, self.entity, self.tags = project, group, mode, dir, entity, tags
        self.run = None
        self._step = 0
        self._rows: list[list] = []

    def _guard(self, what: str, fn, *args) -> None:
        if self.run is None:
            return
        try:
            fn(*args)
        except Exception as e:  # W&B must never cost local results
            log.warning("W&B %s failed (%s: %s); logging disabled for this point", what, type(e).__name__, e)
            try:
                self.run.finish(exit_code=1)
            except Exception:
                pass
            self.run = None

    def start(self, key: str, config: dict) -> None:
        try:
            import wandb

            if self.dir is not None:
                os.makedirs(self.dir, exist_ok=True)
            policy = config.get("policy", {})
            self.run = wandb.init(
                project=self.project, entity=self.entity, group=self.group, job_type=config.get("method", "point"),
                name=f"{config.get('method', 'point')}-{key[:8]}", config={**config, "key": key}, dir=self.dir,
                mode=self.mode, tags=list(self.tags) + [policy.get("policy", "")], reinit="finish_previous",
                settings=wandb.Settings(console="off", x_disable_stats=True),
            )
            self.run.define_metric("chunk/step")
            self.run.define_metric("chunk/*", step_metric="chunk/step")
            self.run.define_metric("segment/t_s")
            self.run.define_metric("segment/*", step_metric="segment/t_s")
        except Exception as e:
            log.warning("W&B init failed (%s: %s); continuing without it", type(e).__name__, e)
            self.run = None
        self._step, self._rows = 0, []

    def chunk(self, video: str, event: Any) -> None:
        d = event.diagnostics
        row = {"chunk/step": self._step, "chunk/index": event.index, "chunk/seconds": event.seconds}
        for k in ("cache_frames", "cache_tokens", "tokens_sink", "tokens_compressed", "tokens_recent", "tokens_anchor"):
            if k in d:
                row[f"chunk/{k}"] = d[k]
        self._step += 1
        self._guard("log", self.run.log if self.run else None, row)

    def video(self, video: str, record: dict, path: Any) -> None:
        dims = ((record.get("metrics") or {}).get("dimensions")) or {}
        for name, dim in dims.items():
            for seg in dim.get("segments") or []:
                self._guard("log", self.run.log if self.run else None,
                            {"segment/t_s": seg["start_s"], f"segment/{name}": seg["score"], "segment/video": video})
        self._rows.append([video, record.get("prompt"), str(path), record.get("fps")]
                          + [(dims.get(n) or {}).get("score") for n in sorted(dims)])
        self._dims = sorted(dims)

    def _finish(self, summary: dict) -> None:
        import wandb

        for k, v in summary.items():
            if isinstance(v, (int, float, str)) or v is None:
                self.run.summary[k] = v
        if self._rows:
            cols = ["video", "prompt", "path", "fps"] + list(getattr(self, "_dims", []))
            self.run.log({"videos": wandb.Table(columns=cols, data=self._rows)})
        self.run.finish()
        self.run = None

    def finish(self, summary: dict) -> None:
        self._guard("finish", self._finish, summary)

    def fail(self, error: str) -> None:
        if self.run is not None:
            try:
                self.run.summary["error"] = error
                self.run.finish(exit_code=1)
            except Exception:
                pass
            self.run = None


def make_logger(kind: str, **kwargs) -> NullLogger:
    if kind in (None, "none"):
        return NullLogger()
    if kind == "wandb":
        return WandbLogger(**kwargs)
    from deepforcing.errors import ConfigError

    raise ConfigError(f"unknown logger {kind!r}: choose none or wandb")
