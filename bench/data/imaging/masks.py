"""ROI masks computed from CT: the skeleton, the spine (vertebral column) and the spine dilated by a margin.

The masks prompt the image feature extractors, so they aim at the bone *marrow*
(where myeloma lives), not only the cortex: marrow cavities are filled. Every
length is in millimetres and every morphological step works on physical
distances, so a 1 mm and a 4 mm CT give the same answer. Orientation comes from
the image's direction cosines (DICOM/LPS: +x left, +y posterior, +z superior);
no axis order is assumed. Written for the non-contrast, low-dose CT of PET/CT.

Skeleton: cortex (HU >= ``bone_hu``) grows into connected trabecular bone
(>= ``cancellous_hu``); an in-plane closing seals partial-volume gaps in thin
cortex; enclosed cavities are filled when they are marrow (see ``_marrow``);
specks and anything surrounded by air (the CT table) are dropped.

Skull base: the column ends at the skull base (the foramen magnum), so neither the
skull nor the brain, the hottest organ on FDG PET, is in ``spine`` or
``spine_dilated``. The cranium is found by its cavity: the skull is the one bone
that, in an axial slice, encloses a large region of soft tissue (the brain), and
that region fills much of the head's cross-section. The in-slice regions enclosed
by bone, with the mean HU of brain or CSF (``cranium_hu``) and at least
``foramen_area_mm2`` each, are stacked along z into cavities; a cavity is the
cranium's when one of its slices holds a region of ``cranium_area_mm2`` or more
that fills ``cranium_fill`` of the body's cross-section (the pelvic inlet, the
only other large ring of bone, fills far less; the chest's rings hold air). The
cavity reaches down through the ring of the foramen magnum, which is wider than
any spinal canal below the atlas; the lowest slice of the highest run of such
slices is the skull base. Every slice from the skull base up is left out of both
ROIs. A CT without a cranium (from the neck down, chest, abdomen) is not cut at
all, nor is one that ends within a centimetre or so above the skull base: too
little of the cranium shows to tell it from other rings of bone.

Spine: per axial slice below the skull base, the centroid of the bone near the
body's left-right midline in its posterior half, median-filtered along z, is the
column's centreline; the spine is the skeleton within a box around it (wide
enough for transverse and spinous processes, narrow enough to cut ribs at their
necks), keeping only pieces that reach the centreline's core. ``spine_dilated``
is the spine dilated by ``margin_mm``, also cut at the skull base.

Masks are uint8 0/1 on the CT's own grid.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from bench.errors import UsageError

# Part of the mask cache key (bench.data.imaging.study): bump on any change to what the functions return.
VERSION = "2"

ROIS = ("skeleton", "spine", "spine_dilated")


@dataclass(frozen=True)
class MaskConfig:
    # --- skeleton ---
    bone_hu: float = 200.0  # cortical bone: the seeds of the skeleton
    cancellous_hu: float = 120.0  # trabecular bone grown from the seeds; above discs (~80) and cartilage (~100 HU)
    smooth_mm: float = 1.0  # Gaussian sigma before the cancellous threshold, against the noise of thin-slice CT
    close_mm: float = 4.5  # in-plane closing radius: seals partial-volume gaps in thin cortex before filling
    max_hole_area_mm2: float = 3000.0  # larger enclosed areas are not a bone's cavity (pelvic inlet, skull, thorax)
    fat_hu: float = -30.0  # a cavity this dark (mean HU) is fatty marrow: filled
    marrow_hu: float = 60.0  # a cavity this bright is red marrow: filled. In between is blood, CSF or soft
    #   tissue: filled only when enclosed in 3-D (a lytic lesion), not when open along z (aorta in a calcified
    #   wall, spinal canal)
    min_component_mm3: float = 500.0  # bone components smaller than this (noise, calcified specks) are dropped
    air_hu: float = -400.0  # below this is air: outside the body, lungs, bowel gas
    max_air_fraction: float = 0.8  # components surrounded (2-5 mm out) mostly by air are outside the patient:
    #   the CT table, positioning aids
    # --- skull base ---
    cranium_area_mm2: float = 4000.0  # an in-slice region enclosed by bone this large may be brain (adult brain
    #   at its widest: 15000-25000 mm2; posterior fossa alone: 4000-6000) ...
    cranium_fill: float = 0.3  # ... when it also fills this fraction of the body's cross-section (the vault: 0.6-0.8;
    #   the pelvic inlet, the other large ring of bone: 0.1-0.2) ...
    cranium_hu: tuple[float, float] = (0.0, 100.0)  # ... and its mean HU lies here: brain (~30) and CSF (~10),
    #   not fat, air or lung
    foramen_area_mm2: float = 500.0  # enclosed regions at least this large carry the cranial cavity down through
    #   the foramen magnum (~800 mm2); the spinal canal below the atlas is 150-350 mm2
    # --- spine ---
    search_halfwidth_mm: float = 30.0  # per slice, bone within this of the body's midline locates the column
    min_slice_bone_mm2: float = 150.0  # less bone than this in that window: no column in the slice
    centreline_smooth_mm: float = 30.0  # median window of the centreline along z
    max_gap_mm: float = 30.0  # centreline gaps (discs) up to this long are bridged; longer ones end the column
    halfwidth_mm: float = 35.0  # spine = skeleton within this left-right distance of the centreline: vertebral
    #   bodies, pedicles, most of the transverse processes (lumbar tips reach 40-45 mm and are cut), rib heads
    #   and necks; rib shafts are cut off ...
    anterior_mm: float = 50.0  # ... this far anterior of it (vertebral bodies) ...
    posterior_mm: float = 70.0  # ... and this far posterior (spinous processes)
    core_radius_mm: float = 15.0  # pieces of that box are kept only if they reach this close to the centreline
    # --- spine_dilated ---
    margin_mm: float = 10.0  # dilation of the spine for the spine_dilated ROI


def skeleton_mask(ct: sitk.Image, config: MaskConfig = MaskConfig()) -> sitk.Image:
    """Bone with its marrow cavities filled: uint8 0/1 on the CT grid."""
    frame = _Frame(ct)
    return frame.image(_skeleton(frame.hu(ct), frame, config), ct)


def spine_mask(ct: sitk.Image, skeleton: sitk.Image | None = None, config: MaskConfig = MaskConfig()) -> sitk.Image:
    """The vertebral column (bodies and posterior elements), without ribs or pelvis: uint8 0/1 on the CT grid.

    It ends at the skull base. ``skeleton`` (from ``skeleton_mask``, same grid) saves recomputing it.
    """
    frame, spine, _ = _column(ct, skeleton, config)
    return frame.image(spine, ct)


def spine_dilated_mask(
    ct: sitk.Image, skeleton: sitk.Image | None = None, config: MaskConfig = MaskConfig()
) -> sitk.Image:
    """The spine dilated by ``config.margin_mm`` (see ``dilate_mask``), cut at the skull base like the spine.

    ``skeleton`` (from ``skeleton_mask``, same grid) saves recomputing it.
    """
    frame, spine, below = _column(ct, skeleton, config)
    dilated = frame.array(dilate_mask(frame.image(spine, ct), config.margin_mm)) > 0
    return frame.image(dilated & below[:, None, None], ct)  # the margin must not reach into the skull either


def _column(ct: sitk.Image, skeleton: sitk.Image | None, config: MaskConfig) -> tuple[_Frame, np.ndarray, np.ndarray]:
    """The CT's frame, the spine in its array order, and per slice whether it lies below the skull base."""
    frame = _Frame(ct)
    hu = frame.hu(ct)
    if skeleton is None:
        bone = _skeleton(hu, frame, config)
    else:
        same_grid = skeleton.GetSize() == ct.GetSize() and all(
            np.allclose(a, b, atol=1e-4)
            for a, b in [
                (skeleton.GetSpacing(), ct.GetSpacing()),
                (skeleton.GetOrigin(), ct.GetOrigin()),
                (skeleton.GetDirection(), ct.GetDirection()),
            ]
        )
        if not same_grid:
            raise UsageError("the skeleton passed is not on the CT's grid; compute it with skeleton_mask(ct)")
        bone = frame.array(skeleton) > 0
    return frame, *_spine(hu, bone, frame, config)


def dilate_mask(mask: sitk.Image, margin_mm: float) -> sitk.Image:
    """Every voxel whose centre lies within ``margin_mm`` of a mask voxel's centre (physical distance).

    Uses the signed Maurer distance map with the image spacing, so anisotropic
    voxels are handled; ``margin_mm <= 0`` returns the mask as 0/1.
    """
    binary = sitk.Cast(mask > 0, sitk.sitkUInt8)
    present = sitk.GetArrayViewFromImage(binary).astype(bool)  # numpy order (k, j, i)
    if margin_mm <= 0 or not present.any():
        return binary
    # the distance map only over the mask's bounding box plus the margin: a spine in a whole-body CT is small
    spacing = np.array(binary.GetSpacing())[::-1]
    pad = np.ceil(margin_mm / spacing).astype(int) + 1
    lo, hi = [], []
    for axis in range(3):
        occupied = np.flatnonzero(present.any(axis=tuple(a for a in range(3) if a != axis)))
        lo.append(max(int(occupied[0]) - pad[axis], 0))
        hi.append(min(int(occupied[-1]) + 1 + pad[axis], present.shape[axis]))
    crop = binary[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]]  # sitk slices in index order (i, j, k)
    distance = sitk.SignedMaurerDistanceMap(
        crop, insideIsPositive=False, squaredDistance=False, useImageSpacing=True, backgroundValue=0
    )
    out = np.zeros(present.shape, dtype=np.uint8)
    # the map is float32: a voxel exactly at the margin must not fall out by rounding
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = sitk.GetArrayFromImage(distance) <= margin_mm + 1e-4
    image = sitk.GetImageFromArray(out)
    image.CopyInformation(mask)
    return image


def roi_mask(ct: sitk.Image, roi: str, config: MaskConfig = MaskConfig()) -> sitk.Image:
    """The named ROI (one of ``ROIS``) computed from CT."""
    if roi == "skeleton":
        return skeleton_mask(ct, config)
    if roi == "spine":
        return spine_mask(ct, config=config)
    if roi == "spine_dilated":
        return spine_dilated_mask(ct, config=config)
    raise UsageError(f"unknown ROI {roi!r}; valid ROIs: {', '.join(ROIS)}")


# --- geometry ----------------------------------------------------------------------------------------


class _Frame:
    """The CT's voxel array with its slice axis first, and the map from voxel indices to LPS millimetres.

    The slice axis is the index axis closest to the patient's z (superior) axis,
    so "per slice" means per (near-)axial plane whatever the file's axis order.
    """

    def __init__(self, image: sitk.Image):
        if image.GetDimension() != 3:
            raise UsageError(f"ROI masks need a 3-D CT, got a {image.GetDimension()}-D image")
        direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)  # column a: index axis a in LPS
        spacing = np.array(image.GetSpacing(), dtype=float)
        slice_axis = int(np.argmax(np.abs(direction[2])))
        self.order = [slice_axis, *(a for a in (2, 1, 0) if a != slice_axis)]  # sitk index axis of each array axis
        self.transpose = [2 - a for a in self.order]  # numpy's array axes are the sitk index axes reversed
        self.origin = np.array(image.GetOrigin(), dtype=float)
        self.step = direction[:, self.order] * spacing[self.order]  # LPS mm per index step along each array axis
        self.spacing = spacing[self.order]
        self.voxel_mm3 = float(np.prod(spacing))

    def array(self, image: sitk.Image) -> np.ndarray:
        return np.transpose(sitk.GetArrayFromImage(image), self.transpose)

    def hu(self, ct: sitk.Image) -> np.ndarray:
        return self.array(ct).astype(np.float32)

    def image(self, mask: np.ndarray, like: sitk.Image) -> sitk.Image:
        out = sitk.GetImageFromArray(np.transpose(mask.astype(np.uint8), np.argsort(self.transpose)))
        out.CopyInformation(like)
        return out

    def in_plane(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """LPS x (left) and y (posterior) in mm of each voxel of slice 0."""
        j, i = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
        x = self.origin[0] + self.step[0, 1] * j + self.step[0, 2] * i
        y = self.origin[1] + self.step[1, 1] * j + self.step[1, 2] * i
        return x, y

    def slice_shift(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The x and y shift of slices 0..n-1 relative to slice 0 (non-zero for tilted slices)."""
        k = np.arange(n)
        return self.step[0, 0] * k, self.step[1, 0] * k

    def slice_z(self, n: int) -> np.ndarray:
        """The LPS z (superior) in mm of slices 0..n-1 (at their first in-plane voxel)."""
        return self.origin[2] + self.step[2, 0] * np.arange(n)


# --- skeleton ----------------------------------------------------------------------------------------

_FULL = ndimage.generate_binary_structure(3, 3)  # 26-connected
_FACE = ndimage.generate_binary_structure(3, 1)  # 6-connected
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)  # 4-connected within a slice, nothing across slices


def _skeleton(hu: np.ndarray, frame: _Frame, config: MaskConfig) -> np.ndarray:
    cortex = hu >= config.bone_hu
    smooth = ndimage.gaussian_filter(hu, config.smooth_mm / frame.spacing) if config.smooth_mm > 0 else hu
    # trabecular bone: connected to cortex; the raw HU must agree, or smoothing would add a rim around dense cortex
    bone = cortex | (_connected_to(smooth >= config.cancellous_hu, cortex) & (hu >= config.cancellous_hu))
    closed = _close_in_plane(bone, config.close_mm, frame.spacing)
    bone = _drop_small(closed | _marrow(closed, hu, frame, config), config.min_component_mm3 / frame.voxel_mm3)
    return _drop_outside_body(bone, hu, frame.spacing, config)


def _marrow(bone: np.ndarray, hu: np.ndarray, frame: _Frame, config: MaskConfig) -> np.ndarray:
    """The in-slice cavities of ``bone`` that are marrow.

    A cavity is marrow when it is fatty or dense, or when it is enclosed in 3-D
    (capped at the first and last slice, so a femur cut by the field of view
    still counts), but never when it holds air. Blood- or CSF-like cavities open
    along z are vessels in a calcified wall or the spinal canal.
    """
    holes = _enclosed(bone, _IN_PLANE)
    labels, n = ndimage.label(holes, structure=_IN_PLANE)
    if n == 0:
        return holes
    which = labels[holes]
    count = np.bincount(which, minlength=n + 1)[1:]
    area = count * frame.spacing[1] * frame.spacing[2]
    mean_hu = np.bincount(which, weights=hu[holes], minlength=n + 1)[1:] / count
    enclosed = np.bincount(which, weights=_enclosed(bone, _FACE)[holes], minlength=n + 1)[1:] / count
    # air (sinuses, lung, bowel gas) is never marrow
    marrow = (mean_hu > config.air_hu) & (
        (mean_hu <= config.fat_hu) | (mean_hu >= config.marrow_hu) | (enclosed >= 0.5)
    )
    keep = np.concatenate([[False], marrow & (area <= config.max_hole_area_mm2)])
    return keep[labels]


def _enclosed(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """Background not connected to the array's in-plane borders (the first and last slice count as closed)."""
    labels, _ = ndimage.label(~mask, structure=structure)
    borders = (labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1])
    inside = np.ones(labels.max() + 1, dtype=bool)
    inside[0] = False
    for border in borders:
        inside[border] = False
    return inside[labels]


def _close_in_plane(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Per slice, a closing with a disc of ``radius_mm``, exact in mm (via distance maps).

    In-plane only, so intervertebral discs and joint spaces along z are not bridged.
    """
    if radius_mm <= 0:
        return mask
    pad = np.ceil(radius_mm / spacing[1:]).astype(int) + 1
    out = mask.copy()
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        rows = np.flatnonzero(mask[k].any(axis=1))
        cols = np.flatnonzero(mask[k].any(axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))  # this slice's bone
        padded = np.pad(mask[k][box], [(pad[0], pad[0]), (pad[1], pad[1])])
        dilated = ndimage.distance_transform_edt(~padded, sampling=spacing[1:]) <= radius_mm
        closed = ndimage.distance_transform_edt(dilated, sampling=spacing[1:]) > radius_mm
        out[k][box] |= closed[pad[0] : -pad[0], pad[1] : -pad[1]]
    return out


def _drop_outside_body(bone: np.ndarray, hu: np.ndarray, spacing: np.ndarray, config: MaskConfig) -> np.ndarray:
    """Drops components surrounded by air (the CT table): bone lies in soft tissue."""
    near, far = 2.0, 5.0  # mm: the shell skips the component's partial-volume edge
    pad = np.ceil(far / spacing).astype(int) + 1
    labels, _ = ndimage.label(bone, structure=_FULL)
    out = bone.copy()
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        box = tuple(slice(max(b.start - p, 0), b.stop + p) for b, p in zip(box, pad))
        distance = ndimage.distance_transform_edt(labels[box] != label, sampling=spacing)
        shell = (distance > near) & (distance <= far) & ~bone[box]
        if shell.any() and np.mean(hu[box][shell] < config.air_hu) > config.max_air_fraction:
            out[box] &= labels[box] != label
    return out


# --- spine -------------------------------------------------------------------------------------------


def _spine(hu: np.ndarray, bone: np.ndarray, frame: _Frame, config: MaskConfig) -> tuple[np.ndarray, np.ndarray]:
    """The column, and per slice whether it lies below the skull base (all True without a cranium)."""
    body = _largest_component(hu > config.air_hu)  # the patient, not the table
    below = _below_skull_base(hu, bone, body, frame, config)
    bone = bone & below[:, None, None]
    cx, cy = _centreline(hu, bone, body, frame, config)
    x0, y0 = frame.in_plane(hu.shape)
    shift_x, shift_y = frame.slice_shift(hu.shape[0])
    spine = np.zeros_like(bone)
    core = np.zeros_like(bone)
    for k in np.flatnonzero(np.isfinite(cx)):
        dx = x0 + shift_x[k] - cx[k]
        dy = y0 + shift_y[k] - cy[k]  # LPS: +y is posterior
        box = (np.abs(dx) <= config.halfwidth_mm) & (dy >= -config.anterior_mm) & (dy <= config.posterior_mm)
        spine[k] = bone[k] & box
        core[k] = bone[k] & (dx**2 + dy**2 <= config.core_radius_mm**2)
    # what the box cut loose (rib shafts, calcified plaque) does not reach the column's core
    return _connected_to(spine, core, _FULL), below


def _below_skull_base(
    hu: np.ndarray, bone: np.ndarray, body: np.ndarray, frame: _Frame, config: MaskConfig
) -> np.ndarray:
    """Per slice, whether it lies below the skull base: the lowest slice of the cranial cavity (module docstring)."""
    nz = hu.shape[0]
    pixel_mm2 = frame.spacing[1] * frame.spacing[2]
    enclosed = _enclosed(bone, _IN_PLANE)
    regions, n = ndimage.label(enclosed, structure=_IN_PLANE)  # in-slice regions: none spans two slices
    if n == 0:
        return np.ones(nz, dtype=bool)
    which = regions[enclosed]
    area = np.bincount(which, minlength=n + 1)[1:] * pixel_mm2
    mean_hu = np.bincount(which, weights=hu[enclosed], minlength=n + 1)[1:] / np.maximum(area / pixel_mm2, 1)
    layer = np.array([box[0].start for box in ndimage.find_objects(regions)])
    body_mm2 = np.count_nonzero(body, axis=(1, 2))[layer] * pixel_mm2
    soft = (area >= config.foramen_area_mm2) & (mean_hu >= config.cranium_hu[0]) & (mean_hu <= config.cranium_hu[1])
    brain = soft & (area >= config.cranium_area_mm2) & (area >= config.cranium_fill * body_mm2)
    if not brain.any():
        return np.ones(nz, dtype=bool)
    # the soft regions stacked along z are cavities; the cranium's cavity is the one (or ones) holding brain
    cavities, _ = ndimage.label(np.concatenate([[False], soft])[regions], structure=_FACE)
    cranial = np.zeros(cavities.max() + 1, dtype=bool)
    cranial[cavities[np.concatenate([[False], brain])[regions]]] = True
    cranial[0] = False
    layers = np.flatnonzero(cranial[cavities].any(axis=(1, 2)))
    # the highest run of cranial slices (short gaps bridged) is the cranium; its lowest slice is the skull base
    z = frame.slice_z(nz)
    ordered = layers[np.argsort(-z[layers])]
    run_end = np.flatnonzero(np.abs(np.diff(z[ordered])) > config.max_gap_mm)
    base = ordered[run_end[0]] if run_end.size else ordered[-1]
    return z < z[base]


def _centreline(
    hu: np.ndarray, bone: np.ndarray, body: np.ndarray, frame: _Frame, config: MaskConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Per slice, the LPS x and y (mm) of the column's centre; NaN where there is no column.

    The centre is the centroid of the bone near the body's left-right midline in
    its posterior half (ribs, pelvis and limbs lie lateral; sternum and pubis
    anterior), median-filtered along z and interpolated across short gaps.
    """
    nz = hu.shape[0]
    x0, y0 = frame.in_plane(hu.shape)
    shift_x, shift_y = frame.slice_shift(nz)
    pixel_mm2 = frame.spacing[1] * frame.spacing[2]
    window = config.centreline_smooth_mm / frame.spacing[0]

    body_x = _median_along(_slice_mean(body, x0, shift_x), window)
    body_y = _slice_mean(body, y0, shift_y)

    cx = np.full(nz, np.nan)
    cy = np.full(nz, np.nan)
    for k in np.flatnonzero(np.isfinite(body_x) & bone.any(axis=(1, 2))):
        x = x0 + shift_x[k]
        y = y0 + shift_y[k]
        near_midline = bone[k] & (np.abs(x - body_x[k]) <= config.search_halfwidth_mm) & (y >= body_y[k])
        if np.count_nonzero(near_midline) * pixel_mm2 >= config.min_slice_bone_mm2:
            cx[k] = x[near_midline].mean()
            cy[k] = y[near_midline].mean()
    max_gap = config.max_gap_mm / frame.spacing[0]
    return _fill_gaps(_median_along(cx, window), max_gap), _fill_gaps(_median_along(cy, window), max_gap)


# --- helpers -----------------------------------------------------------------------------------------


def _connected_to(mask: np.ndarray, seeds: np.ndarray, structure: np.ndarray = _FACE) -> np.ndarray:
    """The components of ``mask`` that contain a seed voxel."""
    labels, n = ndimage.label(mask, structure=structure)
    if n == 0:
        return mask
    keep = np.zeros(n + 1, dtype=bool)
    keep[labels[seeds]] = True
    keep[0] = False
    return keep[labels]


def _drop_small(mask: np.ndarray, min_voxels: float) -> np.ndarray:
    labels, n = ndimage.label(mask, structure=_FULL)
    if n == 0:
        return mask
    keep = np.bincount(labels.ravel()) >= min_voxels
    keep[0] = False
    return keep[labels]


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _slice_mean(mask: np.ndarray, coord: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Per slice, the mean in-plane coordinate over the mask (NaN where the slice is empty)."""
    out = np.full(mask.shape[0], np.nan)
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        out[k] = coord[mask[k]].mean() + shift[k]
    return out


def _median_along(values: np.ndarray, window: float) -> np.ndarray:
    """A running median over the finite values (window in slices); NaN stays NaN."""
    half = max(round(float(window) / 2), 0)
    out = np.full_like(values, np.nan)
    for k in np.flatnonzero(np.isfinite(values)):
        near = values[max(k - half, 0) : k + half + 1]
        out[k] = np.median(near[np.isfinite(near)])
    return out


def _fill_gaps(values: np.ndarray, max_gap: float) -> np.ndarray:
    """Linear interpolation across interior runs of NaN no longer than ``max_gap`` slices."""
    good = np.flatnonzero(np.isfinite(values))
    out = values.copy()
    for a, b in itertools.pairwise(good):
        if 1 < b - a <= max_gap + 1:
            out[a + 1 : b] = np.interp(np.arange(a + 1, b), [a, b], [values[a], values[b]])
    return out
