"""The calibration part of the validity study: its machinery against the generator's ground truth.

The full-size coverage and detection rates are in docs/statistics.md (``bench validate-statistics``); these
tests run the study small and check what must hold at any size.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sksurv.nonparametric import kaplan_meier_estimator

from bench.cli import main
from bench.data.cohort import EvaluationPolicy
from bench.stats import validity
from bench.stats.calibration import CalibrationMetrics, oe_key, slope_key
from bench.stats.calibration_validity import (
    HORIZON_DAYS,
    MODELS,
    oe_and_slope,
    population_risk,
    population_values,
    run_calibration_study,
    survival_at_horizon,
)
from bench.stats.validity import StudyConfig, _replicate_counts, simulate


def _cohort(n: int, seed: int, bootstrap: int = 100):
    rng = np.random.default_rng(seed)
    y, lp = simulate(n, rng)
    return y, lp, _replicate_counts(n, bootstrap, rng)


def test_the_study_computes_the_leaderboards_o_e_and_slope() -> None:
    y, lp, counts = _cohort(300, 1)
    policy = EvaluationPolicy(horizons=(HORIZON_DAYS,), tau=900.0)
    survival = survival_at_horizon(lp)
    ours = oe_and_slope(y, survival, HORIZON_DAYS, counts)
    for model in MODELS:
        leaderboard = CalibrationMetrics(y, survival[model][:, None], None, policy).evaluate(counts)
        np.testing.assert_allclose(ours[model]["oe"], leaderboard[oe_key(HORIZON_DAYS)], rtol=1e-12)
        np.testing.assert_allclose(ours[model]["slope"], leaderboard[slope_key(HORIZON_DAYS)], rtol=1e-12)


def test_the_generator_draws_from_the_model_the_study_scores_with() -> None:
    """On a large sample, the Kaplan-Meier risk at h (scikit-survival's) is the quadrature's population risk, and
    each model's O/E is its population value, within 4 Monte Carlo SEs."""
    n = 200_000
    y, lp = simulate(n, np.random.default_rng(7))
    times, survival, (low, high) = kaplan_meier_estimator(y["event"], y["time"], conf_type="log-log")
    at = np.searchsorted(times, HORIZON_DAYS, side="right") - 1
    observed, observed_se = 1.0 - survival[at], (high[at] - low[at]) / (2 * 1.96)  # Greenwood's SE
    assert abs(observed - population_risk()) < 4 * observed_se
    population = population_values()
    assert population["doubled"]["oe"] < 0.8 and 1.0 < population["halved"]["oe"] < 1.05
    for model, s in survival_at_horizon(lp).items():
        predicted = 1.0 - s
        relative_se = math.hypot(observed_se / observed, predicted.std() / math.sqrt(n) / predicted.mean())
        assert observed / predicted.mean() == pytest.approx(population[model]["oe"], rel=4 * relative_se), model


def test_doubling_and_halving_move_the_cox_coefficient_as_theory_says() -> None:
    """A Cox coefficient is unchanged by shifting its covariate and scaled by 1/a by multiplying it by a: the doubled
    model's slope is the true model's, the halved model's twice it, on every replicate. The lp are kept where no
    risk is clipped at 1 - 1e-10 (which would move a patient's covariate)."""
    y, lp, counts = _cohort(400, 2)
    values = oe_and_slope(y, survival_at_horizon(np.clip(lp, -2.5, 2.5)), HORIZON_DAYS, counts)
    true = values["true"]["slope"]
    assert np.isfinite(true).all()
    np.testing.assert_allclose(values["doubled"]["slope"], true, rtol=1e-8)
    np.testing.assert_allclose(values["halved"]["slope"], 2 * true, rtol=1e-8)


def test_a_small_study_recovers_the_generators_truth() -> None:
    """30 cohorts of 500: each mean point estimate within 4 Monte Carlo SEs (plus 0.02 for the Cox fit's small-
    sample bias) of its population value; the miscalibrated models are caught in nearly every cohort."""
    config = StudyConfig(calibration_simulations=30, bootstrap=200, seed=3)
    report = run_calibration_study(config, progress=False)
    assert (report.simulations, report.n, report.bootstrap) == (30, 500, 200)
    for model in MODELS:
        for metric in ("oe", "slope"):
            study = report.models[model][metric]
            tolerance = 4 * study.sd / math.sqrt(30) + (0.02 if metric == "slope" else 0.0)
            assert abs(study.mean - study.population) < tolerance, (model, metric, study)
    assert report.models["true"]["oe"].population == report.models["true"]["slope"].population == 1.0
    assert report.models["doubled"]["oe"].mean < 0.8, "doubling the cumulative hazard overpredicts risk"
    assert report.models["halved"]["slope"].population == 2.0
    assert report.detection("doubled", "oe").value >= 0.9 and report.detection("halved", "slope").value >= 0.9
    # 30 cohorts measure coverage only roughly: a 95 % interval is expected to miss 1.5 of them
    assert report.coverage("oe").value >= 0.8 and report.coverage("slope").value >= 0.8
    assert run_calibration_study(config, progress=False) == report, "a cohort's draws depend only on the seed"


def test_the_flags_reach_the_study_and_its_results_reach_both_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # the C-index part's population values take seconds on a million patients; this test is about the plumbing
    monkeypatch.setattr(validity, "population_c", lambda noise, seed: (0.66, 0.65, 0.64))
    monkeypatch.setattr(validity, "weaker_noise", lambda config: (1.4, 0.03))
    doc, numbers = tmp_path / "statistics.md", tmp_path / "statistics.json"
    argv = ["validate-statistics", "--simulations", "3", "--power-simulations", "3", "--fwer-simulations", "3",
            "--bootstrap", "50", "--calibration-simulations", "4", "--calibration-n", "120", "--quiet",
            "--out", str(doc), "--output-json", str(numbers)]  # fmt: skip
    assert main(argv) == 0
    calibration = json.loads(numbers.read_text())["calibration"]
    assert (calibration["simulations"], calibration["n"], calibration["bootstrap"]) == (4, 120, 50)
    assert calibration["coverage"]["oe"]["simulations"] == 4
    assert set(calibration["detection"]) == {"doubled_oe", "halved_slope"}
    text = doc.read_text()
    assert "## Calibration and clinical utility" in text and "n = 120 test patients" in text
    assert "## Robustness: the intraclass correlation" in text
    assert text == capsys.readouterr().out, "what is printed is what is written"


@pytest.mark.parametrize(
    ("flag", "value"), [("--calibration-simulations", "0"), ("--calibration-n", "10"), ("--calibration-n", "-5")]
)
def test_a_bad_calibration_size_is_one_line_before_any_work(flag: str, value: str, capsys, monkeypatch) -> None:
    monkeypatch.setattr(validity, "run_study", lambda *a, **k: pytest.fail("the study started"))
    assert main(["validate-statistics", flag, value]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and flag in err and "got " in err and value in err
