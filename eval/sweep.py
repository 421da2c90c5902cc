"""The end of a sweep: one compile of its report, every failure listed, a non-zero exit if any point failed.

``run.py`` starts each invocation with a fresh ``$DEEPFORCING_INVOCATION`` (inherited by every job,
whatever launcher runs it: in-process, worker processes, submitit, SLURM); each job writes its outcome
to ``<out_dir>/<sweep>/.outcomes/<invocation>/job-<n>.json``. :class:`SweepEnd`, a Hydra callback run by
the launching process after the last job, reads them back.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback

log = logging.getLogger("deepforcing")
INVOCATION_ENV = "DEEPFORCING_INVOCATION"


def new_invocation() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def outcome_dir(out_dir: str | os.PathLike, sweep: str) -> Path:
    return Path(out_dir) / sweep / ".outcomes" / os.environ.setdefault(INVOCATION_ENV, new_invocation())


def read_outcomes(out_dir: str | os.PathLike, sweep: str) -> list[dict]:
    d = outcome_dir(out_dir, sweep)
    return [json.loads(p.read_text()) for p in sorted(d.glob("job-*.json"))] if d.is_dir() else []


def sweep_logger(config, sweep: str):
    """The experiment logger of ``config.logger`` (None for ``logger=none``), for the sweep's compile run."""
    from omegaconf import OmegaConf

    from deepforcing.loggers import NullLogger, make_logger

    lcfg = OmegaConf.to_container(config.logger, resolve=True) if config.get("logger") else {"kind": "none"}
    logger = make_logger(lcfg.pop("kind"), group=sweep, **lcfg)
    return None if type(logger) is NullLogger else logger


def compile_sweep(out_dir: Path, sweep: str, logger=None):
    """Tables (beside the published rows), figures and HTML for the whole sweep so far, in
    ``<out_dir>/reports/<sweep>/``; one process at a time. With a logger, the compiled report then goes
    to W&B as the sweep's compile run and workspace (a W&B failure is reported, the report stays)."""
    from filelock import FileLock

    from deepforcing.compile.report import compile_report
    from deepforcing.compile.tables import default_published_path

    if not (out_dir / sweep).is_dir():
        return
    tables = None if default_published_path().exists() else ()
    if tables == ():
        log.warning("published results CSV not found (set DEEPFORCING_PUBLISHED): compiling our rows only")
    kwargs = {} if tables is None else {"tables": tables}
    with FileLock(str(out_dir / sweep / ".compile.lock")):
        report = compile_report([out_dir / sweep], out_dir / "reports" / sweep, n_boot=2000, **kwargs)
    log.info("compiled %s", report.out / "report.md")
    if logger is not None:
        try:
            logger.compiled(report)
        except Exception as e:  # never costs the local report
            log.warning("W&B: logging the compiled sweep failed (%s: %s)", type(e).__name__, e)
    return report


class SweepEnd(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        out_dir, sweep = Path(config.out_dir), config.sweep
        if config.get("compile"):
            try:
                compile_sweep(out_dir, sweep, logger=sweep_logger(config, sweep))
            except Exception as e:  # e.g. no point finished: the failures below say why
                print(f"compile of sweep {sweep!r} failed: {type(e).__name__}: {e}", file=sys.stderr)
        outcomes = read_outcomes(out_dir, sweep)
        failed = [o for o in outcomes if o.get("status") != "done"]
        if failed:
            lines = "\n".join(f"  {' '.join(o.get('overrides') or []) or '(defaults)'}: {o.get('error')}"
                              for o in failed)
            print(f"{len(failed)} of {len(outcomes)} point(s) of sweep {sweep!r} failed:\n{lines}", file=sys.stderr,
                  flush=True)
            raise SystemExit(1)
