"""Means with percentile-bootstrap confidence intervals over prompts, and paired differences.

The unit of resampling is the prompt (one video per prompt and point): a point's score is the mean
over its prompts, and its 95 % interval is the 2.5th–97.5th percentile of that mean over
``n_boot`` resamples of the prompts with replacement. A paired difference resamples the per-prompt
differences ``ours - baseline`` over the prompts both points scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from deepforcing.errors import ConfigError

N_BOOT = 10_000
LEVEL = 0.95
SEED = 0


@dataclass(frozen=True)
class CI:
    mean: float
    lo: float
    hi: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


def bootstrap_ci(values, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = SEED) -> CI:
    """Mean of ``values`` (NaN dropped) and its percentile-bootstrap interval.

    One value gives a zero-width interval; none gives NaN everywhere with ``n = 0``.
    """
    if not 0 < level < 1:
        raise ConfigError(f"confidence level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ConfigError(f"n_boot must be positive, got {n_boot}")
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return CI(float("nan"), float("nan"), float("nan"), 0)
    mean = float(x.mean())
    if n == 1:
        return CI(mean, mean, mean, n)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return CI(mean, float(lo), float(hi), n)


def aggregate(videos: pd.DataFrame, value: str = "score", n_boot: int = N_BOOT, level: float = LEVEL,
              seed: int = SEED) -> pd.DataFrame:
    """Per (label, metric): mean and bootstrap interval of ``value`` over prompts, plus counts.

    Columns: label, metric, mean, lo, hi, n (prompts with a value), errors (videos whose metric failed).
    """
    rows = []
    for (label, metric), g in videos.groupby(["label", "metric"], sort=False):
        ci = bootstrap_ci(g[value].to_numpy(dtype=float), n_boot, level, seed)
        errors = int(g["error"].notna().sum()) if "error" in g else 0
        rows.append({"label": label, "metric": metric, "mean": ci.mean, "lo": ci.lo, "hi": ci.hi, "n": ci.n,
                     "errors": errors})
    return pd.DataFrame(rows, columns=["label", "metric", "mean", "lo", "hi", "n", "errors"])


def paired_differences(videos: pd.DataFrame, baseline: str, value: str = "score", n_boot: int = N_BOOT,
                       level: float = LEVEL, seed: int = SEED) -> pd.DataFrame:
    """``label - baseline`` per metric over the prompts both scored (matched by prompt text).

    Columns: label, metric, n (pairs), baseline_mean, mean (of the label over the pairs), diff, lo, hi.
    """
    if baseline not in set(videos["label"]):
        raise ConfigError(f"unknown baseline {baseline!r}; choose one of: {', '.join(sorted(set(videos['label'])))}")
    ok = videos.dropna(subset=[value])
    wide = ok.pivot_table(index=["metric", "prompt"], columns="label", values=value, aggfunc="mean", sort=False)
    rows = []
    for label in dict.fromkeys(videos["label"]):
        if label == baseline:
            continue
        for metric in dict.fromkeys(videos["metric"]):
            if metric not in wide.index.get_level_values(0) or label not in wide or baseline not in wide:
                both = pd.DataFrame(columns=["a", "b"])
            else:
                both = pd.DataFrame({"a": wide.loc[metric][label], "b": wide.loc[metric][baseline]}).dropna()
            d = (both["a"] - both["b"]).to_numpy(dtype=float)
            ci = bootstrap_ci(d, n_boot, level, seed)
            rows.append({"label": label, "metric": metric, "n": ci.n,
                         "baseline_mean": float(both["b"].mean()) if len(both) else float("nan"),
                         "mean": float(both["a"].mean()) if len(both) else float("nan"),
                         "diff": ci.mean, "lo": ci.lo, "hi": ci.hi})
    return pd.DataFrame(rows, columns=["label", "metric", "n", "baseline_mean", "mean", "diff", "lo", "hi"])
