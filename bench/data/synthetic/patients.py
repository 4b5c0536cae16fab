"""Patients and outcome: clinical covariates, disease burden, the true hazard and censored PFS.

Units: age in years, ``b2m`` (beta2-microglobulin) in mg/L, ``albumin`` in g/dL,
``ldh`` in U/L, ``time`` in days.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.data.synthetic.presets import Preset, _preset, _rng

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
