"""Features under perturbed versions of real studies (``bench.protocol.robustness``): radiomics on IBSI
soft-tissue sarcoma PET with its tumour masks (tests/data/ibsi_sts), the tumour grown by 10 % per version."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.data.datasets import load_cohort
from bench.data.imaging.perturb import parse_chain
from bench.protocol.robustness import feature_versions, robustness
from bench.stats.icc import icc_a1
from feature_extractors.base import patient_records
from feature_extractors.radiomics import RadiomicsConfig, RadiomicsExtractor

from data_paths import STS_NIFTI as STS

PATIENTS = ["STS_001", "STS_002", "STS_003", "STS_004"]


def _cohort(folder: Path):
    table = pd.DataFrame({
        "patient_id": PATIENTS,
        "pet": [str(STS / p / "PET_image.nii.gz") for p in PATIENTS],
        "mask_tumour": [str(STS / p / "PET_mask.nii.gz") for p in PATIENTS],
        "time": [100, 200, 300, 400], "event": [1, 0, 1, 0],  # never read: robustness reads no outcome
    })  # fmt: skip
    table.to_csv(folder / "sts.csv", index=False)
    (folder / "m.yaml").write_text("format: 1\nname: sts4\ntable: sts.csv\nhorizons: [150]\ntau: 150\ncolumns: {}\n")
    return load_cohort(str(folder / "m.yaml"))


def _digest(paths) -> str:
    return hashlib.sha256(b"".join(Path(p).read_bytes() for p in paths)).hexdigest()


def test_versions_of_real_studies_move_the_shape_and_leave_the_originals_untouched(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    cohort = _cohort(tmp_path)
    files = [STS / p / n for p in PATIENTS for n in ("PET_image.nii.gz", "PET_mask.nii.gz")]
    before = _digest(files)
    extractor = RadiomicsExtractor(RadiomicsConfig(modality="pet", roi="tumour"))
    versions = feature_versions(extractor, cohort, parse_chain("volume:10%"), 2, 0)
    names, values = versions.names, versions.values
    assert values.shape == (4, 3, len(names)) and np.isfinite(values).all()
    assert versions.units == PATIENTS
    original = [extractor.extract_patient(r) for r in patient_records(cohort)]
    assert np.array_equal(values[:, 0, :], [[o[n] for n in names] for o in original]), "version 0 is the study"
    volume = names.index("pet_original_shape_VoxelVolume")
    assert values[:, 1, volume] == pytest.approx(1.1 * values[:, 0, volume], rel=0.02), "10 % more voxels"
    assert np.array_equal(values[:, 1], values[:, 2]), "volume:10% draws nothing: every version the same"
    assert _digest(files) == before, "the user's files are never written"
    icc = robustness(versions)
    reference = icc_a1(values[:, :, [names.index(f.name) for f in icc]])
    assert [f.icc for f in icc] == reference.value.tolist()
    assert all(-1 <= f.icc <= 1 for f in icc)

    def fails(self, record):
        raise AssertionError(f"{record.sample_id} computed again")

    monkeypatch.setattr(RadiomicsExtractor, "extract_patient", fails)
    again = feature_versions(extractor, cohort, parse_chain("volume:10%"), 2, 0)
    assert np.array_equal(again.values, values), "every version comes from the feature cache the second time"
    with pytest.raises(Exception, match="computed again"):  # another seed is another version: not in the cache
        feature_versions(extractor, cohort, parse_chain("volume:10%"), 2, 1)
