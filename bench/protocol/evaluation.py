"""Evaluate one (feature blocks, model) combination on a frozen split.

Per fold: preprocessing and model are fit on the training part only, then the
test part gets risk scores and survival curves (out-of-fold predictions),
fold metrics, and bootstrap replicates of the concordance indices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.data.cohort import Cohort
from bench.errors import ModelError
from bench.protocol.preprocessing import FoldPreprocessor
from bench.protocol.splits import Split
from bench.stats.bootstrap import MetricSummary, bootstrap_indices, counts_from_indices, summarise
from bench.stats.engine import FoldMetrics, metric_names
from feature_extractors.base import FeatureBlock
from survival_models.base import SurvivalModel


@dataclass
class Evaluation:
    """What one combination produced; everything the tracker and leaderboard need."""

    metrics: dict[str, MetricSummary]
    predictions: pd.DataFrame  # out-of-fold: sample_id, patient_id, repeat, fold, time, event, risk
    replicates: pd.DataFrame  # bootstrap fold means, one column per metric, one row per replicate
    fold_reasons: dict[str, dict[str, str]] = field(default_factory=dict)  # fold key -> metric -> reason
    tuned: dict[str, dict] = field(default_factory=dict)  # fold key -> options chosen by nested tuning


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
    policy = cohort.policy
    y = cohort.y
    names = metric_names(policy)
    per_fold: dict[str, list[float]] = {m: [] for m in names}
    replicate_sums = {m: np.zeros(bootstrap) for m in names}
    fold_reasons: dict[str, dict[str, str]] = {}
    prediction_parts = []
    tuned: dict[str, dict] = {}
    folds = split.folds(cohort)
    for fold in folds:
        if tune is not None:
            tuned[fold.key] = tune(fold.train, fold.key)
        pre = FoldPreprocessor(blocks)
        X_train = pre.fit_transform(fold.train)
        X_test = pre.transform(fold.test)
        model = make_model(tuned.get(fold.key)).with_layout(pre.layout)
        model.fit(X_train, y[fold.train])
        risk = model.predict(X_test)
        if not np.isfinite(risk).all():
            raise ModelError(f"model {model.name!r} predicted non-finite risk scores in fold {fold.key}")
        try:
            survival = model.predict_survival_function(X_test, policy.ibs_times)
        except NotImplementedError:
            survival = None
        engine = FoldMetrics(y[fold.train], y[fold.test], risk, survival, policy)
        values = engine.point()
        for m in names:
            per_fold[m].append(values[m])
        if engine.reasons:
            fold_reasons[fold.key] = engine.reasons
        if bootstrap:
            indices = bootstrap_indices(seed, split.sha256, fold.repeat, fold.index, len(fold.test), bootstrap)
            replicates = engine.evaluate(counts_from_indices(indices, len(fold.test)))
            for m in names:
                replicate_sums[m] += replicates[m]
        prediction_parts.append(
            pd.DataFrame(
                {
                    "sample_id": cohort.sample_ids[fold.test],
                    "patient_id": cohort.patient_ids[fold.test],
                    "repeat": fold.repeat,
                    "fold": fold.index,
                    "time": cohort.time[fold.test],
                    "event": cohort.event[fold.test].astype(int),
                    "risk": risk,
                }
            )
        )
        if on_fold is not None:
            on_fold(fold.key)

    replicate_means = {m: s / len(folds) for m, s in replicate_sums.items()}
    metrics = {}
    for m in names:
        reasons = [f"{key}: {r[m]}" for key, r in fold_reasons.items() if m in r]
        metrics[m] = summarise(per_fold[m], replicate_means[m] if bootstrap else None, "; ".join(reasons))
    return Evaluation(
        metrics=metrics,
        predictions=pd.concat(prediction_parts, ignore_index=True),
        replicates=pd.DataFrame(replicate_means) if bootstrap else pd.DataFrame(),
        fold_reasons=fold_reasons,
        tuned=tuned,
    )
