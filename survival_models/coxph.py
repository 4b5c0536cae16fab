"""Cox proportional hazards (scikit-survival's ``CoxPHSurvivalAnalysis``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from survival_models.base import Interval, SksurvModel, option


@dataclass(frozen=True)
class CoxPHConfig:
    alpha: float = option(0.0, Interval(0, None, "left"))  # ridge penalty; 0 is the plain partial-likelihood fit
    ties: Literal["breslow", "efron"] = "breslow"  # handling of tied event times
    n_iter: int = option(100, Interval(1, None, "left"))  # Newton-Raphson iterations at most
    tol: float = option(1e-9, Interval(0, None, "left"))  # convergence tolerance on the log-likelihood


class CoxPH(SksurvModel):
    name = "coxph"
    version = "1"
    imports = ("sksurv.linear_model",)
    Config = CoxPHConfig

    def make_estimator(self) -> Any:
        from sksurv.linear_model import CoxPHSurvivalAnalysis

        c = self.config
        return CoxPHSurvivalAnalysis(alpha=c.alpha, ties=c.ties, n_iter=c.n_iter, tol=c.tol)

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"alpha": trial.suggest_float("alpha", 1e-4, 100.0, log=True)}
