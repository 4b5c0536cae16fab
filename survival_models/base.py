"""The learner contract (scikit-survival's).

``fit(X, y)`` with ``y`` a structured (event, time) array; ``predict(X)`` a risk
score, higher meaning an earlier event; ``predict_survival_function(X, times)``
the survival probabilities at ``times`` as an array (n_samples, n_times);
``search_space(trial)`` the Optuna search space. Constructors only store options.

Before ``fit`` the harness hands every model the ``layout`` of ``X``: which
columns belong to which feature block, and which columns hold a padded per-slice
sequence instead of a flat vector. Flat learners ignore it; a model that pools
sequences itself sets ``reads_sequences`` and reads them with ``split_columns``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from bench.errors import ModelError

# Re-exported so plugins declare option constraints from here (see bench.plugins.options).
from bench.plugins.options import AnyOf, ExistingFile, Increasing, Interval, Length, OneOf, option  # noqa: F401


@dataclass(frozen=True)
class BlockLayout:
    """Where one feature block sits in the columns of ``X``.

    A flat block occupies ``X[:, start:stop]``. A sequence block (``sequence`` =
    (slices, features)) occupies ``slices * features`` values, slice-major, then
    ``slices`` mask flags (1 = a real slice, 0 = padding).
    """

    name: str
    start: int
    stop: int
    sequence: tuple[int, int] | None = None

    def values(self, X: np.ndarray) -> np.ndarray:
        """The block's columns; a sequence block as [n, slices, features]."""
        part = X[:, self.start : self.stop]
        if self.sequence is None:
            return part
        slices, features = self.sequence
        return part[:, : slices * features].reshape(len(X), slices, features)

    def mask(self, X: np.ndarray) -> np.ndarray:
        """[n, slices] booleans, True for real slices (sequence blocks only)."""
        if self.sequence is None:
            raise ValueError(f"block {self.name!r} is not a sequence")
        slices, features = self.sequence
        return X[:, self.start + slices * features : self.stop] > 0.5


def flat_layout(n_features: int, name: str = "features") -> tuple[BlockLayout, ...]:
    return (BlockLayout(name, 0, n_features),)


class SurvivalModel:
    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Config: ClassVar[type]
    reads_sequences: ClassVar[bool] = False  # pools per-slice sequence blocks itself (see BlockLayout)
    # Modules imported on first use (see ``Extractor.imports``): `bench` imports them before any work, on every worker.
    imports: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any = None, random_state: int | None = None):
        self.config = config if config is not None else self.Config()
        self.random_state = random_state
        self.layout: tuple[BlockLayout, ...] | None = None  # set by the harness before fit; None = one flat block

    def with_layout(self, layout: tuple[BlockLayout, ...]) -> SurvivalModel:
        self.layout = tuple(layout)
        return self

    def layout_for(self, X: np.ndarray) -> tuple[BlockLayout, ...]:
        return self.layout if self.layout is not None else flat_layout(X.shape[1])

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

    def degenerate_reason(self) -> str:
        """Why the fitted model gives every patient the same risk, where the learner knows ("" otherwise).

        Asked only of a fold whose test risks are all equal (``bench.protocol.degenerate``); the page and MLflow
        quote it beside the folds, e.g. ``coxnet chose alpha_max: no feature selected``.
        """
        return ""


class SksurvModel(SurvivalModel):
    """A scikit-survival estimator behind the contract; subclasses build ``make_estimator``."""

    def make_estimator(self) -> Any:
        raise NotImplementedError

    def fit(self, X: np.ndarray, y: np.ndarray) -> SksurvModel:
        self.estimator_ = self.make_estimator()
        try:
            self.estimator_.fit(X, y)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            raise ModelError.of(self, "failed to fit", str(exc)) from exc
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
