"""Every imaging extractor on real PET/CT (IBSI soft-tissue sarcoma) and on the tiny synthetic cohort.

The real studies come from ``tests/data/ibsi_sts`` (read in place):
PET in SUV and, for four patients, CT on its own finer grid with its own tumour mask.
Both masks enter a manifest as two ROIs, so each modality is described inside the
contour drawn on it, through the same manifest path a user's cohort takes. resnet3d,
medsam2_memory and timm run with their smoke options (explicit random-init controls, coarse
voxels; one slice on two patients for MedSAM2, to keep the file quick): this checks that the pipelines run on real images and give
usable vectors, not what pretrained weights would make of them.

The expected lengths come from outside the extractors: pyradiomics' own feature
registry, the width of torchvision's R3D-18 classifier input, the memory
encoder's ``out_dim`` in sam2's model config, and timm's ``num_features`` of the backbone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bench.data.datasets import load_cohort
from bench.plugins.options import build_config
from bench.plugins.registry import EXTRACTORS

from data_paths import STS_NIFTI as STS

WITH_CT = ["STS_008", "STS_019", "STS_025"]  # three of the four patients that have a CT
N_PATIENTS = 3  # per cohort; the real one has exactly three (those with CT)
EXTRACTOR_NAMES = ["radiomics", "resnet3d", "medsam2_memory", "timm"]
# MedSAM2's image encoder costs about a second per 512-px slice on two CPU cores: two patients, one slice each.
FEWER = {"medsam2_memory": ({"max_slices": "1"}, 2)}
# (cohort, modality, roi): on the real data each modality uses the contour drawn on its own image
CASES = [
    ("ibsi_sts", "pet", "gtv_pet"),
    ("ibsi_sts", "ct", "gtv_ct"),
    ("synthetic_mm_tiny", "pet", "skeleton"),
    ("synthetic_mm_tiny", "ct", "skeleton"),
]


def expected_names(name: str, config) -> list[str]:
    """The feature names each extractor documents, from an independent source where there is one."""
    if name == "radiomics":
        from radiomics import getFeatureClasses

        classes = getFeatureClasses()
        modalities = ["pet", "ct"] if config.modality == "both" else [config.modality]
        return [
            f"{modality}_original_{cls}_{feature}"
            for modality in modalities
            for cls in config.feature_classes
            for feature, deprecated in classes[cls].getFeatureNames().items()
            if not deprecated
        ]
    if name == "resnet3d":
        from torchvision.models.video import r3d_18

        width = r3d_18(weights=None).fc.in_features  # the global-pooled features the classifier reads
        assert width == 512
        return [f"r3d_{i:03d}" for i in range(width)]
    if name == "medsam2_memory":
        import sam2
        from omegaconf import OmegaConf

        from feature_extractors.medsam2_memory import CONFIG_FILE

        channels = OmegaConf.load(Path(sam2.__file__).parent / CONFIG_FILE).model.memory_encoder.out_dim
        assert channels == 64
        return [f"mem_{i:03d}" for i in range(channels)]
    if name == "timm":
        import timm

        width = timm.create_model(config.model, pretrained=False).num_features  # what forward_head's pre-logits gives
        return [f"timm_{i:03d}" for i in range(width)]
    raise AssertionError(f"no expected names for {name!r}")


def sts_manifest(root: Path) -> Path:
    """A user manifest over the real studies: PET, CT, and each modality's tumour mask as its own ROI."""
    rows = [
        {
            "patient_id": pid,
            "pet": str(STS / pid / "PET_image.nii.gz"),
            "ct": str(STS / pid / "CT_image.nii.gz"),
            "mask_gtv_pet": str(STS / pid / "PET_mask.nii.gz"),
            "mask_gtv_ct": str(STS / pid / "CT_mask.nii.gz"),
            "time": 100 + 50 * i,
            "event": i % 2,
            "age": 50 + i,
        }
        for i, pid in enumerate(WITH_CT)
    ]
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "patients.csv", index=False)
    header = {"name": "ibsi_sts", "table": "patients.csv", "horizons": [120], "tau": 200, "pet_units": "suv",
              "columns": {"age": "numeric"}}  # fmt: skip
    (root / "manifest.yaml").write_text(yaml.safe_dump(header))
    return root / "manifest.yaml"


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory: pytest.TempPathFactory, synthetic_data: Path) -> dict:
    root = tmp_path_factory.mktemp("real_data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_DATA_DIR", str(synthetic_data))
        mp.setenv("BENCH_CACHE_DIR", str(root / "cache"))
        tiny = load_cohort("synthetic_mm_tiny").subset(range(N_PATIENTS))
    return {"ibsi_sts": load_cohort(str(sts_manifest(root / "sts"))), "synthetic_mm_tiny": tiny}


def test_every_sts_patient_here_has_pet_ct_and_both_masks() -> None:
    for pid in WITH_CT:
        for what in ("PET_image", "PET_mask", "CT_image", "CT_mask"):
            assert (STS / pid / f"{what}.nii.gz").is_file(), f"{pid}/{what}"


@pytest.mark.parametrize(("cohort_name", "modality", "roi"), CASES, ids=[f"{c}-{m}" for c, m, _ in CASES])
@pytest.mark.parametrize("name", EXTRACTOR_NAMES)
def test_finite_vectors_of_the_declared_length(
    name: str, cohort_name: str, modality: str, roi: str, cohorts: dict, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))  # masks and features: this test's own
    options, n_patients = FEWER.get(name, ({}, N_PATIENTS))
    cohort = cohorts[cohort_name].subset(range(n_patients))
    cls = EXTRACTORS.load(name)
    config = build_config(cls.Config, {**cls.smoke_options, **options, "modality": modality, "roi": roi}, name)
    block = cls(config).extract(cohort, progress=False)

    frame = block.frame
    assert list(frame.index) == list(cohort.sample_ids), "one row per patient, in cohort order"
    expected = expected_names(name, config)
    if name == "radiomics":  # pyradiomics decides the order (shape first); the names are what is documented
        assert sorted(frame.columns) == sorted(expected) and len(set(expected)) == len(expected)
    else:
        assert list(frame.columns) == expected
    values = frame.to_numpy()
    assert np.isfinite(values).all(), frame.columns[~np.isfinite(values).all(axis=0)].tolist()
    # Patients differ: no two rows are the same, and most features vary between patients.
    for i in range(len(values)):
        for j in range(i):
            assert not np.array_equal(values[i], values[j]), f"{frame.index[i]} == {frame.index[j]}"
    varying = (values.max(axis=0) - values.min(axis=0)) > 1e-9 * (1 + np.abs(values).max(axis=0))
    assert varying.mean() > 0.5, f"only {varying.sum()} of {len(varying)} features vary between patients"
