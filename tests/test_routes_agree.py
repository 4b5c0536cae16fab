"""Radiomics extraction and the fitting stage give the same numbers, to the bit, in this process and on a local Dask
cluster of 2 workers (``make bench`` times these routes and a 1-worker cluster; this checks what they compute: a
1-worker route, which runs the tasks as this process does but in a worker, would add about 9 s of CPU here).

Each route extracts radiomics features (the extractor's defaults) of 6 patients of the tiny cohort into a feature
cache of its own, then fits the same rows (every learner on clinical features, Cox on the oracle) over the tiny
cohort's committed 5-fold split on the same executor. Skeleton masks are derived once, by the in-process route.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("radiomics")
pytest.importorskip("distributed")
pytest.importorskip("torch")  # the DeepSurv row

from bench.cache import FeatureCache
from bench.data.datasets import load_cohort
from bench.errors import ModelError
from bench.executor import Executor, local_cluster
from bench.protocol.fitting import fit_rows
from bench.protocol.runner import RunRequest, extract_blocks, resolve_plan, row_fits
from bench.protocol.splits import load_split
from bench.testing import subset_manifest
from feature_extractors.radiomics import RadiomicsConfig, RadiomicsExtractor

ROUTES = {"in-process": 0, "2 Dask workers": 2}  # route -> workers of its local cluster
RADIOMICS_PATIENTS = 6  # 0.2 s each with the defaults at the tiny cohort's resolution
ROWS = (
    ("clinical", ("coxph", "coxnet:alpha=0.1", "rsf:n_estimators=50", "deepsurv:max_epochs=30")),
    ("oracle", ("coxph",)),
)


@contextlib.contextmanager
def _executor(workers: int) -> Iterator[Executor]:
    if workers == 0:
        yield Executor()
    else:
        with local_cluster(workers) as executor:
            yield executor


@pytest.fixture(scope="module")
def routes(synthetic_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[pd.DataFrame, list]]:
    """Route -> (radiomics features, [(row, Evaluation or ModelError)] of the fitting stage)."""
    root = tmp_path_factory.mktemp("routes")
    manifest = subset_manifest(
        synthetic_data / "synthetic_mm-tiny-seed0" / "manifest.yaml", RADIOMICS_PATIENTS, root / "few", "tiny6"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_DATA_DIR", str(synthetic_data))
        mp.setenv("BENCH_CACHE_DIR", str(root / "cache"))  # the workers started below inherit it, and find the masks
        few = load_cohort(str(manifest))
        request = RunRequest(dataset="synthetic_mm_tiny", rows=ROWS, bootstrap=50, seed=0)
        cohort = load_cohort(request.dataset)
        split = load_split(cohort, cohort.default_split)
        plan = resolve_plan(request)
        blocks = extract_blocks(plan, cohort, progress=False, executor=Executor())
        fits = row_fits(plan, blocks, request, tuning=None)
        out = {}
        for route, workers in ROUTES.items():
            with _executor(workers) as executor:
                cache = FeatureCache(root / f"features-{workers}")  # empty: every patient extracted on this route
                features = RadiomicsExtractor(RadiomicsConfig()).extract(few, False, cache=cache, executor=executor)
                out[route] = (features.frame, list(fit_rows(executor, cohort, split, fits)))
    return out


def test_radiomics_features_are_the_same_on_every_route(routes) -> None:
    reference = routes["in-process"][0]
    assert reference.shape == (RADIOMICS_PATIENTS, 88)
    for route, (frame, _) in routes.items():
        pd.testing.assert_frame_equal(frame, reference, check_exact=True, obj=f"radiomics features, {route}")


def test_fitting_gives_the_same_numbers_on_every_route(routes) -> None:
    reference = routes["in-process"][1]
    assert [row for row, _ in reference] == list(range(sum(len(models) for _, models in ROWS))), "every row, in order"
    assert not any(isinstance(result, ModelError) for _, result in reference), reference
    for route, (_, rows) in routes.items():
        for (row, expected), (_, got) in zip(reference, rows, strict=True):
            assert type(got) is type(expected), f"row {row}: {route} gives {got!r}, in-process {expected!r}"
            assert list(got.metrics) == list(expected.metrics), f"row {row}: {route} gives other metrics"
            for metric, summary in expected.metrics.items():
                assert _bits(got.metrics[metric].as_dict()) == _bits(summary.as_dict()), (
                    f"row {row}, {metric}: {route} {got.metrics[metric].as_dict()} != in-process {summary.as_dict()}"
                )
            assert got.replicates.equals(expected.replicates), f"row {row}: {route} gives other bootstrap replicates"
            assert got.predictions.equals(expected.predictions), f"row {row}: {route} gives other predictions"


def _bits(value):
    """``value`` with every float as its exact hex (NaN as "nan"), to compare results to the bit, NaN included."""
    if isinstance(value, dict):
        return {k: _bits(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_bits(v) for v in value]
    if isinstance(value, float):
        return "nan" if math.isnan(value) else value.hex()
    return value
