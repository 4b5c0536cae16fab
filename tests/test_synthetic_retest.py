"""The synthetic test-retest cohort (preset ``retest``): each patient scanned twice, measured from the files.

The displacement, the uptake change and the noise of the rescan are measured here with code of
their own (centres of mass, sums, correlations) and compared with the issue's specification
(2 to 4 mm, |u| <= 5 %) and with the draws; nothing the images contain is taken from the generator.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml
from scipy import ndimage

from bench.data.datasets import load_cohort
from bench.data.synthetic import LABELS, PRESETS, generate
from bench.data.synthetic.render import rescan_change
from bench.testing import run_cli

SHIFT_MM = (2.0, 4.0)  # the specification of the rescan's displacement
UPTAKE = 0.05  # and of its uptake change, |u| <= 5 %
# Centres of binary shapes on 8 mm slices are good to about an eighth of a voxel; the CT's 4 mm in-plane grid
# and the PET's blurred whole body give finer and coarser bounds.
SLICE_TOLERANCE_MM = 1.0
CT_INPLANE_TOLERANCE_MM = 0.5
# Thin bones point-sampled at 8 mm and slices entering or leaving the field of view change the total a little.
TOTAL_ACTIVITY_TOLERANCE = 0.015


@pytest.fixture(scope="module")
def retest(synthetic_retest_data: Path) -> dict:
    """The retest preset generated once (seed 0), in a data folder laid out as ``$BENCH_DATA_DIR``."""
    data_dir = synthetic_retest_data
    manifest = data_dir / "synthetic_mm-retest-seed0" / "manifest.yaml"
    root = manifest.parent
    header = yaml.safe_load(manifest.read_text())
    table = pd.read_csv(root / header["table"], dtype={"patient_id": str})
    patients = list(dict.fromkeys(table["patient_id"]))
    assert len(patients) == PRESETS["retest"].n_patients == 24, "the tests loop over these: none would check nothing"
    return {"data_dir": data_dir, "root": root, "manifest": manifest, "header": header, "patients": patients}


def _read(root: Path, patient: str, scan: str, what: str) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(root / "images" / patient / scan / f"{what}.nii.gz"))
    return sitk.GetArrayFromImage(image).astype(float), image


def _centre(weights: np.ndarray, image: sitk.Image) -> np.ndarray:
    """Centre of mass (x, y, z) in mm of an array on an image's grid."""
    index = np.array(ndimage.center_of_mass(weights))[::-1]
    return np.array(image.TransformContinuousIndexToPhysicalPoint(index.tolist()))


def _sha256_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_cohort_loads_as_two_samples_per_patient(retest, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(retest["data_dir"]))
    cohort = load_cohort("synthetic_mm_retest")  # the registered dataset finds the cohort already generated
    assert cohort.name == "synthetic_mm_retest" and retest["header"]["synthetic"]["rescan"] is True
    assert cohort.n == 48 and len(set(cohort.patient_ids)) == 24
    expected = [f"{pid}_{scan}" for pid in retest["patients"] for scan in ("scan1", "scan2")]
    assert list(cohort.sample_ids) == expected
    for pid in retest["patients"]:
        rows = np.flatnonzero(cohort.patient_ids == pid)
        assert len(rows) == 2
        assert cohort.time[rows[0]] == cohort.time[rows[1]] and cohort.event[rows[0]] == cohort.event[rows[1]]
        pair = cohort.clinical.iloc[rows]
        assert pair.iloc[0].equals(pair.iloc[1]), f"{pid}: clinical values differ between the scans"
        for row, scan in zip(rows, ("scan1", "scan2")):
            study = cohort.inputs[cohort.sample_ids[row]]
            assert study.pet == retest["root"] / "images" / pid / scan / "pet.nii.gz" and study.pet.is_file()
            assert study.ct == retest["root"] / "images" / pid / scan / "ct.nii.gz" and study.ct.is_file()
    truth = cohort.truth
    assert list(truth.index) == retest["patients"], "the truth stays one row per patient"
    for pid in retest["patients"]:
        assert truth.loc[pid, "labels"] == f"images/{pid}/scan1/labels.nii.gz"
        assert truth.loc[pid, "labels_scan2"] == f"images/{pid}/scan2/labels.nii.gz"
        assert (retest["root"] / truth.loc[pid, "labels_scan2"]).is_file()


def test_first_scan_is_what_the_generator_writes_without_rescan(retest, tmp_path):
    single = dataclasses.replace(PRESETS["retest"], rescan=False)
    out = generate(single, 0, tmp_path / "single", progress=False).parent
    for pid in retest["patients"]:
        for what in ("pet", "ct", "labels"):
            once = (out / "images" / pid / f"{what}.nii.gz").read_bytes()
            assert once == (retest["root"] / "images" / pid / "scan1" / f"{what}.nii.gz").read_bytes(), (pid, what)
    plain = pd.read_csv(out / "patients.csv", dtype=str)
    pairs = pd.read_csv(retest["root"] / "patients.csv", dtype=str)
    assert "sample_id" not in plain.columns
    assert "rescan" not in yaml.safe_load((out / "manifest.yaml").read_text())["synthetic"]
    first = pairs[pairs["sample_id"].str.endswith("_scan1")].drop(columns="sample_id").reset_index(drop=True)
    unchanged = [c for c in plain.columns if c not in ("pet", "ct")]
    pd.testing.assert_frame_equal(first[unchanged], plain[unchanged])
    second = pairs[pairs["sample_id"].str.endswith("_scan2")].drop(columns="sample_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(second[unchanged], plain[unchanged])


def test_rescan_is_displaced_2_to_4_mm_with_pet_ct_and_labels_together(retest):
    root, liver = retest["root"], LABELS["liver"]
    in_plane = []
    for pid in retest["patients"]:
        drawn, _ = rescan_change("retest", 0, pid)
        ct1, ct_image = _read(root, pid, "scan1", "ct")
        ct2, _ = _read(root, pid, "scan2", "ct")
        lab1, pet_image = _read(root, pid, "scan1", "labels")
        lab2, _ = _read(root, pid, "scan2", "labels")
        pet1, _ = _read(root, pid, "scan1", "pet")
        pet2, _ = _read(root, pid, "scan2", "pet")
        # In-plane from the body's outline on the CT (wholly inside the field of view); along z from the liver.
        body = _centre(ct2 > -500, ct_image) - _centre(ct1 > -500, ct_image)
        organ = _centre(lab2 == liver, pet_image) - _centre(lab1 == liver, pet_image)
        measured = np.array([body[0], body[1], organ[2]])
        length = float(np.linalg.norm(measured))
        assert SHIFT_MM[0] - SLICE_TOLERANCE_MM <= length <= SHIFT_MM[1] + SLICE_TOLERANCE_MM, (pid, measured)
        assert SHIFT_MM[0] <= np.linalg.norm(drawn) <= SHIFT_MM[1], (pid, drawn)
        assert np.all(np.abs(measured[:2] - drawn[:2]) <= CT_INPLANE_TOLERANCE_MM), (pid, measured, drawn)
        assert abs(measured[2] - drawn[2]) <= SLICE_TOLERANCE_MM, (pid, measured, drawn)
        # The labels and the PET moved with the CT.
        assert np.all(np.abs(organ[:2] - body[:2]) <= SLICE_TOLERANCE_MM), (pid, organ, body)
        activity = _centre(pet2, pet_image) - _centre(pet1, pet_image)
        assert np.all(np.abs(activity[:2] - body[:2]) <= SLICE_TOLERANCE_MM), (pid, activity, body)
        in_plane.append(np.linalg.norm(body[:2]))
    assert max(in_plane) > 2 * SLICE_TOLERANCE_MM, "someone moved well in-plane: an image left in place would fail"


def test_rescan_scales_the_uptake_by_at_most_5_percent(retest):
    ratios, drawn = [], []
    for pid in retest["patients"]:
        pet1, _ = _read(retest["root"], pid, "scan1", "pet")
        pet2, _ = _read(retest["root"], pid, "scan2", "pet")
        ratios.append(pet2.sum() / pet1.sum())  # total activity in the field of view: the shift barely matters
        drawn.append(rescan_change("retest", 0, pid)[1])
    ratios, drawn = np.array(ratios), np.array(drawn)
    assert np.all(np.abs(drawn - 1.0) <= UPTAKE)
    assert np.all(np.abs(ratios - 1.0) <= UPTAKE + TOTAL_ACTIVITY_TOLERANCE), ratios
    assert np.all(np.abs(ratios - drawn) <= TOTAL_ACTIVITY_TOLERANCE), (ratios, drawn)
    assert np.abs(drawn - 1.0).max() > 2 * TOTAL_ACTIVITY_TOLERANCE, "an unscaled rescan would pass: no check"


def test_rescan_has_noise_of_its_own(retest):
    root, liver = retest["root"], LABELS["liver"]
    for pid in retest["patients"]:
        lab1, _ = _read(root, pid, "scan1", "labels")
        lab2, _ = _read(root, pid, "scan2", "labels")
        pet1, _ = _read(root, pid, "scan1", "pet")
        pet2, _ = _read(root, pid, "scan2", "pet")
        # Inside the liver of both scans, a voxel away from its edge, the noise-free SUV is uniform: what is left
        # at a voxel is the noise, which a reused noise field would give again (correlation near 1).
        inner1, inner2 = (ndimage.binary_erosion(lab == liver) for lab in (lab1, lab2))
        both = inner1 & inner2
        assert both.sum() > 500, pid
        left1, left2 = pet1[both] - np.median(pet1[inner1]), pet2[both] - np.median(pet2[inner2])
        assert abs(np.corrcoef(left1, left2)[0, 1]) < 0.5, pid
        assert 0.5 < left2.std() / left1.std() < 2.0, f"{pid}: the rescan's noise is not the scan's kind"

        ct1, ct_image = _read(root, pid, "scan1", "ct")
        ct2, _ = _read(root, pid, "scan2", "ct")
        on_ct = sitk.GetImageFromArray(both.astype(np.uint8))
        on_ct.CopyInformation(sitk.ReadImage(str(root / "images" / pid / "scan1" / "labels.nii.gz")))
        inside = sitk.GetArrayFromImage(sitk.Resample(on_ct, ct_image, sitk.Transform(), sitk.sitkNearestNeighbor))
        inside = inside.astype(bool)
        hu1, hu2 = ct1[inside] - np.median(ct1[inside]), ct2[inside] - np.median(ct2[inside])
        assert hu2.std() > 0 and abs(np.corrcoef(hu1, hu2)[0, 1]) < 0.5, f"{pid}: the CT's noise was reused"


def test_same_seed_same_bytes_through_the_cli(retest, tmp_path):
    again = tmp_path / "again"
    result = run_cli("data", "synth", "--preset", "retest", "--out", str(again), "--quiet")
    assert result.returncode == 0, result.stderr
    assert _sha256_tree(again) == _sha256_tree(retest["root"])


def test_other_presets_write_one_scan_per_patient(synthetic_data):
    assert [name for name, preset in PRESETS.items() if preset.rescan] == ["retest"]
    root = synthetic_data / "synthetic_mm-tiny-seed0"
    header = yaml.safe_load((root / "manifest.yaml").read_text())
    assert "rescan" not in header["synthetic"]
    table = pd.read_csv(root / header["table"], dtype=str)
    assert "sample_id" not in table.columns and table["patient_id"].is_unique
    assert all(path == f"images/{pid}/pet.nii.gz" for pid, path in zip(table["patient_id"], table["pet"]))
