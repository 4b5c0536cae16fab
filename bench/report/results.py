"""Results as data: the source every leaderboard page is rendered from.

``bench run --results FILE`` and ``bench grid`` write the rows they evaluated
(metrics, C-index bootstrap replicates, run names) together with the protocol
they were computed under; ``bench leaderboard`` renders markdown from such a
file only, so ``--check`` verifies a committed page without the MLflow store or
the cohort's images. MLflow receives the same numbers as a sink and a view.

Format 2 (issue 25) adds the policy's decision-curve thresholds, the two the page's calibration table shows
and its horizon; its rows carry the calibration and net-benefit metrics (``bench.stats.calibration``). Format-1
files are read as they were written: the policy's defaults, and rows without those metrics. A row for which a grid
config declared a paper's value carries it as ``published`` (issue 26); rows without one have no such key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.data.cohort import EvaluationPolicy
from bench.errors import InputError
from bench.plugins.labels import Baseline, RowKey
from bench.report.files import write_atomic
from bench.report.risk_groups import outcomes_of, risk_group_text

if TYPE_CHECKING:
    from bench.data.cohort import Cohort
    from bench.protocol.runner import RunOutcome
    from bench.protocol.splits import Split

FORMAT_VERSION = 2
FORMAT = f"prognosis-bench-results/{FORMAT_VERSION}"
READABLE = {f"prognosis-bench-results/{version}": version for version in (1, FORMAT_VERSION)}
REPLICATE_DECIMALS = 6  # enough for 3-decimal CIs; keeps the committed file small
SIGNIFICANT_DIGITS = 12  # of every stored metric (see _number)
METRIC_FIELDS = ("mean", "se", "ci_low", "ci_high")
# What files written before they recorded an endpoint and whether a row reads the truth are read as: every
# figure they made was labelled progression-free survival, and the oracle was the only extractor reading the truth.
EARLIER_ENDPOINT = "progression-free survival"
EARLIER_TRUTH_READER = "oracle"


@dataclass(frozen=True)
class Protocol:
    """What a page states about how its rows were computed: cohort, evaluation policy and split."""

    dataset: str
    description: str
    n: int
    n_events: int
    policy: EvaluationPolicy
    split_name: str
    split_scheme: dict
    split_sha256: str
    fingerprint: str = ""  # the cohort's content fingerprint (``Cohort.content_fingerprint``); "" in older files

    @classmethod
    def of(cls, cohort: Cohort, split: Split) -> Protocol:
        return cls(
            cohort.name, cohort.description, int(cohort.n), int(cohort.n_events), cohort.policy,
            split.name, split.scheme, split.sha256, cohort.content_fingerprint(),
        )  # fmt: skip


@dataclass
class Row:
    key: RowKey
    run_name: str
    metrics: dict[str, dict[str, float]]  # metric -> mean/se/ci_low/ci_high
    reasons: dict[str, str] = field(default_factory=dict)  # metric -> why it is n/a
    bootstrap: int = 0
    seed: int = 0
    replicates: np.ndarray | None = None  # bootstrap fold means of the C-index, shared across entries
    run_id: str = ""  # MLflow run id (not stored: it differs between stores)
    warnings: int = 0  # numerical warnings while the learner fitted and predicted (stored only when > 0)
    first_warning: str = ""  # the first of them, as text
    # Each test patient's predicted risk tertile (0-2, cut points from the training folds), first repeat, in the
    # order of ``Results.outcomes``; "" in files made before risk groups were kept
    risk_groups: str = ""
    reads_truth: bool = False  # an extractor of its features reads the simulated truth (``Extractor.reads_truth``)
    # What a paper published for this row (``c_index``, optional ``source``), as a grid config declares it
    # (``bench.protocol.published``); None: nothing (and no key in the file, as in files made before)
    published: dict[str, Any] | None = None
    # A split by group: each test group's n, events, C-index and O/E (``bench.report.per_group``); else None
    per_group: dict[str, dict] | None = None
    # Folds whose test patients all got one risk -> the learner's reason ("" unknown) (``bench.protocol.degenerate``);
    # None: none (and no key in the file, as in files made before)
    degenerate: dict[str, str] | None = None


@dataclass(frozen=True)
class Outcomes:
    """Time and event of the test patients the rows' risk groups refer to (first repeat, sample-id order)."""

    time: np.ndarray
    event: np.ndarray


@dataclass
class Results:
    protocol: Protocol
    rows: list[Row]
    baseline: Baseline
    source: str  # the command that produced them, quoted on the page
    outcomes: Outcomes | None = None  # what the rows' risk groups are drawn against (Kaplan-Meier figure)
    provenance: dict | None = None  # the versions that computed the rows (``bench.report.provenance``)
    # The format it was read from: a format-1 file's rows were computed before calibration and net benefit
    format: int = FORMAT_VERSION

    @classmethod
    def from_outcome(cls, outcome: RunOutcome, baseline: Baseline, source: str,
                     published: dict[RowKey, dict[str, Any]] | None = None) -> Results:  # fmt: skip
        """The results of one run, exactly as they will read back from their file (with a paper's values, if any)."""
        published = published or {}
        rows = [
            Row(
                r.key,
                r.run_name,
                {m: {f: getattr(s, f) for f in METRIC_FIELDS} for m, s in r.evaluation.metrics.items()},
                {m: s.reason for m, s in r.evaluation.metrics.items() if s.reason},
                outcome.request.bootstrap,
                outcome.request.seed,
                r.evaluation.replicates["c_index"].to_numpy() if not r.evaluation.replicates.empty else None,
                r.run_id,
                r.evaluation.warnings,
                r.evaluation.warning_messages[0] if r.evaluation.warning_messages else "",
                risk_group_text(r.evaluation.predictions),
                any(part.cls.reads_truth for part in r.extractor.parts),
                published.get(r.key),
                degenerate=dict(r.evaluation.fold_degenerate) or None,
            )
            for r in outcome.results
        ]
        _add_per_group(rows, outcome)
        outcomes = Outcomes(*outcomes_of(outcome.results[0].evaluation.predictions)) if outcome.results else None
        from bench.report.provenance import provenance

        made_with = provenance([r.key for r in outcome.results], outcome.weights)
        fresh = cls(Protocol.of(outcome.cohort, outcome.split), rows, baseline, source, outcomes, made_with)
        read_back = cls.from_json(json.loads(fresh.to_text()))
        for row, original in zip(read_back.rows, sorted(rows, key=lambda r: r.key.sort_key())):
            row.run_id = original.run_id
        return read_back

    def with_baseline(self, baseline: Baseline) -> Results:
        return replace(self, baseline=baseline)

    def find(self, key: RowKey) -> Row | None:
        return next((r for r in self.rows if r.key == key), None)

    def to_text(self) -> str:
        """The file's content: rows sorted, numbers as JSON, so the same results give the same bytes."""
        p = self.protocol
        body = {
            "format": FORMAT,
            "source": self.source,
            "protocol": {
                "dataset": p.dataset,
                "description": p.description,
                "n": p.n,
                "events": p.n_events,
                "policy": {
                    "horizons": list(p.policy.horizons),
                    "tau": p.policy.tau,
                    "time_unit": p.policy.time_unit,
                    "ibs_points": p.policy.ibs_points,
                    "endpoint": p.policy.endpoint,
                    "thresholds": list(p.policy.thresholds),
                    "table_thresholds": list(p.policy.table_thresholds),
                    "calibration_horizon": p.policy.calibration_horizon,
                    **({"derived": True} if p.policy.derived else {}),
                },
                "split": {"name": p.split_name, "scheme": p.split_scheme, "sha256": p.split_sha256},
                **({"fingerprint": p.fingerprint} if p.fingerprint else {}),
            },
            "baseline": self.baseline.as_json(),
            "rows": [_row_json(r) for r in sorted(self.rows, key=lambda r: r.key.sort_key())],
        }
        if self.provenance:
            body["provenance"] = self.provenance
        if self.outcomes is not None and any(r.risk_groups for r in self.rows):
            body["outcomes"] = {
                "time": [_number(t) for t in self.outcomes.time],
                "event": "".join("1" if e else "0" for e in self.outcomes.event),
            }
        return json.dumps(body, indent=1, sort_keys=True, allow_nan=True) + "\n"

    @classmethod
    def from_json(cls, body: dict) -> Results:
        p = body["protocol"]
        policy = _policy_from_json(p["policy"])
        protocol = Protocol(
            p["dataset"], p["description"], p["n"], p["events"], policy,
            p["split"]["name"], p["split"]["scheme"], p["split"]["sha256"], str(p.get("fingerprint", "")),
        )  # fmt: skip
        rows = [_row_from_json(r) for r in body["rows"]]
        outcomes = None
        if "outcomes" in body:
            time = np.array([_float(t) for t in body["outcomes"]["time"]])
            outcomes = Outcomes(time, np.array([c == "1" for c in body["outcomes"]["event"]], dtype=bool))
            for row in rows:
                if row.risk_groups and len(row.risk_groups) != len(time):
                    raise ValueError(f"risk_groups of row {row.key} ({len(row.risk_groups)} patients, not {len(time)})")
        baseline = Baseline.from_json(body["baseline"])
        version = READABLE.get(body.get("format", FORMAT), FORMAT_VERSION)
        return cls(protocol, rows, baseline, body["source"], outcomes, body.get("provenance"), version)


def _policy_from_json(body: dict) -> EvaluationPolicy:
    """The evaluation policy of a results file; what a format-1 file has no key for is the policy's default."""
    declared = {name: tuple(body[name]) for name in ("thresholds", "table_thresholds") if name in body}
    horizon = body.get("calibration_horizon")
    return EvaluationPolicy(
        tuple(body["horizons"]), body["tau"], body["time_unit"], body["ibs_points"],
        str(body.get("endpoint", EARLIER_ENDPOINT)), calibration_horizon=None if horizon is None else float(horizon),
        derived=bool(body.get("derived", False)), **declared,
    )  # fmt: skip


def save_results(path: Path, results: Results) -> Path:
    """Write atomically: an interrupted write leaves the previous file (or none), never half a file."""
    return write_atomic(path, results.to_text())


def load_results(path: Path) -> Results:
    try:
        body = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(
            f"no results file {path}; write one with `bench run ... --results {path}` or `bench grid --config ...`"
        ) from None
    except (IsADirectoryError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not a results file ({exc}); regenerate it with bench run or bench grid") from None
    if not isinstance(body, dict) or body.get("format") not in tuple(READABLE):  # a tuple: any JSON value compares
        found = body.get("format") if isinstance(body, dict) else None
        raise InputError(f"{path} has format {found!r}, expected {' or '.join(map(repr, READABLE))}; regenerate it")
    try:
        return Results.from_json(body)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path} is not a complete results file (bad or missing {exc}); regenerate it") from None


def _row_json(row: Row) -> dict:
    # Rows without warnings carry no key for them: results files written before they were counted stay as they are.
    warned = {"warnings": row.warnings, "first_warning": row.first_warning} if row.warnings else {}
    return {
        "extractor": row.key.features_label,
        "model": row.key.model_label,
        "run_name": row.run_name,
        "metrics": {m: {f: _number(v) for f, v in sorted(fields.items())} for m, fields in sorted(row.metrics.items())},
        "reasons": dict(sorted(row.reasons.items())),
        "bootstrap": row.bootstrap,
        "seed": row.seed,
        "c_index_replicates": None
        if row.replicates is None
        else [_number(round(float(v), REPLICATE_DECIMALS)) for v in row.replicates],
        **warned,
        **({"degenerate": dict(sorted(row.degenerate.items()))} if row.degenerate else {}),
        **({"risk_groups": row.risk_groups} if row.risk_groups else {}),
        "reads_truth": row.reads_truth,
        **({"published": dict(sorted(row.published.items()))} if row.published else {}),
        **({"per_group": {g: {k: v if k in ("n", "events") else {f: _number(x) for f, x in sorted(v.items())}
                              for k, v in sorted(s.items())} for g, s in sorted(row.per_group.items())}}
           if row.per_group else {}),
    }


def _row_from_json(body: dict) -> Row:
    metrics = {m: {f: _float(v) for f, v in fields.items()} for m, fields in body["metrics"].items()}
    replicates = body["c_index_replicates"]
    key = RowKey.parse(body["extractor"], body["model"])
    reads_truth = body.get("reads_truth")
    if reads_truth is None:  # a file written before rows said so
        reads_truth = earlier_reads_truth(key)
    return Row(
        key,
        body["run_name"],
        metrics,
        body["reasons"],
        body["bootstrap"],
        body["seed"],
        None if replicates is None else np.array([_float(v) for v in replicates]),
        warnings=int(body.get("warnings", 0)),
        first_warning=str(body.get("first_warning", "")),
        degenerate=body.get("degenerate") or None,
        risk_groups=str(body.get("risk_groups", "")),
        reads_truth=bool(reads_truth),
        published=body.get("published"),
        per_group=_per_group_from_json(body.get("per_group")),
    )


def _per_group_from_json(body: dict | None) -> dict[str, dict] | None:
    if body is None:
        return None
    return {g: {k: v if k in ("n", "events") else {f: _float(x) for f, x in v.items()} for k, v in s.items()}
            for g, s in body.items()}  # fmt: skip


def _add_per_group(rows: list[Row], outcome: RunOutcome) -> None:
    """Each row's results per test group, for a split by group (``bench.report.per_group``)."""
    from bench.report.per_group import outcome_summaries

    for row, result in zip(rows, outcome.results):
        row.per_group = outcome_summaries(result.evaluation.predictions, outcome)


def earlier_reads_truth(key: RowKey) -> bool:
    """Whether a row recorded before rows said so read the truth: its features include the oracle."""
    return any(part.name == EARLIER_TRUTH_READER for part in key.features)


def _number(value: float) -> float | None:
    """A metric as stored: 12 significant digits, null for n/a (JSON has no NaN).

    The last bits of a float sum depend on how BLAS splits it (memory alignment, thread count);
    12 digits keep every number far beyond what a page shows while that noise never reaches the file.
    """
    return float(f"{float(value):.{SIGNIFICANT_DIGITS}g}") if value is not None and math.isfinite(value) else None


def _float(value: float | None) -> float:
    return math.nan if value is None else float(value)
