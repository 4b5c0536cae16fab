"""Evaluate one (feature blocks, model) combination on a frozen split.

Per fold: preprocessing and model are fit on the training part only, then the
test part gets risk scores and survival curves (out-of-fold predictions),
fold metrics, and bootstrap replicates of the concordance indices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.cohort import Cohort
from bench.errors import ModelError
from bench.metrics import (
    MetricSummary,
    bootstrap_indices,
    concordance_replicates,
    counts_from_indices,
    fold_scores,
    metric_names,
    summarise,
    uno_weights,
)
from bench.preprocessing import FoldPreprocessor
from feature_extractors.base import FeatureBlock
from splits.frozen import Split
from survival_models.base import SurvivalModel

BOOTSTRAPPED = ("c_index", "uno_c")


@dataclass
class Evaluation:
    """What one combination produced; everything the tracker and leaderboard need."""

    metrics: dict[str, MetricSummary]
    predictions: pd.DataFrame  # out-of-fold: sample_id, patient_id, repeat, fold, time, event, risk
    replicates: pd.DataFrame  # bootstrap fold means, one column per bootstrapped metric
    fold_reasons: dict[str, dict[str, str]] = field(default_factory=dict)  # fold key -> metric -> reason


def evaluate(
    cohort: Cohort,
    split: Split,
    blocks: list[FeatureBlock],
    make_model: Callable[[], SurvivalModel],
    bootstrap: int = 1000,
    seed: int = 0,
    on_fold: Callable[[str], None] | None = None,
) -> Evaluation:
    policy = cohort.policy
    y = cohort.y
    names = metric_names(policy)
    per_fold: dict[str, list[float]] = {m: [] for m in names}
    replicate_sums = {m: np.zeros(bootstrap) for m in BOOTSTRAPPED}
    fold_reasons: dict[str, dict[str, str]] = {}
    prediction_parts = []
    folds = split.folds(cohort)
    for fold in folds:
        pre = FoldPreprocessor(blocks)
        X_train = pre.fit_transform(fold.train)
        X_test = pre.transform(fold.test)
        model = make_model()
        model.fit(X_train, y[fold.train])
        risk = model.predict(X_test)
        if not np.isfinite(risk).all():
            raise ModelError(f"model {model.name!r} predicted non-finite risk scores in fold {fold.key}")
        try:
            survival = model.predict_survival_function(X_test, policy.ibs_times)
        except NotImplementedError:
            survival = None
        scores = fold_scores(y[fold.train], y[fold.test], risk, survival, policy)
        for m in names:
            per_fold[m].append(scores.values[m])
        if scores.reasons:
            fold_reasons[fold.key] = scores.reasons

        if bootstrap:
            test_y = y[fold.test]
            counts = counts_from_indices(
                bootstrap_indices(seed, split.sha256, fold.repeat, fold.index, len(fold.test), bootstrap),
                len(fold.test),
            )
            replicate_sums["c_index"] += concordance_replicates(test_y["event"], test_y["time"], risk, counts)
            try:
                w = uno_weights(y[fold.train], test_y, policy.tau)
                replicate_sums["uno_c"] += concordance_replicates(test_y["event"], test_y["time"], risk, counts, w)
            except ValueError:
                replicate_sums["uno_c"] += math.nan
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
        metrics[m] = summarise(per_fold[m], replicate_means.get(m) if bootstrap else None, "; ".join(reasons))
    return Evaluation(
        metrics=metrics,
        predictions=pd.concat(prediction_parts, ignore_index=True),
        replicates=pd.DataFrame(replicate_means) if bootstrap else pd.DataFrame(),
        fold_reasons=fold_reasons,
    )
