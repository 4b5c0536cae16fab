"""Nested tuning: only the outer training fold is touched, it pays off, and it is reproducible and resumable."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import optuna
import pandas as pd
import pytest

from bench.data.cohort import Cohort, ColumnSpec, EvaluationPolicy, structured_y
from bench.errors import ModelError, UsageError
from bench.plugins.registry import Entry
from bench.plugins.specs import PluginSpec, resolve_models
from bench.protocol.preprocessing import FoldPreprocessor
from bench.protocol.splits import make_split
from bench.protocol.tuning import TuningSpec, tune_fold
from bench.stats.engine import harrell_c
from bench.testing import make_cohort
from feature_extractors.base import FeatureBlock
from survival_models.base import SurvivalModel


def _spec(cls: type) -> PluginSpec:
    return PluginSpec(cls.name, cls, cls.Config(), Entry(cls.name, f"tests:{cls.__name__}", "tests", "0", ()))


def _clinical_block(cohort: Cohort) -> FeatureBlock:
    return FeatureBlock("clinical", cohort.clinical, cohort.columns)


# --- no leak -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordingConfig:
    weight: float = 1.0


class Recording(SurvivalModel):
    """Notes which patients each fit and each prediction receives.

    The block carries every patient's number in column 0, standardised in-fold. A
    fit learns the (affine) standardisation back from ``y``, whose event times
    are unique per patient, and undoes it for the rows it is asked to predict.
    """

    name = "recording"
    Config = RecordingConfig
    calls: ClassVar[list[tuple[str, set[str]]]] = []
    fit_moments: ClassVar[list[tuple[float, float]]] = []  # mean and SD of column 0 in each fit
    patient_of_time: ClassVar[dict[float, str]] = {}

    def fit(self, X: np.ndarray, y: np.ndarray) -> Recording:
        patients = [self.patient_of_time[t] for t in y["time"].tolist()]
        numbers = [int(p[1:]) for p in patients]
        self.unscale_ = np.polyfit(X[:, 0], numbers, 1)
        self.calls.append(("fit", set(patients)))
        self.fit_moments.append((float(X[:, 0].mean()), float(X[:, 0].std())))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        numbers = np.rint(np.polyval(self.unscale_, X[:, 0])).astype(int)
        self.calls.append(("predict", {f"P{n:03d}" for n in numbers}))
        return self.config.weight * X[:, 1]

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"weight": trial.suggest_float("weight", -1.0, 1.0)}


def _numbered_cohort(n_patients: int = 60, samples_per_patient: int = 2) -> Cohort:
    """Two samples per patient, the patient's number as a feature, event times unique per patient."""
    rng = np.random.default_rng(3)
    number = np.repeat(np.arange(n_patients), samples_per_patient)
    n = len(number)
    time = np.repeat(rng.permutation(n_patients) + 1.0 + rng.uniform(0, 0.5, n_patients), samples_per_patient)
    return Cohort(
        name="numbered",
        clinical=pd.DataFrame(
            {"number": number.astype(float), "noise": rng.normal(size=n)}, index=[f"S{i:04d}" for i in range(n)]
        ),
        time=time,
        event=np.repeat(rng.random(n_patients) < 0.6, samples_per_patient),
        columns={"number": ColumnSpec("numeric"), "noise": ColumnSpec("numeric")},
        policy=EvaluationPolicy(horizons=(10.0,), tau=40.0),
        patient_ids=[f"P{i:03d}" for i in number],
    )


def test_inner_fits_and_scores_see_only_the_outer_training_patients(monkeypatch: pytest.MonkeyPatch) -> None:
    cohort = _numbered_cohort()
    monkeypatch.setattr(Recording, "calls", [])
    monkeypatch.setattr(Recording, "fit_moments", [])
    monkeypatch.setattr(Recording, "patient_of_time", dict(zip(cohort.time.tolist(), cohort.patient_ids)))
    fold = make_split(cohort, folds=3, seed=0).folds(cohort)[1]
    train_patients = set(cohort.patient_ids[fold.train])
    test_patients = set(cohort.patient_ids[fold.test])

    spec = TuningSpec(trials=3, inner_folds=3)
    result = tune_fold(
        _spec(Recording), [_clinical_block(cohort)], cohort.y, cohort.patient_ids, fold.train, spec, 0, fold.key
    )

    assert result.trials == 3 and set(result.params) == {"weight"}
    calls = Recording.calls
    assert [kind for kind, _ in calls] == ["fit", "predict"] * (spec.trials * spec.inner_folds)
    fits = [patients for kind, patients in calls if kind == "fit"]
    scores = [patients for kind, patients in calls if kind == "predict"]
    seen = set().union(*fits, *scores)
    assert seen <= train_patients
    assert not seen & test_patients
    # The preprocessing of each inner fit was fit on exactly its rows (standardised there, not elsewhere).
    assert np.allclose(Recording.fit_moments, [(0.0, 1.0)] * len(fits))
    # Grouped by patient: no patient is fit on and scored in the same inner fold.
    assert all(not fit & score for fit, score in zip(fits, scores))
    # One trial's inner validation folds partition the training patients.
    first_trial = scores[: spec.inner_folds]
    assert set().union(*first_trial) == train_patients
    assert sum(len(s) for s in first_trial) == len(train_patients)


# --- tuning pays off -----------------------------------------------------------------------------------------


def _high_dimensional(n: int = 320, p: int = 100, informative: int = 5, seed: int = 0) -> tuple[FeatureBlock, Any]:
    """Five informative features among a hundred, for 120 training patients: coxnet's default overfits."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    event_time = rng.exponential(np.exp(-0.6 * X[:, :informative].sum(axis=1)))
    censor_time = rng.exponential(2.0, n)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(p)], index=[f"S{i:04d}" for i in range(n)])
    block = FeatureBlock("features", frame, {c: ColumnSpec("numeric") for c in frame.columns})
    return block, structured_y(event_time <= censor_time, np.minimum(event_time, censor_time))


def test_tuned_coxnet_beats_a_fixed_weak_penalty_on_held_out_patients() -> None:
    block, y = _high_dimensional()
    patient_ids = block.frame.index.to_numpy()
    train, test = np.arange(120), np.arange(120, len(y))
    # A fixed, too weak penalty (coxnet's default before it chose alpha itself) against nested tuning.
    coxnet = resolve_models(["coxnet:alpha=0.01"])[0]

    def held_out_c(config: Any) -> float:
        pre = FoldPreprocessor([block])
        X_train = pre.fit_transform(train)
        model = coxnet.cls(config).with_layout(pre.layout).fit(X_train, y[train])
        return harrell_c(y["event"][test], y["time"][test], model.predict(pre.transform(test)))

    result = tune_fold(coxnet, [block], y, patient_ids, train, TuningSpec(trials=20), seed=0, fold_key="r0f0")
    default = held_out_c(coxnet.config)
    tuned = held_out_c(dataclasses.replace(coxnet.config, **result.params))
    # Measured: 0.679 -> 0.733 on this draw. Over data seeds 0-19 the gain ranged from 0.006 to 0.24 (mean 0.11),
    # above 0.03 in 19 of 20; this draw is fixed, so the margin only has to absorb library drift.
    assert tuned > default + 0.03, (default, tuned, result)
    assert result.params["alpha"] > coxnet.config.alpha  # it found that the default underpenalises


# --- reproducible, resumable ---------------------------------------------------------------------------------


def _small_problem() -> tuple[PluginSpec, list[FeatureBlock], Cohort, np.ndarray]:
    cohort = make_cohort(n_patients=60, samples_per_patient=2)
    fold = make_split(cohort, folds=3, seed=0).folds(cohort)[0]
    return resolve_models(["coxnet"])[0], [_clinical_block(cohort)], cohort, fold.train


def test_same_seed_same_options_and_a_stored_study_resumes(tmp_path: Path) -> None:
    model, blocks, cohort, train = _small_problem()

    def tune(trials: int, seed: int = 0, storage: str | None = None):
        spec = TuningSpec(trials=trials, storage=storage, study_prefix="test")
        return tune_fold(model, blocks, cohort.y, cohort.patient_ids, train, spec, seed, "r0f0")

    first, again = tune(6), tune(6)
    assert first.params == again.params and first.value == again.value
    assert set(first.params) == {"alpha", "l1_ratio"}

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    stored = tune(6, storage=storage)
    assert stored.params == first.params  # the same seeded search, persisted
    resumed = tune(6, storage=storage)
    assert len(optuna.load_study(study_name="test-r0f0", storage=storage).trials) == 6  # no new trial
    assert (resumed.params, resumed.value, resumed.trials) == (stored.params, stored.value, stored.trials)
    extended = tune(8, storage=storage)
    assert len(optuna.load_study(study_name="test-r0f0", storage=storage).trials) == 8  # only the two missing
    assert extended.value >= stored.value

    with pytest.raises(UsageError, match="test-r0f0"):  # another seed means other inner folds: never mixed in
        tune(8, seed=1, storage=storage)


# --- nothing to tune, nothing that fits ----------------------------------------------------------------------


@dataclass(frozen=True)
class NoConfig:
    pass


class Untunable(SurvivalModel):
    name = "untunable"
    Config = NoConfig

    def fit(self, X: np.ndarray, y: np.ndarray) -> Untunable:
        raise AssertionError("a model without a search space is never fit while tuning")


def test_a_model_without_search_space_runs_no_trial(tmp_path: Path) -> None:
    cohort = make_cohort()
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    spec = TuningSpec(trials=5, storage=storage)
    result = tune_fold(
        _spec(Untunable), [_clinical_block(cohort)], cohort.y, cohort.patient_ids, np.arange(40), spec, 0, "r0f0"
    )
    assert (result.params, result.trials) == ({}, 0) and math.isnan(result.value)
    assert optuna.get_all_study_names(storage) == []


class Failing(SurvivalModel):
    name = "failing"
    Config = RecordingConfig
    search_space = staticmethod(Recording.search_space)

    def fit(self, X: np.ndarray, y: np.ndarray) -> Failing:
        if self.config.weight > 0:
            raise ModelError("weights are too large")
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.config.weight * X[:, 0]


def test_failing_trials_are_skipped_and_all_failing_is_an_error() -> None:
    cohort = make_cohort()
    blocks, train = [_clinical_block(cohort)], np.arange(45)
    args = (cohort.y, cohort.patient_ids, train, TuningSpec(trials=8), 0, "r0f3")

    # Positive weights fail to fit; the search carries on and picks among the others.
    result = tune_fold(_spec(Failing), blocks, *args)
    assert 0 < result.trials < 8 and result.params["weight"] <= 0

    always = dataclasses.replace(
        _spec(Failing), cls=type("AlwaysFailing", (Failing,), {"search_space": staticmethod(_positive)})
    )
    with pytest.raises(ModelError, match=r"'failing'.*r0f3.*weights are too large"):
        tune_fold(always, blocks, *args)


def _positive(trial: Any) -> dict[str, Any]:
    return {"weight": trial.suggest_float("weight", 0.1, 1.0)}
