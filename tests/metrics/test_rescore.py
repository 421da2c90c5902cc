"""A metric whose weights are missing is pending, not done; once the weights exist a rerun scores it from
the stored latents, without generating, and gets the numbers a fresh run gets. A metric version bump
rescores only that metric."""

from __future__ import annotations

import dataclasses

import pytest

from deepforcing.engine import RolloutConfig
from deepforcing.metrics import METRICS as REGISTRY
from deepforcing.metrics.specs import SPECS
from deepforcing.pipeline import PointConfig, Runtime, run_point
from deepforcing.store import read_record

METRICS = ("temporal_flickering", "background_consistency")


pytestmark = pytest.mark.usefixtures("one_thread")


def point() -> PointConfig:
    return PointConfig(method="deep_sink", rollout=RolloutConfig(num_frames=12), metrics=METRICS,
                       prompts=("a red fox runs", "waves roll in"))


def records(root):
    return {p.name: read_record(p, "video") for p in sorted(root.glob("s/*/videos/*.json"))}


def scores(recs: dict, dim: str) -> dict:
    return {n: {k: v for k, v in r["metrics"]["dimensions"][dim].items() if k != "seconds"} for n, r in recs.items()}


def test_pending_metric_is_scored_from_latents_once_weights_exist(random_weights, tmp_path, monkeypatch):
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(tmp_path / "empty_cache"))
    run = tmp_path / "sweep"
    first = run_point(point(), Runtime(), run, "s", progress=False)
    assert first["background_consistency"] is None and first["temporal_flickering"] is not None
    assert sorted(first["pending"]) == ["background_consistency"]
    assert len(first["pending"]["background_consistency"]) == 2
    latents = {p: p.read_bytes() for p in run.rglob("*.latents.safetensors")}

    rt = Runtime()  # weights still missing: nothing to do, still pending, no generation
    again = run_point(point(), rt, run, "s", progress=False)
    assert again["skipped"] and "backbone" not in rt.loads and again["pending"] == first["pending"]

    random_weights.files("background_consistency")
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(random_weights.root))
    rt = Runtime()
    filled = run_point(point(), rt, run, "s", progress=False)
    assert "backbone" not in rt.loads and not filled["skipped"] and filled["pending"] == {}
    assert {p: p.read_bytes() for p in run.rglob("*.latents.safetensors")} == latents  # not generated again

    fresh_root = tmp_path / "fresh"  # the same point generated and scored with the weights present
    fresh = run_point(point(), Runtime(), fresh_root, "s", progress=False)
    for dim in METRICS:
        assert filled[dim] == fresh[dim], dim
        assert scores(records(run), dim) == scores(records(fresh_root), dim), dim

    # a version bump of one metric rescores that metric only
    before = records(run)
    bumped = dataclasses.replace(SPECS["temporal_flickering"], version=SPECS["temporal_flickering"].version + "-next")
    monkeypatch.setitem(SPECS, "temporal_flickering", bumped)
    monkeypatch.setattr(REGISTRY.get("temporal_flickering"), "spec", bumped)
    rt = Runtime()
    run_point(point(), rt, run, "s", progress=False)
    after = records(run)
    assert "backbone" not in rt.loads
    for name in before:
        tf = after[name]["metrics"]["dimensions"]["temporal_flickering"]
        assert tf["version"] == bumped.version
        # the untouched metric keeps its stored result, timing included: it was not computed again
        assert (after[name]["metrics"]["dimensions"]["background_consistency"]
                == before[name]["metrics"]["dimensions"]["background_consistency"])
    assert {n: {k: v for k, v in d.items() if k not in ("seconds", "version")} for n, d in
            ((n, r["metrics"]["dimensions"]["temporal_flickering"]) for n, r in after.items())} == {
        n: {k: v for k, v in d.items() if k not in ("seconds", "version")} for n, d in
        ((n, r["metrics"]["dimensions"]["temporal_flickering"]) for n, r in before.items())}
