"""Cox proportional hazards (scikit-survival's ``CoxPHSurvivalAnalysis``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from survival_models.base import SksurvModel


@dataclass(frozen=True)
class CoxPHConfig:
    alpha: float = 0.0  # ridge penalty; 0 is the plain partial-likelihood fit
    ties: Literal["breslow", "efron"] = "breslow"  # handling of tied event times
    n_iter: int = 100  # Newton-Raphson iterations at most
    tol: float = 1e-9  # convergence tolerance on the log-likelihood


class CoxPH(SksurvModel):
    name = "coxph"
    version = "1"
    Config = CoxPHConfig

    def make_estimator(self) -> Any:
        from sksurv.linear_model import CoxPHSurvivalAnalysis

        c = self.config
        return CoxPHSurvivalAnalysis(alpha=c.alpha, ties=c.ties, n_iter=c.n_iter, tol=c.tol)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"alpha": trial.suggest_float("alpha", 1e-4, 100.0, log=True)}
