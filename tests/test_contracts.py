"""Contract tests driven by the registries: a new plugin is tested without a new test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.data.datasets import load_cohort
from bench.plugins.options import build_config
from bench.plugins.registry import EXTRACTORS, MODELS
from bench.protocol.degenerate import constant_risk
from bench.protocol.preprocessing import FoldPreprocessor
from bench.testing import make_cohort

TIMES = np.array([50.0, 150.0, 300.0, 600.0])


@pytest.fixture(scope="module")
def data():
    cohort = make_cohort(n_patients=120, seed=4)
    block = EXTRACTORS.load("clinical")().extract(cohort, progress=False)
    X = FoldPreprocessor([block]).fit_transform(np.arange(cohort.n))
    return X[:90], cohort.y[:90], X[90:]


@pytest.mark.parametrize("name", MODELS.names())
def test_model_contract(name: str, data) -> None:
    X_train, y_train, X_test = data
    cls = MODELS.load(name)
    model = cls(random_state=0).fit(X_train, y_train)
    risk = model.predict(X_test)
    assert risk.shape == (len(X_test),) and np.isfinite(risk).all()
    again = cls(random_state=0).fit(X_train, y_train).predict(X_test)
    np.testing.assert_array_equal(risk, again)
    survival = model.predict_survival_function(X_test, TIMES)
    assert survival.shape == (len(X_test), len(TIMES))
    assert ((survival >= 0) & (survival <= 1)).all()
    assert (np.diff(survival, axis=1) <= 1e-12).all(), "survival curves never increase"
    if constant_risk(risk):  # a learner that ranks no one (the fixture's constant_risk): one curve for everyone
        np.testing.assert_array_equal(survival, np.repeat(survival[:1], len(survival), axis=0))
        return
    # Higher risk means earlier events: risk and 300-day survival run opposite ways.
    assert np.corrcoef(risk, survival[:, 2])[0, 1] < 0


@pytest.mark.parametrize("name", MODELS.names())
def test_model_declares_defaults_and_search_space(name: str) -> None:
    cls = MODELS.load(name)
    assert cls.name == name
    cls.Config()  # every option has a default

    class Trial:
        def suggest_float(self, key, low, high, log=False):
            return low

        def suggest_int(self, key, low, high, log=False):
            return low

        def suggest_categorical(self, key, choices):
            return choices[0]

    space = cls.search_space(Trial())
    assert space, f"{name} searches nothing: --tune would run no trial and the check below would check nothing"
    build_config(cls.Config, space, name)  # every searched key is a real option


@pytest.fixture(scope="module")
def imaging_cohort(tmp_path_factory: pytest.TempPathFactory, synthetic_data: Path):
    """Five patients of the tiny synthetic PET/CT cohort, for extractors that read images."""
    root = tmp_path_factory.mktemp("imaging")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_DATA_DIR", str(synthetic_data))
        mp.setenv("BENCH_CACHE_DIR", str(root / "cache"))
        cohort = load_cohort("synthetic_mm_tiny")
    return cohort.subset(range(5))


@pytest.mark.parametrize("name", EXTRACTORS.names())
def test_extractor_contract(name: str, imaging_cohort, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cls = EXTRACTORS.load(name)
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    cohort = imaging_cohort if cls.cacheable else make_cohort(n_patients=25, seed=2)
    assert cls.name == name
    config = build_config(cls.Config, dict(cls.smoke_options), name)
    first = cls(config).extract(cohort, progress=False)
    second = cls(config).extract(cohort, progress=False)
    assert list(first.frame.index) == list(cohort.sample_ids), "rows in cohort order"
    assert first.frame.shape[1] > 0
    assert set(first.frame.columns) == set(first.columns)
    first.frame.equals(second.frame) or pytest.fail("extraction is not deterministic")
    X = FoldPreprocessor([first]).fit_transform(np.arange(cohort.n))
    assert np.isfinite(X).all(), "features are finite after in-fold preprocessing"
    outcome_free = cohort.subset(range(cohort.n))
    outcome_free.time = outcome_free.time[::-1].copy()
    outcome_free.event = ~outcome_free.event
    assert cls(config).extract(outcome_free, progress=False).frame.equals(first.frame), "features never see outcomes"


@pytest.mark.parametrize("registry", [EXTRACTORS, MODELS], ids=["extractors", "models"])
def test_modules_a_plugin_imports_on_first_use_exist(registry) -> None:
    """``imports`` is what `bench` imports before any work (on every Dask worker too): a misspelt name would fail
    every run, so each must be a module that this environment finds."""
    import importlib.util

    for name in registry.names():
        cls = registry.load(name)
        assert isinstance(cls.imports, tuple), f"{name}.imports must be a tuple of module names"
        for module in cls.imports:
            assert importlib.util.find_spec(module) is not None, f"{name}.imports names {module!r}, not found"
