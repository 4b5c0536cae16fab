"""Where images lie in space: their extents, whether two overlap, and bringing one onto another's grid.

The extent (``Header``) of an image comes from the image itself, or from a NIfTI header or a DICOM
series' tags without reading any voxel (``bench.data.imaging.io.read_header``), so that every
input can be checked before any work.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pydicom
import SimpleITK as sitk

from bench.errors import InputError


@dataclass(frozen=True)
class Header:
    """What an image file says of itself without its voxels: its size and where it lies in space."""

    size: tuple[int, ...]
    low: np.ndarray  # lowest physical coordinate reached by its voxels (outer faces), mm
    high: np.ndarray  # highest

    def overlaps(self, other: Header) -> bool:
        return bool(np.all(np.maximum(self.low, other.low) < np.minimum(self.high, other.high)))


def resample_to(
    image: sitk.Image,
    reference: sitk.Image,
    interpolation: Literal["linear", "nearest"] = "linear",
    default: float = 0.0,
) -> sitk.Image:
    """``image`` on ``reference``'s grid, matched through physical space (identity transform).

    Linear for images (float output), nearest neighbour for masks (pixel type kept);
    voxels outside ``image`` get ``default``.
    """
    if interpolation == "linear":
        interpolator = sitk.sitkLinear
        pixel_type = image.GetPixelID() if image.GetPixelID() == sitk.sitkFloat64 else sitk.sitkFloat32
    elif interpolation == "nearest":
        interpolator = sitk.sitkNearestNeighbor
        pixel_type = image.GetPixelID()
    else:
        raise ValueError(f"interpolation must be 'linear' or 'nearest', not {interpolation!r}")
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default, pixel_type)


def check_overlap(
    a: sitk.Image | Header,
    b: sitk.Image | Header,
    what_a: str,
    what_b: str,
    patient: str | None = None,
    hint: str = "check that both files belong to the same patient and scan",
) -> None:
    """Raise ``InputError`` when the physical bounding boxes of ``a`` and ``b`` (images or headers) do not intersect.

    ``what_a`` and ``what_b`` name the images in the message, e.g. ``"PET 'scans/P001_pet.nii.gz'"``.
    """
    box_a, box_b = (x if isinstance(x, Header) else image_header(x) for x in (a, b))
    if box_a.overlaps(box_b):
        return
    raise _error(
        patient,
        f"{what_a} and {what_b} do not overlap in space ({what_a} spans {_span(box_a.low, box_a.high)} mm, "
        f"{what_b} spans {_span(box_b.low, box_b.high)} mm); {hint}",
    )


def mask_on(
    mask: sitk.Image, grid: sitk.Image, what_mask: str, what_grid: str, patient: str | None = None, column: str = ""
) -> sitk.Image:
    """``mask`` brought onto ``grid`` (nearest neighbour); an ``InputError`` when none of its voxels lands there.

    A mask drawn on another scan, or smaller than one voxel of the grid, would otherwise reach a
    feature library as an empty ROI ("No labels found in this mask").
    """
    hint = "check that the mask was drawn on this study's images" + (f" (column {column!r})" if column else "")
    check_overlap(grid, mask, what_grid, what_mask, patient, hint)
    resampled = resample_to(mask, grid, "nearest")
    if not sitk.GetArrayViewFromImage(resampled).any():
        raise _error(
            patient,
            f"{what_mask} has no voxel left on the grid of {what_grid} after resampling (it lies outside "
            f"the image, or is smaller than one of its voxels); {hint}",
        )
    return resampled


def image_header(image: sitk.Image) -> Header:
    """The ``Header`` of an image already read."""
    low, high = _bounding_box(image)
    return Header(tuple(image.GetSize()), low, high)


def _bounding_box(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest physical coordinate reached by the image's voxels (their outer faces)."""
    extents = [(-0.5, size - 0.5) for size in image.GetSize()]
    corners = np.array(
        [image.TransformContinuousIndexToPhysicalPoint(corner) for corner in itertools.product(*extents)]
    )
    return corners.min(axis=0), corners.max(axis=0)


def grid_header(size: tuple[int, ...], origin: np.ndarray, axes: np.ndarray) -> Header:
    """The extent of a grid whose voxel (i, j, k) centre is ``origin + axes @ (i, j, k)`` (axes: direction x spacing)."""
    extents = [(-0.5, n - 0.5) for n in size]
    corners = np.array([origin + axes @ np.array(corner) for corner in itertools.product(*extents)])
    return Header(tuple(int(n) for n in size), corners.min(axis=0), corners.max(axis=0))


def dicom_header(first: pydicom.Dataset, last: pydicom.Dataset, count: int) -> Header | None:
    """A series' extent from its first and last slices' position, orientation and spacing tags."""
    try:
        start = np.array([float(v) for v in first.ImagePositionPatient])
        end = np.array([float(v) for v in last.ImagePositionPatient])
        orientation = np.array([float(v) for v in first.ImageOrientationPatient]).reshape(2, 3)
        row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
        size = (int(first.Columns), int(first.Rows), count)
    except (AttributeError, TypeError, ValueError):
        return None
    step = (end - start) / (count - 1) if count > 1 else np.cross(*orientation)
    axes = np.column_stack([orientation[0] * column_spacing, orientation[1] * row_spacing, step])
    return grid_header(size, start, axes)


def _error(patient: str | None, message: str) -> InputError:
    where = f"patient {patient!r}: " if patient is not None else ""
    return InputError(" ".join(f"{where}{message}".split()))


def _span(low: np.ndarray, high: np.ndarray) -> str:
    return " x ".join(f"[{lo:.0f}, {hi:.0f}]" for lo, hi in zip(low, high, strict=True))
