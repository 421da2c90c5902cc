"""Typed configuration of a metrics run (plain dataclasses; no Hydra in the library)."""

from __future__ import annotations

from dataclasses import dataclass, field

from deepforcing.errors import ConfigError

from .specs import SPECS, VBENCH_SEVEN

DEFAULT_DIMENSIONS = ("temporal_flickering", *VBENCH_SEVEN)


@dataclass
class ClipProtocol:
    """VBench-Long: cut each video into fixed-length clips, score each, average.

    ``seconds`` overrides the per-dimension default (2 s for the quality dimensions, 10 s for overall
    consistency and CLIP score). A clip holds ``int(fps) * seconds`` frames, as VBench-Long counts them;
    the last remainder is padded backwards into one more full-length clip; a video shorter than one clip
    is scored whole. ``enabled=False`` scores every video as a single clip (plain VBench).

    ``static_filter`` is VBench-Long's ``--static_filter_flag`` for temporal flickering: only clips that
    its RAFT static test finds static are scored (needs ``raft_things``), at most ``static_max_clips`` of
    them for the video's score (VBench-Long keeps 5 per prompt; here per video, in clip order). A video
    with no static clip gets an error for that dimension, not a number.
    """

    enabled: bool = True
    seconds: dict[str, float] = field(default_factory=dict)
    static_filter: bool = False
    static_max_clips: int | None = 5
    #: VBench-Long's ``--use_semantic_splitting``: cut at scene changes first (PySceneDetect ContentDetector
    #: at ``scene_threshold``), clip each scene on its own, score = mean over scenes of their clip means
    scene_split: bool = False
    scene_threshold: float = 35.0

    def seconds_for(self, dim: str) -> float | None:
        if not self.enabled:
            return None
        return float(self.seconds.get(dim, SPECS[dim].clip_seconds))


@dataclass
class DriftConfig:
    """Drift over time. Segments are non-overlapping windows of ``segment_seconds`` (the last padded
    backwards, so the last segment is exactly the last ``segment_seconds`` of the video)."""

    enabled: bool = True
    segment_seconds: float = 5.0
    edge_fraction: float = 0.15  # FramePack's start/end windows
    vde_chunks: int = 10  # BlockVid's VDE: N equal chunks
    vde_weighting: str = "linear"  # or "log"
    slope_seconds: float = 10.0  # least-squares slope reported per this many seconds
    edge_windows: bool = True  # compute FramePack windows (one extra score per window)
    vde: bool = True  # compute VDE chunks (N extra scores)


@dataclass
class SlowFastConfig:
    """VBench-Long's optional slow-fast fusion for subject/background consistency (off by default).

    fused = w_inclip * in-clip score + w_clip2clip * mapped clip-to-clip score (in-clip alone when the
    mapped score is 0). The clip-to-clip score applies the consistency formula to the first frame of every
    clip; the mapping table is VBench's ``configs/{subject,background}_mapping_table.yaml``.

    Encoders of the first frames, as VBench-Long's ``--sb_clip2clip_feat_extractor`` /
    ``--bg_clip2clip_feat_extractor``: subject ``dinov2`` (its default; DINOv2 ViT-B/14, needs
    ``dinov2_vitb14``) or ``dino`` (the dimension's DINO ViT-B/16); background ``clip`` (the dimension's CLIP
    ViT-B/32). VBench-Long's default background encoder, DreamSim, is not available here.
    """

    enabled: bool = False
    w_inclip: float = 0.5
    w_clip2clip: float = 0.5
    mapping_tables: dict[str, str] = field(default_factory=dict)  # dimension -> yaml path
    subject_encoder: str = "dinov2"
    background_encoder: str = "clip"


@dataclass
class EvalConfig:
    dimensions: tuple[str, ...] = DEFAULT_DIMENSIONS
    device: str = "auto"  # "auto" = cuda when available, else cpu
    cache_dir: str | None = None  # default: $VBENCH_CACHE_DIR or ~/.cache/vbench
    weights: dict[str, str] = field(default_factory=dict)  # weight key -> explicit path
    batch_size: int = 32  # frames per forward on a GPU (and the most on a CPU)
    #: on a CPU, ViT frames per forward are cut to about this many tokens (frames x tokens per frame): blocks
    #: of ~1 000 tokens keep the attention matrices in cache, where 32 DINO frames (12 heads x 197^2 x 32)
    #: ran slower than one frame at a time (benchmarks/eval_speed.py, docs/metrics.md)
    cpu_tokens_per_forward: int = 1024
    #: on a CPU, RAFT and AMT frame pairs per forward are cut to about this many pixels per frame x pairs:
    #: at 480x832 one pair per forward was fastest (AMT-S 5.4 s vs 7.1 s for 4 pairs at 4; RAFT 16.9 vs
    #: 18.5 s), at 128x192 8 pairs (docs/metrics.md); on a GPU 4 pairs per forward
    cpu_pixels_per_forward: int = 2**18
    clips: ClipProtocol = field(default_factory=ClipProtocol)
    drift: DriftConfig = field(default_factory=DriftConfig)
    slow_fast: SlowFastConfig = field(default_factory=SlowFastConfig)
    imaging_preprocess: str = "longer"  # VBench's imaging_quality_preprocessing_mode
    clip_fp16_on_cuda: bool = True  # as openai-clip's loader (hence VBench) does on GPU
    #: pixel frames of the first generated chunk and of every later one (chunk_seam_flicker's boundaries);
    #: the default is Wan's 3-latent-frame chunk through its 4x temporal VAE
    seams: tuple[int, int] = (9, 12)
    progress: bool = True
    #: write what each clip's score is made of into its JSON entry (per-frame MUSIQ MOS and aesthetic scores,
    #: per-pair RAFT flow scores, per-frame AMT errors); eval.score turns this on
    details: bool = False
    #: GPU only (ignored on CPU): "bf16" / "fp16" runs the model forwards under torch.autocast, and
    #: ``gpu_channels_last`` puts the convolutional nets (RAFT, AMT, MUSIQ) and their inputs in channels-last
    #: layout. Both off by default: autocast changes the numbers, and its per-dimension error against the fp32
    #: path has not been measured on a GPU yet (docs/metrics.md).
    gpu_autocast: str | None = None
    gpu_channels_last: bool = False
    #: dynamic degree: stop running RAFT on a clip's pairs once VBench's count is decided (enough pairs above
    #: the threshold, or too few left to get there); the score is the same, the JSON details list only the
    #: flows computed. False computes every pair (all per-pair flows in the details)
    flow_early_exit: bool = True

    def __post_init__(self) -> None:
        from . import METRICS

        self.dimensions = tuple(self.dimensions)
        for d in self.dimensions:
            METRICS.check(d)
        if self.imaging_preprocess not in ("longer", "shorter", "shorter_centercrop", "None"):
            raise ConfigError(
                f"imaging_preprocess={self.imaging_preprocess!r}; use one of longer, shorter, "
                "shorter_centercrop, None (VBench's imaging_quality_preprocessing_mode)."
            )
        if len(self.seams) != 2 or min(self.seams) < 1:
            raise ConfigError(f"seams must be two positive frame counts (first chunk, later chunks), got {self.seams}.")
        self.seams = tuple(int(s) for s in self.seams)
        if self.gpu_autocast not in (None, "bf16", "fp16"):
            raise ConfigError(f"gpu_autocast must be None, 'bf16' or 'fp16', got {self.gpu_autocast!r}.")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.cpu_tokens_per_forward < 1:
            raise ConfigError(f"cpu_tokens_per_forward must be >= 1, got {self.cpu_tokens_per_forward}.")
        if self.cpu_pixels_per_forward < 1:
            raise ConfigError(f"cpu_pixels_per_forward must be >= 1, got {self.cpu_pixels_per_forward}.")
        if self.drift.segment_seconds <= 0:
            raise ConfigError(f"drift.segment_seconds must be > 0, got {self.drift.segment_seconds}.")
        if not 0 < self.drift.edge_fraction <= 0.5:
            raise ConfigError(f"drift.edge_fraction must be in (0, 0.5], got {self.drift.edge_fraction}.")
        if self.drift.vde_weighting not in ("linear", "log"):
            raise ConfigError(f"drift.vde_weighting must be 'linear' or 'log', got {self.drift.vde_weighting!r}.")
        if self.slow_fast.subject_encoder not in ("dinov2", "dino"):
            raise ConfigError(f"slow_fast.subject_encoder={self.slow_fast.subject_encoder!r}; use 'dinov2' "
                              "(VBench-Long's default) or 'dino'.")
        if self.slow_fast.background_encoder != "clip":
            raise ConfigError(f"slow_fast.background_encoder={self.slow_fast.background_encoder!r}; only 'clip' is "
                              "available (VBench-Long's DreamSim encoder is not implemented).")
        if self.clips.scene_threshold <= 0:
            raise ConfigError(f"clips.scene_threshold must be > 0, got {self.clips.scene_threshold}.")
        if self.clips.static_max_clips is not None and self.clips.static_max_clips < 1:
            raise ConfigError(f"clips.static_max_clips must be >= 1 or None, got {self.clips.static_max_clips}.")
        for dim, s in self.clips.seconds.items():
            METRICS.check(dim)
            if s <= 0:
                raise ConfigError(f"clips.seconds[{dim!r}] must be > 0, got {s}.")

    def weight_keys(self, dim: str) -> tuple[str, ...]:
        """Weight files ``dim`` needs under this config (flickering's static filter adds RAFT)."""
        keys = SPECS[dim].weights
        if dim == "temporal_flickering" and self.clips.static_filter:
            keys = (*keys, *SPECS["dynamic_degree"].weights)
        if dim == "subject_consistency" and self.slow_fast.enabled and self.slow_fast.subject_encoder == "dinov2":
            keys = (*keys, "dinov2_vitb14")
        return keys

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
