"""Read PET (as SUV), CT and ROI masks from NIfTI or a DICOM series folder, or only their headers.

Putting images on one grid (resampling, overlap checks, masks on a grid) lives in ``bench.data.imaging.grid``.

Every bad input becomes an ``InputError`` with a one-line message that names the
file, the patient when the caller passes one, and what to do. SimpleITK does the
image I/O; pydicom reads only the tags that the SUV conversion needs.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import struct
import warnings
import zlib
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
import SimpleITK as sitk

from bench.data.imaging.grid import Header, dicom_header, grid_header
from bench.errors import InputError

__all__ = ["read_ct", "read_header", "read_mask", "read_pet"]

PathLike = str | os.PathLike[str]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
PET_UNITS = ("suv", "bqml")
MASK_NOT_A_FOLDER = "a mask must be one NIfTI file (.nii/.nii.gz), not a folder"


# ---------------------------------------------------------------- public readers


def read_pet(path: PathLike, patient: str | None = None, units: str = "suv") -> sitk.Image:
    """PET as float32 SUV (body weight).

    ``path`` is a NIfTI file, taken as SUV already (``units="suv"``), or a folder
    holding one DICOM PT series, converted to SUV from its Units tag (GML or BQML);
    for DICOM the tags decide and ``units`` is not used.
    """
    if units not in PET_UNITS:
        raise ValueError(f"units must be one of {', '.join(PET_UNITS)}, not {units!r}")
    source = Path(path)
    if _is_nifti(source) and units == "bqml":
        raise _nifti_bqml_error(path, patient)
    if not source.is_dir():
        return _read_nifti(source, "PET", patient, "pet", sitk.sitkFloat32)
    files = _series_files(source, patient, "PET", "pet")
    tags = _dicom_tags(files[0], source, patient, "PET", "pet")
    _require_modality(tags, "PT", source, patient, "PET", "pet")
    # Read in double precision so that the SUV factor is applied before rounding to float32.
    image = _read_series(files, source, patient, "PET", "pet", sitk.sitkFloat64)
    factor = _suv_factor(tags, source, patient)
    return sitk.Cast(image * factor if factor != 1.0 else image, sitk.sitkFloat32)


def read_ct(path: PathLike, patient: str | None = None) -> sitk.Image:
    """CT as float32 Hounsfield units, from a NIfTI file or a folder holding one DICOM CT series."""
    source = Path(path)
    if not source.is_dir():
        return _read_nifti(source, "CT", patient, "ct", sitk.sitkFloat32)
    files = _series_files(source, patient, "CT", "ct")
    tags = _dicom_tags(files[0], source, patient, "CT", "ct")
    _require_modality(tags, "CT", source, patient, "CT", "ct")
    return _read_series(files, source, patient, "CT", "ct", sitk.sitkFloat32)


def read_mask(path: PathLike, patient: str | None = None, roi: str = "mask") -> sitk.Image:
    """A NIfTI ROI mask as uint8 0/1 (any nonzero voxel is 1); ``roi`` names it, its column is ``mask_<roi>``."""
    source = Path(path)
    what, column = f"{roi} mask", f"mask_{roi}"  # messages name the column as the manifest spells it
    if source.is_dir():
        raise _cannot_read(what, path, patient, MASK_NOT_A_FOLDER, column)
    image = _read_nifti(source, what, patient, column, None)
    mask = sitk.Cast(sitk.NotEqual(image, 0), sitk.sitkUInt8)
    inside = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    total = math.prod(mask.GetSize())
    if inside == 0:
        raise _error(patient, f"{what} file '{path}' is empty (no nonzero voxel); check the manifest's {column} column")
    if inside == total:
        raise _error(
            patient,
            f"{what} file '{path}' covers every one of its {total} voxels, so it outlines nothing; "
            f"check that the manifest's {column} column points at a mask, not an image",
        )
    return mask


def read_header(
    path: PathLike, kind: Literal["pet", "ct", "mask"], patient: str | None = None, roi: str = "mask",
    units: str = "suv",
) -> Header | None:  # fmt: skip
    """The checks of ``read_pet``, ``read_ct`` or ``read_mask`` that need no voxel data, and the file's extent.

    Cheap, for checking every input before any work: a NIfTI file's header and its length (a
    .nii.gz is decompressed only when its gzip trailer disagrees with the header); a DICOM
    series' file list and the tags of its first and last files. Raises ``InputError`` as the
    readers do. None when a DICOM series lacks the tags that place it in space.
    """
    source = Path(path)
    what, column = {"pet": ("PET", "pet"), "ct": ("CT", "ct")}.get(kind, (f"{roi} mask", f"mask_{roi}"))
    if kind == "pet" and _is_nifti(source) and units == "bqml":
        raise _nifti_bqml_error(path, patient)
    if kind == "mask" and source.is_dir():
        raise _cannot_read(what, path, patient, MASK_NOT_A_FOLDER, column)
    if source.is_dir():
        files = _series_files(source, patient, what, column)
        first = _dicom_tags(files[0], source, patient, what, column)
        _require_modality(first, "PT" if kind == "pet" else "CT", source, patient, what, column)
        if kind == "pet":
            _suv_factor(first, source, patient)
        last = _dicom_tags(files[-1], source, patient, what, column) if len(files) > 1 else first
        return dicom_header(first, last, len(files))
    _check_nifti_file(source, what, patient, column, quick=True)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(source))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise _cannot_read(what, source, patient, _short_reason(exc), column) from exc
    size, dimension = tuple(reader.GetSize()), reader.GetDimension()
    if dimension == 4 and size[3] == 1:
        size, dimension = size[:3], 3
    _check_volume(size, dimension, reader.GetNumberOfComponents(), what, source, patient, column)
    direction = np.array(reader.GetDirection()).reshape(reader.GetDimension(), -1)[:3, :3]
    origin, spacing = np.array(reader.GetOrigin()[:3]), np.array(reader.GetSpacing()[:3])
    return grid_header(size, origin, direction * spacing)


def dicom_series_files(folder: PathLike, patient: str | None = None) -> list[str]:
    """The files of the single DICOM series in ``folder``, sorted along the slice normal."""
    return _series_files(Path(folder), patient, "DICOM", None)


# ---------------------------------------------------------------- errors


def _error(patient: str | None, message: str) -> InputError:
    where = f"patient {patient!r}: " if patient is not None else ""
    return InputError(" ".join(f"{where}{message}".split()))


def _nifti_bqml_error(path: PathLike, patient: str | None) -> InputError:
    return _error(
        patient,
        f"PET file '{path}' is NIfTI, which carries no dose, weight or time tags to convert Bq/ml to SUV; "
        "convert it to SUV (body weight) first, or point the manifest's pet column at the DICOM series",
    )


def _cannot_read(what: str, path: PathLike, patient: str | None, reason: str, column: str | None) -> InputError:
    hint = f"check the manifest's {column} column" if column else "check the path"
    noun = "folder" if Path(path).is_dir() else "file"
    return _error(patient, f"cannot read {what} {noun} '{path}': {reason}; {hint}")


def _short_reason(exc: BaseException) -> str:
    """The last line of an ITK/GDCM message, without the source-file location that precedes it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(exc).__name__
    for prefix in ("sitk::ERROR:", "ITK ERROR:"):
        reason = reason.split(prefix)[-1].strip()
    return reason


# ---------------------------------------------------------------- NIfTI


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _read_nifti(path: Path, what: str, patient: str | None, column: str, pixel_type: int | None) -> sitk.Image:
    _check_nifti_file(path, what, patient, column)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise _cannot_read(what, path, patient, _short_reason(exc), column) from exc
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    size, components = image.GetSize(), image.GetNumberOfComponentsPerPixel()
    _check_volume(size, image.GetDimension(), components, what, path, patient, column)
    return sitk.Cast(image, pixel_type) if pixel_type is not None else image


def _check_nifti_file(path: Path, what: str, patient: str | None, column: str, quick: bool = False) -> None:
    if not path.exists():
        raise _cannot_read(what, path, patient, "the file does not exist", column)
    if not _is_nifti(path):
        raise _cannot_read(
            what, path, patient, "expected a NIfTI file (.nii or .nii.gz) or a folder holding one DICOM series", column
        )
    problem = _nifti_problem(path, quick)
    if problem:
        raise _cannot_read(what, path, patient, problem, column)


def _check_volume(
    size: tuple[int, ...], dimension: int, components: int, what: str, path: Path, patient: str | None, column: str
) -> None:
    if dimension != 3 or components != 1:
        shape = "x".join(map(str, size))
        reason = f"expected one 3-D scalar volume, found a {shape} image with {components} value(s) per voxel"
        raise _cannot_read(what, path, patient, reason, column)


def _nifti_problem(path: Path, quick: bool = False) -> str | None:
    """Why the file holds fewer bytes than its header promises, or None.

    ITK reads a truncated NIfTI without complaint and fills the missing voxels with
    zeros, so the length check has to happen here. ``quick``: a .nii.gz whose gzip
    trailer (the length of the data, modulo 2**32) matches the header is not decompressed.
    """
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as stream:
                header = stream.read(540)
                layout = _nifti_layout(header) if quick else None
                if layout is not None and _gzip_length(path) == sum(layout) % 2**32:
                    return None
                length = len(header) + sum(len(chunk) for chunk in iter(lambda: stream.read(1 << 24), b""))
        else:
            with open(path, "rb") as stream:
                header = stream.read(540)
            length = path.stat().st_size
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        return f"the file is damaged or truncated ({' '.join(str(exc).split())})"
    layout = _nifti_layout(header)
    if layout is None:
        return f"not a NIfTI file (no valid NIfTI header in its first {len(header)} bytes)"
    data_start, data_bytes = layout
    if length < data_start + data_bytes:
        return f"the file is truncated: its header promises {data_start + data_bytes} bytes, it holds {length}"
    return None


def _gzip_length(path: Path) -> int:
    """The uncompressed length (modulo 2**32) that the last member's trailer records."""
    with open(path, "rb") as raw:
        raw.seek(-4, os.SEEK_END)
        return struct.unpack("<I", raw.read(4))[0]


def _nifti_layout(header: bytes) -> tuple[int, int] | None:
    """(offset of the voxel data, bytes of voxel data) from a NIfTI-1 or NIfTI-2 header."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            start = max(offset, 352)
        elif len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            dims = struct.unpack(endian + "8q", header[16:80])
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            start = max(struct.unpack(endian + "q", header[168:176])[0], 544)
        else:
            continue
        if not 1 <= dims[0] <= 7 or bitpix <= 0 or any(d < 0 for d in dims[1 : dims[0] + 1]):
            return None
        return start, math.prod(dims[1 : dims[0] + 1]) * bitpix // 8
    return None


# ---------------------------------------------------------------- DICOM


@contextlib.contextmanager
def _itk_warnings_off() -> Iterator[None]:
    # GDCM prints "No Series were found" to stderr; our InputError already says it, once.
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _series_files(folder: Path, patient: str | None, what: str, column: str | None) -> list[str]:
    if not folder.exists():
        raise _cannot_read(what, folder, patient, "the folder does not exist", column)
    if not folder.is_dir():
        raise _cannot_read(what, folder, patient, "expected a folder holding one DICOM series", column)
    with _itk_warnings_off():
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if len(series) != 1:
        shown = ", ".join(series[:3]) + (", ..." if len(series) > 3 else "")
        found = f"{len(series)} DICOM series (SeriesInstanceUIDs {shown})" if series else "no DICOM series"
        raise _cannot_read(what, folder, patient, f"the folder holds {found}, expected exactly 1", column)
    with _itk_warnings_off():
        return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))


def _dicom_tags(file: str, folder: Path, patient: str | None, what: str, column: str) -> pydicom.Dataset:
    try:
        with warnings.catch_warnings():
            # Over-long values in de-identified files (e.g. an 18-character SH) are harmless here.
            warnings.simplefilter("ignore")
            return pydicom.dcmread(file, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for a damaged file
        reason = f"cannot read the tags of '{Path(file).name}' ({' '.join(str(exc).split())})"
        raise _cannot_read(what, folder, patient, reason, column) from exc


def _require_modality(
    tags: pydicom.Dataset, modality: str, folder: Path, patient: str | None, what: str, column: str
) -> None:
    found = str(tags.get("Modality", "") or "").strip()
    if found != modality:
        reason = f"the series has Modality {found or '(missing)'!r}, expected {modality!r}"
        raise _cannot_read(what, folder, patient, reason, column)


def _read_series(
    files: list[str], folder: Path, patient: str | None, what: str, column: str, pixel_type: int
) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    # An explicit float output: with the native type, a first slice without rescale
    # would make ITK store every slice's rescaled values as integers.
    reader.SetOutputPixelType(pixel_type)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        with _itk_warnings_off():
            image = reader.Execute()
    except RuntimeError as exc:
        raise _cannot_read(what, folder, patient, _short_reason(exc), column) from exc
    problem = _uneven_slices(reader, image)
    if problem:
        raise _cannot_read(what, folder, patient, problem, column)
    return image


def _uneven_slices(reader: sitk.ImageSeriesReader, image: sitk.Image) -> str | None:
    """Why the slice positions are not evenly spaced, or None.

    GDCM skips a file it cannot parse and ITK then stacks the rest with one spacing,
    printing only a warning: a missing or truncated slice would silently warp the volume.
    """
    count = len(reader.GetFileNames())
    if count < 3 or not all(reader.HasMetaDataKey(i, "0020|0032") for i in range(count)):
        return None
    try:
        positions = np.array([[float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")] for i in range(count)])
    except ValueError:
        return None
    along = positions @ np.array(image.GetDirection()).reshape(3, 3)[:, 2]
    gaps = np.diff(along)
    typical = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - typical)))
    # 10 %: loose enough for positions written with few decimals, tight enough for a missing slice.
    if abs(typical) < 1e-6 or abs(gaps[worst] - typical) > 0.1 * abs(typical):
        return (
            f"slice positions are unevenly spaced ({abs(gaps[worst]):.3g} mm after slice {worst + 1} of {count}, "
            f"{abs(typical):.3g} mm elsewhere), so a slice is missing, duplicated or unreadable"
        )
    return None


# ---------------------------------------------------------------- SUV


def _suv_factor(tags: pydicom.Dataset, folder: Path, patient: str | None) -> float:
    """What multiplies the series' pixel values to give SUV (body weight)."""
    units = str(tags.get("Units", "") or "").strip().upper()
    if units == "GML":
        suv_type = str(tags.get("SUVType", "") or "BW").strip().upper()
        if suv_type != "BW":
            raise _error(
                patient,
                f"PET series '{folder}' holds SUV of type {suv_type!r} (SUVType), not body weight (BW); "
                "export the series as body-weight SUV or in Bq/ml",
            )
        return 1.0
    if units != "BQML":
        raise _error(
            patient,
            f"PET series '{folder}' has Units {units or '(missing)'!r}; only GML (SUV) and BQML (Bq/ml) "
            "can be read as SUV; export the series in one of them",
        )

    def missing(tag: str, why: str = "missing") -> InputError:
        return _error(
            patient,
            f"PET series '{folder}' is in Bq/ml (Units BQML) but its {tag} tag is {why}, and SUV needs it; "
            "fix the tag or export the series as SUV (Units GML)",
        )

    def positive(dataset: pydicom.Dataset, tag: str) -> float:
        value = dataset.get(tag)
        if value is None or str(value).strip() == "":
            raise missing(tag)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise missing(tag, f"not a number ({value!r})") from None
        if not number > 0:
            raise missing(tag, f"not positive ({value!r})")
        return number

    weight_kg = positive(tags, "PatientWeight")
    drugs = tags.get("RadiopharmaceuticalInformationSequence")
    if not drugs:
        raise missing("RadiopharmaceuticalInformationSequence")
    drug = drugs[0]
    dose_bq = positive(drug, "RadionuclideTotalDose")
    decay = str(tags.get("DecayCorrection", "") or "").strip().upper()
    if decay == "ADMIN":  # pixels are already decay-corrected to the injection time
        return weight_kg * 1000.0 / dose_bq
    if decay != "START":
        # NONE would need each frame's own acquisition time; a missing tag leaves the reference time unknown.
        raise missing("DecayCorrection", f"{decay!r}, not START or ADMIN" if decay else "missing")
    half_life_s = positive(drug, "RadionuclideHalfLife")
    elapsed_s = _seconds_from_injection_to_series(tags, drug, missing)
    if elapsed_s < 0:
        raise missing("RadiopharmaceuticalStartTime", f"after the series start ({elapsed_s:.0f} s)")
    return weight_kg * 1000.0 / (dose_bq * 2.0 ** (-elapsed_s / half_life_s))


def _seconds_from_injection_to_series(tags: pydicom.Dataset, drug: pydicom.Dataset, missing) -> float:
    series_time = str(tags.get("SeriesTime", "") or "").strip()
    if not series_time:
        raise missing("SeriesTime")
    series_date_text = str(tags.get("SeriesDate", "") or tags.get("AcquisitionDate", "") or "").strip()
    try:
        series_s = _tm_seconds(series_time)
    except ValueError:
        raise missing("SeriesTime", f"not a DICOM time ({series_time!r})") from None
    try:
        series_date = _da(series_date_text) if series_date_text else None
    except ValueError:
        raise missing("SeriesDate", f"not a DICOM date ({series_date_text!r})") from None

    start_datetime = str(drug.get("RadiopharmaceuticalStartDateTime", "") or "").strip()
    start_time = str(drug.get("RadiopharmaceuticalStartTime", "") or "").strip()
    if start_datetime:
        try:
            injection_date, injection_s = _da(start_datetime[:8]), _tm_seconds(_strip_offset(start_datetime[8:]))
        except ValueError:
            raise missing("RadiopharmaceuticalStartDateTime", f"not a DICOM date-time ({start_datetime!r})") from None
    elif start_time:
        injection_date = None  # a bare time is on the series' day
        try:
            injection_s = _tm_seconds(start_time)
        except ValueError:
            raise missing("RadiopharmaceuticalStartTime", f"not a DICOM time ({start_time!r})") from None
    else:
        raise missing("RadiopharmaceuticalStartTime")
    days = (series_date - injection_date).days if series_date and injection_date else 0
    return days * 86400.0 + series_s - injection_s


def _tm_seconds(text: str) -> float:
    """Seconds after midnight of a DICOM TM: HH, HHMM, HHMMSS, each with an optional .FFFFFF."""
    whole, _, fraction = text.strip().replace(":", "").partition(".")
    if len(whole) not in (2, 4, 6) or not whole.isdigit() or (fraction and not fraction.isdigit()):
        raise ValueError(text)
    hours, minutes, seconds = (int(whole[i : i + 2] or 0) for i in (0, 2, 4))
    if hours > 23 or minutes > 59 or seconds > 60:
        raise ValueError(text)
    return hours * 3600 + minutes * 60 + seconds + (float(f"0.{fraction}") if fraction else 0.0)


def _da(text: str) -> date:
    if len(text) != 8 or not text.isdigit():
        raise ValueError(text)
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def _strip_offset(time_part: str) -> str:
    """A DT's time without its UTC offset (&ZZXX), which both times of one scan share."""
    return time_part.split("+")[0].split("-")[0]
