"""The learner contract (scikit-survival's).

``fit(X, y)`` with ``y`` a structured (event, time) array; ``predict(X)`` a risk
score, higher meaning an earlier event; ``predict_survival_function(X, times)``
the survival probabilities at ``times`` as an array (n_samples, n_times);
``search_space(trial)`` the Optuna search space. Constructors only store options.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from bench.errors import ModelError


class SurvivalModel:
    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Config: ClassVar[type]

    def __init__(self, config: Any = None, random_state: int | None = None):
        self.config = config if config is not None else self.Config()
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> SurvivalModel:
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_survival_function(self, X: np.ndarray, times: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """Options to try, drawn from an Optuna ``trial``; empty when there is nothing to tune."""
        return {}


class SksurvModel(SurvivalModel):
    """A scikit-survival estimator behind the contract; subclasses build ``make_estimator``."""

    def make_estimator(self) -> Any:
        raise NotImplementedError

    def fit(self, X: np.ndarray, y: np.ndarray) -> SksurvModel:
        self.estimator_ = self.make_estimator()
        try:
            self.estimator_.fit(X, y)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            raise ModelError(f"model {self.name!r} failed to fit: {exc}") from exc
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator_.predict(X), dtype=float)

    def predict_survival_function(self, X: np.ndarray, times: np.ndarray) -> np.ndarray:
        functions = self.estimator_.predict_survival_function(X)
        out = np.empty((len(functions), len(times)))
        for i, fn in enumerate(functions):
            # Past the last training time the estimate stays at its last value.
            out[i] = fn(np.clip(times, fn.domain[0], fn.domain[1]))
        return out
