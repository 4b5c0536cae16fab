"""Disease and imaging physics of one patient: lesions, soft-tissue masses, tissue values, PET blur and noise.

A rescan (``render_patient(..., rescan=True)``, the test-retest preset's second scan) is the same
patient: anatomy, lesions, tissue values and outcome are drawn with the first scan's keys, and only
three things change, each drawn from ``_rng(preset, seed, patient, "rescan", ...)``
(:func:`rescan_change`):

- a rigid displacement of the patient on the table, 2 to 4 mm in a uniformly random 3-D direction
  (sub-voxel). It is exact, with no resampling: the scanner's grids stay where they are and the
  patient is painted on copies of them moved the other way, so every shape, partial-volume fraction
  and label is rasterised afresh at its displaced position (PET, CT and labels together);
- an uptake-time change: the PET activity times 1 + u, |u| <= 0.05, before blur and noise;
- new noise: PET and CT noise from the rescan's own generator.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from bench.data.synthetic.anatomy import (
    _SKULL_BASE,
    FEMUR,
    HUMERUS,
    PELVIS,
    RIBS,
    SKULL,
    SPINE,
    _body,
    _paint_anatomy,
    _paint_spine,
)
from bench.data.synthetic.canvas import (
    BLADDER,
    BLOOD_POOL,
    BODY,
    BRAIN,
    CORTEX,
    EXTRAMEDULLARY,
    FOCAL_LESION,
    LIVER,
    LUNG,
    MARROW,
    _Canvas,
    _Grid,
    _grids,
)
from bench.data.synthetic.patients import _lesion_attributes
from bench.data.synthetic.presets import Preset, _preset, _rng
from bench.errors import DataError

_SITE_WEIGHTS = {SPINE: 0.38, PELVIS: 0.2, RIBS: 0.17, SKULL: 0.1, FEMUR: 0.1, HUMERUS: 0.05}
RESCAN_SHIFT_MM = (2.0, 4.0)  # how far the patient lies from where it lay at the first scan
RESCAN_UPTAKE = 0.05  # largest relative change of PET activity between the scans


def render_patient(
    row: Mapping, preset: str | Preset, seed: int, rescan: bool = False
) -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    """PET (float32 SUV), CT (float32 HU, on its own finer grid) and the anatomy labels on the PET grid (uint8).

    ``row`` is a row of :func:`sample_patients` for the same preset and seed. With ``rescan``, the
    patient's second scan: displaced, its uptake changed and new noise (see the module's docstring).
    """
    preset = _preset(preset)
    row = dict(row)
    pid = str(row["patient_id"])
    body = _body(row)
    pet_grid, ct_grid = _grids(preset, body)
    cortex = _cortex_mm(preset)
    pet_canvas = _Canvas(pet_grid, body, cortex)
    _paint_anatomy(pet_canvas)

    n = int(row["n_lesions"])
    suvmax = float(row["lesion_suvmax"]) if n else float("nan")
    marrow = float(row["marrow_suv"])
    lesions = _lesion_attributes(preset, seed, pid, n, suvmax, marrow, float(row["lytic_fraction"]))
    place = _rng(preset, seed, pid, "placement")
    gap = max(2.0 * max(pet_grid.spacing), 1.5 * preset.pet_fwhm)  # apart enough to stay separate after blurring
    centres = _place_lesions(pet_canvas, pet_grid, lesions["radius"], place, gap)
    emd: list[tuple[np.ndarray, float, float]] = []
    if int(row["emd"]):
        for _ in range(1 + int(place.random() < 0.35)):
            radius, suv = place.uniform(12.0, 25.0), place.uniform(4.0, 9.0)
            placed = centres + [c for c, _, _ in emd]
            radii = list(lesions["radius"]) + [r for _, r, _ in emd]
            emd.append((_place_soft_tissue_mass(pet_canvas, pet_grid, radius, placed, radii, place, gap), radius, suv))

    v = _rng(preset, seed, pid, "tissue")
    suv = {
        "muscle": v.uniform(0.8, 1.1), "fat": v.uniform(0.25, 0.45), LUNG: v.uniform(0.3, 0.5),
        LIVER: v.uniform(2.0, 3.0), BRAIN: v.uniform(6.5, 9.5), BLADDER: v.uniform(6.0, 14.0),
        BLOOD_POOL: v.uniform(1.3, 1.8), CORTEX: v.uniform(0.6, 1.0), MARROW: marrow,
    }  # fmt: skip
    hu = {
        "muscle": v.uniform(35, 50), "fat": v.uniform(-115, -85), LUNG: v.uniform(-870, -820),
        LIVER: v.uniform(52, 68), BRAIN: v.uniform(30, 40), BLADDER: v.uniform(0, 15), BLOOD_POOL: v.uniform(35, 45),
        CORTEX: v.uniform(750, 950), MARROW: v.uniform(170, 280), "lytic": v.uniform(10, 35), "mass": v.uniform(40, 50),
    }  # fmt: skip

    # Shapes and lesion centres are in the coordinates of the first scan. The patient's shapes are painted on
    # ``pet_at`` and ``ct_at`` and the images written on the scanner's grids, which are the same for a rescan.
    pet_at, ct_at, uptake, noise = pet_grid, ct_grid, 1.0, _rng(preset, seed, pid, "noise")
    if rescan:
        shift, uptake = rescan_change(preset, seed, pid)
        pet_at, ct_at = _moved(pet_grid, -shift), _moved(ct_grid, -shift)  # grids moved back: the patient moves on
        pet_canvas = _Canvas(pet_at, body, cortex)
        _paint_anatomy(pet_canvas)
        noise = _rng(preset, seed, pid, "rescan", "noise")
    ct_canvas = _Canvas(ct_at, body, cortex)
    _paint_anatomy(ct_canvas)

    labels = pet_canvas.labels.copy()
    activity = _lookup(pet_canvas, suv, 0.0)
    for centre, radius, peak in zip(centres, lesions["radius"], lesions["peak"]):
        _add_sphere(activity, labels, pet_at, centre, radius, peak, FOCAL_LESION)
    for centre, radius, peak in emd:
        _add_sphere(activity, labels, pet_at, centre, radius, peak, EXTRAMEDULLARY)
    if rescan:
        # A longer (shorter) uptake time raises (lowers) tumour and marrow SUV as FDG keeps accumulating; one global
        # factor is the simple model of that (background organs clear a little, which it leaves out).
        activity *= np.float32(uptake)
    pet = _pet_blur_and_noise(activity, pet_grid, preset.pet_fwhm, noise)

    ct = _lookup(ct_canvas, hu, -1000.0)
    bone = (ct_canvas.labels == CORTEX) | (ct_canvas.labels == MARROW)
    for centre, radius, lytic in zip(centres, lesions["lytic_radius"], lesions["lytic"]):
        if lytic:
            idx, inside = _sphere_mask(ct_at, centre, radius)
            ct[idx][inside & bone[idx]] = hu["lytic"]
    for centre, radius, _ in emd:
        idx, inside = _sphere_mask(ct_at, centre, radius)
        ct[idx][inside & (ct_canvas.labels[idx] > 0)] = hu["mass"]
    in_body = ct_canvas.labels > 0
    ct[in_body] += noise.normal(0.0, 12.0, int(in_body.sum())).astype(np.float32)
    ct = np.round(ct).astype(np.float32)  # CT stores whole Hounsfield units

    return pet_grid.image(pet), ct_grid.image(ct), pet_grid.image(labels)


def rescan_change(preset: str | Preset, seed: int, patient_id: str) -> tuple[np.ndarray, float]:
    """The displacement (x, y, z in mm, LPS) of a patient at its rescan and the factor on its PET activity."""
    preset = _preset(preset)
    rng = _rng(preset, seed, patient_id, "rescan", "displacement")
    direction = rng.standard_normal(3)
    shift = direction / np.linalg.norm(direction) * rng.uniform(*RESCAN_SHIFT_MM)
    uptake = 1.0 + _rng(preset, seed, patient_id, "rescan", "uptake").uniform(-RESCAN_UPTAKE, RESCAN_UPTAKE)
    return shift, float(uptake)


def _moved(grid: _Grid, by: np.ndarray) -> _Grid:
    return dataclasses.replace(grid, origin=tuple(float(o + d) for o, d in zip(grid.origin, by)))


def spine_truth(row: Mapping, preset: str | Preset) -> tuple[sitk.Image, float]:
    """The vertebral column (C2 to L5 and the sacrum; uint8 0/1 on the CT grid) and the skull base's z (mm).

    Ground truth for tests of the spine ROI, not part of the cohort: the column is
    painted alone on a fresh canvas with the generator's own shapes, so nothing that
    :func:`render_patient` returns or the writer writes changes. The skull (and the
    brain) lie wholly at or above the skull base; C2's tip reaches 5 mm into the
    foramen magnum's ring above it. ``row`` is a row of :func:`sample_patients`.
    """
    preset = _preset(preset)
    body = _body(dict(row))
    _, ct_grid = _grids(preset, body)
    canvas = _Canvas(ct_grid, body, _cortex_mm(preset))
    _paint_spine(canvas)
    column = (canvas.labels == CORTEX) | (canvas.labels == MARROW)
    return ct_grid.image(column.astype(np.uint8)), _SKULL_BASE * body.k


def _cortex_mm(preset: Preset) -> float:
    return max(2.0, preset.ct_spacing[0], preset.ct_spacing[1])  # an unbroken cortical shell on the CT grid


def _lookup(canvas: _Canvas, values: dict, air: float) -> np.ndarray:
    lab = canvas.labels
    out = np.full(lab.shape, air, np.float32)
    out[lab == BODY] = np.where(canvas.core, values["muscle"], values["fat"])[lab == BODY]
    for label in (LUNG, LIVER, BRAIN, BLADDER, BLOOD_POOL, CORTEX, MARROW):
        out[lab == label] = values[label]
    return out


def _place_lesions(canvas: _Canvas, grid: _Grid, radii: np.ndarray, rng: np.random.Generator, gap: float) -> list:
    """Centres (mm) of focal lesions in the marrow, by site, apart from each other by ``gap`` at least."""
    candidates = {}
    for site in _SITE_WEIGHTS:
        flat = np.flatnonzero((canvas.site == site) & (canvas.labels == MARROW))
        if flat.size == 0:  # thin bones at coarse resolution have no marrow voxel
            flat = np.flatnonzero((canvas.site == site) & (canvas.labels == CORTEX))
        if flat.size:
            candidates[site] = flat
    if not candidates:
        raise DataError(f"the field of view of this preset holds no bone; widen z_extent (grid {grid.size})")
    sites = sorted(candidates)
    weights = np.array([_SITE_WEIGHTS[s] for s in sites])
    weights /= weights.sum()
    axes = grid.axes()
    spacing = np.asarray(grid.spacing)
    shape = canvas.labels.shape
    centres: list = [None] * len(radii)
    placed, placed_r = np.zeros((0, 3)), np.zeros(0)
    for i in np.argsort(-np.asarray(radii), kind="stable"):  # big lesions first: they are the hardest to fit
        need = gap
        for attempt in range(400):
            if attempt and attempt % 100 == 0:
                need *= 0.5
            flat = candidates[sites[rng.choice(len(sites), p=weights)]]
            iz, iy, ix = np.unravel_index(flat[rng.integers(flat.size)], shape)
            p = np.array([axes[0][ix], axes[1][iy], axes[2][iz]]) + rng.uniform(-0.3, 0.3, 3) * spacing
            if np.all(np.linalg.norm(placed - p, axis=1) >= placed_r + radii[i] + need):
                break
        centres[i] = p
        placed, placed_r = np.vstack([placed, p]), np.append(placed_r, radii[i])
    return centres


def _place_soft_tissue_mass(canvas, grid, radius, centres, radii, rng, gap) -> np.ndarray:
    """Centre of an extramedullary mass in muscle, clear of bone, organs, skin and the focal lesions."""
    flat = np.flatnonzero((canvas.labels == BODY) & canvas.core)
    axes = grid.axes()
    placed = np.array(centres).reshape(-1, 3)
    margin = 15.0
    for attempt in range(400):
        if attempt and attempt % 100 == 0:
            margin *= 0.5
        iz, iy, ix = np.unravel_index(flat[rng.integers(flat.size)], canvas.labels.shape)
        p = np.array([axes[0][ix], axes[1][iy], axes[2][iz]])
        idx = _box(grid, p, radius + margin)
        clear = bool(np.all(canvas.labels[idx] == BODY) and np.all(canvas.core[idx]))
        if clear and np.all(np.linalg.norm(placed - p, axis=1) >= np.asarray(radii) + radius + gap):
            return p
    return p


def _box(grid: _Grid, centre: np.ndarray, half: float) -> tuple[slice, slice, slice]:
    """(z, y, x) slices of the voxels within ``half`` mm of ``centre`` along every axis."""
    out = []
    for o, s, n, c in zip(grid.origin, grid.spacing, grid.size, centre):
        lo, hi = math.floor((c - half - o) / s), math.ceil((c + half - o) / s) + 1
        out.append(slice(min(max(lo, 0), n), min(max(hi, 0), n)))
    return out[2], out[1], out[0]


def _sphere_mask(grid: _Grid, centre, radius: float):
    idx = _box(grid, centre, radius)
    x, y, z = (a[i] for a, i in zip(grid.axes(), idx[::-1]))
    d2 = (z[:, None, None] - centre[2]) ** 2 + (y[None, :, None] - centre[1]) ** 2 + (x[None, None, :] - centre[0]) ** 2
    return idx, d2 <= radius**2


def _add_sphere(activity, labels, grid: _Grid, centre, radius: float, value: float, label: int, sub: int = 3) -> None:
    """Blend a uniform sphere into the activity by the fraction of each voxel it covers (partial volume)."""
    idx = _box(grid, centre, radius + max(grid.spacing))
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    d2 = []
    for axis_values, i, s, c in zip(grid.axes(), idx[::-1], grid.spacing, centre):
        d2.append((axis_values[i][:, None] + offsets * s - c) ** 2)  # (n, sub)
    dx2, dy2, dz2 = d2
    dist2 = dz2[:, None, None, :, None, None] + dy2[None, :, None, None, :, None] + dx2[None, None, :, None, None, :]
    fraction = (dist2 <= radius**2).mean(axis=(3, 4, 5)) * (labels[idx] > 0)
    block = activity[idx]
    block[...] = block * (1 - fraction) + value * fraction
    lab = labels[idx]
    core = fraction >= 0.5
    if not core.any() and fraction.max() > 0:  # a lesion smaller than a voxel still has one
        core = fraction == fraction.max()
    lab[core] = label


def _pet_blur_and_noise(activity: np.ndarray, grid: _Grid, fwhm: float, rng: np.random.Generator) -> np.ndarray:
    sigma = [fwhm / 2.3548 / s for s in grid.spacing[::-1]]
    blurred = ndimage.gaussian_filter(activity, sigma, mode="nearest")
    field = ndimage.gaussian_filter(rng.standard_normal(activity.shape, dtype=np.float32), 0.7, mode="nearest")
    field /= max(float(field.std()), 1e-6)
    pet = blurred + 0.1 * np.sqrt(np.maximum(blurred, 0.0)) * field  # roughly Poisson: noise grows with uptake
    # Steps of 1/1024 SUV, far below the noise: the files compress to about half.
    return (np.round(np.maximum(pet, 0.0) * 1024.0) / 1024.0).astype(np.float32)
