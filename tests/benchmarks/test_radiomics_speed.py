"""Radiomics over 20 synthetic patients: 2 worker processes against 1.

Not part of the default test run (`--benchmark-skip`); run with `make bench`.
The patients are 20 of the built-in synthetic cohort at the default dataset's
resolution and coverage (the ``demo`` preset of ``synthetic_mm``: 6 mm PET, skull to
mid-femur; generated here with 20 patients), described with the extractor's defaults
(PET, skeleton ROI, five feature classes), about 1.5 s of work per patient on one
core. The tiny preset's patients take 0.2 s each, so there the start of the worker
processes (each imports pyradiomics, about 1.5 s) would be most of what is timed.
The skeleton masks are derived from CT and cached before timing; every timed round
gets a fresh, empty feature cache, so each patient is extracted in every round.
The ratio needs two idle cores: with one of them busy elsewhere it falls below 1.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("radiomics")

from bench.cache import FeatureCache
from bench.data.imaging.study import Study
from bench.data.manifest import manifest_cohort, read_manifest
from bench.data.synthetic import PRESETS, generate
from feature_extractors.base import patient_records
from feature_extractors.radiomics import RadiomicsConfig, RadiomicsExtractor

from .conftest import TIMINGS

PATIENTS = 20
ROUNDS = 2
CONFIG = RadiomicsConfig()  # the defaults a user gets
TARGET = 1.6  # two workers at least this much faster than one
FRAMES: dict[int, pd.DataFrame] = {}  # workers -> features of the last round, to check that both agree


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


def _time(benchmark, setting, workers: int) -> None:
    cohort, root = setting
    masks = _masks(root)
    assert masks == PATIENTS
    caches: list[FeatureCache] = []

    def fresh_cache():
        caches.append(FeatureCache(root / f"features-{workers}w-{len(caches)}"))
        return (cohort,), {"progress": False, "cache": caches[-1], "workers": workers}

    block = benchmark.pedantic(RadiomicsExtractor(CONFIG).extract, setup=fresh_cache, rounds=ROUNDS, iterations=1)
    assert block.frame.shape == (PATIENTS, 88) and np.isfinite(block.frame.to_numpy()).all()
    assert all(c.info()[0] == PATIENTS for c in caches), "every round extracted every patient"
    assert _masks(root) == masks, "no mask was derived while timing"
    FRAMES[workers] = block.frame


def test_radiomics_1_worker(benchmark, record, setting) -> None:
    _time(benchmark, setting, workers=1)
    record("radiomics_1_worker", benchmark)


def test_radiomics_2_workers(benchmark, record, setting, capsys) -> None:
    _time(benchmark, setting, workers=2)
    record("radiomics_2_workers", benchmark)
    # Reported here too: with --benchmark-only, pytest-benchmark skips the assertion below (it takes no benchmark).
    _report(capsys)


def _report(capsys) -> float | None:
    if not {"radiomics_1_worker", "radiomics_2_workers"} <= set(TIMINGS):
        return None
    one, two = TIMINGS["radiomics_1_worker"], TIMINGS["radiomics_2_workers"]
    with capsys.disabled():
        print(
            f"\nradiomics, {PATIENTS} synthetic_mm patients, {CONFIG.modality.upper()} in the {CONFIG.roi} ROI: "
            f"1 worker {one:.1f} s, 2 workers {two:.1f} s: {one / two:.2f}x (target {TARGET}x)"
        )
    return one / two


def test_radiomics_workers_speedup() -> None:
    if not {"radiomics_1_worker", "radiomics_2_workers"} <= set(TIMINGS):
        pytest.skip("needs both radiomics benchmarks in the same run")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two CPU cores")
    pd.testing.assert_frame_equal(FRAMES[1], FRAMES[2])
    ratio = TIMINGS["radiomics_1_worker"] / TIMINGS["radiomics_2_workers"]  # printed by test_radiomics_2_workers
    assert ratio >= TARGET, f"2 workers only {ratio:.2f}x faster than 1 (target {TARGET}x); are two cores idle?"
