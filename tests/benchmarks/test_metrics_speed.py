"""Benchmarks of the metrics engine against loops over the reference functions.

Not part of the default test run (`--benchmark-skip`); run with `make bench`. ``tests/test_engine.py`` checks that
the engine's values equal the references'; this only times them.
Both sides of each comparison do the same job from the same raw inputs: outcomes, risk scores (or survival curves)
and the bootstrap replicates' indices. Whatever one side builds from them (the engine's matrix of counts, the
follow-up censoring of the test outcomes, the censoring Kaplan-Meier estimate, IPCW weights, Brier contributions)
is built inside its timed call; each side is called once on one replicate first, untimed (Numba's compilation,
first-call imports), and each is the fastest of the same ``ROUNDS`` rounds.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from lifelines.utils import concordance_index
from sksurv.metrics import concordance_index_censored, cumulative_dynamic_auc, integrated_brier_score

from bench.data.cohort import EvaluationPolicy, structured_y
from bench.stats.bootstrap import bootstrap_indices, counts_from_indices
from bench.stats.engine import FoldMetrics, concordance, within_training_follow_up

from .conftest import ratios, unequal_rounds

B = 1000  # replicates per fold, as a page has them
FOLDS = 2  # each fold is the same job again: two keep the reference loops to about a minute a round
N_TEST = 400
ROUNDS = 3  # on both sides of every ratio
SINGLE_ROUNDS = 50  # the single C-index, n = 10k and 100k: milliseconds each; many, on a shared machine
SHA = hashlib.sha256(b"benchmark split").hexdigest()
POLICY = EvaluationPolicy(horizons=(365.0, 730.0, 1095.0), tau=1095.0)


def _cohort(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    risk = rng.normal(size=n)
    event_time = rng.exponential(800 * np.exp(-0.7 * risk))
    censor = rng.uniform(400, 2500, n)
    y = structured_y(event_time <= censor, np.ceil(np.minimum(event_time, censor)))
    return y, np.round(risk + rng.normal(scale=0.5, size=n), 2)


@pytest.fixture(scope="module")
def folds() -> list[dict]:
    """The raw inputs of each fold: training and test outcomes, risk, survival curves, replicate indices."""
    rng = np.random.default_rng(0)
    out = []
    for k in range(FOLDS):
        y_train, _ = _cohort(4 * N_TEST, rng)
        y_test, risk = _cohort(N_TEST, rng)
        survival = np.exp(-np.outer(np.exp(risk), POLICY.ibs_times / 1000.0))
        indices = bootstrap_indices(0, SHA, 0, k, N_TEST, B)
        out.append({"y_train": y_train, "y_test": y_test, "risk": risk, "survival": survival, "indices": indices})
    return out


def _time(benchmark, record, name: str, run, folds: list[dict]) -> None:
    """``run(folds)`` timed, the fastest of ``ROUNDS``, after one untimed call on each fold's first replicate."""
    run([{**f, "indices": f["indices"][:1]} for f in folds])
    benchmark.pedantic(run, args=(folds,), rounds=ROUNDS, iterations=1)
    record(name, benchmark)


# ---------------------------------------------------------------------------------------------------- Harrell's C


def _harrell_engine(folds):
    out = []
    for f in folds:
        counts = counts_from_indices(f["indices"], len(f["risk"]))
        out.append(concordance(f["y_test"]["event"], f["y_test"]["time"], f["risk"], counts))
    return out


def _harrell_sksurv(folds):
    return [[concordance_index_censored(f["y_test"]["event"][i], f["y_test"]["time"][i], f["risk"][i])[0]
             for i in f["indices"]] for f in folds]  # fmt: skip


def _harrell_lifelines(folds):
    return [[concordance_index(f["y_test"]["time"][i], -f["risk"][i], f["y_test"]["event"][i]) for i in f["indices"]]
            for f in folds]  # fmt: skip


def test_harrell_engine(benchmark, folds, record) -> None:
    _time(benchmark, record, "harrell_engine", _harrell_engine, folds)


def test_harrell_sksurv_loop(benchmark, folds, record) -> None:
    _time(benchmark, record, "harrell_sksurv_loop", _harrell_sksurv, folds)


def test_harrell_lifelines_loop(benchmark, folds, record) -> None:
    _time(benchmark, record, "harrell_lifelines_loop", _harrell_lifelines, folds)


@pytest.mark.parametrize("n", [10_000, 100_000])
def test_single_c_index_growth(benchmark, record, n: int) -> None:
    y, risk = _cohort(n, np.random.default_rng(n))
    concordance(y["event"][:10], y["time"][:10], risk[:10])  # compile outside the timing
    benchmark.pedantic(concordance, args=(y["event"], y["time"], risk), rounds=SINGLE_ROUNDS, iterations=1)
    record(f"c_index_{n // 1000}k", benchmark)


# ------------------------------------------------------------------------------------------ td-AUC and the IBS
# The engine has no public call for one metric family alone (``evaluate`` computes every metric), so its side is
# ``evaluate``'s own steps for that family: the fold's set-up (``FoldMetrics``: follow-up censoring, censoring
# KM, IPCW weights; Brier contributions where survival curves are given), each replicate's follow-up range, then
# the family's arrays.


def _replicate_ranges(engine: FoldMetrics, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    present = counts > 0
    return np.where(present, engine.f_time, np.inf).min(axis=1), np.where(present, engine.f_time, -np.inf).max(axis=1)


def _td_auc_engine(folds):
    out = []
    for f in folds:
        engine = FoldMetrics(f["y_train"], f["y_test"], f["risk"], None, POLICY)
        counts = counts_from_indices(f["indices"], engine.n)
        t_min, t_max = _replicate_ranges(engine, counts)
        aucs = engine._aucs(counts, t_min, t_max)
        out.append((aucs, engine._mean_auc(counts, aucs, t_min, t_max)))
    return out


def _td_auc_sksurv(folds):
    out = []
    for f in folds:
        followed = within_training_follow_up(f["y_train"], f["y_test"])
        out.append([cumulative_dynamic_auc(f["y_train"], followed[i], f["risk"][i], list(POLICY.horizons))
                    for i in f["indices"]])  # fmt: skip
    return out


def _ibs_engine(folds):
    out = []
    for f in folds:
        engine = FoldMetrics(f["y_train"], f["y_test"], f["risk"], f["survival"], POLICY)
        counts = counts_from_indices(f["indices"], engine.n)
        out.append(engine._ibs(counts, *_replicate_ranges(engine, counts)))
    return out


def _ibs_sksurv(folds):
    out = []
    for f in folds:
        followed = within_training_follow_up(f["y_train"], f["y_test"])
        out.append([integrated_brier_score(f["y_train"], followed[i], f["survival"][i], POLICY.ibs_times)
                    for i in f["indices"]])  # fmt: skip
    return out


def test_td_auc_engine(benchmark, folds, record) -> None:
    _time(benchmark, record, "td_auc_engine", _td_auc_engine, folds)


def test_td_auc_sksurv_loop(benchmark, folds, record) -> None:
    _time(benchmark, record, "td_auc_sksurv_loop", _td_auc_sksurv, folds)


def test_ibs_engine(benchmark, folds, record) -> None:
    _time(benchmark, record, "ibs_engine", _ibs_engine, folds)


def test_ibs_sksurv_loop(benchmark, folds, record) -> None:
    _time(benchmark, record, "ibs_sksurv_loop", _ibs_sksurv, folds)


def test_speed_targets() -> None:
    """The issue's targets, checked on the timings of this same run."""
    found = ratios()
    if len(found) < 3:
        pytest.skip("run the benchmarks first: make bench")
    assert not unequal_rounds(), f"ratios of unequal rounds: {unequal_rounds()}"
    assert found["harrell bootstrap: sksurv loop / engine"] >= 30
    assert found["harrell bootstrap: lifelines loop / engine"] >= 10
    assert found["single C-index: n=100k / n=10k"] <= 15
