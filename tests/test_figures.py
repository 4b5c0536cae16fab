"""Survival figures: summaries checked against scikit-survival and lifelines; renders checked for determinism."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from bench.report.figures import (
    auc_figure,
    brier_figure,
    calibration_figure,
    forest_figure,
    kaplan_meier_figure,
    png_bytes,
    risk_group_summary,
    svg_text,
)

REPO = Path(__file__).resolve().parents[1]
HAZARDS = (1 / 2000, 1 / 800, 1 / 300)  # per day, for groups low, intermediate, high


def cohort(seed: int = 0, n: int = 240) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exponential event times with a hazard per risk group, uniform censoring; integer days (ties)."""
    rng = np.random.default_rng(seed)
    groups = np.arange(n) % 3
    event_time = rng.exponential(1 / np.asarray(HAZARDS)[groups])
    censor_time = rng.uniform(100, 2500, n)
    time = np.ceil(np.minimum(event_time, censor_time))
    return time, (event_time <= censor_time).astype(int), groups


def sksurv_median(time: np.ndarray, event: np.ndarray) -> float:
    """The first time at which scikit-survival's Kaplan-Meier survival is <= 0.5 (inf if never)."""
    from sksurv.nonparametric import kaplan_meier_estimator

    x, survival = kaplan_meier_estimator(event.astype(bool), time)
    below = np.flatnonzero(survival <= 0.5)
    return float(x[below[0]]) if below.size else math.inf


def test_risk_groups_with_different_hazards_separate_and_match_scikit_survival() -> None:
    time, event, groups = cohort()
    summary = risk_group_summary(time, event, groups)
    assert summary.log_rank_p < 0.01
    low, intermediate, high = summary.medians
    assert high < intermediate < low
    for code in range(3):
        mask = groups == code
        assert summary.n[code] == mask.sum() == 80
        assert summary.events[code] == event[mask].sum()
        expected = sksurv_median(time[mask], event[mask])
        assert summary.medians[code] == pytest.approx(expected, abs=1e-9, rel=0)


def test_random_labels_do_not_separate() -> None:
    time, event, _ = cohort()
    shuffled = np.random.default_rng(7).integers(0, 3, len(time))
    assert risk_group_summary(time, event, shuffled).log_rank_p > 0.01


def test_two_groups_give_lifelines_two_sample_log_rank_and_an_empty_group_is_nan() -> None:
    from lifelines.statistics import logrank_test

    time, event, groups = cohort(seed=3)
    keep = groups != 1
    time, event, groups = time[keep], event[keep], groups[keep]
    summary = risk_group_summary(time, event, groups)
    a, b = groups == 0, groups == 2
    expected = logrank_test(time[a], time[b], event_observed_A=event[a], event_observed_B=event[b]).p_value
    assert summary.log_rank_p == pytest.approx(expected, rel=1e-12)
    assert summary.n[1] == summary.events[1] == 0 and math.isnan(summary.medians[1])
    alone = risk_group_summary(time[a], event[a], groups[a])
    assert math.isnan(alone.log_rank_p)


def test_a_median_not_reached_is_infinite() -> None:
    time = np.array([5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    summary = risk_group_summary(time, np.array([1, 0, 0, 0, 0, 0]), np.zeros(6))
    assert summary.medians[0] == math.inf == sksurv_median(time, np.array([1, 0, 0, 0, 0, 0]))


def _figures() -> dict[str, Callable[[], Figure]]:
    """One small figure of each kind, from fixed data (also rebuilt in a subprocess, below)."""
    time, event, groups = cohort(n=120)
    times = np.linspace(100.0, 1500.0, 8)
    auc = 0.7 + 0.05 * np.sin(times / 400)
    auc[2] = np.nan
    horizons = np.array([365.0, 730.0])
    predicted = np.exp(-np.outer(np.asarray(HAZARDS)[groups], horizons))
    predicted[:3, 0] = np.nan
    rows = 6
    difference = np.linspace(-0.05, 0.04, rows)
    difference[2] = np.nan
    return {
        "kaplan_meier": lambda: kaplan_meier_figure(time, event, groups, "risk groups", "days"),
        "auc": lambda: auc_figure(times, auc, auc - 0.08, auc + 0.07, "AUC(t)", "days"),
        "calibration": lambda: calibration_figure(horizons, predicted, time, event, "calibration", "days"),
        "brier": lambda: brier_figure(times, times / 1e4, times / 8e3, "Brier score", "days"),
        "forest": lambda: forest_figure(
            [f"row {i}" for i in range(rows)],
            difference,
            difference - 0.03,
            difference + 0.03,
            "vs baseline",
            "difference in C-index",
            [f"p (Holm) {i / 10:.3f}" for i in range(rows)],
        ),
    }


FIGURES = sorted(_figures())
# matplotlib reads ./matplotlibrc first: every line would change the output if the user's style leaked in.
HOSTILE_RC = (
    "font.family: serif\nfont.size: 17\nlines.linewidth: 4\naxes.prop_cycle: cycler('color', ['k'])\n"
    "svg.fonttype: none\nsvg.hashsalt: elsewhere\nfigure.dpi: 50\nsavefig.bbox: tight\n"
    "savefig.facecolor: yellow\naxes.formatter.use_mathtext: True\naxes.grid: True\n"
)
OTHER_PROCESS = (
    "import sys; sys.path.insert(0, sys.argv[1])\n"
    "import test_figures as t\n"
    "from bench.report.figures import svg_text\n"
    "for name, build in t._figures().items():\n"
    "    open(name + '.svg', 'w', encoding='utf-8').write(svg_text(build()))\n"
)


@pytest.fixture(scope="module")
def other_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Path]]:
    """SVGs from a fresh interpreter in another directory, with its own MPLCONFIGDIR and a hostile matplotlibrc.

    Started first and collected last, so that it renders while this process does.
    """
    where = tmp_path_factory.mktemp("other-process")
    (where / "matplotlibrc").write_text(HOSTILE_RC)
    env = {**os.environ, "MPLCONFIGDIR": str(where / "mplconfig"), "PYTHONPATH": str(REPO)}
    env.pop("MPLBACKEND", None)
    process = subprocess.Popen([sys.executable, "-c", OTHER_PROCESS, str(REPO / "tests")], cwd=where, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

    def finished() -> Path:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        return where

    yield finished
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def rendered(other_process) -> dict[str, tuple[list[bytes], list[str]]]:
    """Each figure built twice here, as (PNGs, SVGs); rendered once for all the tests below."""
    out = {}
    for name, build in _figures().items():
        figures = [build() for _ in range(4)]
        assert all(isinstance(fig, Figure) for fig in figures)
        # a figure is rendered once: PNG (a row's artifact) or SVG (a page's figure)
        out[name] = [png_bytes(fig) for fig in figures[:2]], [svg_text(fig) for fig in figures[2:]]
    return out


@pytest.mark.parametrize("name", FIGURES)
def test_each_figure_renders_the_same_bytes_twice(name: str, rendered) -> None:
    (png, png_again), (svg, svg_again) = rendered[name]
    assert png.startswith(b"\x89PNG") and png == png_again
    assert b"Software" not in png[:200]
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and svg == svg_again
    assert "dc:date" not in svg, "no date, so a regenerated file is unchanged"
    assert f"Matplotlib v{matplotlib.__version__}" in svg, "the Creator tag names the matplotlib that drew it"


def test_svg_is_identical_in_another_process_with_another_directory_and_a_hostile_matplotlibrc(
    rendered, other_process
) -> None:
    where = other_process()
    for name in FIGURES:
        assert (where / f"{name}.svg").read_text(encoding="utf-8") == rendered[name][1][0], name


def test_forest_with_30_rows_and_nan_rows_renders_taller() -> None:
    rows = 30
    difference = np.linspace(-0.1, 0.1, rows)
    difference[[3, 17]] = np.nan
    labels = [f"extractor {i} x model {i}" for i in range(rows)]
    big = forest_figure(labels, difference, difference - 0.02, difference + 0.02, "forest", "difference",
                        [f"p (Holm) {i / 30:.3f}" for i in range(rows)])  # fmt: skip
    small = forest_figure(labels[:3], difference[:3], difference[:3] - 0.02, difference[:3] + 0.02, "forest", "d")
    assert png_bytes(big).startswith(b"\x89PNG")
    assert big.get_figheight() > 3 * small.get_figheight()
    axes = big.axes[0]
    assert [text.get_text() for text in axes.texts] == ["n/a", "n/a"]
    points = next(line for line in axes.lines if line.get_marker() == "o")
    assert len(points.get_xdata()) == rows - 2, "a point per row with a value, none for the n/a rows"
    height = dict(zip([label.get_text() for label in axes.get_yticklabels()], axes.get_yticks(), strict=True))
    assert height[labels[0]] == max(height.values()), "the first row on top"


def test_calibration_with_twelve_patients_uses_fewer_groups_and_drops_nan() -> None:
    time, event, groups = cohort(n=12)
    predicted = np.exp(-np.outer(np.asarray(HAZARDS)[groups], [365.0, 730.0]))
    predicted[:2, 1] = np.nan
    fig = calibration_figure([365.0, 730.0], predicted, time, event, "tiny", "days")
    assert png_bytes(fig).startswith(b"\x89PNG")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["h = 365 days\nn = 12, 2 groups", "h = 730 days\nn = 10, 2 groups"]


def test_kaplan_meier_skips_an_empty_group() -> None:
    time, event, groups = cohort(n=60)
    keep = groups != 2
    fig = kaplan_meier_figure(time[keep], event[keep], groups[keep], "two groups", "months")
    labels = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert [label.split(" (")[0] for label in labels] == ["low", "intermediate"]
    assert fig.axes[0].get_xlabel() == "time (months)"
    assert png_bytes(fig).startswith(b"\x89PNG")


def _bad_calls() -> dict[str, tuple[Callable[[], object], str]]:
    time, event, groups = cohort(n=30)
    t = np.linspace(1.0, 10.0, 4)
    return {
        "event length": (lambda: risk_group_summary(time, event[:-1], groups), "event has 29 values but time has 30"),
        "group length": (lambda: kaplan_meier_figure(time, event, groups[:5], "", "days"), "groups has 5 values"),
        "group code": (lambda: risk_group_summary(time, event, groups + 1), r"risk-group codes .*got \[3.0\]"),
        "event code": (lambda: risk_group_summary(time, event * 2, groups), "event must be 0 .* got 2.0"),
        "negative time": (lambda: risk_group_summary(-time, event, groups), "time must be finite and non-negative"),
        "auc band": (lambda: auc_figure(t, t, t, t[:3], "", "days"), "high has 3 values but times has 4"),
        "brier": (lambda: brier_figure(t, t[:2], t, "", "days"), "model has 2 values but times has 4"),
        "calibration shape": (
            lambda: calibration_figure([1.0, 2.0], np.ones((30, 3)), time, event, "", "days"),
            r"predicted has shape \(30, 3\) but there are 30 patients",
        ),
        "calibration horizons": (
            lambda: calibration_figure(t[:1].repeat(5), np.ones((30, 5)), time, event, "", "d"),
            "1 to 4 horizons, got 5",
        ),
        "forest": (lambda: forest_figure(["a", "b"], t[:2], t[:2], t[:3], "", ""), "highs has 3 values but labels"),
        "forest interval": (
            lambda: forest_figure(["a", "b"], [0.1, 0.2], [0.0, 0.3], [0.2, 0.4], "", ""),
            r"row 'b': the interval \[0.3, 0.4\] does not contain the difference 0.2",
        ),
        "forest notes": (lambda: forest_figure(["a"], t[:1], t[:1], t[:1], "", "", notes=[]), "notes has 0 values"),
    }


@pytest.mark.parametrize("case", sorted(_bad_calls()))
def test_bad_input_says_what_is_wrong(case: str) -> None:
    call, message = _bad_calls()[case]
    with pytest.raises(ValueError, match=message):
        call()
