"""Random-effects summary of per-site estimates (DerSimonian and Laird 1986), with Cochran's Q and I².

Each site's estimate comes with its variance (here the square of its bootstrap SE). The between-site variance
tau² is the method-of-moments estimate, truncated at 0; the summary weights each site by 1 / (variance + tau²)
and its 95 % CI is the normal one. I² = (Q - (k - 1)) / Q, truncated at 0: the share of the spread across sites
that is not sampling error (Higgins and Thompson 2002). Checked against statsmodels' ``combine_effects``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass(frozen=True)
class RandomEffects:
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    tau2: float
    q: float
    i2: float  # 0 to 1


def random_effects(estimates, variances) -> RandomEffects:
    """The DerSimonian-Laird summary of ``estimates`` with within-site ``variances`` (at least 2 sites, each
    variance positive)."""
    y, v = np.asarray(estimates, dtype=float), np.asarray(variances, dtype=float)
    if len(y) < 2 or len(y) != len(v) or not (np.isfinite(y).all() and np.isfinite(v).all() and (v > 0).all()):
        raise ValueError(f"random_effects needs 2 or more finite estimates with positive variances, got {y}, {v}")
    w = 1.0 / v
    fixed = float((w * y).sum() / w.sum())
    q = float((w * (y - fixed) ** 2).sum())
    df = len(y) - 1
    tau2 = max(0.0, (q - df) / float(w.sum() - (w**2).sum() / w.sum()))
    w_star = 1.0 / (v + tau2)
    estimate = float((w_star * y).sum() / w_star.sum())
    se = math.sqrt(1.0 / float(w_star.sum()))
    i2 = max(0.0, (q - df) / q) if q > 0 else 0.0
    return RandomEffects(estimate, se, estimate - Z95 * se, estimate + Z95 * se, tau2, q, i2)
