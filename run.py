"""Generate and score videos under a KV-cache policy; one Hydra job per sweep point.

    python run.py                                   # embedded default: tiny model on CPU
    python run.py -m sink_ratio=0.25,0.5            # a sweep: two points, one shared engine
    python run.py model=self_forcing method=deep_forcing prompts=moviegen128 length_s=30

Every job of a multirun runs in this process and reuses the loaded models. Results land in
``<out_dir>/<sweep>/<point key>/`` (see deepforcing/store.py); finished points are skipped.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import fields
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from deepforcing.engine import RolloutConfig
from deepforcing.errors import ConfigError
from deepforcing.knobs import latent_frames_for_seconds
from deepforcing.loggers import make_logger
from deepforcing.metrics.config import ClipProtocol
from deepforcing.model import preset
from deepforcing.pipeline import ModelSpec, PointConfig, Runtime, run_point
from deepforcing.plan import PlanLimits, plan_point
from eval.sweep import INVOCATION_ENV, compile_sweep, new_invocation, outcome_dir

log = logging.getLogger("deepforcing")
RUNTIME = Runtime()  # shared by every job of this process


def method_schema(name: str) -> type:
    """The ``method=<name>`` config: the preset's name and its policy's settings, typed by the policy's
    dataclass fields (so ``method.window=abc`` or ``method.windw=3`` fail when the config is composed)."""
    import typing
    from dataclasses import field, fields, make_dataclass

    from deepforcing.policies import preset

    cls, p = preset(name)
    hints = typing.get_type_hints(cls)
    values = {f.name: p.settings.get(f.name, f.default) for f in fields(cls)}
    return make_dataclass(f"method_{name}", [("preset", str, field(default=name))] + [
        (k, hints[k], field(default=v)) for k, v in values.items()])


def register_methods() -> None:
    """``method=`` and ``compression=`` choices: every registered preset and Participative Compression
    scorer (ours and plug-ins'), generated from the catalogue."""
    from hydra.core.config_store import ConfigStore

    from deepforcing.policies import preset_names
    from deepforcing.policies.pc_scorers import SCORERS

    cs = ConfigStore.instance()
    for name in preset_names():
        cs.store(group="method", name=name, node=method_schema(name))
    # compression=<scorer>: Participative Compression ranked by that scorer; none: Deep Sink alone;
    # preset (the default): the method's own
    for name, value in [("preset", None), ("none", "none"), *((n, n) for n in sorted(SCORERS))]:
        cs.store(group="compression", name=name, node={"compression_policy": value}, package="_global_")


register_methods()


def read_prompts(cfg: DictConfig) -> tuple[str, ...]:
    p = cfg.prompts
    if p.get("list"):
        prompts = list(p.list)
    elif p.get("set"):
        from deepforcing.prompts import read_set

        prompts = read_set(p.set)
    elif p.get("file"):
        path = Path(p.file)
        if not path.exists():
            raise ConfigError(f"prompt file {path} does not exist; set prompts.file or DEEPFORCING_PROMPTS")
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        raise ConfigError("prompts: give prompts.list, prompts.set (a published set) or prompts.file")
    if p.get("first"):
        prompts = prompts[: int(p.first)]
    return tuple(prompts)


def point_from_cfg(cfg: DictConfig) -> PointConfig:
    """Translate the Hydra config into the library's typed point config (validates, loads nothing)."""
    model = ModelSpec(**OmegaConf.to_container(cfg.model, resolve=True))
    model.validate()
    mcfg = preset(model.config)
    from deepforcing.policies import preset as policy_preset

    method = OmegaConf.to_container(cfg.method, resolve=True)
    name = method.pop("preset")
    policy_cls, defaults = policy_preset(name)
    schema = {k: v for k, v in vars(method_schema(name)()).items() if k != "preset"}
    settings = tuple((k, v) for k, v in method.items() if v != schema.get(k))  # changed on the command line
    # the preset's rollout settings are defaults; whatever the command line or config sets wins
    given = {k: v for k, v in OmegaConf.to_container(cfg.rollout, resolve=True).items() if v is not None}
    r = {**defaults.rollout, **given}
    num_frames = cfg.num_frames
    if cfg.length_s is not None:
        chunk = r.get("chunk_frames", RolloutConfig.chunk_frames)
        num_frames = latent_frames_for_seconds(cfg.length_s, cfg.fps, mcfg.vae_stride[0], chunk)
    # still unset steps / shift / sampler: the model preset's own (distilled generators: four steps; the toy
    # model more); Rolling Forcing's joint window always re-noises
    r.setdefault("steps", mcfg.sample_steps)
    r.setdefault("shift", mcfg.sample_shift)
    rolling = (r.get("rollout") or policy_cls.needs) == "rolling"
    r.setdefault("sampler", "renoise" if rolling else mcfg.sampler)
    r["steps"] = tuple(r["steps"])
    rollout = RolloutConfig(num_frames=num_frames, seed=cfg.seed, **r)
    values = {"sink_ratio": cfg.sink_ratio, "rope_align": cfg.rope_align, "compression": cfg.compression_policy,
              "budget": cfg.budget, "recent": cfg.recent}
    knobs = tuple((k, v) for k, v in values.items() if v is not None)
    point = PointConfig(
        model=model, method=name, knobs=knobs, settings=settings, rollout=rollout, prompts=read_prompts(cfg),
        fps=cfg.fps, metrics=tuple(cfg.metric_dims), segment_seconds=cfg.segment_seconds, crf=cfg.crf,
        clips=clip_protocol(cfg),
    )
    point.validate()
    return point


def clip_protocol(cfg: DictConfig) -> ClipProtocol:
    """``clips:`` of the config (VBench-Long options) as the library's typed ClipProtocol."""
    c = OmegaConf.to_container(cfg.get("clips") or {}, resolve=True)
    c["seconds"] = c.get("seconds") or {}
    unknown = set(c) - {f.name for f in fields(ClipProtocol)}
    if unknown:
        raise ConfigError(f"clips: unknown option(s) {sorted(unknown)}; known: "
                          f"{[f.name for f in fields(ClipProtocol)]}")
    return ClipProtocol(**c)


def plan_limits(cfg: DictConfig) -> PlanLimits:
    return PlanLimits(**OmegaConf.to_container(cfg.plan, resolve=True))


def _multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def write_outcome(cfg: DictConfig, outcome: dict) -> None:
    """This job's outcome, for the end-of-sweep report of the process that launched it (eval.sweep)."""
    from deepforcing.store import write_json_atomic

    d = outcome_dir(cfg.out_dir, cfg.sweep)
    write_json_atomic(d / f"job-{HydraConfig.get().job.num}.json", outcome)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    try:
        point = point_from_cfg(cfg)
        plan = plan_point(point, cfg.out_dir)
        log.info("%s %s: %s", point.method, dict(point.knobs), plan.describe())
        plan.check(plan_limits(cfg), force=cfg.force)
    except ConfigError as e:
        if not _multirun():
            raise
        outcome = {"status": "failed", "error": f"{type(e).__name__}: {e}", "overrides": _overrides()}
        print(f"FAILED (bad settings) {_overrides()}: {e}", file=sys.stderr, flush=True)
        write_outcome(cfg, outcome)
        return outcome
    if point.model.kind in ("tiny", "toy") and point.model.torch_device().type == "cpu":
        torch.set_num_threads(1)  # the small models' small ops run many times faster on one thread
    lcfg = OmegaConf.to_container(cfg.logger, resolve=True)
    logger = make_logger(lcfg.pop("kind"), group=cfg.sweep, **lcfg)
    try:
        summary = run_point(point, RUNTIME, cfg.out_dir, cfg.sweep, logger=logger, generate=not cfg.rescore)
    except Exception as e:  # recorded in the point's error.json by run_point
        if not _multirun():
            if cfg.compile:
                compile_sweep(Path(cfg.out_dir), cfg.sweep, logger=compile_logger(logger))
            raise
        print(f"FAILED {point.method} {dict(point.knobs)}: {type(e).__name__}: {e} (the sweep goes on)",
              file=sys.stderr, flush=True)
        outcome = {"status": "failed", "error": f"{type(e).__name__}: {e}", "overrides": _overrides()}
        write_outcome(cfg, outcome)
        return outcome
    if _multirun():
        write_outcome(cfg, {"status": "done", "key": summary["key"], "overrides": _overrides()})
    elif cfg.compile:
        compile_sweep(Path(cfg.out_dir), cfg.sweep, logger=compile_logger(logger))
    status = "up to date (skipped)" if summary.get("skipped") else "done"
    metrics = ", ".join(f"{m}={summary[m]:.4f}" for m in point.metrics if summary.get(m) is not None)
    pending = ", ".join(f"{m} ({len(v)} videos)" for m, v in (summary.get("pending") or {}).items())
    log.info("%s %s %s: %s videos, %s, %.1f FPS%s", status, point.method, dict(point.knobs), summary["videos"],
             metrics, summary.get("fps") or 0.0, f"; pending (weights missing): {pending}" if pending else "")
    return summary


def compile_logger(logger):
    """The point's logger, for the compile run of a single run's sweep (None for logger=none)."""
    from deepforcing.loggers import NullLogger

    return None if type(logger) is NullLogger else logger


def _overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task)


if __name__ == "__main__":
    os.environ.setdefault(INVOCATION_ENV, new_invocation())  # shared with launched jobs (eval.sweep)
    main()
