"""Radiomics over 40 synthetic patients: in this process, on a local Dask cluster of 1 worker, and of 2.

Not part of the default test run (`--benchmark-skip`); run with `make bench`.
The patients are 40 of the built-in synthetic cohort at the default dataset's
resolution and coverage (the ``demo`` preset of ``synthetic_mm``: 6 mm PET, skull to
mid-femur; generated here with 40 patients), described with the extractor's defaults
(PET, skeleton ROI, five feature classes), about 2.5 s of work per patient on one
core (100 s in all). The tiny preset's patients take 0.2 s each, so there the start
of the worker processes (each imports pyradiomics, about 1.5 s) would be most of what
is timed.
A Dask route is timed as a user waits for it: the local cluster starts, extracts every
patient and closes inside the timed call (``local_cluster(n)``); the in-process route
runs the patients one after another on ``Executor()``. Two targets: 2 workers at least
1.6x faster than 1, and 1 worker at most 10 % slower than this process (the price of
the cluster: its start, the workers' imports, the task traffic, its close).
The skeleton masks are derived from CT and cached before timing; every timed round
gets a fresh, empty feature cache, so each patient is extracted in every round, and the
three routes must give the same features.
The 2-worker ratio needs two idle cores: with one of them busy elsewhere it falls below 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd
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

PATIENTS = 40
ROUNDS = 1  # 40 patients take about 100 s on one core
CONFIG = RadiomicsConfig()  # the defaults a user gets
TARGET = 1.6  # two Dask workers at least this much faster than one
OVERHEAD = 1.10  # one Dask worker, cluster start and close included, at most this much slower than this process
ROUTES = {  # benchmark name -> workers of the local cluster (0: this process)
    "radiomics_in_process": 0,
    "radiomics_dask_1_worker": 1,
    "radiomics_dask_2_workers": 2,
}
FRAMES: dict[str, pd.DataFrame] = {}  # route -> features of its last round, to check that all three agree


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


@contextlib.contextmanager
def _executor(workers: int):
    if workers == 0:
        yield Executor()
    else:
        with local_cluster(workers) as executor:
            yield executor


def _time(benchmark, setting, route: str) -> None:
    cohort, root = setting
    workers = ROUTES[route]
    masks = _masks(root)
    assert masks == PATIENTS
    caches: list[FeatureCache] = []

    def fresh_cache():
        caches.append(FeatureCache(root / f"features-{route}-{len(caches)}"))
        return (caches[-1],), {}

    def extract(cache: FeatureCache):
        with _executor(workers) as executor:  # a cluster starts and closes inside the timed call
            return RadiomicsExtractor(CONFIG).extract(cohort, progress=False, cache=cache, executor=executor)

    block = benchmark.pedantic(extract, setup=fresh_cache, rounds=ROUNDS, iterations=1)
    assert block.frame.shape == (PATIENTS, 88) and np.isfinite(block.frame.to_numpy()).all()
    assert all(c.info()[0] == PATIENTS for c in caches), "every round extracted every patient"
    assert _masks(root) == masks, "no mask was derived while timing"
    FRAMES[route] = block.frame


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
            f"in-process {inproc:.1f} s, Dask 1 worker {one:.1f} s, 2 workers {two:.1f} s (cluster start and close "
            f"included): 1 / 2 workers {one / two:.2f}x (target >= {TARGET}x), "
            f"1 worker / in-process {one / inproc:.2f}x (target <= {OVERHEAD:.2f}x)"
        )


def _needs(*names: str) -> None:
    if not set(names) <= set(TIMINGS):
        pytest.skip("needs the radiomics benchmarks in the same run")


def test_radiomics_routes_give_the_same_features() -> None:
    if not set(ROUTES) <= set(FRAMES):
        pytest.skip("needs the three radiomics benchmarks in the same run")
    for route in ROUTES:
        pd.testing.assert_frame_equal(FRAMES["radiomics_in_process"], FRAMES[route], check_exact=True)


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
        f"1 Dask worker {ratio:.2f}x as long as this process (target <= {OVERHEAD:.2f}x): the cluster's start, "
        "imports and close cost more than 10 % of the extraction"
    )
