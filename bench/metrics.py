"""Fold scores, bootstrap replicates and their summaries.

The numbers themselves come from the engine (``bench.engine``); this module
decides which patients each bootstrap replicate draws, and turns per-fold values
and replicate fold means into headline, SE, confidence interval and paired
differences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bench.cohort import EvaluationPolicy
from bench.engine import FoldMetrics


@dataclass
class FoldScores:
    values: dict[str, float]
    reasons: dict[str, str] = field(default_factory=dict)  # metric -> why it is NaN


def fold_scores(
    y_train: np.ndarray,
    y_test: np.ndarray,
    risk: np.ndarray,
    survival: np.ndarray | None,
    policy: EvaluationPolicy,
) -> FoldScores:
    """Every metric of one fold; a metric that cannot be computed is NaN with a reason."""
    engine = FoldMetrics(y_train, y_test, risk, survival, policy)
    values = engine.point()
    return FoldScores(values, engine.reasons)


def bootstrap_indices(seed: int, split_sha: str, repeat: int, fold: int, n: int, replicates: int) -> np.ndarray:
    """Resampled test positions (replicates, n): a pure function of seed, split and fold.

    Every entry evaluated on the same split therefore sees the same replicates,
    which makes paired differences between entries meaningful.
    """
    entropy = [seed, int(split_sha, 16), repeat, fold, n]
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    return rng.integers(0, n, size=(replicates, n))


def counts_from_indices(indices: np.ndarray, n: int) -> np.ndarray:
    """Multiplicity of each position in each replicate: (replicates, n)."""
    offsets = (np.arange(indices.shape[0]) * n)[:, None]
    return np.bincount((indices + offsets).ravel(), minlength=indices.shape[0] * n).reshape(-1, n).astype(float)


@dataclass
class MetricSummary:
    """One metric over folds: the headline mean, the paper's SE, and the bootstrap 95 % CI."""

    mean: float
    se: float
    ci_low: float
    ci_high: float
    per_fold: list[float]
    reason: str = ""  # why the mean is NaN, when it is

    def as_dict(self) -> dict:
        return {
            "mean": self.mean,
            "se": self.se,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "per_fold": self.per_fold,
            **({"reason": self.reason} if self.reason else {}),
        }


def summarise(per_fold: list[float], replicate_means: np.ndarray | None, reason: str = "") -> MetricSummary:
    """Fold mean (NaN when any fold is NaN), SE across folds, percentile CI of the replicate fold means."""
    values = np.asarray(per_fold, dtype=float)
    mean = float(values.mean()) if np.isfinite(values).all() else math.nan
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 and math.isfinite(mean) else math.nan
    low = high = math.nan
    if replicate_means is not None and math.isfinite(mean):
        finite = replicate_means[np.isfinite(replicate_means)]
        if finite.size:
            low, high = (float(v) for v in np.percentile(finite, [2.5, 97.5]))
    return MetricSummary(mean, se, low, high, values.tolist(), "" if math.isfinite(mean) else reason)
