"""The page's second table: calibration and clinical utility of every row at one horizon (issue 25).

At the policy's ``calibration_at`` horizon h, in the main table's row order: O/E, calibration slope and ICI at h,
D-calibration's p (over all times), and at the two ``table_thresholds`` p1 and p2 the net benefit of treating the
patients whose predicted risk at h is at least p, with its difference to treating everyone on the same bootstrap
replicate (``bench.stats.calibration`` computes them). Under the table: treat-all's net benefit (the same for
every row), treat-none's (0 by definition), how to read them, the decision curves (``decision_curves``, drawn
beside the page by ``bench.report.page``) and the table's n/a notes.

Results computed before these metrics get no table, and one line says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.data.cohort import EvaluationPolicy
from bench.report.cells import signed, value, with_ci
from bench.report.results import Results, Row
from bench.stats.calibration import DCAL_P, ici_key, nb_all_key, nb_gain_key, nb_key, oe_key, slope_key

DECISION_ROWS = 3  # the best rows whose features read no truth that the decision curves show (and the baseline)


def table_metrics(policy: EvaluationPolicy) -> list[str]:
    """The metrics of the table's cells, in column order."""
    h, (p1, p2) = policy.calibration_at, policy.table_thresholds
    return [oe_key(h), slope_key(h), ici_key(h), DCAL_P,
            nb_key(h, p1), nb_gain_key(h, p1), nb_key(h, p2), nb_gain_key(h, p2)]  # fmt: skip


def lacking(results: Results) -> list[Row]:
    """The rows that do not carry what the table and its treat-all line show (computed before they were)."""
    policy = results.protocol.policy
    needed = [*table_metrics(policy), *(nb_all_key(policy.calibration_at, p) for p in policy.table_thresholds)]
    return [row for row in results.rows if not all(name in row.metrics for name in needed)]


def calibration_lines(results: Results, rows: list[Row], figure: str | None = None) -> list[str]:
    """The page's calibration section for ``rows`` (the main table's order), ``figure`` the decision curves' file;
    the line saying why it is absent when the rows lack its metrics."""
    if not rows:
        return []
    missing = lacking(results)
    if missing:
        if results.format < 2:
            return ["", "Calibration and clinical utility: not in this results file (format 1, written before they "
                    "were computed); regenerate it with the command above."]  # fmt: skip
        named = ", ".join(str(row.key) for row in missing[:3]) + (", ..." if len(missing) > 3 else "")
        return ["", f"Calibration and clinical utility: not in these results for {len(missing)} of {len(rows)} "
                f"rows ({named}: computed before they were); regenerate them with the command above."]  # fmt: skip
    policy = results.protocol.policy
    h, unit, (p1, p2) = policy.calibration_at, policy.time_unit, policy.table_thresholds
    lines = [
        "", f"## Calibration and clinical utility at {h:g} {unit}", "",
        "| rank | extractor | model | O/E [95 % CI] | slope [95 % CI] | ICI [95 % CI] | D-cal p | "
        f"net benefit at p = {p1:g} [95 % CI] | vs treat-all at p = {p1:g} [95 % CI] | "
        f"net benefit at p = {p2:g} [95 % CI] | vs treat-all at p = {p2:g} [95 % CI] |",
        "|---:|---|---|---|---|---|---:|---|---|---|---|",
    ]  # fmt: skip
    names, notes = table_metrics(policy), []
    for rank, row in enumerate(rows, start=1):
        oe, slope, ici, dcal, nb1, gain1, nb2, gain2 = (row.metrics[name] for name in names)
        cells = [str(rank), row.key.features_label, row.key.model_label, with_ci(oe), with_ci(slope), with_ci(ici),
                 value(dcal), with_ci(nb1), with_ci(gain1, signed), with_ci(nb2), with_ci(gain2, signed)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
        notes += [f"- {row.key}, {name}: n/a because {row.reasons[name]}" for name in names if name in row.reasons]
    everyone = [with_ci(rows[0].metrics[nb_all_key(h, p)]) for p in (p1, p2)]
    lines += [
        "",
        f"Treat-all (everyone treated): net benefit {everyone[0]} at p = {p1:g} and {everyone[1]} at p = {p2:g}, "
        "the same for every row; treat-none: 0. "
        f"An O/E and a slope of 1 mean calibrated risks at {h:g} {unit} (O/E above 1: more events than predicted; "
        "slope below 1: predictions too extreme); a smaller ICI is closer to the observed risk (its bootstrap "
        "interval often lies above it: a resample repeats patients, which the smoother takes for structure); a "
        "small D-cal p questions the predicted survival curves over all times; a positive `vs treat-all` means the "
        "model beats treating everyone at that threshold probability p.",
    ]  # fmt: skip
    if figure:
        lines += ["", f"Decision curves at {h:g} {unit} of the best rows whose features read no simulated truth and "
                  "of the baseline: net benefit against the threshold probability p with 95 % bands, treat-all "
                  "and treat-none.", "",
                  f"![Decision curves at {h:g} {unit}]({figure})"]  # fmt: skip
    if notes:
        lines += ["", "Calibration and clinical utility shown as n/a:", "", *notes]
    return lines


@dataclass(frozen=True)
class DecisionCurves:
    """Net benefit at h over the policy's thresholds: one row of ``mean``, ``low``, ``high`` per label."""

    horizon: float
    thresholds: np.ndarray
    labels: list[str]
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    treat_all: np.ndarray


def decision_rows(results: Results, rows: list[Row]) -> list[Row]:
    """The rows the decision curves show: the best ``DECISION_ROWS`` of ``rows`` (rank order) whose features read
    no simulated truth, then the best one's baseline entry when it is not among them."""
    shown = [row for row in rows if not row.reads_truth][:DECISION_ROWS]
    base = results.find(results.baseline.key_for(shown[0].key)) if shown else None
    return shown + ([base] if base is not None and base not in shown else [])


def decision_curves(results: Results, rows: list[Row]) -> DecisionCurves | None:
    """The page's decision curves (``decision_rows``); None when the rows lack the metrics (no table either) or
    every row reads the truth."""
    shown = decision_rows(results, rows) if not lacking(results) else []
    if not shown:
        return None
    policy = results.protocol.policy
    h, thresholds = policy.calibration_at, policy.thresholds

    def curve(row: Row, key, field: str) -> list[float]:
        return [row.metrics.get(key(h, p), {}).get(field, np.nan) for p in thresholds]

    mean, low, high = (np.array([curve(row, nb_key, f) for row in shown]) for f in ("mean", "ci_low", "ci_high"))
    is_baseline = [results.find(results.baseline.key_for(row.key)) is row for row in shown]  # as the main table says
    labels = [f"{row.key} (baseline)" if baseline else str(row.key) for row, baseline in zip(shown, is_baseline)]
    return DecisionCurves(h, np.asarray(thresholds, dtype=float), labels, mean, low, high,
                          np.array(curve(shown[0], nb_all_key, "mean")))  # fmt: skip
