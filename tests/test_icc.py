"""ICC(2,1) with its CI (``bench.stats.icc``) against pingouin's ``intraclass_corr`` ("ICC(A,1)", formerly
"ICC2"), feature by feature.

The ratings are real: WHAS500's covariates (scikit-survival's copy) as the patients' original values, and
versions made from them the way a perturbation moves a feature (a shift shared by every patient, a patient-wise
jitter, a rescaling), so the features span ICCs from about 0 to 1.
"""

from __future__ import annotations

import numpy as np
import pytest
from sksurv.datasets import load_whas500

from bench.stats.icc import icc_a1

from icc_reference import pingouin_icc


@pytest.fixture(scope="module")
def ratings() -> np.ndarray:
    X, _ = load_whas500()
    values = X.select_dtypes("number").to_numpy(float)[:120]  # 120 patients, the numeric covariates
    rng = np.random.default_rng(3)
    scale = values.std(axis=0)
    versions = [values]
    for j in range(5):  # K = 5 versions beside the original
        jitter = rng.normal(0.0, 1.0, values.shape) * scale * np.linspace(0.05, 3.0, values.shape[1])
        versions.append(values * (1 + 0.02 * j) + 0.1 * j * scale + jitter)
    return np.stack(versions, axis=1)  # (patients, versions, features)


def test_icc_and_its_ci_equal_pingouins_for_every_feature(ratings: np.ndarray) -> None:
    ours = icc_a1(ratings)
    values = []
    for j in range(ratings.shape[2]):
        reference = pingouin_icc(ratings[:, :, j])
        assert (ours.value[j], ours.ci_low[j], ours.ci_high[j]) == pytest.approx(reference, abs=1e-10)
        values.append(reference[0])
    assert min(values) < 0.3 and max(values) > 0.9, "the features span unreliable to reliable"


def test_noise_has_an_icc_near_zero_and_an_untouched_feature_one() -> None:
    rng = np.random.default_rng(0)
    noise = icc_a1(rng.normal(size=(60, 6)))
    assert noise.ci_low[0] < 0 < noise.ci_high[0]
    base = rng.normal(size=(60, 1))
    fixed = icc_a1(np.repeat(base, 6, axis=1))
    assert (fixed.value[0], fixed.ci_low[0], fixed.ci_high[0]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="at least 2 patients and 2 versions"):
        icc_a1(np.ones((1, 3)))


def test_the_ci_covers_the_true_icc_about_95_percent_of_the_time() -> None:
    from bench.stats.icc_validity import icc_coverage

    for rho, (rate, mean) in icc_coverage(51, 6, 1000, seed=1).items():  # not the documented seed
        assert 0.93 <= rate.value <= 0.97, (rho, rate)
        assert mean == pytest.approx(rho, abs=0.02)


def test_the_documented_icc_section_is_the_generators() -> None:
    from pathlib import Path

    from bench.stats.icc_validity import render_icc

    doc = (Path(__file__).parents[1] / "docs" / "statistics.md").read_text()
    assert doc.endswith(render_icc(seed=0)), "docs/statistics.md: regenerate with bench validate-statistics"
