"""Presets of the synthetic cohort, the evaluation policy and table schema it declares, and seeding.

Every random draw comes from a seed derived from (preset name, seed, patient id,
purpose), so a patient renders the same whatever else is generated.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from bench.errors import DataError, UnknownNameError


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
    rescan: bool = False  # each patient scanned twice (test-retest): displaced, other uptake time, new noise


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
    # Test-retest: tiny's grids, every patient scanned twice, for the repeatability (ICC) of features.
    "retest": Preset("retest", 24, (8.0, 8.0, 8.0), (4.0, 4.0, 8.0), (720.0, 432.0), (700.0, 1300.0), 9.0,
                     _PFS_FOLLOWUP, 0.03, rescan=True),
}  # fmt: skip

# Evaluation policy written into every manifest: well inside the two-year minimum follow-up window.
HORIZONS = (365, 730, 1095)
TAU = 1095
ENDPOINT = "progression-free survival"  # what the simulated event is

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


def dataset_name(preset: Preset) -> str:
    return "synthetic_mm" if preset.name == "demo" else f"synthetic_mm_{preset.name}"


def _preset(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise UnknownNameError("preset", preset, list(PRESETS))
    return PRESETS[preset]


def _rng(preset: Preset, seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends only on the preset's name, the seed and the keys (no global state)."""
    if int(seed) < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    words = [_key(preset.name), int(seed), *(_key(k) for k in keys)]
    return np.random.default_rng(np.random.SeedSequence(words))


def _key(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
