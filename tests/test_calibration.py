"""Calibration and net benefit (``bench.stats.calibration``) against independent implementations.

Every reference runs on real predictions: a Cox model fitted on two thirds of GBSG2 (or a random survival forest
on WHAS500) predicts the other third, and the bootstrap replicates are checked by handing the reference the
resampled patients themselves (a patient drawn twice is two rows), which is what the engine's multiplicities mean.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pandas as pd
import pytest
from sksurv.column import encode_categorical
from sksurv.datasets import load_gbsg2, load_whas500
from sksurv.ensemble import RandomSurvivalForest
from sksurv.linear_model import CoxPHSurvivalAnalysis

from bench.data.cohort import EvaluationPolicy, structured_y
from bench.stats import calibration as cal
from bench.stats.bootstrap import bootstrap_indices, counts_from_indices
from bench.stats.weighted_fits import cox_fit, kaplan_meier_at

REPLICATES = 4  # bootstrap replicates each reference also sees


class Predictions:
    """Test patients' outcomes and a fitted model's survival predictions for them."""

    def __init__(self, model, X: np.ndarray, y: np.ndarray, seed: int = 0):
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(y))
        train, test = order[: 2 * len(y) // 3], order[2 * len(y) // 3 :]
        self.model = model.fit(X[train], y[train])
        self.functions = self.model.predict_survival_function(X[test])
        self.time = y["time"][test].astype(float)
        self.event = y["event"][test].astype(bool)
        self.n = len(test)
        self.own = np.array([f(np.clip(t, *f.domain)) for f, t in zip(self.functions, self.time)])
        self.indices = bootstrap_indices(seed, "ab" * 32, 0, 0, self.n, REPLICATES)
        self.counts = counts_from_indices(self.indices, self.n)

    def survival(self, h: float) -> np.ndarray:
        return np.array([f(np.clip(h, *f.domain)) for f in self.functions])

    def risk(self, h: float) -> np.ndarray:
        return np.clip(1.0 - self.survival(h), cal.CLIP, 1 - cal.CLIP)

    def draws(self):
        """(index of the resampled patients, their multiplicities): the point sample, then each replicate."""
        yield np.arange(self.n), np.ones(self.n)
        yield from zip(self.indices, self.counts)


def _y(event, time) -> np.ndarray:
    return structured_y(np.asarray(event, bool), np.asarray(time, float))


@pytest.fixture(scope="module")
def gbsg2() -> Predictions:
    X, y = load_gbsg2()
    return Predictions(CoxPHSurvivalAnalysis(), encode_categorical(X).to_numpy(float), _y(y["cens"], y["time"]))


@pytest.fixture(scope="module")
def whas500() -> Predictions:
    X, y = load_whas500()
    forest = RandomSurvivalForest(n_estimators=50, min_samples_leaf=10, random_state=0, n_jobs=1)
    return Predictions(forest, encode_categorical(X).to_numpy(float), _y(y["fstat"], y["lenfol"]))


@pytest.mark.parametrize("h", [365.0, 1095.0, 1825.0])
def test_calibration_slope_is_the_cox_coefficient_of_the_transformed_prediction(gbsg2: Predictions, h) -> None:
    x = cal.cloglog(gbsg2.risk(h))
    ours = cox_fit(gbsg2.time, gbsg2.event, x[:, None], np.vstack([np.ones(gbsg2.n), gbsg2.counts]))
    assert ours.converged.all()
    for (index, _), beta in zip(gbsg2.draws(), ours.beta[:, 0]):
        reference = CoxPHSurvivalAnalysis(ties="breslow", tol=1e-12, n_iter=200).fit(
            x[index, None], _y(gbsg2.event[index], gbsg2.time[index])
        )
        assert beta == pytest.approx(reference.coef_[0], abs=1e-7)


def test_a_perfectly_ordered_outcome_has_no_slope_and_says_so() -> None:
    time = np.arange(1.0, 21.0)
    event = np.ones(20, dtype=bool)
    survival = np.linspace(0.1, 0.9, 20)  # the earliest event has the highest risk, strictly: no finite maximum
    metrics = cal.CalibrationMetrics(_y(event, time), np.column_stack([survival] * 3), survival,
                                     EvaluationPolicy((5.0, 10.0, 15.0), 15.0))  # fmt: skip
    values = metrics.point()
    assert np.isnan(values["cal_slope_10"])
    assert metrics.reasons["cal_slope_10"] == (
        "the Cox fit did not converge (the outcome is perfectly ordered by the prediction)"
    )


def test_the_ici_smoother_is_the_cox_model_on_the_spline_and_its_numbers_follow(gbsg2: Predictions) -> None:
    h = 1095.0
    risk = gbsg2.risk(h)
    design = cal.smoother_design(cal.cloglog(risk))
    assert design.shape == (gbsg2.n, 2), "3 distinct knots: x and one non-linear term"
    ours = cal.integrated_calibration(gbsg2.time, gbsg2.event, risk, h, np.vstack([np.ones(gbsg2.n), gbsg2.counts]))
    for b, (index, counts) in enumerate(gbsg2.draws()):
        reference = CoxPHSurvivalAnalysis(ties="breslow", tol=1e-12, n_iter=200).fit(
            design[index], _y(gbsg2.event[index], gbsg2.time[index])
        )
        observed = 1.0 - np.array([f(h) for f in reference.predict_survival_function(design)])
        np.testing.assert_allclose(ours.observed[b], observed, atol=1e-7)
        delta = np.abs(observed - risk)[index]  # each drawn patient once per draw
        assert ours.ici[b] == pytest.approx(delta.mean(), abs=1e-7)
        assert ours.e50[b] == pytest.approx(np.quantile(delta, 0.5), abs=1e-7)
        assert ours.e90[b] == pytest.approx(np.quantile(delta, 0.9), abs=1e-7)


def test_ici_and_e50_agree_with_lifelines_whose_smoother_differs(gbsg2: Predictions) -> None:
    """lifelines smooths with a parametric Royston-Parmar model, linear in cloglog(risk) with a spline in log time;
    ours is the paper's Cox model on a spline of cloglog(risk). Both estimate the same calibration curve, so they
    agree to within 0.02 (on four GBSG2 splits the largest gap was 0.018), not to the last digit, and both see the
    predictions of a model whose cumulative hazard is doubled as more than twice as badly calibrated.

    Times go to lifelines in years: on a scale of days its spline fit stops far from the maximum (every smoothed
    risk 0), which the test would otherwise take for a difference."""
    import matplotlib
    from lifelines.calibration import survival_probability_calibration
    from lifelines.utils import CensoringType

    matplotlib.use("Agg")
    h = 1095.0

    class Predicted:  # what survival_probability_calibration reads of a fitted lifelines model
        duration_col, event_col = "T", "E"
        _censoring_type = CensoringType.RIGHT

        def predict_survival_function(self, df, times):
            return pd.DataFrame([df["S"].to_numpy()], index=list(times))

    found = {}
    for scale in (1, 2):
        survival = gbsg2.survival(h) ** scale  # scale 2: the cumulative hazard doubled
        frame = pd.DataFrame({"T": gbsg2.time / 365.25, "E": gbsg2.event.astype(int), "S": survival})
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            _, ici, e50 = survival_probability_calibration(Predicted(), frame, t0=h / 365.25)
        ours = cal.integrated_calibration(gbsg2.time, gbsg2.event, np.clip(1 - survival, cal.CLIP, 1), h)
        assert 0.0 < ici < 0.5 and 0.0 < e50 < 0.5, "the reference fit converged"
        assert ours.ici[0] == pytest.approx(ici, abs=0.02)
        assert ours.e50[0] == pytest.approx(e50, abs=0.02)
        found[scale] = (ours.ici[0], ici)
    assert found[2][0] > 2 * found[1][0] and found[2][1] > 2 * found[1][1]


def test_the_spline_is_harrells_restricted_cubic_spline() -> None:
    knots = np.array([-1.0, 0.5, 3.0])
    x = np.linspace(-4, 7, 221)
    basis = cal.spline_basis(x, knots)
    term = basis[:, 1]
    # zero below the first knot, linear beyond the last, a cubic (x - k1)^3 / (k3 - k1)^2 between the first two
    assert np.all(term[x <= knots[0]] == 0)
    beyond = x >= knots[2]
    np.testing.assert_allclose(np.diff(term[beyond], 2), 0, atol=1e-9)
    between = (x > knots[0]) & (x <= knots[1])
    np.testing.assert_allclose(term[between], (x[between] - knots[0]) ** 3 / (knots[2] - knots[0]) ** 2)


def test_d_calibration_matches_survivaleval(gbsg2: Predictions, whas500: Predictions) -> None:
    from SurvivalEVAL.evaluations.calibration.distributional.distribution_calibration import d_calibration

    for p in (gbsg2, whas500):
        statistic, pvalue = cal.d_calibration(p.own, p.event, np.vstack([np.ones(p.n), p.counts]))
        for b, (index, _) in enumerate(p.draws()):
            ref_statistic, ref_p, _ = d_calibration(p.own[index], p.event[index].astype(int))
            assert statistic[b] == pytest.approx(ref_statistic, rel=1e-10)
            assert pvalue[b] == pytest.approx(ref_p, rel=1e-9, abs=1e-14)


def test_d_calibration_bins_spread_a_censored_patient_as_the_paper_does() -> None:
    shares = cal.d_calibration_bins(np.array([0.35, 0.35, 1.0]), np.array([True, False, False]))
    assert shares[0].tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0]  # S = 0.35 lies in [0.3, 0.4): the 7th bin from 1
    expected = [0.0] * 6 + [(0.35 - 0.3) / 0.35] + [1 / (10 * 0.35)] * 3
    np.testing.assert_allclose(shares[1], expected)
    assert shares[1].sum() == pytest.approx(1.0) and shares[2].sum() == pytest.approx(1.0)


@pytest.mark.parametrize("h", [365.0, 1825.0])
def test_net_benefit_matches_dcurves(gbsg2: Predictions, whas500: Predictions, h) -> None:
    from dcurves import dca

    thresholds = list(EvaluationPolicy((h,), h).thresholds)
    for p in (gbsg2, whas500):
        risk = p.risk(h)
        model, everyone = cal.net_benefit(p.time, p.event, risk, h, thresholds, np.vstack([np.ones(p.n), p.counts]))
        for b, (index, _) in enumerate(p.draws()):
            frame = pd.DataFrame({"T": p.time[index], "E": p.event[index].astype(int), "risk": risk[index]})
            reference = dca(data=frame, outcome="E", modelnames=["risk"], thresholds=thresholds, time=h,
                            time_to_outcome_col="T")  # fmt: skip
            ref_model = reference[reference.model == "risk"].net_benefit.to_numpy(dtype=float)
            ref_all = reference[reference.model == "all"].net_benefit.to_numpy(dtype=float)
            defined = np.isfinite(ref_model)
            assert defined.sum() >= len(thresholds) // 2
            np.testing.assert_allclose(model[b][defined], ref_model[defined], atol=1e-12)
            np.testing.assert_allclose(everyone[b], ref_all, atol=1e-12)
            # where dcurves has no value (the treated were not followed until h), ours has one only if their
            # Kaplan-Meier estimate reached 0 before: every treated patient then had the event, a defined value
            for k in np.flatnonzero(~defined):
                treated = index[risk[index] >= thresholds[k]]
                if np.isfinite(model[b][k]):
                    assert p.event[treated][np.argmax(p.time[treated])], "the last treated time is an event"


@pytest.mark.parametrize("h", [365.0, 1095.0])
def test_observed_to_expected_is_one_minus_kaplan_meier_over_the_mean_predicted_risk(gbsg2: Predictions, h) -> None:
    from lifelines import KaplanMeierFitter

    policy = EvaluationPolicy((365.0, 1095.0, 1825.0), 1825.0)
    at_horizons = np.column_stack([gbsg2.survival(t) for t in policy.horizons])
    metrics = cal.CalibrationMetrics(_y(gbsg2.event, gbsg2.time), at_horizons, gbsg2.own, policy)
    values = metrics.evaluate(np.vstack([np.ones(gbsg2.n), gbsg2.counts]))[cal.oe_key(h)]
    for b, (index, _) in enumerate(gbsg2.draws()):
        km = KaplanMeierFitter().fit(gbsg2.time[index], gbsg2.event[index])
        observed = 1.0 - float(km.survival_function_at_times(h).iloc[0])
        assert values[b] == pytest.approx(observed / gbsg2.risk(h)[index].mean(), rel=1e-12)
    assert not gbsg2.event[np.argmax(gbsg2.time)], "the last time is censored"
    assert np.isnan(kaplan_meier_at(gbsg2.time, gbsg2.event, np.ones((1, gbsg2.n)), gbsg2.time.max() + 1)[0]), \
        "past the last time, a censored one, the estimate is undefined"  # fmt: skip


def test_a_learner_without_survival_functions_gets_na_with_the_reason() -> None:
    policy = EvaluationPolicy((1.0, 2.0), 2.0)
    metrics = cal.CalibrationMetrics(_y([True, False, True], [0.5, 1.5, 2.5]), None, None, policy)
    values = metrics.point()
    assert set(values) == set(cal.calibration_names(policy)) and all(np.isnan(v) for v in values.values())
    assert set(metrics.reasons.values()) == {"the model gives no survival function"}
