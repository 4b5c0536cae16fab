"""Radiomics over 16 synthetic patients: in this process, on a local Dask cluster of 1 worker, and of 2.

Not part of the default test run (`--benchmark-skip`); run with `make bench`.
The patients are 16 of the built-in synthetic cohort at the default dataset's
resolution and coverage (the ``demo`` preset of ``synthetic_mm``: 6 mm PET, skull to
mid-femur; generated here with 16 patients), described with the extractor's defaults
(PET, skeleton ROI, five feature classes), about 2.5 s of work per patient on one
core (40 s in all). The tiny preset's patients take 0.2 s each: there the task traffic
would be most of what is timed.
Every route is timed as the extraction stage runs inside `bench run` / `bench grid`: the
executor is ready (a local cluster started, and every worker has imported the extractor
and the modules it imports on first use, ``Executor.check``; in-process too), and the
feature cache is empty; neither is timed. What is timed is the extraction of every
patient into that cache. The cluster's start is printed beside the ratios. Each route
runs three rounds, each on a fresh cluster and a fresh cache; its fastest counts. Two
targets: 2 workers at least 1.6x faster than 1, and 1 ready worker at most 10 % slower
than this process (the price of the route: the task traffic and the features' way back).
The skeleton masks are derived from CT and cached before timing. That the three routes
give the same features is checked by ``tests/test_routes_agree.py``.
The 2-worker ratio needs two idle cores: with one of them busy elsewhere it falls below 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("radiomics")
pytest.importorskip("distributed")

from bench.cache import FeatureCache
from bench.data.imaging.study import Study
from bench.data.manifest import manifest_cohort, read_manifest
from bench.data.synthetic import PRESETS, generate
from bench.executor import Executor, local_cluster
from feature_extractors.base import patient_records
from feature_extractors.radiomics import RadiomicsConfig, RadiomicsExtractor

from .conftest import TIMINGS

PATIENTS = 16
ROUNDS = 3  # each on a fresh cluster; 16 patients take about 40 s on one core
CONFIG = RadiomicsConfig()  # the defaults a user gets
TARGET = 1.6  # two Dask workers at least this much faster than one
OVERHEAD = 1.10  # one ready Dask worker (cluster started, plugins imported) at most this much slower than this process
ROUTES = {  # benchmark name -> workers of the local cluster (0: this process)
    "radiomics_in_process": 0,
    "radiomics_dask_1_worker": 1,
    "radiomics_dask_2_workers": 2,
}
MODULES = [RadiomicsExtractor.__module__, *RadiomicsExtractor.imports]  # what `bench` imports on every worker first
STARTS: dict[str, float] = {}  # route -> seconds to start its cluster and import the extractor on its workers


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory):
    """The cohort, and a folder for feature caches; masks already cached under $BENCH_CACHE_DIR."""
    root = tmp_path_factory.mktemp("radiomics_speed")
    preset = dataclasses.replace(PRESETS["demo"], n_patients=PATIENTS)
    manifest = generate(preset, 0, root / "data", progress=False, workers=2)
    cohort = manifest_cohort(read_manifest(manifest), str(manifest))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CACHE_DIR", str(root / "cache"))  # spawned workers inherit it and find the masks
        for record in patient_records(cohort):
            Study(record.inputs, record.sample_id).roi_mask(CONFIG.roi)
        yield cohort, root


def _masks(root: Path) -> int:
    return len(list((root / "cache" / "masks").glob("*.nii.gz")))


def _time(benchmark, setting, route: str) -> None:
    cohort, root = setting
    workers = ROUTES[route]
    masks = _masks(root)
    assert masks == PATIENTS
    caches: list[FeatureCache] = []
    stack = contextlib.ExitStack()

    def ready():
        """The route's executor as `bench` has it when extraction begins, and an empty feature cache."""
        stack.close()  # the last round's cluster: an idle cluster's scheduler still costs this process CPU
        started = time.perf_counter()
        executor = Executor() if workers == 0 else stack.enter_context(local_cluster(workers))
        executor.check(MODULES, {})
        STARTS[route] = time.perf_counter() - started
        caches.append(FeatureCache(root / f"features-{route}-{len(caches)}"))
        return (executor, caches[-1]), {}

    def extract(executor, cache: FeatureCache):
        return RadiomicsExtractor(CONFIG).extract(cohort, progress=False, cache=cache, executor=executor)

    with pytest.MonkeyPatch.context() as mp:
        # each test starts with the session's environment (tests/conftest.py): the clusters started here, and this
        # process, must find the masks
        mp.setenv("BENCH_CACHE_DIR", str(root / "cache"))
        with stack:
            block = benchmark.pedantic(extract, setup=ready, rounds=ROUNDS, iterations=1)
    assert block.frame.shape == (PATIENTS, 88) and np.isfinite(block.frame.to_numpy()).all()
    assert all(c.info()[0] == PATIENTS for c in caches), "every round extracted every patient"
    assert _masks(root) == masks, "no mask was derived while timing"


def test_radiomics_in_process(benchmark, record, setting) -> None:
    _time(benchmark, setting, "radiomics_in_process")
    record("radiomics_in_process", benchmark)


def test_radiomics_dask_1_worker(benchmark, record, setting) -> None:
    _time(benchmark, setting, "radiomics_dask_1_worker")
    record("radiomics_dask_1_worker", benchmark)


def test_radiomics_dask_2_workers(benchmark, record, setting, capsys) -> None:
    _time(benchmark, setting, "radiomics_dask_2_workers")
    record("radiomics_dask_2_workers", benchmark)
    # Reported here too: with --benchmark-only, pytest-benchmark skips the assertions below (they take no benchmark).
    _report(capsys)


def _report(capsys) -> None:
    if not set(ROUTES) <= set(TIMINGS):
        return
    inproc, one, two = (TIMINGS[name] for name in ROUTES)
    with capsys.disabled():
        print(
            f"\nradiomics, {PATIENTS} synthetic_mm patients, {CONFIG.modality.upper()} in the {CONFIG.roi} ROI: "
            f"in-process {inproc:.1f} s, Dask 1 worker {one:.1f} s, 2 workers {two:.1f} s (fastest of {ROUNDS} rounds "
            f"each, on ready workers): 1 / 2 workers {one / two:.2f}x (target >= {TARGET}x), 1 worker / in-process "
            f"{one / inproc:.2f}x (target <= {OVERHEAD:.2f}x); before extraction, starting the cluster and importing "
            f"the extractor on its workers took {STARTS.get('radiomics_dask_1_worker', math.nan):.1f} s (1 worker), "
            f"{STARTS.get('radiomics_dask_2_workers', math.nan):.1f} s (2)"
        )


def _needs(*names: str) -> None:
    if not set(names) <= set(TIMINGS):
        pytest.skip("needs the radiomics benchmarks in the same run")


def test_radiomics_workers_speedup() -> None:
    _needs("radiomics_dask_1_worker", "radiomics_dask_2_workers")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two CPU cores")
    ratio = TIMINGS["radiomics_dask_1_worker"] / TIMINGS["radiomics_dask_2_workers"]  # printed by the 2-worker one
    assert ratio >= TARGET, f"2 Dask workers only {ratio:.2f}x faster than 1 (target {TARGET}x); are two cores idle?"


def test_radiomics_dask_overhead() -> None:
    _needs("radiomics_in_process", "radiomics_dask_1_worker")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two CPU cores")  # the cluster's scheduler and its worker share them
    ratio = TIMINGS["radiomics_dask_1_worker"] / TIMINGS["radiomics_in_process"]
    assert ratio <= OVERHEAD, (
        f"1 ready Dask worker {ratio:.2f}x as long as this process (target <= {OVERHEAD:.2f}x): the task traffic and "
        "the features' way back cost more than 10 % of the extraction"
    )
