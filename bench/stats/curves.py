"""What a row's figures show, computed per test fold as its metrics are: risk groups, AUC(t) and Brier(t).

- Risk groups are tertiles of predicted risk. The two cut points come from the risks the fitted model gives
  its own *training* patients, never from the test patients it is scored on, so a test patient's group
  depends on that patient alone.
- AUC(t) is the engine's cumulative/dynamic AUC on a time grid over the evaluation window, with the same
  bootstrap replicates as the row's metrics (so at a horizon it equals the row's td-AUC).
- Brier(t) is the IPCW Brier score of the model's survival curves, beside that of the training fold's
  Kaplan-Meier curve given to every patient (the reference a model has to beat).

Fold values are combined as the metrics are: the mean over folds, NaN where any fold has none.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from bench.data.cohort import EvaluationPolicy
from bench.stats.engine import FoldMetrics, brier_contributions, within_training_follow_up

FIGURE_POINTS = 20  # times of the AUC(t) and Brier(t) curves, besides the horizons
TERTILES = (1 / 3, 2 / 3)


def figure_times(policy: EvaluationPolicy) -> np.ndarray:
    """The curves' time grid: evenly over [first horizon, last horizon], and the horizons themselves."""
    lo, hi = policy.horizons[0], policy.horizons[-1]
    return np.unique(np.r_[np.linspace(lo, hi, FIGURE_POINTS), policy.horizons])


def risk_thresholds(train_risk: np.ndarray) -> tuple[float, float]:
    """The tertile cut points of the risks of the training patients."""
    risk = np.asarray(train_risk, dtype=float)
    risk = risk[np.isfinite(risk)]  # an overflowed training risk has no place among the others
    if not risk.size:
        return math.nan, math.nan
    low, high = np.quantile(risk, TERTILES)
    return float(low), float(high)


def risk_groups(risk: np.ndarray, thresholds: tuple[float, float]) -> np.ndarray:
    """0 (low), 1 (intermediate) or 2 (high) for each risk: above the first cut point, above the second."""
    risk = np.asarray(risk, dtype=float)
    return (risk > thresholds[0]).astype(int) + (risk > thresholds[1]).astype(int)


@dataclass
class FoldCurves:
    auc: np.ndarray  # (T,) on the fold's test patients
    auc_replicates: np.ndarray | None  # (B, T), one row per bootstrap replicate
    brier: np.ndarray  # (T,) of the model's survival curves; NaN without them or outside the follow-up
    brier_reference: np.ndarray  # (T,) of the training fold's Kaplan-Meier curve


def fold_curves(
    y_train: np.ndarray,
    y_test: np.ndarray,
    risk: np.ndarray,
    survival: np.ndarray | None,
    times: np.ndarray,
    policy: EvaluationPolicy,
    counts: np.ndarray | None = None,
) -> FoldCurves:
    """The curves of one test fold; ``survival`` is the model's S(t | x) at ``times``, ``counts`` the replicates."""
    from sksurv.nonparametric import CensoringDistributionEstimator, kaplan_meier_estimator

    on_grid = FoldMetrics(y_train, y_test, risk, None, dataclasses.replace(policy, horizons=tuple(times)))
    auc = np.array([a[0] for a in on_grid.aucs(np.ones((1, len(y_test))))])
    replicates = None if counts is None else np.column_stack(on_grid.aucs(counts))

    censoring = CensoringDistributionEstimator().fit(y_train)
    followed = within_training_follow_up(y_train, y_test)
    f_time, f_event = followed["time"].astype(float), followed["event"].astype(bool)
    valid = (times >= f_time.min()) & (times < f_time.max()) & f_event.any()
    if censoring.prob_[-1] > 0:
        valid &= times <= censoring.unique_time_[-1]
    km_times, km = kaplan_meier_estimator(y_train["event"].astype(bool), y_train["time"].astype(float))
    at = np.searchsorted(km_times, times, side="right") - 1
    reference = np.broadcast_to(np.where(at >= 0, km[np.maximum(at, 0)], 1.0), (len(f_time), len(times)))

    def brier(curves: np.ndarray | None) -> np.ndarray:
        values = np.full(len(times), np.nan)
        if curves is not None and valid.any():  # the censoring estimate is undefined past the training follow-up
            curves = np.asarray(curves, dtype=float)[:, valid]
            values[valid] = brier_contributions(censoring, f_time, f_event, curves, times[valid]).mean(axis=0)
        return values

    return FoldCurves(auc, replicates, brier(survival), brier(reference))


@dataclass
class Curves:
    """A row's curves over all its test folds, and each fold's risk-group cut points."""

    times: np.ndarray
    auc: np.ndarray
    auc_low: np.ndarray  # bootstrap 95 % band (NaN without a bootstrap)
    auc_high: np.ndarray
    brier: np.ndarray
    brier_reference: np.ndarray
    thresholds: dict[str, tuple[float, float]] = field(default_factory=dict)  # fold key -> cut points

    @classmethod
    def combine(cls, times: np.ndarray, folds: list[FoldCurves], thresholds: dict[str, tuple[float, float]]) -> Curves:
        auc = np.mean([f.auc for f in folds], axis=0)
        low = high = np.full(len(times), np.nan)
        if folds and all(f.auc_replicates is not None for f in folds):
            means = np.mean([f.auc_replicates for f in folds], axis=0)  # (B, T): each replicate's fold mean
            low, high = (np.full(len(times), np.nan) for _ in range(2))
            for j in range(len(times)):
                finite = means[:, j][np.isfinite(means[:, j])]
                if finite.size and np.isfinite(auc[j]):
                    low[j], high[j] = np.percentile(finite, [2.5, 97.5])
        brier = np.mean([f.brier for f in folds], axis=0)
        reference = np.mean([f.brier_reference for f in folds], axis=0)
        return cls(times, auc, low, high, brier, reference, thresholds)
