"""Gradient-boosted Cox model with regression trees (scikit-survival's ``GradientBoostingSurvivalAnalysis``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from survival_models.base import Interval, SksurvModel, option


@dataclass(frozen=True)
class GBSAConfig:
    n_estimators: int = option(200, Interval(1, None, "left"))  # boosting stages
    learning_rate: float = option(0.05, Interval(0, None, "left"))  # shrinkage per stage
    max_depth: int = option(3, Interval(1, None, "left"))  # depth of each regression tree
    min_samples_leaf: int = option(5, Interval(1, None, "left"))  # each leaf keeps at least this many samples
    subsample: float = option(1.0, Interval(0, 1, "right"))  # fraction of samples per stage (below 1: stochastic)
    random_state: int | None = option(None, Interval(0, 2**32 - 1, "both"))  # None: derived from the run's --seed


class GradientBoostingSurvival(SksurvModel):
    name = "gbsa"
    version = "1"
    imports = ("sksurv.ensemble",)
    Config = GBSAConfig

    def make_estimator(self) -> Any:
        from sksurv.ensemble import GradientBoostingSurvivalAnalysis

        c = self.config
        return GradientBoostingSurvivalAnalysis(
            loss="coxph",
            n_estimators=c.n_estimators,
            learning_rate=c.learning_rate,
            max_depth=c.max_depth,
            min_samples_leaf=c.min_samples_leaf,
            subsample=c.subsample,
            random_state=c.random_state if c.random_state is not None else self.random_state,
        )

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "n_estimators": trial.suggest_int("n_estimators", 50, 500, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "max_depth": trial.suggest_int("max_depth", 1, 5),
        }
