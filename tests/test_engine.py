"""The metrics engine, replicate by replicate, against scikit-survival and lifelines.

Every test draws bootstrap replicates, evaluates them all at once with
``FoldMetrics.evaluate`` and compares each replicate with the reference function
called on that replicate's indices: equal to 1e-9, or NaN where the reference
raises (or itself returns NaN).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from lifelines.utils import concordance_index as lifelines_concordance_index
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)

from bench.data.cohort import EvaluationPolicy, structured_y
from bench.stats.bootstrap import bootstrap_indices, counts_from_indices
from bench.stats.engine import (
    FoldMetrics,
    auc_key,
    concordance,
    harrell_c,
    metric_names,
    within_training_follow_up,
)

TOL = 1e-9
SEEDS = [0, 1, 2, 3]
B = 30
SHA = hashlib.sha256(b"engine-tests").hexdigest()
POLICY = EvaluationPolicy(horizons=(4.0, 8.0, 12.0), tau=12.0)

OBSERVED: dict[str, float] = {}
"""Largest |ours - reference| seen per metric in this session (for reporting)."""


@dataclass
class Fold:
    y_train: np.ndarray
    y_test: np.ndarray
    risk: np.ndarray
    survival: np.ndarray | None
    policy: EvaluationPolicy = POLICY

    @property
    def n(self) -> int:
        return len(self.y_test)

    @property
    def followed(self) -> np.ndarray:
        return within_training_follow_up(self.y_train, self.y_test)

    def engine(self) -> FoldMetrics:
        return FoldMetrics(self.y_train, self.y_test, self.risk, self.survival, self.policy)


def outcomes(rng: np.random.Generator, n: int, max_time: int, event_rate: float) -> np.ndarray:
    """Integer times in [1, max_time], so many ties."""
    return structured_y(rng.random(n) < event_rate, rng.integers(1, max_time + 1, n).astype(float))


def cox_fold(seed: int, n_test: int = 40, beyond: bool = False) -> Fold:
    """A Cox model on random covariates: tied times, risks rounded to 0.1, Breslow survival curves.

    Training follow-up ends at 22 (beyond the test's 20), or, when ``beyond``, at 18
    while a few test patients are followed to 19 and 21.
    """
    rng = np.random.default_rng(seed)
    n_train = 80
    x_train, x_test = rng.normal(size=(n_train, 3)), rng.normal(size=(n_test, 3))
    y_train = outcomes(rng, n_train, 18 if beyond else 20, 0.6)
    y_test = outcomes(rng, n_test, 18 if beyond else 20, 0.5)
    y_train["time"][0], y_train["event"][0] = (18.0 if beyond else 22.0), seed % 2 == 0
    if beyond:
        y_test["time"][:3], y_test["event"][:3] = (21.0, 19.0, 18.0), (True, False, True)
    model = CoxPHSurvivalAnalysis().fit(x_train, y_train)
    survival = np.vstack([fn(POLICY.ibs_times) for fn in model.predict_survival_function(x_test)])
    return Fold(y_train, y_test, np.round(model.predict(x_test), 1), survival)


def hazard_fold(
    seed: int, n_test: int, event_rate: float = 0.5, risk: np.ndarray | None = None, max_time: int = 20
) -> Fold:
    """Outcomes with ties and S(t) = exp(-H0(t) exp(risk)) for a monotone H0; training follow-up to 22."""
    rng = np.random.default_rng(seed)
    y_train = outcomes(rng, 80, 20, 0.6)
    y_train["time"][0], y_train["event"][0] = 22.0, True
    y_test = outcomes(rng, n_test, max_time, event_rate)
    if risk is None:
        risk = np.round(rng.normal(size=n_test), 1)
    survival = np.exp(-0.02 * POLICY.ibs_times[None, :] ** 1.3 * np.exp(risk[:, None]))
    return Fold(y_train, y_test, np.asarray(risk, dtype=float), survival)


def reference(compute: Callable[..., float], *args: Any, errors: tuple[type[Exception], ...] = (ValueError,)) -> float:
    """``compute(*args)``, NaN where it raises one of ``errors``."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return float(compute(*args))
    except errors:
        return math.nan


def sksurv_harrell(y: np.ndarray, risk: np.ndarray) -> float:
    return concordance_index_censored(y["event"], y["time"], risk)[0]


def lifelines_harrell(y: np.ndarray, risk: np.ndarray) -> float:
    """lifelines takes predicted times, hence -risk; raises ZeroDivisionError without admissible pairs."""
    return lifelines_concordance_index(y["time"], -risk, y["event"])


def sksurv_uno(y_train: np.ndarray, y: np.ndarray, risk: np.ndarray, tau: float) -> float:
    return concordance_index_ipcw(y_train, y, risk, tau=tau)[0]


def sksurv_auc(y_train: np.ndarray, y: np.ndarray, risk: np.ndarray, horizon: float) -> float:
    return cumulative_dynamic_auc(y_train, y, risk, [horizon])[0][0]


def sksurv_mean_auc(y_train: np.ndarray, y: np.ndarray, risk: np.ndarray, horizons: tuple[float, ...]) -> float:
    return cumulative_dynamic_auc(y_train, y, risk, list(horizons))[1]


def references(fold: Fold, idx: np.ndarray) -> dict[str, float]:
    """Every reference value of one replicate; ``c_index@lifelines`` is the second Harrell reference."""
    y_train, y, yf, risk, policy = fold.y_train, fold.y_test[idx], fold.followed[idx], fold.risk[idx], fold.policy
    out = {
        "c_index": reference(sksurv_harrell, y, risk),
        "c_index@lifelines": reference(lifelines_harrell, y, risk, errors=(ZeroDivisionError,)),
        "uno_c": reference(sksurv_uno, y_train, y, risk, policy.tau),
        **{auc_key(h): reference(sksurv_auc, y_train, yf, risk, h) for h in policy.horizons},
        "td_auc_mean": reference(sksurv_mean_auc, y_train, yf, risk, policy.horizons),
    }
    if fold.survival is not None:
        out["ibs"] = reference(integrated_brier_score, y_train, yf, fold.survival[idx], policy.ibs_times)
    return out


def assert_same(ours: float, expected: float, what: str) -> None:
    """Equal to TOL, or both NaN."""
    if math.isnan(expected):
        assert math.isnan(ours), f"{what}: reference is NaN/raises, ours {ours}"
        return
    assert not math.isnan(ours), f"{what}: ours is NaN, reference {expected}"
    diff = abs(ours - expected)
    key = what.split("[")[0]
    OBSERVED[key] = max(OBSERVED.get(key, 0.0), diff)
    assert diff <= TOL, f"{what}: ours {ours}, reference {expected}"


def check_replicates(fold: Fold, indices: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Compare every replicate (rows of ``indices``) of the named metrics with the references."""
    got = fold.engine().evaluate(counts_from_indices(indices, fold.n))
    assert list(got) == metric_names(fold.policy)
    names = names or [*got, "c_index@lifelines"]
    assert len(indices) > 0
    for b, idx in enumerate(indices):
        expected = references(fold, idx)
        unchecked = [name for name in names if name not in expected]
        assert not unchecked, f"no reference for {unchecked}: they would pass unchecked"
        for name in names:
            ours = got[name.split("@")[0]][b]
            assert_same(ours, expected[name], f"{name}[replicate {b}]")
    return got


def replicate_indices(seed: int, n: int, replicates: int = B) -> np.ndarray:
    """The identity (the point estimate) followed by ``replicates`` bootstrap draws."""
    return np.vstack([np.arange(n), bootstrap_indices(seed, SHA, 0, seed % 5, n, replicates)])


@pytest.mark.parametrize("beyond", [False, True], ids=["covered", "beyond-training"])
@pytest.mark.parametrize("seed", SEEDS)
def test_every_replicate_matches_references(seed: int, beyond: bool) -> None:
    """Harrell (sksurv and lifelines), Uno, td-AUC per horizon and mean, IBS: every replicate."""
    fold = cox_fold(seed, beyond=beyond)
    if beyond:
        with pytest.raises(ValueError):
            cumulative_dynamic_auc(fold.y_train, fold.y_test, fold.risk, list(POLICY.horizons))
    got = check_replicates(fold, replicate_indices(seed, fold.n))
    for name, values in got.items():
        assert np.isfinite(values).mean() > 0.8, name

    engine = fold.engine()
    point = engine.point()
    for name, value in point.items():
        assert_same(value, float(got[name][0]), f"point {name}")
    assert all(name in engine.reasons for name, value in point.items() if math.isnan(value))


@pytest.mark.parametrize("seed", SEEDS)
def test_follow_up_censoring_changes_no_defined_value(seed: int) -> None:
    """Where sksurv is defined on the raw test outcomes (beyond the training follow-up), ours equals it."""
    fold = cox_fold(seed, beyond=True)
    indices = replicate_indices(seed, fold.n)
    got = fold.engine().evaluate(counts_from_indices(indices, fold.n))
    defined = 0
    for b, idx in enumerate(indices):
        y, risk = fold.y_test[idx], fold.risk[idx]
        raw = {auc_key(h): reference(sksurv_auc, fold.y_train, y, risk, h) for h in POLICY.horizons}
        raw["ibs"] = reference(integrated_brier_score, fold.y_train, y, fold.survival[idx], POLICY.ibs_times)
        for name, expected in raw.items():
            if math.isfinite(expected):
                defined += 1
                assert_same(got[name][b], expected, f"{name}[raw, replicate {b}]")
    assert defined > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_all_event_fold(seed: int) -> None:
    fold = hazard_fold(seed, 30, event_rate=1.0)
    assert fold.y_test["event"].all() and fold.followed["event"].all()
    got = check_replicates(fold, replicate_indices(seed, fold.n))
    assert np.isfinite(got["c_index"]).all() and np.isfinite(got["ibs"]).mean() > 0.8


@pytest.mark.parametrize("seed", SEEDS)
def test_all_censored_fold(seed: int) -> None:
    """C-indices and td-AUC are NaN everywhere with a reason, as every reference raises."""
    fold = hazard_fold(seed, 30, event_rate=0.0)
    names = ["c_index", "c_index@lifelines", "uno_c", *map(auc_key, POLICY.horizons), "td_auc_mean"]
    got = check_replicates(fold, replicate_indices(seed, fold.n), names)
    assert np.isnan(got["c_index"]).all() and np.isnan(got["uno_c"]).all()
    engine = fold.engine()
    engine.point()
    assert engine.reasons["c_index"] == "All samples are censored"
    assert engine.reasons["uno_c"]


def test_ibs_of_all_censored_fold_is_nan() -> None:
    fold = hazard_fold(0, 30, event_rate=0.0)
    with pytest.raises(ValueError, match="(?i)all samples are censored"):
        integrated_brier_score(fold.y_train, fold.followed, fold.survival, POLICY.ibs_times)
    assert math.isnan(fold.engine().point()["ibs"])


@pytest.mark.parametrize("seed", range(8))
def test_tiny_folds(seed: int) -> None:
    """n = 3: many replicates without comparable pairs, cases, controls or follow-up.

    IBS is compared on replicates with an event only; the others are the all-censored bug below.
    """
    fold = hazard_fold(seed, 3, event_rate=0.5, max_time=14)
    indices = replicate_indices(seed, 3)
    check_replicates(
        fold, indices, ["c_index", "c_index@lifelines", "uno_c", *map(auc_key, POLICY.horizons), "td_auc_mean"]
    )
    with_event = np.array([fold.followed["event"][idx].any() for idx in indices])
    if with_event.any():
        check_replicates(fold, indices[with_event], ["ibs"])


def test_tiny_folds_have_replicates_without_pairs() -> None:
    """The tiny-fold cases are not vacuous: some replicates are NaN, some are not, and IBS is compared on most seeds."""
    c = np.concatenate(
        [
            hazard_fold(s, 3, max_time=14).engine().evaluate(counts_from_indices(replicate_indices(s, 3), 3))["c_index"]
            for s in range(8)
        ]
    )
    assert np.isnan(c).any() and np.isfinite(c).any()
    with_event = [
        sum(hazard_fold(s, 3, max_time=14).followed["event"][idx].any() for idx in replicate_indices(s, 3))
        for s in range(8)
    ]
    assert sum(n > 0 for n in with_event) >= 6, f"replicates with an event per seed (IBS compared): {with_event}"


@pytest.mark.parametrize("seed", SEEDS)
def test_all_equal_risks_give_one_half(seed: int) -> None:
    fold = hazard_fold(seed, 30, risk=np.full(30, 0.3))
    got = check_replicates(fold, replicate_indices(seed, fold.n))
    for name in ["c_index", "uno_c", *map(auc_key, POLICY.horizons), "td_auc_mean"]:
        finite = got[name][np.isfinite(got[name])]
        assert finite.size and np.all(np.abs(finite - 0.5) <= TOL), name


@pytest.mark.parametrize("delta", [5e-9, 1e-6], ids=["tied", "not-tied"])
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_risk_tolerance(seed: int, delta: float) -> None:
    """Pairs of risks 5e-9 apart are tied as in sksurv (tolerance 1e-8); 1e-6 apart they are not."""
    rng = np.random.default_rng(seed)
    bases = rng.permutation(20) * 0.1
    risk = np.repeat(bases, 2) + np.tile([0.0, delta], 20)
    fold = hazard_fold(seed, 40, risk=risk)
    names = ["c_index", "uno_c", *map(auc_key, POLICY.horizons), "td_auc_mean", "ibs"]
    if delta > 1e-8:
        names.append("c_index@lifelines")
    check_replicates(fold, replicate_indices(seed, fold.n), names)

    pair = concordance(np.array([True, False]), np.array([1.0, 2.0]), np.array([delta, 0.0]))[0]
    assert pair == (0.5 if delta < 1e-8 else 1.0)


def test_td_auc_tie_chain_through_absent_patient() -> None:
    """Risks 0, 6e-9, 1.2e-8: the outer two are tied only through the middle one, which this replicate lacks."""
    y_train = structured_y(np.array([True, False, True, True, False, True]), np.array([1.0, 2, 3, 4, 6, 8]))
    y_test = structured_y(np.array([True, False, False]), np.array([1.0, 5.0, 5.0]))
    risk = np.array([1.2e-8, 6e-9, 0.0])
    fold = Fold(y_train, y_test, risk, None, EvaluationPolicy(horizons=(2.0,), tau=6.0))
    check_replicates(fold, np.array([[0, 1, 2], [0, 2, 2]]), ["td_auc_2", "td_auc_mean"])


def test_uno_replicates_without_the_event_beyond_training() -> None:
    """tau beyond the training follow-up: replicates that do not draw the late event are defined in sksurv."""
    y_train = structured_y(np.array([True, True, False, True]), np.array([1.0, 2, 3, 4]))
    y_test = structured_y(np.array([True, False, True]), np.array([1.0, 3.0, 5.0]))
    risk = np.array([0.4, 0.1, 0.2])
    fold = Fold(y_train, y_test, risk, None, EvaluationPolicy(horizons=(2.0,), tau=10.0))
    with pytest.raises(ValueError):
        concordance_index_ipcw(y_train, y_test, risk, tau=10.0)
    check_replicates(fold, np.array([[0, 1, 1], [0, 0, 1]]), ["uno_c"])


@pytest.mark.parametrize("seed", SEEDS)
def test_harrell_c_raises_where_sksurv_raises(seed: int) -> None:
    """Equal where sksurv gives a number; ValueError where it raises.

    Where sksurv returns NaN instead (tied events at the last time, no partner: 0/0),
    harrell_c raises its no-comparable-pairs ValueError.
    """
    fold = hazard_fold(seed, 4, event_rate=0.4, max_time=6)
    e, t, r = fold.y_test["event"], fold.y_test["time"], fold.risk
    undefined = 0
    for idx in [*replicate_indices(seed, 4), np.array([0]), np.array([], dtype=int)]:
        expected = reference(sksurv_harrell, fold.y_test[idx], r[idx])
        if math.isnan(expected):
            undefined += 1
            with pytest.raises(ValueError):
                harrell_c(e[idx], t[idx], r[idx])
        else:
            assert_same(harrell_c(e[idx], t[idx], r[idx]), expected, "harrell_c")
    assert undefined >= 2


def test_concordance_at_scale_matches_lifelines() -> None:
    """n = 20000 with heavy ties in time and risk."""
    rng = np.random.default_rng(0)
    n = 20_000
    time = rng.integers(1, 200, n).astype(float)
    event = rng.random(n) < 0.4
    risk = np.round(rng.normal(size=n) - 0.005 * time, 1)
    assert_same(concordance(event, time, risk)[0], lifelines_concordance_index(time, -risk, event), "scale")
