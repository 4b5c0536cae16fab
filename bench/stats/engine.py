"""The metrics engine: every metric of a test fold, for every bootstrap replicate at once.

A replicate is a row of multiplicities ``counts`` (how often each test patient
was drawn), so the point estimate is the row of ones and a bootstrap is a
(B, n) matrix; all replicates share one sort of the fold. Each value equals the
scikit-survival reference called on the replicate's indices (the tests check it
to 1e-9); where the reference raises, the replicate is NaN.

- Harrell's and Uno's C: one sweep over the patients in decreasing time with a
  Fenwick tree over risk ranks, O(n log n) per replicate (compiled with Numba).
- Cumulative/dynamic AUC: weighted Mann-Whitney over tied-risk blocks, O(n) per
  replicate and horizon after one sort; its integrated form weights the horizons
  by the replicate's own Kaplan-Meier estimate, as scikit-survival does.
- Integrated Brier score: linear in per-patient contributions, so a matrix product.

Censoring distributions always come from the training fold.
"""

from __future__ import annotations

import math

import numpy as np

from bench.data.cohort import EvaluationPolicy
from bench.stats.compiled import njit  # caches in the user's cache folder, never in the installed package

TIED_TOL = 1e-8  # scikit-survival's tolerance for tied risk scores


def auc_key(horizon: float) -> str:
    return f"td_auc_{horizon:g}"


def metric_names(policy: EvaluationPolicy) -> list[str]:
    return ["c_index", "uno_c", *(auc_key(h) for h in policy.horizons), "td_auc_mean", "ibs"]


@njit(cache=True)
def _fenwick_add(tree: np.ndarray, position: int, value: float) -> None:
    while position < tree.shape[0]:
        tree[position] += value
        position += position & (-position)


@njit(cache=True)
def _fenwick_prefix(tree: np.ndarray, position: int) -> float:
    total = 0.0
    while position > 0:
        total += tree[position]
        position -= position & (-position)
    return total


@njit(cache=True)
def _concordance_sweep(order, group_starts, event, rank, below, at_most, weights, counts, n_ranks):
    """Numerator and denominator of the (weighted) C-index for every replicate.

    Patients are visited in decreasing time, one group of equal times at a time:
    censored patients of the group join the tree first (an event is comparable to
    a patient censored at its own time), then the group's events are scored
    against everyone in the tree, then they join it.
    """
    n_replicates = counts.shape[0]
    numerator = np.zeros(n_replicates)
    denominator = np.zeros(n_replicates)
    tree = np.zeros(n_ranks + 1)
    for b in range(n_replicates):
        tree[:] = 0.0
        in_tree = 0.0
        for g in range(group_starts.shape[0] - 1):
            start, stop = group_starts[g], group_starts[g + 1]
            for k in range(start, stop):
                j = order[k]
                if not event[j] and counts[b, j] > 0:
                    _fenwick_add(tree, rank[j], counts[b, j])
                    in_tree += counts[b, j]
            for k in range(start, stop):
                i = order[k]
                if event[i] and counts[b, i] > 0 and weights[i] > 0:
                    lower = _fenwick_prefix(tree, below[i])
                    tied = _fenwick_prefix(tree, at_most[i]) - lower
                    w = counts[b, i] * weights[i]
                    numerator[b] += w * (lower + 0.5 * tied)
                    denominator[b] += w * in_tree
            for k in range(start, stop):
                i = order[k]
                if event[i] and counts[b, i] > 0:
                    _fenwick_add(tree, rank[i], counts[b, i])
                    in_tree += counts[b, i]
    return numerator, denominator


def concordance(
    event: np.ndarray,
    time: np.ndarray,
    risk: np.ndarray,
    counts: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Harrell's C (Uno's, given squared IPCW ``weights``) per row of ``counts``; NaN without comparable pairs."""
    event = np.asarray(event, dtype=np.bool_)
    time = np.asarray(time, dtype=float)
    risk = np.asarray(risk, dtype=float)
    n = len(time)
    counts = np.ones((1, n)) if counts is None else np.ascontiguousarray(counts, dtype=float)
    weights = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    order = np.argsort(-time, kind="stable")
    sorted_time = time[order]
    group_starts = np.r_[0, np.flatnonzero(np.diff(sorted_time)) + 1, n].astype(np.int64)
    levels = np.unique(risk)
    rank = np.searchsorted(levels, risk) + 1
    below = np.searchsorted(levels, risk - TIED_TOL, side="left")
    at_most = np.searchsorted(levels, risk + TIED_TOL, side="right")
    numerator, denominator = _concordance_sweep(
        order, group_starts, event, rank, below, at_most, weights, counts, len(levels)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def harrell_c(event: np.ndarray, time: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C of one sample; raises ValueError where scikit-survival raises or has no value (0/0)."""
    event = np.asarray(event, dtype=bool)
    if len(event) < 2:
        raise ValueError("Need a minimum of two samples")
    if not event.any():
        raise ValueError("All samples are censored")
    value = float(concordance(event, time, risk)[0])
    if math.isnan(value):
        raise ValueError("Data has no comparable pairs, cannot estimate concordance index.")
    return value


def within_training_follow_up(y_train: np.ndarray, y_test: np.ndarray) -> np.ndarray:
    """Test outcomes censored at the training fold's last time, for td-AUC and IBS.

    The censoring distribution comes from the training fold and is undefined past
    its last time, where scikit-survival raises. Every time point those metrics
    evaluate lies before it, and a test patient followed that long is a control at
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


def ipcw(censoring, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-probability-of-censoring weights of the events in ``y``, and where they are undefined.

    As ``CensoringDistributionEstimator.predict_ipcw`` computes them, but patient
    by patient: where it raises (the censoring survival is 0 at an event time, or
    the event lies past the training follow-up) only that patient is flagged, so a
    replicate that never draws the patient still gets its value.
    """
    event, time = y["event"].astype(bool), y["time"].astype(float)
    last = censoring.unique_time_[-1]
    beyond = (time > last) & (censoring.prob_[-1] > 0)
    g = np.ones(len(time))
    if event.any():
        g[event] = censoring.predict_proba(np.minimum(time[event], last))
    undefined = event & (beyond | (g == 0))
    weights = np.zeros(len(time))
    ok = event & ~undefined
    weights[ok] = 1.0 / g[ok]
    return weights, undefined


def _undefined_reason(censoring, y: np.ndarray, undefined: np.ndarray) -> str:
    last = censoring.unique_time_[-1]
    if (y["time"][undefined] > last).any() and censoring.prob_[-1] > 0:
        return f"time must be smaller than largest observed time point: {last:g}"
    return "censoring survival function is zero at one or more time points"


def uno_weights(y_train: np.ndarray, y_test: np.ndarray, tau: float) -> np.ndarray:
    """Squared IPCW weights of each test patient, as ``concordance_index_ipcw`` builds them (raises as it does)."""
    from sksurv.nonparametric import CensoringDistributionEstimator

    mask = y_test["time"] < tau
    estimator = CensoringDistributionEstimator().fit(y_train)
    w = np.zeros(len(y_test))
    w[mask] = estimator.predict_ipcw(y_test[mask])
    return np.square(w)


class FoldMetrics:
    """All metrics of one test fold; ``evaluate(counts)`` gives them for any set of replicates."""

    def __init__(
        self,
        y_train: np.ndarray,
        y_test: np.ndarray,
        risk: np.ndarray,
        survival: np.ndarray | None,
        policy: EvaluationPolicy,
    ):
        from sksurv.nonparametric import CensoringDistributionEstimator

        self.policy = policy
        self.names = metric_names(policy)
        self.n = len(y_test)
        self.reasons: dict[str, str] = {}  # metric -> why the fold's value is NaN
        self.event = y_test["event"].astype(bool)
        self.time = y_test["time"].astype(float)
        self.risk = np.asarray(risk, dtype=float)

        censoring = CensoringDistributionEstimator().fit(y_train)
        before_tau = self.time < policy.tau
        weights, undefined = ipcw(censoring, y_test)
        self.uno = np.where(before_tau, np.square(weights), 0.0)
        self.uno_undefined = undefined & before_tau
        if self.uno_undefined.any():
            self.reasons["uno_c"] = _undefined_reason(censoring, y_test, self.uno_undefined)

        followed = within_training_follow_up(y_train, y_test)
        self.f_event = followed["event"].astype(bool)
        self.f_time = followed["time"].astype(float)
        self.auc_ipcw, self.auc_undefined = ipcw(censoring, followed)
        if self.auc_undefined.any():
            reason = _undefined_reason(censoring, followed, self.auc_undefined)
            for name in [*(auc_key(h) for h in policy.horizons), "td_auc_mean"]:
                self.reasons[name] = reason

        self.risk_order = np.argsort(self.risk, kind="stable")

        # Kaplan-Meier bookkeeping of the (followed) test times, for the integrated AUC.
        self.time_order = np.argsort(self.f_time, kind="stable")
        sorted_time = self.f_time[self.time_order]
        self.km_starts = np.r_[0, np.flatnonzero(np.diff(sorted_time)) + 1]
        self.km_times = sorted_time[self.km_starts]

        self.ibs_contrib = None
        grid = policy.ibs_times
        if survival is None:
            self.reasons["ibs"] = "the model gives no survival function"
        elif len(grid) < 2:
            self.reasons["ibs"] = "At least two time points must be given"
        elif grid[-1] > censoring.unique_time_[-1] and censoring.prob_[-1] > 0:
            self.reasons["ibs"] = (
                f"IBS range ends at {grid[-1]:g}, past the training follow-up ({censoring.unique_time_[-1]:g})"
            )
        else:
            brier = brier_contributions(censoring, self.f_time, self.f_event, survival, grid)
            self.ibs_contrib = np.trapezoid(brier, grid, axis=1) / (grid[-1] - grid[0])

    def aucs(self, counts: np.ndarray) -> list[np.ndarray]:
        """The cumulative/dynamic AUC at each of the policy's horizons, per row of ``counts``."""
        counts = np.ascontiguousarray(counts, dtype=float)
        present = counts > 0
        t_min = np.where(present, self.f_time, np.inf).min(axis=1)
        t_max = np.where(present, self.f_time, -np.inf).max(axis=1)
        return self._aucs(counts, t_min, t_max)

    def point(self) -> dict[str, float]:
        """The fold's values (every patient once); NaN values get a reason in ``self.reasons``."""
        values = {k: float(v[0]) for k, v in self.evaluate(np.ones((1, self.n))).items()}
        t_min, t_max = float(self.f_time.min()), float(self.f_time.max())
        for name, value in values.items():
            if math.isnan(value) and name not in self.reasons:
                self.reasons[name] = self._why_nan(name, t_min, t_max)
        return values

    def evaluate(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        counts = np.ascontiguousarray(counts, dtype=float)
        out = {"c_index": concordance(self.event, self.time, self.risk, counts)}
        uno = concordance(self.event, self.time, self.risk, counts, self.uno)
        out["uno_c"] = np.where(counts[:, self.uno_undefined].sum(axis=1) > 0, np.nan, uno)
        present = counts > 0
        t_min = np.where(present, self.f_time, np.inf).min(axis=1)
        t_max = np.where(present, self.f_time, -np.inf).max(axis=1)
        aucs = self._aucs(counts, t_min, t_max)
        out.update({auc_key(h): a for h, a in zip(self.policy.horizons, aucs)})
        out["td_auc_mean"] = self._mean_auc(counts, aucs, t_min, t_max)
        out["ibs"] = self._ibs(counts, t_min, t_max)
        return out

    def _aucs(self, counts: np.ndarray, t_min: np.ndarray, t_max: np.ndarray) -> list[np.ndarray]:
        """Weighted Mann-Whitney of cases against controls, half credit within tied-risk blocks.

        Blocks are those of the replicate's own patients: consecutive risks within
        the tolerance chain into one block, as scikit-survival's ROC thresholds do.
        """
        ordered = counts[:, self.risk_order]
        present = ordered > 0
        risk = self.risk[self.risk_order]
        time = self.f_time[self.risk_order]
        event = self.f_event[self.risk_order]
        weight = self.auc_ipcw[self.risk_order]
        starts, ends = _tie_blocks(risk, present)
        undefined = counts[:, self.auc_undefined].sum(axis=1) > 0
        out = []
        for h in self.policy.horizons:
            case_weight = ordered * (weight * ((time <= h) & event))
            controls = np.cumsum(ordered * (time > h), axis=1)
            total_controls = controls[:, -1:]
            below = np.where(starts > 0, np.take_along_axis(controls, np.maximum(starts - 1, 0), axis=1), 0.0)
            within = np.take_along_axis(controls, ends, axis=1) - below
            numerator = (case_weight * (below + 0.5 * within)).sum(axis=1)
            denominator = case_weight.sum(axis=1) * total_controls[:, 0]
            with np.errstate(invalid="ignore", divide="ignore"):
                auc = numerator / denominator
            valid = (t_min <= h) & (h < t_max) & ~undefined
            out.append(np.where(valid, auc, np.nan))
        return out

    def _mean_auc(self, counts, aucs, t_min, t_max) -> np.ndarray:
        horizons = np.asarray(self.policy.horizons)
        valid = (t_min <= horizons[0]) & (horizons[-1] < t_max)
        if len(horizons) == 1:
            return np.where(valid, aucs[0], np.nan)
        ordered = counts[:, self.time_order]
        deaths = np.add.reduceat(ordered * self.f_event[self.time_order], self.km_starts, axis=1)
        leaving = np.add.reduceat(ordered, self.km_starts, axis=1)
        at_risk = np.cumsum(leaving[:, ::-1], axis=1)[:, ::-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            factor = np.where(at_risk > 0, 1.0 - deaths / at_risk, 1.0)
        survival = np.cumprod(factor, axis=1)
        index = np.searchsorted(self.km_times, horizons, side="right") - 1
        s = np.where(index >= 0, survival[:, np.maximum(index, 0)], 1.0)
        d = -np.diff(np.c_[np.ones(len(counts)), s], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (np.column_stack(aucs) * d).sum(axis=1) / (1.0 - s[:, -1])
        return np.where(valid, mean, np.nan)

    def _ibs(self, counts, t_min, t_max) -> np.ndarray:
        if self.ibs_contrib is None:
            return np.full(len(counts), np.nan)
        grid = self.policy.ibs_times
        has_event = counts @ self.f_event > 0  # scikit-survival refuses an all-censored test set
        valid = (t_min <= grid[0]) & (grid[-1] < t_max) & has_event
        return np.where(valid, counts @ self.ibs_contrib / counts.sum(axis=1), np.nan)

    def _why_nan(self, name: str, t_min: float, t_max: float) -> str:
        if name in ("c_index", "uno_c"):
            if not self.event.any():
                return "All samples are censored"
            return "no comparable pairs in the fold"
        if name == "ibs":
            grid = self.policy.ibs_times
            return f"IBS range [{grid[0]:g}, {grid[-1]:g}] outside the fold's follow-up [{t_min:g}, {t_max:g})"
        if name == "td_auc_mean":
            return "not every horizon is inside the fold's follow-up"
        horizon = self.policy.horizons[[auc_key(h) for h in self.policy.horizons].index(name)]
        if not t_min <= horizon < t_max:
            return f"horizon {horizon:g} outside the fold's follow-up [{t_min:g}, {t_max:g})"
        return "no cases or no controls at this horizon"


def brier_contributions(censoring, time: np.ndarray, event: np.ndarray, survival: np.ndarray, grid: np.ndarray):
    """Each patient's IPCW Brier score term at each time of ``grid``: (n, len(grid)); the mean over patients is the
    Brier score (as ``sksurv.metrics.brier_score`` computes it). ``censoring`` is fitted on the training fold and
    ``time``/``event`` are the test outcomes within its follow-up (``within_training_follow_up``)."""
    g_t = censoring.predict_proba(grid)
    g_y = censoring.predict_proba(time)
    g_t[g_t == 0] = np.inf
    g_y[g_y == 0] = np.inf
    case = (time[:, None] <= grid[None, :]) & event[:, None]
    control = time[:, None] > grid[None, :]
    return np.square(survival) * case / g_y[:, None] + np.square(1.0 - survival) * control / g_t[None, :]


def _tie_blocks(sorted_risk: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last position of each position's tied-risk block, per replicate: two (B, n) arrays.

    Only present patients take part: a block starts at a present patient whose risk
    exceeds the previous present patient's by more than the tolerance.
    """
    n = len(sorted_risk)
    positions = np.arange(n)
    last_present = np.maximum.accumulate(np.where(present, positions, -1), axis=1)
    previous = np.c_[np.full(len(present), -1), last_present[:, :-1]]
    gap = sorted_risk - sorted_risk[np.maximum(previous, 0)] > TIED_TOL
    new_block = present & ((previous < 0) | gap)
    starts = np.maximum.accumulate(np.where(new_block, positions, 0), axis=1)
    next_start = np.where(new_block, positions, n)
    following = np.minimum.accumulate(next_start[:, ::-1], axis=1)[:, ::-1]
    ends = np.c_[following[:, 1:], np.full(len(present), n)] - 1
    return starts, ends
