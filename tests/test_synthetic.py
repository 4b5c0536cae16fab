"""The synthetic multiple-myeloma cohort, checked from what it writes.

Every number is measured here from the tables and images with code of its own
(thresholds, connected components, resampling): nothing the generator reports
about itself is taken on trust, except the truth table the measurements are
compared with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml
from scipy import ndimage, stats

from bench.data import synthetic
from bench.data.synthetic import PRESETS, generate, render_patient, sample_patients
from bench.errors import DataError, UnknownNameError
from bench.stats.engine import concordance

SKELETON = (10, 11, 20)  # cortical bone, marrow and the focal lesions inside them
CLINICAL = ["age", "sex", "b2m", "albumin", "iss", "ldh", "high_risk_cytogenetics", "transplant"]
TINY_SECONDS = 60.0  # a loose guard; it takes about 3 s on a 2-core laptop


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """The tiny preset generated once (seed 0), with its tables and its generation time."""
    out = tmp_path_factory.mktemp("synthetic") / "tiny-seed0"
    start = time.perf_counter()
    manifest = generate("tiny", 0, out, progress=False)
    seconds = time.perf_counter() - start
    header = yaml.safe_load(manifest.read_text())
    table = pd.read_csv(out / header["table"], dtype={"patient_id": str})
    truth = pd.read_csv(out / header["truth"], dtype={"patient_id": str}).set_index("patient_id")
    assert len(table) == PRESETS["tiny"].n_patients == 24, "the tests loop over these rows: none would check nothing"
    return {"root": out, "manifest": manifest, "header": header, "table": table, "truth": truth, "seconds": seconds}


def _image(root: Path, relative: str) -> sitk.Image:
    return sitk.ReadImage(str(root / relative))


def _array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def _bounding_box(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Physical extent of the voxels (edges, not centres) of an image."""
    size = np.array(image.GetSize())
    corners = [
        image.TransformContinuousIndexToPhysicalPoint([(-0.5 if c == 0 else n - 0.5) for c, n in zip(corner, size)])
        for corner in np.ndindex(2, 2, 2)
    ]
    corners = np.array(corners)
    return corners.min(axis=0), corners.max(axis=0)


def _sha256_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------- risk model (no images)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_cohort_true_risk_discriminates_and_imaging_adds_to_clinical(seed):
    patients = sample_patients("paper", seed)
    assert len(patients) == 227
    event = patients["event"].to_numpy(bool)
    time_ = patients["time"].to_numpy(float)
    c_true = concordance(event, time_, patients["lp"].to_numpy())[0]
    c_clinical = concordance(event, time_, patients["lp_clinical"].to_numpy())[0]
    assert 0.72 <= c_true <= 0.82, c_true
    assert c_true - c_clinical >= 0.04, (c_true, c_clinical)
    assert 0.4 <= event.mean() <= 0.65, event.mean()


def test_patients_are_deterministic_and_depend_on_preset_and_seed():
    a, b = sample_patients("paper", 7), sample_patients("paper", 7)
    pd.testing.assert_frame_equal(a, b)
    assert not a["time"].equals(sample_patients("paper", 8)["time"])
    assert not sample_patients("demo", 7)["time"].head(50).equals(a["time"].head(50))


def test_paper_table_is_clinically_plausible():
    p = sample_patients("paper", 0)
    assert p["patient_id"].is_unique and p["patient_id"].iloc[0] == "MM0001"
    b2m, albumin = p["b2m"], p["albumin"]
    expected = np.where(b2m >= 5.5, "III", np.where((b2m < 3.5) & (albumin >= 3.5), "I", "II"))
    assert (p["iss"].to_numpy() == expected).all()
    assert set(p["iss"]) == {"I", "II", "III"}
    assert 0.01 <= p["ldh"].isna().mean() <= 0.12  # a few missing values, for imputation
    assert p["age"].between(30, 90).all() and set(p["sex"]) == {"F", "M"}
    counts = p["n_lesions"]
    assert (counts == 0).mean() > 0.1 and counts.max() >= 30  # none to many focal lesions
    suvmax = p.loc[counts > 0, "lesion_suvmax"]
    assert suvmax.between(3, 15).all() and p.loc[counts == 0, "lesion_suvmax"].isna().all()
    assert p["marrow_suv"].between(1.3, 5.5).all() and (p["marrow_suv"] > 2.5).mean() > 0.1
    assert 0 < p["emd"].mean() < 0.2
    assert (p["time"] >= 1).all() and set(p["event"]) == {0, 1}
    # Every horizon lies inside follow-up: a good share of the cohort is still at risk at tau.
    for horizon in (*synthetic.HORIZONS, synthetic.TAU):
        assert (p["time"] >= horizon).mean() >= 0.15, horizon


# ---------------------------------------------------------------- images


def test_tiny_generates_in_seconds(tiny):
    assert tiny["seconds"] < TINY_SECONDS, tiny["seconds"]


def test_focal_lesions_counted_from_pet_follow_the_truth(tiny):
    root, table, truth = tiny["root"], tiny["table"], tiny["truth"]
    counted, true_counts, labelled = [], [], []
    for _, row in table.iterrows():
        pet = _array(_image(root, row["pet"]))
        labels = _array(_image(root, truth.loc[row["patient_id"], "labels"]))
        skeleton = np.isin(labels, SKELETON)
        marrow = np.median(pet[labels == 11])
        threshold = max(marrow + 1.5, 3.0)
        _, n = ndimage.label((pet > threshold) & skeleton, structure=np.ones((3, 3, 3)))
        counted.append(n)
        true_counts.append(int(truth.loc[row["patient_id"], "n_lesions"]))
        labelled.append(ndimage.label(labels == 20, structure=np.ones((3, 3, 3)))[1])
    true_counts = np.array(true_counts)
    assert len(true_counts) >= 20 and len(set(true_counts)) >= 6 and true_counts.max() >= 15  # a spread of counts
    rho = stats.spearmanr(true_counts, counted)[0]
    assert rho >= 0.8, (rho, list(zip(true_counts, counted)))
    # The label map holds one separate blob per lesion.
    assert labelled == true_counts.tolist()


def test_diffuse_marrow_uptake_and_extramedullary_disease_are_in_the_pet(tiny):
    root, table, truth = tiny["root"], tiny["table"], tiny["truth"]
    measured, true_marrow, with_emd = [], [], 0
    for _, row in table.iterrows():
        pet = _array(_image(root, row["pet"]))
        labels = _array(_image(root, truth.loc[row["patient_id"], "labels"]))
        measured.append(np.median(pet[labels == 11]))
        true_marrow.append(truth.loc[row["patient_id"], "marrow_suv"])
        has_emd = (labels == 21).any()
        assert has_emd == bool(truth.loc[row["patient_id"], "emd"])
        if has_emd:
            with_emd += 1
            assert pet[labels == 21].max() > 3.0
    assert with_emd >= 2, f"{with_emd} patients with extramedullary disease: its uptake is barely checked"
    assert stats.spearmanr(true_marrow, measured)[0] >= 0.9


def test_tissue_values_of_pet_and_ct(tiny):
    root, table, truth = tiny["root"], tiny["table"], tiny["truth"]
    with_lesions = 0
    for _, row in table.iterrows():
        pet = _image(root, row["pet"])
        ct = _image(root, row["ct"])
        labels = _array(_image(root, truth.loc[row["patient_id"], "labels"]))
        suv = _array(pet)
        hu_full = _array(ct)
        hu = _array(sitk.Resample(ct, pet, sitk.Transform(), sitk.sitkNearestNeighbor, -1000.0))
        assert suv.dtype == np.float32 and hu_full.dtype == np.float32 and labels.dtype == np.uint8

        def median(values, label, labels=labels):
            return float(np.median(values[labels == label]))

        assert median(suv, 0) < 0.05 and median(hu, 0) == -1000
        assert 0.3 <= median(suv, 1) <= 1.3 and -120 <= median(hu, 1) <= 60  # fat and muscle
        assert median(suv, 2) < 0.7 and -900 <= median(hu, 2) <= -780  # lungs
        assert 1.8 <= median(suv, 3) <= 3.2 and 40 <= median(hu, 3) <= 80  # liver
        assert 4.0 <= median(suv, 5) <= 16.0  # bladder
        assert 1.1 <= median(suv, 6) <= 2.0  # blood pool
        assert 1.2 <= median(suv, 11) <= 5.5 and 130 <= median(hu, 11) <= 320  # marrow
        assert 650 <= median(hu, 10) <= 1000  # cortical shell
        fat = hu_full[(hu_full > -300) & (hu_full < -50)]  # between air or lung and soft tissue: only fat
        assert -120 <= np.median(fat) <= -80
        dense = hu_full[hu_full > 500]
        assert 700 <= np.median(dense) <= 1000 and hu_full.max() < 1100
        if (labels == 20).any():
            with_lesions += 1
            assert suv[labels == 20].max() >= 3.0
    assert with_lesions >= len(table) // 2, f"lesion uptake checked on {with_lesions} of {len(table)} patients"


def test_whole_body_anatomy():
    """Brain, skull and the spine's place, on one patient rendered skull to thigh at the tiny resolution."""
    preset = dataclasses.replace(PRESETS["tiny"], z_extent=PRESETS["paper"].z_extent)
    row = sample_patients(preset, 0).iloc[0]
    pet, ct, label_image = render_patient(row, preset, 0)
    suv, labels = _array(pet), _array(label_image)
    hu = _array(sitk.Resample(ct, pet, sitk.Transform(), sitk.sitkNearestNeighbor, -1000.0))
    assert 5.0 <= np.median(suv[labels == 4]) <= 10.5 and 20 <= np.median(hu[labels == 4]) <= 50
    for label in (1, 2, 3, 4, 5, 6, 10, 11):
        assert (labels == label).any(), label
    # The skull caps the brain; the spine runs behind the centre of the body.
    z_brain = np.nonzero((labels == 4).any(axis=(1, 2)))[0]
    z_bone = np.nonzero(np.isin(labels, SKELETON).any(axis=(1, 2)))[0]
    assert z_bone.max() > z_brain.max()
    x = np.array([pet.TransformIndexToPhysicalPoint((i, 0, 0))[0] for i in range(pet.GetSize()[0])])
    body = labels > 0
    midline_bone = np.isin(labels, SKELETON) & (np.abs(x - x[body.any(axis=(0, 1))].mean())[None, None, :] < 25)
    y_body = np.nonzero(body)[1].mean()
    assert np.nonzero(midline_bone)[1].mean() > y_body + 20 / pet.GetSpacing()[1]


def test_manifest_table_and_grids(tiny):
    root, header, table, truth = tiny["root"], tiny["header"], tiny["table"], tiny["truth"]
    assert header["format"] == 1 and header["name"] == "synthetic_mm_tiny"
    assert header["table"] == "patients.csv" and header["truth"] == "truth.csv"
    assert header["pet_units"] == "suv" and header["time_unit"] == "days"
    assert list(header["horizons"]) == sorted(header["horizons"]) and header["tau"] <= max(header["horizons"])
    assert list(table.columns) == ["patient_id", "pet", "ct", "time", "event", *CLINICAL]
    assert set(header["columns"]) == set(CLINICAL)
    leaks = {"patient_id", "pet", "ct", "time", "event", *truth.columns}
    assert not set(header["columns"]) & leaks
    assert header["columns"]["iss"] == {"kind": "ordinal", "categories": ["I", "II", "III"]}
    assert len(table) == 24 and table["patient_id"].is_unique and list(truth.index) == list(table["patient_id"])
    assert set(table["event"]) <= {0, 1} and (table["time"] > 0).all()
    expected_iss = np.where(
        table["b2m"] >= 5.5, "III", np.where((table["b2m"] < 3.5) & (table["albumin"] >= 3.5), "I", "II")
    )
    assert (table["iss"].to_numpy() == expected_iss).all()
    assert table["ldh"].dropna().gt(0).all() and table["ldh"].isna().any()  # imputation has work to do

    shapes = set()
    for _, row in table.iterrows():
        assert (root / row["pet"]).is_file() and (root / row["ct"]).is_file()
        pet, ct = _image(root, row["pet"]), _image(root, row["ct"])
        labels = _image(root, truth.loc[row["patient_id"], "labels"])
        assert labels.GetSize() == pet.GetSize() and labels.GetOrigin() == pet.GetOrigin()
        assert ct.GetSpacing()[0] < pet.GetSpacing()[0] and ct.GetSpacing()[1] < pet.GetSpacing()[1]
        assert ct.GetOrigin() != pet.GetOrigin() and ct.GetSize() != pet.GetSize()
        lo_p, hi_p = _bounding_box(pet)
        lo_c, hi_c = _bounding_box(ct)
        overlap = np.prod(np.clip(np.minimum(hi_p, hi_c) - np.maximum(lo_p, lo_c), 0, None))
        assert overlap >= 0.95 * np.prod(hi_p - lo_p)  # they cover the same body
        assert np.allclose(np.array(pet.GetDirection()), np.eye(3).ravel())
        shapes.add(pet.GetSize())
    assert len(shapes) > 3  # patients differ in height, so in the number of slices


# ---------------------------------------------------------------- determinism and safe writing


def test_same_seed_same_bytes_different_seed_different_bytes(tiny, synthetic_data, tmp_path):
    again = synthetic_data / "synthetic_mm-tiny-seed0"  # the session's: generated apart from `tiny`, seed 0 too
    first = _sha256_tree(tiny["root"])
    assert _sha256_tree(again) == first
    other = _sha256_tree(generate("tiny", 1, tmp_path / "other", progress=False).parent)
    assert set(other) == set(first)
    changed = [name for name in first if other[name] != first[name]]
    images = [name for name in first if name.endswith(".nii.gz")]
    assert len(images) == 3 * 24, "PET, CT and labels of each patient"
    assert "patients.csv" in changed and "truth.csv" in changed
    assert len([name for name in changed if name.endswith(".nii.gz")]) == len(images)


def test_parallel_workers_write_the_same_bytes(tmp_path):
    small = dataclasses.replace(PRESETS["tiny"], n_patients=4)
    one = generate(small, 3, tmp_path / "one", progress=False, workers=1).parent
    two = generate(small, 3, tmp_path / "two", progress=False, workers=2).parent
    assert _sha256_tree(one) == _sha256_tree(two)


def test_refuses_a_non_empty_folder_and_can_overwrite(tmp_path):
    small = dataclasses.replace(PRESETS["tiny"], n_patients=2)
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        generate(small, 0, out, progress=False)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    generate(small, 0, out, progress=False, overwrite=True)
    assert not (out / "notes.txt").exists() and (out / "manifest.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]  # no temporary folder left
    empty = tmp_path / "empty"
    empty.mkdir()
    assert generate(small, 0, empty, progress=False) == empty / "manifest.yaml"


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])  # a bug, and Ctrl-C
def test_an_interrupted_run_leaves_nothing_behind(tmp_path, monkeypatch, error):
    calls = []
    real = synthetic.render_patient

    def failing(row, preset, seed):
        calls.append(row["patient_id"])
        if len(calls) == 3:
            raise error("stop")
        return real(row, preset, seed)

    monkeypatch.setattr(synthetic.writing, "render_patient", failing)
    with pytest.raises(error):
        generate("tiny", 0, tmp_path / "cohort", progress=False)
    assert len(calls) == 3
    assert list(tmp_path.iterdir()) == []


def test_unknown_preset_lists_the_valid_ones(tmp_path):
    with pytest.raises(UnknownNameError, match="tiny, demo, paper"):
        generate("huge", 0, tmp_path / "x", progress=False)
