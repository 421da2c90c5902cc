"""A lab's own cache policy as one file in another package, exposed through the ``deepforcing.policies``
entry-point group: nothing in this repository is edited, yet its preset composes and runs, its settings
sweep, the compiled table shows it, and a wrong setting fails before anything loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

POLICY_FILE = '''
"""Keep the first `sink` frames and every frame whose index is a multiple of `stride`; FIFO for the rest."""
from dataclasses import dataclass

from deepforcing.errors import ConfigError
from deepforcing.policies import Preset, register
from deepforcing.policies.base import FrameSpan, SinkWindowPolicy, evict_oldest


@register
@dataclass(eq=False)
class StrideSink(SinkWindowPolicy):
    name = "stride_sink"
    presets = {"stride_sink": Preset(dict(sink=2, window=12), "our lab's strided sink, 2 + FIFO of 12")}
    knobs = {"sink_ratio": "sink"}
    sink: int = 2
    window: int = 12

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.sink < self.window:
            raise ConfigError(f"stride_sink: need 0 <= sink < window, got sink={self.sink}, window={self.window}")

    @classmethod
    def with_knob(cls, settings, knob, value):
        return cls.name, {**settings, "sink": int(value * settings.get("window", 12))}

    def begin_chunk(self, cache, span: FrameSpan) -> None:
        evict_oldest(cache, span, self.window, protected=self.sink)


from deepforcing.policies.pc_scorers import CandidateScorer, register_scorer


@register_scorer
class Oldest(CandidateScorer):
    """Participative Compression keeping the oldest candidates."""
    name = "oldest"

    def score(self, pc, layer, kv, step, cand, keys, per_head):
        s = -cand.float()
        return s.expand(pc.geom.num_heads, -1) if per_head else s
'''


@pytest.fixture
def plugin(tmp_path) -> dict:
    site = tmp_path / "site"
    site.mkdir()
    (site / "lab_policies.py").write_text(POLICY_FILE)
    dist = site / "lab_policies-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-policies\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[deepforcing.policies]\nstride_sink = lab_policies\n")
    return {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cli(args, out, env):
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args, f"out_dir={out}", "logger=none",
                           "num_frames=12"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def test_a_plugin_policy_composes_sweeps_and_shows_in_the_table(plugin, tmp_path):
    out = tmp_path / "results"
    r = cli(["-m", "method=stride_sink,rolling_window", "method.sink=1,3"], out, plugin)
    # rolling_window has no `sink` setting: Hydra says so for those points; run the plug-in's own sweep
    assert r.returncode != 0 and "sink" in r.stderr
    r = cli(["-m", "method=stride_sink", "method.sink=1,3"], out, plugin)
    assert r.returncode == 0, r.stderr[-3000:]
    ours = pd.read_csv(out / "reports" / "default" / "tables" / "ours.csv")
    assert sorted(ours["model"]) == ["stride_sink (sink=1)", "stride_sink (sink=3)"]
    r = cli(["-m", "method=stride_sink", "sink_ratio=0.25,0.5"], out, plugin)  # a top-level knob it declares
    assert r.returncode == 0, r.stderr[-3000:]
    ours = pd.read_csv(out / "reports" / "default" / "tables" / "ours.csv")
    # 0.25 x 12 = 3 frames is the point method.sink=3 already made (same settings, same key): not run again
    assert sorted(ours["model"]) == ["stride_sink (sink=1)", "stride_sink (sink=3)", "stride_sink (sink_ratio=0.5)"]
    assert "up to date (skipped) stride_sink" in r.stdout + r.stderr


@pytest.mark.parametrize("override, msg", [
    ("method.sink=abc", "could not be converted to Integer"),
    ("method.sink=12", "stride_sink: need 0 <= sink < window"),
    ("method.sinks=2", "Key 'sinks' not in"),
    ("budget=8", "budget=8 has no effect on preset 'stride_sink'"),
])
def test_a_wrong_plugin_setting_fails_before_anything_loads(plugin, tmp_path, override, msg):
    out = tmp_path / "results"
    r = cli(["method=stride_sink", override], out, plugin)
    assert r.returncode != 0 and msg in r.stderr + r.stdout
    assert not [p for p in out.rglob("*") if p.is_file() and ".hydra" not in p.parts]


def test_a_plugin_compression_scorer_is_a_compression_choice(plugin, tmp_path):
    import json

    out = tmp_path / "results"
    r = subprocess.run([sys.executable, str(ROOT / "run.py"), "method=deep_sink", "compression=oldest",
                        "num_frames=27", "logger=none", f"out_dir={out}"], capture_output=True, text=True,
                       env=plugin, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (point,) = out.glob("default/*/point.json")
    policy = json.loads(point.read_text())["config"]["policy"]
    assert policy["policy"] == "participative_compression" and policy["select"] == "oldest"
    rec = json.loads(next(out.glob("default/*/videos/*.json")).read_text())
    chosen = [d["topc"] for d in rec["diagnostics"] if d.get("topc")]
    assert chosen  # it compressed, keeping the oldest candidates: the first Top-C slots after the sink
    first = chosen[0]
    tpf = rec["diagnostics"][0]["cache_tokens"] // int(rec["diagnostics"][0]["cache_frames"])
    sink_tokens = policy["sink"] * tpf
    assert first["augmented_index"] == list(range(sink_tokens, sink_tokens + len(first["augmented_index"])))
