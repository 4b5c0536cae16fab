"""Holm-adjusted p-values: the function, the leaderboard's `p (Holm)` column, and the family-wise error study."""

from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from bench.data.cohort import EvaluationPolicy
from bench.errors import UsageError
from bench.plugins.labels import Baseline, RowKey
from bench.report.leaderboard import paired_comparisons, render
from bench.report.results import Protocol, Results, Row
from bench.stats.bootstrap import holm, paired_difference
from bench.stats.validity import StudyConfig, family_wise_error


def statsmodels_holm(p: np.ndarray) -> np.ndarray:
    return multipletests(p, method="holm")[1]


@pytest.mark.parametrize("seed", range(5))
def test_holm_equals_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.r_[rng.uniform(0, 0.05, 4), rng.uniform(0, 1, 11)]  # some small enough to survive, some capped at 1
    np.testing.assert_allclose(holm(p), statsmodels_holm(p), rtol=0, atol=1e-15)


def test_holm_with_ties_equals_statsmodels() -> None:
    p = np.array([0.04, 0.01, 0.04, 0.01, 0.5, 0.002, 0.002, 1.0])
    adjusted = holm(p)
    np.testing.assert_allclose(adjusted, statsmodels_holm(p), rtol=0, atol=1e-15)
    assert adjusted[1] == adjusted[3] and adjusted[0] == adjusted[2], "tied p-values get the same adjusted p"


def test_nan_is_no_test_and_does_not_count_in_the_family() -> None:
    p = np.array([0.02, math.nan, 0.01, 0.3, math.nan])
    adjusted = holm(p)
    assert np.isnan(adjusted[[1, 4]]).all()
    np.testing.assert_allclose(adjusted[[0, 2, 3]], statsmodels_holm(p[[0, 2, 3]]), rtol=0, atol=1e-15)
    assert adjusted[2] == pytest.approx(3 * 0.01), "m is 3, not 5"


def test_holm_of_no_tests() -> None:
    assert holm([]).shape == (0,)
    assert np.isnan(holm([math.nan, math.nan])).all()


def test_holm_by_hand_from_holms_step_down_definition() -> None:
    """Holm (1979): with the p-values sorted, H_(j) is rejected at level alpha if p_(i) <= alpha / (m - i + 1) for
    every i <= j; the adjusted p-value is the smallest alpha that rejects it. Worked out here by hand."""
    p = [0.01, 0.04, 0.03, 0.005]  # sorted: 0.005, 0.01, 0.03, 0.04; m = 4
    # 4 x 0.005 = 0.02; 3 x 0.01 = 0.03; 2 x 0.03 = 0.06; 1 x 0.04 = 0.04, raised to the 0.06 before it
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02], rtol=0, atol=1e-15)
    # At alpha = 0.05 the step-down rejects 0.005 (<= 0.05 / 4) and 0.01 (<= 0.05 / 3), then stops at 0.03 > 0.05 / 2
    assert (holm(p) < 0.05).tolist() == [True, False, False, True]
    # Capped at 1: 2 x 0.6 = 1.2, and the larger 0.9 inherits the cap
    assert holm([0.9, 0.6]).tolist() == [1.0, 1.0]
    assert holm([0.2]).tolist() == [0.2], "one test: nothing to adjust"


def test_holm_is_monotone_in_p_and_never_below_it() -> None:
    p = np.random.default_rng(7).uniform(0, 0.2, 30)
    adjusted = holm(p)
    order = np.argsort(p)
    assert (np.diff(adjusted[order]) >= 0).all()
    assert (adjusted >= p).all() and (adjusted <= 1).all()


B = 400
POLICY = EvaluationPolicy(horizons=(365.0, 730.0), tau=730.0)
PROTOCOL = Protocol("toy", "a page built in a test", 120, 60, POLICY, "toy_kfold", {"type": "kfold", "folds": 5,
                    "repeats": 1, "seed": 0}, "0" * 64)  # fmt: skip


def _row(features: str, model: str, mean: float, replicates: np.ndarray | None, bootstrap: int = B) -> Row:
    return Row(RowKey.parse(features, model), f"{features}-{model}", {"c_index": {"mean": mean}}, {}, bootstrap, 0,
               replicates)  # fmt: skip


def toy_results() -> Results:
    """Four comparisons, two baseline rows, a row without its baseline and one bootstrapped differently."""
    rng = np.random.default_rng(3)
    shared = rng.normal(0.0, 0.02, B)  # what every entry's replicates share: the resampled patients

    def replicates(shift: float, spread: float) -> np.ndarray:
        return 0.65 + shift + shared + rng.normal(0, spread, B)

    rows = [
        _row("clinical", "coxph", 0.65, replicates(0.0, 0.0)),
        _row("oracle", "coxph", 0.70, replicates(0.05, 0.01)),
        _row("radiomics", "coxph", 0.665, replicates(0.015, 0.01)),
        _row("example_noise", "coxph", 0.64, replicates(-0.01, 0.01)),
        _row("clinical", "rsf", 0.66, replicates(0.01, 0.0)),
        _row("radiomics", "rsf", 0.67, replicates(0.02, 0.015)),
        _row("radiomics", "deepsurv", 0.68, replicates(0.03, 0.01)),  # no clinical x deepsurv: no baseline
        _row("resnet3d", "coxph", 0.62, replicates(-0.03, 0.01), bootstrap=B // 2),  # not the same replicates
    ]
    return Results(PROTOCOL, rows, Baseline(), "pytest")


def table(page: str) -> list[dict[str, str]]:
    lines = [line for line in page.splitlines() if line.startswith("| ")]
    start = next(i for i, line in enumerate(lines) if line.startswith("| rank |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[start + 1 :]]


def test_page_shows_holm_of_the_raw_p_column_over_its_comparisons() -> None:
    results = toy_results()
    page = render(results)
    assert page == render(toy_results()), "same results, same bytes"
    rows = {(r["extractor"], r["model"]): r for r in table(page)}
    comparisons = {("oracle", "coxph"), ("radiomics", "coxph"), ("example_noise", "coxph"), ("radiomics", "rsf")}
    raw = {}
    for features, model in sorted(comparisons):
        row, base = results.find(RowKey.parse(features, model)), results.find(RowKey.parse("clinical", model))
        raw[features, model] = paired_difference(row.metrics["c_index"]["mean"], base.metrics["c_index"]["mean"],
                                                 row.replicates, base.replicates).p_value  # fmt: skip
    keys = sorted(raw)
    expected = dict(zip(keys, statsmodels_holm(np.array([raw[k] for k in keys]))))
    assert min(raw.values()) < 0.05 < max(expected.values()), "the toy page has p-values the adjustment changes"
    for key in keys:
        assert rows[key]["p"] == f"{raw[key]:.3f}"
        assert rows[key]["p (Holm)"] == f"{expected[key]:.3f}"
    for key in [("clinical", "coxph"), ("clinical", "rsf"), ("radiomics", "deepsurv"), ("resnet3d", "coxph")]:
        assert rows[key]["p"] == rows[key]["p (Holm)"] == "-", key
    assert "| multiplicity | p (Holm): Holm step-down adjustment of p over the page's 4 comparisons " in page

    helper = paired_comparisons(results)
    assert {(k.features_label, k.model_label) for k in helper} == comparisons
    for key, (difference, holm_p) in helper.items():
        assert difference.p_value == raw[key.features_label, key.model_label]
        assert holm_p == pytest.approx(expected[key.features_label, key.model_label], abs=1e-15)


def test_a_page_without_rows_keeps_its_columns() -> None:
    page = render(Results(PROTOCOL, [], Baseline(), "pytest"))
    lines = [line for line in page.splitlines() if line.startswith(("| rank |", "| - |"))]
    assert len(lines) == 2 and lines[0].count("|") == lines[1].count("|")
    assert "over the page's comparisons (none here) with the baseline" in page


def test_family_wise_error_of_null_rows_on_a_tiny_study(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both rates are re-counted from the p-values the study adjusted, with statsmodels' Holm.

    The study must be able to reject: with B bootstrap replicates the smallest p is 2 / (B + 1), and Holm
    rejects nothing among 4 rows unless 4 x 2 / (B + 1) < alpha (B = 60 could not: both rates were always 0).
    """
    from bench.stats import validity

    seen: list[np.ndarray] = []
    monkeypatch.setattr(validity, "holm", lambda p: seen.append(np.array(p)) or holm(p))
    config = StudyConfig(fwer_simulations=60, null_rows=4, n=40, bootstrap=200, seed=1)
    raw, adjusted = family_wise_error(config)
    assert raw.simulations == adjusted.simulations == 60
    assert 0 <= adjusted.value <= raw.value <= 1, "a Holm rejection is also a raw one"

    assert len(seen) == 60 and all(p.shape == (4,) and ((0 < p) & (p <= 1)).all() for p in seen)
    alpha = config.alpha
    assert raw.value == np.mean([(p < alpha).any() for p in seen])
    assert adjusted.value == np.mean([(statsmodels_holm(p) < alpha).any() for p in seen])
    # Holm's step-down rejects some hypothesis exactly when its first step does: the smallest p times m < alpha
    assert adjusted.value == np.mean([p.min() * 4 < alpha for p in seen])
    assert 0 < adjusted.value < raw.value, "this study has cohorts that the adjustment changes, and some it keeps"
    assert raw.mc_error == pytest.approx(math.sqrt(raw.value * (1 - raw.value) / 60), abs=1e-15)

    assert family_wise_error(config) == (raw, adjusted), "a cohort's draws depend only on the seed and its index"


def test_null_rows_must_be_positive() -> None:
    with pytest.raises(UsageError, match="--null-rows"):
        StudyConfig(null_rows=0)
