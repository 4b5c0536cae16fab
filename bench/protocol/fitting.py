"""The fitting stage: every (row, outer fold) fit is one task of the executor.

A task gets the cohort, split and the row's feature blocks (sent to the workers once, see
``Executor.share``), the model with its options, and the fold's index; on the worker it tunes
(nested, on the outer training fold only), fits, predicts, bootstraps and scores the fold.
The client takes the folds back and combines each row in fold order (``evaluation.combine``),
so a row's numbers do not depend on where or in which order its folds ran.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bench.data.cohort import Cohort
from bench.errors import ModelError
from bench.executor import GPU, Executor, on_gpu
from bench.plugins.specs import Features, PluginSpec
from bench.protocol.evaluation import Evaluation, FoldResult, combine, evaluate_fold
from bench.protocol.splits import Split
from bench.protocol.tuning import TuningSpec, tune_fold
from feature_extractors.base import FeatureBlock
from survival_models.base import SurvivalModel


@dataclass(frozen=True)
class FitSpec:
    """What a row's fold fits need besides the data: small, sent with every task."""

    model: PluginSpec
    seed: int
    bootstrap: int
    tuning: TuningSpec | None = None  # with the row's own study prefix
    calibration: bool = True  # calibration and net benefit too (off only to time what they cost)

    @classmethod
    def of(cls, features: Features, model: PluginSpec, seed: int, bootstrap: int, tuning: TuningSpec | None):
        if tuning is not None:  # one Optuna study per row and fold: a shared storage never resumes another row's
            tuning = dataclasses.replace(tuning, study_prefix=f"{tuning.study_prefix}-{features.label}-{model.label}")
        return cls(model, seed, bootstrap, tuning)


def model_factory(model: PluginSpec, seed: int) -> Callable[..., SurvivalModel]:
    """``make(options)``: a fresh, unfitted model, with tuned ``options`` when given."""

    def make(params: dict | None = None) -> SurvivalModel:
        config = dataclasses.replace(model.config, **params) if params else model.config
        return model.cls(config, random_state=seed)

    return make


def fit_fold(
    cohort: Cohort, split: Split, blocks: list[FeatureBlock], spec: FitSpec, fold_index: int
) -> FoldResult | ModelError:
    """One (row, outer fold) task, where the executor runs it; a learner's failure is returned, not raised."""
    fold = split.folds(cohort)[fold_index]
    tune = None
    if spec.tuning is not None:
        tuning = spec.tuning

        def tune(train_index, fold_key: str) -> dict:
            found = tune_fold(spec.model, blocks, cohort.y, cohort.patient_ids, train_index, tuning, spec.seed,
                              fold_key, random_state=spec.seed)  # fmt: skip
            return found.params

    try:
        return evaluate_fold(cohort, split, fold, blocks, model_factory(spec.model, spec.seed), spec.bootstrap,
                             spec.seed, tune, spec.calibration)  # fmt: skip
    except ModelError as exc:
        return exc


def fit_rows(
    executor: Executor,
    cohort: Cohort,
    split: Split,
    rows: list[tuple[Features, list[FeatureBlock], FitSpec]],
    on_fold: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, Evaluation | ModelError]]:
    """Each row's evaluation, or the error of its first failing fold, in the rows' order, each as soon as it and
    every row before it are done. Every fold of every row is submitted at once; ``on_fold(row)`` after each fold.
    """
    n_folds = len(split.folds(cohort))
    shared_cohort, shared_split = executor.share(cohort), executor.share(split)
    shared: dict[int, object] = {}  # id(block) -> its handle: a block used by several rows is sent once
    tasks, owners = [], []
    for r, (_features, blocks, spec) in enumerate(rows):
        handles = []
        for block in blocks:
            if id(block) not in shared:
                shared[id(block)] = executor.share(block)
            handles.append(shared[id(block)])
        for f in range(n_folds):
            tasks.append((shared_cohort, shared_split, handles, spec, f))
            owners.append((r, f))
    resources = {GPU: 1} if any(on_gpu(spec.model.config) for _, _, spec in rows) else None

    def lost(i: int, exc: BaseException) -> ModelError:
        return ModelError("every Dask worker that ran this fold died (out of memory?); see the workers' logs",
                          fold=split.folds(cohort)[owners[i][1]].key)  # fmt: skip

    done: list[dict[int, FoldResult | ModelError]] = [{} for _ in rows]
    next_row = 0
    for i, result in executor.map(fit_fold, tasks, name="fit", resources=resources, lost=lost):
        r, f = owners[i]
        done[r][f] = result
        if on_fold is not None:
            on_fold(r)
        while next_row < len(rows) and len(done[next_row]) == n_folds:
            folds = [done[next_row][f] for f in range(n_folds)]
            failed = next((fold for fold in folds if isinstance(fold, ModelError)), None)
            yield next_row, failed if failed is not None else combine(cohort, folds, rows[next_row][2].bootstrap)
            done[next_row] = {}
            next_row += 1
