"""Features of every study under K perturbed versions, and their ICC per feature (issue 27).

Version 0 is the study as it is; version r (1..K) is the study after the perturbation chain, seeded by the run's
seed, the sample and r. A version is an extractor of its own (``PerturbedVersion``): every patient is a task of
the executor like any extraction, its features are cached under the original files' content plus the chain and
the version's seed, and the perturbed images and masks live in a temporary folder for the time of that task,
never beside the user's files. With ``retest`` the versions are instead the samples of each patient (a scan and
its rescan), as a manifest lists them. Outcomes are never read: only the records' images and clinical values
reach the extractor.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.cache import FeatureCache, entry_key
from bench.data.cohort import Cohort
from bench.data.imaging.perturb import Step
from bench.data.imaging.perturbed import perturbed_inputs
from bench.errors import DataError, UsageError
from bench.executor import Executor
from bench.stats.icc import ICC, icc_a1
from feature_extractors.base import Extractor, FeatureBlock, PatientRecord


DEFAULT_PERTURBATION = "volume:+-1vox"  # a reader who contours one voxel wider or narrower (Zwanenburg et al. 2019)
DEFAULT_REPEATS = 5


def version_seed(seed: int, sample_id: str, version: int) -> int:
    """A version's perturbation seed: a pure function of the run's seed, the sample and the version."""
    digest = hashlib.sha256(f"{seed}:{sample_id}:{version}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def perturbed_rois(extractor: Extractor, record: PatientRecord) -> tuple[str, ...]:
    """The ROIs a perturbation moves for this extractor: its ``roi`` option, else every mask the study supplies."""
    roi = getattr(extractor.config, "roi", None)
    if roi:
        return (str(roi),)
    return tuple(sorted(record.inputs.masks)) if record.inputs is not None else ()


class PerturbedVersion(Extractor):
    """``inner``'s features of version ``version`` of every study: computed on the study after ``chain``."""

    def __init__(self, inner: Extractor, chain: tuple[Step, ...], seed: int, version: int):
        super().__init__(inner.config)
        self.inner, self.chain, self.seed, self.version_number = inner, chain, seed, version
        self.name = f"{inner.name} (version {version})"  # the progress bar's and errors' name of this pass
        self.version = inner.version
        self.cacheable, self.uses_torch, self.imports = inner.cacheable, inner.uses_torch, inner.imports

    def perturbed(self, record: PatientRecord, folder: Path) -> PatientRecord:
        if record.inputs is None:  # nothing to perturb: the extractor reads no images
            return record
        seed = version_seed(self.seed, record.sample_id, self.version_number)
        inputs = perturbed_inputs(record.inputs, record.sample_id, perturbed_rois(self.inner, record), self.chain,
                                  seed, folder)  # fmt: skip
        return PatientRecord(record.sample_id, record.patient_id, record.clinical, inputs)

    def _in_temporary(self, record: PatientRecord, compute: Callable[[PatientRecord], Any]) -> Any:
        with tempfile.TemporaryDirectory(prefix="bench-perturbed-") as folder:
            return compute(self.perturbed(record, Path(folder)))

    def extract_patient(self, record: PatientRecord) -> dict[str, float]:
        return self._in_temporary(record, self.inner.extract_patient)

    def compute_entry(self, record: PatientRecord) -> dict[str, np.ndarray]:
        return self._in_temporary(record, self.inner.compute_entry)

    def entry_features(self, entry: dict[str, np.ndarray]) -> dict[str, float]:
        return self.inner.entry_features(entry)

    def cache_key(self, record: PatientRecord) -> str:
        """The original study's content, the extractor and its options, the chain and this version's seed."""
        options = {**self.inner.cache_options(), "perturbation": ",".join(map(str, self.chain)),
                   "perturbation_seed": version_seed(self.seed, record.sample_id, self.version_number),
                   "perturbed_rois": list(perturbed_rois(self.inner, record))}  # fmt: skip
        return entry_key(self.inner.name, self.inner.version, options, self.inner.cache_inputs(record))

    def missing_inputs(self, inputs) -> str:
        return self.inner.missing_inputs(inputs)

    def input_files(self, inputs) -> list[Path]:
        return self.inner.input_files(inputs)


@dataclass
class Versions:
    """One extractor's features under every version: ``values[i, v, f]`` of unit ``units[i]`` (a sample, or with
    retest a patient), version ``v`` (0: the original), feature ``names[f]``."""

    names: list[str]
    units: list[str]
    values: np.ndarray


def feature_versions(extractor: Extractor, cohort: Cohort, chain: tuple[Step, ...], repeats: int, seed: int,
                     executor: Executor | None = None, progress: bool = False,
                     cache: FeatureCache | None = None) -> Versions:  # fmt: skip
    """The extractor's features of the original studies and of ``repeats`` perturbed versions of each."""
    if repeats < 1:
        raise UsageError(f"--repeats must be at least 1 (perturbed versions per study), got {repeats}")
    _per_study(extractor)
    blocks = [extractor.extract(cohort, progress=progress, cache=cache, executor=executor)]
    for r in range(1, repeats + 1):
        version = PerturbedVersion(extractor, chain, seed, r)
        blocks.append(version.extract(cohort, progress=progress, cache=cache, executor=executor))
    names = _same_names(extractor, blocks)
    values = np.stack([b.frame[names].to_numpy(dtype=float) for b in blocks], axis=1)
    return Versions(names, list(cohort.sample_ids), values)


def retest_versions(extractor: Extractor, cohort: Cohort, executor: Executor | None = None, progress: bool = False,
                    cache: FeatureCache | None = None) -> Versions:  # fmt: skip
    """The extractor's features of each patient's scans (its samples, in manifest order) as that patient's versions."""
    by_patient: dict[str, list[int]] = {}
    for i, pid in enumerate(cohort.patient_ids):
        by_patient.setdefault(str(pid), []).append(i)
    counts = {len(rows) for rows in by_patient.values()}
    if max(counts) < 2:
        raise DataError(f"cohort {cohort.name!r} has one sample per patient: --retest needs each patient scanned at "
                        "least twice (several sample_id rows with the same patient_id)")  # fmt: skip
    if len(counts) > 1:
        pid, rows = next((p, r) for p, r in by_patient.items() if len(r) != max(counts))
        raise DataError(f"patient {pid!r} has {len(rows)} scan(s) and others {max(counts)}: --retest needs the "
                        "same number of samples for every patient; leave the incomplete ones out")  # fmt: skip
    _per_study(extractor)
    block = extractor.extract(cohort, progress=progress, cache=cache, executor=executor)
    names = _same_names(extractor, [block])
    frame = block.frame[names].to_numpy(dtype=float)
    values = np.stack([frame[rows] for rows in by_patient.values()])
    return Versions(names, list(by_patient), values)


def _per_study(extractor: Extractor) -> None:
    if type(extractor).extract_patient is Extractor.extract_patient:  # extract() alone: the whole cohort at once
        raise UsageError(f"extractor {extractor.name!r} computes the whole cohort at once, from no image of a "
                         "study: it has nothing to perturb; choose extractors that read images")  # fmt: skip


def _same_names(extractor: Extractor, blocks: list[FeatureBlock]) -> list[str]:
    names = list(blocks[0].frame.columns)
    for version, block in enumerate(blocks[1:], start=1):
        if list(block.frame.columns) != names:
            raise DataError(f"extractor {extractor.name!r} gave other feature names on perturbed version {version}; "
                            "its features must not depend on the mask's shape")  # fmt: skip
    return names


@dataclass(frozen=True)
class FeatureICC:
    name: str
    icc: float
    ci_low: float
    ci_high: float


def robustness(versions: Versions) -> list[FeatureICC]:
    """Each feature's ICC(2,1) and 95 % CI across the versions; a feature without one (``_measured``) is left out."""
    moving, icc = _measured(versions.values)
    kept = [n for n, m in zip(versions.names, moving) if m]
    return [FeatureICC(n, float(v), float(lo), float(hi))
            for n, v, lo, hi in zip(kept, icc.value, icc.ci_low, icc.ci_high)]  # fmt: skip


def _measured(values: np.ndarray) -> tuple[np.ndarray, ICC]:
    """Which features have an ICC, and theirs: a feature the same for every study and version has none (no
    variance to share), nor has one missing (NaN) anywhere."""
    moving = np.isfinite(values).all(axis=(0, 1)) & (np.ptp(np.nan_to_num(values), axis=(0, 1)) > 0)
    empty = np.empty(0)
    return moving, icc_a1(values[:, :, moving]) if moving.any() else ICC(empty, empty, empty)


def robust_block(block: FeatureBlock, extractor: Extractor, min_icc: float, cohort: Cohort, chain: tuple[Step, ...],
                 repeats: int, seed: int, executor: Executor | None, progress: bool) -> FeatureBlock:  # fmt: skip
    """``block`` with its columns' values under ``repeats`` perturbed versions of every study (cached like any
    features), from which each fold keeps the columns robust enough on its training rows (``robust_columns``)."""
    if block.sequence is not None:
        raise UsageError(f"extractor {extractor.name!r} gives per-slice sequences (pool=attention): min_icc selects "
                         "flat features only; use pool=mean")  # fmt: skip
    versions = feature_versions(extractor, cohort, chain, repeats, seed, executor, progress)
    order = [versions.names.index(c) for c in block.frame.columns]
    block.versions, block.min_icc = versions.values[:, :, order], min_icc
    return block


def robust_columns(block: FeatureBlock, rows: np.ndarray) -> list[str]:
    """The columns of a ``min_icc`` block whose ICC(2,1) across the versions of the studies ``rows`` (a fold's
    training rows: never its test rows) reaches the threshold; a column constant on those rows has none."""
    moving, measured = _measured(block.versions[rows])
    icc = np.full(len(moving), np.nan)
    icc[moving] = measured.value
    return [c for c, v in zip(block.frame.columns, icc) if np.isfinite(v) and v >= block.min_icc]
