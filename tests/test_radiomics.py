"""The radiomics extractor against pyradiomics called directly, and the feature cache around it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml
from radiomics import featureextractor

from bench.cache import FeatureCache
from bench.data.datasets import load_cohort
from bench.data.inputs import StudyInputs
from bench.errors import ExtractionError
from bench.testing import count_extractions
from feature_extractors.base import PatientRecord
from feature_extractors.radiomics import RadiomicsConfig, RadiomicsExtractor

from data_paths import STS_NIFTI as STS

PATIENTS = ["STS_001", "STS_002", "STS_003"]
CLASSES = ("firstorder", "shape", "glcm", "glrlm", "glszm")


def _record(pid: str) -> PatientRecord:
    pet = STS / pid / "PET_image.nii.gz"
    inputs = StudyInputs(pet=pet, ct=pet, masks={"tumour": STS / pid / "PET_mask.nii.gz"})
    return PatientRecord(pid, pid, pd.Series(dtype=object), inputs)


def _direct(pid: str) -> dict[str, float]:
    """pyradiomics on the files, set up by hand with the documented defaults."""
    extractor = featureextractor.RadiomicsFeatureExtractor(binWidth=0.25, label=1, additionalInfo=False)
    extractor.disableAllFeatures()
    for name in CLASSES:
        extractor.enableFeatureClassByName(name)
    image = sitk.ReadImage(str(STS / pid / "PET_image.nii.gz"))
    mask = sitk.ReadImage(str(STS / pid / "PET_mask.nii.gz"))
    return {f"pet_{k}": float(np.asarray(v)) for k, v in extractor.execute(image, mask).items()
            if not k.startswith("diagnostics_")}  # fmt: skip


@pytest.mark.parametrize("pid", PATIENTS)
def test_matches_pyradiomics_called_directly(pid: str) -> None:
    ours = RadiomicsExtractor(RadiomicsConfig(roi="tumour")).extract_patient(_record(pid))
    reference = _direct(pid)
    assert set(ours) == set(reference) and len(ours) > 80
    for name, value in reference.items():
        assert ours[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name

    suv = sitk.GetArrayFromImage(sitk.ReadImage(str(STS / pid / "PET_image.nii.gz")))
    inside = sitk.GetArrayFromImage(sitk.ReadImage(str(STS / pid / "PET_mask.nii.gz"))) > 0
    assert ours["pet_original_firstorder_Maximum"] == pytest.approx(float(suv[inside].max()), rel=1e-9)


def _manifest(root: Path, pet_override: dict[str, Path] | None = None) -> Path:
    rows = []
    for i, pid in enumerate(PATIENTS):
        pet = (pet_override or {}).get(pid, STS / pid / "PET_image.nii.gz")
        rows.append({"patient_id": pid, "pet": str(pet), "ct": str(pet), "time": 100 + 50 * i, "event": i % 2,
                     "mask_tumour": str(STS / pid / "PET_mask.nii.gz"), "age": 50 + i})  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "patients.csv", index=False)
    header = {"name": "sts", "table": "patients.csv", "horizons": [120], "tau": 200, "columns": {"age": "numeric"}}
    (root / "manifest.yaml").write_text(yaml.safe_dump(header))
    return root / "manifest.yaml"


def test_cache_hit_corruption_and_failed_patients(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = FeatureCache(tmp_path / "cache")
    cohort = load_cohort(str(_manifest(tmp_path)))
    extractor = RadiomicsExtractor(RadiomicsConfig(roi="tumour", feature_classes=("firstorder",)))
    calls = count_extractions(monkeypatch, RadiomicsExtractor)
    first = extractor.extract(cohort, progress=False, cache=cache)
    assert calls == PATIENTS and cache.info()[0] == 3
    calls.clear()
    second = extractor.extract(cohort, progress=False, cache=cache)
    assert calls == [] and second.frame.equals(first.frame), "every extraction happens once"

    damaged = sorted(cache.root.rglob("*.npz"))[0]
    damaged.write_bytes(damaged.read_bytes()[:100])
    third = extractor.extract(cohort, progress=False, cache=cache)
    assert len(calls) == 1 and third.frame.equals(first.frame), "a damaged entry is recomputed, not used"

    other = RadiomicsExtractor(RadiomicsConfig(roi="tumour", feature_classes=("firstorder",), bin_width_pet=0.5))
    calls.clear()
    other.extract(cohort, progress=False, cache=cache)
    assert len(calls) == 3, "options are part of the key"

    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    truncated = broken_dir / "pet.nii.gz"
    truncated.write_bytes((STS / "STS_002" / "PET_image.nii.gz").read_bytes()[:300])
    bad = load_cohort(str(_manifest(broken_dir, {"STS_002": truncated})))
    fresh = FeatureCache(tmp_path / "fresh")
    with pytest.raises(
        ExtractionError, match=r"failed for 1 of 3 patients: STS_002 .*truncated.*the others are cached"
    ):
        extractor.extract(bad, progress=False, cache=fresh)
    assert fresh.info()[0] == 2


def test_params_file_replaces_the_settings(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"setting": {"binWidth": 1.0, "label": 1}, "featureClass": {"firstorder": []}}))
    ours = RadiomicsExtractor(RadiomicsConfig(roi="tumour", params_file=str(params))).extract_patient(
        _record("STS_001")
    )
    reference = featureextractor.RadiomicsFeatureExtractor(str(params)).execute(
        sitk.ReadImage(str(STS / "STS_001" / "PET_image.nii.gz")),
        sitk.ReadImage(str(STS / "STS_001" / "PET_mask.nii.gz")),
    )
    assert ours["pet_original_firstorder_Entropy"] == pytest.approx(float(reference["original_firstorder_Entropy"]))
    assert not any("glcm" in k for k in ours)


def test_radiomics_runs_through_bench_on_the_tiny_cohort(tmp_path: Path, synthetic_data: Path) -> None:
    from bench.testing import run_cli

    env = {"BENCH_DATA_DIR": str(synthetic_data), "BENCH_CACHE_DIR": str(tmp_path / "cache")}
    result = run_cli(
        "run", "--dataset", "synthetic_mm_tiny", "--extractor", "radiomics:feature_classes=firstorder",
        "--model", "coxnet", "--bootstrap", "50", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--quiet",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "| radiomics[feature_classes=firstorder] | coxnet |" in result.stdout, result.stdout
    assert len(list((tmp_path / "cache" / "features").rglob("*.npz"))) == 24


def test_cache_cli_info_and_clear(tmp_path: Path) -> None:
    from bench.testing import run_cli

    env = {"BENCH_CACHE_DIR": str(tmp_path)}
    FeatureCache(tmp_path / "features").put("ab" * 32, {"values": np.arange(3.0)})
    info = run_cli("cache", "info", env=env)
    assert info.returncode == 0 and "1 feature entries" in info.stdout
    cleared = run_cli("cache", "clear", env=env)
    assert cleared.returncode == 0 and "removed 1 feature entries" in cleared.stdout
    assert "0 feature entries" in run_cli("cache", "info", env=env).stdout


def test_parallel_extraction_equals_serial(tmp_path: Path) -> None:
    cohort = load_cohort(str(_manifest(tmp_path)))
    extractor = RadiomicsExtractor(RadiomicsConfig(roi="tumour", feature_classes=("firstorder", "glcm")))
    serial = extractor.extract(cohort, progress=False, cache=FeatureCache(tmp_path / "a"))
    parallel = extractor.extract(cohort, progress=False, cache=FeatureCache(tmp_path / "b"), workers=2)
    pd.testing.assert_frame_equal(serial.frame, parallel.frame)
    assert FeatureCache(tmp_path / "b").info()[0] == 3
