"""The result store under damage and concurrency: every damaged file is detected, moved aside and only
what it held is recomputed; two sweeps on one folder compute each point once."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deepforcing.engine import RolloutConfig
from deepforcing.pipeline import NotGenerated, PointConfig, Runtime, run_point
from deepforcing.store import CORRUPT, DamagedFile, list_points, read_record, write_record

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ("a red fox runs", "waves roll in")


pytestmark = pytest.mark.usefixtures("one_thread")


def point() -> PointConfig:
    return PointConfig(method="deep_forcing", rollout=RolloutConfig(num_frames=12), prompts=PROMPTS)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """One finished point; each test works on a copy."""
    import shutil

    root = tmp_path_factory.mktemp("store")
    summary = run_point(point(), Runtime(), root, "s", progress=False)
    d = root / "s" / summary["key"]
    files = {p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file()}
    return root, summary, files, shutil


def copy_of(pristine, tmp_path) -> tuple[Path, Path]:
    root, summary, files, _ = pristine
    d = tmp_path / "s" / summary["key"]
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    return tmp_path, d


def truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


def garbage(p: Path) -> None:
    p.write_bytes(bytes((i * 97 + 13) % 256 for i in range(max(64, len(p.read_bytes())))))


def edit_score(p: Path) -> None:  # valid JSON, plausible content: only the checksum tells
    rec = json.loads(p.read_text())
    rec["metrics"]["dimensions"]["temporal_flickering"]["score"] = 0.5
    p.write_text(json.dumps(rec))


def without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


def without_timing(dims: dict) -> dict:
    """Scores, clips, segments and drift; not the wall time spent on them."""
    return {k: without(d, "seconds") for k, d in dims.items()}


VIDEO = "videos/0000_a_red_fox_runs"
CASES = [  # (file, damage, must the video be generated again?)
    ("summary.json", truncate, False),
    ("summary.json", garbage, False),
    ("point.json", garbage, False),
    ("point.json", truncate, False),
    (f"{VIDEO}.json", truncate, False),
    (f"{VIDEO}.json", edit_score, False),
    (f"{VIDEO}.mp4", truncate, False),
    (f"{VIDEO}.mp4", garbage, False),
    (f"{VIDEO}.latents.safetensors", garbage, True),
    (f"{VIDEO}.latents.safetensors", truncate, True),
]


@pytest.mark.parametrize("rel, damage, regenerate", CASES,
                         ids=[f"{r.rsplit('.', 1)[-1] if 'latents' in r else r.split('/')[-1][-8:]}-{d.__name__}"
                              for r, d, _ in CASES])
def test_a_damaged_file_is_moved_aside_and_only_its_part_recomputed(pristine, tmp_path, caplog, rel, damage,
                                                                    regenerate):
    _, summary, files, _ = pristine
    root, d = copy_of(pristine, tmp_path)
    damage(d / rel)
    rt = Runtime()
    with caplog.at_level(logging.WARNING, logger="deepforcing.store"):
        again = run_point(point(), rt, root, "s", progress=False)
    # generation happened only where the latents themselves were damaged
    assert ("backbone" in rt.loads) == regenerate
    # the damaged file is kept aside, named in one warning
    aside = [p for p in (root / "s").iterdir() if CORRUPT in p.name]
    assert len(aside) == 1 and (aside[0] / rel).exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and rel in warnings[0] and str(aside[0]) in warnings[0]
    # every file is valid again and the results equal the undamaged run's
    assert not again["skipped"]
    for k in ("temporal_flickering", "temporal_flickering/abs_drift", "videos", "pending"):
        assert again[k] == summary[k], k
    for name in ("0000_a_red_fox_runs", "0001_waves_roll_in"):
        rec = read_record(d / "videos" / f"{name}.json", "video")
        old = json.loads(files[Path("videos") / f"{name}.json"])
        assert without_timing(rec["metrics"]["dimensions"]) == without_timing(old["metrics"]["dimensions"])
        chunks = [without(c, "seconds") for c in rec["diagnostics"]]
        assert chunks == [without(c, "seconds") for c in old["diagnostics"]]
        if not regenerate:
            assert (d / "videos" / f"{name}.latents.safetensors").read_bytes() == files[
                Path("videos") / f"{name}.latents.safetensors"]
    assert (d / "videos" / "0000_a_red_fox_runs.mp4").read_bytes() == files[Path(f"{VIDEO}.mp4")]
    read_record(d / "point.json", "point")
    read_record(d / "summary.json", "summary")
    # and the next run has nothing to do
    rt2 = Runtime()
    assert run_point(point(), rt2, root, "s", progress=False)["skipped"] and "backbone" not in rt2.loads


def bump_videos(p: Path) -> None:
    p.write_text(p.read_text().replace('"videos": 1', '"videos": 2'))


@pytest.mark.parametrize("damage, reason", [(truncate, "not valid JSON"), (garbage, "not UTF-8"),
                                            (bump_videos, "checksum mismatch")])
def test_readers_name_the_damaged_file(tmp_path, damage, reason):
    p = tmp_path / "summary.json"
    write_record(p, "summary", {"key": "k", "method": "m", "videos": 1})
    assert read_record(p, "summary")["videos"] == 1
    damage(p)
    with pytest.raises(DamagedFile, match=reason) as info:
        read_record(p, "summary")
    assert str(p) in str(info.value)


def test_a_record_without_its_keys_is_damaged(tmp_path):
    p = tmp_path / "summary.json"
    write_record(p, "summary", {"key": "k", "method": "m"})
    with pytest.raises(DamagedFile, match="without videos"):
        read_record(p, "summary")
    write_record(p, "point", {"key": "k", "method": "m", "knobs": {}, "config": {}})
    with pytest.raises(DamagedFile, match="not a summary file"):
        read_record(p, "summary")


def test_compile_skips_a_damaged_point_and_lists_it(pristine, tmp_path, caplog):
    import pandas as pd

    from eval.compile import main as compile_cli

    root, d = copy_of(pristine, tmp_path)
    edit_score(d / f"{VIDEO}.json")
    ok = run_point(PointConfig(method="rolling_window", rollout=RolloutConfig(num_frames=12), prompts=PROMPTS),
                   Runtime(), root, "s", progress=False)
    out = tmp_path / "report"
    with caplog.at_level(logging.WARNING):
        assert compile_cli([str(root / "s"), "--out", str(out), "--no-figures", "--no-html", "--n-boot", "50",
                            "-q"]) == 0
    assert any(f"{VIDEO}.json" in r.getMessage() for r in caplog.records)
    fails = pd.read_csv(out / "tables" / "failed_points.csv").set_index("key")
    assert fails.loc[d.name, "status"] == "damaged" and "checksum mismatch" in fails.loc[d.name, "error"]
    assert ok["key"] not in fails.index
    assert [e["damaged"] != [] for e in list_points(root / "s")].count(True) == 0  # top-level files are fine


def test_rescore_only_never_generates(tmp_path):
    with pytest.raises(NotGenerated, match="no stored latents"):
        run_point(point(), Runtime(), tmp_path, "s", progress=False, generate=False)
    assert not list(tmp_path.rglob("*.mp4"))


def test_two_identical_sweeps_on_one_folder_compute_each_point_once(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, str(ROOT / "run.py"), "-m", "model=tiny", "sink_ratio=0.25,0.5", "num_frames=12",
            "logger=none",
            f"out_dir={tmp_path}"]
    procs = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outs)
    both = "\n".join(outs)
    assert both.count("INFO] - done deep_forcing") == 2  # each point computed once ...
    assert both.count("up to date (skipped) deep_forcing") == 2  # ... and found done by the other process
    entries = list_points(tmp_path / "default")
    assert len(entries) == 2
    for e in entries:
        assert e["summary"] is not None and e["error"] is None and e["damaged"] == []
        assert len(list((e["dir"] / "videos").glob("*.mp4"))) == len(json.loads(
            (e["dir"] / "point.json").read_text())["config"]["prompts"])
    leftovers = [p for p in tmp_path.rglob("*") if "partial" in p.name or p.name.endswith(".tmp")
                 or CORRUPT in p.name]
    assert leftovers == []
