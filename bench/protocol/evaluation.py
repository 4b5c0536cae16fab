"""Evaluate one (feature blocks, model) combination on a frozen split.

Per fold: preprocessing and model are fit on the training part only, then the
test part gets risk scores and survival curves (out-of-fold predictions),
fold metrics, and bootstrap replicates of the concordance indices.

A learner that fails says so with a ``ModelError`` placed in its fold. Warnings the
learner raises while it fits and predicts (ill-conditioned matrices, no convergence,
overflow) are counted per fold instead of printed: the row carries the count and the
first messages, and the leaderboard flags it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from bench.data.cohort import Cohort
from bench.errors import ModelError, describe_model
from bench.protocol.degenerate import degenerate_reason
from bench.protocol.preprocessing import FoldPreprocessor
from bench.protocol.splits import Fold, Split
from bench.stats.bootstrap import MetricSummary, bootstrap_indices, counts_from_indices, summarise
from bench.stats.calibration import CalibrationMetrics, calibration_names
from bench.stats.curves import Curves, FoldCurves, figure_times, fold_curves, risk_groups, risk_thresholds
from bench.stats.engine import FoldMetrics, metric_names
from feature_extractors.base import FeatureBlock
from survival_models.base import SurvivalModel


@dataclass
class Evaluation:
    """What one combination produced; everything the tracker and leaderboard need."""

    metrics: dict[str, MetricSummary]
    # out-of-fold: sample_id, patient_id, repeat, fold, time, event, risk, risk_group (0-2: tertile of the
    # training fold's risks), survival_at_<h> (predicted survival at each horizon h; NaN without survival curves)
    predictions: pd.DataFrame
    replicates: pd.DataFrame  # bootstrap fold means, one column per metric, one row per replicate
    fold_reasons: dict[str, dict[str, str]] = field(default_factory=dict)  # fold key -> metric -> reason
    tuned: dict[str, dict] = field(default_factory=dict)  # fold key -> options chosen by nested tuning
    fold_warnings: dict[str, int] = field(default_factory=dict)  # fold key -> numerical warnings (folds with any)
    warning_messages: tuple[str, ...] = ()  # the first distinct ones, in the order they came
    # fold key -> the learner's reason ("" unknown) for the folds whose test patients all got one risk
    # (``bench.protocol.degenerate``)
    fold_degenerate: dict[str, str] = field(default_factory=dict)
    curves: Curves | None = None  # AUC(t) and Brier(t) over the evaluation window, risk-group cut points per fold

    @property
    def warnings(self) -> int:
        """Numerical warnings raised while the learner fitted and predicted, over all folds."""
        return sum(self.fold_warnings.values())


# Warnings about the code rather than the numbers: passed on as usual, never counted.
CODE_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, ImportWarning, ResourceWarning)
MAX_WARNING_MESSAGES = 5  # distinct messages kept per row


@dataclass
class FoldResult:
    """What one outer fold of a combination produced; a row is its folds, combined in fold order (``combine``)."""

    key: str
    values: dict[str, float]  # the fold's metrics
    reasons: dict[str, str]  # metric -> why it is NaN in this fold
    replicates: dict[str, np.ndarray] | None  # metric -> the fold's value on each bootstrap replicate
    curves: FoldCurves
    thresholds: tuple[float, float]  # risk-group cut points from the training fold's risks
    predictions: pd.DataFrame  # the test patients' rows of ``Evaluation.predictions``
    tuned: dict | None = None  # options chosen by nested tuning
    warnings: list[str] = field(default_factory=list)  # numerical warnings of the learner, as text
    degenerate: str | None = None  # every test risk the same: the learner's reason ("" unknown); None otherwise


def evaluate(
    cohort: Cohort,
    split: Split,
    blocks: list[FeatureBlock],
    make_model: Callable[..., SurvivalModel],
    bootstrap: int = 1000,
    seed: int = 0,
    on_fold: Callable[[str], None] | None = None,
    tune: Callable[[np.ndarray, str], dict] | None = None,
) -> Evaluation:
    """Out-of-fold evaluation; ``make_model(options)`` builds a fresh model with tuned options, if any.

    ``tune(train_index, fold_key)`` (nested tuning) sees the outer training rows only
    and returns the options for that fold's model.
    """
    results = []
    for fold in split.folds(cohort):
        results.append(evaluate_fold(cohort, split, fold, blocks, make_model, bootstrap, seed, tune))
        if on_fold is not None:
            on_fold(fold.key)
    return combine(cohort, results, bootstrap)


def evaluate_fold(
    cohort: Cohort,
    split: Split,
    fold: Fold,
    blocks: list[FeatureBlock],
    make_model: Callable[..., SurvivalModel],
    bootstrap: int = 1000,
    seed: int = 0,
    tune: Callable[[np.ndarray, str], dict] | None = None,
    calibration: bool = True,
) -> FoldResult:
    """One outer fold: tuning, preprocessing and fit on its training part, then metrics, bootstrap replicates and
    curves on its test part. Depends on nothing but its arguments, so folds can run anywhere in any order.
    Without ``calibration`` the calibration and net-benefit metrics are left out (to time what they cost)."""
    policy = cohort.policy
    y = cohort.y
    tuned = None
    if tune is not None:
        try:
            tuned = tune(fold.train, fold.key)
        except ModelError as exc:
            raise exc.place(model=describe_model(make_model(None)), action="could not be tuned", fold=fold.key)
    times = figure_times(policy)
    # One BLAS/OpenMP thread: how many threads split a sum changes its last bits, and a learner can turn
    # those into a visibly different row. The numbers are then the same at any OMP_NUM_THREADS.
    with threadpool_limits(limits=1):
        pre = FoldPreprocessor(blocks)
        X_train = pre.fit_transform(fold.train)
        X_test = pre.transform(fold.test)
        model = make_model(tuned).with_layout(pre.layout)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # every occurrence counts, not the first per line
            risk, survival = _fit_predict(model, X_train, y[fold.train], X_test, policy.ibs_times, fold.key)
        numerical = _numerical(caught)
        degenerate = degenerate_reason(model, risk)
        train_risk, at_times = _for_figures(model, X_train, X_test, times, fold.key)
        own = calibration and at_times is not None
        at_own_time = _at_own_times(model, X_test, cohort.time[fold.test], fold.key) if own else None
    at_horizons = None if at_times is None else at_times[:, [list(times).index(h) for h in policy.horizons]]
    engines = (FoldMetrics(y[fold.train], y[fold.test], risk, survival, policy),) + (
        (CalibrationMetrics(y[fold.test], at_horizons, at_own_time, policy),) if calibration else ()
    )
    values = {k: v for engine in engines for k, v in engine.point().items()}
    reasons = {k: v for engine in engines for k, v in engine.reasons.items()}  # the point estimates', as they stand
    counts = replicates = None
    if bootstrap:
        indices = bootstrap_indices(seed, split.sha256, fold.repeat, fold.index, len(fold.test), bootstrap)
        counts = counts_from_indices(indices, len(fold.test))
        replicates = {k: v for engine in engines for k, v in engine.evaluate(counts).items()}
    thresholds = risk_thresholds(train_risk)
    survival_at = {
        f"survival_at_{h:g}": at_horizons[:, j] if at_horizons is not None else np.nan
        for j, h in enumerate(policy.horizons)
    }
    predictions = pd.DataFrame(
        {
            "sample_id": cohort.sample_ids[fold.test],
            "patient_id": cohort.patient_ids[fold.test],
            "repeat": fold.repeat,
            "fold": fold.index,
            "time": cohort.time[fold.test],
            "event": cohort.event[fold.test].astype(int),
            "risk": risk,
            "risk_group": risk_groups(risk, thresholds),
            **survival_at,
        }
    )
    return FoldResult(
        key=fold.key,
        values=values,
        reasons=reasons,
        replicates=replicates,
        curves=fold_curves(y[fold.train], y[fold.test], risk, at_times, times, policy, counts),
        thresholds=thresholds,
        predictions=predictions,
        tuned=tuned,
        warnings=numerical,
        degenerate=degenerate,
    )


def combine(cohort: Cohort, folds: list[FoldResult], bootstrap: int) -> Evaluation:
    """A row from its folds, taken in fold order: the same numbers, to the bit, wherever each fold ran."""
    names = [m for m in metric_names(cohort.policy) + calibration_names(cohort.policy) if m in folds[0].values]
    replicate_sums = {m: np.zeros(bootstrap) for m in names}
    fold_warnings: dict[str, int] = {}
    messages: list[str] = []
    for fold in folds:
        if fold.warnings:
            fold_warnings[fold.key] = len(fold.warnings)
            messages += [m for m in dict.fromkeys(fold.warnings) if m not in messages]
        if bootstrap and fold.replicates is not None:
            for m in names:
                replicate_sums[m] += fold.replicates[m]
    fold_reasons = {fold.key: fold.reasons for fold in folds if fold.reasons}
    replicate_means = {m: s / len(folds) for m, s in replicate_sums.items()}
    metrics = {}
    for m in names:
        reasons = [f"{key}: {r[m]}" for key, r in fold_reasons.items() if m in r]
        per_fold = [fold.values[m] for fold in folds]
        metrics[m] = summarise(per_fold, replicate_means[m] if bootstrap else None, "; ".join(reasons))
    times = figure_times(cohort.policy)
    return Evaluation(
        metrics=metrics,
        predictions=pd.concat([fold.predictions for fold in folds], ignore_index=True),
        replicates=pd.DataFrame(replicate_means) if bootstrap else pd.DataFrame(),
        fold_reasons=fold_reasons,
        tuned={fold.key: fold.tuned for fold in folds if fold.tuned is not None},
        fold_warnings=fold_warnings,
        warning_messages=tuple(messages[:MAX_WARNING_MESSAGES]),
        fold_degenerate={fold.key: fold.degenerate for fold in folds if fold.degenerate is not None},
        curves=Curves.combine(times, [fold.curves for fold in folds], {fold.key: fold.thresholds for fold in folds}),
    )


def _fit_predict(
    model: SurvivalModel, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, times: np.ndarray, fold: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Risk scores and survival curves of the test rows; any failure is a ModelError placed in ``fold``."""
    action = "failed to fit"
    try:
        model.fit(X_train, y_train)
        action = "failed to predict"
        risk = np.asarray(model.predict(X_test), dtype=float)
        if not np.isfinite(risk).all():
            raise ModelError(f"{int((~np.isfinite(risk)).sum())} of {len(risk)} risk scores are not finite")
        try:
            survival = model.predict_survival_function(X_test, times)
        except NotImplementedError:
            survival = None
    except ModelError as exc:
        raise exc.place(model=describe_model(model), action=action, fold=fold)
    except (ArithmeticError, ValueError) as exc:  # a plugin's library failing on these numbers (LinAlgError too)
        raise ModelError(f"{type(exc).__name__}: {exc}", model=describe_model(model), action=action, fold=fold) from exc
    return risk, survival


def _for_figures(
    model: SurvivalModel, X_train: np.ndarray, X_test: np.ndarray, times: np.ndarray, fold: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """The fitted model's risks of its own training rows (the risk-group cut points) and the test rows' survival
    at the curves' ``times``. Predictions the row's numbers do not depend on: their warnings are not counted."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train_risk = np.asarray(model.predict(X_train), dtype=float)
            try:
                survival = np.asarray(model.predict_survival_function(X_test, times), dtype=float)
            except NotImplementedError:
                survival = None
    except (ArithmeticError, ValueError) as exc:
        raise ModelError(f"{type(exc).__name__}: {exc}", model=describe_model(model), action="failed to predict",
                         fold=fold) from exc  # fmt: skip
    return train_risk, survival


def _at_own_times(model: SurvivalModel, X_test: np.ndarray, time: np.ndarray, fold: str) -> np.ndarray:
    """Each test patient's predicted survival at its own time, S(T_i | x_i): what D-calibration bins."""
    unique, position = np.unique(time, return_inverse=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            survival = np.asarray(model.predict_survival_function(X_test, unique), dtype=float)
    except (ArithmeticError, ValueError) as exc:
        raise ModelError(f"{type(exc).__name__}: {exc}", model=describe_model(model), action="failed to predict",
                         fold=fold) from exc  # fmt: skip
    return survival[np.arange(len(time)), position]


def _numerical(caught: list[warnings.WarningMessage]) -> list[str]:
    """The numerical warnings among ``caught``, as text; the others are passed on as if never caught."""
    out = []
    for w in caught:
        if issubclass(w.category, CODE_WARNINGS):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        else:
            out.append(_warning_text(w))
    return out


def _warning_text(w: warnings.WarningMessage) -> str:
    # Numbers in messages (rcond=1.2345e-17) carry the machine's rounding noise: 3 significant digits keep
    # the text, and so the results file, the same from one machine to the next.
    text = re.sub(r"\d+\.\d+(?:[eE][-+]?\d+)?", lambda m: f"{float(m.group()):.3g}", " ".join(str(w.message).split()))
    return f"{w.category.__name__}: {text}"[:300]
