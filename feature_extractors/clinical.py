"""The cohort's clinical covariates, typed; encoding and imputation happen in-fold."""

from __future__ import annotations

from bench.data.cohort import Cohort
from feature_extractors.base import Extractor, FeatureBlock


class ClinicalExtractor(Extractor):
    name = "clinical"
    version = "1"

    def extract(self, cohort: Cohort, progress: bool = True, cache=None, **kwargs) -> FeatureBlock:
        columns = dict(cohort.columns)
        return FeatureBlock(self.name, cohort.clinical[list(columns)].copy(), columns)
