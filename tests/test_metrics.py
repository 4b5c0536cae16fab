"""Metrics checked against scikit-survival and lifelines, never against our own output."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest
from lifelines.utils import concordance_index as lifelines_concordance_index
from sksurv.datasets import load_veterans_lung_cancer
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.nonparametric import CensoringDistributionEstimator

from bench.data.cohort import EvaluationPolicy, structured_y
from bench.stats.bootstrap import bootstrap_indices, counts_from_indices, summarise
from bench.stats.engine import FoldMetrics, auc_key, uno_weights, within_training_follow_up
from bench.stats.engine import concordance as concordance_replicates

SEEDS = [0, 1, 2, 3, 4]
SHA = hashlib.sha256(b"cv5-split").hexdigest()
TOL = 1e-9


def fold_scores(y_train, y_test, risk, survival, policy) -> SimpleNamespace:
    """Every metric of one fold, as the evaluation loop computes them (values, and reasons for n/a)."""
    engine = FoldMetrics(y_train, y_test, risk, survival, policy)
    return SimpleNamespace(values=engine.point(), reasons=engine.reasons)


def tied_data(seed: int, n: int, max_time: int = 10, event_rate: float = 0.6) -> np.ndarray:
    """Outcomes with many tied times (a small integer set) plus risks rounded to one decimal."""
    rng = np.random.default_rng(seed)
    time = rng.integers(1, max_time + 1, n).astype(float)
    event = rng.random(n) < event_rate
    risk = np.round(rng.normal(size=n) - 0.1 * time, 1)
    return structured_y(event, time), risk


def reference_or_nan(compute: Callable[[], tuple]) -> float:
    """The reference's estimate, or NaN where it declines (no comparable pair)."""
    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            return float(compute()[0])
    except ValueError:
        return math.nan


def assert_close_or_both_nan(actual: float, expected: float) -> None:
    if math.isnan(expected):
        assert math.isnan(actual)
    else:
        assert abs(actual - expected) <= TOL


@pytest.mark.parametrize("seed", SEEDS)
def test_harrell_replicates_match_sksurv_on_resampled_indices(seed: int) -> None:
    """Every bootstrap replicate equals concordance_index_censored on that replicate's rows."""
    y, risk = tied_data(seed, 40)
    indices = bootstrap_indices(seed, SHA, 0, seed % 3, len(y), 50)
    got = concordance_replicates(y["event"], y["time"], risk, counts_from_indices(indices, len(y)))
    assert got.shape == (50,)
    for b, idx in enumerate(indices):
        ref = reference_or_nan(lambda: concordance_index_censored(y["event"][idx], y["time"][idx], risk[idx]))
        assert_close_or_both_nan(got[b], ref)
    assert np.isfinite(got).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_uno_replicates_match_sksurv_ipcw_on_resampled_indices(seed: int) -> None:
    """With uno_weights, every replicate equals concordance_index_ipcw on that replicate's rows."""
    y_test, risk = tied_data(seed, 40)
    y_train, _ = tied_data(seed + 100, 80)
    y_train["time"][0], y_train["event"][0] = 10.0, True
    tau = 8.0
    weights = uno_weights(y_train, y_test, tau)
    indices = bootstrap_indices(seed, SHA, 1, 0, len(y_test), 50)
    got = concordance_replicates(
        y_test["event"], y_test["time"], risk, counts_from_indices(indices, len(y_test)), weights
    )
    for b, idx in enumerate(indices):
        ref = reference_or_nan(lambda: concordance_index_ipcw(y_train, y_test[idx], risk[idx], tau=tau))
        assert_close_or_both_nan(got[b], ref)
    assert np.isfinite(got).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_fold_harrell_matches_lifelines_with_ties(seed: int) -> None:
    """Harrell's C of a fold equals lifelines' (which takes predicted times, hence -risk)."""
    y_test, risk = tied_data(seed, 60)
    y_train, _ = tied_data(seed + 100, 60)
    policy = EvaluationPolicy(horizons=(3.0, 6.0), tau=8.0)
    scores = fold_scores(y_train, y_test, risk, None, policy)
    expected = lifelines_concordance_index(y_test["time"], -risk, y_test["event"])
    assert abs(scores.values["c_index"] - expected) <= TOL
    assert "c_index" not in scores.reasons


def test_all_censored_test_data_gives_nan_with_reason() -> None:
    y_test, risk = tied_data(0, 30)
    y_test["event"] = False
    y_train, _ = tied_data(1, 60)
    with pytest.raises(ValueError, match="All samples are censored"):
        concordance_index_censored(y_test["event"], y_test["time"], risk)

    counts = counts_from_indices(bootstrap_indices(0, SHA, 0, 0, len(y_test), 20), len(y_test))
    assert np.isnan(concordance_replicates(y_test["event"], y_test["time"], risk, counts)).all()

    scores = fold_scores(y_train, y_test, risk, None, EvaluationPolicy(horizons=(3.0, 6.0), tau=8.0))
    assert math.isnan(scores.values["c_index"])
    assert scores.reasons["c_index"]


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_all_event_data_matches_reference(seed: int) -> None:
    y, risk = tied_data(seed, 30, event_rate=1.0)
    assert y["event"].all()
    indices = bootstrap_indices(seed, SHA, 0, 0, len(y), 30)
    got = concordance_replicates(y["event"], y["time"], risk, counts_from_indices(indices, len(y)))
    for b, idx in enumerate(indices):
        ref = reference_or_nan(lambda: concordance_index_censored(y["event"][idx], y["time"][idx], risk[idx]))
        assert_close_or_both_nan(got[b], ref)
    expected = concordance_index_censored(y["event"], y["time"], risk)[0]
    full = concordance_replicates(y["event"], y["time"], risk, np.ones((1, len(y))))
    assert abs(full[0] - expected) <= TOL


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_replicate_without_comparable_pair_is_nan() -> None:
    """A replicate of copies of one event, or of an event later than every censored time, has no pair."""
    event = np.array([True, False, True, False])
    time = np.array([5.0, 3.0, 2.0, 7.0])
    risk = np.array([0.3, 0.1, 0.9, 0.2])
    indices = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [2, 3, 0, 1]])
    got = concordance_replicates(event, time, risk, counts_from_indices(indices, 4))
    for b, idx in enumerate(indices[:2]):
        assert math.isnan(reference_or_nan(lambda: concordance_index_censored(event[idx], time[idx], risk[idx])))
        assert math.isnan(got[b])
    idx = indices[2]
    assert abs(got[2] - concordance_index_censored(event[idx], time[idx], risk[idx])[0]) <= TOL

    y = structured_y(event[[0, 1]], time[[0, 1]])
    scores = fold_scores(y, y, risk[[0, 1]], None, EvaluationPolicy(horizons=(4.0,), tau=6.0))
    assert math.isnan(scores.values["c_index"])
    assert scores.reasons["c_index"]


def veterans_fold(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, CoxPHSurvivalAnalysis, np.ndarray]:
    """A Cox model on the veterans data's numeric columns; the longest follow-up stays in training."""
    X, y_raw = load_veterans_lung_cancer()
    X = X[["Age_in_years", "Karnofsky_score", "Months_from_Diagnosis"]].to_numpy()
    y = structured_y(y_raw["Status"], y_raw["Survival_in_days"])
    order = np.random.default_rng(seed).permutation(len(y))
    order = np.r_[order[order == np.argmax(y["time"])], order[order != np.argmax(y["time"])]]
    train, test = order[:90], order[90:]
    model = CoxPHSurvivalAnalysis().fit(X[train], y[train])
    return y[train], y[test], model.predict(X[test]), model, X[test]


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_td_auc_and_ibs_match_sksurv_on_a_fitted_cox_model(seed: int) -> None:
    y_train, y_test, risk, model, X_test = veterans_fold(seed)
    policy = EvaluationPolicy(horizons=(30.0, 90.0, 180.0), tau=365.0)
    assert y_test["time"].max() <= y_train["time"].max()
    assert y_test["time"].min() <= 30.0 and y_test["time"].max() > 180.0
    survival = np.vstack([fn(policy.ibs_times) for fn in model.predict_survival_function(X_test)])

    scores = fold_scores(y_train, y_test, risk, survival, policy)

    auc, mean_auc = cumulative_dynamic_auc(y_train, y_test, risk, list(policy.horizons))
    for h, a in zip(policy.horizons, auc):
        assert abs(scores.values[auc_key(h)] - a) <= TOL
    assert abs(scores.values["td_auc_mean"] - mean_auc) <= TOL
    ibs = integrated_brier_score(y_train, y_test, survival, policy.ibs_times)
    assert abs(scores.values["ibs"] - ibs) <= TOL
    assert abs(scores.values["uno_c"] - concordance_index_ipcw(y_train, y_test, risk, tau=policy.tau)[0]) <= TOL
    assert abs(scores.values["c_index"] - concordance_index_censored(y_test["event"], y_test["time"], risk)[0]) <= TOL
    assert not scores.reasons


@pytest.mark.parametrize("outside", [0.5, 5000.0])
def test_horizon_outside_follow_up_is_nan_and_leaves_others_alone(outside: float) -> None:
    y_train, y_test, risk, model, X_test = veterans_fold(0)
    horizons = tuple(sorted((30.0, 90.0, outside)))
    policy = EvaluationPolicy(horizons=horizons, tau=365.0)
    scores = fold_scores(y_train, y_test, risk, None, policy)

    assert math.isnan(scores.values[auc_key(outside)])
    assert f"{outside:g}" in scores.reasons[auc_key(outside)]
    auc, _ = cumulative_dynamic_auc(y_train, y_test, risk, [30.0, 90.0])
    assert abs(scores.values[auc_key(30.0)] - auc[0]) <= TOL
    assert abs(scores.values[auc_key(90.0)] - auc[1]) <= TOL
    assert auc_key(30.0) not in scores.reasons and auc_key(90.0) not in scores.reasons
    assert math.isnan(scores.values["td_auc_mean"]) and scores.reasons["td_auc_mean"]
    assert math.isnan(scores.values["ibs"]) and scores.reasons["ibs"]


def test_within_training_follow_up_leaves_covered_data_unchanged() -> None:
    y_train, y_test, *_ = veterans_fold(1)
    out = within_training_follow_up(y_train, y_test)
    np.testing.assert_array_equal(out, y_test)


def pairwise_ipcw_auc(y_train: np.ndarray, y_test: np.ndarray, risk: np.ndarray, t: float) -> float:
    """Cumulative/dynamic AUC from its definition: IPCW-weighted cases against unweighted controls."""
    cens = CensoringDistributionEstimator().fit(y_train)
    case = y_test["event"] & (y_test["time"] <= t)
    control = y_test["time"] > t
    w = 1.0 / cens.predict_proba(y_test["time"][case])
    diff = risk[case][:, None] - risk[control][None, :]
    score = (diff > 0) + 0.5 * (diff == 0)
    return float((w @ score).sum() / (w.sum() * control.sum()))


def follow_up_data(seed: int, beyond: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training follow-up to 20 (ending in a lone event); test follow-up to 30 when ``beyond``."""
    rng = np.random.default_rng(seed)
    y_train = structured_y(rng.random(80) < 0.6, rng.integers(1, 20, 80).astype(float))
    y_train["time"][0], y_train["event"][0] = 20.0, True
    n = 50
    y_test = structured_y(rng.random(n) < 0.6, rng.integers(1, 31 if beyond else 21, n).astype(float))
    y_test["time"][:2], y_test["event"][:2] = (25.0, 28.0) if beyond else (18.0, 19.0), True
    risk = np.round(rng.normal(size=n) - 0.1 * y_test["time"], 1)
    return y_train, y_test, risk


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_pairwise_auc_definition_matches_sksurv(seed: int) -> None:
    """Validates the definition used below on data where scikit-survival does not raise."""
    y_train, y_test, risk = follow_up_data(seed, beyond=False)
    auc, _ = cumulative_dynamic_auc(y_train, y_test, risk, [5.0, 10.0, 15.0])
    for t, a in zip([5.0, 10.0, 15.0], auc):
        assert abs(pairwise_ipcw_auc(y_train, y_test, risk, t) - a) <= TOL


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_test_follow_up_beyond_training_gives_the_defined_td_auc(seed: int) -> None:
    """sksurv raises on the raw test set; ours equals the AUC's definition on the raw test set."""
    y_train, y_test, risk = follow_up_data(seed, beyond=True)
    horizons = (5.0, 10.0, 15.0)
    with pytest.raises(ValueError):
        cumulative_dynamic_auc(y_train, y_test, risk, list(horizons))

    followed = within_training_follow_up(y_train, y_test)
    assert followed["time"].max() == y_train["time"].max()
    assert not followed["event"][y_test["time"] >= 20.0].any()
    np.testing.assert_array_equal(followed[y_test["time"] < 20.0], y_test[y_test["time"] < 20.0])

    scores = fold_scores(y_train, y_test, risk, None, EvaluationPolicy(horizons=horizons, tau=15.0))
    for h in horizons:
        assert abs(scores.values[auc_key(h)] - pairwise_ipcw_auc(y_train, y_test, risk, h)) <= TOL
    assert math.isfinite(scores.values["td_auc_mean"])


def test_test_event_at_training_max_with_censored_last_training_time() -> None:
    """Horizons before the training max never use that event's weight, so their AUC is defined."""
    y_train = structured_y(np.array([1, 0, 1, 0, 1, 1, 0, 0], bool), np.arange(1.0, 9.0))
    y_test = structured_y(np.array([1, 0, 1, 1, 0, 1], bool), np.array([1.0, 2, 3, 5, 6, 8]))
    risk = np.array([0.9, 0.2, 0.7, 0.4, 0.1, 0.3])
    with pytest.raises(ValueError, match="censoring survival function is zero"):
        cumulative_dynamic_auc(y_train, y_test, risk, [2.0, 4.0])
    scores = fold_scores(y_train, y_test, risk, None, EvaluationPolicy(horizons=(2.0, 4.0), tau=6.0))
    for h in (2.0, 4.0):
        assert abs(scores.values[auc_key(h)] - pairwise_ipcw_auc(y_train, y_test, risk, h)) <= TOL


def test_bootstrap_indices_deterministic_and_sensitive_to_every_key() -> None:
    base = dict(seed=7, split_sha=SHA, repeat=0, fold=2, n=30, replicates=40)
    a = bootstrap_indices(**base)
    np.testing.assert_array_equal(a, bootstrap_indices(**base))
    assert a.shape == (40, 30) and a.min() >= 0 and a.max() < 30
    other_sha = hashlib.sha256(b"another-split").hexdigest()
    for key, value in [("seed", 8), ("split_sha", other_sha), ("repeat", 1), ("fold", 3)]:
        assert not np.array_equal(a, bootstrap_indices(**{**base, key: value})), key

    counts = counts_from_indices(a, 30)
    assert counts.shape == (40, 30)
    np.testing.assert_array_equal(counts.sum(axis=1), np.full(40, 30))
    for row, idx in zip(counts, a):
        np.testing.assert_array_equal(row, np.bincount(idx, minlength=30))


def test_summarise_mean_se_and_percentile_ci() -> None:
    per_fold = [0.61, 0.66, 0.70, 0.58, 0.64]
    reps = np.random.default_rng(0).normal(0.64, 0.03, 200)
    reps[[3, 50]] = np.nan
    s = summarise(per_fold, reps)
    values = np.array(per_fold)
    assert s.mean == pytest.approx(np.mean(values), abs=1e-12)
    assert s.se == pytest.approx(np.std(values, ddof=1) / np.sqrt(len(values)), abs=1e-12)
    low, high = np.percentile(reps[np.isfinite(reps)], [2.5, 97.5])
    assert s.ci_low == pytest.approx(low, abs=1e-12) and s.ci_high == pytest.approx(high, abs=1e-12)
    assert s.per_fold == per_fold and s.reason == ""


def test_summarise_nan_fold_gives_nan_mean_and_keeps_reason() -> None:
    s = summarise([0.6, math.nan, 0.7], np.array([0.6, 0.65]), reason="horizon 5000 outside follow-up")
    assert math.isnan(s.mean) and math.isnan(s.se)
    assert math.isnan(s.ci_low) and math.isnan(s.ci_high)
    assert s.reason == "horizon 5000 outside follow-up"
    assert s.as_dict()["reason"] == s.reason
