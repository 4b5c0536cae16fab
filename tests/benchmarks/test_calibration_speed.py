"""What calibration and net benefit cost the demo grid's fitting stage: the same stage with and without them.

Not part of the default test run (`--benchmark-skip`); run with `make bench`.
Both sides time ``fit_rows`` in this process over every (row, outer fold) of ``configs/demo.yaml`` (15 rows x 5
folds, 1000 bootstrap replicates, features from the cache as in ``test_dask_speed``), each round in a child forked
from this process (fresh, as `bench`'s own process is). The only difference: with calibration, every fold also
predicts each test patient's survival at its own time and computes O/E, calibration slope and ICI at each horizon,
D-calibration and the net benefit at every threshold, for the point estimate and every replicate. Target: the
stage at most 30 % slower with them (issue 25's run-time budget).
"""

from __future__ import annotations

import dataclasses

import pytest

from bench.executor import Executor
from bench.protocol.fitting import fit_rows

from .conftest import TIMINGS
from .test_dask_speed import _in_fresh_process, demo  # noqa: F401 (demo is the shared fixture)

ROUNDS = 3
BUDGET = 1.30  # the stage with calibration at most this much slower than without
ROUTES = {"fitting_without_calibration": False, "fitting_with_calibration": True}


def _time(benchmark, demo, route: str) -> None:  # noqa: F811
    cohort, split, fits, _modules = demo
    chosen = [(f, b, dataclasses.replace(spec, calibration=ROUTES[route])) for f, b, spec in fits]

    def fit():
        return _in_fresh_process(lambda: list(fit_rows(Executor(), cohort, split, chosen)))

    rows = benchmark.pedantic(fit, rounds=ROUNDS, iterations=1)
    assert [r for r, _ in rows] == list(range(len(fits))), "every row, in plan order"
    has = ROUTES[route]
    assert all(("oe_730" in e.metrics) == has for _, e in rows), "calibration computed exactly when asked"


def test_fitting_without_calibration(benchmark, record, demo) -> None:  # noqa: F811
    _time(benchmark, demo, "fitting_without_calibration")
    record("fitting_without_calibration", benchmark)


def test_fitting_with_calibration(benchmark, record, demo, capsys) -> None:  # noqa: F811
    _time(benchmark, demo, "fitting_with_calibration")
    record("fitting_with_calibration", benchmark)
    if set(ROUTES) <= set(TIMINGS):
        without, with_ = (TIMINGS[name] for name in ROUTES)
        with capsys.disabled():
            print(f"\nfitting stage of the demo: without calibration {without:.1f} s, with {with_:.1f} s: "
                  f"{with_ / without:.2f}x (budget <= {BUDGET:.2f}x)")  # fmt: skip


def test_calibration_within_budget() -> None:
    if not set(ROUTES) <= set(TIMINGS):
        pytest.skip("needs both calibration benchmarks in the same run")
    ratio = TIMINGS["fitting_with_calibration"] / TIMINGS["fitting_without_calibration"]
    assert ratio <= BUDGET, f"calibration makes the fitting stage {ratio:.2f}x as long (budget {BUDGET:.2f}x)"
