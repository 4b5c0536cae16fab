"""The figures of one row, from its out-of-fold predictions, as PNG artifacts of its MLflow run.

- ``kaplan_meier.png``: Kaplan-Meier curves of the predicted risk tertiles (cut points from each fold's
  training risks), 95 % bands, numbers at risk and the log-rank p;
- ``auc.png``: cumulative/dynamic AUC(t) over the evaluation window with its bootstrap 95 % band;
- ``calibration.png``: predicted survival by decile against Kaplan-Meier observed, at each horizon, each panel
  titled with the row's calibration slope and ICI there (fold means, as the page's calibration table);
- ``brier.png``: the Brier score over time against the Kaplan-Meier reference;
- ``decision_curve.png``: the row's net benefit against the threshold probability at the page's calibration
  horizon (``EvaluationPolicy.calibration_at``) with its bootstrap 95 % band, treat-all and treat-none.

Under repeated cross-validation every patient is a test patient once per repeat: the Kaplan-Meier and
calibration figures use the first repeat, so each patient counts once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import math

import numpy as np

from bench.report.risk_groups import first_repeat
from bench.stats.calibration import ici_key, nb_all_key, nb_key, slope_key

if TYPE_CHECKING:
    from bench.data.cohort import EvaluationPolicy
    from bench.plugins.labels import RowKey
    from bench.protocol.evaluation import Evaluation
    from bench.stats.bootstrap import MetricSummary


def calibration_horizons(horizons: tuple[float, ...], most: int = 4) -> tuple[float, ...]:
    """The horizons the calibration figure has a panel for: all of them, or ``most`` spread from first to last."""
    if len(horizons) <= most:
        return tuple(horizons)
    return tuple(horizons[i] for i in np.linspace(0, len(horizons) - 1, most).round().astype(int))


def kaplan_meier_title(key: RowKey | str) -> str:
    return f"{key}\nby predicted risk tertile (cut points from the training folds)"


def row_figures(key: RowKey, evaluation: Evaluation, policy: EvaluationPolicy) -> dict[str, bytes]:
    """The row's figures as PNG files: name -> bytes (a figure whose data the model cannot give is left out)."""
    from bench.report import figures

    unit = policy.time_unit
    first = first_repeat(evaluation.predictions)
    time, event = first["time"].to_numpy(float), first["event"].to_numpy(bool)
    out = {
        "kaplan_meier.png": figures.kaplan_meier_figure(
            time, event, first["risk_group"].to_numpy(int), kaplan_meier_title(key), unit, policy.endpoint
        )
    }
    curves = evaluation.curves
    if curves is not None and np.isfinite(curves.auc).any():
        out["auc.png"] = figures.auc_figure(
            curves.times, curves.auc, curves.auc_low, curves.auc_high, f"{key}\ncumulative/dynamic AUC(t)", unit
        )
    horizons = calibration_horizons(policy.horizons)
    columns = [f"survival_at_{h:g}" for h in horizons]
    predicted = first[columns].to_numpy(float) if set(columns) <= set(first.columns) else None
    if predicted is not None and np.isfinite(predicted).any():
        out["calibration.png"] = figures.calibration_figure(
            np.asarray(horizons, float), predicted, time, event, f"{key}\ncalibration", unit,
            [calibration_note(evaluation, h) for h in horizons],
        )  # fmt: skip
    if curves is not None and np.isfinite(curves.brier).any():
        out["brier.png"] = figures.brier_figure(
            curves.times, curves.brier, curves.brier_reference, f"{key}\nBrier score over time", unit
        )
    h = policy.calibration_at
    net_benefit = [evaluation.metrics.get(nb_key(h, p)) for p in policy.thresholds]
    if all(s is not None for s in net_benefit) and any(math.isfinite(s.mean) for s in net_benefit):
        treat_all = [_mean(evaluation.metrics.get(nb_all_key(h, p))) for p in policy.thresholds]
        out["decision_curve.png"] = figures.decision_curve_figure(
            policy.thresholds, [str(key)], [[s.mean for s in net_benefit]], [[s.ci_low for s in net_benefit]],
            [[s.ci_high for s in net_benefit]], treat_all, f"{key}\ndecision curve at {h:g} {unit}",
            f"threshold probability p (predicted risk at {h:g} {unit})",
        )  # fmt: skip
    return {name: figures.png_bytes(figure) for name, figure in out.items()}


def calibration_note(evaluation: Evaluation, h: float) -> str:
    """The row's calibration slope and ICI at ``h`` as a calibration panel states them: "slope 0.91, ICI 0.038"."""
    slope, ici = _mean(evaluation.metrics.get(slope_key(h))), _mean(evaluation.metrics.get(ici_key(h)))
    slope_text = f"{slope:.2f}" if math.isfinite(slope) else "n/a"
    ici_text = f"{ici:.3f}" if math.isfinite(ici) else "n/a"
    return f"slope {slope_text}, ICI {ici_text}"


def _mean(summary: MetricSummary | None) -> float:
    return math.nan if summary is None else summary.mean
