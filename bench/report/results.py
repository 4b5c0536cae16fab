"""A leaderboard's results as data: the committed twin of a generated ``leaderboards/<dataset>.md``.

``bench grid`` writes the rows it evaluated (metrics, C-index bootstrap replicates,
run names) together with the protocol they were computed under, and renders the
markdown from this file, so ``bench leaderboard --from FILE --check`` can verify the
committed page without the MLflow store or the cohort's images.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.cohort import EvaluationPolicy
from bench.errors import BenchError
from bench.report.leaderboard import Baseline, Row

FORMAT = "prognosis-bench-results/1"
REPLICATE_DECIMALS = 6  # enough for 3-decimal CIs; keeps the committed file small


@dataclass(frozen=True)
class ProtocolInfo:
    """The cohort facts a leaderboard page states (what ``render`` reads of a Cohort)."""

    name: str
    description: str
    n: int
    n_events: int
    policy: EvaluationPolicy


@dataclass(frozen=True)
class SplitInfo:
    """The split facts a leaderboard page states (what ``render`` reads of a Split)."""

    name: str
    scheme: dict
    sha256: str


@dataclass
class Results:
    protocol: ProtocolInfo
    split: SplitInfo
    rows: list[Row]
    baseline: Baseline
    source: str  # the command that produced them, quoted on the page


def save_results(path: Path, cohort: Any, split: Any, rows: list[Row], baseline: Baseline, source: str) -> None:
    """Write the results atomically (rows sorted, so the same results give the same bytes)."""
    policy = cohort.policy
    body = {
        "format": FORMAT,
        "source": source,
        "protocol": {
            "dataset": cohort.name,
            "description": cohort.description,
            "n": int(cohort.n),
            "events": int(cohort.n_events),
            "policy": {
                "horizons": list(policy.horizons),
                "tau": policy.tau,
                "time_unit": policy.time_unit,
                "ibs_points": policy.ibs_points,
            },
            "split": {"name": split.name, "scheme": split.scheme, "sha256": split.sha256},
        },
        "baseline": {"extractor": baseline.extractor, "model": baseline.model},
        "rows": [_row_json(r) for r in sorted(rows, key=lambda r: (r.extractor, r.model))],
    }
    text = json.dumps(body, indent=1, sort_keys=True, allow_nan=True) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def load_results(path: Path) -> Results:
    try:
        body = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BenchError(f"no results file {path}; run the grid that writes it (bench grid --config ...)") from None
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path} is not a results file ({exc}); regenerate it with bench grid") from None
    if body.get("format") != FORMAT:
        raise BenchError(f"{path} has format {body.get('format')!r}, expected {FORMAT!r}; regenerate it")
    p = body["protocol"]
    policy = EvaluationPolicy(
        tuple(p["policy"]["horizons"]), p["policy"]["tau"], p["policy"]["time_unit"], p["policy"]["ibs_points"]
    )
    protocol = ProtocolInfo(p["dataset"], p["description"], p["n"], p["events"], policy)
    split = SplitInfo(p["split"]["name"], p["split"]["scheme"], p["split"]["sha256"])
    rows = [_row_from_json(r) for r in body["rows"]]
    return Results(protocol, split, rows, Baseline(**body["baseline"]), body["source"])


def rounded(rows: list[Row]) -> list[Row]:
    """The rows as they will read back from a results file (replicates rounded)."""
    return [_row_from_json(json.loads(json.dumps(_row_json(r)))) for r in rows]


def _row_json(row: Row) -> dict:
    return {
        "extractor": row.extractor,
        "model": row.model,
        "run_name": row.run_name,
        "metrics": {m: {f: _number(v) for f, v in sorted(fields.items())} for m, fields in sorted(row.metrics.items())},
        "reasons": dict(sorted(row.reasons.items())),
        "bootstrap": row.bootstrap,
        "seed": row.seed,
        "c_index_replicates": None
        if row.replicates is None
        else [_number(round(float(v), REPLICATE_DECIMALS)) for v in row.replicates],
    }


def _row_from_json(body: dict) -> Row:
    metrics = {m: {f: _float(v) for f, v in fields.items()} for m, fields in body["metrics"].items()}
    replicates = body["c_index_replicates"]
    return Row(
        body["extractor"],
        body["model"],
        body["run_name"],
        "",
        metrics,
        body["reasons"],
        body["bootstrap"],
        body["seed"],
        None if replicates is None else np.array([_float(v) for v in replicates]),
    )


def _number(value: float) -> float | None:
    """JSON has no NaN: n/a values are stored as null."""
    return float(value) if value is not None and math.isfinite(value) else None


def _float(value: float | None) -> float:
    return math.nan if value is None else float(value)
