"""bench.data.imaging.io on real files: IBSI soft-tissue-sarcoma PET/CT and a TotalSegmentator CT series.

Reference values come from the files themselves (SimpleITK's plain read of the
NIfTI SUV, pydicom's own pixel decoding, the tags of each DICOM file), never from
the reader under test. The data live in tests/data (see its README).
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.valuerep import DS

from bench.data.imaging.grid import check_overlap, resample_to
from bench.data.imaging.io import dicom_series_files, read_ct, read_mask, read_pet
from bench.errors import InputError

from data_paths import STS, TOTALSEG
from data_paths import STS_WITH_CT as PATIENTS_WITH_CT

PET_DICOM = STS / "dicom" / "STS_001" / "PET"
PET_NIFTI = STS / "nifti" / "STS_001" / "PET_image.nii.gz"
CT_DICOM = TOTALSEG / "example_ct_dicom"


def array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def assert_same_grid(image: sitk.Image, reference: sitk.Image, atol: float = 1e-4) -> None:
    assert image.GetSize() == reference.GetSize()
    for name in ("GetSpacing", "GetOrigin", "GetDirection"):
        got, want = getattr(image, name)(), getattr(reference, name)()
        np.testing.assert_allclose(got, want, atol=atol, rtol=0, err_msg=name)


def assert_input_error(excinfo: pytest.ExceptionInfo[InputError], *needles: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


# ---------------------------------------------------------------- PET as SUV


def test_dicom_pet_in_suv_equals_the_nifti_suv() -> None:
    reference = sitk.ReadImage(str(PET_NIFTI))
    pet = read_pet(PET_DICOM, "STS_001")
    assert pet.GetPixelID() == sitk.sitkFloat32
    assert_same_grid(pet, reference)
    diff = float(np.abs(array(pet) - array(reference)).max())
    assert diff < 1e-4, f"max |SUV(DICOM) - SUV(NIfTI)| = {diff:.3g}"


def test_nifti_pet_is_read_as_is() -> None:
    reference = sitk.ReadImage(str(PET_NIFTI))
    pet = read_pet(PET_NIFTI, "STS_001")
    assert pet.GetPixelID() == sitk.sitkFloat32
    assert_same_grid(pet, reference, atol=0)
    np.testing.assert_array_equal(array(pet), array(reference))


def _when(day: str, tm: str) -> datetime:
    """The test's own reading of a DICOM date and a time 'HHMMSS[.ffffff]'."""
    whole, _, fraction = tm.partition(".")
    return datetime.strptime(day + whole, "%Y%m%d%H%M%S") + timedelta(seconds=float("0." + (fraction or "0")))


def _suv_per_bqml(ds: pydicom.Dataset) -> float:
    """Weight [g] / injected dose [Bq], the dose decayed to the series start unless corrected to injection."""
    drug = ds.RadiopharmaceuticalInformationSequence[0]
    dose = float(drug.RadionuclideTotalDose)
    if ds.DecayCorrection == "START":
        if "RadiopharmaceuticalStartDateTime" in drug:
            injected = _when(drug.RadiopharmaceuticalStartDateTime[:8], drug.RadiopharmaceuticalStartDateTime[8:])
        else:
            injected = _when(ds.SeriesDate, drug.RadiopharmaceuticalStartTime)
        elapsed = (_when(ds.SeriesDate, ds.SeriesTime) - injected).total_seconds()
        dose *= 0.5 ** (elapsed / float(drug.RadionuclideHalfLife))
    return float(ds.PatientWeight) * 1000.0 / dose


def _start(ds: pydicom.Dataset) -> None:
    ds.DecayCorrection = "START"


def _start_with_fractions(ds: pydicom.Dataset) -> None:
    ds.DecayCorrection = "START"
    ds.SeriesTime = "112011.123456"
    ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartTime = "103500"


def _start_datetime_across_midnight(ds: pydicom.Dataset) -> None:
    ds.DecayCorrection = "START"
    ds.SeriesDate, ds.SeriesTime = "20000907", "002011"
    drug = ds.RadiopharmaceuticalInformationSequence[0]
    del drug.RadiopharmaceuticalStartTime
    drug.RadiopharmaceuticalStartDateTime = "20000906233500.5"


TAG_VARIANTS = {
    "admin-as-in-file": lambda ds: None,
    "start": _start,
    "start-times-with-fractions": _start_with_fractions,
    "start-datetime-across-midnight": _start_datetime_across_midnight,
}


def write_bqml_copy(target: Path, edit=lambda ds: None) -> list[float]:
    """STS_001 rewritten as activity (Units BQML): stored pixels kept, RescaleSlope divided by SUV-per-Bq/ml.

    Returns each file's decay factor (decayed dose / injected dose), so a test can
    check that the decay correction matters for the series it reads.
    """
    target.mkdir()
    decay = []
    for source in sorted(PET_DICOM.glob("*.dcm")):
        ds = pydicom.dcmread(source)
        assert ds.Units == "GML" and ds.DecayCorrection in ("ADMIN", "START"), (ds.Units, ds.DecayCorrection)
        edit(ds)
        factor = _suv_per_bqml(ds)
        drug = ds.RadiopharmaceuticalInformationSequence[0]
        decay.append(float(ds.PatientWeight) * 1000.0 / float(drug.RadionuclideTotalDose) / factor)
        ds.Units = "BQML"
        ds.RescaleSlope = DS(float(ds.RescaleSlope) / factor, auto_format=True)
        ds.RescaleIntercept = DS(float(ds.RescaleIntercept) / factor, auto_format=True)
        ds.save_as(target / source.name)
    return decay


@pytest.mark.parametrize("variant", TAG_VARIANTS)
def test_bqml_series_is_converted_to_the_nifti_suv(tmp_path: Path, variant: str) -> None:
    folder = tmp_path / "bqml"
    decay = write_bqml_copy(folder, TAG_VARIANTS[variant])
    if variant != "admin-as-in-file":
        # 45 min of F-18 decay: a reader that skipped the correction would be off by a third.
        assert all(0.7 < d < 0.8 for d in decay), decay
    reference = sitk.ReadImage(str(PET_NIFTI))
    pet = read_pet(folder, "STS_001")
    assert pet.GetPixelID() == sitk.sitkFloat32
    assert_same_grid(pet, reference)
    diff = float(np.abs(array(pet) - array(reference)).max())
    assert diff < 1e-4, f"{variant}: max |SUV(BQML) - SUV(NIfTI)| = {diff:.3g} (decay factor {decay[0]:.4f})"


def _drop_weight(ds: pydicom.Dataset) -> None:
    del ds.PatientWeight


def _drop_half_life(ds: pydicom.Dataset) -> None:
    ds.DecayCorrection = "START"
    del ds.RadiopharmaceuticalInformationSequence[0].RadionuclideHalfLife


def _drop_start_time(ds: pydicom.Dataset) -> None:
    ds.DecayCorrection = "START"
    del ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartTime


def _drop_dose(ds: pydicom.Dataset) -> None:
    del ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose


def _no_decay_correction(ds: pydicom.Dataset) -> None:
    ds.DecayCorrection = "NONE"


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (_drop_weight, "PatientWeight"),
        (_drop_dose, "RadionuclideTotalDose"),
        (_drop_half_life, "RadionuclideHalfLife"),
        (_drop_start_time, "RadiopharmaceuticalStartTime"),
        (_no_decay_correction, "DecayCorrection"),
    ],
)
def test_bqml_series_without_a_needed_tag_is_an_input_error(tmp_path: Path, edit, needle: str) -> None:
    folder = tmp_path / "bqml"
    write_bqml_copy(folder)
    for file in folder.glob("*.dcm"):  # after the copy: writing it needs the tags removed here
        ds = pydicom.dcmread(file)
        edit(ds)
        ds.save_as(file)
    with pytest.raises(InputError) as excinfo:
        read_pet(folder, "STS_001")
    assert_input_error(excinfo, needle, str(folder), "'STS_001'")


def test_pet_in_counts_is_an_input_error(tmp_path: Path) -> None:
    folder = tmp_path / "cnts"
    folder.mkdir()
    for source in sorted(PET_DICOM.glob("*.dcm")):
        ds = pydicom.dcmread(source)
        ds.Units = "CNTS"
        ds.save_as(folder / source.name)
    with pytest.raises(InputError) as excinfo:
        read_pet(folder, "STS_001")
    assert_input_error(excinfo, "CNTS", str(folder), "'STS_001'")


def test_nifti_pet_in_bqml_is_an_input_error() -> None:
    with pytest.raises(InputError) as excinfo:
        read_pet(PET_NIFTI, "STS_001", units="bqml")
    assert_input_error(excinfo, "SUV", str(PET_NIFTI), "'STS_001'")


# ---------------------------------------------------------------- PET/CT resampling


def physical_centroid(mask: sitk.Image) -> np.ndarray:
    index = np.argwhere(array(mask) > 0)[:, ::-1].mean(axis=0)  # numpy is z, y, x; SimpleITK x, y, z
    return np.array(mask.TransformContinuousIndexToPhysicalPoint(index.tolist()))


def volume_ml(mask: sitk.Image) -> float:
    return float(np.count_nonzero(array(mask)) * np.prod(mask.GetSpacing()) / 1000.0)


@pytest.mark.parametrize("patient", PATIENTS_WITH_CT)
def test_ct_and_its_mask_resample_onto_the_pet_grid(patient: str) -> None:
    folder = STS / "nifti" / patient
    pet = read_pet(folder / "PET_image.nii.gz", patient)
    ct = read_ct(folder / "CT_image.nii.gz", patient)
    mask = read_mask(folder / "CT_mask.nii.gz", patient, roi="tumour")
    check_overlap(pet, ct, "PET", "CT", patient)

    mask_on_pet = resample_to(mask, pet, "nearest")
    ct_on_pet = resample_to(ct, pet, "linear", default=-1000.0)
    assert mask_on_pet.GetPixelID() == sitk.sitkUInt8
    assert ct_on_pet.GetPixelID() == sitk.sitkFloat32
    assert_same_grid(mask_on_pet, pet, atol=0)
    assert_same_grid(ct_on_pet, pet, atol=0)

    shift = float(np.linalg.norm(physical_centroid(mask_on_pet) - physical_centroid(mask)))
    diagonal = float(np.linalg.norm(pet.GetSpacing()))
    ratio = volume_ml(mask_on_pet) / volume_ml(mask)
    numbers = (
        f"{patient}: centroid shift {shift:.2f} mm (PET voxel diagonal {diagonal:.2f} mm), volume ratio {ratio:.4f}"
    )
    assert shift < diagonal, numbers
    assert abs(ratio - 1) < 0.10, numbers

    # Linear interpolation cannot leave the original range, and the tumour's mean HU survives it.
    ct_values, resampled = array(ct), array(ct_on_pet)
    assert ct_values.min() - 1e-3 <= resampled.min() and resampled.max() <= ct_values.max() + 1e-3
    hu_before = float(ct_values[array(mask) > 0].mean())
    hu_after = float(resampled[array(mask_on_pet) > 0].mean())
    assert abs(hu_after - hu_before) < 10, f"{numbers}, tumour mean HU {hu_before:.1f} -> {hu_after:.1f}"


# ---------------------------------------------------------------- CT from DICOM


def test_dicom_ct_is_in_hounsfield_units() -> None:
    ct = read_ct(CT_DICOM)
    assert ct.GetPixelID() == sitk.sitkFloat32
    assert ct.GetSize() == (512, 512, 20)
    hu = array(ct)
    assert np.percentile(hu, 1) < -900
    air = hu[hu < -500]
    assert -1030 < np.median(air) < -950, np.median(air)
    body = hu[hu > -500]
    assert -150 < np.median(body) < 100, np.median(body)  # fat and soft tissue
    assert hu.max() > 300  # bone

    # One slice decoded by pydicom on its own, placed by its ImagePositionPatient.
    files = sorted(
        CT_DICOM.glob("*.dcm"), key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2])
    )
    ds = pydicom.dcmread(files[len(files) // 2])
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    k = ct.TransformPhysicalPointToIndex([float(v) for v in ds.ImagePositionPatient])[2]
    np.testing.assert_array_equal(hu[k], expected.astype(np.float32))


def test_dicom_series_files_are_sorted_along_the_slice_axis() -> None:
    files = dicom_series_files(CT_DICOM)
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
    assert len(files) == 20
    assert z == sorted(z) or z == sorted(z, reverse=True)


# ---------------------------------------------------------------- bad input


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "P001_pet.nii.gz"
    with pytest.raises(InputError) as excinfo:
        read_pet(path, "P001")
    assert_input_error(excinfo, str(path), "'P001'", "does not exist", "pet column")


def test_truncated_nifti_is_an_input_error(tmp_path: Path) -> None:
    # SimpleITK itself reads a truncated NIfTI without an error, zero-filling what is missing.
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(PET_NIFTI.read_bytes()[:200])
    with pytest.raises(InputError) as excinfo:
        read_pet(path, "P001")
    assert_input_error(excinfo, str(path), "'P001'", "truncated")


def test_folder_with_two_series_is_an_input_error(tmp_path: Path) -> None:
    folder = tmp_path / "two"
    folder.mkdir()
    uids = set()
    for patient in ("STS_001", "STS_002"):
        for source in sorted((STS / "dicom" / patient / "PET").glob("*.dcm")):
            uids.add(pydicom.dcmread(source, stop_before_pixels=True).SeriesInstanceUID)
            shutil.copy(source, folder / f"{patient}_{source.name}")
    assert len(uids) == 2  # the two series really differ in SeriesInstanceUID
    for call in (lambda: dicom_series_files(folder, "P001"), lambda: read_pet(folder, "P001")):
        with pytest.raises(InputError) as excinfo:
            call()
        assert_input_error(excinfo, str(folder), "'P001'", "2 DICOM series")


def test_folder_without_dicom_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as excinfo:
        read_ct(tmp_path, "P001")
    assert_input_error(excinfo, str(tmp_path), "'P001'", "no DICOM series", "ct column")


def test_series_with_a_truncated_slice_is_an_input_error(tmp_path: Path) -> None:
    folder = tmp_path / "pet"
    shutil.copytree(PET_DICOM, folder)
    damaged = folder / "000010.dcm"
    damaged.write_bytes(damaged.read_bytes()[:3000])
    with pytest.raises(InputError) as excinfo:
        read_pet(folder, "P001")
    assert_input_error(excinfo, str(folder), "'P001'", "unevenly spaced")


def test_ct_reader_refuses_a_pet_series() -> None:
    with pytest.raises(InputError) as excinfo:
        read_ct(PET_DICOM, "STS_001")
    assert_input_error(excinfo, str(PET_DICOM), "'STS_001'", "'PT'")


@pytest.mark.parametrize(("fill", "needle"), [(0, "empty"), (1, "every")])
def test_empty_or_full_mask_is_an_input_error(tmp_path: Path, fill: int, needle: str) -> None:
    real = sitk.ReadImage(str(STS / "nifti" / "STS_001" / "PET_mask.nii.gz"))
    assert 0 < np.count_nonzero(array(real)) < array(real).size
    path = tmp_path / "tumour.nii.gz"
    sitk.WriteImage(real * 0 + fill, str(path))
    with pytest.raises(InputError) as excinfo:
        read_mask(path, "P001", roi="tumour")
    assert_input_error(excinfo, str(path), "'P001'", "tumour", needle)


def test_mask_is_binary() -> None:
    path = STS / "nifti" / "STS_001" / "PET_mask.nii.gz"
    mask = read_mask(path, "STS_001")
    assert mask.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(array(mask), (array(sitk.ReadImage(str(path))) != 0).astype(np.uint8))


def test_pet_and_ct_that_do_not_overlap_are_an_input_error() -> None:
    folder = STS / "nifti" / "STS_008"
    pet = read_pet(folder / "PET_image.nii.gz", "STS_008")
    ct = read_ct(folder / "CT_image.nii.gz", "STS_008")
    check_overlap(pet, ct, "PET", "CT", "STS_008")
    origin = np.array(ct.GetOrigin())
    ct.SetOrigin((origin + [0, 0, 10_000.0]).tolist())  # 10 m along the body axis
    pet_name, ct_name = f"PET '{folder / 'PET_image.nii.gz'}'", f"CT '{folder / 'CT_image.nii.gz'}'"
    with pytest.raises(InputError) as excinfo:
        check_overlap(pet, ct, pet_name, ct_name, "STS_008")
    assert_input_error(excinfo, pet_name, ct_name, "'STS_008'", "do not overlap")
