"""Results per test group (a site) of a split by group: each row's C-index and O/E on each site's own patients.

For a split made with ``bench splits make --by COLUMN`` (leave one group out, or ``--test-groups``), every test
patient belongs to one group; a row's C-index and O/E at the policy's calibration horizon are computed on each
group's out-of-fold predictions, with a percentile 95 % CI from B bootstrap resamples of that group's patients
(replicates drawn from the seed, the split's hash and the group, the same for every row: paired). The page
shows them per site, their range, and with three sites or more the DerSimonian-Laird random-effects summary
with I² (``bench.stats.meta``), each site weighted by its bootstrap variance.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import numpy as np

from bench.report.cells import with_ci
from bench.stats.bootstrap import bootstrap_indices, counts_from_indices
from bench.stats.calibration import oe_key
from bench.stats.engine import concordance
from bench.stats.meta import random_effects
from bench.stats.weighted_fits import kaplan_meier_at

if TYPE_CHECKING:
    import pandas as pd

    from bench.report.results import Results

GROUP_STREAM = 10_000  # bootstrap streams of the groups: far from any fold's


def is_group_split(scheme: dict) -> bool:
    return scheme.get("type") == "group"


def group_summaries(predictions: pd.DataFrame, groups: dict[str, str], scheme: dict, split_sha: str, seed: int,
                    bootstrap: int, horizon: float) -> dict[str, dict]:  # fmt: skip
    """Each test group's patients, events, C-index and O/E at ``horizon`` (mean, ci_low, ci_high, se: the
    bootstrap SD), from a row's out-of-fold ``predictions`` (first repeat) and each sample's group."""
    first = predictions[predictions["repeat"] == 0]
    of = first["sample_id"].astype(str).map(groups)
    out = {}
    for k, group in enumerate(scheme["test_groups"]):
        part = first[(of == group).to_numpy()]
        time, event = part["time"].to_numpy(float), part["event"].to_numpy(bool)
        risk = part["risk"].to_numpy(float)
        column = f"survival_at_{horizon:g}"
        predicted = 1.0 - part[column].to_numpy(float) if column in part else np.full(len(part), np.nan)
        counts = np.ones((1, len(part)))
        if bootstrap:
            indices = bootstrap_indices(seed, split_sha, 0, GROUP_STREAM + k, len(part), bootstrap)
            counts = np.vstack([counts, counts_from_indices(indices, len(part))])
        c = concordance(event, time, risk, counts)
        with np.errstate(invalid="ignore", divide="ignore"):
            oe = (1.0 - kaplan_meier_at(time, event, counts, horizon)) / ((counts @ predicted) / counts.sum(axis=1))
        out[group] = {"n": int(len(part)), "events": int(event.sum()), "c_index": _summary(c), oe_key(horizon): _summary(oe)}
    return out


def outcome_summaries(predictions: pd.DataFrame, outcome) -> dict[str, dict] | None:
    """``group_summaries`` of one row's predictions in a run (a ``RunOutcome``); None unless its split is by group."""
    scheme = outcome.split.scheme
    if not is_group_split(scheme):
        return None
    groups = dict(zip(map(str, outcome.cohort.sample_ids), map(str, outcome.cohort.groups[scheme["by"]])))
    return group_summaries(predictions, groups, scheme, outcome.split.sha256, outcome.request.seed,
                           outcome.request.bootstrap, outcome.cohort.policy.calibration_at)  # fmt: skip


def _summary(values: np.ndarray) -> dict[str, float]:
    point, replicates = float(values[0]), values[1:][np.isfinite(values[1:])]
    if replicates.size < 2 or not math.isfinite(point):
        return {"mean": point, "ci_low": math.nan, "ci_high": math.nan, "se": math.nan}
    low, high = np.percentile(replicates, [2.5, 97.5])
    return {"mean": point, "ci_low": float(low), "ci_high": float(high), "se": float(replicates.std(ddof=1))}


def metric_names(by: str, group: str) -> dict[str, str]:
    """MLflow metric names of a group's C-index (MLflow allows no '@' or '=': ``c_index/site/A``)."""
    safe = re.sub(r"[^\w.\- ]", "_", group)
    return {"c_index": f"c_index/{by}/{safe}"}


def per_group_lines(results: Results, rows: list) -> list[str]:
    """The page's section for a split by group: C-index and O/E per test group, range and random effects."""
    scheme = results.protocol.split_scheme
    if not is_group_split(scheme) or not any(row.per_group for row in rows):
        return []
    by, groups = scheme["by"], scheme["test_groups"]
    h = results.protocol.policy.calibration_at
    first = next(row.per_group for row in rows if row.per_group)
    sizes = ", ".join(f"{g} {first[g]['n']} ({first[g]['events']} events)" for g in groups)
    lines = ["", f"## Results per test {by}", "",
             f"Each row's C-index on each {by}'s own test patients ({sizes}), with the bootstrap 95 % CI of that "
             f"{by}; the range across {by}s" + (", and the random-effects summary (DerSimonian-Laird, each "
             f"{by} weighted by its bootstrap variance) with I², the share of the spread that is not sampling error"
             if len(groups) >= 3 else "") + ".", ""]  # fmt: skip
    extra = ["range", "random effects [95 % CI]", "I²"] if len(groups) >= 3 else ["range"]
    lines += ["| rank | extractor | model | " + " | ".join([f"{by} {g}" for g in groups] + extra) + " |",
              "|---:|---|---|" + "---|" * (len(groups) + len(extra))]  # fmt: skip
    for rank, row in enumerate(rows, 1):
        cells = [with_ci(row.per_group[g]["c_index"]) if row.per_group else "n/a" for g in groups]
        lines.append(f"| {rank} | {row.key.features_label} | {row.key.model_label} | " + " | ".join(
            cells + _spread(row, groups)) + " |")  # fmt: skip
    lines += ["", f"O/E at {h:g} {results.protocol.policy.time_unit} per {by} (1: as many events as predicted):", "",
              "| rank | extractor | model | " + " | ".join(f"{by} {g}" for g in groups) + " |",
              "|---:|---|---|" + "---|" * len(groups)]  # fmt: skip
    for rank, row in enumerate(rows, 1):
        cells = [with_ci(row.per_group[g].get(oe_key(h), {})) if row.per_group else "n/a" for g in groups]
        lines.append(f"| {rank} | {row.key.features_label} | {row.key.model_label} | " + " | ".join(cells) + " |")
    return lines


def _spread(row, groups: list[str]) -> list[str]:
    if not row.per_group:
        return ["n/a"] * (3 if len(groups) >= 3 else 1)
    values = [row.per_group[g]["c_index"]["mean"] for g in groups]
    spread = [f"{min(values):.3f} to {max(values):.3f}" if all(map(math.isfinite, values)) else "n/a"]
    if len(groups) < 3:
        return spread
    variances = [row.per_group[g]["c_index"]["se"] ** 2 for g in groups]
    try:
        summary = random_effects(values, variances)
    except ValueError:
        return spread + ["n/a", "n/a"]
    return spread + [f"{summary.estimate:.3f} [{summary.ci_low:.3f}, {summary.ci_high:.3f}]", f"{summary.i2:.0%}"]
