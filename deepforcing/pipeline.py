"""One generation point: prompts -> latents (engine + policy) -> streamed pixels -> mp4 + metrics.

Library code, typed dataclasses only. A :class:`Runtime` keeps the loaded backbone, text encoder
(with its embedding cache), VAE and metric models for the life of the process, keyed by what they
were loaded from, so a sweep loads each once.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from deepforcing.cache import Geometry
from deepforcing.engine import Engine, RolloutConfig
from deepforcing.errors import ConfigError
from deepforcing.knobs import apply_knobs
from deepforcing.metrics.config import ClipProtocol
from deepforcing.model import CausalWan, preset, random_init_
from deepforcing.policies import build_policy
from deepforcing.store import Damage
from deepforcing.video import VideoWriter

SCORING_FIELDS = ("metrics", "segment_seconds", "clips")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@functools.lru_cache(maxsize=16)
def _digest_of(path: str, size: int, mtime_ns: int) -> str:
    """The store's file digest, kept per (path, size, mtime) so a sweep hashes each checkpoint once."""
    from deepforcing.store import file_digest

    return file_digest(path)["sha256"]


def _file_digest(path: Path) -> str | None:
    """sha256 of a checkpoint file, or of the weight files of a checkpoint folder together; None if
    there are none."""
    files = [path] if path.is_file() else []
    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.pt")) or sorted(path.glob("*.pth"))
    if not files:
        return None
    digests = [_digest_of(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()


@dataclass(frozen=True)
class ModelSpec:
    """Which backbone to run. ``kind="tiny"`` needs no files (seeded random weights); ``kind="toy"`` is the
    model trained on the toy world, whose checkpoint ships with the package (``checkpoint`` may name
    another folder or file of the same architecture)."""

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
        from deepforcing.model_files import KINDS

        if self.kind not in KINDS:
            raise ConfigError(f"model.kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        if self.kind in ("tiny", "toy") and self.config != self.kind:
            raise ConfigError(f"model.kind {self.kind!r} does not go with model.config {self.config!r}")
        if self.kind == "toy" and self.lora:
            raise ConfigError("model.lora is set, but kind 'toy' has no LoRA")

    def weights(self):
        """Where this model's files are expected (deepforcing.model_files)."""
        from deepforcing.model_files import WeightsConfig, default_root

        paths = {}
        if self.checkpoint and self.kind != "toy":
            paths[f"{self.kind}.generator"] = self.checkpoint
        if self.lora:
            paths[f"{self.kind}.lora"] = self.lora
        return WeightsConfig(root=self.weights_root or default_root(), paths=paths)

    def toy_checkpoint(self) -> Path:
        from deepforcing.model_files import TOY_CHECKPOINT

        return Path(self.checkpoint).expanduser() if self.checkpoint else TOY_CHECKPOINT

    def identity(self) -> dict:
        """What the point key needs beyond the settings: the toy checkpoint's content digest (it ships
        with the package and changes when it is retrained, at the same path). Real checkpoints are
        gigabytes under user paths; their identity stays their path."""
        if self.kind != "toy":
            return {}
        return {"weights_sha256": _file_digest(self.toy_checkpoint())}

    def check_files(self) -> None:
        """One WeightsError listing every missing file (and where to get it), before anything loads."""
        if self.kind == "toy":
            if not self.toy_checkpoint().exists():
                from deepforcing.errors import WeightsError

                raise WeightsError(
                    f"the toy model's checkpoint {self.toy_checkpoint()} is missing (model.checkpoint): it ships with "
                    "the package under deepforcing/assets/toy; reinstall, or retrain it with "
                    "experiments/train_toy.py (see its command.txt)")
        elif self.kind != "tiny":
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
    settings: tuple[tuple[str, Any], ...] = ()  # policy settings changed from the preset's (method.<field>=...)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    prompts: tuple[str, ...] = ()
    fps: float = 16.0
    metrics: tuple[str, ...] = ("temporal_flickering",)
    segment_seconds: float = 5.0
    clips: ClipProtocol = field(default_factory=ClipProtocol)  # VBench-Long clip lengths, static filter, scenes
    crf: int = 23

    def validate(self) -> None:
        """All checks that need no model: raises one ConfigError. Runs once per point (memoised)."""
        self._validated  # noqa: B018 - the cached property does the work

    @cached_property
    def _validated(self) -> bool:
        self.model.validate()
        self.rollout.validate()
        if not self.prompts:
            raise ConfigError("no prompts: give at least one prompt (prompts=... or a prompt file)")
        for i, p in enumerate(self.prompts):
            if not p or not p.strip():
                raise ConfigError(f"prompt {i} is empty; remove it or fill it in")
        self.policy.validate(self.geometry)  # bad policy settings, and settings that do not fit this rollout
        self.rollout.loop_for(self.policy)
        self.model.check_files()
        from deepforcing.metrics.config import DriftConfig, EvalConfig

        EvalConfig(dimensions=self.metrics, clips=self.clips, drift=DriftConfig(segment_seconds=self.segment_seconds))
        return True

    @cached_property
    def geometry(self) -> Geometry:
        """The rollout's geometry on this model, built once per point."""
        cfg = preset(self.model.config)
        cfg.check_latent_hw(self.rollout.latent_hw or cfg.latent_hw)
        return Geometry(grid=cfg.grid(self.rollout.latent_hw), chunk_frames=self.rollout.chunk_frames,
                        num_frames=self.rollout.num_frames, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                        head_dim=cfg.head_dim)

    @cached_property
    def policy(self):
        """The point's cache policy, built once (the engine resets it for every video)."""
        name, kwargs = apply_knobs(self.method, base=dict(self.settings), **dict(self.knobs))
        try:
            return build_policy(name, **kwargs)
        except ConfigError as e:
            raise ConfigError(f"method {self.method!r}: {e}") from None

    def labels(self) -> dict[str, Any]:
        """What sets this point apart from its preset: settings given field by field, then sweep knobs."""
        return {**dict(self.settings), **dict(self.knobs)}

    def build_policy(self):
        return self.policy

    def semantic(self) -> dict:
        """The resolved settings of the point: the policy appears as the settings it actually runs
        with, however the knobs were spelled."""
        d = asdict(self)
        d.pop("knobs")
        d.pop("settings")
        policy = self.build_policy().describe()
        policy.pop("sink_ratio", None)  # only a way to give the sink size, which is resolved here
        d["policy"] = policy
        d["prompts"] = list(self.prompts)
        return d

    def generation(self) -> dict:
        """The settings that decide the generated videos: the identity of the point in the store.
        Scoring settings are left out, so scoring anew never generates again."""
        d = self.semantic()
        for k in SCORING_FIELDS:
            d.pop(k)
        d["model"].update(self.model.identity())
        return d

    def scoring(self) -> dict:
        """What decides the scores of a generated video: the metrics, their versions and the protocol."""
        return {"metrics": list(self.metrics), "versions": metric_versions(self.metrics),
                "protocol": {"segment_seconds": self.segment_seconds, "clips": asdict(self.clips)}}


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
            if spec.kind == "toy":
                from deepforcing.toyworld.text import ToyTextEncoder

                return ToyTextEncoder(cfg.text_len, cfg.text_dim)
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
            if spec.kind == "toy":
                from deepforcing.toyworld.codec import ToyCodec

                return ToyCodec.from_config(cfg)
            return WanVAE(spec.weights().path("wan.vae"), device=spec.torch_device())

        return self._get("vae", (spec.kind, spec.config, spec.weights_root, spec.seed), build)

    def scorer(self, metrics: tuple[str, ...], segment_seconds: float, clips: ClipProtocol | None = None,
               seams: tuple[int, int] | None = None):
        import json

        from deepforcing.metrics.config import DriftConfig, EvalConfig
        from deepforcing.metrics.scorer import Scorer

        clips = clips or ClipProtocol()
        extra = {"seams": tuple(seams)} if seams is not None else {}

        def build():
            return Scorer(EvalConfig(dimensions=metrics, drift=DriftConfig(segment_seconds=segment_seconds),
                                     clips=clips, progress=False, **extra))

        key = (metrics, segment_seconds, json.dumps(asdict(clips), sort_keys=True), seams)
        return self._get("metrics", key, build)


def build_backbone(spec: ModelSpec) -> CausalWan:
    """Construct the backbone and load its weights (seeded random weights for the tiny kind)."""
    spec.validate()
    device, dtype = spec.torch_device(), DTYPES[spec.dtype]
    if spec.kind == "tiny":
        return random_init_(CausalWan(preset(spec.config)), spec.seed).to(device, dtype).eval()
    if spec.kind == "toy":  # the packaged checkpoint, through the loader's Wan folder path (strict load)
        from deepforcing.loading import load_generator

        spec.check_files()
        model = CausalWan(preset(spec.config))
        load_generator(model, spec.toy_checkpoint(), kind="auto")
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


def seams(point: PointConfig) -> tuple[int, int]:
    """Pixel frames of the point's first generated chunk and of every later one (chunk boundaries)."""
    from deepforcing.vae import pixel_frames

    stride = preset(point.model.config).vae_stride[0]
    chunk = point.rollout.chunk_frames
    return pixel_frames(chunk, stride), chunk * stride


def _video_size(spec: ModelSpec, rollout: RolloutConfig) -> RolloutConfig:
    if rollout.latent_hw is None:  # the preset's video size, whatever the checkpoint's config says
        rollout = replace(rollout, latent_hw=preset(spec.config).latent_hw)
    return rollout


class _Sink:
    """Where decoded chunks go: the mp4 (optional) and the streaming scorer (optional)."""

    def __init__(self, runtime: Runtime, point: PointConfig, prompt: str, name: str, mp4: Path | None,
                 dims: tuple[str, ...], latent_frames: int):
        from deepforcing.metrics.scorer import StreamingScorer
        from deepforcing.vae import pixel_frames

        vae = runtime.vae(point.model)
        self.decoder = vae.stream(output="uint8")
        self.writer = VideoWriter(mp4, fps=point.fps, crf=point.crf) if mp4 is not None else None
        scorer = runtime.scorer(dims, point.segment_seconds, point.clips, seams(point)) if dims else None
        # the video's length is known in advance, so the scorer keeps only the frames of clips still to score
        self.stream = StreamingScorer(scorer, point.fps, prompt=prompt, layout="TCHW", name=name,
                                      num_frames=pixel_frames(latent_frames, vae.stride[0])) if scorer else None
        self.frames = 0

    def push(self, latents: torch.Tensor) -> None:
        frames = self.decoder.push(latents.float())[0]  # [T, 3, H, W] uint8
        if self.writer is not None:
            self.writer.write(frames.permute(0, 2, 3, 1))
        if self.stream is not None:
            self.stream.push(frames)
        self.frames += len(frames)

    def close(self, ok: bool) -> dict | None:
        """Finish the mp4 (or drop it) and return the scores."""
        if self.writer is not None:
            self.writer.close() if ok else self.writer.abort()
        return self.stream.finalize().to_dict() if (ok and self.stream is not None) else None


def generate_video(
    runtime: Runtime, point: PointConfig, prompt: str, video_path: Path, name: str,
    on_chunk: Callable[[Any], None] | None = None, text_cache: str | os.PathLike | None = None,
    progress: bool = False, latents_path: Path | None = None,
) -> dict:
    """Generate one video, streaming decode -> mp4 and -> metrics; the clean latents (and the generation
    record) go to ``latents_path`` when given. Returns the video's record."""
    spec = point.model
    engine = runtime.engine(spec)
    encoder = runtime.text_encoder(spec, text_cache)
    ctx = encoder.encode([prompt]).to(engine.model.device)
    text = engine.model.text_state(ctx)
    policy = point.build_policy()
    rollout = _video_size(spec, point.rollout)
    sink = _Sink(runtime, point, prompt, name, video_path, point.metrics, rollout.num_frames)
    chunks: list[dict] = []
    latents: list[torch.Tensor] = []
    tic = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(total=rollout.num_frames // rollout.chunk_frames, desc=name[:30], unit="chunk", leave=False,
               disable=not progress)
    ok = False
    try:
        def callback(event):
            bar.update(1)
            sink.push(event.latents)
            if latents_path is not None:
                latents.append(event.latents[0].detach().to("cpu", copy=True))
            chunks.append({"index": event.index, "seconds": event.seconds, **event.diagnostics})
            if on_chunk is not None:
                on_chunk(event)

        engine.generate(text, policy, rollout, callback=callback, keep_latents=False)  # chunks go to the callback
        ok = True
    finally:
        bar.close()
        metrics = sink.close(ok)
    seconds = time.perf_counter() - tic
    gen = {"prompt": prompt, "video": video_path.name, "frames": sink.frames, "seconds": seconds,
           "fps": sink.frames / seconds if seconds else None, "diagnostics": chunks,
           "chunks": [len(t) for t in latents]}
    if latents_path is not None:
        from deepforcing.store import save_latents

        save_latents(latents_path, torch.cat(latents), gen)
    return {**gen, "metrics": metrics}


def replay_video(runtime: Runtime, point: PointConfig, latents_path: Path, name: str, dims: tuple[str, ...],
                 mp4: Path | None = None) -> tuple[dict, dict | None]:
    """Decode stored latents exactly as during generation (same chunks, same decoder) into the scorer
    for ``dims`` and, when ``mp4`` is given, into a new mp4. Returns (generation record, scores)."""
    from deepforcing.store import load_latents

    lat, gen = load_latents(latents_path)
    sink = _Sink(runtime, point, gen["prompt"], name, mp4, dims, len(lat))
    ok = False
    try:
        device = point.model.torch_device()
        for part in torch.split(lat, gen["chunks"]):
            sink.push(part[None].to(device))
        ok = True
    finally:
        metrics = sink.close(ok)
    return gen, metrics


def metric_versions(metrics: tuple[str, ...]) -> dict[str, str]:
    from deepforcing.metrics import SPECS

    return {m: SPECS[m].version for m in metrics}


def dims_to_score(record: dict | None, scoring: dict) -> tuple[str, ...]:
    """The requested metrics a video record lacks: never scored, pending (weights were missing), scored
    by another metric version, or under another protocol (segment length, clip rules)."""
    if record is None or record.get("scoring") != scoring["protocol"]:
        return tuple(scoring["metrics"])
    have = ((record.get("metrics") or {}).get("dimensions")) or {}
    return tuple(m for m in scoring["metrics"] if (have.get(m) or {}).get("version") != scoring["versions"][m])


def merge_scores(old: dict | None, new: dict | None, protocol_changed: bool) -> dict | None:
    """``old`` metrics with the dimensions of ``new`` put in (or replaced)."""
    if old is None or protocol_changed:
        return new
    if new is None:
        return old
    dims = {**(old.get("dimensions") or {}), **(new.get("dimensions") or {})}
    skipped = {k: v for k, v in (old.get("skipped") or {}).items() if k not in dims}
    skipped.update({k: v for k, v in (new.get("skipped") or {}).items() if k not in dims})
    return {**old, **{k: v for k, v in new.items() if k not in ("dimensions", "skipped", "decode_seconds")},
            "dimensions": dims, "skipped": skipped}


def summarize(records: list[dict], metrics: tuple[str, ...]) -> dict:
    """Per-point means over videos of every metric's long score and drift, plus throughput. A metric
    whose weights were missing is *pending* (``pending``: metric -> videos), not an error."""
    out: dict[str, Any] = {"videos": len(records)}
    pending: dict[str, list[str]] = {}
    for m in metrics:
        vals, drift, errors = [], [], []
        for r in records:
            res = r.get("metrics") or {}
            dim = (res.get("dimensions") or {}).get(m)
            if dim is None and not res.get("error"):  # not scored yet: its weights were missing
                pending.setdefault(m, []).append(r["video"])
                continue
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
    out["pending"] = pending
    return out


class NotGenerated(RuntimeError):
    """Rescoring was asked for a video that has no stored latents."""


def run_point(
    point: PointConfig, runtime: Runtime, root: str | os.PathLike, sweep: str,
    progress: bool = True, logger: Any = None, generate: bool = True,
) -> dict:
    """Generate and score every prompt of ``point`` into the store; resumable, atomic, safe to run
    from several processes at once (one holds the point, the others wait and then skip it).

    Damaged files are moved aside and only what they held is recomputed. Metrics that are missing,
    pending (weights were absent) or of another version are scored from the stored latents, without
    generating again; ``generate=False`` never generates (a video without latents is an error).
    Returns the summary (also written to ``summary.json``); ``skipped`` is True when nothing was
    left to do. A failing point records ``error.json`` and re-raises.
    """
    import traceback

    from deepforcing.store import PointStore, point_key

    point.validate()
    generation, scoring = point.generation(), point.scoring()
    key = point_key(generation)
    store = PointStore(root, sweep, key)
    names = [prompt_slug(i, p) for i, p in enumerate(point.prompts)]
    with store.lock():
        store.sweep_partials()
        records, damaged = store.check(names)
        store.quarantine(damaged)
        summary = None if any(d.path.name == "summary.json" for d in damaged) else store.read("summary", "summary")
        complete = all(records[n] is not None and store.latents_path(n).exists()
                       and store.video_paths(n)[0].exists() for n in names)
        if (summary is not None and complete and summary.get("scoring") == scoring and not summary.get("pending")
                and not damaged):
            return {**summary, "skipped": True}
        store.start({"key": key, "method": point.method, "knobs": point.labels(), "config": point.semantic(),
                     "generation": generation, "scoring": scoring})
        if logger is not None:
            logger.start(key, point.semantic(), dict(point.knobs))
        try:
            changed = summary is None or summary.get("scoring") != scoring or bool(damaged)
            from tqdm.auto import tqdm

            bar = tqdm(list(zip(names, point.prompts, strict=True)), desc=f"{point.method} [{key[:8]}]",
                       disable=not progress, unit="video")
            for name, prompt in bar:
                changed |= _fill_video(runtime, point, store, name, prompt, records[name], scoring, generate,
                                       logger, Path(root) / ".cache" / "text", progress)
            records_now = store.video_records()
            summary = {"key": key, "method": point.method, "knobs": point.labels(), "scoring": scoring,
                       **summarize(records_now, point.metrics)}
            store.finish(summary)
            if changed:
                from deepforcing.plan import record_throughput

                mp4_bytes = sum(((r.get("files") or {}).get("mp4") or {}).get("bytes", 0) for r in records_now)
                record_throughput(root, point, records_now, mp4_bytes)
            if logger is not None:
                logger.finish(summary)
            return {**summary, "skipped": not changed}
        except Exception as e:
            store.fail(f"{type(e).__name__}: {e}", traceback.format_exc())
            if logger is not None:
                logger.fail(str(e))
            raise


def _fill_video(runtime: Runtime, point: PointConfig, store, name: str, prompt: str, record: dict | None,
                scoring: dict, generate: bool, logger: Any, text_cache: Path, progress: bool) -> bool:
    """Bring one video of the point up to date; True when anything was (re)computed.

    With its latents stored, a video is never generated again: a lost or damaged mp4 is re-encoded and
    missing metrics are scored from the latents, decoded as during generation (same numbers)."""
    from deepforcing.store import DamagedFile, file_digest

    mp4, _ = store.video_paths(name)
    lat = store.latents_path(name)
    if lat.exists():
        need = dims_to_score(record, scoring)
        scorer = runtime.scorer(need, point.segment_seconds, point.clips, seams(point)) if need else None
        can_score = scorer is not None and any(m not in scorer.skipped for m in need)
        write_mp4 = record is None or not mp4.exists()
        if not can_score and not write_mp4:
            return False  # up to date, or its missing metrics still lack their weights
        try:
            gen, scores = replay_video(runtime, point, lat, name, need, mp4 if write_mp4 else None)
        except DamagedFile as e:
            store.quarantine([Damage(e.path, e.reason)])
        else:
            protocol_changed = record is None or record.get("scoring") != scoring["protocol"]
            kept = {k: (record or {})[k] for k in ("seconds", "fps") if k in (record or {})}
            new = {**gen, **kept, "metrics": merge_scores((record or {}).get("metrics"), scores, protocol_changed),
                   "scoring": scoring["protocol"], "files": {"mp4": file_digest(mp4), "latents": file_digest(lat)}}
            store.save_video_record(name, new)
            if logger is not None:
                logger.video(name, new, mp4)
            return True
    if not generate:
        raise NotGenerated(f"{store.dir}/videos/{name}: no stored latents to rescore; run without rescore=true "
                           "to generate it")
    on_chunk = (lambda ev, n=name: logger.chunk(n, ev)) if logger is not None else None
    record = generate_video(runtime, point, prompt, mp4, name, on_chunk=on_chunk, text_cache=text_cache,
                            progress=progress, latents_path=lat)
    record.update(scoring=scoring["protocol"], files={"mp4": file_digest(mp4), "latents": file_digest(lat)})
    store.save_video_record(name, record)
    if logger is not None:
        logger.video(name, record, mp4)
    return True
