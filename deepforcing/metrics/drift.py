"""Drift statistics on a per-segment score series (pure numpy; sign conventions documented).

For a series m_1..m_K (segment k covering [t_k0, t_k1) seconds):

* ``delta`` = m_1 - m_K (signed; positive = the metric fell, i.e. degradation for a higher-is-better
  metric). ``abs_delta`` = |m_1 - m_K|; with 5-s segments this is Rolling/Deep Forcing's ΔDrift.
* ``range`` = max - min.
* ``slope`` = least-squares slope of m_k against the segment centre time, per ``slope_seconds``
  (negative = the metric falls over time).
* FramePack: ``edge_delta`` = M(first 15 %) - M(last 15 %) (signed as above), ``edge_abs_delta`` its
  absolute value (FramePack's Δ_drift).
* BlockVid's VDE = Σ_{i=2..N} w_i |m_i - m_1| / m_1 with w_i = N - i + 1 (linear) or log(N - i + 1),
  not normalised; 0 when N < 2. Lower is better.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def delta_first_last(series: Sequence[float]) -> float:
    if len(series) == 0:
        raise ValueError("empty series")
    return float(series[0] - series[-1])


def lsq_slope(times: Sequence[float], values: Sequence[float], per: float = 10.0) -> float | None:
    """Least-squares slope of ``values`` over ``times`` (seconds), scaled to change per ``per`` s."""
    t = np.asarray(times, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if len(t) < 2 or np.ptp(t) == 0:
        return None
    tc = t - t.mean()
    return float((tc * (v - v.mean())).sum() / (tc * tc).sum() * per)


def vde(chunk_scores: Sequence[float], weighting: str = "linear") -> float:
    m = np.asarray(chunk_scores, dtype=np.float64)
    n = len(m)
    if n < 2:
        return 0.0
    if m[0] == 0:
        raise ValueError("VDE is undefined when the first chunk scores 0 (it divides by m_1)")
    i = np.arange(2, n + 1)
    if weighting == "linear":
        w = (n - i + 1).astype(np.float64)
    elif weighting == "log":
        w = np.log(n - i + 1.0)
    else:
        raise ValueError(f"weighting must be 'linear' or 'log', got {weighting!r}")
    return float((w * np.abs(m[1:] - m[0]) / abs(m[0])).sum())


def summarize(
    times: Sequence[tuple[float, float]],
    values: Sequence[float],
    slope_seconds: float = 10.0,
) -> dict:
    """Statistics of one segment series; ``times`` are (start_s, end_s) per segment."""
    if len(values) == 0:
        return {}
    d = delta_first_last(values)
    centres = [(a + b) / 2 for a, b in times]
    return {
        "first": float(values[0]),
        "last": float(values[-1]),
        "delta": d,
        "abs_delta": abs(d),
        "range": float(max(values) - min(values)),
        f"slope_per_{slope_seconds:g}s": lsq_slope(centres, values, slope_seconds),
        "num_segments": len(values),
    }


def safe_vde(chunk_scores: Sequence[float], weighting: str) -> float | None:
    try:
        v = vde(chunk_scores, weighting)
    except ValueError:
        return None
    return None if math.isnan(v) else v
