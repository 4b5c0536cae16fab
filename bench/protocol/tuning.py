"""Nested hyperparameter search: Optuna trials scored by inner CV on one outer training fold.

Tuning touches the rows of the outer training fold only. They are split into
inner folds (stratified by event, grouped by patient); every inner fit gets its
own ``FoldPreprocessor`` fit on the inner-training rows, and a trial's value is
the mean Harrell's C over the inner-validation rows. The outer test rows are
first seen when ``bench.protocol.evaluation`` refits the model with the best options.

Everything is a function of the seed and the fold key: the inner folds, the TPE
sampler, and so the options found. With a storage URL the study of each fold
persists under ``{study_prefix}-{fold_key}`` and a rerun resumes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bench.errors import BenchError, DataError, ModelError, UsageError
from bench.protocol.preprocessing import FoldPreprocessor
from bench.stats.engine import harrell_c

if TYPE_CHECKING:
    import optuna

    from bench.plugins.specs import PluginSpec
    from feature_extractors.base import FeatureBlock

# A model raising one of these fails its trial only; the search goes on (LinAlgError is a ValueError).
TRIAL_ERRORS = (ModelError, ArithmeticError, ValueError)

# Inner scores, all maximised: (event, time, risk) -> score.
METRICS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]] = {"harrell_c": harrell_c}


def check_storage(url: str) -> None:
    """An Optuna storage URL that can be opened (``UsageError`` naming it otherwise): checked before any work."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        dialect = make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise UsageError(
            f"--optuna-storage {url!r} is not a database URL Optuna can open ({' '.join(str(exc).split())}); "
            "give e.g. sqlite:///optuna.db"
        ) from None
    if dialect.name == "sqlite":
        path = url.split("///", 1)[1].split("?", 1)[0] if "///" in url else ""
        if path and path != ":memory:" and Path(path).is_dir():
            raise UsageError(f"--optuna-storage {url!r} names a folder; give a file, e.g. sqlite:///optuna.db")


@dataclass(frozen=True)
class TuningSpec:
    """How to tune each outer training fold (the ``--tune`` options)."""

    trials: int  # Optuna trials per outer training fold
    inner_folds: int = 3  # inner k-fold CV on the outer training fold only
    storage: str | None = None  # Optuna storage URL (e.g. sqlite:///optuna.db) so trials persist and resume
    study_prefix: str = "bench"  # study names are f"{study_prefix}-{fold_key}"
    metric: str = "harrell_c"  # inner score, maximised


@dataclass
class TuningResult:
    params: dict[str, Any]  # best options found (Config field names)
    value: float  # best mean inner score; NaN when there was nothing to tune
    trials: int  # completed trials in the study, earlier ones from storage included


def tune_fold(
    model: PluginSpec,
    blocks: list[FeatureBlock],
    y: np.ndarray,
    patient_ids: np.ndarray,
    train_index: np.ndarray,
    spec: TuningSpec,
    seed: int,
    fold_key: str,
    random_state: int | None = None,
) -> TuningResult:
    """Search ``model``'s declared space on the rows ``train_index`` of the cohort; return the best options.

    ``blocks``, ``y`` and ``patient_ids`` cover the whole cohort in cohort order;
    only the rows at ``train_index`` are read. A model without a search space
    returns at once with no options and no trials.
    """
    optuna = _import_optuna()
    if spec.trials < 1:
        raise UsageError(f"--tune needs at least 1 trial, got {spec.trials}")
    if spec.metric not in METRICS:
        raise UsageError(f"unknown tuning metric {spec.metric!r}; valid metrics: {', '.join(sorted(METRICS))}")
    if not _has_search_space(model.cls, optuna):
        return TuningResult(params={}, value=math.nan, trials=0)

    train_index = np.asarray(train_index)
    folds = inner_folds(y, patient_ids, train_index, spec.inner_folds, _derived_seed(seed, fold_key, "inner"))
    objective = _Objective(model, blocks, y, folds, METRICS[spec.metric], random_state, optuna.TrialPruned)
    study_name = f"{spec.study_prefix}-{fold_key}"
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            storage=spec.storage,
            study_name=study_name,
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=_derived_seed(seed, fold_key, "sampler")),
            load_if_exists=True,
        )
        _claim(study, _study_key(model, blocks, y, patient_ids, train_index, spec, seed), spec.storage)
        # Trials whose model failed (pruned) count towards the budget, so a resumed study ends where an
        # uninterrupted one does; a trial cut off by a crash (FAIL, RUNNING) is run again.
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        remaining = spec.trials - len(study.get_trials(deepcopy=False, states=finished))
        if remaining > 0:
            study.optimize(objective, n_trials=remaining)
    finally:
        optuna.logging.set_verbosity(verbosity)

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        errors = [t.user_attrs["error"] for t in study.get_trials(deepcopy=False) if "error" in t.user_attrs]
        raise ModelError(
            f"tuning model {model.name!r} on fold {fold_key}: all {spec.trials} trials failed"
            + (f", the last with {errors[-1]}" if errors else "")
            + "; narrow the search space in the model's file to options that can fit these data"
        )
    best = study.best_trial
    # The space maps trial parameters to options; replaying it on the best trial's values gives its options.
    params = model.cls.search_space(optuna.trial.FixedTrial(best.params))
    return TuningResult(params=dict(params), value=float(best.value), trials=len(complete))


def inner_folds(
    y: np.ndarray, patient_ids: np.ndarray, train_index: np.ndarray, k: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(inner-train, inner-validation) row indices of the cohort, both subsets of ``train_index``.

    Patients, not rows, are assigned to folds, stratified by whether the patient
    had an event, so every validation fold has events and a patient never straddles two.
    """
    from sklearn.model_selection import StratifiedKFold

    if k < 2:
        raise UsageError(f"inner folds must be at least 2, got {k}")
    frame = pd.DataFrame({"patient": patient_ids[train_index], "event": y["event"][train_index]})
    per_patient = frame.groupby("patient", sort=True)["event"].any()
    events = per_patient.to_numpy(dtype=bool)
    if min(events.sum(), (~events).sum()) < k:
        raise DataError(
            f"cannot stratify the {len(events)} training patients ({int(events.sum())} with an event) "
            f"into {k} inner folds; tune with fewer inner folds or on a larger training fold"
        )
    fold_of_patient = np.empty(len(events), dtype=int)
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, validation) in enumerate(cv.split(per_patient.index, events)):
        fold_of_patient[validation] = fold
    fold_of_row = pd.Series(fold_of_patient, index=per_patient.index)[frame["patient"]].to_numpy()
    return [(train_index[fold_of_row != f], train_index[fold_of_row == f]) for f in range(k)]


class _Objective:
    """One trial: the drawn options, fit and scored on every inner fold; the value is the mean score."""

    def __init__(self, model: PluginSpec, blocks, y, folds, metric, random_state, pruned: type[Exception]):
        self.model = model
        self.blocks = blocks
        self.y = y
        self.folds = folds
        self.metric = metric
        self.random_state = random_state
        self.pruned = pruned  # optuna.TrialPruned
        self.fields = {f.name for f in dataclasses.fields(model.config)}

    def __call__(self, trial: optuna.Trial) -> float:
        options = self.model.cls.search_space(trial)
        unknown = sorted(set(options) - self.fields)
        if unknown:  # a bug in the plugin, not a bad trial: stop
            raise BenchError(
                f"model {self.model.name!r}: search_space returns option(s) {unknown} that its Config lacks; "
                f"valid options: {sorted(self.fields)}"
            )
        config = dataclasses.replace(self.model.config, **options)
        try:
            with warnings.catch_warnings():
                # Candidates that converge badly score badly or fail; their warnings say nothing about the
                # final model, which is refit outside the search with its warnings shown.
                warnings.simplefilter("ignore")
                scores = [self._score(config, train, validation) for train, validation in self.folds]
        except TRIAL_ERRORS as exc:
            # A pruned trial, unlike a failed one, tells TPE to sample elsewhere; the reason stays with it.
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise self.pruned(f"model {self.model.name!r} failed: {exc}") from exc
        return float(np.mean(scores))

    def _score(self, config: Any, train: np.ndarray, validation: np.ndarray) -> float:
        pre = FoldPreprocessor(self.blocks)
        X_train = pre.fit_transform(train)
        X_validation = pre.transform(validation)
        learner = self.model.cls(config, random_state=self.random_state).with_layout(pre.layout)
        learner.fit(X_train, self.y[train])
        risk = np.asarray(learner.predict(X_validation), dtype=float)
        if not np.isfinite(risk).all():
            raise ModelError(f"model {self.model.name!r} predicted non-finite risk scores")
        return self.metric(self.y["event"][validation], self.y["time"][validation], risk)


def _import_optuna():
    try:
        import optuna
    except ImportError as exc:
        raise UsageError("hyperparameter tuning (--tune) needs Optuna; install it with: pip install optuna") from exc
    return optuna


def _has_search_space(cls: type, optuna) -> bool:
    try:
        return bool(cls.search_space(optuna.trial.FixedTrial({})))
    except ValueError:  # FixedTrial raises on the first parameter a non-empty space asks for
        return True


def _derived_seed(seed: int, fold_key: str, purpose: str) -> int:
    """A 32-bit seed that is a pure function of the run seed, the fold and what it is for."""
    entropy = [seed, int(hashlib.sha256(f"{fold_key}/{purpose}".encode()).hexdigest(), 16)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _study_key(model: PluginSpec, blocks, y, patient_ids, train_index, spec: TuningSpec, seed: int) -> str:
    """What a stored study's trials depend on; resuming a study made for anything else would mix them."""
    body = {
        "model": [model.name, str(getattr(model.cls, "version", "?")), dataclasses.asdict(model.config)],
        "blocks": [
            [b.name, list(b.frame.columns), None if b.sequence is None else list(b.sequence.shape)] for b in blocks
        ],
        "rows": hashlib.sha256(
            "\n".join(
                f"{p}\t{e:d}\t{t!r}" for p, (e, t) in zip(patient_ids[train_index], y[train_index].tolist())
            ).encode()
        ).hexdigest(),
        "inner_folds": spec.inner_folds,
        "metric": spec.metric,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _claim(study: optuna.Study, key: str, storage: str | None) -> None:
    """Tag a new study with ``key``; refuse to resume one that was made for another model, fold or data."""
    recorded = study.user_attrs.get("tuning_key")
    if recorded is None and not study.get_trials(deepcopy=False):
        study.set_user_attr("tuning_key", key)
    elif recorded != key:
        raise UsageError(
            f"Optuna study {study.study_name!r} in {storage} was made for another model, options, fold, "
            f"seed or cohort; choose another study prefix or delete the study"
        )
