"""Survival metrics per fold, and their bootstrap over test patients.

Point estimates per fold come from scikit-survival's functions (the reference).
The bootstrap replicates of Harrell's and Uno's C come from a pair-matrix form
of the same estimator: with ``c`` the multiplicity of each test patient in a
replicate, C = (c^T (W * A * S) c) / (c^T (W * A) c), where A marks comparable
pairs, S scores concordance (1, or 0.5 for tied risks) and W holds the IPCW
weights (all ones for Harrell). That equals the reference on the resampled
indices (tests check it) and evaluates all replicates at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bench.cohort import EvaluationPolicy

TIED_TOL = 1e-8  # scikit-survival's tolerance for tied risk scores


def auc_key(horizon: float) -> str:
    return f"td_auc_{horizon:g}"


def metric_names(policy: EvaluationPolicy) -> list[str]:
    return ["c_index", "uno_c", *(auc_key(h) for h in policy.horizons), "td_auc_mean", "ibs"]


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
    from sksurv.metrics import (
        concordance_index_censored,
        concordance_index_ipcw,
        cumulative_dynamic_auc,
        integrated_brier_score,
    )

    scores = FoldScores({})
    y_followed = within_training_follow_up(y_train, y_test)
    t_min, t_max = float(y_followed["time"].min()), float(y_followed["time"].max())

    def attempt(name: str, compute) -> None:
        try:
            scores.values[name] = float(compute())
        except ValueError as exc:  # includes NoComparablePairException
            scores.values[name] = math.nan
            scores.reasons[name] = str(exc).splitlines()[0]

    attempt("c_index", lambda: concordance_index_censored(y_test["event"], y_test["time"], risk)[0])
    attempt("uno_c", lambda: concordance_index_ipcw(y_train, y_test, risk, tau=policy.tau)[0])

    aucs = [math.nan] * len(policy.horizons)
    valid = [h for h in policy.horizons if t_min <= h < t_max]
    for h in policy.horizons:
        if h not in valid:
            scores.reasons[auc_key(h)] = f"horizon {h:g} outside the fold's follow-up [{t_min:g}, {t_max:g})"
    if valid:
        try:
            auc, _ = cumulative_dynamic_auc(y_train, y_followed, risk, valid)
            for h, a in zip(valid, auc):
                aucs[policy.horizons.index(h)] = float(a)
        except ValueError as exc:
            for h in valid:
                scores.reasons[auc_key(h)] = str(exc).splitlines()[0]
    for h, a in zip(policy.horizons, aucs):
        scores.values[auc_key(h)] = a
    if len(valid) == len(policy.horizons):
        attempt("td_auc_mean", lambda: cumulative_dynamic_auc(y_train, y_followed, risk, list(policy.horizons))[1])
    else:
        scores.values["td_auc_mean"] = math.nan
        scores.reasons["td_auc_mean"] = "not every horizon is inside the fold's test follow-up"

    grid = policy.ibs_times
    if survival is None:
        scores.values["ibs"] = math.nan
        scores.reasons["ibs"] = "the model gives no survival function"
    elif grid[0] < t_min or grid[-1] >= t_max:
        scores.values["ibs"] = math.nan
        scores.reasons["ibs"] = (
            f"IBS range [{grid[0]:g}, {grid[-1]:g}] outside the fold's follow-up [{t_min:g}, {t_max:g})"
        )
    else:
        attempt("ibs", lambda: integrated_brier_score(y_train, y_followed, survival, grid))
    return scores


def within_training_follow_up(y_train: np.ndarray, y_test: np.ndarray) -> np.ndarray:
    """Test outcomes censored at the training fold's last time, for td-AUC and IBS.

    The censoring distribution comes from the training fold and is undefined past
    its last time, where scikit-survival raises. Every time point those metrics
    evaluate lies before it, and a test patient followed beyond it is a control at
    all of them either way, so this leaves every defined value unchanged; horizons
    at or past that time are reported as n/a.
    """
    last = float(y_train["time"].max())
    beyond = y_test["time"] > last
    # An event at exactly the last training time needs the censoring survival there,
    # which is 0 when that time is censored in training; it too is a control only.
    at_or_beyond = y_test["time"] >= last
    if not (beyond.any() or (at_or_beyond & y_test["event"]).any()):
        return y_test
    out = y_test.copy()
    out["time"][beyond] = last
    out["event"][at_or_beyond] = False
    return out


def bootstrap_indices(seed: int, split_sha: str, repeat: int, fold: int, n: int, replicates: int) -> np.ndarray:
    """Resampled test positions (replicates, n): a pure function of seed, split and fold.

    Every entry evaluated on the same split therefore sees the same replicates,
    which makes paired differences between entries meaningful.
    """
    entropy = [seed, int(split_sha[:16], 16), repeat, fold, n]
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    return rng.integers(0, n, size=(replicates, n))


def counts_from_indices(indices: np.ndarray, n: int) -> np.ndarray:
    """Multiplicity of each position in each replicate: (replicates, n)."""
    offsets = (np.arange(indices.shape[0]) * n)[:, None]
    return np.bincount((indices + offsets).ravel(), minlength=indices.shape[0] * n).reshape(-1, n).astype(float)


def concordance_replicates(
    event: np.ndarray,
    time: np.ndarray,
    risk: np.ndarray,
    counts: np.ndarray,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Harrell's C (or Uno's, given IPCW ``weights``) for every row of ``counts``; NaN without comparable pairs."""
    event = np.asarray(event, dtype=bool)
    time = np.asarray(time, dtype=float)
    risk = np.asarray(risk, dtype=float)
    w = np.ones(len(time)) if weights is None else np.asarray(weights, dtype=float)
    later = time[None, :] > time[:, None]
    same_time_censored = (time[None, :] == time[:, None]) & ~event[None, :]
    comparable = event[:, None] & (later | same_time_censored)
    diff = risk[:, None] - risk[None, :]
    tied = np.abs(diff) <= TIED_TOL
    score = np.where(tied, 0.5, (diff > 0).astype(float))
    weighted = comparable * w[:, None]
    numerator = ((counts @ (weighted * score)) * counts).sum(axis=1)
    denominator = ((counts @ weighted) * counts).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def uno_weights(y_train: np.ndarray, y_test: np.ndarray, tau: float) -> np.ndarray:
    """Squared IPCW weights of each test patient, as ``concordance_index_ipcw`` builds them."""
    from sksurv.nonparametric import CensoringDistributionEstimator

    mask = y_test["time"] < tau
    estimator = CensoringDistributionEstimator().fit(y_train)
    w = np.zeros(len(y_test))
    w[mask] = estimator.predict_ipcw(y_test[mask])
    return np.square(w)


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
