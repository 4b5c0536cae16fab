"""A row's figure data: risk groups from training folds only, AUC(t) and Brier(t) against scikit-survival."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.cohort import structured_y
from bench.plugins.registry import EXTRACTORS
from bench.protocol.evaluation import evaluate
from bench.protocol.splits import make_split
from bench.stats.curves import figure_times, risk_groups, risk_thresholds
from bench.testing import make_cohort
from survival_models.coxph import CoxPH


class UnseenShifted(CoxPH):
    """Cox PH whose risk of any patient it was not trained on is raised by 100: only test risks change."""

    def fit(self, X, y):
        self.seen_ = {row.tobytes() for row in X}
        return super().fit(X, y)

    def predict(self, X):
        shift = np.array([0.0 if row.tobytes() in self.seen_ else 100.0 for row in X])
        return super().predict(X) + shift


@pytest.fixture(scope="module")
def setting():
    cohort = make_cohort(120, seed=3)
    split = make_split(cohort, "cv4", folds=4, repeats=2, seed=0)
    blocks = [EXTRACTORS.load("clinical")().extract(cohort, progress=False)]
    return cohort, split, blocks


def test_risk_group_cut_points_come_from_the_training_folds_only(setting) -> None:
    cohort, split, blocks = setting
    plain = evaluate(cohort, split, blocks, lambda _p: CoxPH(random_state=0), bootstrap=0)
    shifted = evaluate(cohort, split, blocks, lambda _p: UnseenShifted(random_state=0), bootstrap=0)
    assert plain.curves.thresholds == shifted.curves.thresholds  # test risks changed, cut points did not
    assert len(plain.curves.thresholds) == 8
    assert (shifted.predictions["risk"] > plain.predictions["risk"] + 99).all()
    assert (shifted.predictions["risk_group"] == 2).all(), "every shifted test risk is above the training cut points"
    groups = plain.predictions.groupby(["repeat", "fold"])["risk_group"].value_counts().unstack(fill_value=0)
    assert (groups > 0).all().all(), "a plain fold has patients in every tertile"
    # the cut points are the tertiles of the fitted model's own training risks
    fold = split.folds(cohort)[0]
    from bench.protocol.preprocessing import FoldPreprocessor

    pre = FoldPreprocessor(blocks)
    X_train = pre.fit_transform(fold.train)
    model = CoxPH(random_state=0).with_layout(pre.layout).fit(X_train, cohort.y[fold.train])
    expected = np.quantile(model.predict(X_train), [1 / 3, 2 / 3])
    assert plain.curves.thresholds[fold.key] == pytest.approx(tuple(expected), abs=1e-12)


def test_risk_groups_split_at_the_cut_points() -> None:
    assert risk_thresholds(np.arange(1.0, 10.0)) == pytest.approx((11 / 3, 19 / 3))
    assert risk_groups(np.array([0.0, 3.0, 4.0, 6.0, 7.0]), (3.0, 6.0)).tolist() == [0, 0, 1, 1, 2]


def test_auc_and_brier_curves_equal_scikit_survival_fold_by_fold(setting) -> None:
    from sksurv.metrics import brier_score, cumulative_dynamic_auc

    cohort, split, blocks = setting
    evaluation = evaluate(cohort, split, blocks, lambda _p: CoxPH(random_state=0), bootstrap=50)
    curves = evaluation.curves
    times = figure_times(cohort.policy)
    assert np.array_equal(curves.times, times)
    for h in cohort.policy.horizons:  # at a horizon, the curve is the row's td-AUC
        assert curves.auc[list(times).index(h)] == pytest.approx(evaluation.metrics[f"td_auc_{h:g}"].mean, abs=1e-12)
    # the fold mean of scikit-survival's own AUC(t) and Brier(t), where every fold has them
    from bench.protocol.preprocessing import FoldPreprocessor

    aucs, briers, references = [], [], []
    for fold in split.folds(cohort):
        pre = FoldPreprocessor(blocks)
        X_train, X_test = pre.fit_transform(fold.train), pre.transform(fold.test)
        model = CoxPH(random_state=0).with_layout(pre.layout).fit(X_train, cohort.y[fold.train])
        y_train, y_test = cohort.y[fold.train], cohort.y[fold.test]
        inside = (times >= y_test["time"].min()) & (times < y_test["time"].max())
        risk = model.predict(X_test)
        aucs.append(np.array([cumulative_dynamic_auc(y_train, y_test, risk, [t])[0][0] if ok else np.nan
                              for t, ok in zip(times, inside)]))  # fmt: skip
        survival = model.predict_survival_function(X_test, times)
        briers.append(np.full(len(times), np.nan))
        references.append(np.full(len(times), np.nan))
        briers[-1][inside] = brier_score(y_train, y_test, survival[:, inside], times[inside])[1]
        from sksurv.nonparametric import kaplan_meier_estimator

        km_t, km_s = kaplan_meier_estimator(y_train["event"], y_train["time"])
        at = np.searchsorted(km_t, times[inside], side="right") - 1
        km = np.tile(np.where(at >= 0, km_s[np.maximum(at, 0)], 1.0), (len(y_test), 1))
        references[-1][inside] = brier_score(y_train, y_test, km, times[inside])[1]
    for ours, theirs in ((curves.auc, aucs), (curves.brier, briers), (curves.brier_reference, references)):
        theirs = np.mean(theirs, axis=0)
        both = np.isfinite(theirs)
        assert both.sum() >= len(times) - 2
        assert np.allclose(ours[both], theirs[both], atol=1e-9)
    assert (curves.brier[both] < curves.brier_reference[both]).mean() > 0.5, "the true model beats Kaplan-Meier"
    finite = np.isfinite(curves.auc_low)
    assert finite.sum() >= len(times) - 2
    assert (curves.auc_low[finite] <= curves.auc[finite]).all() and (curves.auc[finite] <= curves.auc_high[finite]).all()


def test_predictions_carry_risk_groups_and_survival_at_the_horizons(setting) -> None:
    cohort, split, blocks = setting
    evaluation = evaluate(cohort, split, blocks, lambda _p: CoxPH(random_state=0), bootstrap=0)
    p = evaluation.predictions
    for h in cohort.policy.horizons:
        column = p[f"survival_at_{h:g}"]
        assert column.between(0, 1).all()
    # higher risk, lower predicted survival, within a fold
    fold = p[(p["repeat"] == 0) & (p["fold"] == 0)].sort_values("risk")
    assert np.all(np.diff(fold[f"survival_at_{cohort.policy.horizons[-1]:g}"].to_numpy()) <= 1e-12)
    assert structured_y(p["event"].astype(bool), p["time"]).shape == (len(p),)
