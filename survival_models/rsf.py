"""Random survival forest (scikit-survival's ``RandomSurvivalForest``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from survival_models.base import AnyOf, Interval, OneOf, SksurvModel, option


@dataclass(frozen=True)
class RSFConfig:
    n_estimators: int = option(200, Interval(1, None, "left"))  # trees; the scikit-survival guide uses 1000
    min_samples_split: int = option(10, Interval(2, None, "left"))  # a node needs this many samples to be split
    min_samples_leaf: int = option(15, Interval(1, None, "left"))  # each leaf keeps at least this many samples
    # features tried per split: sqrt, log2 or a fraction of them (text on the command line, see _max_features)
    max_features: str | float | None = option("sqrt", AnyOf(OneOf("sqrt", "log2"), Interval(0, 1, "right")))
    max_depth: int | None = option(None, Interval(1, None, "left"))  # unlimited depth by default
    random_state: int | None = option(None, Interval(0, 2**32 - 1, "both"))  # None: derived from the run's --seed
    # trees in parallel (-1: all cores; joblib has no 0); keep 1 when combinations already run in parallel
    n_jobs: int = option(1, AnyOf(Interval(1, None, "left"), Interval(None, -1, "right")))


class RandomSurvivalForest(SksurvModel):
    name = "rsf"
    version = "1"
    imports = ("sksurv.ensemble",)
    Config = RSFConfig

    def make_estimator(self) -> Any:
        from sksurv.ensemble import RandomSurvivalForest as Forest

        c = self.config
        return Forest(
            n_estimators=c.n_estimators,
            min_samples_split=c.min_samples_split,
            min_samples_leaf=c.min_samples_leaf,
            max_features=_max_features(c.max_features),
            max_depth=c.max_depth,
            random_state=c.random_state if c.random_state is not None else self.random_state,
            n_jobs=c.n_jobs,
        )

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 3, 40),
            "min_samples_split": trial.suggest_int("min_samples_split", 4, 40),
            "max_features": trial.suggest_categorical("max_features", ["sqrt", "0.5", "1.0"]),
        }


def _max_features(value: str | float | None) -> str | float | None:
    """Command-line values arrive as text: ``sqrt``, ``log2`` or a fraction such as ``0.5``."""
    if isinstance(value, str) and value not in ("sqrt", "log2"):
        return float(value)
    return value
