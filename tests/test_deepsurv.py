"""DeepSurv against independent references: scikit-survival's and lifelines' Cox models, and known synthetic signals."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import concordance_index_censored

from bench.data.cohort import ColumnSpec, structured_y
from bench.data.datasets import load_cohort
from bench.errors import ModelError, UsageError
from bench.plugins.options import build_config
from bench.plugins.registry import EXTRACTORS
from bench.protocol.preprocessing import FoldPreprocessor
from bench.protocol.splits import load_split
from feature_extractors.base import FeatureBlock
from survival_models.base import BlockLayout
from survival_models.deepsurv import DeepSurv, DeepSurvConfig, RiskSets, breslow_baseline

# Converges to the partial-likelihood maximum: no penalty, no dropout, no early stopping.
CONVERGED_LINEAR = DeepSurvConfig(
    hidden=(), dropout=0.0, weight_decay=0.0, validation_fraction=0.0, max_epochs=500, lr=0.05
)


def harrell(y: np.ndarray, risk: np.ndarray) -> float:
    return concordance_index_censored(y["event"], y["time"], risk)[0]


@pytest.fixture(scope="module")
def gbsg2() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first fold of GBSG2's committed split, preprocessed in fold: X_train, y_train, X_test, y_test."""
    cohort = load_cohort("gbsg2")
    block = EXTRACTORS.load("clinical")().extract(cohort, progress=False)
    fold = load_split(cohort, cohort.default_split).folds(cohort)[0]
    pre = FoldPreprocessor([block])
    X_train = pre.fit_transform(fold.train)
    return X_train, cohort.y[fold.train], pre.transform(fold.test), cohort.y[fold.test]


@pytest.fixture(scope="module")
def coxph(gbsg2) -> CoxPHSurvivalAnalysis:
    X_train, y_train, _, _ = gbsg2
    return CoxPHSurvivalAnalysis(ties="efron").fit(X_train, y_train)


def test_linear_deepsurv_is_scikit_survivals_cox_model(gbsg2, coxph) -> None:
    X_train, y_train, X_test, y_test = gbsg2
    model = DeepSurv(CONVERGED_LINEAR, random_state=0).fit(X_train, y_train)
    coef = model.network_.mlp[-1].weight.detach().numpy().ravel()
    np.testing.assert_allclose(coef, coxph.coef_, atol=1e-4)
    assert abs(harrell(y_test, model.predict(X_test)) - harrell(y_test, coxph.predict(X_test))) < 0.01


def test_breslow_ties_match_scikit_survival(gbsg2) -> None:
    X_train, y_train, _, _ = gbsg2
    reference = CoxPHSurvivalAnalysis(ties="breslow").fit(X_train, y_train)
    model = DeepSurv(dataclasses.replace(CONVERGED_LINEAR, ties="breslow"), random_state=0)
    coef = model.fit(X_train, y_train).network_.mlp[-1].weight.detach().numpy().ravel()
    np.testing.assert_allclose(coef, reference.coef_, atol=1e-4)


def test_default_network_is_not_worse_than_cox_on_gbsg2(gbsg2, coxph) -> None:
    # Katzman et al. (2018) report DeepSurv slightly above CoxPH on GBSG; early stopping on a small inner
    # validation part makes single fits vary by a few hundredths, hence the margin.
    X_train, y_train, X_test, y_test = gbsg2
    model = DeepSurv(random_state=0).fit(X_train, y_train)
    assert harrell(y_test, model.predict(X_test)) > harrell(y_test, coxph.predict(X_test)) - 0.03
    assert 1 <= model.epochs_ < DeepSurvConfig().max_epochs, "early stopping ends training"


@pytest.mark.parametrize("seed", [0, 1])
def test_efron_partial_likelihood_matches_lifelines(seed: int) -> None:
    from lifelines import CoxPHFitter

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(80, 3))
    time = rng.integers(1, 10, 80).astype(float)  # nine distinct times: heavy ties
    event = rng.random(80) < 0.7
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(T=time, E=event)
    fitted = CoxPHFitter().fit(frame, "T", "E")
    risk = torch.as_tensor(X @ fitted.params_.to_numpy())
    ours = RiskSets(time, event, "efron").log_likelihood(risk).item()
    assert ours == pytest.approx(fitted.log_likelihood_, rel=1e-9)
    # Without ties Efron is Breslow; with them the two differ (so the check above could fail).
    assert RiskSets(time, event, "breslow").log_likelihood(risk).item() < ours - 0.1


def test_breslow_baseline_matches_scikit_survival(gbsg2, coxph) -> None:
    X_train, y_train, X_test, _ = gbsg2
    model = DeepSurv(DeepSurvConfig(hidden=(), max_epochs=1), random_state=0).fit(X_train, y_train)
    with torch.no_grad():  # plug scikit-survival's coefficients into the linear network
        model.network_.mlp[-1].weight.copy_(torch.as_tensor(coxph.coef_)[None, :])
    model.baseline_ = breslow_baseline(model.predict(X_train), y_train["time"], y_train["event"])
    times = np.array([100.0, 365.0, 730.0, 1000.0, 1500.0, 2000.0])
    expected = np.vstack([fn(times) for fn in coxph.predict_survival_function(X_test)])
    np.testing.assert_allclose(model.predict_survival_function(X_test, times), expected, atol=1e-6)


def test_survival_function_is_a_survival_curve(gbsg2) -> None:
    X_train, y_train, X_test, _ = gbsg2
    model = DeepSurv(random_state=0).fit(X_train, y_train)
    first, last = y_train["time"][y_train["event"]].min(), y_train["time"].max()
    times = np.array([0.0, first - 1, first, 500.0, 1500.0, last, last + 1000])
    survival = model.predict_survival_function(X_test, times)
    assert survival.shape == (len(X_test), len(times))
    assert ((survival >= 0) & (survival <= 1)).all()
    assert (np.diff(survival, axis=1) <= 0).all()
    assert (survival[:, :2] == 1).all(), "no hazard before the first training event"
    assert (survival[:, 2] < 1).all()
    np.testing.assert_array_equal(survival[:, -2], survival[:, -1])  # flat after the last training time
    risk = model.predict(X_test)
    assert np.corrcoef(risk, survival[:, 4])[0, 1] < -0.9, "higher risk, lower survival"


def test_same_seed_same_predictions_other_seed_others(gbsg2) -> None:
    X_train, y_train, X_test, _ = gbsg2
    config = DeepSurvConfig(hidden=(16, 8), dropout=0.3, max_epochs=30)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = DeepSurv(config, random_state=7).fit(X_train, y_train).predict(X_test)
    assert torch.equal(torch.get_rng_state(), state), "the caller's torch random state is untouched"
    np.testing.assert_array_equal(first, DeepSurv(config, random_state=7).fit(X_train, y_train).predict(X_test))
    assert not np.array_equal(first, DeepSurv(config, random_state=8).fit(X_train, y_train).predict(X_test))


def test_thread_setting_is_restored(gbsg2) -> None:
    X_train, y_train, _, _ = gbsg2
    before = torch.get_num_threads()
    DeepSurv(DeepSurvConfig(max_epochs=2, threads=1), random_state=0).fit(X_train, y_train)
    assert torch.get_num_threads() == before


SLICES, FEATURES = 12, 3


def sequence_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3 to 12 real slices per sample; the hazard grows with the largest value of feature 0 over the slices."""
    rng = np.random.default_rng(seed)
    mask = np.arange(SLICES)[None, :] < rng.integers(3, SLICES + 1, n)[:, None]
    values = np.where(mask[..., None], rng.normal(size=(n, SLICES, FEATURES)), 0.0)
    top = np.where(mask, values[..., 0], -np.inf).max(axis=1)
    event_time = rng.exponential(np.exp(-2.0 * top))
    censor_time = rng.exponential(2.0 * np.median(event_time), n)
    return values, mask, structured_y(event_time <= censor_time, np.minimum(event_time, censor_time))


@pytest.fixture(scope="module")
def sequences():
    values, mask, y = sequence_data(400, seed=0)
    block = FeatureBlock("slices", pd.DataFrame(index=[f"s{i}" for i in range(400)]), {}, values, mask)
    pre = FoldPreprocessor([block])
    train, test = np.arange(250), np.arange(250, 400)
    X_train = pre.fit_transform(train)
    model = DeepSurv(DeepSurvConfig(hidden=(16,)), random_state=0).with_layout(pre.layout).fit(X_train, y[train])
    return model, pre.transform(test), y[test], mask[test]


def test_attention_learns_the_largest_slice(sequences) -> None:
    model, X_test, y_test, _ = sequences
    assert model.layout[0].sequence == (SLICES, FEATURES)
    risk = model.predict(X_test)
    assert np.isfinite(risk).all()
    # The true max has C ~0.77 here and the per-sample mean of feature 0 ~0.69: pooling must do better than chance.
    assert harrell(y_test, risk) > 0.7


def test_attention_weights_ignore_padding(sequences) -> None:
    model, X_test, _, mask = sequences
    weights = model.attention_weights(X_test)["slices"]
    assert weights.shape == (len(X_test), SLICES)
    assert (weights[~mask] == 0).all(), "padded slices get exactly zero weight"
    assert (weights[mask] > 0).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-12)


def test_padded_values_cannot_change_predictions(sequences) -> None:
    model, X_test, _, mask = sequences
    noisy = X_test.copy()
    padded_values = np.repeat(~mask, FEATURES, axis=1)  # slice-major: each slice's features are adjacent
    noisy[:, : SLICES * FEATURES][padded_values] = np.random.default_rng(0).normal(0, 100, padded_values.sum())
    assert not np.array_equal(noisy, X_test)
    np.testing.assert_array_equal(model.predict(noisy), model.predict(X_test))


def test_padding_length_does_not_change_predictions(sequences) -> None:
    model, X_test, _, mask = sequences
    longer = SLICES + 5
    values = X_test[:, : SLICES * FEATURES].reshape(len(X_test), SLICES, FEATURES)
    padded = np.concatenate([values, np.full((len(X_test), 5, FEATURES), 7.0)], axis=1)
    X_longer = np.hstack([padded.reshape(len(X_test), -1), np.hstack([mask, np.zeros((len(X_test), 5))])])
    other = copy.deepcopy(model).with_layout((BlockLayout("slices", 0, X_longer.shape[1], (longer, FEATURES)),))
    np.testing.assert_allclose(other.predict(X_longer), model.predict(X_test), rtol=1e-12, atol=1e-12)


def test_gate_fusion_prefers_the_informative_block() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 6))
    event_time = rng.exponential(np.exp(-X[:, :3] @ np.array([1.0, -0.8, 0.6])))  # columns 3..5 are noise
    censor_time = rng.exponential(2.0, 400)
    y = structured_y(event_time <= censor_time, np.minimum(event_time, censor_time))
    layout = (BlockLayout("signal", 0, 3), BlockLayout("noise", 3, 6))
    model = DeepSurv(DeepSurvConfig(fusion="gate"), random_state=0).with_layout(layout).fit(X[:300], y[:300])
    assert np.isfinite(model.predict(X[300:])).all()
    gate = model.gate_weights(X[300:])
    assert gate.shape == (100, 2)
    np.testing.assert_allclose(gate.sum(axis=1), 1.0, rtol=1e-12)
    assert gate[:, 0].mean() > gate[:, 1].mean()
    assert harrell(y[300:], model.predict(X[300:])) > 0.65


def test_concat_fusion_has_no_gate(gbsg2) -> None:
    X_train, y_train, _, _ = gbsg2
    model = DeepSurv(DeepSurvConfig(max_epochs=1), random_state=0).fit(X_train, y_train)
    with pytest.raises(ModelError, match="fusion=gate"):
        model.gate_weights(X_train)


def test_no_event_is_a_model_error() -> None:
    X = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ModelError, match="deepsurv.*no event"):
        DeepSurv(random_state=0).fit(X, structured_y(np.zeros(20, bool), np.arange(1.0, 21.0)))


def test_non_finite_features_are_a_model_error(gbsg2) -> None:
    X_train, y_train, _, _ = gbsg2
    X = X_train.copy()
    X[3, 2] = np.nan
    with pytest.raises(ModelError, match=r"deepsurv.*X\[3, 2\] = nan"):
        DeepSurv(random_state=0).fit(X, y_train)


def test_options_from_the_command_line() -> None:
    assert build_config(DeepSurvConfig, {"hidden": "32/16"}, "deepsurv").hidden == (32, 16)
    assert build_config(DeepSurvConfig, {"hidden": ""}, "deepsurv").hidden == ()
    assert build_config(DeepSurvConfig, {"ties": "breslow", "fusion": "gate"}, "deepsurv").fusion == "gate"
    with pytest.raises(UsageError, match="dropout"):
        build_config(DeepSurvConfig, {"dropout": "1.5"}, "deepsurv")


def test_search_space_builds_the_network_shape() -> None:
    import optuna

    trial = optuna.trial.FixedTrial({"layers": 2, "width": 24, "dropout": 0.2, "weight_decay": 1e-3, "lr": 1e-2})
    options = DeepSurv.search_space(trial)
    assert options["hidden"] == (24, 24)
    assert build_config(DeepSurvConfig, options, "deepsurv").dropout == 0.2


@pytest.mark.parametrize("fusion", ["concat", "gate"])
def test_sequence_and_flat_blocks_fuse(fusion: str) -> None:
    values, mask, y = sequence_data(120, seed=3)
    clinical = pd.DataFrame({"age": np.random.default_rng(3).normal(60, 10, 120)}, index=[f"s{i}" for i in range(120)])
    blocks = [
        FeatureBlock("clinical", clinical, {"age": ColumnSpec("numeric")}),
        FeatureBlock("slices", pd.DataFrame(index=clinical.index), {}, values, mask),
    ]
    pre = FoldPreprocessor(blocks)
    X_train, X_test = pre.fit_transform(np.arange(90)), pre.transform(np.arange(90, 120))
    config = DeepSurvConfig(fusion=fusion, max_epochs=20)
    model = DeepSurv(config, random_state=0).with_layout(pre.layout).fit(X_train, y[:90])
    assert np.isfinite(model.predict(X_test)).all()
    weights = model.attention_weights(X_test)
    assert list(weights) == ["slices"] and (weights["slices"][~mask[90:]] == 0).all()
    if fusion == "gate":
        assert model.gate_weights(X_test).shape == (30, 2)
