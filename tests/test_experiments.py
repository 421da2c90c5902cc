"""Every experiment sweep composes into valid points; only the (absent) model files stop them here."""

import itertools
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from deepforcing.engine import RolloutConfig
from deepforcing.errors import WeightsError
from deepforcing.policies.presets import build_preset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import run  # noqa: E402

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


def compose_cfg(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose("config", overrides=overrides, return_hydra_config=True)


def sweep_points(exp):
    cfg = compose_cfg([f"experiment={exp}"])
    params = {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}
    for combo in itertools.product(*params.values()):
        yield [f"experiment={exp}", *(f"{k}={v}" for k, v in zip(params, combo, strict=True))]


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_experiment_points_validate_up_to_the_weights(exp, tmp_path, monkeypatch, published_prompts):
    """Every point validates; those of real-weight models stop at the missing files, the toy model's
    (checkpoint in the package) validate whole."""
    from deepforcing.model_files import EMBEDDED_KINDS

    monkeypatch.setenv("DEEPFORCING_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("DEEPFORCING_PROMPTS", str(published_prompts))
    n = 0
    for overrides in sweep_points(exp):
        cfg = compose_cfg(overrides)
        assert cfg.sweep == exp
        if cfg.model.kind in EMBEDDED_KINDS:
            run.point_from_cfg(cfg)
        else:
            with pytest.raises(WeightsError, match=str(tmp_path)):
                run.point_from_cfg(cfg)
        n += 1
    assert n >= 2


def test_table1_pairs_each_baseline_with_its_weights_and_policy():
    pairs = {}
    for overrides in sweep_points("table1"):
        cfg = compose_cfg(overrides)
        rollout = RolloutConfig(**{k: v for k, v in cfg.rollout.items() if v is not None and k != "steps"})
        pairs[cfg.model.kind, cfg.method.preset] = rollout.loop_for(build_preset(cfg.method.preset))
    assert pairs == {
        ("self_forcing", "rolling_window"): "block", ("causvid", "rolling_window"): "block",
        ("longlive", "longlive"): "block", ("rolling_forcing", "rolling_forcing"): "rolling",
        ("self_forcing", "deep_forcing"): "block",
    }
