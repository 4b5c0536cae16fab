"""Paired differences and the validity study of the bootstrap statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.stats.bootstrap import paired_difference
from bench.testing import run_cli


def test_identical_entries_differ_by_exactly_zero_with_p_one() -> None:
    reps = np.random.default_rng(0).normal(0.7, 0.02, 1000)
    d = paired_difference(0.7, 0.7, reps, reps.copy())
    assert d.difference == 0.0 and d.ci_low == 0.0 and d.ci_high == 0.0
    assert d.p_value == 1.0 and d.replicates == 1000


def test_p_value_counts_replicates_on_either_side_of_zero() -> None:
    base = np.zeros(999)
    always_better = np.full(999, 0.01)
    assert paired_difference(0.01, 0.0, always_better, base).p_value == pytest.approx(2 / 1000)
    half = np.r_[np.full(500, -0.01), np.full(499, 0.01)]
    d = paired_difference(0.0, 0.0, half, base)
    assert d.p_value == pytest.approx(min(1.0, 2 * 500 / 1000))
    assert (d.ci_low, d.ci_high) == (-0.01, 0.01)


def test_nan_replicates_are_left_out() -> None:
    a = np.array([0.1, np.nan, 0.3, 0.2])
    d = paired_difference(0.2, 0.1, a, np.zeros(4))
    assert d.replicates == 3 and d.ci_low > 0


@pytest.mark.slow
def test_reduced_validity_study_through_the_cli(tmp_path: Path) -> None:
    """300 cohorts: coverage near 95 % and type-I error near 5 %, within a few Monte Carlo SEs."""
    out = tmp_path / "validity.json"
    doc = tmp_path / "statistics.md"
    result = run_cli(
        "validate-statistics", "--simulations", "300", "--power-simulations", "150", "--fwer-simulations", "100",
        "--calibration-simulations", "100", "--bootstrap", "400",
        "--seed", "1", "--quiet", "--out", str(doc), "--output-json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert 0.60 < report["population_harrell"] < 0.72
    assert abs(report["population_gap"] - 0.03) < 0.002
    assert 0.90 <= report["coverage_harrell"]["value"] <= 0.99
    assert 0.90 <= report["coverage_uno"]["value"] <= 0.99
    assert 0.01 <= report["type_one_error"]["value"] <= 0.10
    assert report["power"]["value"] > report["type_one_error"]["value"]
    assert report["coverage_harrell"]["simulations"] == 300
    # 10 null rows against one baseline: the raw p-values err on some row far more often than 5 %, Holm's do not
    assert report["fwer_holm"]["value"] <= 0.10 < report["fwer_unadjusted"]["value"]
    assert report["fwer_holm"]["simulations"] == 100
    assert "coverage of the 95 % CI, Harrell's C" in doc.read_text()
