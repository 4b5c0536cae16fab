"""``bench run``: cross extractors with models on one dataset and split, track every combination."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from bench.cohort import Cohort
from bench.datasets import load_cohort
from bench.errors import BenchError
from bench.evaluate import Evaluation, evaluate
from bench.plugins import PluginSpec, resolve_extractors, resolve_models
from bench.tracking import Tracker, dumps
from feature_extractors.base import FeatureBlock
from splits.frozen import Split, load_split


@dataclass(frozen=True)
class RunRequest:
    dataset: str
    extractors: tuple[str, ...] = ("clinical",)
    models: tuple[str, ...] = ("coxph",)
    split: str | None = None  # the dataset's default split when None
    bootstrap: int = 1000
    seed: int = 0
    tracking_uri: str | None = None
    horizons: tuple[float, ...] | None = None  # for a CSV manifest, which cannot declare them
    tau: float | None = None
    workers: int = 1  # local processes for feature extraction
    weights: str | None = None  # --weights: a checkpoint path, or "random" for a random-initialisation control


@dataclass
class CombinationResult:
    extractor: PluginSpec
    model: PluginSpec
    evaluation: Evaluation
    run_name: str
    run_id: str = ""

    @property
    def label(self) -> str:
        return f"{self.extractor.label} x {self.model.label}"


@dataclass
class RunOutcome:
    cohort: Cohort
    split: Split
    request: RunRequest
    parent_run_id: str
    results: list[CombinationResult] = field(default_factory=list)

    def as_json(self) -> dict:
        return {
            "dataset": self.cohort.name,
            "n": self.cohort.n,
            "events": self.cohort.n_events,
            "split": self.split.name,
            "split_sha256": self.split.sha256,
            "seed": self.request.seed,
            "bootstrap": self.request.bootstrap,
            "policy": self.cohort.policy.as_params(),
            "parent_run_id": self.parent_run_id,
            "results": [
                {
                    "extractor": r.extractor.label,
                    "model": r.model.label,
                    "run_id": r.run_id,
                    "run_name": r.run_name,
                    "metrics": {m: s.as_dict() for m, s in r.evaluation.metrics.items()},
                }
                for r in self.results
            ],
        }


def run(request: RunRequest, progress: bool = True) -> RunOutcome:
    """Validate everything first, then extract, evaluate and track each combination."""
    if request.bootstrap < 0:
        raise BenchError(f"--bootstrap must be 0 or more, got {request.bootstrap}")
    cohort = load_cohort(request.dataset, request.horizons, request.tau)
    split = load_split(cohort, request.split or cohort.default_split)
    extractors = resolve_extractors(list(request.extractors), request.weights)
    models = resolve_models(list(request.models))

    tracker = Tracker(
        request.tracking_uri,
        cohort.name,
        {
            "dataset": cohort.name,
            "split": split.name,
            "split_sha256": split.sha256,
            "extractors": ",".join(e.label for e in extractors),
            "models": ",".join(m.label for m in models),
            "bootstrap": request.bootstrap,
            "seed": request.seed,
        },
    )
    outcome = RunOutcome(cohort, split, request, tracker.parent_run_id)
    n_folds = len(split.assignments) * split.n_folds
    bar = tqdm(
        total=len(extractors) * len(models) * n_folds,
        desc="evaluate",
        unit="fold",
        disable=not progress,
        file=sys.stderr,
    )
    try:
        for extractor in extractors:
            block = _extract(extractor, cohort, progress, request.workers)
            for model in models:
                bar.set_postfix_str(f"{extractor.label} x {model.label}")
                evaluation = evaluate(
                    cohort,
                    split,
                    [block],
                    lambda: model.cls(model.config, random_state=request.seed),
                    bootstrap=request.bootstrap,
                    seed=request.seed,
                    on_fold=lambda _key: bar.update(),
                )
                result = CombinationResult(extractor, model, evaluation, _run_name(extractor, model, split, request))
                result.run_id = _track(tracker, result, cohort, split, request)
                outcome.results.append(result)
    except BaseException:
        bar.close()
        tracker.finish("FAILED")
        raise
    bar.close()
    tracker.finish()
    return outcome


def _extract(extractor: PluginSpec, cohort: Cohort, progress: bool, workers: int) -> FeatureBlock:
    instance = extractor.cls(extractor.config)
    block = instance.extract(cohort, progress=progress, workers=workers)
    if list(block.frame.index) != list(cohort.sample_ids):
        raise BenchError(f"extractor {extractor.name!r} returned rows in a different order than the cohort")
    return block


def _run_name(extractor: PluginSpec, model: PluginSpec, split: Split, request: RunRequest) -> str:
    """Deterministic: the same configuration on the same split and seed gets the same name."""
    body = json.dumps(
        [extractor.digest(), model.digest(), split.sha256, request.seed, request.bootstrap], sort_keys=True
    )
    return f"{extractor.name}-{model.name}-{hashlib.sha256(body.encode()).hexdigest()[:8]}"


def _track(tracker: Tracker, result: CombinationResult, cohort: Cohort, split: Split, request: RunRequest) -> str:
    evaluation = result.evaluation
    params = {
        "dataset": cohort.name,
        "n": cohort.n,
        "events": cohort.n_events,
        "cohort_fingerprint": cohort.fingerprint(),
        "split": split.name,
        "split_sha256": split.sha256,
        "split_scheme": json.dumps(split.scheme, sort_keys=True),
        "seed": request.seed,
        "bootstrap": request.bootstrap,
        **{f"policy.{k}": v for k, v in cohort.policy.as_params().items()},
        **result.extractor.params("extractor"),
        **result.model.params("model"),
    }
    tags = {
        "bench.extractor": result.extractor.label,
        "bench.model": result.model.label,
        **{f"bench.reason.{m}": s.reason[:5000] for m, s in evaluation.metrics.items() if s.reason},
    }
    metrics = {m: s.as_dict() for m, s in evaluation.metrics.items()}
    artifacts = {
        "predictions.csv": evaluation.predictions.to_csv(index=False),
        "metrics.json": dumps({"metrics": metrics, "fold_reasons": evaluation.fold_reasons}),
    }
    if not evaluation.replicates.empty:
        artifacts["bootstrap_replicates.csv"] = evaluation.replicates.to_csv(index_label="replicate")
    return tracker.log_combination(result.run_name, params, tags, metrics, artifacts)
