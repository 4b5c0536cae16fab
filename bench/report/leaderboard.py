"""Render the markdown leaderboard of a dataset from its MLflow runs.

The protocol is written above the table; rows are the latest finished run of
each combination on the chosen split, ranked by C-index. Nothing in the output
depends on when or where it was rendered, so the same results give the same bytes.
"""

from __future__ import annotations

import difflib
import io
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.cohort import Cohort
from bench.errors import BenchError
from bench.stats.engine import auc_key
from bench.stats.bootstrap import PairedDifference, paired_difference
from bench.report.tracking import KIND_TAG, client, experiment_id
from bench.protocol.splits import Split

METRIC_FIELDS = ("mean", "se", "ci_low", "ci_high")


@dataclass
class Row:
    extractor: str
    model: str
    run_name: str
    run_id: str
    metrics: dict[str, dict[str, float]]  # metric -> mean/se/ci_low/ci_high
    reasons: dict[str, str] = field(default_factory=dict)
    bootstrap: int = 0
    seed: int = 0
    replicates: np.ndarray | None = None  # bootstrap fold means of the C-index, shared across entries


@dataclass(frozen=True)
class Baseline:
    """The entry every row is compared with: this extractor with the row's model, or a fixed model."""

    extractor: str = "clinical"
    model: str | None = None

    def flags(self) -> str:
        """The command-line flags that select this baseline (empty for the default)."""
        out = "" if self.extractor == "clinical" else f" --baseline {self.extractor}"
        return out + (f" --baseline-model {self.model}" if self.model else "")

    def describe(self) -> str:
        return f"`{self.extractor}` with {'the same model' if self.model is None else f'`{self.model}`'}"

    def find(self, row: Row, rows: list[Row]) -> Row | None:
        model = self.model if self.model is not None else row.model
        return next((r for r in rows if r.extractor == self.extractor and r.model == model), None)


def rows_from_outcome(outcome) -> list[Row]:
    """Rows for the results of one ``bench run`` invocation (the terminal table)."""
    return [
        Row(
            r.extractor.label,
            r.model_label,
            r.run_name,
            r.run_id,
            {m: {f: getattr(s, f) for f in METRIC_FIELDS} for m, s in r.evaluation.metrics.items()},
            {m: s.reason for m, s in r.evaluation.metrics.items() if s.reason},
            outcome.request.bootstrap,
            outcome.request.seed,
            r.evaluation.replicates["c_index"].to_numpy() if not r.evaluation.replicates.empty else None,
        )
        for r in outcome.results
    ]


def rows_from_mlflow(tracking_uri: str | None, dataset: str, split: Split) -> list[Row]:
    """The latest finished child run of each combination on ``split``."""
    mlflow_client = client(tracking_uri)
    exp = experiment_id(mlflow_client, dataset, create=False)
    if exp is None:
        raise BenchError(
            f"no MLflow experiment {dataset!r} in {mlflow_client.tracking_uri}; "
            f"run `bench run --dataset {dataset}` first"
        )
    runs = mlflow_client.search_runs(
        [exp],
        filter_string=f"tags.`{KIND_TAG}` = 'combination' and params.split_sha256 = '{split.sha256}' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=50_000,
    )
    latest: dict[tuple[str, str], Row] = {}
    for run in runs:
        tags, params, values = run.data.tags, run.data.params, run.data.metrics
        key = (tags["bench.extractor"], tags["bench.model"])
        if key in latest:
            continue
        metrics = {}
        for name in {k for k in values if not k.endswith(("_se", "_ci_low", "_ci_high", "_fold"))}:
            metrics[name] = {f: values.get(name if f == "mean" else f"{name}_{f}", math.nan) for f in METRIC_FIELDS}
        reasons = {k[len("bench.reason.") :]: v for k, v in tags.items() if k.startswith("bench.reason.")}
        latest[key] = Row(
            key[0],
            key[1],
            run.info.run_name,
            run.info.run_id,
            metrics,
            reasons,
            int(params.get("bootstrap", 0)),
            int(params.get("seed", 0)),
            _replicates(mlflow_client, run.info.run_id) if int(params.get("bootstrap", 0)) else None,
        )
    return list(latest.values())


def _replicates(mlflow_client, run_id: str) -> np.ndarray | None:
    """The C-index replicates a run logged, or None for a run without them."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow_client.download_artifacts(run_id, "bootstrap_replicates.csv", tmp)
        except Exception:  # MLflow raises various errors for a missing artifact
            return None
        return pd.read_csv(io.StringIO(Path(path).read_text()))["c_index"].to_numpy()


def ranked(rows: list[Row]) -> list[Row]:
    def key(row: Row):
        c = row.metrics.get("c_index", {}).get("mean", math.nan)
        return (0 if math.isfinite(c) else 1, -c if math.isfinite(c) else 0.0, row.extractor, row.model)

    return sorted(rows, key=key)


def render(
    cohort: Cohort, split: Split, rows: list[Row], baseline: Baseline = Baseline(), source: str | None = None
) -> str:
    """The whole leaderboard page as markdown; ``source`` is the command that regenerates it."""
    source = source or f"bench leaderboard --dataset {cohort.name}{baseline.flags()}"
    policy = cohort.policy
    unit = policy.time_unit
    horizons = ", ".join(f"{h:g}" for h in policy.horizons)
    lo, hi = policy.horizons[0], policy.horizons[-1]
    bootstraps = "/".join(str(b) for b in sorted({r.bootstrap for r in rows})) or "-"
    seeds = "/".join(str(s) for s in sorted({r.seed for r in rows})) or "-"
    lines = [
        f"# Leaderboard: {cohort.name}",
        "",
        f"<!-- generated by `{source}`; do not edit by hand -->",
        "",
        "| protocol | |",
        "|---|---|",
        f"| dataset | {cohort.name}: {cohort.description or 'user cohort'} |",
        f"| patients | n = {cohort.n}, events = {cohort.n_events} |",
        f"| split | `{split.name}`: {_describe_scheme(split.scheme)}; sha256 `{split.sha256[:16]}` |",
        f"| horizons | {horizons} {unit} (cumulative/dynamic AUC) |",
        f"| tau | {policy.tau:g} {unit} (Uno's C truncation) |",
        f"| IBS | integrated Brier score over [{lo:g}, {hi:g}] {unit}, {policy.ibs_points} points |",
        f"| bootstrap | B = {bootstraps} resamples of test patients within each fold, seed {seeds}; "
        "95 % percentile CI of the fold mean |",
        "| headline | mean over folds; +- is the standard error across folds (the paper's form) |",
        f"| baseline | {baseline.describe()}: C-index difference on the same bootstrap replicates (paired), "
        "95 % percentile CI and two-sided bootstrap p-value |",
        "",
    ]
    table, notes = table_lines(cohort, rows, baseline)
    lines += table
    lines += [
        "",
        "`run` is the MLflow run name, the same for the same configuration, split and seed; "
        "search for it in the MLflow UI (`attributes.run_name = '...'`).",
    ]
    if notes:
        lines += ["", "Metrics shown as n/a:", "", *notes]
    return "\n".join(lines) + "\n"


def table_lines(cohort: Cohort, rows: list[Row], baseline: Baseline = Baseline()) -> tuple[list[str], list[str]]:
    """The ranked result table and the notes on metrics that are n/a."""
    policy = cohort.policy
    lines: list[str] = []
    auc_headers = " | ".join(f"td-AUC@{h:g}" for h in policy.horizons)
    lines += [
        "| rank | extractor | model | C-index [95 % CI] | C-index +- SE | vs baseline [95 % CI] | p | "
        f"Uno's C [95 % CI] | {auc_headers} | IBS | run |",
        "|---:|---|---|---|---|---|---:|---|" + "---|" * len(policy.horizons) + "---|---|",
    ]
    notes: list[str] = []
    for rank, row in enumerate(ranked(rows), start=1):
        c = row.metrics.get("c_index", {})
        cells = [
            str(rank),
            row.extractor,
            row.model,
            _with_ci(c),
            _with_se(c),
            *_versus(row, baseline.find(row, rows)),
            _with_ci(row.metrics.get("uno_c", {})),
            *(_value(row.metrics.get(auc_key(h), {})) for h in policy.horizons),
            _value(row.metrics.get("ibs", {})),
            f"`{row.run_name}`",
        ]
        lines.append("| " + " | ".join(cells) + " |")
        for metric, reason in sorted(row.reasons.items()):
            notes.append(f"- {row.extractor} x {row.model}, {metric}: n/a because {reason}")
    if not rows:
        lines.append("| - | (no runs on this split yet) | | | | | | |" + " |" * len(policy.horizons) + " | |")
    return lines, notes


def write_or_check(text: str, path: Path, check: bool) -> str | None:
    """Write ``text`` to ``path``; with ``check``, return a unified diff when they differ instead."""
    if check:
        current = path.read_text() if path.exists() else ""
        if current == text:
            return None
        diff = difflib.unified_diff(
            current.splitlines(keepends=True), text.splitlines(keepends=True), str(path), "regenerated"
        )
        return "".join(diff) or f"{path} differs from the regenerated leaderboard\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return None


def _versus(row: Row, base: Row | None) -> tuple[str, str]:
    """The difference and p-value cells of ``row`` against its baseline entry."""
    if base is None:
        return "-", "-"
    if base is row:
        return "baseline", "-"
    if row.replicates is None or base.replicates is None or (row.bootstrap, row.seed) != (base.bootstrap, base.seed):
        return "n/a (no shared bootstrap)", "-"
    d: PairedDifference = paired_difference(
        row.metrics["c_index"]["mean"], base.metrics["c_index"]["mean"], row.replicates, base.replicates
    )
    if not math.isfinite(d.difference):
        return "n/a", "-"
    interval = f" [{_signed(d.ci_low)}, {_signed(d.ci_high)}]" if math.isfinite(d.ci_low) else ""
    return f"{_signed(d.difference)}{interval}", _fmt(d.p_value)


def _signed(x: float) -> str:
    return f"{x:+.3f}" if x != 0 else "0.000"


def _describe_scheme(scheme: dict) -> str:
    kind = scheme.get("type")
    if kind == "kfold":
        return (
            f"{scheme['folds']}-fold CV x {scheme['repeats']} repeat(s), stratified by event, "
            f"grouped by patient, seed {scheme['seed']}"
        )
    if kind == "holdout":
        return f"holdout, test fraction {scheme['test_fraction']:g}, stratified by event, seed {scheme['seed']}"
    return f"imported from {scheme.get('source', '?')} ({json.dumps(scheme, sort_keys=True)})"


def _fmt(x: float) -> str:
    return f"{x:.3f}" if x is not None and math.isfinite(x) else "n/a"


def _value(m: dict) -> str:
    return _fmt(m.get("mean", math.nan))


def _with_ci(m: dict) -> str:
    mean = m.get("mean", math.nan)
    if not math.isfinite(mean):
        return "n/a"
    low, high = m.get("ci_low", math.nan), m.get("ci_high", math.nan)
    return f"{_fmt(mean)} [{_fmt(low)}, {_fmt(high)}]" if math.isfinite(low) else _fmt(mean)


def _with_se(m: dict) -> str:
    mean, se = m.get("mean", math.nan), m.get("se", math.nan)
    if not math.isfinite(mean):
        return "n/a"
    return f"{_fmt(mean)} +- {_fmt(se)}" if math.isfinite(se) else _fmt(mean)
