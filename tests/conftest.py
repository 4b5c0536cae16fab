"""Shared fixtures: a throwaway MLflow store and split folder (helpers live in ``bench.testing``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


PYTEST_OWN = "PYTEST_CURRENT_TEST"  # set and removed by pytest itself around each phase of a test


@pytest.fixture(scope="session")
def _environment_at_start() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name != PYTEST_OWN}


@pytest.fixture(autouse=True)
def _environment_as_at_start(_environment_at_start: dict[str, str]):
    """Each test starts and ends with this process's environment as the session started with it.

    Libraries run in-process change ``os.environ`` for good: Dask's nannies set OMP_NUM_THREADS, PYTHONHASHSEED...
    before starting workers, MLflow sets a telemetry session id on import, ``open_store`` its progress-bar switch.
    Left in place, they leak into every later test, and ``run_cli`` must then start each later ``bench`` as a plain
    subprocess (seconds of imports) instead of forking it (see ``bench.testing.fork_cli``). Changes made with
    ``monkeypatch`` are undone by it as ever.
    """
    _restore(_environment_at_start)
    yield
    _restore(_environment_at_start)


def _restore(environment: dict[str, str]) -> None:
    for name in [name for name in os.environ if name not in environment and name != PYTEST_OWN]:
        del os.environ[name]
    for name, value in environment.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``BENCH_DATA_DIR`` holding the tiny synthetic cohort, generated once per session; tests only read it."""
    from bench.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic-data")
    generate("tiny", 0, root / "synthetic_mm-tiny-seed0", progress=False)
    return root


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def splits_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A writable copy of the committed split files, so tests never touch the repository's."""
    target = tmp_path / "splits"
    shutil.copytree(REPO / "splits", target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    monkeypatch.setenv("BENCH_SPLITS_DIR", str(target))
    return target
