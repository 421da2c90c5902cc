"""Experiment loggers. Local results in the store are the source of truth; W&B mirrors them.

One W&B run per sweep point (group = sweep, job_type = method, config = the resolved settings):
per-chunk cache diagnostics, per-segment metric curves, summary metrics, a per-video table and the
video paths. Any W&B error is reported and disables logging for the point, never the run.

Without a network nothing is lost. ``WANDB_MODE=offline`` or ``disabled`` in the environment wins
over ``mode="online"``; otherwise online is decided once per process. It falls back to offline when no
credentials are configured (``WANDB_API_KEY``, an identity token file, the netrc entry or settings key
for the base URL: the lookup ``wandb.init`` does, without its network check) or when the server gives
no HTTP answer within ``timeout_s``; a point whose online ``wandb.init`` fails anyway is retried
offline, and the rest of the process stays offline. One warning per process gives the ``wandb sync``
command that uploads the offline runs later.

Killed runs. A SIGTERM (scancel, most launchers) that would kill the process first finishes the open
run with exit code 143, so its ``.wandb`` file is complete, ending in the exit record of a failed run,
and the process then dies by the signal as before (a SIGTERM handler installed by someone else is left
alone). A SIGKILL cannot be caught: the run file lacks its exit record, and since wandb-core buffers
the file (about 32 KiB in our measurements), the unwritten tail is lost; for a short point that is
everything but the 7-byte file header. What was written still reads back (``python -m wandb leet
inspect --json <run dir>`` notes "reached the end of an incomplete .wandb file") and ``wandb sync
--dry-run`` lists the run. Local results never depend on any of it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
MODES = ("online", "offline", "disabled")
_online: bool | None = None  # per process: None until the first online point decides it


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


def _answers(url: str, timeout: float) -> bool:
    """Whether ``url`` gives any HTTP answer within ``timeout`` seconds (name lookup included)."""
    answered = []

    def probe():
        try:
            urllib.request.urlopen(url, timeout=timeout).close()
        except urllib.error.HTTPError:
            pass  # an error status is an answer
        except Exception:
            return
        answered.append(True)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(answered)


def _finish_on_sigterm(signum, frame) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM kills at once
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        try:
            wandb.run.summary["error"] = "killed by SIGTERM"
            wandb.run.finish(exit_code=128 + signum)
        except Exception:
            pass
    os.kill(os.getpid(), signum)


def _install_sigterm_handler() -> None:
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _finish_on_sigterm)
    except ValueError:  # not the main thread
        pass


class WandbLogger(NullLogger):
    def __init__(self, project: str = "deepforcing", group: str = "default", mode: str = "offline",
                 dir: str | os.PathLike | None = None, entity: str | None = None, tags: tuple[str, ...] = (),
                 timeout_s: float = 5.0):
        if mode not in MODES:
            from deepforcing.errors import ConfigError

            raise ConfigError(f"logger mode {mode!r}: choose one of {', '.join(MODES)}")
        self.project, self.group, self.mode, self.dir, self.entity, self.tags = project, group, mode, dir, entity, tags
        self.timeout_s = timeout_s
        self.run = None
        self._step = 0
        self._rows: list[list] = []

    def _go_offline(self, reason: str) -> None:
        global _online
        _online = False
        try:  # offline globally too: wandb's own usage telemetry would still wait for the server at exit
            import wandb

            wandb.setup(wandb.Settings(mode="offline"))
        except Exception:
            pass
        runs = Path(self.dir or os.environ.get("WANDB_DIR") or ".").resolve() / "wandb"
        log.warning("W&B: %s; logging offline for the rest of this process. Upload later with: wandb sync %s",
                    reason, runs)

    def _mode(self) -> str:
        """The mode of the next run: ``online`` is decided once per process (see the module docstring)."""
        global _online
        if self.mode != "online":
            return self.mode
        env = os.environ.get("WANDB_MODE")
        if env in ("offline", "dryrun", "disabled"):
            return "disabled" if env == "disabled" else "offline"
        if _online is None:
            url = _base_url()
            if not _has_credentials():
                self._go_offline("no API key is configured")
            elif not _answers(url, self.timeout_s):
                self._go_offline(f"{url} did not answer within {self.timeout_s:g} s")
            else:
                _online = True
        return "online" if _online else "offline"

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

    def _init(self, mode: str, key: str, config: dict):
        import wandb

        if self.dir is not None:
            os.makedirs(self.dir, exist_ok=True)
        policy = config.get("policy", {})
        run = wandb.init(
            project=self.project, entity=self.entity, group=self.group, job_type=config.get("method", "point"),
            name=f"{config.get('method', 'point')}-{key[:8]}", config={**config, "key": key}, dir=self.dir,
            mode=mode, tags=list(self.tags) + [policy.get("policy", "")], reinit="finish_previous",
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )
        run.define_metric("chunk/step")
        run.define_metric("chunk/*", step_metric="chunk/step")
        run.define_metric("segment/t_s")
        run.define_metric("segment/*", step_metric="segment/t_s")
        return run

    def start(self, key: str, config: dict) -> None:
        self.run, self._step, self._rows = None, 0, []
        try:
            mode = self._mode()
            try:
                self.run = self._init(mode, key, config)
            except Exception as e:  # retry the point offline, and stay offline
                if mode != "online":
                    raise
                self._go_offline(f"online init failed ({type(e).__name__}: {e}".splitlines()[0] + ")")
                self.run = self._init("offline", key, config)
            _install_sigterm_handler()
        except Exception as e:
            log.warning("W&B init failed (%s: %s); continuing without it", type(e).__name__, e)
            self.run = None

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
