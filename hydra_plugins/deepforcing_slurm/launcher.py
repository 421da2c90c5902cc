"""The SLURM launcher of ``cluster=slurm_h100`` and ``cluster=slurm_local``: hydra-submitit-launcher's,
waiting for every job of the sweep.

The plugin's launcher (hydra-submitit-launcher 1.2.0) collects the jobs' results in order and raises at
the first job that ended without one (cancelled with ``scancel``, past its time limit, its node lost):
the submitting process exits while other jobs still run, and the end of the sweep (eval.sweep.SweepEnd:
one compile, the failures listed, exit status 1) never runs. This launcher submits the same job array
(built by ``eval.slurm.executor``, as the plugin builds it) and waits for every job; a job without a
result becomes that point's failed outcome, as ``run.py`` records a point that fails inside its job. The
sweep then ends as any other, and the same command again finishes what is missing (finished points are
skipped, a killed point resumes after its last finished video).

It also asks for the job time the sweep's plans need (``time_from_plan``, eval/slurm.py). Configs use it as
``override /hydra/launcher: deepforcing_slurm``. The jobs run the plugin's own launcher (this one pickles
as it), so the nodes need nothing of this file; Hydra finds it beside ``run.py`` (plugins live in the
``hydra_plugins`` namespace).
"""

import copyreg
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

log = logging.getLogger(__name__)


@dataclass
class DeepforcingSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.deepforcing_slurm.launcher.SlurmLauncher"
    # the job time limit from the sweep's plans (eval/slurm.py) when every point has an estimate; else timeout_min
    time_from_plan: bool = True


ConfigStore.instance().store(group="hydra/launcher", name="deepforcing_slurm", node=DeepforcingSlurmConf,
                             provider="deepforcing")


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    def __reduce__(self):
        # the jobs unpickle hydra-submitit-launcher's SlurmLauncher (its __call__ runs the job)
        base = sys.modules[submitit_launcher.__name__].SlurmLauncher
        return copyreg._reconstructor, (base, object, None), self.__dict__

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from eval.slurm import executor, job_params

        assert self.config is not None
        assert len(job_overrides) > 0
        cfgs = [self.hydra_context.config_loader.load_sweep_config(self.config, list(o)) for o in job_overrides]
        params, rule, _ = job_params(self.params, cfgs)
        how = ("2 x the longest plan's estimate + 30 min" if rule and params["timeout_min"] == rule
               else "configured" + ("" if rule else ": not every point has a measured throughput"))
        log.info(f"SLURM job time limit: {params['timeout_min']} min ({how})")
        ex = executor(params, self._EXECUTOR)
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {self.config.hydra.sweep.dir}")
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = ex.map_array(self, *zip(*job_params, strict=True))
        return [self._result(job, list(overrides), initial_job_idx + i)
                for i, (job, overrides) in enumerate(zip(jobs, job_overrides, strict=True))]

    def _result(self, job, overrides: list[str], idx: int) -> JobReturn:
        from submitit.core.utils import FailedJobError, UncompletedJobError

        try:
            return job.results()[0]
        except (UncompletedJobError, FailedJobError) as e:
            if isinstance(e, UncompletedJobError):
                error = f"SLURM job {job.job_id} ended without a result (state {job.state})"
            else:  # raised outside the point's own error handling; submitit quotes the traceback between rules
                trace = [line for line in str(e).split("-" * 22)[1:2] for line in line.strip().splitlines()]
                error = f"SLURM job {job.job_id} raised {trace[-1] if trace else type(e).__name__}"
            error += f"; its log: {job.paths.stderr}"
        from deepforcing.store import write_json_atomic
        from eval.sweep import outcome_dir

        assert self.hydra_context is not None and self.config is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        outcome = {"status": "failed", "error": error, "overrides": overrides}
        write_json_atomic(outcome_dir(cfg.out_dir, cfg.sweep) / f"job-{idx}.json", outcome)
        print(f"FAILED {' '.join(overrides)}: {error} (the sweep goes on)", file=sys.stderr, flush=True)
        ret = JobReturn(overrides=overrides, cfg=cfg, status=JobStatus.COMPLETED)
        ret.return_value = outcome
        return ret
