"""One study's images on one grid, with its ROI masks (computed from CT when not supplied, and cached).

The declared grid is the PET grid: CT is resampled onto it linearly, masks with
nearest neighbour, in physical space. A computed mask is cached under the hash
of the CT's files, the ROI and the mask algorithm's version, written atomically,
and never written for input that failed to load.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from bench.imaging import io
from bench.imaging import masks as mask_algorithms


@dataclass
class Study:
    patient: str
    pet: sitk.Image  # SUV
    ct: sitk.Image  # HU, on the PET grid
    ct_native: sitk.Image  # HU, on its own grid (masks are computed there)
    ct_files: list[Path]


def cache_dir() -> Path:
    env = os.environ.get("BENCH_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "prognosis-bench" / "cache"


def load_study(inputs: dict, patient: str) -> Study:
    pet = io.read_pet(inputs["pet"], patient=patient, units=inputs.get("pet_units", "suv"))
    ct_native = io.read_ct(inputs["ct"], patient=patient)
    io.check_overlap(pet, ct_native, f"PET {str(inputs['pet'])!r}", f"CT {str(inputs['ct'])!r}", patient=patient)
    ct = io.resample_to(ct_native, pet, "linear", default=-1000.0)
    path = Path(inputs["ct"])
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return Study(patient, pet, ct, ct_native, files)


def roi_mask(study: Study, inputs: dict, roi: str, use_cache: bool = True) -> sitk.Image:
    """The ROI on the PET grid: the manifest's mask if it has one, else computed from CT (cached)."""
    supplied = inputs.get("masks", {}).get(roi)
    if supplied is not None:
        mask = io.read_mask(supplied, patient=study.patient, roi=roi)
        return io.resample_to(mask, study.pet, "nearest")
    key = _mask_key(study, roi)
    cached = cache_dir() / "masks" / f"{key}.nii.gz"
    if use_cache and cached.exists():
        try:
            return sitk.ReadImage(str(cached), sitk.sitkUInt8)
        except RuntimeError:
            cached.unlink(missing_ok=True)  # a damaged entry is recomputed, never used
    mask = io.resample_to(mask_algorithms.roi_mask(study.ct_native, roi), study.pet, "nearest")
    if use_cache:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp.nii.gz")
        sitk.WriteImage(mask, str(tmp), useCompression=True)
        os.replace(tmp, cached)
    return mask


def _mask_key(study: Study, roi: str) -> str:
    digest = hashlib.sha256()
    for path in study.ct_files:
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update(f"{roi}|{mask_algorithms.VERSION}|{mask_algorithms.MaskConfig()!r}".encode())
    return digest.hexdigest()
