"""Calibration and clinical utility of one test fold, for every bootstrap replicate at once.

As in ``bench.stats.engine``, a replicate is a row of multiplicities ``counts`` (how often each test
patient was drawn): the point estimate is the row of ones, and every statistic below is a function of
weighted sums, so all replicates are computed together. ``S(h | x)`` is the learner's predicted survival
at the horizon h, ``risk = 1 - S(h | x)``, clipped to [1e-10, 1 - 1e-10] as lifelines clips it.

- **O/E** at h: observed risk, 1 - Kaplan-Meier of the test fold at h, over the mean predicted risk.
- **Calibration slope** at h: the coefficient of ``cloglog(risk) = log(-log S(h | x))`` in a Cox model of the
  test fold's outcome (Breslow ties), fitted by Newton's method on all replicates at once.
- **ICI** at h (Austin, Harrell and van Klaveren 2020): the Cox model on a restricted cubic spline of
  ``cloglog(risk)`` (3 knots at its 10th, 50th and 90th percentiles in the fold; Harrell's basis) smooths the
  observed risk ``1 - exp(-H0(h) exp(f))`` (Breslow's H0); the ICI is the mean absolute difference between
  predicted and smoothed observed risk, E50 and E90 its median and 90th percentile.
- **D-calibration** (Haider et al. 2020): the chi-square statistic of ``S(T_i | x_i)`` over 10 equal bins of
  [0, 1] against the uniform, a censored patient spread over its bin and the bins below as in the paper, and
  its p (9 degrees of freedom).
- **Net benefit** at h and threshold probability p (Vickers et al. 2008, survival form): patients with risk >= p
  are treated; ``NB = tpr (1 - S_t(h)) - tpr S_t(h) p / (1 - p)`` with ``tpr`` the share treated and ``S_t`` the
  Kaplan-Meier of the treated; treat-all is every patient treated, treat-none is 0.

Every value is NaN (with a reason for the fold's own value) where it is undefined: the horizon is past the
replicate's follow-up (the Kaplan-Meier estimate is not defined there), the replicate has no event, every
prediction is the same (no slope), or the Cox fit does not converge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2

from bench.data.cohort import EvaluationPolicy
from bench.stats.weighted_fits import CoxFit, breslow_cumulative_hazard, cox_fit, kaplan_meier_at

CLIP = 1e-10  # predicted risks are kept inside (0, 1) so that cloglog is finite, as lifelines does
DCAL_BINS = 10
KNOT_QUANTILES = (0.1, 0.5, 0.9)  # Harrell's default for 3 knots


def oe_key(h: float) -> str:
    return f"oe_{h:g}"


def slope_key(h: float) -> str:
    return f"cal_slope_{h:g}"


def ici_key(h: float) -> str:
    return f"ici_{h:g}"


def nb_key(h: float, p: float) -> str:
    return f"net_benefit_{h:g}_{p:g}"


def nb_all_key(h: float, p: float) -> str:
    return f"net_benefit_all_{h:g}_{p:g}"


def nb_gain_key(h: float, p: float) -> str:
    """The model's net benefit minus treat-all's, on the same replicate."""
    return f"net_benefit_gain_{h:g}_{p:g}"


DCAL_CHI2, DCAL_P = "dcal_chi2", "dcal_p"


def calibration_names(policy: EvaluationPolicy) -> list[str]:
    names = [k for h in policy.horizons for k in (oe_key(h), slope_key(h), ici_key(h))] + [DCAL_CHI2, DCAL_P]
    for h in policy.horizons:
        for p in policy.thresholds:
            names += [nb_key(h, p), nb_all_key(h, p), nb_gain_key(h, p)]
    return names


def cloglog(risk: np.ndarray) -> np.ndarray:
    risk = np.clip(np.asarray(risk, dtype=float), CLIP, 1.0 - CLIP)
    return np.log(-np.log1p(-risk))


def spline_basis(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Harrell's restricted cubic spline of ``x`` with 3 knots: columns x and the one non-linear term, linear
    beyond the outer knots, scaled by the squared knot range as in ``Hmisc::rcspline.eval``."""
    k1, k2, k3 = knots
    cube = lambda v: np.maximum(v, 0.0) ** 3  # noqa: E731
    term = cube(x - k1) - cube(x - k2) * (k3 - k1) / (k3 - k2) + cube(x - k3) * (k2 - k1) / (k3 - k2)
    return np.column_stack([x, term / (k3 - k1) ** 2])


def smoother_design(x: np.ndarray) -> np.ndarray:
    """The ICI smoother's covariates: the spline of x where its knots are distinct, x alone where x takes fewer
    than 3 distinct knot values, nothing where every x is the same (the smoother is then Breslow's H0 alone)."""
    knots = np.quantile(x, KNOT_QUANTILES)
    if np.all(np.diff(knots) > 1e-12 * max(1.0, float(np.abs(knots).max()))):
        return spline_basis(x, knots)
    return x[:, None] if np.ptp(x) > 0 else np.empty((len(x), 0))


@dataclass(frozen=True)
class IntegratedCalibration:
    """ICI, E50 and E90 per replicate, each patient's smoothed observed risk (B, n), and the smoother: its design
    and Cox fit (which another horizon's predictions may share, see ``integrated_calibration``)."""

    ici: np.ndarray
    e50: np.ndarray
    e90: np.ndarray
    observed: np.ndarray
    smoother: tuple[np.ndarray, CoxFit]


def integrated_calibration(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, h: float, weights: np.ndarray | None = None,
    quantiles: bool = True, smoother: tuple[np.ndarray, CoxFit] | None = None,
) -> IntegratedCalibration:
    """ICI, E50 and E90 of predicted risks at ``h`` (Austin, Harrell and van Klaveren 2020), per row of weights
    (E50 and E90 NaN without ``quantiles``).

    ``smoother``: the design and fit of predictions whose cloglog differs from this ``risk``'s by a constant (a
    proportional-hazards learner's at another horizon). The spline's knots move with the constant and a Cox model
    absorbs it in its baseline, so the smoothed risk at ``h`` is the same, without fitting again."""
    time, event = np.asarray(time, dtype=float), np.asarray(event, dtype=bool)
    risk = np.clip(np.asarray(risk, dtype=float), CLIP, 1.0 - CLIP)
    weights = np.ones((1, len(time))) if weights is None else np.atleast_2d(np.asarray(weights, dtype=float))
    if smoother is None:
        X = smoother_design(cloglog(risk))
        smoother = (X, cox_fit(time, event, X, weights))
    X, fit = smoother
    observed = -np.expm1(-breslow_cumulative_hazard(time, event, X, weights, fit.beta, h))
    delta = np.abs(observed - risk[None, :])
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ici = (weights * delta).sum(axis=1) / total
    last = np.where(weights > 0, time, -np.inf).max(axis=1)
    ok = fit.converged & (last >= h)
    e50, e90 = (_weighted_quantile(delta, weights, q) if quantiles else np.full(len(weights), np.nan) for q in (0.5, 0.9))
    return IntegratedCalibration(np.where(ok, ici, np.nan), np.where(ok, e50, np.nan), np.where(ok, e90, np.nan),
                                 observed, smoother)  # fmt: skip


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> np.ndarray:
    """The q-quantile of each row's values, a patient drawn k times counted k times (numpy's linear method on
    the expanded sample)."""
    out = np.empty(len(weights))
    for b in range(len(weights)):
        expanded = np.repeat(values[b], np.round(weights[b]).astype(int))
        out[b] = np.quantile(expanded, q) if expanded.size else np.nan
    return out


def d_calibration_bins(survival: np.ndarray, event: np.ndarray, bins: int = DCAL_BINS) -> np.ndarray:
    """Each patient's share of each bin (n, bins), bins of S(T | x) from 1 down to 0 (Haider et al. 2020).

    An event adds 1 to the bin of its S; a censored patient with S = s adds (s - lower edge) / s to its own bin
    and 1 / (bins s) to each bin below (its remaining mass spread uniformly over [0, s])."""
    s = np.clip(np.asarray(survival, dtype=float), 0.0, 1.0)
    event = np.asarray(event, dtype=bool)
    edges = np.linspace(1.0, 0.0, bins + 1)
    position = np.digitize(s, edges)  # edges[i - 1] > s >= edges[i]
    out = np.zeros((len(s), bins))
    rows = np.arange(len(s))
    uncensored = np.maximum(position, 1) - 1
    out[rows[event], uncensored[event]] = 1.0
    censored = ~event
    c_pos = np.maximum(position[censored] - 1, 0)
    c_s = s[censored]
    with np.errstate(invalid="ignore", divide="ignore"):
        own = np.where(c_s != 0, (c_s - edges[c_pos + 1]) / c_s, 1.0)
        tail = np.where(c_s != 0, 1.0 / (bins * c_s), 0.0)
    own = np.where(c_s == 1.0, 1.0 / bins, own)
    below = (np.arange(bins)[None, :] > c_pos[:, None]) & (c_s < 1.0)[:, None]
    out[censored] = np.where(below, tail[:, None], 0.0)
    out[rows[censored], c_pos] += own
    at_one = c_s == 1.0
    if at_one.any():  # S = 1: the whole mass spread evenly, as SurvivalEVAL does
        out[rows[censored][at_one]] = 1.0 / bins
    return out


def d_calibration(survival: np.ndarray, event: np.ndarray, counts: np.ndarray | None = None):
    """The chi-square statistic and p of uniformity of S(T_i | x_i), per row of ``counts``."""
    shares = d_calibration_bins(survival, event)
    counts = np.ones((1, len(shares))) if counts is None else np.atleast_2d(counts)
    histogram = counts @ shares
    expected = histogram.sum(axis=1, keepdims=True) / shares.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        statistic = (np.square(histogram - expected) / expected).sum(axis=1)
    return statistic, chi2.sf(statistic, shares.shape[1] - 1)


def net_benefit(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, h: float, thresholds, counts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Net benefit of treating patients with ``risk >= p`` and of treating all, at each threshold p: two
    (B, len(thresholds)) arrays (``dcurves.dca`` with a time to outcome computes the same). Nobody treated is
    a net benefit of 0; NaN where the treated were not followed until ``h`` and their Kaplan-Meier estimate has not
    reached 0 (``dcurves`` gives None whenever they were not followed until ``h``)."""
    counts = np.ones((1, len(time))) if counts is None else np.atleast_2d(counts)
    thresholds = np.asarray(thresholds, dtype=float)
    masks = np.vstack([np.ones(len(time)), (np.asarray(risk)[None, :] >= thresholds[:, None]).astype(float)])
    survival = kaplan_meier_at(time, event, counts, h, masks)  # (B, 1 + K): everyone, then each threshold's treated
    share = (counts @ masks[1:].T) / counts.sum(axis=1, keepdims=True)
    odds = thresholds / (1.0 - thresholds)
    s_all, s_treated = survival[:, :1], survival[:, 1:]
    model = np.where(share > 0, share * (1.0 - s_treated) - share * s_treated * odds, 0.0)
    return model, (1.0 - s_all) - s_all * odds


class CalibrationMetrics:
    """Every calibration and net-benefit metric of one test fold; ``evaluate(counts)`` for any replicates.

    ``at_horizons`` (n, len(horizons)): each test patient's predicted S(h | x); ``at_own_time`` (n,): S(T_i | x_i).
    Both None for a learner without survival functions: every value is then NaN with that reason.
    """

    def __init__(
        self,
        y_test: np.ndarray,
        at_horizons: np.ndarray | None,
        at_own_time: np.ndarray | None,
        policy: EvaluationPolicy,
    ):
        self.policy = policy
        self.names = calibration_names(policy)
        self.time = y_test["time"].astype(float)
        self.event = y_test["event"].astype(bool)
        self.n = len(self.time)
        self.reasons: dict[str, str] = {}
        self.risks = None if at_horizons is None else np.clip(1.0 - np.asarray(at_horizons, float), CLIP, 1 - CLIP)
        self.at_own_time = None if at_own_time is None else np.asarray(at_own_time, dtype=float)
        if self.risks is None:
            self.reasons = {name: "the model gives no survival function" for name in self.names}

    def point(self) -> dict[str, float]:
        values = {k: float(v[0]) for k, v in self.evaluate(np.ones((1, self.n))).items()}
        for name, value in values.items():
            if math.isnan(value) and name not in self.reasons:
                self.reasons[name] = self._why_nan(name)
        return values

    def evaluate(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        counts = np.ascontiguousarray(np.atleast_2d(counts), dtype=float)
        if self.risks is None:
            return {name: np.full(len(counts), np.nan) for name in self.names}
        out: dict[str, np.ndarray] = {}
        total = counts.sum(axis=1)
        first = None  # the first horizon's cloglog, slope and smoother: shared by its shifts (see _shift_of)
        for j, h in enumerate(self.policy.horizons):
            risk = self.risks[:, j]
            observed = 1.0 - kaplan_meier_at(self.time, self.event, counts, h)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[oe_key(h)] = observed / ((counts @ risk) / total)
            x = cloglog(risk)
            shifted = first is not None and _shift_of(x, first[0])
            if shifted:  # a proportional-hazards learner: the same slope, the same smoother, at every horizon
                out[slope_key(h)] = first[1]
            elif np.ptp(x) > 0:
                fit = cox_fit(self.time, self.event, x[:, None], counts)
                out[slope_key(h)] = np.where(fit.converged, fit.beta[:, 0], np.nan)
            else:
                out[slope_key(h)] = np.full(len(counts), np.nan)
            ici = integrated_calibration(self.time, self.event, risk, h, counts, quantiles=False,
                                         smoother=first[2] if shifted else None)  # fmt: skip
            out[ici_key(h)] = ici.ici
            if first is None:
                first = (x, out[slope_key(h)], ici.smoother)
            model, everyone = net_benefit(self.time, self.event, risk, h, self.policy.thresholds, counts)
            for k, p in enumerate(self.policy.thresholds):
                out[nb_key(h, p)] = model[:, k]
                out[nb_all_key(h, p)] = everyone[:, k]
                out[nb_gain_key(h, p)] = model[:, k] - everyone[:, k]
        if self.at_own_time is None:
            out[DCAL_CHI2] = out[DCAL_P] = np.full(len(counts), np.nan)
        else:
            out[DCAL_CHI2], out[DCAL_P] = d_calibration(self.at_own_time, self.event, counts)
        return {name: out[name] for name in self.names}

    def _why_nan(self, name: str) -> str:
        if name in (DCAL_CHI2, DCAL_P):
            return "the model gives no survival at the patients' own times"
        horizon, threshold = _horizon_of(name, self.policy)
        j = list(self.policy.horizons).index(horizon)
        if not self.event.any():
            return "no event in the fold"
        if horizon > self.time.max():
            return f"horizon {horizon:g} past the fold's follow-up (last time {self.time.max():g})"
        if threshold is not None:
            return (f"the patients with predicted risk >= {threshold:g} at {horizon:g} were not followed until "
                    f"{horizon:g}")  # fmt: skip
        if name.startswith("cal_slope") and np.ptp(cloglog(self.risks[:, j])) == 0:
            return f"every test patient has the same predicted survival at {horizon:g}: no slope"
        return "the Cox fit did not converge (the outcome is perfectly ordered by the prediction)"


def _shift_of(x: np.ndarray, reference: np.ndarray) -> bool:
    """Whether ``x`` is ``reference`` plus a constant (to 1e-9 of its spread), no value at the clipping bound."""
    difference = x - reference
    scale = max(float(np.ptp(reference)), 1.0)
    bounds = cloglog(np.array([CLIP, 1.0 - CLIP]))
    clipped = np.isin(x, bounds).any() or np.isin(reference, bounds).any()
    return not clipped and float(np.ptp(difference)) <= 1e-9 * scale


def _horizon_of(name: str, policy: EvaluationPolicy) -> tuple[float, float | None]:
    """The horizon (and threshold) a calibration metric's name refers to."""
    for h in policy.horizons:
        if name in (oe_key(h), slope_key(h), ici_key(h)):
            return h, None
        for p in policy.thresholds:
            if name in (nb_key(h, p), nb_all_key(h, p), nb_gain_key(h, p)):
                return h, p
    raise KeyError(name)
