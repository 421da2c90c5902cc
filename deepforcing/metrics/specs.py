"""Static description of every metric: direction, aggregation, version, weights, clip length.

Importing this module is cheap (no torch), so listing metrics, validating configs and printing the
weights table never load a model.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSpec:
    name: str
    direction: str  # "higher" or "lower" is better
    aggregation: str  # how one clip's score is formed, then how clips are combined
    version: str  # bump when the numbers a metric produces may change
    weights: tuple[str, ...]  # keys of deepforcing.metrics.weight_files.WEIGHT_FILES
    clip_seconds: float  # VBench-Long clip length (seconds)
    needs_prompt: bool = False
    min_side: int = 1  # smallest frame side (pixels) the model gives finite output for
    min_frames: int = 2  # frames a clip needs
    vbench_name: str | None = None  # name of vbench's own compute_<name> reference, if any
    #: how vbench (single process) combines videos into the dimension's score: "mean" over videos, or
    #: "pairs" (subject/background consistency: sum of frame-pair similarities / number of pairs, i.e. videos
    #: weighted by their frame pairs)
    vbench_run_mean: str = "mean"

    def __post_init__(self) -> None:
        if self.direction not in ("higher", "lower"):
            raise ValueError(f"direction must be 'higher' or 'lower', got {self.direction!r}")
        if self.vbench_run_mean not in ("mean", "pairs"):
            raise ValueError(f"vbench_run_mean must be 'mean' or 'pairs', got {self.vbench_run_mean!r}")


SPECS: dict[str, MetricSpec] = {
    s.name: s
    for s in (
        MetricSpec(
            "temporal_flickering", "higher",
            "clip: (255 - mean |frame_t+1 - frame_t|) / 255; video: mean over clips",
            "vbench0.1.5-1", (), 2.0, vbench_name="temporal_flickering",
        ),
        MetricSpec(
            "background_consistency", "higher",
            "clip: mean over frames i>=1 of (max(0,cos(f_i-1,f_i)) + max(0,cos(f_0,f_i)))/2 on CLIP ViT-B/32; "
            "video: mean over clips",
            "vbench0.1.5-1", ("clip_vit_b32",), 2.0, vbench_name="background_consistency", vbench_run_mean="pairs",
        ),
        MetricSpec(
            "subject_consistency", "higher",
            "clip: same first/previous-frame formula on DINO ViT-B/16 CLS features; video: mean over clips",
            "vbench0.1.5-1", ("dino_vitb16",), 2.0, vbench_name="subject_consistency", vbench_run_mean="pairs",
        ),
        MetricSpec(
            "aesthetic_quality", "higher",
            "clip: mean over frames of LAION head(CLIP ViT-L/14 embedding)/10; video: mean over clips",
            "vbench0.1.5-1", ("clip_vit_l14", "aesthetic_head"), 2.0, min_frames=1,
            vbench_name="aesthetic_quality",
        ),
        MetricSpec(
            "imaging_quality", "higher",
            "clip: mean over frames of MUSIQ-SPAQ MOS / 100; video: mean over clips",
            "vbench0.1.5-1", ("musiq_spaq",), 2.0, min_side=32, min_frames=1,
            vbench_name="imaging_quality",
        ),
        MetricSpec(
            "motion_smoothness", "higher",
            "clip: (255 - mean |odd frame - AMT-S interpolation of its even neighbours|)/255; "
            "video: mean over clips",
            "vbench0.1.5-1", ("amt_s",), 2.0, min_side=128, min_frames=3,
            vbench_name="motion_smoothness",
        ),
        MetricSpec(
            "dynamic_degree", "higher",
            "clip: 1 if at least round(4N/16) RAFT pairs have top-5% flow > 6*min(H,W)/256, else 0 "
            "(frames sampled at ~8 fps); video: mean over clips",
            "vbench0.1.5-1", ("raft_things",), 2.0, min_side=128, min_frames=2,
            vbench_name="dynamic_degree",
        ),
        MetricSpec(
            "overall_consistency", "higher",
            "clip: cos(ViCLIP video embedding of 8 middle frames, ViCLIP text embedding); video: mean over clips",
            "vbench0.1.5-1", ("viclip", "viclip_bpe"), 10.0, needs_prompt=True, min_frames=1,
            vbench_name="overall_consistency",
        ),
        MetricSpec(
            "clip_score", "higher",
            "clip: mean over the 8 middle frames of cos(CLIP ViT-B/32 image, text); video: mean over clips "
            "(VBench competition text alignment)",
            "vbench-comp-1", ("clip_vit_b32",), 10.0, needs_prompt=True, min_frames=1,
        ),
        MetricSpec(
            "chunk_seam_flicker", "lower",
            "clip: (mean |frame_i+1 - frame_i| over pairs across a generated-chunk boundary - the same over pairs "
            "inside a chunk) / 255; video: mean over clips",
            "seam-1", (), 2.0, min_frames=3,
        ),
        # Toy-world metrics (deepforcing.toyworld.rules on decoded frames; toy-world prompts only).
        MetricSpec(
            "toy_object_count", "higher",
            "clip: fraction of frames with as many objects (world-colour blobs >= a third of an object) as the "
            "prompt names; video: mean over clips",
            "toy-1", (), 1.0, needs_prompt=True, min_frames=1,
        ),
        MetricSpec(
            "toy_colour_fidelity", "higher",
            "clip: fraction of frames whose object colours equal the prompt's and whose background is the "
            "prompt's; video: mean over clips",
            "toy-1", (), 1.0, needs_prompt=True, min_frames=1,
        ),
        MetricSpec(
            "toy_motion", "higher",
            "clip: mean centroid speed of single-blob objects over consecutive frames / the middle of the prompt's "
            "speed class (1: the world's speed, 0: frozen); video: mean over clips",
            "toy-1", (), 1.0, needs_prompt=True, min_frames=2,
        ),
        MetricSpec(
            "toy_sharpness", "higher",
            "clip: mean over frames of the fraction of pixels within RGB distance 40 of a world colour; "
            "video: mean over clips",
            "toy-1", (), 1.0, min_frames=1,
        ),
        MetricSpec(
            "toy_colour_drift", "lower",
            "clip: total-variation distance between its world-colour histogram and the first drift segment's; "
            "video: mean over clips",
            "toy-1", (), 1.0, min_frames=1,
        ),
    )
}

#: the toy-world metrics (deepforcing.toyworld), in report order
TOY_METRICS = ("toy_object_count", "toy_colour_fidelity", "toy_motion", "toy_sharpness", "toy_colour_drift")

#: dimensions of VBench's Quality score, with their weights (dynamic degree counts half)
QUALITY_WEIGHTS = {
    "subject_consistency": 1.0,
    "background_consistency": 1.0,
    "temporal_flickering": 1.0,
    "motion_smoothness": 1.0,
    "dynamic_degree": 0.5,
    "aesthetic_quality": 1.0,
    "imaging_quality": 1.0,
}
#: VBench min/max normalisation constants (scripts/constant.py)
NORMALIZATION = {
    "subject_consistency": (0.1462, 1.0),
    "background_consistency": (0.2615, 1.0),
    "temporal_flickering": (0.6293, 1.0),
    "motion_smoothness": (0.706, 0.9975),
    "dynamic_degree": (0.0, 1.0),
    "aesthetic_quality": (0.0, 1.0),
    "imaging_quality": (0.0, 1.0),
    "overall_consistency": (0.0, 0.364),
}


#: the seven dimensions Deep Forcing reports, in VBench's order
VBENCH_SEVEN = (
    "subject_consistency",
    "background_consistency",
    "motion_smoothness",
    "dynamic_degree",
    "aesthetic_quality",
    "imaging_quality",
    "overall_consistency",
)
