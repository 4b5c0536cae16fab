"""The figures of one row, from its out-of-fold predictions, as PNG artifacts of its MLflow run.

- ``kaplan_meier.png``: Kaplan-Meier curves of the predicted risk tertiles (cut points from each fold's
  training risks), 95 % bands, numbers at risk and the log-rank p;
- ``auc.png``: cumulative/dynamic AUC(t) over the evaluation window with its bootstrap 95 % band;
- ``calibration.png``: predicted survival by decile against Kaplan-Meier observed, at each horizon;
- ``brier.png``: the Brier score over time against the Kaplan-Meier reference.

Under repeated cross-validation every patient is a test patient once per repeat: the Kaplan-Meier and
calibration figures use the first repeat, so each patient counts once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from bench.report.risk_groups import first_repeat

if TYPE_CHECKING:
    from bench.data.cohort import EvaluationPolicy
    from bench.plugins.labels import RowKey
    from bench.protocol.evaluation import Evaluation

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
            np.asarray(horizons, float), predicted, time, event, f"{key}\ncalibration", unit
        )
    if curves is not None and np.isfinite(curves.brier).any():
        out["brier.png"] = figures.brier_figure(
            curves.times, curves.brier, curves.brier_reference, f"{key}\nBrier score over time", unit
        )
    return {name: figures.png_bytes(figure) for name, figure in out.items()}
