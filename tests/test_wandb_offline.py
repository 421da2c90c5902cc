"""W&B without a network: one short check per process, offline runs that `wandb sync` can upload later,
and a SIGTERM'd point whose run is finished. The servers are real sockets on 127.0.0.1."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from loopback_servers import silent_server, unauthorized_server

ROOT = Path(__file__).resolve().parents[1]
KEY = "0123456789" * 4  # a well-formed, unknown API key


def wandb_env(base_url: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**env, "WANDB_MODE": "online", "WANDB_API_KEY": KEY, "WANDB_BASE_URL": base_url,
            "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}


def inspect(run_dir: Path) -> list[dict]:
    """The run's records as `wandb leet inspect` reads them back (no server needed)."""
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def summary(records: list[dict]) -> dict:
    s = {}
    for rec in records:
        if rec.get("type") == "summary":
            s.update(rec["summary"].get("update") or {})
    return s


def offline_runs(wandb_dir: Path) -> list[Path]:
    return sorted(p for p in (wandb_dir / "wandb").glob("offline-run-*") if p.is_dir())


# a sweep point through the logger API: start, three chunks, then finish (or wait to be killed)
POINTS = """
import logging, sys, time, types
logging.basicConfig(level=logging.WARNING)
from deepforcing.loggers import WandbLogger
out, n, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
for p in range(n):
    logger = WandbLogger(mode="online", dir=out, group="g", timeout_s=2)
    logger.start(f"point{p}", {"method": "m", "policy": {"policy": "pol"}})
    for i in range(3):
        logger.chunk("v", types.SimpleNamespace(index=i, seconds=0.1, diagnostics={"cache_frames": i}))
    if wait:
        print("started", flush=True)
        time.sleep(wait)
    logger.finish({"score": 0.5 + p, "videos": 1})
"""


def test_unreachable_server_costs_one_short_wait_and_both_points_log_offline(tmp_path):
    with silent_server() as (url, conns):
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, str(ROOT / "run.py"), "-m", "model=tiny", "sink_ratio=0.25,0.5",
                            "logger=wandb", "logger.timeout_s=2", "num_frames=12", "metrics=flicker", "compile=false",
                            f"out_dir={tmp_path}"],
                           capture_output=True, text=True, timeout=300, env=wandb_env(url), cwd=ROOT)
        elapsed = time.monotonic() - t0
        assert r.returncode == 0, r.stderr[-3000:]
        assert len(conns) == 1  # the one reachability check; nothing else waited for the server
    log = r.stdout + r.stderr
    assert elapsed < 60, elapsed  # was ~90 s per point
    assert log.count("logging offline for the rest of this process") == 1
    assert f"wandb sync {tmp_path / 'wandb' / 'wandb'}" in log
    assert "deprecated" not in log
    runs = offline_runs(tmp_path / "wandb")
    assert len(runs) == 2
    assert not list((tmp_path / "wandb" / "wandb").glob("run-*"))  # no online attempt was left behind
    keys = set()
    for run_dir in runs:
        records = inspect(run_dir)
        s = summary(records)
        assert s["videos"] == 2 and isinstance(s["temporal_flickering"], float)
        assert [rec["exit"]["exit_code"] for rec in records if rec.get("type") == "exit"] == [0]
        keys.add(s["key"])
    assert len(keys) == 2


def test_failed_online_init_retries_the_point_offline(tmp_path):
    with unauthorized_server() as url:
        r = subprocess.run([sys.executable, "-c", POINTS, str(tmp_path), "2", "0"], capture_output=True,
                           text=True, timeout=120, env=wandb_env(url), cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("W&B: online init failed") == 1
    assert "deprecated" not in r.stdout + r.stderr
    runs = offline_runs(tmp_path)
    assert len(runs) == 2
    assert sorted(summary(inspect(d))["score"] for d in runs) == [0.5, 1.5]


def test_sigterm_finishes_the_open_run_with_an_exit_code(tmp_path):
    env = wandb_env("http://127.0.0.1:9", WANDB_MODE="offline")
    p = subprocess.Popen([sys.executable, "-c", POINTS, str(tmp_path), "1", "60"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert p.stdout.readline().strip() == "started", p.stderr.read()
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == -signal.SIGTERM  # the process still dies by the signal
    finally:
        p.kill()
    [run_dir] = offline_runs(tmp_path)
    records = inspect(run_dir)
    assert [rec["exit"]["exit_code"] for rec in records if rec.get("type") == "exit"] == [143]
    s = summary(records)
    assert s["error"] == "killed by SIGTERM" and s["chunk/cache_frames"] == 2 and "score" not in s


def test_netrc_credentials_are_found_without_a_deprecation_warning(tmp_path):
    (tmp_path / "netrc").write_text(f"machine 127.0.0.1:9\n  login user\n  password {KEY}\n")
    code = "from deepforcing.loggers import _has_credentials as h; print(h())"
    for base_url, found in (("http://127.0.0.1:9", "True"), ("http://127.0.0.1:8", "False")):
        env = wandb_env(base_url, HOME=str(tmp_path), NETRC=str(tmp_path / "netrc"))
        del env["WANDB_API_KEY"], env["WANDB_SILENT"]
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                           cwd=ROOT)
        assert (r.returncode, r.stdout.strip(), r.stderr) == (0, found, "")
