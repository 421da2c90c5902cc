"""Experiment loggers. Local results in the store are the source of truth; W&B mirrors them.

One W&B run per sweep point (group = sweep, job_type = method, name = ``<method>-<key>``):

- config: the point's resolved settings in one level of keys (:func:`flat_config`), so W&B's run
  grouping, filters and parallel coordinates work on them: the sweep knobs ``sink_ratio``,
  ``rope_align``, ``compression``, ``budget``, ``recent`` (as given, else the preset's own value),
  ``method``, ``policy`` and the policy's settings as it runs (``policy/sink``, ``policy/window``...),
  ``model/*``, ``rollout/*``, ``clips/*``;
- ``video/<video>``: the mp4 the store wrote (no re-encode), for the first ``max_videos`` prompts;
- drift: a ``drift`` table (``video, prompt, kind, dimension, t_s, start_s, end_s, score``: every
  video's segment and clip scores), a line plot per dimension built from it (``drift_plot/<dim>``: one
  line per prompt), and history series against ``drift/t_s`` (the centre of each segment):
  ``drift/<dim>/<video>`` for the first ``max_videos`` prompts and ``drift/<dim>/mean`` over all;
- ``chunk/*`` against ``chunk/step``: per-chunk cache diagnostics, cache memory (``chunk/cache_mib``,
  ``chunk/cache_capacity_mib``) and chunk latency;
- the summary metrics and a ``videos`` table (one row per video: path and scores).

After a sweep is compiled, :meth:`WandbLogger.compiled` logs one more run in the group (job_type
``compile``) with the compiled tables and figures and the report folder as an artifact, and saves the
sweep's workspace (offline: writes its spec beside the offline runs for ``python -m eval.wandb
publish``); see :mod:`deepforcing.dashboards`. Any W&B error is reported and disables logging for
that run, never the sweep.

Without a network nothing is lost. ``WANDB_MODE=offline`` or ``disabled`` in the environment wins
over ``mode="online"``; otherwise online is decided once per process. It falls back to offline when no
credentials are configured (``WANDB_API_KEY``, an identity token file, the netrc entry or settings key
for the base URL: the lookup ``wandb.init`` does, without its network check) or when the server gives
no HTTP answer within ``timeout_s``; a point whose online ``wandb.init`` fails anyway is retried
offline, and the rest of the process stays offline. One warning per process gives the ``wandb sync``
command that uploads the offline runs later (``python -m eval.wandb publish <sweep>`` does that and
saves the sweep's workspace).

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
    def start(self, key: str, config: dict, knobs: dict | None = None) -> None: ...
    def chunk(self, video: str, event: Any) -> None: ...
    def video(self, video: str, record: dict, path: Any) -> None: ...
    def finish(self, summary: dict) -> None: ...
    def fail(self, error: str) -> None: ...
    def compiled(self, report: Any) -> None: ...


#: the top-level sweep knobs (deepforcing.knobs.KNOBS), in the order W&B shows them
KNOB_KEYS = ("sink_ratio", "rope_align", "compression", "budget", "recent")


def resolved_knobs(policy: dict, knobs: dict | None = None) -> dict[str, Any]:
    """The five sweep knobs of a point: as given, else the value its policy runs with (``sink_ratio``:
    sink / window, 0 for a window without a sink; ``compression``: Participative Compression's ``select``,
    ``"none"`` for a policy that does not compress; None where the policy has no such setting)."""
    knobs = knobs or {}
    sink, window = policy.get("sink"), policy.get("window")
    own = {
        "sink_ratio": round((sink or 0) / window, 4) if window else None,
        "rope_align": policy.get("align"),
        "compression": policy.get("select") or "none",
        "budget": policy.get("budget"),
        "recent": policy.get("recent"),
    }
    return {k: knobs[k] if knobs.get(k) is not None else own[k] for k in KNOB_KEYS}


def _flatten(prefix: str, value: Any, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}/{k}", v, out)
    else:
        out[prefix] = list(value) if isinstance(value, tuple) else value


def flat_config(config: dict, knobs: dict | None = None) -> dict[str, Any]:
    """A point's resolved settings (``PointConfig.semantic()``) as one level of keys: the sweep knobs
    (:func:`resolved_knobs`), ``knobs_given`` (those set on the command line), ``method``, ``policy`` (its
    name), ``policy/<setting>`` as the policy runs, and every other nested setting as ``<group>/<key>``.
    No key holds a dict (W&B groups and plots top-level keys without ambiguity)."""
    policy = dict(config.get("policy") or {})
    out: dict[str, Any] = {"method": config.get("method"), "policy": policy.get("policy"),
                           **resolved_knobs(policy, knobs),
                           "knobs_given": sorted(k for k, v in (knobs or {}).items() if v is not None)}
    for k, v in policy.items():
        if k != "policy":
            _flatten(f"policy/{k}", v, out)
    for k, v in config.items():
        if k not in ("method", "policy"):
            _flatten(k, v, out)
    return out


def _mid(span: dict) -> float:
    return (span["start_s"] + span["end_s"]) / 2


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


DRIFT_COLUMNS = ["video", "prompt", "kind", "dimension", "t_s", "start_s", "end_s", "score"]


class WandbLogger(NullLogger):
    def __init__(self, project: str = "deepforcing", group: str = "default", mode: str = "offline",
                 dir: str | os.PathLike | None = None, entity: str | None = None, tags: tuple[str, ...] = (),
                 timeout_s: float = 5.0, max_videos: int = 8):
        if mode not in MODES:
            from deepforcing.errors import ConfigError

            raise ConfigError(f"logger mode {mode!r}: choose one of {', '.join(MODES)}")
        if int(max_videos) < 0:
            from deepforcing.errors import ConfigError

            raise ConfigError(f"logger.max_videos must be >= 0, got {max_videos}")
        self.project, self.group, self.mode, self.dir, self.entity, self.tags = project, group, mode, dir, entity, tags
        self.timeout_s, self.max_videos = timeout_s, int(max_videos)
        self.run = None
        self.last_mode: str | None = None  # the mode of the last run opened
        self._reset()

    def _reset(self) -> None:
        self._step = 0
        self._rows: list[list] = []  # the videos table
        self._dims: list[str] = []
        self._drift: list[list] = []  # the drift table
        self._featured: list[str] = []  # videos logged as media and per-video series (at most max_videos)

    @property
    def runs_dir(self) -> Path:
        """Where wandb writes its run folders (``<dir>/wandb``)."""
        return Path(self.dir or os.environ.get("WANDB_DIR") or ".").resolve() / "wandb"

    def _go_offline(self, reason: str) -> None:
        global _online
        _online = False
        try:  # offline globally too: wandb's own usage telemetry would still wait for the server at exit
            import wandb

            wandb.setup(wandb.Settings(mode="offline"))
        except Exception:
            pass
        log.warning("W&B: %s; logging offline for the rest of this process. Upload later with: wandb sync %s "
                    "(or python -m eval.wandb publish <sweep>, which also saves the sweep's workspace)",
                    reason, self.runs_dir)

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

    def _init(self, mode: str, **kwargs):
        import wandb

        if self.dir is not None:
            os.makedirs(self.dir, exist_ok=True)
        return wandb.init(project=self.project, entity=self.entity, group=self.group, dir=self.dir, mode=mode,
                          reinit="finish_previous", settings=wandb.Settings(console="off", x_disable_stats=True),
                          **kwargs)

    def _open(self, **kwargs):
        """A new run (``wandb.init`` arguments besides the logger's own); online falls back to offline.
        Registers the run in the sweep's index (deepforcing.dashboards) for ``eval.wandb publish``."""
        mode = self._mode()
        try:
            run = self._init(mode, **kwargs)
        except Exception as e:  # retry offline, and stay offline
            if mode != "online":
                raise
            self._go_offline(f"online init failed ({type(e).__name__}: {e}".splitlines()[0] + ")")
            mode = "offline"
            run = self._init(mode, **kwargs)
        _install_sigterm_handler()
        if mode != "disabled":
            try:
                from deepforcing.dashboards import register_run

                register_run(self.runs_dir, self.group, run, mode)
            except Exception as e:
                log.warning("W&B: could not record run %s in the sweep's index (%s: %s); `eval.wandb publish` "
                            "will not find it (wandb sync %s still uploads it)", run.id, type(e).__name__, e,
                            self.runs_dir)
        self.last_mode = mode
        return run

    def start(self, key: str, config: dict, knobs: dict | None = None) -> None:
        self.run = None
        self._reset()
        method = config.get("method", "point")
        policy = (config.get("policy") or {}).get("policy", "")
        try:
            run = self._open(job_type=method, name=f"{method}-{key[:8]}", tags=list(self.tags) + [policy],
                             config={**flat_config(config, knobs), "key": key, "sweep": self.group})
            run.define_metric("chunk/step")
            run.define_metric("chunk/*", step_metric="chunk/step")
            run.define_metric("drift/t_s")
            run.define_metric("drift/*", step_metric="drift/t_s")
            self.run = run
        except Exception as e:
            log.warning("W&B init failed (%s: %s); continuing without it", type(e).__name__, e)
            self.run = None

    def chunk(self, video: str, event: Any) -> None:
        d = event.diagnostics
        row = {"chunk/step": self._step, "chunk/index": event.index, "chunk/seconds": event.seconds}
        for k in ("cache_frames", "cache_tokens", "tokens_sink", "tokens_compressed", "tokens_recent", "tokens_anchor"):
            if k in d:
                row[f"chunk/{k}"] = d[k]
        for k in ("cache_bytes", "cache_capacity_bytes"):
            if d.get(k) is not None:
                row[f"chunk/{k[:-6]}_mib"] = d[k] / 2**20
        for region, share in (d.get("attention_mass") or {}).items():
            if isinstance(share, (int, float)):
                row[f"chunk/attention_{region}"] = share
        self._step += 1
        self._guard("log", self.run.log if self.run else None, row)

    def video(self, video: str, record: dict, path: Any) -> None:
        dims = ((record.get("metrics") or {}).get("dimensions")) or {}
        prompt = record.get("prompt")
        for name, dim in dims.items():
            for kind, spans in (("segment", dim.get("segments") or []), ("clip", dim.get("clips") or [])):
                for sp in spans:
                    if sp.get("score") is not None:
                        self._drift.append([video, prompt, kind, name, _mid(sp), sp["start_s"], sp["end_s"],
                                            sp["score"]])
        self._rows.append([video, prompt, str(path), record.get("fps")]
                          + [(dims.get(n) or {}).get("score") for n in sorted(dims)])
        self._dims = sorted(dims)
        if self.run is None or video in self._featured or len(self._featured) >= self.max_videos:
            return
        self._featured.append(video)
        self._guard("video", self._log_video, video, prompt, Path(path), dims)

    def _log_video(self, video: str, prompt: str | None, path: Path, dims: dict) -> None:
        import wandb

        if path.exists():  # the mp4 the store wrote: wandb copies the file, no re-encode
            self.run.log({f"video/{video}": wandb.Video(str(path), caption=prompt, format="mp4")})
        by_t: dict[float, dict] = {}
        for name, dim in dims.items():
            for sp in dim.get("segments") or []:
                if sp.get("score") is not None:
                    by_t.setdefault(_mid(sp), {})[f"drift/{name}/{video}"] = sp["score"]
        for t, row in sorted(by_t.items()):
            self.run.log({"drift/t_s": t, **row})

    def _finish(self, summary: dict) -> None:
        import wandb

        for k, v in summary.items():
            if isinstance(v, (int, float, str)) or v is None:
                self.run.summary[k] = v
        segments = [r for r in self._drift if r[2] == "segment"]
        means: dict[float, dict[str, list[float]]] = {}
        for r in segments:
            means.setdefault(r[4], {}).setdefault(f"drift/{r[3]}/mean", []).append(r[7])
        for t, cols in sorted(means.items()):
            self.run.log({"drift/t_s": t, **{k: sum(v) / len(v) for k, v in cols.items()}})
        tables: dict[str, Any] = {}
        if self._drift:
            tables["drift"] = wandb.Table(columns=DRIFT_COLUMNS, data=self._drift)
        for dim in dict.fromkeys(r[3] for r in segments):
            rows = [[r[0], r[1], r[4], r[7]] for r in segments if r[3] == dim]
            tables[f"drift_plot/{dim}"] = wandb.plot.line(
                wandb.Table(columns=["video", "prompt", "t_s", "score"], data=rows), "t_s", "score", stroke="video",
                title=f"{dim} over time, one line per prompt (segment centres, s)")
        if self._rows:
            cols = ["video", "prompt", "path", "fps"] + self._dims
            tables["videos"] = wandb.Table(columns=cols, data=self._rows)
        if tables:
            self.run.log(tables)
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

    def compiled(self, report: Any) -> None:
        """One ``compile`` run in the sweep's group with the compiled report (tables, figures, the folder
        as an artifact), then the sweep's workspace: saved when online, else its spec written beside the
        offline runs. A W&B failure is reported; the local report is already written."""
        from deepforcing import dashboards

        self.run = None
        mode = None
        try:
            run = self._open(job_type="compile", name=f"compile-{self.group}", tags=list(self.tags) + ["compile"],
                             config=dashboards.compile_config(report, self.group))
            mode = self.last_mode
            try:
                dashboards.log_report(run, report)
            except Exception:
                run.finish(exit_code=1)
                raise
            run.finish()
        except Exception as e:
            log.warning("W&B: logging the compiled report failed (%s: %s); the report is in %s",
                        type(e).__name__, e, getattr(report, "out", "?"))
        if mode == "disabled" or (mode is None and self._mode() == "disabled"):
            return
        try:
            recipe = dashboards.recipe_from_report(report, self.group, self.project, self.entity, self.max_videos)
            dashboards.store_workspace(self.runs_dir, recipe, online=(mode or self._mode()) == "online")
        except Exception as e:
            log.warning("W&B: the sweep's workspace could not be built (%s: %s)", type(e).__name__, e)


def make_logger(kind: str, **kwargs) -> NullLogger:
    if kind in (None, "none"):
        return NullLogger()
    if kind == "wandb":
        return WandbLogger(**kwargs)
    from deepforcing.errors import ConfigError

    raise ConfigError(f"unknown logger {kind!r}: choose none or wandb")
