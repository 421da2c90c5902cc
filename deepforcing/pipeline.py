"""One generation point: prompts -> latents (engine + policy) -> streamed pixels -> mp4 + metrics.

Library code, typed dataclasses only. A :class:`Runtime` keeps the loaded backbone, text encoder
(with its embedding cache), VAE and metric models for the life of the process, keyed by what they
were loaded from, so a sweep loads each once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from deepforcing.cache import Geometry
from deepforcing.engine import Engine, RolloutConfig
from deepforcing.errors import ConfigError
from deepforcing.knobs import apply_knobs
from deepforcing.metrics.config import ClipProtocol
from deepforcing.model import CausalWan, preset
from deepforcing.policies import build_policy
from deepforcing.video import VideoWriter

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSpec:
    """Which backbone to run. ``kind="tiny"`` needs no files (seeded random weights)."""

    kind: str = "tiny"
    config: str = "tiny"  # ModelConfig preset
    weights_root: str | None = None
    checkpoint: str | None = None  # explicit generator file (overrides the kind's default location)
    lora: str | None = None
    lora_mode: str = "merged"
    dtype: str = "float32"
    device: str = "auto"
    seed: int = 0  # random weights of the tiny kind

    def validate(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"model.dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        preset(self.config)
        if self.lora_mode not in ("merged", "unmerged"):
            raise ConfigError(f"model.lora_mode {self.lora_mode!r}: choose merged or unmerged")
        from deepforcing.weights import KINDS

        if self.kind not in KINDS:
            raise ConfigError(f"model.kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        if self.kind == "tiny" and self.config != "tiny":
            raise ConfigError(f"model.kind {self.kind!r} does not go with model.config {self.config!r}")

    def weights(self):
        """Where this model's files are expected (deepforcing.weights)."""
        from deepforcing.weights import WeightsConfig, default_root

        paths = {}
        if self.checkpoint:
            paths[f"{self.kind}.generator"] = self.checkpoint
        if self.lora:
            paths[f"{self.kind}.lora"] = self.lora
        return WeightsConfig(root=self.weights_root or default_root(), paths=paths)

    def check_files(self) -> None:
        """One WeightsError listing every missing file (and where to get it), before anything loads."""
        if self.kind != "tiny":
            self.weights().check(self.kind)

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass(frozen=True)
class PointConfig:
    """Everything that determines one sweep point's outputs."""

    model: ModelSpec = field(default_factory=ModelSpec)
    method: str = "rolling_window"  # a policy preset (deepforcing.policies.presets) or policy name
    knobs: tuple[tuple[str, Any], ...] = ()  # sweep knobs: sink_ratio, rope_align, compression, budget, recent
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    prompts: tuple[str, ...] = ()
    fps: float = 16.0
    metrics: tuple[str, ...] = ("temporal_flickering",)
    segment_seconds: float = 5.0
    clips: ClipProtocol = field(default_factory=ClipProtocol)  # VBench-Long clip lengths, static filter, scenes
    crf: int = 23

    def validate(self) -> None:
        """All checks that need no model: raises one ConfigError."""
        self.model.validate()
        self.rollout.validate()
        if not self.prompts:
            raise ConfigError("no prompts: give at least one prompt (prompts=... or a prompt file)")
        for i, p in enumerate(self.prompts):
            if not p or not p.strip():
                raise ConfigError(f"prompt {i} is empty; remove it or fill it in")
        cfg = preset(self.model.config)
        cfg.check_latent_hw(self.rollout.latent_hw or cfg.latent_hw)
        geom = Geometry(grid=cfg.grid(self.rollout.latent_hw), chunk_frames=self.rollout.chunk_frames,
                        num_frames=self.rollout.num_frames, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                        head_dim=cfg.head_dim)
        self.build_policy().validate(geom)  # bad policy settings, and settings that do not fit this rollout
        self.model.check_files()
        from deepforcing.metrics.config import DriftConfig, EvalConfig

        EvalConfig(dimensions=self.metrics, clips=self.clips, drift=DriftConfig(segment_seconds=self.segment_seconds))

    def build_policy(self):
        name, kwargs = apply_knobs(self.method, **dict(self.knobs))
        try:
            return build_policy(name, **kwargs)
        except TypeError as e:
            raise ConfigError(f"method {self.method!r} ({name}) does not take these settings: {e}") from None

    def semantic(self) -> dict:
        """The resolved settings that decide the outputs (the identity of the point): the policy
        appears as the settings it actually runs with, however the knobs were spelled."""
        d = asdict(self)
        d.pop("knobs")
        policy = self.build_policy().describe()
        policy.pop("sink_ratio", None)  # only a way to give the sink size, which is resolved here
        d["policy"] = policy
        d["prompts"] = list(self.prompts)
        return d


class Runtime:
    """Process-wide cache of loaded models, keyed by what they were loaded from."""

    def __init__(self):
        self._models: dict[Any, Any] = {}
        self.loads: dict[str, int] = {}

    def _get(self, kind: str, key: Any, build: Callable[[], Any]) -> Any:
        if (kind, key) not in self._models:
            self._models[(kind, key)] = build()
            self.loads[kind] = self.loads.get(kind, 0) + 1
        return self._models[(kind, key)]

    def engine(self, spec: ModelSpec) -> Engine:
        return self._get("backbone", spec, lambda: Engine(build_backbone(spec)))

    def text_encoder(self, spec: ModelSpec, cache_dir: str | os.PathLike | None = None):
        from deepforcing.text import CachedTextEncoder, RandomTextEncoder, UMT5TextEncoder

        def build():
            cfg = preset(spec.config)
            if spec.kind == "tiny":
                return RandomTextEncoder(cfg.text_len, cfg.text_dim, seed=spec.seed)
            w = spec.weights()
            enc = UMT5TextEncoder(w.path("wan.t5"), w.path("wan.tokenizer"), text_len=cfg.text_len,
                                  dtype=DTYPES[spec.dtype], device=spec.torch_device())
            return CachedTextEncoder(enc, cache_dir) if cache_dir else enc

        return self._get("text", (spec.kind, spec.config, spec.weights_root, spec.seed, spec.dtype, str(cache_dir)),
                         build)

    def vae(self, spec: ModelSpec):
        from deepforcing.vae import TinyVAE, WanVAE

        def build():
            cfg = preset(spec.config)
            if spec.kind == "tiny":
                return TinyVAE(latent_channels=cfg.in_dim, stride=cfg.vae_stride, seed=spec.seed)
            return WanVAE(spec.weights().path("wan.vae"), device=spec.torch_device())

        return self._get("vae", (spec.kind, spec.config, spec.weights_root, spec.seed), build)

    def scorer(self, metrics: tuple[str, ...], segment_seconds: float, clips: ClipProtocol | None = None):
        import json

        from deepforcing.metrics.config import DriftConfig, EvalConfig
        from deepforcing.metrics.scorer import Scorer

        clips = clips or ClipProtocol()

        def build():
            return Scorer(EvalConfig(dimensions=metrics, drift=DriftConfig(segment_seconds=segment_seconds),
                                     clips=clips, progress=False))

        key = (metrics, segment_seconds, json.dumps(asdict(clips), sort_keys=True))
        return self._get("metrics", key, build)


def build_backbone(spec: ModelSpec) -> CausalWan:
    """Construct the backbone and load its weights (seeded random weights for the tiny kind)."""
    spec.validate()
    device, dtype = spec.torch_device(), DTYPES[spec.dtype]
    if spec.kind == "tiny":
        gen = torch.Generator().manual_seed(spec.seed)
        model = CausalWan(preset(spec.config))
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        return model.to(device, dtype).eval()
    from deepforcing.loading import build_generator

    model, _ = build_generator(spec.kind, weights=spec.weights(), dtype=dtype, device=device,
                               lora_mode=spec.lora_mode)
    expected = preset(spec.config)
    arch = ("dim", "ffn_dim", "freq_dim", "num_heads", "num_layers", "in_dim", "out_dim", "text_dim", "text_len")
    diff = {k: (getattr(model.cfg, k), getattr(expected, k)) for k in arch
            if getattr(model.cfg, k) != getattr(expected, k)}
    if diff:
        raise ConfigError(f"the {spec.kind} checkpoint's config.json does not match model.config={spec.config!r}: "
                          + ", ".join(f"{k} {a} (preset {b})" for k, (a, b) in diff.items()))
    return model


def prompt_slug(index: int, prompt: str) -> str:
    words = "".join(c if c.isalnum() else "_" for c in prompt.lower()[:40]).strip("_")
    return f"{index:04d}_{words}"


def generate_video(
    runtime: Runtime, point: PointConfig, prompt: str, video_path: Path, name: str,
    on_chunk: Callable[[Any], None] | None = None, text_cache: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict:
    """Generate one video, streaming decode -> mp4 and -> metrics. Returns its record."""
    spec = point.model
    engine = runtime.engine(spec)
    encoder = runtime.text_encoder(spec, text_cache)
    ctx = encoder.encode([prompt]).to(engine.model.device)
    text = engine.model.text_state(ctx)
    vae = runtime.vae(spec)
    decoder = vae.stream(output="uint8")
    scorer = runtime.scorer(point.metrics, point.segment_seconds, point.clips) if point.metrics else None
    policy = point.build_policy()
    rollout = point.rollout
    if rollout.latent_hw is None:  # the preset's video size, whatever the checkpoint's config says
        rollout = replace(rollout, latent_hw=preset(spec.config).latent_hw)
    from deepforcing.metrics.scorer import StreamingScorer
    from deepforcing.vae import pixel_frames

    # the video's length is known in advance, so the scorer keeps only the frames of clips still to score
    stream = StreamingScorer(scorer, point.fps, prompt=prompt, layout="TCHW", name=name,
                             num_frames=pixel_frames(rollout.num_frames, vae.stride[0])) if scorer else None
    chunks: list[dict] = []
    tic = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(total=rollout.num_frames // rollout.chunk_frames, desc=name[:30], unit="chunk", leave=False,
               disable=not progress)
    with VideoWriter(video_path, fps=point.fps, crf=point.crf) as writer:
        def callback(event):
            bar.update(1)
            frames = decoder.push(event.latents.float())[0]  # [T, 3, H, W] uint8
            writer.write(frames.permute(0, 2, 3, 1))
            if stream is not None:
                stream.push(frames)
            chunks.append({"index": event.index, "seconds": event.seconds, **event.diagnostics})
            if on_chunk is not None:
                on_chunk(event)

        engine.generate(text, policy, rollout, callback=callback, keep_latents=False)  # chunks go to the callback
    bar.close()
    seconds = time.perf_counter() - tic
    result = stream.finalize() if stream is not None else None
    return {
        "prompt": prompt,
        "video": video_path.name,
        "frames": writer.frames,
        "seconds": seconds,
        "fps": writer.frames / seconds if seconds else None,
        "metrics": result.to_dict() if result is not None else None,
        "diagnostics": chunks,
    }


def metric_versions(metrics: tuple[str, ...]) -> dict[str, str]:
    from deepforcing.metrics import SPECS

    return {m: SPECS[m].version for m in metrics}


def summarize(records: list[dict], metrics: tuple[str, ...]) -> dict:
    """Per-point means over videos of every metric's long score and drift, plus throughput."""
    out: dict[str, Any] = {"videos": len(records)}
    for m in metrics:
        vals, drift, errors = [], [], []
        for r in records:
            dim = ((r.get("metrics") or {}).get("dimensions") or {}).get(m)
            if dim is None or dim.get("error"):
                errors.append(r["video"])
                continue
            vals.append(dim["score"])
            if (dim.get("drift") or {}).get("abs_delta") is not None:
                drift.append(dim["drift"]["abs_delta"])
        out[m] = sum(vals) / len(vals) if vals else None
        out[f"{m}/abs_drift"] = sum(drift) / len(drift) if drift else None
        if errors:
            out[f"{m}/errors"] = errors
    secs = sum(r["seconds"] for r in records)
    out["fps"] = sum(r["frames"] for r in records) / secs if secs else None
    return out


def run_point(
    point: PointConfig, runtime: Runtime, root: str | os.PathLike, sweep: str,
    progress: bool = True, logger: Any = None,
) -> dict:
    """Generate and score every prompt of ``point`` into the store; resumable and atomic.

    Returns the summary (also written to ``summary.json``). A failing point records ``error.json``
    and re-raises.
    """
    import traceback

    from tqdm.auto import tqdm

    from deepforcing.store import PointStore, point_key

    point.validate()
    semantic = point.semantic()
    versions = metric_versions(point.metrics)
    key = point_key(semantic, versions)
    store = PointStore(root, sweep, key)
    if store.done:
        from deepforcing.store import read_json

        return {**read_json(store.dir / "summary.json"), "skipped": True}
    store.start({"key": key, "method": point.method, "knobs": dict(point.knobs), "config": semantic,
                 "metric_versions": versions})
    if logger is not None:
        logger.start(key, semantic)
    try:
        names = [prompt_slug(i, p) for i, p in enumerate(point.prompts)]
        bar = tqdm(list(zip(names, point.prompts, strict=True)), desc=f"{point.method} [{key[:8]}]",
                   disable=not progress, unit="video")
        for name, prompt in bar:
            if store.video_done(name):
                continue
            mp4, _ = store.video_paths(name)
            on_chunk = (lambda ev, n=name: logger.chunk(n, ev)) if logger is not None else None
            record = generate_video(runtime, point, prompt, mp4, name, on_chunk=on_chunk,
                                    text_cache=Path(root) / ".cache" / "text", progress=progress)
            store.save_video_record(name, record)
            if logger is not None:
                logger.video(name, record, mp4)
        records = store.video_records()
        summary = {"key": key, "method": point.method, "knobs": dict(point.knobs), **summarize(records, point.metrics)}
        store.finish(summary)
        if logger is not None:
            logger.finish(summary)
        return summary
    except Exception as e:
        store.fail(f"{type(e).__name__}: {e}", traceback.format_exc())
        if logger is not None:
            logger.fail(str(e))
        raise
