"""Kaplan-Meier and Cox fits weighted by bootstrap multiplicities, every replicate at once (compiled).

Each function takes frequency ``weights`` (B, n), one row per replicate, so a patient drawn k times counts
k times, exactly as the fit on the resampled patients would count it (the tests compare with scikit-survival
on the resampled rows). What ``bench.stats.calibration`` builds its metrics from: a fold's 1000 replicates of
every calibration metric cost about as much as its C-index replicates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.stats.compiled import njit  # caches in the user's cache folder, never in the installed package

MAX_ITERATIONS = 50
TOLERANCE = 1e-10  # Newton stops once the log partial likelihood changes by less than this, relatively


@njit(cache=True)
def _km_kernel(time, event, starts, weights, masks, h):
    """Kaplan-Meier survival at h of every (row of weights) x (mask) product, patients sorted by time; NaN where
    the product is empty, or its last time is before h and the estimate has not reached 0 (past a last censored
    time it is undefined)."""
    n_rows, n_masks = weights.shape[0], masks.shape[0]
    out = np.empty((n_rows, n_masks))
    n_groups = starts.shape[0] - 1
    for b in range(n_rows):
        for k in range(n_masks):
            total = 0.0
            last = -np.inf
            for i in range(time.shape[0]):
                w = weights[b, i] * masks[k, i]
                if w > 0:
                    total += w
                    last = time[i]
            if total <= 0:
                out[b, k] = np.nan
                continue
            at_risk = total
            survival = 1.0
            for g in range(n_groups):
                if time[starts[g]] > h:
                    break
                deaths = 0.0
                leaving = 0.0
                for i in range(starts[g], starts[g + 1]):
                    w = weights[b, i] * masks[k, i]
                    leaving += w
                    if event[i]:
                        deaths += w
                if at_risk > 0:
                    survival *= 1.0 - deaths / at_risk
                at_risk -= leaving
            out[b, k] = survival if last >= h or survival <= 0 else np.nan
    return out


def _sorted(time: np.ndarray):
    order = np.argsort(time, kind="stable")
    t = np.ascontiguousarray(time[order], dtype=float)
    starts = np.r_[0, np.flatnonzero(np.diff(t)) + 1, len(t)].astype(np.int64)
    return (order, t, starts)


def kaplan_meier_at(
    time: np.ndarray, event: np.ndarray, weights: np.ndarray, h: float, masks: np.ndarray | None = None
) -> np.ndarray:
    """The Kaplan-Meier survival at ``h`` of each row of ``weights`` (B, n), each restricted to each row of ``masks``
    (K, n) when given ((B, K), else (B,)): NaN where the row is empty, or no patient of it was followed until ``h``
    and the estimate has not reached 0 (past the last time, a censored one, it is undefined)."""
    time = np.asarray(time, dtype=float)
    order, t, starts = _sorted(time)
    weights = np.ascontiguousarray(np.atleast_2d(weights)[:, order], dtype=float)
    given = masks is not None
    masks = np.ones((1, len(time))) if masks is None else np.atleast_2d(masks)
    masks = np.ascontiguousarray(masks[:, order], dtype=float)
    out = _km_kernel(t, np.asarray(event, dtype=np.bool_)[order], starts, weights, masks, float(h))
    return out if given else out[:, 0]


@njit(cache=True)
def _shifted_weights(X, w, beta, r):
    """r = w exp(x beta - m) for every patient; returns m, the largest x beta among the row's patients."""
    n, p = X.shape
    m = -np.inf
    for i in range(n):
        eta = 0.0
        for a in range(p):
            eta += X[i, a] * beta[a]
        r[i] = eta
        if w[i] > 0 and eta > m:
            m = eta
    if m == -np.inf:
        m = 0.0
    for i in range(n):
        r[i] = w[i] * np.exp(r[i] - m) if w[i] > 0 else 0.0
    return m


@njit(cache=True)
def _cox_step(starts, X, w, beta, deaths, death_x, r, score, info):
    """The log partial likelihood (Breslow) at beta, its score and information (filled in), in one pass from the
    latest time down: each tie group's risk set is everyone at or after its time."""
    p = X.shape[1]
    m = _shifted_weights(X, w, beta, r)
    s0 = 0.0
    s1_0 = s1_1 = 0.0
    s2_00 = s2_01 = s2_11 = 0.0
    loglik = 0.0
    score[:] = 0.0
    info[:, :] = 0.0
    for g in range(starts.shape[0] - 2, -1, -1):
        for i in range(starts[g], starts[g + 1]):
            e = r[i]
            if e > 0:
                s0 += e
                x0 = X[i, 0]
                s1_0 += e * x0
                s2_00 += e * x0 * x0
                if p == 2:
                    x1 = X[i, 1]
                    s1_1 += e * x1
                    s2_01 += e * x0 * x1
                    s2_11 += e * x1 * x1
        d = deaths[g]
        if d > 0:
            if not s0 > 0:  # every weight underflowed: this beta is far out of range
                return -np.inf
            mean0 = s1_0 / s0
            loglik += death_x[g, 0] * beta[0] - d * (np.log(s0) + m)
            score[0] += death_x[g, 0] - d * mean0
            info[0, 0] += d * (s2_00 / s0 - mean0 * mean0)
            if p == 2:
                mean1 = s1_1 / s0
                loglik += death_x[g, 1] * beta[1]
                score[1] += death_x[g, 1] - d * mean1
                info[0, 1] += d * (s2_01 / s0 - mean0 * mean1)
                info[1, 1] += d * (s2_11 / s0 - mean1 * mean1)
    if p == 2:
        info[1, 0] = info[0, 1]
    return loglik


@njit(cache=True)
def _cox_kernel(time, event, starts, X, weights, start, max_iterations, tolerance):
    """Newton-Raphson with step halving of the Breslow partial likelihood, one fit per row of ``weights``; p is 1
    or 2. A fit stops when an accepted step changes the log likelihood by at most ``tolerance`` (relative), and
    fails when the information vanishes (monotone likelihood: no finite maximum) or the steps run out."""
    n_rows = weights.shape[0]
    n, p = X.shape
    n_groups = starts.shape[0] - 1
    betas = np.zeros((n_rows, p))
    converged = np.zeros(n_rows, dtype=np.bool_)
    deaths = np.zeros(n_groups)
    death_x = np.zeros((n_groups, p))
    r = np.zeros(n)
    score = np.zeros(p)
    info = np.zeros((p, p))
    new_score = np.zeros(p)
    new_info = np.zeros((p, p))
    beta = np.zeros(p)
    step = np.zeros(p)
    candidate = np.zeros(p)
    for b in range(n_rows):
        w = weights[b]
        any_death = False
        for g in range(n_groups):
            deaths[g] = 0.0
            for a in range(p):
                death_x[g, a] = 0.0
            for i in range(starts[g], starts[g + 1]):
                if event[i] and w[i] > 0:
                    deaths[g] += w[i]
                    any_death = True
                    for a in range(p):
                        death_x[g, a] += w[i] * X[i, a]
        if not any_death:
            continue
        beta[:] = start
        loglik = _cox_step(starts, X, w, beta, deaths, death_x, r, score, info)
        first_det = -1.0
        for _ in range(max_iterations):
            det = info[0, 0] if p == 1 else info[0, 0] * info[1, 1] - info[0, 1] * info[1, 0]
            if first_det < 0:
                first_det = det
            if not (np.isfinite(det) and det > 1e-8 * first_det and det > 0):
                break  # the likelihood flattens out: monotone, no finite maximum
            if p == 1:
                step[0] = score[0] / info[0, 0]
            else:
                step[0] = (info[1, 1] * score[0] - info[0, 1] * score[1]) / det
                step[1] = (info[0, 0] * score[1] - info[1, 0] * score[0]) / det
            new = -np.inf
            for _halving in range(30):
                for a in range(p):
                    candidate[a] = beta[a] + step[a]
                new = _cox_step(starts, X, w, candidate, deaths, death_x, r, new_score, new_info)
                if new >= loglik - 1e-12 * abs(loglik):
                    break
                for a in range(p):
                    step[a] /= 2.0
            if not (np.isfinite(new) and new >= loglik - 1e-12 * abs(loglik)):
                break  # no step along the Newton direction improves: give up on this row
            done = abs(new - loglik) <= tolerance * max(abs(loglik), 1.0)
            beta[:] = candidate
            score[:] = new_score
            info[:, :] = new_info
            loglik = new
            if done:
                converged[b] = np.all(np.isfinite(beta)) and np.all(np.abs(beta) < 1e3)
                break
        for a in range(p):
            betas[b, a] = beta[a]
    return betas, converged


@njit(cache=True)
def _breslow_kernel(time, event, starts, X, weights, betas, h):
    """Breslow's H0(h) exp(-m) and m per row (m: that row's largest x beta among its patients)."""
    n_rows = weights.shape[0]
    n = X.shape[0]
    n_groups = starts.shape[0] - 1
    s0 = np.zeros(n_groups)
    r = np.zeros(n)
    baseline = np.zeros(n_rows)
    shifts = np.zeros(n_rows)
    for b in range(n_rows):
        w = weights[b]
        shifts[b] = _shifted_weights(X, w, betas[b], r)
        total = 0.0
        for g in range(n_groups - 1, -1, -1):
            for i in range(starts[g], starts[g + 1]):
                total += r[i]
            s0[g] = total
        hazard = 0.0
        for g in range(n_groups):
            if time[starts[g]] > h:
                break
            d = 0.0
            for i in range(starts[g], starts[g + 1]):
                if event[i]:
                    d += w[i]
            if d > 0:
                hazard += d / s0[g] if s0[g] > 0 else np.inf
        baseline[b] = hazard
    return baseline, shifts


@dataclass
class CoxFit:
    """Coefficients of each replicate's Cox fit (B, p), and whether it converged."""

    beta: np.ndarray
    converged: np.ndarray  # (B,) bool


def _prepared(time, event, X, weights):
    time = np.asarray(time, dtype=float)
    order, t, starts = _sorted(time)
    X = np.ascontiguousarray(np.asarray(X, dtype=float).reshape(len(time), -1)[order])
    weights = np.ascontiguousarray(np.atleast_2d(np.asarray(weights, dtype=float))[:, order])
    return t, np.ascontiguousarray(np.asarray(event, dtype=np.bool_)[order]), starts, X, weights, order


def cox_fit(time: np.ndarray, event: np.ndarray, X: np.ndarray, weights: np.ndarray) -> CoxFit:
    """Cox partial-likelihood fits (Breslow ties) of covariates ``X`` (n, p <= 2), one per row of frequency
    ``weights`` (B, n), by Newton-Raphson with step halving, each row from the fit of every patient once (the
    maximum does not depend on the start); a row whose fit does not converge (monotone likelihood, no event) has
    ``converged`` False."""
    t, e, starts, X, weights, _ = _prepared(time, event, X, weights)
    if X.shape[1] > 2:
        raise ValueError("cox_fit takes at most 2 covariates")
    if X.shape[1] == 0:
        return CoxFit(np.zeros((len(weights), 0)), (weights * e).sum(axis=1) > 0)
    start = np.zeros(X.shape[1])
    if len(weights) > 1:  # the replicates start from the fit of every patient once: fewer Newton steps each
        whole, ok = _cox_kernel(t, e, starts, X, np.ones((1, len(t))), start, MAX_ITERATIONS, TOLERANCE)
        start = whole[0] if ok[0] else start
    beta, converged = _cox_kernel(t, e, starts, X, weights, start, MAX_ITERATIONS, TOLERANCE)
    return CoxFit(beta, converged)


def breslow_cumulative_hazard(
    time: np.ndarray, event: np.ndarray, X: np.ndarray, weights: np.ndarray, beta: np.ndarray, h: float
) -> np.ndarray:
    """Each patient's cumulative hazard at ``h``, ``H0(h) exp(x beta)`` with Breslow's H0, per row: (B, n), patients
    in the order given."""
    t, e, starts, Xs, ws, order = _prepared(time, event, X, weights)
    beta = np.ascontiguousarray(np.atleast_2d(beta).reshape(len(ws), Xs.shape[1]), dtype=float)
    baseline, shifts = _breslow_kernel(t, e, starts, Xs, ws, beta, float(h))
    X = np.asarray(X, dtype=float).reshape(len(time), -1)
    eta = beta @ X.T if X.shape[1] else np.zeros((len(ws), len(time)))
    with np.errstate(over="ignore", invalid="ignore"):  # a fit that diverged: its row is not used
        return baseline[:, None] * np.exp(eta - shifts[:, None])
