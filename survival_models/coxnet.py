"""Elastic-net penalised Cox model (scikit-survival's ``CoxnetSurvivalAnalysis``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from survival_models.base import SksurvModel


@dataclass(frozen=True)
class CoxNetConfig:
    alpha: float = 0.01  # penalty strength, on standardised features
    l1_ratio: float = 0.5  # 1 is the lasso, towards 0 the ridge
    max_iter: int = 100_000  # coordinate-descent iterations at most
    tol: float = 1e-7  # convergence tolerance


class CoxNet(SksurvModel):
    name = "coxnet"
    version = "1"
    Config = CoxNetConfig

    def make_estimator(self) -> Any:
        from sksurv.linear_model import CoxnetSurvivalAnalysis

        c = self.config
        return CoxnetSurvivalAnalysis(
            alphas=[c.alpha], l1_ratio=c.l1_ratio, max_iter=c.max_iter, tol=c.tol, fit_baseline_model=True
        )

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator_.predict(X, alpha=self.config.alpha), dtype=float)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "alpha": trial.suggest_float("alpha", 1e-4, 1.0, log=True),
            "l1_ratio": trial.suggest_float("l1_ratio", 0.05, 1.0),
        }
