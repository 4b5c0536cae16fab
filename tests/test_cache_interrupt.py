"""Killing a run leaves no cache entry that a later run reads as valid.

A run is killed with SIGKILL (no ``finally``, no flush, no clean-up) in three places:
during a real extraction (radiomics on the tiny synthetic cohort, which also writes
derived ROI masks to the cache), in the middle of writing an entry, and after an entry
is written but before it is renamed into place. The last two stop the writer at a
fixed point by wrapping what ``FeatureCache.put`` calls (numpy's writer, ``os.replace``)
in the child process only, so the kill lands there every time. Afterwards every file
in the cache is either an entry that ``get`` returns with the right contents or one
that ``get`` never returns, and extraction gives the right features for everyone.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from bench.cache import FeatureCache, entry_key
from bench.data.datasets import load_cohort
from bench.data.imaging.study import Study
from bench.testing import count_extractions
from feature_extractors.base import patient_records
from feature_extractors.radiomics import RadiomicsConfig, RadiomicsExtractor

REPO = Path(__file__).resolve().parents[1]
N_PATIENTS = 8
CONFIG = RadiomicsConfig(feature_classes=("firstorder", "glcm"))  # skeleton ROI, derived from CT and cached
KEY = "ab" + "0" * 62
STARTUP_TIMEOUT = 120.0  # seconds for the child to reach the point where it is killed (a loaded machine is slow)


def payload() -> dict[str, np.ndarray]:
    """Big enough that numpy writes it in several pieces, deterministic so that a fresh copy can be compared."""
    return {"values": np.arange(2_000_000, dtype=np.float64) * 0.5, "names": np.array(["a", "b", "c"])}


def _run_child(code: str, env: dict[str, str], ready: Callable[[], bool], timeout: float = STARTUP_TIMEOUT) -> None:
    """Start ``code`` in a fresh interpreter, wait until ``ready()``, then SIGKILL its process group."""
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the kill reaches any process it started
    )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if child.poll() is not None:
                pytest.fail(f"child exited with {child.returncode} before it was killed: {child.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"child did not reach the point where it is killed within {timeout:.0f} s")
            time.sleep(0.005)
        assert child.poll() is None, "the child must still be running when it is killed"
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
        child.stderr.close()


def _is_temp(path: Path) -> bool:
    return path.name.startswith(".") and ".tmp." in path.name


# ---------------------------------------------------------------- killed at a fixed point of FeatureCache.put

# Runs in the child: FeatureCache.put of payload() under KEY, stopped at STAGE.
PUT_CHILD = """
    import os, sys, time
    from pathlib import Path
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_cache_interrupt import KEY, payload
    from bench.cache import FeatureCache

    ready, stage = Path({ready!r}), {stage!r}

    def stop_here():
        ready.write_text("")
        time.sleep(600)  # killed here

    if stage == "writing":
        real_savez = np.savez

        class HalfWriter:  # passes bytes through until the first big chunk, of which it writes half
            def __init__(self, handle):
                self.handle = handle

            def write(self, data):
                if len(data) > 1 << 20:
                    self.handle.write(bytes(data)[: len(data) // 2])
                    self.handle.flush()
                    stop_here()
                return self.handle.write(data)

            def __getattr__(self, name):
                return getattr(self.handle, name)

        np.savez = lambda handle, **arrays: real_savez(HalfWriter(handle), **arrays)
    else:  # "renaming": the whole temporary file is written, the rename never happens
        os.replace = lambda src, dst: stop_here()

    FeatureCache(Path({root!r})).put(KEY, payload())
"""


@pytest.mark.parametrize("stage", ["writing", "renaming"])
def test_a_put_killed_midway_leaves_nothing_that_reads_as_an_entry(stage: str, tmp_path: Path) -> None:
    root, ready = tmp_path / "features", tmp_path / "ready"
    code = PUT_CHILD.format(tests=str(Path(__file__).parent), ready=str(ready), stage=stage, root=str(root))
    _run_child(code, {}, ready.exists)

    cache = FeatureCache(root)
    left = [p for p in root.rglob("*") if p.is_file()]
    assert len(left) == 1 and _is_temp(left[0]), left  # what the killed writer left: its temporary file only
    assert left[0].parent == cache.path(KEY).parent
    assert not cache.path(KEY).exists()
    full = sum(a.nbytes for a in payload().values())
    if stage == "writing":
        assert 0 < left[0].stat().st_size < full, "the kill landed in the middle of the write"
    else:
        with np.load(left[0]) as complete:  # a complete file, but never renamed: still not an entry
            np.testing.assert_array_equal(complete["values"], payload()["values"])
    assert cache.get(KEY) is None

    cache.put(KEY, payload())  # the next run writes the entry, whatever was left behind
    got = cache.get(KEY)
    assert got is not None and set(got) == set(payload())
    for name, array in payload().items():
        np.testing.assert_array_equal(got[name], array)


def test_info_does_not_count_a_killed_writer_s_temporary_file(tmp_path: Path) -> None:
    root, ready = tmp_path / "features", tmp_path / "ready"
    code = PUT_CHILD.format(tests=str(Path(__file__).parent), ready=str(ready), stage="renaming", root=str(root))
    _run_child(code, {}, ready.exists)
    assert FeatureCache(root).info()[0] == 0


# ------------------------------------------------------------------------ killed during a real extraction

EXTRACT_CHILD = """
    import sys
    sys.path.insert(0, {tests!r})
    from test_cache_interrupt import CONFIG, N_PATIENTS
    from bench.data.datasets import load_cohort
    from feature_extractors.radiomics import RadiomicsExtractor

    cohort = load_cohort("synthetic_mm_tiny").subset(range(N_PATIENTS))
    RadiomicsExtractor(CONFIG).extract(cohort, progress=False)  # the default cache, under $BENCH_CACHE_DIR
"""


def _keys(cohort) -> dict[str, str]:
    extractor = RadiomicsExtractor(CONFIG)
    return {
        entry_key(extractor.name, extractor.version, dataclasses.asdict(CONFIG), extractor.cache_inputs(r)): r.sample_id
        for r in patient_records(cohort)
    }


def test_a_killed_extraction_leaves_only_valid_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_data: Path
) -> None:
    data, cache_dir, reference_dir = synthetic_data, tmp_path / "cache", tmp_path / "reference"
    monkeypatch.setenv("BENCH_DATA_DIR", str(data))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(reference_dir))
    cohort = load_cohort("synthetic_mm_tiny").subset(range(N_PATIENTS))  # the session's, made before the child starts
    expected = RadiomicsExtractor(CONFIG).extract(cohort, progress=False, cache=None).frame

    features = cache_dir / "features"

    def first_entry() -> bool:  # killed as soon as one patient's entry is in place: the others are under way
        return features.exists() and any(not _is_temp(p) for p in features.rglob("*.npz"))

    code = EXTRACT_CHILD.format(tests=str(Path(__file__).parent))
    _run_child(code, {"BENCH_DATA_DIR": str(data), "BENCH_CACHE_DIR": str(cache_dir)}, first_entry)

    monkeypatch.setenv("BENCH_CACHE_DIR", str(cache_dir))
    cache = FeatureCache.default()
    keys = _keys(cohort)
    entries = [p for p in features.rglob("*") if p.is_file() and not _is_temp(p)]
    assert 1 <= len(entries) < N_PATIENTS, "the run was killed midway"
    for path in entries:
        assert path.stem in keys, f"{path.name} is no entry of this cohort"
        assert path == cache.path(path.stem)
        got = cache.get(path.stem)
        assert got is not None, f"{path.name} is a complete entry (renamed into place) yet get() rejects it"
        row = expected.loc[keys[path.stem]]
        assert got["names"].tolist() == list(row.index)
        np.testing.assert_array_equal(got["values"], row.to_numpy())
    # Temporary files are named so that no key's path is ever theirs.
    assert not {p for p in features.rglob("*") if _is_temp(p)} & {cache.path(k) for k in keys}

    # Derived masks: what a study reads from the cache (where the child left one) equals a fresh derivation.
    masks = [p for p in (cache_dir / "masks").glob("*.nii.gz") if not _is_temp(p)]
    assert 1 <= len(masks) <= N_PATIENTS
    for record in patient_records(cohort):
        study = Study(record.inputs, record.sample_id)
        cached = sitk.GetArrayFromImage(study.roi_mask(CONFIG.roi))
        fresh = sitk.GetArrayFromImage(study.roi_mask(CONFIG.roi, use_cache=False))
        np.testing.assert_array_equal(cached, fresh, err_msg=record.sample_id)

    # The next run computes only what is missing and gives every patient the right features.
    calls = count_extractions(monkeypatch, RadiomicsExtractor)
    again = RadiomicsExtractor(CONFIG).extract(cohort, progress=False)
    pd.testing.assert_frame_equal(again.frame, expected)
    assert len(calls) == N_PATIENTS - len(entries)


def test_an_entry_cut_in_half_is_recomputed_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_data: Path
) -> None:
    monkeypatch.setenv("BENCH_DATA_DIR", str(synthetic_data))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    cohort = load_cohort("synthetic_mm_tiny").subset(range(3))
    cache = FeatureCache.default()
    first = RadiomicsExtractor(CONFIG).extract(cohort, progress=False, cache=cache)
    keys = _keys(cohort)
    victim = next(iter(keys))
    path = cache.path(victim)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    assert cache.get(victim) is None and not path.exists(), "a damaged entry is dropped, not returned"

    path.write_bytes(whole[: len(whole) // 2])
    calls = count_extractions(monkeypatch, RadiomicsExtractor)
    again = RadiomicsExtractor(CONFIG).extract(cohort, progress=False, cache=cache)
    assert calls == [keys[victim]], "only the damaged patient is recomputed"
    pd.testing.assert_frame_equal(again.frame, first.frame)
    assert cache.get(victim) is not None, "and its entry is written again"
