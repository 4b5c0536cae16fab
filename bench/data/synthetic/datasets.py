"""The built-in synthetic multiple-myeloma PET/CT cohorts, generated on first use.

They live under ``$BENCH_DATA_DIR`` (default ``~/.cache/prognosis-bench``), one
folder per preset and seed, written exactly like a user cohort and loaded through
the same manifest path. The registered datasets use seed 0, the seed their
committed split files were made for.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from bench.data.cohort import Cohort
from bench.data.manifest import manifest_cohort, read_manifest

SEED = 0


def data_dir() -> Path:
    env = os.environ.get("BENCH_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "prognosis-bench"


def cohort_dir(preset: str, seed: int = SEED) -> Path:
    return data_dir() / f"synthetic_mm-{preset}-seed{seed}"


def ensure_generated(preset: str, seed: int = SEED, progress: bool = True) -> Path:
    """The manifest of a synthetic cohort, generating it the first time."""
    from bench.data.synthetic import PRESETS, generate

    folder = cohort_dir(preset, seed)
    manifest = folder / "manifest.yaml"
    if not manifest.exists():
        # Every core renders patients (the files are the same bytes whatever the number of workers); a small
        # cohort is quicker in one process than the start-up of several.
        workers = min(os.cpu_count() or 1, 8) if PRESETS[preset].n_patients >= 50 else 1
        generate(preset, seed, folder, progress=progress, workers=workers)
    return manifest


def _load(preset: str) -> Cohort:
    from bench.data.synthetic.presets import ENDPOINT

    manifest = ensure_generated(preset)
    cohort = manifest_cohort(read_manifest(manifest), str(manifest))
    # A cohort generated before manifests declared their endpoint says nothing; the simulated event is the same
    cohort.policy = dataclasses.replace(cohort.policy, endpoint=ENDPOINT)
    return cohort


def synthetic_mm() -> Cohort:
    """The demo preset: the default dataset."""
    return _load("demo")


def synthetic_mm_tiny() -> Cohort:
    return _load("tiny")


def synthetic_mm_paper() -> Cohort:
    return _load("paper")


def synthetic_mm_retest() -> Cohort:
    """The tiny cohort's size and grids, each patient scanned twice: samples <patient>_scan1 and <patient>_scan2."""
    return _load("retest")
