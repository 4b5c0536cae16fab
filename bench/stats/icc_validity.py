"""The ICC section of ``docs/statistics.md``: the form ``bench robustness`` reports, its CI, and how often that CI
covers the true ICC in simulated cohorts of the robustness page's size (``bench validate-statistics``)."""

from __future__ import annotations

import numpy as np

from bench.stats.icc import icc_a1
from bench.stats.calibration_validity import binomial_interval
from bench.stats.validity import Rate

TRUE_ICCS = (0.0, 0.5, 0.75, 0.9)
VERSION_SHARE = 0.1  # of the non-patient variance: a version effect shared by every patient (a systematic shift)


def icc_coverage(n: int, k: int, simulations: int, seed: int) -> dict[float, tuple[Rate, float]]:
    """For each true ICC(A,1): how often the 95 % CI covers it, and the mean estimate, over ``simulations``
    cohorts of n patients and k versions (patient, version and residual effects Gaussian)."""
    out = {}
    for i, rho in enumerate(TRUE_ICCS):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        other = 1.0 - rho
        patients = rng.normal(0, np.sqrt(rho), (n, 1, simulations))
        versions = rng.normal(0, np.sqrt(VERSION_SHARE * other), (1, k, simulations))
        residual = rng.normal(0, np.sqrt((1 - VERSION_SHARE) * other), (n, k, simulations))
        icc = icc_a1(patients + versions + residual)
        covered = (icc.ci_low <= rho) & (rho <= icc.ci_high)
        out[rho] = (Rate.of(covered), float(np.mean(icc.value)))
    return out


def render_icc(n: int = 51, k: int = 6, simulations: int = 2000, seed: int = 0) -> str:
    rows = []
    for rho, (rate, mean) in icc_coverage(n, k, simulations, seed).items():
        low, high = binomial_interval(rate)
        rows.append(f"| {rho:g} | {rate}; 95 % CI {100 * low:.1f}-{100 * high:.1f} % | {mean:.3f} |")
    return "\n".join([
        "",
        "## Robustness: the intraclass correlation",
        "",
        "`bench robustness` (`bench/stats/icc.py`) reports, per feature, ICC(2,1) in Shrout and Fleiss' notation,",
        "McGraw and Wong's ICC(A,1): two-way random effects of studies and versions, absolute agreement, single",
        "measurement (Koo and Li 2016). For n studies (patients, with `--retest`) and k versions of each (the",
        "original and K perturbed versions, or the scans), with the two-way ANOVA mean squares of studies (MSR),",
        "versions (MSC) and residual (MSE):",
        "",
        "    ICC = (MSR - MSE) / (MSR + (k - 1) MSE + k (MSC - MSE) / n)",
        "",
        "Its 95 % CI is McGraw and Wong's (1996) F approximation with Satterthwaite's degrees of freedom, as",
        "pingouin's `intraclass_corr` computes it (checked to 1e-10 by `tests/test_icc.py` and, on radiomics of",
        "the 51 IBSI soft-tissue-sarcoma studies, by `tests/test_robustness.py`). A feature no version moves has",
        "ICC 1, CI [1, 1]; one constant across every study and version has none and is left out of the page.",
        "Absolute agreement counts a shift shared by every study (a perturbation that grows every mask) against",
        "the feature, as a consistency ICC would not. The page's bands are Koo and Li's: at least 0.75 good, at",
        "least 0.90 excellent. `min_icc=X` computes the same ICC on each fold's training studies only.",
        "",
        f"Coverage of the 95 % CI, {simulations} simulated cohorts per row of n = {n} studies and k = {k} versions",
        "(the robustness page's size: the original and K = 5 versions), Gaussian study, version and residual",
        f"effects, the version effect {VERSION_SHARE:.0%} of the non-study variance; seed {seed}:",
        "",
        "| true ICC | coverage +- Monte Carlo SE; binomial 95 % CI | mean estimate |",
        "|---|---|---|",
        *rows,
        "",
    ])  # fmt: skip
