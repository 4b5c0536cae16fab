"""Bootstrap replicates and their summaries.

The numbers themselves come from the engine (``bench.stats.engine``); this module
decides which patients each bootstrap replicate draws, and turns per-fold values
and replicate fold means into headline, SE, confidence interval and paired
differences, and a page's paired p-values into Holm-adjusted ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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


@dataclass
class PairedDifference:
    """Entry minus baseline on the same bootstrap replicates."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float  # two-sided: how often the replicate differences fall on either side of 0
    replicates: int  # finite paired replicates used


def paired_difference(
    mean: float, baseline_mean: float, replicates: np.ndarray, baseline_replicates: np.ndarray
) -> PairedDifference:
    """Difference of two entries' fold means with its paired-bootstrap 95 % CI and p-value.

    The p-value inverts the percentile interval: twice the smaller share of
    replicate differences at or below, and at or above, zero, with the usual +1
    correction; identical entries get a difference of 0 and p = 1.
    """
    difference = mean - baseline_mean
    paired = np.asarray(replicates, dtype=float) - np.asarray(baseline_replicates, dtype=float)
    paired = paired[np.isfinite(paired)]
    if not math.isfinite(difference) or paired.size == 0:
        return PairedDifference(difference, math.nan, math.nan, math.nan, int(paired.size))
    low, high = (float(v) for v in np.percentile(paired, [2.5, 97.5]))
    tail = min(int((paired <= 0).sum()), int((paired >= 0).sum()))
    p_value = min(1.0, 2.0 * (tail + 1) / (paired.size + 1))
    return PairedDifference(difference, low, high, p_value, int(paired.size))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the order given.

    The k-th smallest of the m finite p-values becomes the running maximum of
    ``(m - j) * p_(j)`` over j <= k (0-based), capped at 1; rejecting where the
    adjusted p is below alpha keeps the family-wise error at most alpha. NaN
    entries are no test: they stay NaN and do not count in m.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    steps = (m - np.arange(m)) * p[order]
    adjusted[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
    return adjusted
