"""Features of every study under K perturbed versions, and their ICC per feature (issue 27; the command and its
page build on this).

Version 0 is the study as it is; version r (1..K) is the study after the perturbation chain seeded by the run's
seed, the sample and r, written into a folder of the caller's (``bench.data.imaging.perturbed``). Outcomes are
never read: only the records' images and clinical values reach the extractor.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from bench.data.cohort import Cohort
from bench.data.imaging.perturb import Step
from bench.data.imaging.perturbed import perturbed_inputs
from bench.stats.icc import ICC, icc_a1
from feature_extractors.base import Extractor, PatientRecord, patient_records


def version_seed(seed: int, sample_id: str, version: int) -> int:
    """A version's perturbation seed: a pure function of the run's seed, the sample and the version."""
    digest = hashlib.sha256(f"{seed}:{sample_id}:{version}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def feature_versions(extractor: Extractor, cohort: Cohort, rois: tuple[str, ...], chain: tuple[Step, ...],
                     repeats: int, seed: int, folder: Path) -> tuple[list[str], np.ndarray]:  # fmt: skip
    """The extractor's feature names and values (samples, 1 + repeats, features): the original, then each
    perturbed version; perturbed files go under ``folder``."""
    rows = []
    names: list[str] | None = None
    for record in patient_records(cohort):
        versions = [extractor.extract_patient(record)]
        for r in range(1, repeats + 1):
            where = folder / record.sample_id / f"v{r}"
            inputs = perturbed_inputs(record.study_inputs(extractor.name), record.sample_id, rois, chain,
                                      version_seed(seed, record.sample_id, r), where)  # fmt: skip
            versions.append(extractor.extract_patient(PatientRecord(record.sample_id, record.patient_id,
                                                                    record.clinical, inputs)))  # fmt: skip
        names = names or list(versions[0])
        rows.append([[float(v[n]) for n in names] for v in versions])
    return names or [], np.asarray(rows, dtype=float)


def robustness(names: list[str], values: np.ndarray) -> dict[str, tuple[float, float, float]]:
    """Each feature's ICC(2,1) and 95 % CI across the versions (features the same everywhere are left out)."""
    moving = np.ptp(values, axis=(0, 1)) > 0
    icc: ICC = icc_a1(values[:, :, moving])
    kept = [n for n, m in zip(names, moving) if m]
    return {n: (float(v), float(lo), float(hi)) for n, v, lo, hi in zip(kept, icc.value, icc.ci_low, icc.ci_high)}
