"""Elastic-net penalised Cox model (scikit-survival's ``CoxnetSurvivalAnalysis``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from survival_models.base import Interval, SksurvModel, option


@dataclass(frozen=True)
class CoxNetConfig:
    alpha: float = option(0.01, Interval(0, None, "neither"))  # penalty strength, on standardised features
    l1_ratio: float = option(0.5, Interval(0, 1, "right"))  # 1 is the lasso, towards 0 the ridge
    max_iter: int = option(100_000, Interval(1, None, "left"))  # coordinate-descent iterations at most
    tol: float = option(1e-7, Interval(0, None, "left"))  # convergence tolerance


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
