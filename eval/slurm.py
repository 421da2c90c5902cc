"""What a SLURM sweep will ask for, before anything is submitted: the batch script and the time each point needs.

    python -m eval.slurm cluster=slurm_h100 experiment=table1 model=self_forcing   # run from the repository

prints, for every point of the sweep, its plan (videos, frames, time from the throughput measured on this
model and device), the job time limit the rule below gives for the longest point, and then the batch
script that ``python run.py -m <the same overrides>`` submits (one array job, one task per point). It
composes the configuration as ``run.py -m`` does and builds the submitit executor as the Hydra submitit
launcher does (``hydra-submitit-launcher`` 1.2.0, ``submitit`` 1.5.4, both pinned); nothing is submitted
and no model is loaded. Exit status 1 when the configured time limit is shorter than the rule's.

The time rule: a point's job needs ``TIME_FACTOR`` x the plan's generation estimate (scoring the videos,
decoding them, and slower nodes) plus ``TIME_OVERHEAD_MIN`` (loading weights, encoding prompts, writing
the store), rounded up to whole minutes; the array's limit is the longest point's. A point without a
measured throughput (no point of that model ran on that device yet) has no estimate: the configured
``hydra.launcher.timeout_min`` stands (``cluster=slurm_h100``: 720 minutes). A point that outlives its
limit is not lost: the store keeps every finished video and a rerun resumes after the last one.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]
TIME_FACTOR = 2.0
TIME_OVERHEAD_MIN = 30


def rule_minutes(est_seconds: float | None) -> int | None:
    """The job time limit (minutes) for a point whose generation is estimated at ``est_seconds``."""
    if not est_seconds:
        return None
    return math.ceil(TIME_FACTOR * est_seconds / 60 + TIME_OVERHEAD_MIN)


def _run_module():
    """The repository's run.py: it registers the method= and compression= choices and translates a config
    into a point, as for a run."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import run

    return run


def sweep_configs(overrides: list[str], config_dir: str | Path = ROOT / "conf") -> tuple[DictConfig, list[DictConfig]]:
    """The sweep's base config and one config per point, composed as ``run.py -m`` composes them
    (the experiment's ``hydra.sweeper.params`` and the command line's sweeps, Hydra's basic sweeper)."""
    from hydra import initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    _run_module()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir), job_name="run"):
        loader = GlobalHydra.instance().config_loader()
        base = loader.load_configuration("config", list(overrides), run_mode=RunMode.MULTIRUN)
        params = [f"{k}={v}" for k, v in (base.hydra.sweeper.get("params") or {}).items()]
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(params + list(overrides))
        points = [loader.load_sweep_config(base, combo) for combo in BasicSweeper.split_arguments(parsed, None)[0]]
    GlobalHydra.instance().clear()
    return base, points


def executor(params: dict, cluster: str = "slurm", folder: str | Path | None = None):
    """The submitit executor for the launcher settings ``params`` (``hydra.launcher`` without ``_target_``),
    built as ``BaseSubmititLauncher.launch`` builds it; the SLURM launcher of ``hydra_plugins.deepforcing_slurm``
    submits with it."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    specific = {"max_num_timeout"}
    init = {f"{cluster}_{k}": v for k, v in params.items() if k in specific}
    try:
        ex = submitit.AutoExecutor(folder=str(folder or params["submitit_folder"]), cluster=cluster, **init)
    except RuntimeError as e:  # submitit's SLURM executor wants srun on the PATH
        raise RuntimeError(f"{e}: submitit renders a SLURM batch script only where SLURM's client is installed "
                           "(Debian: apt-get install slurm-client; or scripts/local_slurm.sh install)") from e
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    ex.update_parameters(**{k if k in base else f"{cluster}_{k}": v for k, v in params.items()
                            if k not in specific | {"submitit_folder"}})
    return ex


def render_sbatch(launcher: DictConfig, points: int, folder: str | Path | None = None) -> str:
    """The batch script ``launcher`` submits for a sweep of ``points`` points: one job, or one array of
    ``points`` tasks (submitit's ``map_array``, as the Hydra launcher submits a sweep)."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = OmegaConf.to_container(launcher, resolve=True)
    params.pop("_target_")
    ex = executor(params, "slurm", folder)._executor
    params = dict(ex.parameters)
    if points > 1:
        params["map_count"] = points
    return _make_sbatch_string(command=ex._submitit_command_str, folder=ex.folder, **params)


def main(argv: list[str] | None = None) -> int:
    run = _run_module()
    from deepforcing.errors import ConfigError
    from deepforcing.plan import plan_point

    overrides = list(sys.argv[1:] if argv is None else argv)
    base, points = sweep_configs(overrides)
    if base.hydra.launcher._target_.split(".")[-1] != "SlurmLauncher":
        print("not a SLURM launcher: pass cluster=slurm_h100 (or cluster=slurm_local)", file=sys.stderr)
        return 2
    longest, unplanned = None, {}
    for cfg in points:
        label = " ".join(o for o in cfg.hydra.overrides.task if not o.startswith(("cluster=", "hydra.")))
        try:
            point = run.point_from_cfg(cfg)
            plan = plan_point(point, cfg.out_dir)
        except (ConfigError, OSError) as e:  # e.g. weights or prompts not on this machine
            unplanned.setdefault(f"{type(e).__name__}: {e}", []).append(label or "(defaults)")
            continue
        need = rule_minutes(plan.est_seconds)
        print(f"{label or '(defaults)'}: {plan.describe()}; job time "
              f"{f'{need} min' if need else 'unknown'}", file=sys.stderr)
        longest = need if need and (longest is None or need > longest) else longest
    for err, labels in unplanned.items():
        print(f"cannot plan {len(labels)} point(s) ({labels[0]}{', ...' if len(labels) > 1 else ''}): {err}",
              file=sys.stderr)
    configured = int(base.hydra.launcher.timeout_min)
    short = longest is not None and configured < longest
    print(f"{len(points)} point(s); time limit: configured {configured} min, rule "
          f"{f'{longest} min' if longest else 'unknown (no throughput measured)'}"
          + (f": too short, pass hydra.launcher.timeout_min={longest}" if short else ""), file=sys.stderr)
    print(render_sbatch(base.hydra.launcher, len(points)))
    return 1 if short else 0


if __name__ == "__main__":
    raise SystemExit(main())
