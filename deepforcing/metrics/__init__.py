"""VBench metrics, the VBench-Long clip protocol and drift-over-time statistics.

Library API (no Hydra): build an :class:`EvalConfig`, make a :class:`Scorer` (models stay resident
across videos) and call ``score_file`` / ``score_frames``; or feed chunks to a :class:`StreamingScorer`.
Every metric is a lazy registry entry; :data:`SPECS` holds direction, aggregation and version.
"""

from __future__ import annotations

from deepforcing.registry import Registry

from .specs import SPECS, TOY_METRICS, VBENCH_SEVEN, MetricSpec

METRICS = Registry("metric")
for _name, _target in {
    "temporal_flickering": "deepforcing.metrics.dims.flicker:TemporalFlickering",
    "background_consistency": "deepforcing.metrics.dims.clip_dims:BackgroundConsistency",
    "aesthetic_quality": "deepforcing.metrics.dims.clip_dims:AestheticQuality",
    "clip_score": "deepforcing.metrics.dims.clip_dims:ClipScore",
    "subject_consistency": "deepforcing.metrics.dims.subject:SubjectConsistency",
    "imaging_quality": "deepforcing.metrics.dims.imaging:ImagingQuality",
    "motion_smoothness": "deepforcing.metrics.dims.motion:MotionSmoothness",
    "dynamic_degree": "deepforcing.metrics.dims.dynamic:DynamicDegree",
    "overall_consistency": "deepforcing.metrics.dims.overall:OverallConsistency",
    "chunk_seam_flicker": "deepforcing.metrics.dims.seams:ChunkSeamFlicker",
    "toy_object_count": "deepforcing.metrics.dims.toy:ToyObjectCount",
    "toy_colour_fidelity": "deepforcing.metrics.dims.toy:ToyColourFidelity",
    "toy_motion": "deepforcing.metrics.dims.toy:ToyMotion",
    "toy_sharpness": "deepforcing.metrics.dims.toy:ToySharpness",
    "toy_colour_drift": "deepforcing.metrics.dims.toy:ToyColourDrift",
}.items():
    METRICS.register(_name, _target)

ALL_DIMENSIONS = tuple(METRICS.names())


def __getattr__(name: str):  # lazy heavy imports
    if name in ("Scorer", "StreamingScorer", "VideoResult", "DimensionResult"):
        from . import scorer

        return getattr(scorer, name)
    if name in ("EvalConfig", "ClipProtocol", "DriftConfig"):
        from . import config

        return getattr(config, name)
    raise AttributeError(name)


__all__ = ["METRICS", "SPECS", "MetricSpec", "VBENCH_SEVEN", "TOY_METRICS", "ALL_DIMENSIONS"]
