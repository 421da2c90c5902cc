"""What a SLURM sweep will ask for, before anything is submitted: the batch script and the time each point needs.

    python -m eval.slurm cluster=slurm_h100 experiment=table1 model=self_forcing   # run from the repository

prints, for every point of the sweep, its plan (videos, frames, time from the throughput measured on this
model and device) and the job time limit, then the batch script that ``python run.py -m <the same
overrides>`` submits (one array job, one task per point). It composes the configuration as ``run.py -m``
does and builds the submitit executor as the SLURM launcher does (``hydra_plugins/deepforcing_slurm``,
over ``hydra-submitit-launcher`` 1.2.0 and ``submitit`` 1.5.4, both pinned); nothing is submitted and no
model is loaded.

The time rule: a point's job needs ``TIME_FACTOR`` x the plan's generation estimate (scoring the videos,
decoding them, and slower nodes) plus ``TIME_OVERHEAD_MIN`` (loading weights, encoding prompts, writing
the store), rounded up to whole minutes; the array's limit is the longest point's. With
``hydra.launcher.time_from_plan=true`` (the default of the ``cluster=slurm_*`` configs) the launcher asks
for that limit whenever every point of the sweep has an estimate; a point without a measured throughput
(no point of that model ran on that device yet) has none, and then the configured
``hydra.launcher.timeout_min`` stands. With ``time_from_plan=false`` the configured limit is always used,
and this command exits 1 when it is shorter than the rule's. A point that outlives its limit is not lost:
the store keeps every finished video and a rerun resumes after the last one.
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


def plan_times(cfgs: list[DictConfig]) -> tuple[int | None, list[str]]:
    """The rule's job time limit for the sweep's points (None unless every point has an estimate) and one
    line per point (its plan and need) or per planning error (weights or prompts not on this machine)."""
    from deepforcing.plan import plan_point

    run = _run_module()
    needs, lines, unplanned = [], [], {}
    for cfg in cfgs:
        label = " ".join(o for o in cfg.hydra.overrides.task if not o.startswith(("cluster=", "hydra.")))
        label = label or "(defaults)"
        try:
            plan = plan_point(run.point_from_cfg(cfg), cfg.out_dir)
        except Exception as e:  # the point's job reports it; the time falls back to the configured one
            unplanned.setdefault(f"{type(e).__name__}: {e}", []).append(label)
            needs.append(None)
            continue
        needs.append(rule_minutes(plan.est_seconds))
        lines.append(f"{label}: {plan.describe()}; job time {f'{needs[-1]} min' if needs[-1] else 'unknown'}")
    for err, labels in unplanned.items():
        lines.append(f"cannot plan {len(labels)} point(s) ({labels[0]}{', ...' if len(labels) > 1 else ''}): {err}")
    return (max(needs) if needs and None not in needs else None), lines


def job_params(params: dict, cfgs: list[DictConfig]) -> tuple[dict, int | None, list[str]]:
    """The launcher settings ``params`` a sweep of ``cfgs`` is submitted with (``time_from_plan`` applied:
    ``timeout_min`` becomes the rule's limit when every point has an estimate), the rule's limit, and the
    lines of :func:`plan_times`."""
    params = dict(params)
    from_plan = params.pop("time_from_plan", False)
    minutes, lines = plan_times(cfgs)
    if from_plan and minutes:
        params["timeout_min"] = minutes
    return params, minutes, lines


def render_sbatch(launcher: DictConfig, cfgs: list[DictConfig], folder: str | Path | None = None) -> str:
    """The batch script ``launcher`` submits for a sweep of the points ``cfgs``: one job, or one array of
    a task per point (submitit's ``map_array``, as the launcher submits a sweep)."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = OmegaConf.to_container(launcher, resolve=True)
    params.pop("_target_")
    params, _, _ = job_params(params, cfgs)
    ex = executor(params, "slurm", folder)._executor
    params = dict(ex.parameters)
    if len(cfgs) > 1:
        params["map_count"] = len(cfgs)
    return _make_sbatch_string(command=ex._submitit_command_str, folder=ex.folder, **params)


def main(argv: list[str] | None = None) -> int:
    overrides = list(sys.argv[1:] if argv is None else argv)
    base, points = sweep_configs(overrides)
    launcher = base.hydra.launcher
    if launcher._target_.split(".")[-1] != "SlurmLauncher":
        print("not a SLURM launcher: pass cluster=slurm_h100 (or cluster=slurm_local)", file=sys.stderr)
        return 2
    configured, from_plan = int(launcher.timeout_min), bool(launcher.get("time_from_plan"))
    _, rule, lines = job_params({"time_from_plan": from_plan}, points)
    for line in lines:
        print(line, file=sys.stderr)
    rule_text = f"rule {rule} min" if rule else "rule unknown (not every point has a measured throughput)"
    if from_plan:
        limit = rule or configured
        print(f"{len(points)} point(s); time limit {limit} min ({rule_text}; configured {configured} min)",
              file=sys.stderr)
    short = not from_plan and rule is not None and configured < rule
    if not from_plan:
        print(f"{len(points)} point(s); time limit {configured} min (configured, time_from_plan=false; {rule_text})"
              + (f": too short, pass hydra.launcher.timeout_min={rule}" if short else ""), file=sys.stderr)
    print(render_sbatch(launcher, points))
    return 1 if short else 0


if __name__ == "__main__":
    raise SystemExit(main())
