"""Anatomy label values, the PET and CT voxel grids, and the canvas that paints shapes onto a grid.

Geometry is LPS with an identity direction: x runs to the patient's left, y to
posterior, z upwards in mm above the floor the patient would stand on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from bench.data.synthetic.presets import Preset

# Labels of the anatomy map (on the PET grid; ground truth for tests only).
BODY, LUNG, LIVER, BRAIN, BLADDER, BLOOD_POOL = 1, 2, 3, 4, 5, 6
CORTEX, MARROW, FOCAL_LESION, EXTRAMEDULLARY = 10, 11, 20, 21
LABELS = {
    "body": BODY, "lungs": LUNG, "liver": LIVER, "brain": BRAIN, "bladder": BLADDER, "blood_pool": BLOOD_POOL,
    "cortical_bone": CORTEX, "marrow": MARROW, "focal_lesion": FOCAL_LESION, "extramedullary_lesion": EXTRAMEDULLARY,
}  # fmt: skip


@dataclass(frozen=True)
class _Grid:
    origin: tuple[float, float, float]  # physical position of voxel (0, 0, 0), mm
    spacing: tuple[float, float, float]
    size: tuple[int, int, int]  # (x, y, z)

    def axes(self) -> list[np.ndarray]:
        return [o + s * np.arange(n) for o, s, n in zip(self.origin, self.spacing, self.size)]

    def image(self, array: np.ndarray) -> sitk.Image:
        img = sitk.GetImageFromArray(array)  # array is indexed (z, y, x)
        img.SetOrigin(self.origin)
        img.SetSpacing(self.spacing)
        return img


@dataclass(frozen=True)
class _Body:
    k: float  # height / 175 cm: scales the skeleton and the organs
    muscle: float  # girth of muscle and viscera relative to the standard body
    fat: float  # subcutaneous fat, mm
    dx: float  # position on the table, mm
    dy: float


def _grids(preset: Preset, body: _Body) -> tuple[_Grid, _Grid]:
    """PET and CT grids over the same physical box; CT is finer in-plane, so its origin differs."""
    z_lo, z_hi = (z * body.k for z in preset.z_extent)
    pet_sp = preset.pet_spacing
    size = [
        round(preset.fov_xy[0] / pet_sp[0]),
        round(preset.fov_xy[1] / pet_sp[1]),
        math.ceil((z_hi - z_lo) / pet_sp[2]),
    ]
    lower = (-size[0] * pet_sp[0] / 2, -size[1] * pet_sp[1] / 2, round(z_lo / pet_sp[2]) * pet_sp[2])
    pet = _Grid(tuple(lo + s / 2 for lo, s in zip(lower, pet_sp)), pet_sp, tuple(size))
    extent = [n * s for n, s in zip(size, pet_sp)]
    ct_sp = preset.ct_spacing
    ct_size = tuple(math.ceil(e / s - 1e-6) for e, s in zip(extent, ct_sp))
    ct = _Grid(tuple(lo + s / 2 for lo, s in zip(lower, ct_sp)), ct_sp, ct_size)
    return pet, ct


class _Canvas:
    """Anatomy labels of one patient on one grid, painted in standard-body coordinates."""

    def __init__(self, grid: _Grid, body: _Body, cortex_mm: float):
        x, y, z = grid.axes()
        self.x = (x - body.dx) / body.k
        self.y = (y - body.dy) / body.k
        self.z = z / body.k
        shape = (len(z), len(y), len(x))
        self.labels = np.zeros(shape, np.uint8)
        self.core = np.zeros(shape, bool)  # inside the muscle and viscera, i.e. not fat or air
        self.site = np.zeros(shape, np.uint8)
        self.t = cortex_mm / body.k  # cortical thickness in standard units
        self.fat = body.fat / body.k
        self.muscle = body.muscle

    def block(self, lo, hi):
        """Index slices of a standard-coordinate box and its broadcastable coordinates, or None when outside."""
        slices = []
        for axis, a, b in zip((self.x, self.y, self.z), lo, hi):
            i0, i1 = int(np.searchsorted(axis, a, "left")), int(np.searchsorted(axis, b, "right"))
            if i1 <= i0:
                return None
            slices.append(slice(i0, i1))
        sx, sy, sz = slices
        return (sz, sy, sx), self.x[sx][None, None, :], self.y[sy][None, :, None], self.z[sz][:, None, None]

    # -- painting

    def soft(self, idx, core: np.ndarray, body: np.ndarray) -> None:
        lab = self.labels[idx]
        lab[_full(body, lab) & (lab == 0)] = BODY
        self.core[idx] |= core

    def organ(self, idx, mask: np.ndarray, label: int) -> None:
        lab = self.labels[idx]
        lab[_full(mask, lab) & self.core[idx]] = label

    def bone(self, idx, outer: np.ndarray, inner: np.ndarray | None, site: int) -> None:
        lab = self.labels[idx]
        outer = _full(outer, lab)
        lab[outer] = CORTEX
        if inner is not None:
            lab[_full(inner, lab) & outer] = MARROW
        self.site[idx][outer] = site
        self.core[idx] |= outer

    def carve(self, idx, mask: np.ndarray) -> None:
        """Soft tissue where a bone shape left none (joint spaces, the spinal canal)."""
        lab = self.labels[idx]
        mask = _full(mask, lab)
        lab[mask] = BODY
        self.site[idx][mask] = 0
        self.core[idx] |= mask

    # -- shapes

    def tube(self, knots: np.ndarray, grow: float = 0.0):
        """Elliptic cross-sections interpolated along z: (index, (u, v, ax, ay, angle), z), or None outside.

        ``knots`` rows are (z, centre x, centre y, half-axis x, half-axis y, rotation); see :func:`_q`.
        """
        r = np.maximum(knots[:, 3], knots[:, 4]) + grow
        lo = (np.min(knots[:, 1] - r), np.min(knots[:, 2] - r), knots[0, 0])
        hi = (np.max(knots[:, 1] + r), np.max(knots[:, 2] + r), knots[-1, 0])
        blk = self.block(lo, hi)
        if blk is None:
            return None
        idx, X, Y, Z = blk
        zc = Z[:, 0, 0]
        cx, cy, ax, ay, ang = (np.interp(zc, knots[:, 0], knots[:, j])[:, None, None] for j in range(1, 6))
        return idx, (X - cx, Y - cy, ax, ay, ang), Z

    def soft_tube(self, knots: np.ndarray, fat: float) -> None:
        knots = knots.copy()
        knots[:, 3:5] *= self.muscle
        got = self.tube(knots, grow=fat)
        if got is None:
            return
        idx, (u, v, ax, ay, ang), _ = got
        self.soft(idx, _q(u, v, ax, ay, ang) <= 1, _q(u, v, ax + fat, ay + fat, ang) <= 1)

    def bone_tube(self, knots: np.ndarray, site: int, caps: bool = True, cortex: float | None = None) -> None:
        got = self.tube(knots)
        if got is None:
            return
        idx, (u, v, ax, ay, ang), Z = got
        t = self.t if cortex is None else max(cortex, self.t)
        inner = _q(u, v, ax - t, ay - t, ang) <= 1
        if caps:
            inner &= (Z >= knots[0, 0] + t) & (Z <= knots[-1, 0] - t)
        self.bone(idx, _q(u, v, ax, ay, ang) <= 1, inner, site)

    def ellipsoid(self, centre, radii, grow: float = 0.0):
        c, r = np.asarray(centre, float), np.asarray(radii, float) + grow
        blk = self.block(c - r, c + r)
        if blk is None:
            return None
        idx, X, Y, Z = blk
        return idx, ((X - c[0]) / r[0]) ** 2 + ((Y - c[1]) / r[1]) ** 2 + ((Z - c[2]) / r[2]) ** 2

    def soft_ellipsoid(self, centre, radii, fat: float) -> None:
        got = self.ellipsoid(centre, radii, grow=fat)
        if got is not None:
            idx, q = got
            self.soft(idx, _within(self.ellipsoid(centre, radii), idx, q.shape), q <= 1)

    def bone_ellipsoid(self, centre, radii, site: int) -> None:
        got = self.ellipsoid(centre, radii)
        if got is None:
            return
        idx, q = got
        inner = self.ellipsoid(centre, np.asarray(radii, float) - self.t)
        self.bone(idx, q <= 1, _within(inner, idx, q.shape), site)

    def capsule(self, p0, p1, radius: float):
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        blk = self.block(np.minimum(p0, p1) - radius, np.maximum(p0, p1) + radius)
        if blk is None:
            return None
        idx, X, Y, Z = blk
        d = p1 - p0
        length2 = max(float(d @ d), 1e-9)
        s = np.clip(((X - p0[0]) * d[0] + (Y - p0[1]) * d[1] + (Z - p0[2]) * d[2]) / length2, 0.0, 1.0)
        dist2 = (X - p0[0] - s * d[0]) ** 2 + (Y - p0[1] - s * d[1]) ** 2 + (Z - p0[2] - s * d[2]) ** 2
        return idx, dist2

    def bone_capsule(self, p0, p1, radius: float, site: int) -> None:
        got = self.capsule(p0, p1, radius)
        if got is None:
            return
        idx, dist2 = got
        inner = radius - self.t
        self.bone(idx, dist2 <= radius**2, dist2 <= inner**2 if inner > 0 else None, site)


def _full(mask: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.broadcast_to(mask, np.broadcast_shapes(mask.shape, like.shape))


def _q(u, v, ax, ay, ang):
    """Normalised squared radius of (u, v) in an ellipse with half-axes ax, ay rotated by ang."""
    if np.any(ang):
        c, s = np.cos(ang), np.sin(ang)
        u, v = u * c + v * s, -u * s + v * c
    with np.errstate(divide="ignore", invalid="ignore"):
        q = (u / ax) ** 2 + (v / ay) ** 2
    return np.where((ax > 0) & (ay > 0), q, np.inf)


def _within(got, idx, shape) -> np.ndarray:
    """Another shape's (index, q) as a mask on the block ``idx`` of the given shape (False where it is absent)."""
    mask = np.zeros(shape, bool)
    if got is None:
        return mask
    other, q = got
    lo = [max(a.start, b.start) for a, b in zip(other, idx)]
    hi = [min(a.stop, b.stop) for a, b in zip(other, idx)]
    if any(top <= low for low, top in zip(lo, hi)):
        return mask
    here = tuple(slice(low - b.start, top - b.start) for low, top, b in zip(lo, hi, idx))
    there = tuple(slice(low - a.start, top - a.start) for low, top, a in zip(lo, hi, other))
    mask[here] = q[there] <= 1
    return mask
