"""The Hydra harness: knobs reach policies, bad overrides fail early, sweeps resume after SIGKILL."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from deepforcing.errors import ConfigError, WeightsError
from deepforcing.knobs import apply_knobs
from deepforcing.model_files import WEIGHTS_ROOT_ENV
from deepforcing.pipeline import prompt_slug
from deepforcing.policies import policies_using, preset_names

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import run  # noqa: E402

FAST = ["model=tiny", "num_frames=12", "logger=none", "metrics=flicker"]  # plumbing: the random-weights model


def composed(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose("config", overrides=overrides)


KNOB_VALUES = {"sink_ratio": 0.25, "rope_align": "code", "budget": 15, "recent": 5}
PARAM = {"sink_ratio": "sink", "rope_align": "align", "budget": "budget", "recent": "recent"}
EXPECT = {"sink_ratio": 5, "rope_align": "code", "budget": 15, "recent": 5}


@pytest.mark.parametrize("preset", preset_names())
@pytest.mark.parametrize("knob", sorted(KNOB_VALUES))
def test_every_knob_reaches_the_policy_of_every_preset_that_uses_it(preset, knob):
    cfg = composed([f"method={preset}", f"{knob}={KNOB_VALUES[knob]}"])
    policy_name, _ = apply_knobs(preset)
    if policy_name in policies_using(knob):
        point = run.point_from_cfg(cfg)
        policy = point.build_policy()
        assert getattr(policy, PARAM[knob]) == EXPECT[knob]
        assert point.semantic()["policy"][PARAM[knob]] == EXPECT[knob]
    else:
        with pytest.raises(ConfigError, match=knob):
            run.point_from_cfg(cfg)


@pytest.mark.parametrize("compression, policy, select", [
    ("none", "deep_sink", None), ("participative", "participative_compression", "participative"),
    ("random", "participative_compression", "random"), ("snapkv", "participative_compression", "snapkv"),
])
def test_compression_knob(compression, policy, select):
    for preset in ("deep_sink", "deep_forcing"):
        point = run.point_from_cfg(composed([f"method={preset}", f"compression={compression}"]))
        desc = point.build_policy().describe()
        assert desc["policy"] == policy and desc.get("select") == select
        assert desc["sink"] == 10


def test_length_s_sets_latent_frames():
    point = run.point_from_cfg(composed(["model=tiny", "length_s=30"]))
    assert point.rollout.num_frames == 123  # 4*122+1 = 489 pixel frames >= 480 = 30 s at 16 fps
    toy = run.point_from_cfg(composed(["length_s=30"]))  # the toy codec keeps every frame: 480, in whole chunks
    assert toy.rollout.num_frames == 480


def test_vbench_long_options_reach_the_scorer():
    """clips.* overrides become the point's ClipProtocol (part of its identity) and the scorer's."""
    point = run.point_from_cfg(composed(["clips.static_filter=true", "clips.scene_split=true",
                                         "clips.seconds={overall_consistency:2}"]))
    assert point.clips.static_filter and point.clips.scene_split
    assert point.clips.seconds == {"overall_consistency": 2}
    assert point.semantic()["clips"]["static_filter"] is True
    default = run.point_from_cfg(composed([]))
    assert default.semantic()["clips"] == {"enabled": True, "seconds": {}, "static_filter": False,
                                           "static_max_clips": 5, "scene_split": False, "scene_threshold": 35.0}
    from deepforcing.pipeline import Runtime

    sc = Runtime().scorer(point.metrics, point.segment_seconds, point.clips)
    assert sc.cfg.clips.scene_split and sc.cfg.clips.seconds_for("overall_consistency") == 2.0


def test_the_default_is_the_toy_model_with_its_prompts_metrics_and_steps():
    from deepforcing.metrics import TOY_METRICS
    from deepforcing.model import toy
    from deepforcing.toyworld.world import parse_prompt

    point = run.point_from_cfg(composed([]))
    assert point.model.kind == "toy" and point.model.config == "toy"
    assert set(TOY_METRICS) | {"temporal_flickering", "chunk_seam_flicker"} == set(point.metrics)
    assert all(parse_prompt(p) for p in point.prompts)
    assert point.rollout.steps == toy().sample_steps and point.rollout.shift == toy().sample_shift
    assert point.rollout.sampler == toy().sampler == "renoise"
    tiny = run.point_from_cfg(composed(["model=tiny"]))  # Wan's schedule for the others, unless a run names one
    assert tiny.rollout.steps == (1000, 750, 500, 250) and tiny.rollout.shift == 5.0
    assert tiny.rollout.sampler == "renoise"
    assert set(tiny.metrics) == {"temporal_flickering", "chunk_seam_flicker"}
    named = run.point_from_cfg(composed(["rollout.steps=[1000,500]", "rollout.shift=2.0"]))
    assert named.rollout.steps == (1000, 500) and named.rollout.shift == 2.0


def run_cli(args, tmp_path, timeout=600):
    # the tiny model runs far faster on one thread (CI machines have two cores)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args, f"out_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.parametrize("override, msg", [
    ("sink_ratoi=0.3", "sink_ratoi"),
    ("sink_ratio=1.5", "sink_ratio must lie in [0, 1)"),
    ("method=deep_forcin", "deep_forcin"),
    ("rope_align=sideways", "align must be one of ('none', 'paper', 'code'), got 'sideways'"),
    ("budget=8", "budget 8 < sink 10 + recent 4"),
    ("num_frames=20", "multiple of the chunk"),
    ("prompts.list=['  ']", "prompt 0 is empty"),
    ("recent=2", "recent 2 < chunk 3"),
    ("model.kind=self_forcng", "model.kind 'self_forcng'"),
    ("model.config=wan_14b", "unknown model preset"),
    ("+clips.static_filtr=true", "static_filtr"),
    ("clips.scene_threshold=0", "scene_threshold must be > 0"),
    ("clips.seconds={overall_consistenc:2}", "unknown metric 'overall_consistenc'"),
    # settings that used to be silently ignored
    ("compression=zip", "compression/zip"),  # an unknown choice is listed, not dropped
    ("seed=abc", "seed must be an integer"),
    ("rollout.attn_backend=fast", "unknown attention backend 'fast'"),
])
def test_wrong_overrides_fail_when_the_config_is_built(override, msg):
    """Every check runs in point_from_cfg, which loads no model."""
    with pytest.raises(Exception) as info:
        run.point_from_cfg(composed([override]))
    assert msg in str(info.value)


@pytest.mark.parametrize("model, keys", [
    ("self_forcing", {"model.weights_root", "model.checkpoint"}),
    ("longlive", {"model.weights_root", "model.checkpoint", "model.lora"}),
])
def test_missing_weights_message_suggests_overrides_hydra_accepts(model, keys, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    with pytest.raises(WeightsError) as info:
        run.point_from_cfg(composed([f"model={model}", f"model.weights_root={empty}"]))
    msg = str(info.value)
    suggested = re.findall(r"(\w+(?:\.\w+)+)=<(folder|file)>", msg)
    assert {k for k, _ in suggested} == keys, msg
    assert "weights.root" not in msg and "weights.paths" not in msg
    for key, what in suggested:  # each override composes (Hydra rejects unknown keys) and moves the files
        value = tmp_path / "elsewhere" if what == "folder" else tmp_path / "elsewhere" / "my.pt"
        with pytest.raises(WeightsError) as moved:
            run.point_from_cfg(composed([f"model={model}", f"model.weights_root={empty}", f"{key}={value}"]))
        assert f"expected at {value}" in str(moved.value) or f"weights root {value};" in str(moved.value), key
    assert f"${WEIGHTS_ROOT_ENV}" in msg
    monkeypatch.setenv(WEIGHTS_ROOT_ENV, str(tmp_path / "from_env"))
    with pytest.raises(WeightsError, match=f"weights root {re.escape(str(tmp_path / 'from_env'))};"):
        run.point_from_cfg(composed([f"model={model}"]))


def test_a_lora_for_a_kind_without_one_names_the_key():
    with pytest.raises(ConfigError, match="model.lora is set, but kind 'self_forcing' has no lora file"):
        run.point_from_cfg(composed(["model=self_forcing", "model.lora=/data/lora.pt"]))


def test_cli_reports_a_bad_override_without_writing_results(tmp_path):
    r = run_cli([*FAST, "sink_ratio=1.5"], tmp_path)
    assert r.returncode != 0
    assert "sink_ratio must lie in [0, 1)" in r.stderr + r.stdout
    made = [p for p in tmp_path.rglob("*") if p.is_file() and ".hydra" not in p.parts]
    assert made == []  # nothing written to the results store


def test_identical_runs_write_identical_videos(tmp_path):
    videos = []
    for name in ("first", "second"):
        r = run_cli([*FAST, "compile=false"], tmp_path / name)
        assert r.returncode == 0, r.stderr[-3000:]
        root = tmp_path / name
        videos.append({p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.mp4"))})
    assert len(videos[0]) == 2  # one point, two prompts
    assert videos[0] == videos[1]


def points(tmp_path, sweep="default"):
    out = []
    for d in sorted((tmp_path / sweep).iterdir()):
        if (d / "point.json").exists():
            out.append((d, json.loads((d / "point.json").read_text())))
    return out


def test_sink_ratio_sweep_makes_two_points(tmp_path):
    r = run_cli(["-m", "sink_ratio=0.25,0.5", "num_frames=30", "logger=none"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    pts = points(tmp_path)
    assert len(pts) == 2
    assert (tmp_path / "reports" / "default" / "report.md").exists() and not (tmp_path / "wandb").exists()
    (da, a), (db, b) = pts
    assert {a["knobs"]["sink_ratio"], b["knobs"]["sink_ratio"]} == {0.25, 0.5}
    ca, cb = dict(a["config"]), dict(b["config"])
    pa, pb = ca.pop("policy"), cb.pop("policy")
    assert ca == cb  # everything but the policy's sink is the same
    assert {k: v for k, v in pa.items() if k != "sink"} == {k: v for k, v in pb.items() if k != "sink"}
    sinks = {}
    for d, p in pts:
        rec = json.loads(next((d / "videos").glob("*.json")).read_text())
        last = rec["diagnostics"][-1]
        sinks[p["knobs"]["sink_ratio"]] = len(last["positions"]["sink"])  # frames the policy used as sink
    assert sinks == {0.25: 5, 0.5: 10}


def test_sigkill_and_resume(tmp_path):
    """Kill a sweep at a random moment, rerun: every point completes once, nothing partial remains."""
    args = ["-m", "sink_ratio=0.25,0.5", "num_frames=24", "logger=none"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args, f"out_dir={tmp_path}"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    # wait until the first video file is being written, then kill at a random moment
    deadline = time.time() + 300
    while time.time() < deadline and not list(tmp_path.rglob("*.mp4")) and not list(tmp_path.rglob(".*partial*")):
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 3.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = run_cli(args, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    pts = points(tmp_path)
    assert len(pts) == 2
    for d, _ in pts:
        assert (d / "summary.json").exists() and not (d / "error.json").exists()
        videos = sorted(p.name for p in (d / "videos").iterdir())
        prompts = json.loads((d / "point.json").read_text())["config"]["prompts"]
        names = [prompt_slug(i, p) for i, p in enumerate(prompts)]
        assert videos == sorted(f"{n}.{ext}" for n in names for ext in ("json", "mp4", "latents.safetensors"))
        assert json.loads((d / "summary.json").read_text())["videos"] == 2
    leftovers = [p for p in tmp_path.rglob("*") if "partial" in p.name or p.name.endswith(".tmp")]
    assert leftovers == []


def test_wandb_offline_runs_read_back_by_wandb(tmp_path):
    r = run_cli(["num_frames=12", "logger=wandb", "logger.mode=offline"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted(p for p in (tmp_path / "wandb" / "wandb").glob("offline-run-*") if p.is_dir())
    assert len(runs) == 2  # the point, then the compile run of its sweep (tests/test_wandb_dashboards.py)
    job_types = []
    for run_dir in runs:
        out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
                             capture_output=True, text=True, timeout=120)
        records = [json.loads(line) for line in out.stdout.splitlines() if line.strip().startswith("{")]
        kinds = {rec.get("type") for rec in records}
        assert {"run", "history", "summary"} <= kinds
        run_rec = next(rec for rec in records if rec.get("type") == "run")
        assert run_rec["run"]["run_group"] == "default"
        job_types.append(run_rec["run"]["job_type"])
        hist = [rec["history"] for rec in records if rec.get("type") == "history"]
        if job_types[-1] == "deep_forcing":
            assert any("chunk/cache_frames" in json.dumps(h) for h in hist)
    assert sorted(job_types) == ["compile", "deep_forcing"]


def test_submitit_local_launcher(tmp_path):
    r = run_cli(["-m", "cluster=submitit_local", "sink_ratio=0.25,0.5", *FAST], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(points(tmp_path)) == 2
    assert all((d / "summary.json").exists() for d, _ in points(tmp_path))


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    """rope_max_pos=10 reproduces the reference's position table limit: frames past 9 cannot be placed.
    The failing point is printed when it fails, listed in the report and failed_points.csv, the sweep
    goes on, and the process exits non-zero."""
    r = run_cli(["-m", "rollout.rope_max_pos=10,null", *FAST], tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    pts = points(tmp_path)
    assert len(pts) == 2
    failed = [d for d, _ in pts if (d / "error.json").exists()]
    done = [d for d, _ in pts if (d / "summary.json").exists()]
    assert len(failed) == 1 and len(done) == 1
    assert "outside the reference table [0, 10)" in json.loads((failed[0] / "error.json").read_text())["error"]
    assert "FAILED deep_forcing" in r.stderr and "the sweep goes on" in r.stderr
    assert "1 of 2 point(s) of sweep 'default' failed" in r.stderr and "rollout.rope_max_pos=10" in r.stderr
    import pandas as pd

    fails = pd.read_csv(tmp_path / "reports" / "default" / "tables" / "failed_points.csv")
    assert list(fails["key"]) == [failed[0].name] and list(fails["status"]) == ["failed"]
    assert f"default/{failed[0].name}" in (tmp_path / "reports" / "default" / "report.md").read_text()


def test_an_overlong_plan_is_refused_before_loading(tmp_path):
    """length_s=100000 is 27.8 hours of video per prompt: refused with the plan, nothing written."""
    r = run_cli(["model=tiny", "length_s=100000", "logger=none"], tmp_path)
    assert r.returncode != 0
    out = r.stderr + r.stdout
    assert "plan: 2 video(s) x 1600005 frames" in out and "plan.max_video_s=3600" in out and "force=true" in out
    made = [p for p in tmp_path.rglob("*") if p.is_file() and ".hydra" not in p.parts]
    assert made == []


def test_plan_limits_use_the_measured_throughput(tmp_path):
    from deepforcing.plan import PlanLimits, plan_point, record_throughput

    point = run.point_from_cfg(composed(["model=tiny", "length_s=600"]))
    plan = plan_point(point, tmp_path)
    # 600 s x 16 fps = 9600 frames -> 2401 latent frames, rounded up to whole 3-frame chunks: 2403 -> 9609
    assert (plan.latent_frames, plan.frames) == (2403, 9609)
    assert plan.est_seconds is None and "time unknown" in plan.describe()
    plan.check(PlanLimits())  # 10 minutes of video, no time estimate yet: within the limits
    record_throughput(tmp_path, point, [{"frames": 100, "seconds": 10.0}], mp4_bytes=1000)
    plan = plan_point(point, tmp_path)
    assert plan.gen_fps == 10.0 and plan.est_seconds == pytest.approx(2 * 9609 / 10.0)
    latent = point.rollout.num_frames * 16 * 6 * 8 * 4  # frames x channels x h x w x float32 bytes, tiny model
    assert plan.disk_bytes == pytest.approx(2 * (latent + 10.0 * 9609))
    with pytest.raises(ConfigError, match="plan.max_hours=0.5"):
        plan.check(PlanLimits(max_hours=0.5))
    plan.check(PlanLimits(max_hours=0.5), force=True)


def test_rescore_true_never_generates(tmp_path):
    r = run_cli([*FAST, "rescore=true"], tmp_path)
    assert r.returncode != 0 and "no stored latents to rescore" in r.stderr + r.stdout
    assert not list(tmp_path.rglob("*.mp4"))
    assert run_cli(FAST, tmp_path).returncode == 0
    r = run_cli([*FAST, "rescore=true", "metrics=all"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "pending (weights missing)" in r.stderr + r.stdout


def test_command_line_rollout_beats_the_methods():
    method_only = run.point_from_cfg(composed(["method=rolling_forcing"]))
    assert method_only.rollout.steps == (1000, 800, 600, 400, 200)
    assert method_only.rollout.loop_for(method_only.build_policy()) == "rolling"
    cli = run.point_from_cfg(composed(["method=rolling_forcing", "rollout.steps=[1000,500]"]))
    assert cli.rollout.steps == (1000, 500) and cli.rollout.loop_for(cli.build_policy()) == "rolling"
    plain = run.point_from_cfg(composed(["rollout.steps=[1000,500]", "rollout.shift=3.0"]))
    assert plain.rollout.steps == (1000, 500) and plain.rollout.shift == 3.0
    assert plain.rollout.loop_for(plain.build_policy()) == "block"
    with pytest.raises(ConfigError, match="runs only under rollout='rolling'"):
        run.point_from_cfg(composed(["method=rolling_forcing", "rollout.rollout=block"]))
