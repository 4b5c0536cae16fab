"""Features and fits are the same bits at one and at two threads, DeepSurv over MedSAM2 per-slice memory included.

``tests/test_threads.py`` checks the mechanism (``one_thread``); this checks its result end to end. Two fresh
processes (this file run as a script), started with OMP/MKL/OPENBLAS_NUM_THREADS at 1 and at 2, each with an empty
feature cache of its own, extract MedSAM2 memory features and fit the demo's three DeepSurv designs on them
(concatenation with the clinical block, gate, depth attention over the slices) beside a Cox row, as ``bench grid``
does (``extract_blocks``, ``fit_rows``): every feature, metric, replicate and prediction must be the same bits. A
page stores metrics to 12 significant digits; this compares them whole.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("sam2")

PATIENTS = 8  # of the tiny cohort, in 2 folds: the MedSAM2 encoder (about 1 s a slice) is most of the cost
DEEPSURV = "deepsurv:max_epochs=30"
ROWS = (
    ("medsam2_memory:modality=pet,roi=spine_dilated,max_slices=2+clinical", (DEEPSURV, f"{DEEPSURV},fusion=gate")),
    ("medsam2_memory:modality=pet,roi=spine_dilated,max_slices=2,pool=attention", (DEEPSURV,)),
    ("clinical", ("coxph:alpha=1",)),
)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@pytest.mark.slow
def test_features_and_fits_are_the_same_bits_at_one_and_two_threads(tmp_path: Path, synthetic_data: Path) -> None:
    from bench.testing import run_cli, subset_manifest

    manifest = synthetic_data / "synthetic_mm-tiny-seed0" / "manifest.yaml"
    dataset = subset_manifest(manifest, PATIENTS, tmp_path / "cohort", "tiny8")
    env = {**os.environ, "BENCH_DATA_DIR": str(synthetic_data), "BENCH_SPLITS_DIR": str(tmp_path / "splits")}
    made = run_cli("splits", "make", "--dataset", str(dataset), "--folds", "2", env=env)
    assert made.returncode == 0, made.stderr[-2000:]

    def compute(threads: int) -> dict:
        out = tmp_path / f"threads{threads}"
        out.mkdir()
        child_env = {**env, **{name: str(threads) for name in THREAD_VARIABLES}, "BENCH_CACHE_DIR": str(out / "cache")}
        done = subprocess.run([sys.executable, __file__, str(dataset), str(out / "results.pickle")],
                              capture_output=True, text=True, env=child_env, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return pickle.loads((out / "results.pickle").read_bytes())

    with ThreadPoolExecutor(2) as pool:  # the two processes at once
        one, two = pool.map(compute, (1, 2))
    assert list(one["features"]) == list(two["features"]) and len(one["features"]) == 3
    for name, (frame, sequence) in one["features"].items():
        pd.testing.assert_frame_equal(two["features"][name][0], frame, check_exact=True, obj=name)
        np.testing.assert_array_equal(two["features"][name][1], sequence, err_msg=name)
    assert len(one["fits"]) == 4 and not any(fit is None for fit in one["fits"]), one["errors"]
    for row, (expected, got) in enumerate(zip(one["fits"], two["fits"], strict=True)):
        assert got["metrics"] == expected["metrics"], f"row {row}: other metrics at 2 threads"  # JSON: exact floats
        assert got["replicates"].equals(expected["replicates"]), f"row {row}: other bootstrap replicates"
        assert got["predictions"].equals(expected["predictions"]), f"row {row}: other predictions"


def _compute(dataset: str, out: Path) -> None:
    """The plan's feature blocks and row fits in this process, pickled to ``out``."""
    from bench.data.datasets import load_cohort
    from bench.errors import ModelError
    from bench.executor import Executor
    from bench.protocol.fitting import fit_rows
    from bench.protocol.runner import RunRequest, extract_blocks, resolve_plan, row_fits
    from bench.protocol.splits import load_split

    request = RunRequest(dataset, rows=ROWS, bootstrap=20, seed=0, weights="random")
    cohort = load_cohort(dataset)
    split = load_split(cohort, cohort.default_split)
    plan = resolve_plan(request)
    blocks = extract_blocks(plan, cohort, progress=False, executor=Executor())
    fits, errors = [], []
    for _row, evaluation in fit_rows(Executor(), cohort, split, row_fits(plan, blocks, request, tuning=None)):
        if isinstance(evaluation, ModelError):
            fits.append(None)
            errors.append(str(evaluation))
            continue
        fits.append({
            # repr of a float round-trips: equal JSON is equal bits (NaN included, written as NaN)
            "metrics": json.dumps({name: s.as_dict() for name, s in evaluation.metrics.items()}),
            "replicates": evaluation.replicates,
            "predictions": evaluation.predictions,
        })  # fmt: skip
    features = {name: (block.frame, block.sequence) for name, block in blocks.items()}
    out.write_bytes(pickle.dumps({"features": features, "fits": fits, "errors": errors}))


if __name__ == "__main__":  # the child process of the test above
    _compute(sys.argv[1], Path(sys.argv[2]))
