"""MLflow as a sink of ``bench run`` and ``bench grid``: the parent run of an invocation, a child run per row.

The runner (``bench.protocol.runner``) hands each finished and each failed row to the sinks it is
given; ``bench.commands`` wires this one. Run names, params, tags, metrics and artifacts are built
here, from the rows the protocol computed.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import TYPE_CHECKING

from bench.plugins.weights import used_weights
from bench.protocol.runner import CombinationResult, FailedRow, RowSink, RunOutcome, RunRequest, row_key
from bench.report.degenerate import degenerate_text
from bench.report.describe import dataset_input, experiment_description, run_note
from bench.report.row_figures import row_figures
from bench.report.tracking import (
    BRIEF_METRICS,
    FINGERPRINT_TAG,
    NOTE_TAG,
    Tracker,
    check_tracking_uri,
    dumps,
    open_store,
)

if TYPE_CHECKING:
    from bench.data.cohort import Cohort
    from bench.plugins.specs import Features, PluginSpec
    from bench.protocol.splits import Split


class MlflowSink(RowSink):
    """Tracks an invocation in the MLflow store at ``tracking_uri`` (None: ``sqlite:///mlflow.db``).

    ``check``: the URI's form, before the cohort is loaded; ``start``: the store is opened (created if new)
    and the parent run begun, once every input is checked and before the first extraction; ``row`` and
    ``failed``: a child run each, its name and id written on the row; ``finish``: each row's difference to
    the outcome's baseline row, then the parent run's status.
    """

    def __init__(self, tracking_uri: str | None):
        self.tracking_uri = tracking_uri
        self.tracker: Tracker | None = None
        self.outcome: RunOutcome | None = None

    def check(self, request: RunRequest) -> None:
        check_tracking_uri(self.tracking_uri)  # a bad URI fails now, not after extraction

    def start(self, outcome: RunOutcome, plan: list[tuple[Features, list[PluginSpec]]]) -> None:
        cohort, split, request = outcome.cohort, outcome.split, outcome.request
        store = open_store(self.tracking_uri)  # the store itself, last: it cannot be opened without creating it
        self.tracker = Tracker(
            store,
            cohort.name,
            {
                "dataset": cohort.name,
                "split": split.name,
                "split_sha256": split.sha256,
                "rows": json.dumps([[f.label, [m.label for m in models]] for f, models in plan]),
                "bootstrap": request.bootstrap,
                "seed": request.seed,
                "tune": request.tune,
                "data_fingerprint": cohort.content_fingerprint(),
            },
            experiment_description(cohort, split),
            dataset_input(cohort),
        )
        self.outcome = outcome
        outcome.parent_run_id = self.tracker.parent_run_id

    def row(self, result: CombinationResult) -> None:
        assert self.tracker is not None and self.outcome is not None, "start() opens the store"
        outcome = self.outcome
        result.run_name = run_name(result.extractor, result.model, outcome.cohort, outcome.split, outcome.request)
        result.run_id = _track(self.tracker, result, outcome.cohort, outcome.split, outcome.request)
        _track_per_group(self.tracker, result, outcome)

    def failed(self, failure: FailedRow) -> None:
        assert self.tracker is not None and self.outcome is not None, "start() opens the store"
        cohort, split, request = self.outcome.cohort, self.outcome.split, self.outcome.request
        features, model = failure.extractor, failure.model
        name = run_name(features, model, cohort, split, request)
        params = _params(features, model, cohort, split, request)
        self.tracker.log_failure(name, params, _tags(features, model, cohort, request), str(failure.error))

    def finish(self, outcome: RunOutcome, interrupted: bool) -> None:
        if self.tracker is None:
            return
        if interrupted:
            self.tracker.finish("FAILED")
            return
        if outcome.baseline is not None:
            _track_versus_baseline(self.tracker, outcome)
        self.tracker.finish("FAILED" if outcome.failures else "FINISHED")


def run_name(features: Features, model: PluginSpec, cohort: Cohort, split: Split, request: RunRequest) -> str:
    """Deterministic: the same configuration on the same data, split and seed gets the same name.

    The data is the cohort's content fingerprint (images and masks included), so two cohorts that
    differ in one mask never share a name, whatever the dataset is called.
    """
    parts: list = [features.digest(), model.digest(), split.sha256, request.seed, request.bootstrap]
    parts.append(cohort.content_fingerprint())
    if request.tune:  # kept out of untuned names, so those stay what they were
        parts.append([request.tune, request.tune_inner_folds])
    body = json.dumps(parts, sort_keys=True)
    return f"{features.name}-{model.name}-{hashlib.sha256(body.encode()).hexdigest()[:8]}"


def _params(features: Features, model: PluginSpec, cohort: Cohort, split: Split, request: RunRequest) -> dict:
    """A row's MLflow parameters: what it was computed from, whether it finished or failed."""
    key = row_key(features, model, request.tune)
    params = {
        "features": key.features_label,  # short and first: what the MLflow UI compares runs on
        "model": key.model_label,
        "dataset": cohort.name,
        "n": cohort.n,
        "events": cohort.n_events,
        "cohort_fingerprint": cohort.fingerprint(),
        "data_fingerprint": cohort.content_fingerprint(),
        "description": cohort.description,
        "split": split.name,
        "split_sha256": split.sha256,
        "split_scheme": json.dumps(split.scheme, sort_keys=True),
        "seed": request.seed,
        "bootstrap": request.bootstrap,
        **{f"policy.{k}": v for k, v in cohort.policy.as_params().items()},
        **features.params(),
        **model.params("model"),
    }
    for i, part in enumerate(features.parts):  # the weights file's sha256 (and hub commit), by the part's role
        weights = used_weights(part.cls(part.config))
        if weights is not None:
            params.update(weights.params("extractor" if len(features.parts) == 1 else f"extractor{i}"))
    if request.tune:
        params.update({"tune.trials": request.tune, "tune.inner_folds": request.tune_inner_folds})
    return params


def _tags(features: Features, model: PluginSpec, cohort: Cohort, request: RunRequest) -> dict[str, str]:
    key = row_key(features, model, request.tune)
    return {"bench.extractor": key.features_label, "bench.model": key.model_label,
            FINGERPRINT_TAG: cohort.content_fingerprint()}  # fmt: skip


def _track_per_group(tracker: Tracker, result: CombinationResult, outcome: RunOutcome) -> None:
    """A split by group: the row's C-index per test group with its CI (``c_index/site/A``, ``..._ci_low``)."""
    from bench.report.per_group import metric_names, outcome_summaries

    summaries = outcome_summaries(result.evaluation.predictions, outcome)
    if summaries is None:
        return
    by = outcome.split.scheme["by"]
    metrics = {}
    for group, summary in summaries.items():
        name = metric_names(by, group)["c_index"]
        metrics.update({name: summary["c_index"]["mean"], f"{name}_ci_low": summary["c_index"]["ci_low"],
                        f"{name}_ci_high": summary["c_index"]["ci_high"]})  # fmt: skip
    tracker.annotate(result.run_id, metrics, {})


def _track_versus_baseline(tracker: Tracker, outcome: RunOutcome) -> None:
    """Each row's paired C-index difference to its baseline row, as metrics and in its note (as on the page)."""
    from bench.stats.bootstrap import paired_difference

    baseline = outcome.baseline
    assert baseline is not None
    rows = {r.key: r for r in outcome.results}
    for result in outcome.results:
        base = rows.get(baseline.key_for(result.key))
        if base is None or base is result:
            continue
        mine, theirs = result.evaluation, base.evaluation
        if mine.replicates.empty or theirs.replicates.empty:
            continue
        d = paired_difference(
            mine.metrics["c_index"].mean,
            theirs.metrics["c_index"].mean,
            mine.replicates["c_index"].to_numpy(),
            theirs.replicates["c_index"].to_numpy(),
        )
        metrics = {"c_index_vs_baseline": d.difference, "c_index_vs_baseline_ci_low": d.ci_low,
                   "c_index_vs_baseline_ci_high": d.ci_high, "c_index_vs_baseline_p": d.p_value}  # fmt: skip
        versus = (
            f" Versus the baseline {base.key} on the same bootstrap replicates: {d.difference:+.3f} "
            f"[95 % CI {d.ci_low:+.3f}, {d.ci_high:+.3f}], p = {d.p_value:.3f}."
        )
        tracker.annotate(result.run_id, metrics, {NOTE_TAG: run_note(result, outcome.request) + versus})


def _track(tracker: Tracker, result: CombinationResult, cohort: Cohort, split: Split, request: RunRequest) -> str:
    evaluation = result.evaluation
    params = _params(result.extractor, result.model, cohort, split, request)
    for fold_key, chosen in evaluation.tuned.items():
        params.update({f"tuned.{fold_key}.{k}": json.dumps(v) for k, v in chosen.items()})
    tags = {
        **_tags(result.extractor, result.model, cohort, request),
        **{f"bench.reason.{m}": s.reason[:5000] for m, s in evaluation.metrics.items() if s.reason},
    }
    tags[NOTE_TAG] = run_note(result, request)
    if evaluation.warnings:
        tags["bench.warnings"] = "\n".join(evaluation.warning_messages)[:5000]
    if evaluation.fold_degenerate:  # every test risk the same in these folds: flagged as the page flags it
        tags["bench.degenerate"] = degenerate_text(evaluation.fold_degenerate)[:5000]
    metrics = {m: s.as_dict() for m, s in evaluation.metrics.items()}
    details = {"metrics": metrics, "fold_reasons": evaluation.fold_reasons}
    if evaluation.warnings:
        details["fold_warnings"] = evaluation.fold_warnings
    if evaluation.fold_degenerate:
        details["fold_degenerate"] = evaluation.fold_degenerate
    artifacts = {
        "predictions.csv": evaluation.predictions.to_csv(index=False),
        "metrics.json": dumps(details),
    }
    if evaluation.tuned:
        artifacts["tuning.json"] = dumps(evaluation.tuned)
    if not evaluation.replicates.empty:  # the net-benefit grid's replicates left out: B x 90 numbers no view reads
        kept = [m for m in evaluation.replicates.columns if not m.startswith(BRIEF_METRICS)]
        artifacts["bootstrap_replicates.csv"] = evaluation.replicates[kept].to_csv(index_label="replicate")
    histories = {}
    if evaluation.curves is not None:  # AUC(t), step = time in the cohort's unit: MLflow draws the curve
        curves = evaluation.curves
        histories["td_auc"] = [(round(t), a) for t, a in zip(curves.times, curves.auc) if math.isfinite(a)]
        artifacts.update(
            {f"figures/{name}": png for name, png in row_figures(result.key, evaluation, cohort.policy).items()}
        )
    scalars = {"numerical_warnings": float(evaluation.warnings)}
    return tracker.log_combination(result.run_name, params, tags, metrics, artifacts, scalars, histories)
