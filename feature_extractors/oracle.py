"""The true risk of a synthetic cohort, as a ceiling row on its leaderboard.

Only synthetic cohorts carry a truth table (kept apart from every feature); on
any other cohort this extractor refuses to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from bench.data.cohort import Cohort, ColumnSpec
from bench.errors import UsageError
from feature_extractors.base import Extractor, FeatureBlock

PARTS = {"full": "lp", "clinical": "lp_clinical", "imaging": "lp_imaging"}


@dataclass(frozen=True)
class OracleConfig:
    part: Literal["full", "clinical", "imaging"] = "full"  # which part of the true linear predictor


class OracleExtractor(Extractor):
    name = "oracle"
    version = "1"
    Config = OracleConfig
    reads_truth = True

    def extract(self, cohort: Cohort, progress: bool = True, cache=None, **kwargs) -> FeatureBlock:
        truth = cohort.truth
        if truth is None:
            raise UsageError(
                f"extractor 'oracle' needs the truth table of a synthetic cohort; {cohort.name!r} has none"
            )
        column = PARTS[self.config.part]
        values = truth[column].reindex(cohort.patient_ids).to_numpy(float)
        if np.isnan(values).any():
            missing = cohort.patient_ids[np.isnan(values)][0]
            raise UsageError(f"extractor 'oracle': patient {missing!r} has no {column} in the truth table")
        frame = pd.DataFrame({column: values}, index=cohort.sample_ids)
        return FeatureBlock(self.name, frame, {column: ColumnSpec("numeric")})
