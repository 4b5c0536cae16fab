"""Results read back from an MLflow store: the rows of many ``bench run`` invocations on one page.

``bench leaderboard --dataset NAME --tracking-uri URI`` collects the latest finished run of every
row in the dataset's experiment. Runs are only put side by side when they were computed from the
same data (the cohort's content fingerprint) on the same split: two cohorts that share a name, or
one cohort before and after a mask was fixed, are never mixed on one page.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from bench.data.cohort import EvaluationPolicy
from bench.errors import DataError, UsageError
from bench.plugins.labels import Baseline, RowKey
from bench.report.results import METRIC_FIELDS, Outcomes, Protocol, Results, Row, earlier_reads_truth
from bench.report.risk_groups import outcomes_of, risk_group_text
from bench.report.tracking import FINGERPRINT_TAG, KIND_TAG, experiment_id, open_store

UNKNOWN = "(none: made before prognosis-bench 0.3)"


@dataclass(frozen=True)
class StoredRun:
    """A finished combination run as the store holds it."""

    run_id: str
    run_name: str
    started: int  # ms since the epoch
    key: RowKey
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]

    @property
    def fingerprint(self) -> str:
        return self.tags.get(FINGERPRINT_TAG) or self.params.get("data_fingerprint") or UNKNOWN


def results_from_store(
    tracking_uri: str | None, dataset: str, baseline: Baseline, source: str, fingerprint: str | None = None
) -> Results:
    """The latest finished run of every row of ``dataset``'s experiment, as the results a page renders.

    Raises ``UsageError`` when the runs come from more than one cohort (content fingerprint) or split,
    naming them, unless ``fingerprint`` (a prefix) picks one.
    """
    mlflow_client = open_store(tracking_uri)
    uri = mlflow_client.tracking_uri
    exp = experiment_id(mlflow_client, dataset, create=False)
    if exp is None:
        raise UsageError(
            f"MLflow store {uri!r} has no experiment {dataset!r}; run `bench run --dataset ... --tracking-uri {uri}` "
            "first, or give the dataset name the runs were logged under"
        )
    runs = finished_runs(mlflow_client, exp)
    if not runs:
        raise UsageError(f"experiment {dataset!r} in {uri!r} has no finished run to put on a page")
    runs = _one_cohort(runs, dataset, fingerprint)
    splits = Counter(r.params.get("split_sha256", "") for r in runs)
    if len(splits) > 1:
        (a, na), (b, nb) = splits.most_common(2)
        raise UsageError(
            f"experiment {dataset!r} holds runs on {len(splits)} different splits (sha256 {a[:12]}: {na} runs, "
            f"{b[:12]}: {nb} runs); a page compares rows on one split: rerun the others on it"
        )
    latest: dict[RowKey, StoredRun] = {}
    for run in sorted(runs, key=lambda r: r.started):  # the latest run of a row wins
        latest[run.key] = run
    chosen = list(latest.values())
    with tempfile.TemporaryDirectory() as tmp:
        read = [_row(mlflow_client, run, Path(tmp)) for run in chosen]
    rows = [row for row, _ in read]
    outcomes = next((found for _, found in read if found is not None), None)
    if outcomes is not None and len({len(r.risk_groups) for r in rows if r.risk_groups}) > 1:
        outcomes = None  # rows on different test patients (cannot happen on one split): no risk groups on the page
        for row in rows:
            row.risk_groups = ""
    results = Results(_protocol(chosen[-1]), rows, baseline, source, outcomes)
    return Results.from_json(json.loads(results.to_text()))  # exactly as its results file will read back


def finished_runs(mlflow_client, experiment: str) -> list[StoredRun]:
    from mlflow.entities import ViewType

    found, token = [], None
    while True:
        page = mlflow_client.search_runs(
            [experiment],
            filter_string=f"tags.`{KIND_TAG}` = 'combination' and attributes.status = 'FINISHED'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            page_token=token,
        )
        for run in page:
            tags = run.data.tags
            if "bench.extractor" not in tags or "bench.model" not in tags:
                continue  # not a bench row (a run logged by hand into the experiment)
            key = RowKey.parse(tags["bench.extractor"], tags["bench.model"])
            found.append(
                StoredRun(run.info.run_id, run.info.run_name, run.info.start_time, key, dict(run.data.params),
                          dict(tags), dict(run.data.metrics))
            )  # fmt: skip
        token = page.token
        if not token:
            return found


def _one_cohort(runs: list[StoredRun], dataset: str, prefix: str | None) -> list[StoredRun]:
    """The runs of one content fingerprint; an error naming them when the experiment holds several."""
    counts = Counter(r.fingerprint for r in runs)
    if prefix:
        picked = [r for r in runs if r.fingerprint.startswith(prefix)]
        if not picked:
            listed = ", ".join(f[:16] for f in counts)
            raise UsageError(f"no run of {dataset!r} has data fingerprint {prefix!r}; the store holds {listed}")
        if len({r.fingerprint for r in picked}) > 1:
            raise UsageError(f"data fingerprint prefix {prefix!r} matches several cohorts of {dataset!r}; give more")
        return picked
    if len(counts) == 1:
        return runs
    latest = {f: max(r.started for r in runs if r.fingerprint == f) for f in counts}
    ordered = sorted(counts, key=lambda f: -latest[f])
    described = " and ".join(f"{f[:16]} ({counts[f]} runs, latest {_when(latest[f])})" for f in ordered[:2])
    more = f" and {len(counts) - 2} more" if len(counts) > 2 else ""
    raise UsageError(
        f"experiment {dataset!r} holds runs of {len(counts)} different cohorts under one name: data fingerprints "
        f"{described}{more}; refusing to mix them on one page: pass --fingerprint {ordered[0][:16]} for one, "
        "or give the other cohort its own name (the manifest's 'name')"
    )


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _protocol(run: StoredRun) -> Protocol:
    p = run.params
    try:
        policy = EvaluationPolicy(
            tuple(float(h) for h in p["policy.horizons"].split(",")), float(p["policy.tau"]), p["policy.time_unit"]
        )
        if "policy.derived" in p:
            policy = dataclasses.replace(policy, derived=True)
        if "policy.thresholds" in p:  # runs recorded before calibration have the defaults
            policy = policy.declared({
                "thresholds": p["policy.thresholds"].split(","),
                "table_thresholds": p["policy.table_thresholds"].split(","),
                "calibration_horizon": p.get("policy.calibration_horizon"),
            })  # fmt: skip
        fingerprint = run.fingerprint if run.fingerprint != UNKNOWN else ""
        return Protocol(
            p["dataset"], p.get("description", ""), int(p["n"]), int(p["events"]), policy,
            p["split"], json.loads(p["split_scheme"]), p["split_sha256"], fingerprint,
        )  # fmt: skip
    except (KeyError, ValueError) as exc:
        raise DataError(f"run {run.run_name!r} ({run.run_id}) lacks the protocol parameter {exc}; rerun it") from None


def _row(mlflow_client, run: StoredRun, tmp: Path) -> tuple[Row, Outcomes | None]:
    """A page row from a run's parameters and its metrics.json, bootstrap_replicates.csv and predictions.csv
    artifacts, and the outcomes its risk groups refer to (None for runs logged before risk groups were kept)."""
    folder = tmp / run.run_id
    folder.mkdir()
    try:
        details = json.loads(
            Path(mlflow_client.download_artifacts(run.run_id, "metrics.json", str(folder))).read_text()
        )
    except Exception as exc:  # noqa: BLE001 - a missing or unreadable artifact, whatever the store says
        raise DataError(f"run {run.run_name!r} ({run.run_id}) has no readable metrics.json artifact: {exc}") from None
    metrics = details["metrics"]
    replicates = None
    try:
        path = mlflow_client.download_artifacts(run.run_id, "bootstrap_replicates.csv", str(folder))
        replicates = pd.read_csv(io.StringIO(Path(path).read_text()))["c_index"].to_numpy(float)
    except Exception:  # noqa: BLE001 - B = 0: no replicates were logged
        replicates = None
    groups, outcomes = "", None
    try:
        path = mlflow_client.download_artifacts(run.run_id, "predictions.csv", str(folder))
        predictions = pd.read_csv(path, dtype={"sample_id": str, "patient_id": str})
        if "risk_group" in predictions.columns:
            groups, outcomes = risk_group_text(predictions), Outcomes(*outcomes_of(predictions))
    except Exception:  # noqa: BLE001 - no predictions: the page has no Kaplan-Meier figure of this row
        groups, outcomes = "", None
    warnings = int(run.metrics.get("numerical_warnings", 0) or 0)
    return Row(
        run.key,
        run.run_name,
        {m: {f: _float(s.get(f)) for f in METRIC_FIELDS} for m, s in metrics.items()},
        {m: s["reason"] for m, s in metrics.items() if s.get("reason")},
        int(run.params.get("bootstrap", 0)),
        int(run.params.get("seed", 0)),
        replicates,
        run.run_id,
        warnings,
        run.tags.get("bench.warnings", "").split("\n")[0] if warnings else "",
        groups,
        earlier_reads_truth(run.key),  # runs in a store do not record it
        degenerate=details.get("fold_degenerate") or None,
    ), outcomes


def _float(value) -> float:
    return float("nan") if value is None else float(value)
