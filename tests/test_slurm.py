"""The SLURM launcher against a real one-node SLURM cluster on this machine (scripts/local_slurm.sh).

The cluster is started once for the module and stopped afterwards (unless it was already running). The
tests skip, with the script's reason, only where it cannot start: not root, or SLURM not installed
(`scripts/local_slurm.sh install`, which .ci/run runs).
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SCRIPT = ROOT / "scripts" / "local_slurm.sh"
# 30 latent frames: past the 21-frame window, so the sink ratio changes the videos
SWEEP = ["model=tiny", "sink_ratio=0.1,0.25,0.5", "num_frames=30", "logger=none", "metrics=flicker"]
# the headline sweep with six longer videos per point (~2.5 s each here): a job cancelled after its first
# video is killed (SIGTERM, then SIGKILL ~7 s later on the local cluster) with videos still to make
PROMPTS = ["A red fox trots through snow", "Waves roll onto a rocky beach", "A city street at night",
           "Leaves fall in a quiet forest", "A kite over a green hill", "Rain on a window at dusk"]
LONG = ["model=tiny", "num_frames=240", "logger=none", "metrics=flicker",
        f"prompts.list=[{','.join(PROMPTS)}]"]


@pytest.fixture(scope="module")
def slurm():
    r = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=300)
    if r.returncode == 3:
        pytest.skip(r.stderr.strip())
    assert r.returncode == 0, r.stderr
    ours = "already running" not in r.stderr
    yield
    if ours:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, text=True, timeout=120)


def env():
    # the tiny model runs far faster on one thread; sbatch exports this environment to the jobs
    return {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def run_cli(args, out, timeout=600):
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args, f"out_dir={out}"], capture_output=True,
                          text=True, timeout=timeout, env=env(), cwd=ROOT)


def points(out, sweep="default"):
    found = {}
    for p in sorted((out / sweep).glob("*/point.json")):
        found[json.loads(p.read_text())["knobs"]["sink_ratio"]] = p.parent
    return found


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def scores(point_dir):
    """The point's scores and the digest of every mp4 it wrote."""
    summary = json.loads((point_dir / "summary.json").read_text())
    return ({k: v for k, v in summary.items() if k.startswith("temporal_flickering")},
            {p.name: digest(p) for p in sorted((point_dir / "videos").glob("*.mp4"))})


def sacct(job):
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", job], capture_output=True,
                         text=True, check=True).stdout
    return dict(line.split("|", 1) for line in out.splitlines() if line)


def array_job(sweep_dir, timeout=120):
    """The array job id submitit created for the sweep in ``sweep_dir``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        ids = {m.group(1) for p in (sweep_dir / ".submitit").glob("*_*") if (m := re.fullmatch(r"(\d+)_\d+", p.name))}
        if ids:
            assert len(ids) == 1, ids
            return ids.pop()
        time.sleep(0.1)
    raise AssertionError(f"no job submitted under {sweep_dir}")


def leftovers(out):
    return [p for p in out.rglob("*") if ".partial" in p.name or p.name.endswith(".tmp") or ".corrupt-" in p.name]


def test_a_sweep_runs_as_slurm_jobs_with_the_local_runs_scores(slurm, tmp_path):
    """cluster=slurm_local: one array task per point, results in the store as a local run writes them
    (same keys, scores and mp4 bytes), the jobs' outcomes collected and the report compiled once, by the
    submitting process, after the last job; the batch script is the one eval.slurm renders."""
    from eval.slurm import render_sbatch, sweep_configs

    local = run_cli(["-m", *SWEEP], tmp_path / "local")
    assert local.returncode == 0, local.stderr[-3000:]
    out, sweep_dir = tmp_path / "slurm", tmp_path / "slurm" / "sweep"
    args = ["-m", "cluster=slurm_local", *SWEEP, f"hydra.sweep.dir={sweep_dir}"]
    base, cfgs = sweep_configs([*args[1:], f"out_dir={out}"])
    assert len(cfgs) == 3
    expected = render_sbatch(base.hydra.launcher, cfgs)  # before the run: nothing measured in out_dir
    r = run_cli(args, out)
    assert r.returncode == 0, r.stderr[-3000:]

    # one SLURM array task per point, each ran one point and completed
    job = array_job(sweep_dir)
    assert sacct(job) == {f"{job}_{i}": "COMPLETED" for i in range(3)}
    for i, ratio in enumerate((0.1, 0.25, 0.5)):
        log = (sweep_dir / ".submitit" / f"{job}_{i}" / f"{job}_{i}_0_log.err").read_text()
        log += (sweep_dir / ".submitit" / f"{job}_{i}" / f"{job}_{i}_0_log.out").read_text()
        assert re.findall(r"\{'sink_ratio': ([0-9.]+)\}: plan:", log) == [str(ratio)]
        assert "compiled" not in log  # no job compiles

    # the local run's points, keys and scores
    here, there = points(tmp_path / "local"), points(out)
    assert sorted(there) == [0.1, 0.25, 0.5]
    assert {k: d.name for k, d in here.items()} == {k: d.name for k, d in there.items()}
    for ratio in here:
        assert scores(there[ratio]) == scores(here[ratio]), ratio
    assert len({scores(d)[0]["temporal_flickering"] for d in there.values()}) == 3  # the ratio matters

    # jobs saw the submitter's $DEEPFORCING_INVOCATION: their outcomes are in its one folder
    (invocation,) = (out / "default" / ".outcomes").iterdir()
    assert sorted(p.name for p in invocation.iterdir()) == ["job-0.json", "job-1.json", "job-2.json"]
    assert all(json.loads(p.read_text())["status"] == "done" for p in invocation.iterdir())
    # one compile, in the submitting process, after the jobs
    assert len(re.findall(r"compiled .*report\.md", r.stdout + r.stderr)) == 1
    report = out / "reports" / "default" / "report.md"
    assert all(f"deep_forcing (sink_ratio={ratio})" in report.read_text() for ratio in there)
    assert report.stat().st_mtime > max((d / "summary.json").stat().st_mtime for d in there.values())

    # what was submitted is what eval.slurm rendered for the same command line; no throughput was measured
    # in this results folder yet, so the time limit is the configured one
    submitted = (sweep_dir / ".submitit" / job / f"{job}_submission.sh").read_text()
    assert submitted == expected
    assert "#SBATCH --array=0-2%3\n" in submitted and "#SBATCH --partition=cpu\n" in submitted
    assert "#SBATCH --time=60\n" in submitted


def test_a_cancelled_job_is_finished_by_a_rerun(slurm, tmp_path, request):
    """scancel a point's job between two of its videos: the submitting process waits for the other job,
    lists the cancelled one's point as failed, compiles once and exits 1; the same command again finishes
    that point from where it stopped (the finished video is kept, not made again), skips the finished
    point, leaves no partial file, and the resumed point equals an uninterrupted run."""
    out = tmp_path / "out"
    args = ["-m", "cluster=slurm_local", "sink_ratio=0.25,0.5", *LONG]
    # the uninterrupted run to compare with, meanwhile (it overlaps the time spent waiting on SLURM)
    ref = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "sink_ratio=0.5", *LONG, "compile=false",
                            f"out_dir={tmp_path / 'local'}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, env=env(), cwd=ROOT)
    request.addfinalizer(lambda: ref.poll() is None and ref.kill())
    first_dir = tmp_path / "first"
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args, f"hydra.sweep.dir={first_dir}",
                                 f"out_dir={out}"], stdout=log, stderr=subprocess.STDOUT, env=env(), cwd=ROOT)
    try:
        job = array_job(first_dir)
        deadline, target = time.time() + 240, None
        while time.time() < deadline and proc.poll() is None:  # point 1 (sink_ratio=0.5) has its first video
            target = points(out).get(0.5)
            if target is not None and list((target / "videos").glob("*.json")):
                break
            time.sleep(0.05)
        assert target is not None and proc.poll() is None, "the cancelled point never started its videos"
        subprocess.run(["scancel", f"{job}_1"], check=True)
        kept = {p.name: (p.stat().st_mtime_ns, digest(p)) for p in (target / "videos").iterdir()
                if p.name.startswith("0000_")}
        rc = proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the submitter waited for both jobs, recorded the cancelled one as its point's failure, compiled once
    log = (tmp_path / "first.log").read_text()
    assert rc == 1, log[-3000:]
    assert re.search(rf"FAILED .*sink_ratio=0\.5 .*: SLURM job {job}_1 ended without a result \(state CANCELLED", log)
    assert "1 of 2 point(s) of sweep 'default' failed" in log and f"SLURM job {job}_1" in log.split("failed:")[-1]
    assert len(re.findall(r"compiled .*report\.md", log)) == 1
    states = sacct(job)
    assert states[f"{job}_0"] == "COMPLETED" and states[f"{job}_1"].startswith("CANCELLED"), states
    assert sorted(kept) == ["0000_a_red_fox_trots_through_snow.json",
                            "0000_a_red_fox_trots_through_snow.latents.safetensors",
                            "0000_a_red_fox_trots_through_snow.mp4"]
    assert not (target / "summary.json").exists(), "the job finished before SLURM killed it: make the videos longer"
    assert len(list((target / "videos").glob("*.json"))) < len(PROMPTS)  # cancelled mid-point
    import pandas as pd

    fails = pd.read_csv(out / "reports" / "default" / "tables" / "failed_points.csv")
    assert list(fails["key"]) == [target.name] and list(fails["status"]) == ["incomplete"]

    # the finished point measured the throughput: the rerun's jobs ask for the time the plans need
    from eval.slurm import plan_times, sweep_configs

    rule, _ = plan_times(sweep_configs([*args[1:], f"out_dir={out}"])[1])
    assert rule is not None and rule < 60
    r = run_cli([*args, f"hydra.sweep.dir={tmp_path / 'second'}"], out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(re.findall(r"compiled .*report\.md", r.stdout + r.stderr)) == 1
    job2 = array_job(tmp_path / "second")
    def submitted(sweep_dir, job):
        return (sweep_dir / ".submitit" / job / f"{job}_submission.sh").read_text()

    assert "#SBATCH --time=60\n" in submitted(first_dir, job)
    assert f"#SBATCH --time={rule}\n" in submitted(tmp_path / "second", job2)
    assert sacct(job2) == {f"{job2}_0": "COMPLETED", f"{job2}_1": "COMPLETED"}
    found = points(out)
    assert sorted(found) == [0.25, 0.5] and found[0.5] == target
    assert {p for p in (out / "default").iterdir() if not p.name.startswith(".")} == set(found.values())
    for d in found.values():
        names = sorted(p.name for p in (d / "videos").iterdir())
        assert len(names) == 3 * len(PROMPTS)
        assert {n.split(".", 1)[1] for n in names} == {"json", "mp4", "latents.safetensors"}
        assert json.loads((d / "summary.json").read_text())["videos"] == len(PROMPTS)
    assert leftovers(out) == []
    assert {p.name: (p.stat().st_mtime_ns, digest(p)) for p in (target / "videos").iterdir()
            if p.name.startswith("0000_")} == kept  # the finished video was not made again

    _, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err[-3000:]
    assert scores(target) == scores(points(tmp_path / "local")[0.5])


@pytest.mark.skipif(shutil.which("srun") is None, reason="SLURM's client (srun) is not installed: submitit renders "
                    "a SLURM batch script only where it is (scripts/local_slurm.sh install)")
def test_slurm_h100_batch_script_asks_for_what_a_point_needs(tmp_path, capsys):
    """cluster=slurm_h100 as submitted (rendered by submitit, nothing submitted): one GPU, its CPUs,
    memory, the time limit; one array task per point of a paper table; the time from the plans."""
    from eval.slurm import main, render_sbatch, rule_minutes, sweep_configs

    # no weights nor prompt sets here: the points cannot be planned, the configured 720 minutes stand
    base, cfgs = sweep_configs(["cluster=slurm_h100", "experiment=table1", f"out_dir={tmp_path}"])
    assert len(cfgs) == 10  # 5 systems x 2 lengths
    text = render_sbatch(base.hydra.launcher, cfgs)
    flags = dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", text, re.M))
    assert flags == {
        "array": "0-9%10", "gpus-per-node": "1", "cpus-per-task": "16", "mem": "128GB", "time": "720",
        "nodes": "1", "ntasks-per-node": "1", "job-name": "run", "signal": "USR2@120", "open-mode": "append",
        "wckey": "submitit", "output": flags["output"], "error": flags["error"],
    }
    assert flags["output"].startswith(str(tmp_path / ".hydra" / "multirun"))
    assert re.search(r"^srun .* -u -m submitit\.core\._submit ", text, re.M)
    # site settings reach the script
    base, cfgs = sweep_configs(["cluster=slurm_h100", "hydra.launcher.partition=h100", "hydra.launcher.account=lab",
                                f"out_dir={tmp_path}"])
    text = render_sbatch(base.hydra.launcher, cfgs)
    assert "#SBATCH --partition=h100\n" in text and "#SBATCH --account=lab\n" in text and "--array" not in text

    # the time rule: twice the plan's estimate plus 30 minutes, from the throughput measured on the model
    import run
    from deepforcing.plan import plan_point, record_throughput

    sweep = ["cluster=slurm_h100", "model=tiny", "sink_ratio=0.25,0.5", "length_s=600", f"out_dir={tmp_path}"]
    point = run.point_from_cfg(sweep_configs(sweep)[1][0])
    record_throughput(tmp_path, point, [{"frames": 100, "seconds": 10.0}], mp4_bytes=1000)  # 10 frames/s
    est = plan_point(point, tmp_path).est_seconds
    assert est == pytest.approx(2 * 9609 / 10.0)  # two prompts of 9609 frames
    need = rule_minutes(est)
    assert need == 95  # ceil(2 x 1921.8 s / 60 + 30)
    capsys.readouterr()
    assert main(sweep) == 0  # both points have an estimate: the jobs ask for the rule's time
    out = capsys.readouterr()
    assert "#SBATCH --time=95\n" in out.out and "#SBATCH --array=0-1%2\n" in out.out
    assert "time limit 95 min (rule 95 min; configured 720 min)" in out.err
    fixed = [*sweep, "hydra.launcher.time_from_plan=false"]
    assert main(fixed) == 0 and "#SBATCH --time=720\n" in capsys.readouterr().out
    assert main([*fixed, "hydra.launcher.timeout_min=60"]) == 1  # shorter than the plans need
    assert "too short, pass hydra.launcher.timeout_min=95" in capsys.readouterr().err
