"""The built-in synthetic multiple-myeloma PET/CT cohort (``synthetic_mm``).

Whole-body PET (SUV) and CT (HU) phantoms are written as NIfTI next to a
manifest, exactly the layout of a user cohort, so the real loading path runs.
Progression-free survival comes from a known proportional-hazards model whose
linear predictor has a clinical and an imaging part; the true predictors go to
``truth.csv``, which the harness never uses as a feature.

Units in the table: age in years, ``b2m`` (beta2-microglobulin) in mg/L,
``albumin`` in g/dL, ``ldh`` in U/L, ``time`` in days. Geometry is LPS with an
identity direction: x runs to the patient's left, y to posterior, z upwards in
mm above the floor the patient would stand on. Every random draw comes from a
seed derived from (preset name, seed, patient id, purpose), so a patient renders
the same whatever else is generated.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import shutil
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import yaml
from scipy import ndimage

from bench.errors import DataError

# ---------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    """Size and resolution of one synthetic cohort."""

    name: str  # preset key; the dataset is "synthetic_mm" for demo, "synthetic_mm_<name>" otherwise
    n_patients: int  # cohort size
    pet_spacing: tuple[float, float, float]  # PET voxel size (x, y, z) in mm
    ct_spacing: tuple[float, float, float]  # CT voxel size (x, y, z) in mm: finer in-plane, its own grid and origin
    fov_xy: tuple[float, float]  # in-plane field of view (x, y) in mm, both modalities, centred on the table axis
    z_extent: tuple[float, float]  # axial coverage in mm above the floor for a 175 cm patient; scales with height
    pet_fwhm: float  # PET resolution: FWHM in mm of the Gaussian point-spread function
    followup_days: tuple[float, float]  # administrative censoring uniform between these (staggered accrual)
    dropout_per_year: float  # rate of random loss to follow-up


_PFS_FOLLOWUP = (730.0, 2190.0)  # two to six years from diagnosis to the data cut

PRESETS: dict[str, Preset] = {
    # Torso and thighs at coarse resolution: the whole cohort renders in a few seconds (tests, CI).
    "tiny": Preset("tiny", 24, (8.0, 8.0, 8.0), (4.0, 4.0, 8.0), (720.0, 432.0), (700.0, 1300.0), 9.0,
                   _PFS_FOLLOWUP, 0.03),
    # The default dataset: skull to mid-femur.
    "demo": Preset("demo", 120, (6.0, 6.0, 6.0), (4.0, 4.0, 6.0), (720.0, 432.0), (620.0, 1765.0), 7.5,
                   _PFS_FOLLOWUP, 0.03),
    # The paper's cohort size at clinical resolution, skull to mid-femur (slow: for users' machines).
    "paper": Preset("paper", 227, (4.0, 4.0, 4.0), (2.0, 2.0, 3.0), (720.0, 432.0), (620.0, 1765.0), 6.5,
                    _PFS_FOLLOWUP, 0.03),
}  # fmt: skip

# Evaluation policy written into every manifest: well inside the two-year minimum follow-up window.
HORIZONS = (365, 730, 1095)
TAU = 1095

# Clinical covariates as the manifest declares them; nothing about outcome or truth is among them.
CLINICAL_COLUMNS: dict[str, object] = {
    "age": "numeric",
    "sex": {"kind": "categorical", "categories": ["F", "M"]},
    "b2m": "numeric",
    "albumin": "numeric",
    "iss": {"kind": "ordinal", "categories": ["I", "II", "III"]},
    "ldh": "numeric",
    "high_risk_cytogenetics": {"kind": "categorical", "categories": ["no", "yes"]},
    "transplant": {"kind": "categorical", "categories": ["no", "yes"]},
}
TRUTH_COLUMNS = (
    "lp", "lp_clinical", "lp_imaging", "n_lesions", "lesion_suvmax", "marrow_suv", "osteolysis_ml", "n_lytic", "emd",
)  # fmt: skip

# Labels of the anatomy map (on the PET grid; ground truth for tests only).
BODY, LUNG, LIVER, BRAIN, BLADDER, BLOOD_POOL = 1, 2, 3, 4, 5, 6
CORTEX, MARROW, FOCAL_LESION, EXTRAMEDULLARY = 10, 11, 20, 21
LABELS = {
    "body": BODY, "lungs": LUNG, "liver": LIVER, "brain": BRAIN, "bladder": BLADDER, "blood_pool": BLOOD_POOL,
    "cortical_bone": CORTEX, "marrow": MARROW, "focal_lesion": FOCAL_LESION, "extramedullary_lesion": EXTRAMEDULLARY,
}  # fmt: skip


def dataset_name(preset: Preset) -> str:
    return "synthetic_mm" if preset.name == "demo" else f"synthetic_mm_{preset.name}"


def _preset(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise DataError(f"unknown synthetic preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[preset]


def _rng(preset: Preset, seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends only on the preset's name, the seed and the keys (no global state)."""
    if int(seed) < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    words = [_key(preset.name), int(seed), *(_key(k) for k in keys)]
    return np.random.default_rng(np.random.SeedSequence(words))


def _key(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


# ---------------------------------------------------------------- patients and outcome

# True log-hazard coefficients. Imaging burden is partly independent of the clinical
# variables (its own latent factor), so it carries information that they lack.
_BETA_CLINICAL = {"iss_II": 0.3, "iss_III": 0.7, "high_risk": 0.65, "ldh_high": 0.4, "age_per_year": 0.025,
                  "transplant": -0.35}  # fmt: skip
_BETA_IMAGING = {"log1p_lesions": 0.38, "suvmax_over_4": 0.09, "marrow_over_1_7": 0.6, "log1p_lytic_ml": 0.09,
                 "emd": 0.8}  # fmt: skip
_WEIBULL_SHAPE = 1.2
_WEIBULL_SCALE = 2000.0  # days: the cohort's median PFS is about three years
_LDH_ULN = 250.0  # U/L
_MAX_LESIONS = 45


def sample_patients(preset: str | Preset, seed: int) -> pd.DataFrame:
    """One row per patient: clinical covariates, imaging burden, true linear predictors and PFS; no images.

    Extra columns (``height_mm``, ``muscle``, ``fat_mm``, ``dx_mm``, ``dy_mm``, ``lytic_fraction``) are what
    :func:`render_patient` needs besides; they are written nowhere.
    """
    preset = _preset(preset)
    rng = _rng(preset, seed, "patients")
    n = preset.n_patients
    ids = [f"MM{i + 1:04d}" for i in range(n)]

    male = rng.random(n) < 0.56
    age = np.clip(np.round(rng.normal(64.0, 9.0, n)), 35, 88)
    burden = rng.normal(size=n)  # tumour burden: drives the laboratory values and the imaging alike
    imaging_only = rng.normal(size=n)  # what imaging sees that the laboratory does not

    b2m = np.clip(np.round(np.exp(np.log(4.0) + 0.55 * burden + 0.35 * rng.normal(size=n)), 1), 1.0, 30.0)
    albumin = np.clip(np.round(3.7 - 0.22 * burden + 0.4 * rng.normal(size=n), 1), 2.0, 5.0)
    iss = np.where(b2m >= 5.5, "III", np.where((b2m < 3.5) & (albumin >= 3.5), "I", "II"))
    ldh = np.round(np.exp(np.log(195.0) + 0.22 * burden + 0.22 * rng.normal(size=n)))
    high_risk = rng.random(n) < _sigmoid(-1.3 + 0.3 * burden)
    transplant = rng.random(n) < _sigmoid(1.5 - 0.25 * (age - 64.0))

    lesion_factor = 0.55 * burden + 0.835 * imaging_only
    n_lesions = np.minimum(rng.poisson(np.exp(0.75 + 1.25 * lesion_factor)), _MAX_LESIONS)
    diffuse_factor = 0.45 * burden + 0.45 * imaging_only + 0.77 * rng.normal(size=n)
    marrow = np.clip(1.7 + 0.12 * rng.normal(size=n) + 1.6 * np.maximum(diffuse_factor - 0.3, 0.0), 1.3, 5.5)
    excess = np.exp(np.log(4.0) + 0.35 * rng.normal(size=n))
    suvmax = np.where(n_lesions > 0, np.clip(marrow + excess, 3.0, 15.0), np.nan)
    lytic_fraction = rng.beta(2.0, 2.0, n)
    emd = rng.random(n) < _sigmoid(-3.0 + 0.7 * burden + 0.5 * imaging_only)

    osteolysis = np.zeros(n)
    n_lytic = np.zeros(n, int)
    for i, pid in enumerate(ids):
        lesions = _lesion_attributes(preset, seed, pid, int(n_lesions[i]), suvmax[i], marrow[i], lytic_fraction[i])
        osteolysis[i] = lesions["lytic_ml"].sum()
        n_lytic[i] = int(lesions["lytic"].sum())

    b = _BETA_CLINICAL
    lp_clinical = (
        b["iss_II"] * (iss == "II")
        + b["iss_III"] * (iss == "III")
        + b["high_risk"] * high_risk
        + b["ldh_high"] * (ldh > _LDH_ULN)
        + b["age_per_year"] * (age - 64.0)
        + b["transplant"] * transplant
    )
    g = _BETA_IMAGING
    lp_imaging = (
        g["log1p_lesions"] * np.log1p(n_lesions)
        + g["suvmax_over_4"] * np.nan_to_num(np.maximum(suvmax - 4.0, 0.0))
        + g["marrow_over_1_7"] * np.maximum(marrow - 1.7, 0.0)
        + g["log1p_lytic_ml"] * np.log1p(osteolysis)
        + g["emd"] * emd
    )
    lp = lp_clinical + lp_imaging

    # Weibull proportional hazards: S(t | lp) = exp(-(t / scale)^shape * exp(lp - 1)).
    centred = lp - 1.0  # a fixed offset, not the sample mean: a patient's hazard does not depend on the others
    pfs = _WEIBULL_SCALE * (-np.log(rng.random(n)) * np.exp(-centred)) ** (1.0 / _WEIBULL_SHAPE)
    admin = rng.uniform(*preset.followup_days, n)
    dropout = rng.exponential(365.25 / preset.dropout_per_year, n) if preset.dropout_per_year > 0 else np.inf
    censor = np.minimum(admin, dropout)
    event = pfs <= censor
    time = np.maximum(np.ceil(np.minimum(pfs, censor)), 1).astype(int)

    # About 5 % of LDH values missing completely at random (at least one, so that even the tiny cohort needs imputing).
    ldh_observed = ldh.copy()
    ldh_observed[rng.choice(n, min(n, max(1, round(0.05 * n))), replace=False)] = np.nan

    height = np.where(male, rng.normal(1760.0, 70.0, n), rng.normal(1630.0, 65.0, n)).clip(1480.0, 1920.0)
    muscle = np.exp(rng.normal(0.0, 0.04, n)).clip(0.94, 1.08)
    fat = (np.exp(rng.normal(np.log(15.0), 0.4, n)) * np.where(male, 1.0, 1.2)).clip(5.0, 32.0)
    shift = rng.normal(0.0, 6.0, (n, 2)).clip(-15.0, 15.0)

    return pd.DataFrame(
        {
            "patient_id": ids,
            "age": age.astype(int),
            "sex": np.where(male, "M", "F"),
            "b2m": b2m,
            "albumin": albumin,
            "iss": iss,
            "ldh": ldh_observed,
            "high_risk_cytogenetics": np.where(high_risk, "yes", "no"),
            "transplant": np.where(transplant, "yes", "no"),
            "n_lesions": n_lesions.astype(int),
            "lesion_suvmax": np.round(suvmax, 3),
            "marrow_suv": np.round(marrow, 3),
            "osteolysis_ml": np.round(osteolysis, 3),
            "n_lytic": n_lytic,
            "emd": emd.astype(int),
            "lytic_fraction": lytic_fraction,
            "lp_clinical": lp_clinical,
            "lp_imaging": lp_imaging,
            "lp": lp,
            "time": time,
            "event": event.astype(int),
            "height_mm": np.round(height, 1),
            "muscle": muscle,
            "fat_mm": np.round(fat, 1),
            "dx_mm": np.round(shift[:, 0], 1),
            "dy_mm": np.round(shift[:, 1], 1),
        }
    )


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _lesion_attributes(
    preset: Preset, seed: int, patient_id: str, n: int, suvmax: float, marrow: float, lytic_fraction: float
) -> dict[str, np.ndarray]:
    """Radius (mm), true peak SUV and osteolysis of each focal lesion; shared by the table and the renderer."""
    rng = _rng(preset, seed, patient_id, "lesions")
    radius = 5.0 + 15.0 * rng.beta(1.6, 3.0, n)
    peak = marrow + (suvmax - marrow) * rng.uniform(0.55, 1.0, n) if n else np.zeros(0)
    if n:
        peak[0] = suvmax  # the patient's SUVmax is its hottest lesion
    lytic = rng.random(n) < lytic_fraction
    lytic_radius = 0.8 * radius  # the punched-out hole is a little smaller than the FDG-avid lesion
    lytic_ml = np.where(lytic, 4.0 / 3.0 * np.pi * lytic_radius**3 / 1000.0, 0.0)
    return {"radius": radius, "peak": peak, "lytic": lytic, "lytic_radius": lytic_radius, "lytic_ml": lytic_ml}


# ---------------------------------------------------------------- anatomy
#
# Shapes are written for a standard body 175 cm tall, in mm (x to the left, y to
# posterior, z up from the floor); each patient's canvas maps its grid into those
# coordinates through its height (skeleton and organs) and adds its own muscle
# girth and subcutaneous fat. Later shapes paint over earlier ones.

SKULL, SPINE, RIBS, PELVIS, FEMUR, HUMERUS = 1, 2, 3, 4, 5, 6  # bone sites, for placing lesions
_SITE_WEIGHTS = {SPINE: 0.38, PELVIS: 0.2, RIBS: 0.17, SKULL: 0.1, FEMUR: 0.1, HUMERUS: 0.05}
_STANDARD_HEIGHT = 1750.0

# Torso core (muscle and viscera, before fat): z, centre x, centre y, half-width, half-depth, rotation.
_TORSO = np.array([
    [810, 0, 5, 150, 100, 0], [900, 0, 0, 180, 112, 0], [1000, 0, 0, 156, 108, 0], [1080, 0, 0, 142, 105, 0],
    [1180, 0, 0, 146, 108, 0], [1300, 0, 0, 155, 112, 0], [1420, 0, 5, 160, 100, 0], [1470, 0, 10, 135, 80, 0],
    [1495, 0, 15, 75, 62, 0],
], float)  # fmt: skip
_NECK = np.array([[1480, 0, 15, 58, 60, 0], [1590, 0, 15, 56, 62, 0]], float)
_THIGH = np.array([[450, 95, 0, 55, 52, 0], [600, 100, 0, 65, 62, 0], [760, 100, 5, 75, 75, 0],
                   [880, 92, 5, 82, 80, 0]], float)  # fmt: skip
_LUNG = np.array([[1165, 74, -8, 46, 68, 0], [1200, 72, -8, 48, 70, 0], [1300, 72, -8, 52, 76, 0],
                  [1400, 68, -5, 45, 62, 0], [1470, 55, 5, 22, 25, 0]], float)  # fmt: skip
# Centre y of the vertebral bodies along the spine (lordosis and kyphosis).
_SPINE_Y = np.array([[870, 75], [930, 58], [990, 40], [1050, 28], [1150, 35], [1250, 48], [1380, 50], [1470, 38],
                     [1530, 20], [1610, 15]], float)  # fmt: skip
# Vertebrae from C2 down: height, disc below, body half-width, body half-depth, spinous process length.
_VERTEBRAE = (
    [(15.0, 5.0, 16.0, 12.0, 14.0)] * 6
    + [(17.0 + 6.0 * i / 11, 5.0 + 2.0 * i / 11, 16.0 + 6.0 * i / 11, 13.0 + 4.0 * i / 11, 22.0) for i in range(12)]
    + [(27.0, 9.0, 24.0, 18.0, 24.0)] * 5
)
_C2_TOP = 1600.0
# Ribs 1-12: half-width, half-depth, anterior drop (mm) and how far round the chest each reaches (0 to 1).
_RIB_A = (60, 82, 100, 112, 120, 126, 130, 132, 132, 130, 126, 120)
_RIB_B = (40, 55, 66, 74, 79, 82, 84, 85, 85, 83, 80, 76)
_RIB_DROP = (35, 55, 70, 80, 90, 100, 110, 115, 115, 110, 90, 70)
_RIB_END = (0.95,) * 7 + (0.85, 0.78, 0.72, 0.58, 0.5)
# Iliac wing on the left (mirrored to the right): z, centre x, centre y, half-length, half-thickness, angle.
_ILIUM = np.array([[925, 77.5, 12.5, 32, 9, -0.785], [980, 83, 7.5, 55, 7, -0.88], [1040, 89, 7.5, 61, 6, -0.883],
                   [1062, 97, 12, 46, 5, -0.97]], float)  # fmt: skip
_SACRUM = np.array([[880, 0, 75, 15, 10, 0], [930, 0, 58, 40, 18, 0], [985, 0, 42, 52, 22, 0]], float)


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


def _mirror(knots: np.ndarray) -> np.ndarray:
    out = knots.copy()
    out[:, 1] *= -1
    out[:, 5] *= -1
    return out


def _paint_anatomy(c: _Canvas) -> None:
    fat = c.fat
    m = c.muscle
    # Soft tissue: torso, neck, head, thighs, arms.
    c.soft_tube(_TORSO, fat)
    c.soft_tube(_NECK, 0.4 * fat)
    c.soft_ellipsoid((0, 10, 1640), (76, 96, 112), 4.0)  # head
    for side in (1, -1):
        thigh = _THIGH.copy()
        thigh[:, 1] *= side
        c.soft_tube(thigh, fat)
    torso_half_width = float(np.interp(1150, _TORSO[:, 0], _TORSO[:, 3])) * m + fat
    arm_r = 40.0 * m + 0.6 * fat
    elbow_x = torso_half_width + 6.0 + arm_r
    head_x = 172.0
    for side in (1, -1):
        c.soft_ellipsoid((side * 175, 5, 1440), (48 * m, 52 * m, 55 * m), 0.6 * fat)  # shoulder
        upper = np.array([[1150, side * elbow_x, 10, 40, 40, 0], [1440, side * head_x, 5, 44, 44, 0]], float)
        c.soft_tube(upper, 0.6 * fat)
        fore = np.array([[870, side * (elbow_x + 5), -15, 26, 28, 0], [1150, side * elbow_x, 10, 36, 36, 0]], float)
        c.soft_tube(fore, 0.5 * fat)
        c.soft_ellipsoid((side * (elbow_x + 5), -15, 820), (15 * m, 42 * m, 62), 0.3 * fat)  # hand

    # Organs inside the core.
    for side in (1, -1):
        lung = _LUNG.copy()
        lung[:, 1] *= side
        got = c.tube(lung)
        if got is not None:
            idx, (u, v, ax, ay, ang), _ = got
            # The diaphragm domes into the lung base; the right one stands higher, over the liver.
            dome = c.ellipsoid((side * 58, -5, 1110 if side < 0 else 1100), (125, 125, 105 if side < 0 else 100))
            below = _within(dome, idx, np.broadcast_shapes(u.shape, v.shape))
            c.organ(idx, (_q(u, v, ax, ay, ang) <= 1) & ~below, LUNG)
    for centre, radii, label in (
        ((-55, -8, 1165), (72, 75, 70), LIVER),
        ((15, -30, 1290), (58, 50, 62), BLOOD_POOL),
        ((0, -45, 935), (38, 30, 30), BLADDER),
    ):
        got = c.ellipsoid(centre, radii)
        if got is not None:
            c.organ(got[0], got[1] <= 1, label)

    _paint_spine(c)
    _paint_ribs(c)
    _paint_shoulder_girdle(c, head_x, elbow_x)
    _paint_pelvis_and_femora(c)
    _paint_skull_and_brain(c)


def _spine_y(z):
    return np.interp(z, _SPINE_Y[:, 0], _SPINE_Y[:, 1])


def _vertebra_levels() -> list[tuple[float, float, tuple]]:
    """(bottom, top, geometry) of every vertebra from C2 to L5."""
    levels, top = [], _C2_TOP
    for geom in _VERTEBRAE:
        height, disc = geom[0], geom[1]
        levels.append((top - height, top, geom))
        top -= height + disc
    return levels


def _paint_spine(c: _Canvas) -> None:
    t = c.t
    for bottom, top, (_, _, ax, ay, spinous) in _vertebra_levels():
        yb = float(_spine_y(0.5 * (bottom + top)))
        reach = ay + 28 + spinous
        blk = c.block((-ax - 30, yb - ay, bottom), (ax + 30, yb + reach, top))
        if blk is None:
            continue
        idx, X, Y, Z = blk
        ends = (Z >= bottom + t) & (Z <= top - t)
        body = _q(X, Y - yb, ax, ay, 0) <= 1
        body_in = (_q(X, Y - yb, ax - t, ay - t, 0) <= 1) & ends
        ya = yb + ay + 12  # neural arch around the canal
        arch = _q(X, Y - ya, 0.8 * ax, 14, 0) <= 1
        canal = _q(X, Y - (yb + ay + 9), 9, 8, 0) <= 1
        ys = yb + ay + 22 + spinous / 2
        spine_process = _q(X, Y - ys, 4.5, spinous / 2, 0) <= 1
        tx, yt = ax + 10, yb + ay + 8  # transverse processes, left and right
        transverse = _q(np.abs(X) - tx, Y - yt, 14, 6, 0) <= 1
        outer = body | arch | spine_process | transverse
        arch_in = (_q(X, Y - ya, 0.8 * ax - t, 14 - t, 0) <= 1) & ~(_q(X, Y - (yb + ay + 9), 9 + t, 8 + t, 0) <= 1)
        inner = body_in | arch_in | (_q(np.abs(X) - tx, Y - yt, 14 - t, 6 - t, 0) <= 1)
        c.bone(idx, outer & ~canal, inner & ~canal, SPINE)
        c.carve(idx, canal & ~body)
    c.bone_tube(_SACRUM, PELVIS)


def _paint_ribs(c: _Canvas) -> None:
    t = c.t
    half_r, half_z = 4.5, 7.0  # rib cross-section: thin radially, taller in z
    levels = _vertebra_levels()[6:18]  # T1..T12
    for i, (bottom, top, _) in enumerate(levels):
        z0 = 0.5 * (bottom + top)
        A, B, drop, end = _RIB_A[i], _RIB_B[i], _RIB_DROP[i], _RIB_END[i]
        yc = float(_spine_y(z0)) + 28 - B
        blk = c.block((-A - 8, yc - B - 8, z0 - drop - 10), (A + 8, yc + B + 8, z0 + 10))
        if blk is None:
            continue
        idx, X, Y, Z = blk
        u, v = X, Y - yc
        phi = np.arctan2(v / B, u / A)
        rho = np.sqrt((u / A) ** 2 + (v / B) ** 2)
        radius = np.sqrt((A * np.cos(phi)) ** 2 + (B * np.sin(phi)) ** 2)
        d_r = (rho - 1.0) * radius
        s = 0.5 * (1.0 - np.sin(phi))  # 0 at the spine, 1 at the sternum
        d_z = Z - (z0 - drop * s)
        arc = (s <= end) & ~((np.abs(u) < 22) & (v > 0))
        outer = ((d_r / half_r) ** 2 + (d_z / half_z) ** 2 <= 1) & arc
        inner = None
        if half_r > t:
            inner = ((d_r / (half_r - t)) ** 2 + (d_z / (half_z - t)) ** 2 <= 1) & arc
        c.bone(idx, outer, inner, RIBS)
    # Sternum, in front of the heart.
    c.bone_tube(np.array([[1250, 0, -95, 16, 7, 0], [1440, 0, -92, 18, 7, 0]], float), RIBS)


def _paint_shoulder_girdle(c: _Canvas, head_x: float, elbow_x: float) -> None:
    for side in (1, -1):
        c.bone_capsule((side * 20, -85, 1475), (side * 90, -70, 1490), 7.0, RIBS)  # clavicle
        c.bone_capsule((side * 90, -70, 1490), (side * 160, -20, 1480), 7.0, RIBS)
        scapula = np.array([[1330, side * 98, 60, 45, 6, -side * 0.6], [1460, side * 110, 45, 55, 7, -side * 0.6]])
        c.bone_tube(scapula, RIBS)
        c.bone_ellipsoid((side * head_x, 5, 1445), (23, 23, 23), HUMERUS)
        shaft = np.array([[1160, side * elbow_x, 10, 11, 11, 0], [1430, side * head_x, 5, 11, 11, 0]], float)
        c.bone_tube(shaft, HUMERUS, caps=False, cortex=3.5)
        c.bone_ellipsoid((side * elbow_x, 10, 1150), (26, 12, 15), HUMERUS)
        for dy in (-8.0, 10.0):  # radius and ulna
            fore = np.array([[880, side * (elbow_x + 5), -15 + dy, 6, 6, 0], [1140, side * elbow_x, 10 + dy, 7, 7, 0]])
            c.bone_tube(fore, HUMERUS, caps=False, cortex=2.5)


def _paint_pelvis_and_femora(c: _Canvas) -> None:
    for side in (1, -1):
        knots = _ILIUM if side > 0 else _mirror(_ILIUM)
        c.bone_tube(knots, PELVIS)
        c.bone_ellipsoid((side * 98, 0, 910), (34, 34, 36), PELVIS)  # acetabulum
        c.bone_capsule((side * 92, -20, 895), (side * 18, -68, 878), 10.0, PELVIS)  # superior pubic ramus
        c.bone_ellipsoid((side * 10, -70, 870), (9, 12, 20), PELVIS)  # symphysis
        c.bone_capsule((side * 15, -66, 855), (side * 55, -15, 830), 8.0, PELVIS)  # inferior ramus
        c.bone_capsule((side * 85, 15, 895), (side * 62, 25, 840), 14.0, PELVIS)  # ischium
        got = c.capsule((side * 95, 0, 905), (side * 95, 0, 905), 26.0)  # hip joint space
        if got is not None:
            c.carve(got[0], got[1] <= 26.0**2)
        c.bone_capsule((side * 95, 0, 905), (side * 95, 0, 905), 23.0, FEMUR)  # femoral head
        c.bone_capsule((side * 95, 0, 905), (side * 135, 8, 880), 15.0, FEMUR)  # neck
        c.bone_ellipsoid((side * 148, 12, 885), (18, 20, 28), FEMUR)  # greater trochanter
        shaft = np.array([[480, side * 100, 5, 14, 14, 0], [870, side * 140, 8, 15, 15, 0]], float)
        c.bone_tube(shaft, FEMUR, caps=False, cortex=5.0)


def _paint_skull_and_brain(c: _Canvas) -> None:
    centre, radii = np.array([0, 12, 1655.0]), np.array([70, 90, 95.0])
    t, diploe = c.t, 3.0
    got = c.ellipsoid(centre, radii)
    if got is None:
        return
    idx, q0 = got
    Z = c.z[idx[0]][:, None, None]
    vault = Z >= 1595
    shape = q0.shape
    q1 = _within(c.ellipsoid(centre, radii - t), idx, shape)
    q2 = _within(c.ellipsoid(centre, radii - t - diploe), idx, shape)
    q3 = _within(c.ellipsoid(centre, radii - 2 * t - diploe), idx, shape)
    outer = (q0 <= 1) & ~q3 & vault
    c.bone(idx, outer, q1 & ~q2 & vault, SKULL)
    csf = 5.0  # meninges and fluid between the brain and the inner table; keeps the brain's glow off the skull
    brain = _within(c.ellipsoid(centre, radii - 2 * t - diploe - csf), idx, shape) & (Z >= 1625)  # above C2
    c.organ(idx, brain, BRAIN)


# ---------------------------------------------------------------- rendering


def _body(row: Mapping) -> _Body:
    return _Body(
        k=float(row["height_mm"]) / _STANDARD_HEIGHT,
        muscle=float(row["muscle"]),
        fat=float(row["fat_mm"]),
        dx=float(row["dx_mm"]),
        dy=float(row["dy_mm"]),
    )


def render_patient(row: Mapping, preset: str | Preset, seed: int) -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    """PET (float32 SUV), CT (float32 HU, on its own finer grid) and the anatomy labels on the PET grid (uint8).

    ``row`` is a row of :func:`sample_patients` for the same preset and seed.
    """
    preset = _preset(preset)
    row = dict(row)
    pid = str(row["patient_id"])
    body = _body(row)
    pet_grid, ct_grid = _grids(preset, body)
    cortex = max(2.0, preset.ct_spacing[0], preset.ct_spacing[1])  # an unbroken cortical shell on the CT grid
    pet_canvas, ct_canvas = _Canvas(pet_grid, body, cortex), _Canvas(ct_grid, body, cortex)
    _paint_anatomy(pet_canvas)
    _paint_anatomy(ct_canvas)

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

    labels = pet_canvas.labels.copy()
    activity = _lookup(pet_canvas, suv, 0.0)
    for centre, radius, peak in zip(centres, lesions["radius"], lesions["peak"]):
        _add_sphere(activity, labels, pet_grid, centre, radius, peak, FOCAL_LESION)
    for centre, radius, peak in emd:
        _add_sphere(activity, labels, pet_grid, centre, radius, peak, EXTRAMEDULLARY)
    noise = _rng(preset, seed, pid, "noise")
    pet = _pet_blur_and_noise(activity, pet_grid, preset.pet_fwhm, noise)

    ct = _lookup(ct_canvas, hu, -1000.0)
    bone = (ct_canvas.labels == CORTEX) | (ct_canvas.labels == MARROW)
    for centre, radius, lytic in zip(centres, lesions["lytic_radius"], lesions["lytic"]):
        if lytic:
            idx, inside = _sphere_mask(ct_grid, centre, radius)
            ct[idx][inside & bone[idx]] = hu["lytic"]
    for centre, radius, _ in emd:
        idx, inside = _sphere_mask(ct_grid, centre, radius)
        ct[idx][inside & (ct_canvas.labels[idx] > 0)] = hu["mass"]
    in_body = ct_canvas.labels > 0
    ct[in_body] += noise.normal(0.0, 12.0, int(in_body.sum())).astype(np.float32)
    ct = np.round(ct).astype(np.float32)  # CT stores whole Hounsfield units

    return pet_grid.image(pet), ct_grid.image(ct), pet_grid.image(labels)


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


# ---------------------------------------------------------------- writing

_FORMAT = 1
_GENERATOR_VERSION = 1  # bump when the same (preset, seed) would give different files


def generate(
    preset: str | Preset,
    seed: int,
    out_dir: str | os.PathLike,
    progress: bool = True,
    overwrite: bool = False,
    workers: int = 1,
) -> Path:
    """Write the cohort (images, ``patients.csv``, ``truth.csv``) under ``out_dir``; the path of its manifest.

    The files are written into a temporary sibling folder that is renamed into place at
    the end, so an interrupted run leaves nothing behind. The same preset and seed give
    the same bytes in every file, whatever ``workers`` (processes rendering patients).
    """
    preset = _preset(preset)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"output folder {str(out_dir)!r} is a file; choose another folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise DataError(
            f"output folder {str(out_dir)!r} is not empty; choose another folder or pass overwrite=True to replace it"
        )
    from tqdm.auto import tqdm

    patients = sample_patients(preset, seed)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}-{os.urandom(4).hex()}")
    staging.mkdir()
    try:
        rows = patients.to_dict("records")
        write = functools.partial(_write_patient, preset=preset, seed=seed, root=staging)
        with tqdm(total=len(rows), desc=dataset_name(preset), unit="patient", disable=not progress) as bar:
            if workers > 1:
                with ProcessPoolExecutor(workers) as pool:
                    try:
                        for _ in pool.map(write, rows):
                            bar.update()
                    except BaseException:
                        # Stop the queue and let running workers finish, so none writes after the clean-up.
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise
            else:
                for row in rows:
                    write(row)
                    bar.update()
        _write_tables(patients, preset, seed, staging)
        _swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir / "manifest.yaml"


def _images(patient_id: str) -> dict[str, str]:
    return {what: f"images/{patient_id}/{what}.nii.gz" for what in ("pet", "ct", "labels")}


def _write_patient(row: dict, preset: Preset, seed: int, root: Path) -> None:
    pet, ct, labels = render_patient(row, preset, seed)
    paths = _images(str(row["patient_id"]))
    (root / paths["pet"]).parent.mkdir(parents=True, exist_ok=True)
    for image, what in ((pet, "pet"), (ct, "ct"), (labels, "labels")):
        _write_nifti(image, root / paths[what])


def _write_nifti(image: sitk.Image, path: Path) -> None:
    """NIfTI, gzipped here with a zero timestamp so that the bytes depend on the image alone."""
    raw = path.with_name(path.name[: -len(".gz")])
    sitk.WriteImage(image, str(raw), useCompression=False)
    path.write_bytes(gzip.compress(raw.read_bytes(), compresslevel=3, mtime=0))
    raw.unlink()


def _write_tables(patients: pd.DataFrame, preset: Preset, seed: int, root: Path) -> None:
    images = [_images(pid) for pid in patients["patient_id"]]
    table = pd.DataFrame(
        {
            "patient_id": patients["patient_id"],
            "pet": [p["pet"] for p in images],
            "ct": [p["ct"] for p in images],
            "time": patients["time"],
            "event": patients["event"],
        }
    )
    for col in CLINICAL_COLUMNS:
        table[col] = patients[col]
    table["ldh"] = table["ldh"].round().astype("Int64")  # whole U/L; missing stays empty
    table.to_csv(root / "patients.csv", index=False)

    truth = patients[["patient_id", *TRUTH_COLUMNS]].copy()
    for col in ("lp", "lp_clinical", "lp_imaging"):
        truth[col] = truth[col].round(6)
    truth["labels"] = [p["labels"] for p in images]
    truth.to_csv(root / "truth.csv", index=False)

    manifest = {
        "format": _FORMAT,
        "name": dataset_name(preset),
        "description": f"Synthetic multiple-myeloma PET/CT cohort (preset {preset.name}, seed {seed})",
        "table": "patients.csv",
        "time_unit": "days",
        "horizons": list(HORIZONS),
        "tau": TAU,
        "pet_units": "suv",
        "columns": CLINICAL_COLUMNS,
        "truth": "truth.csv",
        "labels": LABELS,
        "synthetic": {"preset": preset.name, "seed": int(seed), "generator_version": _GENERATOR_VERSION},
    }
    header = (
        "# Written by bench.synthetic. truth.csv holds the true risk (tests and the oracle row only; never a feature);\n"
        "# images/<patient>/labels.nii.gz is the anatomy on the PET grid with the label values listed under 'labels'.\n"
    )
    text = yaml.safe_dump(manifest, sort_keys=False, default_flow_style=None, width=120)
    (root / "manifest.yaml").write_text(header + text)


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    if out_dir.is_dir() and any(out_dir.iterdir()):  # overwrite: a complete cohort stays in place until the swap
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}-{os.urandom(4).hex()}")
        os.replace(out_dir, old)
        os.replace(staging, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if out_dir.is_dir():
            out_dir.rmdir()
        os.replace(staging, out_dir)
