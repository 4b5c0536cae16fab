"""Degenerate predictions: a fold whose learner gives every test patient the same risk.

Such a fold's C-index is 0.5 by construction (every pair tied), not a finding about the features: coxnet choosing
its null model on features that carry nothing, a learner that collapsed. The fold's numbers stay in the row, as
they are; the row is flagged with the folds and, where the learner knows it, the reason
(``SurvivalModel.degenerate_reason``), like a numerical warning.
"""

from __future__ import annotations

import numpy as np

from survival_models.base import SurvivalModel

# Risks this close (relative to their size, at least 1) are one risk: float noise of a null model's zero linear
# predictor (centering, a baseline offset) must not read as a ranking.
RELATIVE_TOLERANCE = 1e-9


def constant_risk(risk: np.ndarray) -> bool:
    """Whether every risk of ``risk`` is the same, within ``RELATIVE_TOLERANCE``."""
    risk = np.asarray(risk, dtype=float)
    if len(risk) < 2:
        return False
    return float(np.ptp(risk)) <= RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(risk))))


def degenerate_reason(model: SurvivalModel, risk: np.ndarray) -> str | None:
    """None when the fold's test risks differ; else the learner's reason for predicting one risk ("" unknown)."""
    if not constant_risk(risk):
        return None
    ask = getattr(model, "degenerate_reason", None)  # a plugin written before the contract had it says nothing
    return " ".join(str(ask() or "").split())[:300] if callable(ask) else ""
