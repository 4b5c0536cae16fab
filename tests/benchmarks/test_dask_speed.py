"""The demo grid's fitting stage in this process, on a local Dask cluster of 1 worker, and of 2.

Not part of the default test run (`--benchmark-skip`); run with `make bench`.
What is timed is ``fit_rows`` over every (row, outer fold) of ``configs/demo.yaml``: 15
rows (Cox, Coxnet, RSF and DeepSurv on clinical, oracle, MedSAM2, radiomics and ResNet3D
features) x 5 folds = 75 fits, each with 1000 bootstrap replicates, on the synthetic_mm
cohort of 120 patients; features come from the feature cache (extracted before timing,
about 6 minutes the first time on 2 cores, never timed). Each route is timed as the stage
runs inside `bench run` / `bench grid`: there the cluster was started, and every worker
imported the plan's plugins and the modules they import on first use (``Executor.check``;
in-process too), before extraction began, so the stage starts on ready workers. That start
is timed too (not part of the stage) and printed beside the ratios. Each route runs three
rounds, each on fresh workers: a fresh cluster, or (in-process) a child forked from this
process, which imported the same modules and never fitted; its fastest round counts. Two targets: 2 workers at least 1.6x faster than 1, and 1 worker at most 10 %
slower than this process (the price of the route: sending the cohort and feature blocks
once, the tasks' traffic, each worker's first fit of each learner).
That the three routes give the same numbers, to the bit, is checked by ``tests/test_routes_agree.py``.
The 2-worker ratio needs two idle cores: with one of them busy elsewhere it falls below 1.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")
pytest.importorskip("torch")  # DeepSurv rows

from bench.data.datasets import load_cohort
from bench.executor import Executor, local_cluster
from bench.protocol.fitting import fit_rows
from bench.protocol.grid import load_config
from bench.protocol.runner import extract_blocks, plan_needs, resolve_plan, row_fits
from bench.protocol.splits import load_split

from .conftest import TIMINGS

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
ROUNDS = 3  # each on a fresh cluster; a route's round takes 10 to 25 s, and one round alone is +-15 % on 2 cores
TARGET = 1.6  # two Dask workers at least this much faster than one
OVERHEAD = 1.10  # one ready Dask worker (cluster started, plugins imported) at most this much slower than this process
ROUTES = {  # benchmark name -> workers of the local cluster (0: this process)
    "fitting_in_process": 0,
    "fitting_dask_1_worker": 1,
    "fitting_dask_2_workers": 2,
}


@pytest.fixture(scope="module")
def demo():
    """The demo grid's cohort, split and row fits, every feature block read from (or first put into) the cache."""
    request = load_config(CONFIG).request
    cohort = load_cohort(request.dataset, request.horizons, request.tau)
    split = load_split(cohort, request.split or cohort.default_split)
    plan = resolve_plan(request)
    blocks = extract_blocks(plan, cohort, progress=False, executor=Executor())
    modules, _resources = plan_needs(plan)
    return cohort, split, row_fits(plan, blocks, request, tuning=None), modules


STARTS: dict[str, float] = {}  # route -> seconds to start its cluster and import the plan's plugins on its workers


def _time(benchmark, demo, route: str) -> None:
    cohort, split, fits, modules = demo
    stack = contextlib.ExitStack()

    def ready():
        """The route's executor as `bench` has it when the fitting stage begins: a cluster started and checked."""
        stack.close()  # the last round's cluster: an idle cluster's scheduler still costs this process CPU
        started = time.perf_counter()
        if ROUTES[route] == 0:
            executor = Executor()
        else:
            executor = stack.enter_context(local_cluster(ROUTES[route]))
        executor.check(modules, {})  # what `bench` does before any work: every worker imports the plan's plugins
        STARTS[route] = time.perf_counter() - started
        return (executor,), {}

    def fit(executor):
        if ROUTES[route] == 0:
            return _in_fresh_process(lambda: list(fit_rows(executor, cohort, split, fits)))
        return list(fit_rows(executor, cohort, split, fits))

    with stack:
        rows = benchmark.pedantic(fit, setup=ready, rounds=ROUNDS, iterations=1)
    assert [r for r, _ in rows] == list(range(len(fits))), "every row, in plan order"


def _in_fresh_process(work):
    """``work()`` in a child forked from this process, its result sent back through a pipe.

    This process has imported every module the stage needs (``Executor.check``) and never fitted anything, so each
    round starts as `bench run`'s own process does, and as each round's fresh Dask workers do: without the warm heap
    and caches a second stage in the same process would have.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read)
            with os.fdopen(write, "wb") as out:
                pickle.dump(work(), out)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as source:
        data = source.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and data, "the in-process round failed in its forked child"
    return pickle.loads(data)


def test_fitting_in_process(benchmark, record, demo) -> None:
    _time(benchmark, demo, "fitting_in_process")
    record("fitting_in_process", benchmark)


def test_fitting_dask_1_worker(benchmark, record, demo) -> None:
    _time(benchmark, demo, "fitting_dask_1_worker")
    record("fitting_dask_1_worker", benchmark)


def test_fitting_dask_2_workers(benchmark, record, demo, capsys) -> None:
    _time(benchmark, demo, "fitting_dask_2_workers")
    record("fitting_dask_2_workers", benchmark)
    # Reported here too: with --benchmark-only, pytest-benchmark skips the assertions below (they take no benchmark).
    cohort, split, fits, _modules = demo
    _report(capsys, len(fits), len(split.folds(cohort)))


def _report(capsys, rows: int, folds: int) -> None:
    if not set(ROUTES) <= set(TIMINGS):
        return
    inproc, one, two = (TIMINGS[name] for name in ROUTES)
    with capsys.disabled():
        print(
            f"\nfitting stage of {CONFIG.name}, {rows} rows x {folds} folds: in-process {inproc:.1f} s, Dask 1 worker "
            f"{one:.1f} s, 2 workers {two:.1f} s: 1 / 2 workers {one / two:.2f}x (target >= {TARGET}x), 1 worker / "
            f"in-process {one / inproc:.2f}x (target <= {OVERHEAD:.2f}x); before the stage, starting the cluster and "
            f"importing the plugins on its workers took {STARTS.get('fitting_dask_1_worker', math.nan):.1f} s (1 "
            f"worker), {STARTS.get('fitting_dask_2_workers', math.nan):.1f} s (2)"
        )


def _needs(*names: str) -> None:
    if not set(names) <= set(TIMINGS):
        pytest.skip("needs the fitting-stage benchmarks in the same run")


def test_fitting_workers_speedup() -> None:
    _needs("fitting_dask_1_worker", "fitting_dask_2_workers")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two CPU cores")
    ratio = TIMINGS["fitting_dask_1_worker"] / TIMINGS["fitting_dask_2_workers"]  # printed by the 2-worker one
    assert ratio >= TARGET, f"2 Dask workers only {ratio:.2f}x faster than 1 (target {TARGET}x); are two cores idle?"


def test_fitting_dask_overhead() -> None:
    _needs("fitting_in_process", "fitting_dask_1_worker")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two CPU cores")  # the cluster's scheduler and its worker share them
    ratio = TIMINGS["fitting_dask_1_worker"] / TIMINGS["fitting_in_process"]
    assert ratio <= OVERHEAD, (
        f"1 ready Dask worker {ratio:.2f}x as long as this process (target <= {OVERHEAD:.2f}x): sending the data, the "
        "tasks' traffic and the worker's first fits cost more than 10 % of the fitting stage"
    )
