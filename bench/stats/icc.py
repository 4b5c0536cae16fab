"""Intraclass correlation ICC(2,1) of every feature at once: how much a feature moves across versions of a study.

For one feature, ``ratings[i, j]`` is patient i's value under version j (the original and K perturbed versions,
or a scan and its retest): a two-way random-effects model of patients and versions, absolute agreement, single
measurement, McGraw and Wong's ICC(A,1), Shrout and Fleiss' ICC(2,1), the form Koo and Li (2016) recommend for
reliability. From the two-way ANOVA mean squares of patients (MSR), versions (MSC) and residual (MSE) of n
patients and k versions:

    ICC = (MSR - MSE) / (MSR + (k - 1) MSE + k (MSC - MSE) / n)

and its 95 % CI from McGraw and Wong's (1996) F-distribution approximation with Satterthwaite's degrees of
freedom, as ``pingouin.intraclass_corr`` computes it ("ICC(A,1)", "ICC2" before pingouin 0.7;
``tests/test_icc.py`` checks to 1e-10). A feature that no version moves (MSE = MSC = 0 to rounding, MSR > 0)
has ICC 1 with CI [1, 1]; one that is the same for every patient and version has none (NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import f

ALPHA = 0.05


@dataclass(frozen=True)
class ICC:
    """ICC(2,1) per feature with its 95 % CI: three arrays of the features' length."""

    value: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray


def icc_a1(ratings: np.ndarray) -> ICC:
    """ICC(2,1) of ``ratings`` (patients, versions, features), or (patients, versions) for one feature."""
    x = np.asarray(ratings, dtype=float)
    if x.ndim == 2:
        x = x[:, :, None]
    n, k, _ = x.shape
    if n < 2 or k < 2 or not np.isfinite(x).all():
        raise ValueError(f"icc_a1 needs at least 2 patients and 2 versions of finite values, got shape {x.shape}")
    grand = x.mean(axis=(0, 1))
    rows = x.mean(axis=1)  # (n, F): each patient over the versions
    columns = x.mean(axis=0)  # (k, F): each version over the patients
    ss_rows = k * np.square(rows - grand).sum(axis=0)
    ss_columns = n * np.square(columns - grand).sum(axis=0)
    ss_error = np.maximum(np.square(x - grand).sum(axis=(0, 1)) - ss_rows - ss_columns, 0.0)
    df_rows, df_columns, df_error = n - 1, k - 1, (n - 1) * (k - 1)
    msr, msc, mse = ss_rows / df_rows, ss_columns / df_columns, ss_error / df_error
    with np.errstate(invalid="ignore", divide="ignore"):
        icc = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
        fj = msc / mse
        vn = df_error * np.square(k * icc * fj + n * (1 + (k - 1) * icc) - k * icc)
        vd = df_rows * k**2 * icc**2 * fj**2 + np.square(n * (1 + (k - 1) * icc) - k * icc)
        v = vn / vd
        f_upper = f.ppf(1 - ALPHA / 2, df_rows, v)
        f_lower = f.ppf(1 - ALPHA / 2, v, df_rows)
        low = n * (msr - f_upper * mse) / (f_upper * (k * msc + (k * n - k - n) * mse) + n * msr)
        high = n * (f_lower * msr - mse) / (k * msc + (k * n - k - n) * mse + n * f_lower * msr)
    # no version moves the feature (to rounding: the sums of squares are differences): perfectly reliable
    fixed = (msr > 0) & (mse <= 1e-12 * msr) & (msc <= 1e-12 * msr)
    icc, low, high = (np.where(fixed, 1.0, a) for a in (icc, low, high))
    return ICC(icc, low, high)
