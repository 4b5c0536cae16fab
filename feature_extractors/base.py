"""The extractor contract.

An extractor maps one patient to a fixed-length, named feature vector,
deterministically, without ever seeing outcomes. It declares a ``version``
(part of any cache key) and keeps its defaults in a frozen ``Config`` dataclass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from bench.cache import FeatureCache, cache_root, cache_root_as, entry_key
from bench.data.cohort import Cohort, ColumnSpec
from bench.data.inputs import StudyInputs
from bench.errors import (
    BadInputError,
    BenchError,
    DataError,
    ExtractionError,
    ExtractionInputError,
    UsageError,
    WeightsError,
)
from bench.executor import GPU, Executor, on_gpu, open_executor

if TYPE_CHECKING:
    from bench.data.imaging.study import Study

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
        if self.inputs is not None and not isinstance(self.inputs, StudyInputs):
            raise TypeError(f"PatientRecord.inputs of {self.sample_id!r} is a {type(self.inputs).__name__}, not a "
                            "StudyInputs (bench.data.inputs.study_inputs makes one from a dict)")  # fmt: skip

    def study_inputs(self, extractor: str) -> StudyInputs:
        """The images, or an error saying that ``extractor`` needs an imaging cohort."""
        if self.inputs is None:
            raise UsageError(f"extractor {extractor!r} needs an imaging cohort (a PET/CT manifest); "
                             f"sample {self.sample_id!r} has no images")  # fmt: skip
        return self.inputs

    def study(self, extractor: str) -> Study:
        """The study on one grid (``image``, ``roi_mask``, ``spacing``, ``units``), for plugins: see
        ``bench.data.imaging.study.open_study``; ``extractor`` (its name) goes into the error without images."""
        from bench.data.imaging.study import open_study

        return open_study(self, extractor)


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
    # ``min_icc``: the columns' values under perturbed versions of each study [n, 1 + K, columns] (version 0: the
    # study as it is), from which each fold keeps the columns whose ICC on its training rows reaches ``min_icc``
    versions: np.ndarray | None = None
    min_icc: float | None = None

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
    # Reads the simulated truth (a ceiling, not a representation): recorded per row of a results file, and never
    # the row a leaderboard page illustrates.
    reads_truth: ClassVar[bool] = False
    # Modules imported on first use, not with the plugin (the CLI starts without them); `bench` imports them before
    # any work, on every Dask worker too, so that a missing one fails first and no task pays for the import.
    imports: ClassVar[tuple[str, ...]] = ()
    # Options that make the extractor quick and offline, for the registry-driven contract tests
    # (e.g. {"weights": "random", "max_slices": "2"}); users never see them.
    smoke_options: ClassVar[dict[str, str]] = {}

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    def extract(
        self,
        cohort: Cohort,
        progress: bool = True,
        cache: FeatureCache | None = None,
        workers: int = 1,
        executor: Executor | None = None,
    ) -> FeatureBlock:
        """Features for every sample of ``cohort``; the default calls ``extract_patient`` per sample.

        Patients run on ``executor`` (see ``bench.executor``), or, without one, in this process, or with
        ``workers`` > 1 on a local Dask cluster of that many processes.
        """
        records = patient_records(cohort)
        if not records:
            raise DataError(f"cohort {cohort.name!r} has no samples to extract features from")
        if cache is None and self.cacheable:
            cache = FeatureCache.default()
        rows: dict[str, dict[str, float]] = {}
        failures: list[tuple[str, BaseException]] = []
        bar = tqdm(total=len(records), desc=f"extract {self.name}", unit="patient", disable=not progress, leave=False)
        with _executor(executor, workers) as runner:
            for record, outcome in self._run_patients(records, cache, runner):
                if isinstance(outcome, BaseException):  # reported below; the others keep their cached features
                    failures.append((record.sample_id, outcome))
                else:
                    rows[record.sample_id] = outcome
                bar.update()
        bar.close()
        if failures:
            order = {sid: i for i, sid in enumerate(cohort.sample_ids)}
            failures.sort(key=lambda failure: order[failure[0]])  # in cohort order, however the tasks finished
            raise extraction_failure(self.name, failures, len(records), cache is not None and bool(rows), cohort)
        names = list(next(iter(rows.values())))
        for sid, values in rows.items():
            if list(values) != names:
                raise ExtractionError(f"extractor {self.name!r} returned different feature names for sample {sid!r}")
        frame = pd.DataFrame(
            [list(rows[s].values()) for s in cohort.sample_ids], index=cohort.sample_ids, columns=names
        )
        return FeatureBlock(self.name, frame.astype(float), {c: ColumnSpec("numeric") for c in names})

    def _run_patients(self, records: list[PatientRecord], cache: FeatureCache | None, executor: Executor):
        """(record, features or the exception it raised), in completion order.

        Cache hits are served here; each miss is a task of ``executor`` that carries the record (paths, never
        images) and its cache key, and either writes the entry itself (a worker that sees this cache) or
        returns it to be written here.
        """
        todo: list[tuple[PatientRecord, str | None]] = []
        for record in records:
            try:
                key = self.cache_key(record) if cache is not None else None
            except (OSError, BenchError) as exc:  # an input file gone since the checks: this patient fails
                yield record, exc
                continue
            hit = cache.get(key) if cache is not None and key is not None else None
            if hit is not None:
                yield record, self.entry_features(hit)
            else:
                todo.append((record, key))
        if not todo:
            return

        def lost(i: int, exc: BaseException) -> tuple[BaseException, None]:
            sid = todo[i][0].sample_id
            return ExtractionError(f"patient {sid!r}: every Dask worker that ran it died (out of memory?); "
                                   "see the workers' logs"), None  # fmt: skip

        with _cache_route(cache, executor) as route:
            tasks = [(self, record, key, route) for record, key in todo]
            resources = {GPU: 1} if on_gpu(self.config) else None
            for i, (outcome, entry) in executor.map(
                patient_task, tasks, name=f"extract_{self.name}", resources=resources, lost=lost
            ):
                record, key = todo[i]
                if entry is not None and cache is not None and key is not None:
                    cache.put(key, entry)  # the worker does not see this cache: its entry is written here
                yield record, outcome

    def cache_key(self, record: PatientRecord) -> str:
        """The content address of this patient's cache entry: name, version, options and input files."""
        return entry_key(self.name, self.version, self.cache_options(), self.cache_inputs(record))

    def cache_options(self) -> dict[str, Any]:
        """What of the options (and of anything else that fixes the features) goes into the cache key."""
        return dataclasses.asdict(self.config)

    def compute_entry(self, record: PatientRecord) -> dict[str, np.ndarray]:
        """The arrays cached for one patient (computed with one thread); by default its named feature vector."""
        values = self.extract_patient(record)
        return {"names": np.array(list(values), dtype=str), "values": np.array(list(values.values()), float)}

    def entry_features(self, entry: dict[str, np.ndarray]) -> dict[str, float]:
        """A patient's features from its cache entry (see ``compute_entry``)."""
        return dict(zip(entry["names"].tolist(), entry["values"].tolist()))

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

    def feature_class(self, feature: str) -> str | None:
        """The class a feature belongs to (radiomics: firstorder, shape, glcm...), for per-class summaries such as
        ``bench robustness``'s; None: the extractor's features form one class."""
        return None

    def produces_sequence(self) -> bool:
        """Whether blocks carry per-slice sequences that only a model with ``reads_sequences`` can use."""
        return False

    def extract_patient(self, record: PatientRecord) -> dict[str, float]:
        raise NotImplementedError(f"extractor {self.name!r} implements neither extract nor extract_patient")

    def cache_inputs(self, record: PatientRecord) -> list[Path]:
        """The files whose content determines this patient's features (part of the cache key)."""
        return record.inputs.all_files() if record.inputs is not None else []


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


@dataclass(frozen=True)
class CacheRoute:
    """Where a patient task's cache entry goes: into this cache, when the worker sees it, or back to the client.

    ``marker`` is a file the client wrote into ``features``: a worker that does not see it (another machine,
    no shared filesystem) returns the entry instead. Empty in this process, where the cache is the client's.
    """

    features: Path  # the client's feature-cache folder
    root: Path | None = None  # the client's cache root (derived masks); None: the worker's own
    marker: str = ""

    def reachable(self) -> bool:
        if not self.marker:
            return True
        try:
            return (self.features / self.marker).is_file()
        except OSError:
            return False


def patient_task(
    extractor: Extractor, record: PatientRecord, key: str | None, route: CacheRoute | None
) -> tuple[dict[str, float] | BaseException, dict[str, np.ndarray] | None]:
    """One patient, where the executor runs it: (features or the exception raised, the entry for the client to
    write, when this worker does not see the cache; else None).

    A failure is returned, not raised, so that one patient does not stop the others. A task that runs again (its
    first worker died) finds the entry the first one wrote and computes nothing.
    """
    try:
        if key is None:  # nothing to cache
            with one_thread(extractor.uses_torch):
                return extractor.extract_patient(record), None
        shared = route is not None and route.reachable()
        with cache_root_as(route.root if shared and route is not None else None):
            cache = FeatureCache(route.features) if shared and route is not None else None
            hit = cache.get(key) if cache is not None else None
            if hit is not None:
                LOG.debug("%s: %s was cached", extractor.name, record.sample_id)
                return extractor.entry_features(hit), None
            started = time.perf_counter()
            with one_thread(extractor.uses_torch):
                entry = extractor.compute_entry(record)
            if cache is not None:
                cache.put(key, entry)
            LOG.info("%s: computed %s in %.1f s, %s", extractor.name, record.sample_id, time.perf_counter() - started,
                     "cached" if cache is not None else "sent to the client to cache")  # fmt: skip
            return extractor.entry_features(entry), (None if cache is not None else entry)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of one patient is reported with the others
        return exc, None


LOG = logging.getLogger("bench.extract")  # on a worker: DASK_LOGGING__BENCH=info shows one line per patient


@contextlib.contextmanager
def _executor(executor: Executor | None, workers: int) -> Iterator[Executor]:
    if executor is not None:
        yield executor
        return
    with open_executor(workers, announce=False) as opened:
        yield opened


@contextlib.contextmanager
def _cache_route(cache: FeatureCache | None, executor: Executor) -> Iterator[CacheRoute | None]:
    """The route of this extraction's entries; on a cluster the client asks its workers whether they see the cache:
    it writes a marker file into the cache folders and every worker reads it back (``Executor.sees``)."""
    if cache is None:
        yield None
        return
    if type(executor) is Executor:  # this process: the cache is its own
        yield CacheRoute(cache.root)
        return
    marker = f".shared-{uuid.uuid4().hex}"
    folders = list(dict.fromkeys([cache.root, cache_root()]))
    try:
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / marker).write_text(marker)
        shared = all(executor.sees(folder, marker) for folder in folders)
        yield CacheRoute(cache.root, cache_root(), marker) if shared else None
    finally:
        for folder in folders:
            (folder / marker).unlink(missing_ok=True)


def patient_records(cohort: Cohort) -> list[PatientRecord]:
    return [
        PatientRecord(sid, pid, cohort.clinical.loc[sid], cohort.inputs.get(sid))
        for sid, pid in zip(cohort.sample_ids, cohort.patient_ids)
    ]
