"""One study's images on one grid, with its ROI masks (computed from CT when not supplied, and cached).

The public imaging API for extractor plugins: ``open_study(record, self.name)`` gives a
``Study`` with ``image("pet")`` (SUV) and ``image("ct")`` (HU), ``roi_mask(roi)`` for the
derived ROIs (skeleton, spine, spine_dilated) and any ROI the manifest supplies,
``spacing`` (mm) and ``units(modality)``, all on the study's one grid.

The declared grid is the PET grid, or the CT grid for a study without PET: CT is
resampled onto it linearly, masks with nearest neighbour, in physical space. CT is
read only when something needs it. A computed mask is cached under the hash of the
CT's files (and the PET's, whose grid it is brought onto), the ROI and the mask
algorithm's version and configuration, written atomically, and never written for
input that failed to load.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection
from functools import cached_property
from pathlib import Path
from typing import Protocol

import SimpleITK as sitk

from bench.cache import cache_root, file_digest
from bench.data.imaging import grid as grids
from bench.data.imaging import io
from bench.data.imaging import masks as mask_algorithms
from bench.data.inputs import StudyInputs
from bench.errors import InputError, UsageError


# What each modality's voxels hold once read (PET in BQML is converted to SUV on reading).
UNITS = {"pet": "SUV", "ct": "HU"}


class Study:
    """One study's images on one grid: the PET grid when there is a PET, else the CT grid.

    Plugins get one with ``open_study``. ``image(modality)``, ``roi_mask(roi)``, ``spacing`` and
    ``units(modality)`` are the public API; images and masks are SimpleITK images on the same grid, so
    ``sitk.GetArrayFromImage`` gives arrays of the same [z, y, x] shape.
    """

    def __init__(self, inputs: StudyInputs, patient: str):
        self.inputs = inputs
        self.patient = patient
        if not inputs.modalities:
            raise InputError(f"patient {patient!r}: the study has neither a PET nor a CT image")
        self.pet = io.read_pet(inputs.pet, patient=patient, units=inputs.pet_units) if inputs.pet else None

    @cached_property
    def ct_native(self) -> sitk.Image:
        """CT in HU on its own grid (masks are computed there)."""
        ct = io.read_ct(self.inputs.image("ct", self.patient), patient=self.patient)
        if self.pet is not None:
            pet_file, ct_file = str(self.inputs.pet), str(self.inputs.ct)
            grids.check_overlap(self.pet, ct, f"PET {pet_file!r}", f"CT {ct_file!r}", patient=self.patient)
        return ct

    @cached_property
    def grid(self) -> sitk.Image:
        """The image whose grid every other image and mask is brought onto."""
        return self.pet if self.pet is not None else self.ct_native

    @cached_property
    def ct(self) -> sitk.Image:
        """CT in HU on the study's grid."""
        if self.pet is None:
            return self.ct_native
        return grids.resample_to(self.ct_native, self.pet, "linear", default=-1000.0)

    def image(self, modality: str) -> sitk.Image:
        """``pet`` (SUV) or ``ct`` (HU) on the study's grid; an error naming the patient when it has none."""
        self.units(modality)  # an unknown modality is an error, never the CT
        if modality == "pet":
            self.inputs.image("pet", self.patient)  # raises when the study has no PET
            return self.pet
        return self.ct

    @property
    def spacing(self) -> tuple[float, float, float]:
        """The grid's voxel size in mm, in SimpleITK's (x, y, z) order (an array from it is [z, y, x])."""
        return tuple(float(v) for v in self.grid.GetSpacing())

    @property
    def voxel_volume_ml(self) -> float:
        """One voxel of the grid in mL (cm^3)."""
        x, y, z = self.spacing
        return x * y * z / 1000.0

    @staticmethod
    def units(modality: str) -> str:
        """What ``image(modality)``'s voxels hold: ``SUV`` for pet (body weight), ``HU`` for ct."""
        if modality not in UNITS:
            raise UsageError(f"unknown modality {modality!r}; valid: {', '.join(UNITS)}")
        return UNITS[modality]

    def roi_mask(self, roi: str, use_cache: bool = True) -> sitk.Image:
        """The ROI on the study's grid: the manifest's mask if it has one, else computed from CT (cached).

        uint8, 1 inside. A supplied mask (column ``mask_<roi>``) is its file's nonzero voxels brought onto the
        grid with nearest neighbour; skeleton, spine and spine_dilated are otherwise derived from the CT
        (``bench.data.imaging.masks``) and cached under the CT's and PET's content.
        """
        supplied = self.inputs.masks.get(roi)
        if supplied is not None:
            mask = io.read_mask(supplied, patient=self.patient, roi=roi)
            grid = f"PET {str(self.inputs.pet)!r}" if self.pet is not None else f"CT {str(self.inputs.ct)!r}"
            return grids.mask_on(mask, self.grid, f"{roi} mask {str(supplied)!r}", grid, self.patient, f"mask_{roi}")
        if self.inputs.ct is None:
            raise InputError(
                f"patient {self.patient!r}: ROI {roi!r} is computed from CT and the study has no CT; "
                f"give its mask in a 'mask_{roi}' column of the manifest"
            )
        cached = cache_root() / "masks" / f"{self._mask_key(roi)}.nii.gz"
        if use_cache and cached.exists():
            try:
                return sitk.ReadImage(str(cached), sitk.sitkUInt8)
            except RuntimeError:
                cached.unlink(missing_ok=True)  # a damaged entry is recomputed, never used
        mask = grids.resample_to(mask_algorithms.roi_mask(self.ct_native, roi), self.grid, "nearest")
        if use_cache:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp.nii.gz")
            sitk.WriteImage(mask, str(tmp), useCompression=True)
            os.replace(tmp, cached)
        return mask

    def _mask_key(self, roi: str) -> str:
        # The CT the mask is computed from, and the grid it is resampled onto (the PET's, when there is one).
        digest = hashlib.sha256(file_digest(self.inputs.image("ct", self.patient)).encode())
        if self.inputs.pet is not None:
            digest.update(file_digest(self.inputs.pet).encode())
        digest.update(f"{roi}|{mask_algorithms.VERSION}|{mask_algorithms.MaskConfig()!r}".encode())
        return digest.hexdigest()


def load_study(inputs: StudyInputs, patient: str) -> Study:
    return Study(inputs, patient)


class _Record(Protocol):
    """What ``open_study`` reads of a ``feature_extractors.base.PatientRecord`` (named here, never imported)."""

    sample_id: str

    def study_inputs(self, extractor: str) -> StudyInputs: ...


def open_study(record: _Record, extractor: str) -> Study:
    """The study of ``record`` on one grid, for extractor ``extractor`` (its name, for the error without images).

    The entry point for plugins: what the built-in image extractors use. Nothing is read until asked for;
    derived masks come from, and go to, the harness's mask cache.
    """
    return Study(record.study_inputs(extractor), record.sample_id)


def header_problems(inputs: StudyInputs, patient: str, files: Collection[Path]) -> list[str]:
    """What the headers of ``files`` (those of the study's images and masks that a run reads) show, one line each.

    A file that cannot be read, and a CT or a supplied mask that does not overlap the study's grid
    in space. No voxel is read, so every study of a cohort can be checked before any work.
    """
    entries = [("pet", inputs.pet, ""), ("ct", inputs.ct, "")]
    entries += [("mask", path, roi) for roi, path in sorted(inputs.masks.items())]
    headers: dict[tuple[str, str], tuple[Path, grids.Header | None]] = {}
    problems = []
    for kind, path, roi in entries:
        if path is None or path not in files:
            continue
        try:
            headers[kind, roi] = path, io.read_header(path, kind, patient, roi=roi or "mask", units=inputs.pet_units)
        except InputError as exc:
            problems.append(str(exc))
    grid_key = ("pet", "") if inputs.pet is not None else ("ct", "")
    grid_path, grid = headers.get(grid_key, (None, None))
    for (kind, roi), (path, header) in headers.items():
        if (kind, roi) == grid_key or header is None or grid is None:
            continue
        if kind == "ct":
            what, hint = f"CT {str(path)!r}", "check that both files belong to the same patient and scan"
        else:
            what = f"{roi} mask {str(path)!r}"
            hint = f"check that the mask was drawn on this study's images (column 'mask_{roi}')"
        try:
            grids.check_overlap(grid, header, f"{grid_key[0].upper()} {str(grid_path)!r}", what, patient, hint)
        except InputError as exc:
            problems.append(str(exc))
    return problems
