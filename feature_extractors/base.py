"""The extractor contract.

An extractor maps one patient to a fixed-length, named feature vector,
deterministically, without ever seeing outcomes. It declares a ``version``
(part of any cache key) and keeps its defaults in a frozen ``Config`` dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from bench.cohort import Cohort, ColumnSpec
from bench.errors import DataError


@dataclass(frozen=True)
class NoOptions:
    """For extractors that take no options."""


@dataclass(frozen=True)
class PatientRecord:
    """What an extractor may see of one sample: never its time or event."""

    sample_id: str
    patient_id: str
    clinical: pd.Series
    inputs: dict[str, Any] = field(default_factory=dict)  # images and masks, for imaging cohorts


@dataclass
class FeatureBlock:
    """Features of every sample of a cohort, one row per sample, typed per column."""

    name: str
    frame: pd.DataFrame  # index: sample id, in cohort order
    columns: dict[str, ColumnSpec]

    def __post_init__(self) -> None:
        missing = [c for c in self.frame.columns if c not in self.columns]
        if missing:
            raise DataError(f"feature block {self.name!r}: no type declared for columns {missing}")


class Extractor:
    """Base class; subclasses set ``name``, ``version`` and override one of the ``extract`` methods."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Config: ClassVar[type] = NoOptions

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    def extract(self, cohort: Cohort, progress: bool = True) -> FeatureBlock:
        """Features for every sample of ``cohort``; the default calls ``extract_patient`` per sample."""
        records = patient_records(cohort)
        if not records:
            raise DataError(f"cohort {cohort.name!r} has no samples to extract features from")
        rows = []
        for record in tqdm(records, desc=f"extract {self.name}", unit="patient", disable=not progress, leave=False):
            values = self.extract_patient(record)
            rows.append(np.asarray(list(values.values()), dtype=float))
            if len(rows) == 1:
                names = list(values)
            elif list(values) != names:
                raise DataError(
                    f"extractor {self.name!r} returned different feature names for sample {record.sample_id!r}"
                )
        frame = pd.DataFrame(np.vstack(rows), index=cohort.sample_ids, columns=names)
        return FeatureBlock(self.name, frame, {c: ColumnSpec("numeric") for c in names})

    def extract_patient(self, record: PatientRecord) -> dict[str, float]:
        raise NotImplementedError(f"extractor {self.name!r} implements neither extract nor extract_patient")


def patient_records(cohort: Cohort) -> list[PatientRecord]:
    inputs = cohort.extra.get("inputs", {})
    return [
        PatientRecord(sid, pid, cohort.clinical.loc[sid], inputs.get(sid, {}))
        for sid, pid in zip(cohort.sample_ids, cohort.patient_ids)
    ]
