"""The extractor contract.

An extractor maps one patient to a fixed-length, named feature vector,
deterministically, without ever seeing outcomes. It declares a ``version``
(part of any cache key) and keeps its defaults in a frozen ``Config`` dataclass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import sys
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from bench.cache import FeatureCache, entry_key
from bench.data.cohort import Cohort, ColumnSpec
from bench.data.inputs import StudyInputs, study_inputs
from bench.errors import (
    BadInputError,
    BenchError,
    DataError,
    ExtractionError,
    ExtractionInputError,
    UsageError,
    WeightsError,
)

# Re-exported so plugins declare option constraints from here (see bench.plugins.options).
from bench.plugins.options import AnyOf, ExistingFile, Increasing, Interval, Length, OneOf, option  # noqa: F401


@dataclass(frozen=True)
class NoOptions:
    """For extractors that take no options."""


@dataclass(frozen=True)
class PatientRecord:
    """What an extractor may see of one sample: never its time or event."""

    sample_id: str
    patient_id: str
    clinical: pd.Series
    inputs: StudyInputs | None = None  # the study's images and masks (imaging cohorts only)

    def __post_init__(self) -> None:
        if self.inputs is not None and not isinstance(self.inputs, StudyInputs):  # the dict of earlier versions
            warnings.warn("PatientRecord.inputs is a StudyInputs now; a dict is converted", DeprecationWarning, 2)
            object.__setattr__(self, "inputs", study_inputs(self.inputs))

    def study_inputs(self, extractor: str) -> StudyInputs:
        """The images, or an error saying that ``extractor`` needs an imaging cohort."""
        if self.inputs is None:
            raise UsageError(f"extractor {extractor!r} needs an imaging cohort (a PET/CT manifest); "
                             f"sample {self.sample_id!r} has no images")  # fmt: skip
        return self.inputs


@dataclass
class FeatureBlock:
    """Features of every sample of a cohort, one row per sample, typed per column."""

    name: str
    frame: pd.DataFrame  # index: sample id, in cohort order
    columns: dict[str, ColumnSpec]
    # Per-slice vectors [n, slices, features], zero-padded, with a [n, slices] mask of real slices, for
    # heads that pool over depth themselves; when set, models see this instead of ``frame``.
    sequence: np.ndarray | None = None
    sequence_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        missing = [c for c in self.frame.columns if c not in self.columns]
        if missing:
            raise DataError(f"feature block {self.name!r}: no type declared for columns {missing}")
        if self.sequence is not None:
            n = len(self.frame)
            if self.sequence.ndim != 3 or len(self.sequence) != n:
                raise DataError(f"feature block {self.name!r}: sequence must be [{n}, slices, features]")
            if self.sequence_mask is None or self.sequence_mask.shape != self.sequence.shape[:2]:
                raise DataError(f"feature block {self.name!r}: sequence_mask must be [{n}, slices]")
            empty = np.flatnonzero(~self.sequence_mask.any(axis=1))
            if empty.size:
                raise DataError(f"feature block {self.name!r}: sample {self.frame.index[empty[0]]!r} has no slice")


class Extractor:
    """Base class; subclasses set ``name``, ``version`` and override one of the ``extract`` methods.

    Extractors that work patient by patient (``extract_patient``) and set
    ``cacheable`` get the content-addressed feature cache and per-patient failure
    reporting for free: a failing patient does not stop the others, which stay
    cached, and the run then fails with the list of failed patients.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Config: ClassVar[type] = NoOptions
    cacheable: ClassVar[bool] = False  # per-patient features worth caching (anything that reads images)
    uses_torch: ClassVar[bool] = False  # computes with torch: one torch thread per patient (see ``one_thread``)
    # Options that make the extractor quick and offline, for the registry-driven contract tests
    # (e.g. {"weights": "random", "max_slices": "2"}); users never see them.
    smoke_options: ClassVar[dict[str, str]] = {}

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    def extract(
        self, cohort: Cohort, progress: bool = True, cache: FeatureCache | None = None, workers: int = 1
    ) -> FeatureBlock:
        """Features for every sample of ``cohort``; the default calls ``extract_patient`` per sample.

        With ``workers`` > 1 patients are extracted in that many local processes.
        """
        records = patient_records(cohort)
        if not records:
            raise DataError(f"cohort {cohort.name!r} has no samples to extract features from")
        if cache is None and self.cacheable:
            cache = FeatureCache.default()
        rows: dict[str, dict[str, float]] = {}
        failures: list[tuple[str, BaseException]] = []
        bar = tqdm(total=len(records), desc=f"extract {self.name}", unit="patient", disable=not progress, leave=False)
        for record, outcome in self._run_patients(records, cache, workers):
            if isinstance(outcome, BaseException):  # reported below; the others keep their cached features
                failures.append((record.sample_id, outcome))
            else:
                rows[record.sample_id] = outcome
            bar.update()
        bar.close()
        if failures:
            raise extraction_failure(self.name, failures, len(records), cache is not None and bool(rows), cohort)
        names = list(next(iter(rows.values())))
        for sid, values in rows.items():
            if list(values) != names:
                raise ExtractionError(f"extractor {self.name!r} returned different feature names for sample {sid!r}")
        frame = pd.DataFrame(
            [list(rows[s].values()) for s in cohort.sample_ids], index=cohort.sample_ids, columns=names
        )
        return FeatureBlock(self.name, frame.astype(float), {c: ColumnSpec("numeric") for c in names})

    def _run_patients(self, records: list[PatientRecord], cache: FeatureCache | None, workers: int):
        """(record, features or the exception it raised), in completion order."""
        if workers <= 1 or len(records) <= 1:
            for record in records:
                yield record, _attempt(self, record, cache)
            return
        # spawn, not fork: a forked child of a process that already runs torch threads can deadlock
        context = multiprocessing.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_limit_threads, initargs=(threads,)) as pool:
            futures = {pool.submit(_attempt, self, record, cache): record for record in records}
            for future in as_completed(futures):
                yield futures[future], future.result()

    def missing_inputs(self, inputs: StudyInputs | None) -> str:
        """Why a study cannot give this extractor's features ("" when it can): checked before any work.

        Image extractors say which image and ROI their options need (see ``image_needs``).
        """
        return ""

    def input_files(self, inputs: StudyInputs | None) -> list[Path]:
        """The image and mask files this extractor reads of a study; their headers are checked before any work.

        By default every file of the study for an extractor that reads images (``cacheable``), none otherwise.
        """
        return inputs.all_files() if inputs is not None and self.cacheable else []

    def produces_sequence(self) -> bool:
        """Whether blocks carry per-slice sequences that only a model with ``reads_sequences`` can use."""
        return False

    def extract_patient(self, record: PatientRecord) -> dict[str, float]:
        raise NotImplementedError(f"extractor {self.name!r} implements neither extract nor extract_patient")

    def cache_inputs(self, record: PatientRecord) -> list[Path]:
        """The files whose content determines this patient's features (part of the cache key)."""
        return record.inputs.all_files() if record.inputs is not None else []

    def _cached_patient(self, record: PatientRecord, cache: FeatureCache | None) -> dict[str, float]:
        if cache is None:
            with one_thread(self.uses_torch):
                return self.extract_patient(record)
        key = entry_key(self.name, self.version, dataclasses.asdict(self.config), self.cache_inputs(record))
        hit = cache.get(key)
        if hit is not None:
            return dict(zip(hit["names"].tolist(), hit["values"].tolist()))
        with one_thread(self.uses_torch):
            values = self.extract_patient(record)
        cache.put(key, {"names": np.array(list(values), dtype=str), "values": np.array(list(values.values()), float)})
        return values


def extraction_failure(
    extractor: str, failures: list[tuple[str, BaseException]], total: int, cached: bool, cohort: Cohort
) -> BenchError:
    """The one error for the patients that failed: their ids and the first one's reason.

    Exit 2 when every failure is bad input (a file, an option), 1 when something crashed; a bad
    weights file is about the file, not the patients, and is raised as it is.
    """
    weights = next((exc for _, exc in failures if isinstance(exc, WeightsError)), None)
    if weights is not None:
        return weights
    first, exc = failures[0]
    ids = [sid for sid, _ in failures[1:10]] + ([f"{len(failures) - 10} more"] if len(failures) > 10 else [])
    reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    reason = reason.removeprefix(f"patient {first!r}: ")
    if not isinstance(exc, BenchError):  # a crash: its type is part of what happened
        reason = f"{type(exc).__name__}: {reason}"
    message = f"extractor {extractor!r} failed for {len(failures)} of {total} patients: {first} ({reason})"
    message += f", {', '.join(ids)}" if ids else ""
    message += "; the others are cached" if cached else ""
    if all(isinstance(e, BadInputError) for _, e in failures):
        check = f"; run `bench data check {cohort.manifest}` to list every bad file" if cohort.manifest else ""
        return ExtractionInputError(message + check)
    return ExtractionError(message)


def image_files(inputs: StudyInputs | None, modality: str, roi: str) -> list[Path]:
    """The images and masks read for features of ``modality`` inside ``roi`` (see ``StudyInputs.files_for``)."""
    return inputs.files_for(modality, roi) if inputs is not None else []


def image_needs(inputs: StudyInputs | None, modalities: tuple[str, ...], roi: str) -> str:
    """Why a study lacks what features of ``modalities`` inside ``roi`` need ("" when nothing is missing)."""
    from bench.data.imaging.masks import ROIS

    if inputs is None:
        return "the cohort has no images (a PET/CT manifest is needed)"
    for modality in modalities:
        if getattr(inputs, modality) is None:
            others = [m for m in inputs.modalities if m not in modalities]
            hint = f"; the study has {others[0].upper()}: use modality={others[0]}" if others else ""
            return f"no {modality.upper()} image{hint}"
    if roi not in inputs.masks:
        if roi not in ROIS:
            return f"no mask for ROI {roi!r} (column 'mask_{roi}' missing or empty)"
        if inputs.ct is None:
            return f"ROI {roi!r} is computed from CT and the study has no CT; give it in a 'mask_{roi}' column"
    return ""


def roi_inputs(record: PatientRecord, modality: str, roi: str) -> list[Path]:
    """The files an image feature of ``modality`` inside ``roi`` depends on (see ``StudyInputs.files_for``)."""
    return record.inputs.files_for(modality, roi) if record.inputs is not None else []


@contextlib.contextmanager
def one_thread(uses_torch: bool = False) -> Iterator[None]:
    """Compute with one thread of torch and of BLAS/OpenMP, whatever the machine and ``OMP_NUM_THREADS``.

    How many threads share a reduction (a convolution, a matrix product) changes the last bits of its float32
    sum; a network trained on such features (DeepSurv over per-slice sequences) turns that into a visibly
    different row. Features therefore never depend on the machine's core count: parallelism is across
    patients (``--workers``), each computed by one thread.
    """
    from threadpoolctl import threadpool_limits

    if uses_torch:
        import torch  # now, not inside the computation: torch sets its thread count when it is imported
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(before)


def _limit_threads(threads: int) -> None:
    """Share the cores among the worker processes: oversubscribed OpenMP threads make torch many times slower."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _attempt(extractor: Extractor, record: PatientRecord, cache: FeatureCache | None):
    """One patient's features, or the exception (returned, so one failure does not stop the others)."""
    try:
        return extractor._cached_patient(record, cache)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of one patient is reported with the others
        return exc


def patient_records(cohort: Cohort) -> list[PatientRecord]:
    return [
        PatientRecord(sid, pid, cohort.clinical.loc[sid], cohort.inputs.get(sid))
        for sid, pid in zip(cohort.sample_ids, cohort.patient_ids)
    ]
