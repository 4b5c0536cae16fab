"""``bench run`` and ``bench grid``: evaluate feature x model rows on one dataset and split, hand on every one.

A row's features are one extractor or several joined by ``+`` (late fusion: blocks
joined by patient, each preprocessed in-fold on its own). Every extractor runs once
per invocation, however many rows use it. Each finished and each failed row is handed
to the ``RowSink``s the caller gives (``bench.commands`` wires MLflow tracking, the results file
and the progress output, in ``bench.report``): the protocol emits, the report records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.data.cohort import Cohort
from bench.data.datasets import load_cohort
from bench.data.imaging.perturb import parse_chain
from bench.errors import BenchError, InputError, ModelError, RowsFailedError, UsageError
from bench.executor import GPU, Executor, check_scheduler, on_gpu, open_executor
from bench.plugins.labels import Baseline, RowKey
from bench.plugins.registry import EXTRACTORS
from bench.plugins.specs import Features, PluginSpec, resolve_features, resolve_models
from bench.plugins.weights import WeightsFile, used_weights
from bench.protocol.cache_check import check_feature_cache
from bench.protocol.evaluation import Evaluation
from bench.protocol.fitting import FitSpec, fit_rows
from bench.protocol.robustness import DEFAULT_PERTURBATION, DEFAULT_REPEATS, robust_block
from bench.protocol.splits import Split, load_split
from bench.protocol.tuning import TuningSpec, check_storage
from feature_extractors.base import FeatureBlock, patient_records


@dataclass(frozen=True)
class RunRequest:
    dataset: str
    extractors: tuple[str, ...] = ("clinical",)  # each "A" or a fusion "A+B+C"
    models: tuple[str, ...] = ("coxph",)
    split: str | None = None  # the dataset's default split when None
    bootstrap: int = 1000
    seed: int = 0
    tracking_uri: str | None = None
    horizons: tuple[float, ...] | None = None  # for a CSV manifest, which cannot declare them
    tau: float | None = None
    workers: int = 1  # > 1: a local Dask cluster of that many processes extracts features and fits folds
    scheduler: str | None = None  # an existing Dask cluster's scheduler (tcp://HOST:PORT); --workers is then unused
    weights: str | None = None  # --weights: a checkpoint path, or "random" for a random-initialisation control
    # --weights given on the command line must reach an extractor; a grid config's own weights is a default
    weights_required: bool = True
    tune: int = 0  # Optuna trials per outer training fold (0: the models' own options, untuned)
    tune_inner_folds: int = 3  # inner CV folds on each outer training fold
    optuna_storage: str | None = None  # e.g. sqlite:///optuna.db: trials persist and can be shared
    # The perturbation of ``min_icc`` extractors (their features' ICC across this many perturbed versions)
    robust_perturbation: str = DEFAULT_PERTURBATION
    robust_repeats: int = DEFAULT_REPEATS
    # Explicit (features, models) rows, as `bench grid` gives them; None: every extractor with every model.
    rows: tuple[tuple[str, tuple[str, ...]], ...] | None = None

    def planned_rows(self) -> list[tuple[str, tuple[str, ...]]]:
        if self.rows is not None:
            return [(features, tuple(models)) for features, models in self.rows]
        return [(features, tuple(self.models)) for features in self.extractors]


@dataclass
class CombinationResult:
    extractor: Features
    model: PluginSpec
    evaluation: Evaluation
    run_name: str = ""  # the row's name and id in the tracking store: a sink that records it writes them
    run_id: str = ""
    tuning: TuningSpec | None = None

    @property
    def key(self) -> RowKey:
        return row_key(self.extractor, self.model, self.tuning.trials if self.tuning else 0)


@dataclass(frozen=True)
class FailedRow:
    """A row whose learner failed: what the runner hands its sinks (the error names the row and fold)."""

    extractor: Features
    model: PluginSpec
    error: ModelError


@dataclass
class RunOutcome:
    cohort: Cohort
    split: Split
    request: RunRequest
    parent_run_id: str = ""  # the invocation's run in the tracking store: the sink that records it writes it
    baseline: Baseline | None = None  # the row each row is compared with, for the sinks that compare
    results: list[CombinationResult] = field(default_factory=list)
    failures: list[ModelError] = field(default_factory=list)  # rows whose learner failed (fold and row in each)
    weights: dict[str, dict] = field(default_factory=dict)  # extractor label -> the weights file it computed with

    def check(self) -> None:
        """Raise ``RowsFailedError`` naming every failed row and fold, once the finished rows are written."""
        if self.failures:
            raise RowsFailedError(self.failures, len(self.results))

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
                    "extractor": r.key.features_label,
                    "model": r.key.model_label,
                    "run_id": r.run_id,
                    "run_name": r.run_name,
                    "metrics": {m: s.as_dict() for m, s in r.evaluation.metrics.items()},
                }
                for r in self.results
            ],
            **({"failures": [str(f) for f in self.failures]} if self.failures else {}),
        }


class RowSink:
    """Where the runner hands what it computes; each method does nothing unless a sink overrides it.

    ``check`` before any work (the cohort is not loaded yet), ``start`` once every input and the cluster
    are checked and before the first extraction, ``fold`` as each (row, fold) fit comes back (in any
    order), ``row``/``failed`` for each row in plan order as it comes back, ``finish`` at the end
    (``interrupted``: the run stopped on an error, raised after). A sink that ``shows_progress`` turns
    on the extractors' own progress bars and the cluster's announcement too.
    """

    shows_progress = False

    def check(self, request: RunRequest) -> None:
        pass

    def start(self, outcome: RunOutcome, plan: list[tuple[Features, list[PluginSpec]]]) -> None:
        pass

    def fold(self, features: Features, model: PluginSpec) -> None:
        pass

    def row(self, result: CombinationResult) -> None:
        pass

    def failed(self, failure: FailedRow) -> None:
        pass

    def finish(self, outcome: RunOutcome, interrupted: bool) -> None:
        pass


def run(request: RunRequest, baseline: Baseline | None = None, sinks: Sequence[RowSink] = ()) -> RunOutcome:
    """Validate everything first, then extract and evaluate each row, handing each on to ``sinks``.

    A row whose learner fails (``ModelError``) is handed on as a ``FailedRow`` and listed in
    ``failures``; the other rows go on. ``RunOutcome.check`` raises for the failures.
    """
    if request.bootstrap < 0:
        raise UsageError(f"--bootstrap must be 0 or more, got {request.bootstrap}")
    if request.tune < 0 or request.tune_inner_folds < 2:
        raise UsageError(f"--tune must be 0 or more and inner folds at least 2, got {request.tune}, "
                         f"{request.tune_inner_folds}")  # fmt: skip
    if request.optuna_storage and not request.tune:
        raise UsageError("--optuna-storage keeps tuning trials: give --tune N too, or drop it")
    if request.optuna_storage:
        check_storage(request.optuna_storage)
    if request.workers < 1:
        raise UsageError(f"--workers must be 1 or more, got {request.workers}")
    if request.scheduler is not None:
        check_scheduler(request.scheduler)  # its form now; whether it answers, once the inputs are checked
    plan = resolve_plan(request)  # options first: loading (or generating) a cohort can take a while
    for sink in sinks:
        sink.check(request)  # and the sinks' own settings (a store's URI): a bad one fails now, not after extraction
    cohort = load_cohort(request.dataset, request.horizons, request.tau)
    split = load_split(cohort, request.split or cohort.default_split)
    unusable = input_problems(plan, cohort)
    if unusable:
        more = f" (and {len(unusable) - 1} more)" if len(unusable) > 1 else ""
        raise UsageError(unusable[0] + more)
    bad_files = file_problems(plan, cohort)
    if bad_files:
        check = f"; run `bench data check {cohort.manifest}` to list them all" if cohort.manifest else ""
        more = f" ({len(bad_files) - 1} more{check})" if len(bad_files) > 1 else ""
        raise InputError(bad_files[0] + more)
    if cohort.has_images:
        check_feature_cache(plan, cohort)  # written, or read-only with every entry this run needs
    tuning = (
        TuningSpec(request.tune, request.tune_inner_folds, request.optuna_storage, f"{cohort.name}-{split.name}")
        if request.tune
        else None
    )
    outcome = RunOutcome(cohort, split, request, baseline=baseline)
    progress = any(sink.shows_progress for sink in sinks)
    with open_executor(request.workers, request.scheduler, announce=progress) as executor:
        executor.check(*plan_needs(plan))  # the cluster can run the plan: plugins importable, GPUs offered
        started: list[RowSink] = []
        try:
            for sink in sinks:  # last: a store cannot be opened without creating it
                sink.start(outcome, plan)
                started.append(sink)
            _extract_and_fit(plan, cohort, split, request, tuning, executor, sinks, outcome, progress)
        except BaseException:
            for sink in started:
                sink.finish(outcome, interrupted=True)
            raise
    for sink in sinks:
        sink.finish(outcome, interrupted=False)
    return outcome


def _extract_and_fit(
    plan: list[tuple[Features, list[PluginSpec]]],
    cohort: Cohort,
    split: Split,
    request: RunRequest,
    tuning: TuningSpec | None,
    executor: Executor,
    sinks: Sequence[RowSink],
    outcome: RunOutcome,
    progress: bool,
) -> None:
    """Every extractor once (patients as tasks), then every (row, fold) fit as a task; rows handed on in plan order.

    Only this process calls the sinks, as each row comes back: the workers compute, never record.
    """
    blocks = extract_blocks(plan, cohort, progress, executor, request)
    outcome.weights = {p.label: w.as_dict() for f, _ in plan for p in f.parts if (w := _weights_of(p)) is not None}
    rows = [(features, model) for features, models in plan for model in models]
    fits = row_fits(plan, blocks, request, tuning)

    def on_fold(r: int) -> None:
        for sink in sinks:
            sink.fold(*rows[r])

    for r, evaluation in fit_rows(executor, cohort, split, fits, on_fold):
        features, model = rows[r]
        if isinstance(evaluation, ModelError):  # this row is lost; the others are still handed on
            evaluation.place(row=str(row_key(features, model, request.tune)))
            for sink in sinks:
                sink.failed(FailedRow(features, model, evaluation))
            outcome.failures.append(evaluation)
            continue
        result = CombinationResult(features, model, evaluation, tuning=tuning)
        for sink in sinks:
            sink.row(result)
        outcome.results.append(result)


def extract_blocks(
    plan: list[tuple[Features, list[PluginSpec]]], cohort: Cohort, progress: bool, executor: Executor,
    request: RunRequest | None = None,
) -> dict[str, FeatureBlock]:
    """Every extractor of the plan, once however many rows use it: block by extractor digest; a ``min_icc``
    extractor's block also carries its features under the request's perturbed versions."""
    blocks: dict[str, FeatureBlock] = {}
    for features, _models in plan:
        for part in features.parts:
            if part.digest() not in blocks:
                block = _extract(part, cohort, progress, executor)
                if part.min_icc is not None:
                    chain, repeats = parse_chain(request.robust_perturbation if request else DEFAULT_PERTURBATION), \
                        request.robust_repeats if request else DEFAULT_REPEATS  # fmt: skip
                    block = robust_block(block, part.cls(part.config), part.min_icc, cohort, chain, repeats,
                                         request.seed if request else 0, executor, progress)  # fmt: skip
                blocks[part.digest()] = block
    return blocks


def row_fits(
    plan: list[tuple[Features, list[PluginSpec]]],
    blocks: dict[str, FeatureBlock],
    request: RunRequest,
    tuning: TuningSpec | None,
) -> list[tuple[Features, list[FeatureBlock], FitSpec]]:
    """The fitting stage's rows, one per (features, model) in plan order (see ``fitting.fit_rows``)."""
    return [
        (features, [blocks[p.digest()] for p in features.parts],
         FitSpec.of(features, model, request.seed, request.bootstrap, tuning))
        for features, models in plan
        for model in models
    ]  # fmt: skip


def plan_needs(plan: list[tuple[Features, list[PluginSpec]]]) -> tuple[list[str], dict[str, float]]:
    """The modules a worker imports to run the plan's tasks, and the worker resources they ask for."""
    plugins = [p for features, models in plan for p in [*features.parts, *models]]
    modules = ["bench.protocol.fitting", *(m for p in plugins for m in (p.cls.__module__, *p.cls.imports))]
    modules = list(dict.fromkeys(modules))
    gpu = any(on_gpu(p.config) for p in plugins)
    return modules, ({GPU: 1} if gpu else {})


def resolve_plan(request: RunRequest) -> list[tuple[Features, list[PluginSpec]]]:
    """Load and validate every plugin and option of every row before any work starts."""
    plan = []
    seen: set[RowKey] = set()
    rows = []
    for spec, model_specs in request.planned_rows():  # "all" is every registered extractor, each in its own row
        rows += [(name, model_specs) for name in EXTRACTORS.names()] if spec.strip() == "all" else [(spec, model_specs)]
    for spec, model_specs in rows:
        features = resolve_features(spec, request.weights)
        labels = [p.label for p in features.parts]
        if len(set(labels)) < len(labels):
            raise UsageError(f"{spec!r} fuses the same extractor twice")
        models = resolve_models(list(model_specs))
        for model in models:
            sequences = [p.label for p in features.parts if p.cls(p.config).produces_sequence()]
            if sequences and not getattr(model.cls, "reads_sequences", False):
                raise UsageError(
                    f"{sequences[0]} gives per-slice sequences, which model {model.name!r} cannot read; "
                    "use a model that pools them (deepsurv) or the extractor's pool=mean"
                )
            key = row_key(features, model, request.tune)
            if key in seen:
                raise UsageError(f"row {key} is given twice")
            seen.add(key)
        plan.append((features, models))
    _check_weights(plan, request.weights, request.weights_required)
    return plan


def _check_weights(plan: list[tuple[Features, list[PluginSpec]]], weights: str | None, required: bool) -> None:
    """``--weights`` reaches some extractor, and every weights file given loads as a checkpoint (once, up front)."""
    from pathlib import Path

    from bench.plugins.weights import RANDOM, check_checkpoint

    parts = list({p.digest(): p for features, _ in plan for p in features.parts}.values())
    takers = [p for p in parts if "weights" in {f.name for f in dataclasses.fields(p.config)}]
    if weights is not None and required and not takers:
        names = ", ".join(repr(p.label) for p in parts)
        who = f"extractor {names} has no weights" if len(parts) == 1 else f"none of the extractors {names} has weights"
        raise UsageError(f"{who}; drop --weights")
    for part in takers:
        if part.config.weights and part.config.weights != RANDOM:
            check_checkpoint(Path(part.config.weights).expanduser(), part.name)


def file_problems(plan: list[tuple[Features, list[PluginSpec]]], cohort: Cohort) -> list[str]:
    """What the headers of the images and masks that the plan's extractors read show to be wrong, one line each.

    Checked before any work (no voxel is read): an unreadable file, a CT or mask that does not overlap its grid.
    """
    from bench.data.imaging.study import header_problems

    extractors = [p.cls(p.config) for p in {p.digest(): p for features, _ in plan for p in features.parts}.values()]
    problems: list[str] = []
    for record in patient_records(cohort):
        files = {f for extractor in extractors for f in extractor.input_files(record.inputs)}
        if files:
            problems += header_problems(record.inputs, record.sample_id, files)
    return problems


def input_problems(plan: list[tuple[Features, list[PluginSpec]]], cohort: Cohort) -> list[str]:
    """Extractors of the plan that some studies cannot feed (a missing modality or ROI), one line each.

    Checked before any work, from what each extractor's options need (``Extractor.missing_inputs``).
    """
    records = patient_records(cohort)
    problems: list[str] = []
    seen: set[str] = set()
    for features, _models in plan:
        for part in features.parts:
            if part.digest() in seen:
                continue
            seen.add(part.digest())
            extractor = part.cls(part.config)
            lacking = [(r.sample_id, why) for r in records if (why := extractor.missing_inputs(r.inputs))]
            if lacking:
                sample, why = lacking[0]
                problems.append(
                    f"extractor {part.label!r} cannot run on {len(lacking)} of {len(records)} studies of "
                    f"{cohort.name!r}: e.g. {sample!r}: {why}"
                )
    return problems


def row_key(features: Features, model: PluginSpec, tune: int = 0) -> RowKey:
    """The identity of a row: what runner, tracking and leaderboard compare (never its text)."""
    return RowKey(features.key(), model.key(tune))


def _extract(extractor: PluginSpec, cohort: Cohort, progress: bool, executor: Executor) -> FeatureBlock:
    instance = extractor.cls(extractor.config)
    block = instance.extract(cohort, progress=progress, executor=executor)
    if list(block.frame.index) != list(cohort.sample_ids):
        raise BenchError(f"extractor {extractor.name!r} returned rows in a different order than the cohort")
    block.name = extractor.label  # fused blocks are told apart by their labels (column prefixes, layouts)
    return block


def _weights_of(part: PluginSpec) -> WeightsFile | None:
    """The weights file an extractor computed with, resolved as its extraction did (None: random or none)."""
    return used_weights(part.cls(part.config))
