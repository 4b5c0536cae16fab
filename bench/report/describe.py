"""What the MLflow UI says about a cohort and a row: the experiment's description, the cohort as an MLflow
dataset, a row's note."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.data.cohort import Cohort
    from bench.protocol.runner import CombinationResult, RunRequest
    from bench.protocol.splits import Split


def experiment_description(cohort: Cohort, split: Split) -> str:
    """The experiment's description in the MLflow UI: what its runs were computed on and how they are scored."""
    from bench.report.leaderboard import describe_scheme

    policy = cohort.policy.as_params()
    unit = cohort.policy.time_unit
    return (
        f"{cohort.name}: {cohort.description or 'user cohort'} (n = {cohort.n}, events = {cohort.n_events}; "
        f"data fingerprint {cohort.content_fingerprint()[:16]}). Split {split.name}: {describe_scheme(split.scheme)} "
        f"(sha256 {split.sha256[:16]}). Scored on the test folds: Harrell's C and Uno's C (tau {policy['tau']} "
        f"{unit}), cumulative/dynamic AUC at {policy['horizons']} {unit}, integrated Brier score over "
        f"{policy['ibs_range']} {unit}, each with a bootstrap 95 % CI. One run per `bench` invocation "
        "(`bench run`), with a child run per features x model row; compare the rows on their `features` and "
        "`model` params and the `c_index` metric."
    )


def dataset_input(cohort: Cohort) -> dict[str, str]:
    """The cohort as MLflow shows a dataset: name, content fingerprint as digest, where it comes from, and the
    schema of its clinical covariates (never the images, never the outcomes)."""
    types = {"numeric": "double", "categorical": "string", "ordinal": "string"}
    schema = [{"type": types.get(spec.kind, "string"), "name": name, "required": False}
              for name, spec in cohort.columns.items()]  # fmt: skip
    if cohort.manifest is not None:
        source_type, source = "local", {"uri": Path(cohort.manifest).resolve().as_uri()}
    else:
        source_type, source = "code", {"tags": {"prognosis_bench.dataset": cohort.name}}
    profile = {"num_rows": cohort.n, "num_events": cohort.n_events, "num_covariates": len(cohort.columns),
               "images": cohort.has_images}  # fmt: skip
    return {
        "name": cohort.name,
        "digest": cohort.content_fingerprint()[:16],  # as pages show it (MLflow keeps at most 36 characters)
        "source_type": source_type,
        "source": json.dumps(source, sort_keys=True),
        "schema": json.dumps({"mlflow_colspec": schema}),
        "profile": json.dumps(profile, sort_keys=True),
    }


def run_note(result: CombinationResult, request: RunRequest) -> str:
    """A child run's description in the MLflow UI: the row and its headline number."""
    c = result.evaluation.metrics.get("c_index")
    if c is None or not math.isfinite(c.mean):
        headline = "C-index n/a"
    elif math.isfinite(c.ci_low):
        headline = f"C-index {c.mean:.3f} [95 % CI {c.ci_low:.3f}, {c.ci_high:.3f}], +- {c.se:.3f} SE across folds"
    else:
        headline = f"C-index {c.mean:.3f} +- {c.se:.3f} SE across folds"
    key = result.key
    return (
        f"Features {key.features_label} with model {key.model_label}: {headline} "
        f"(B = {request.bootstrap} bootstrap replicates, seed {request.seed})."
    )
