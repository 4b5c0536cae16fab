"""Shared fixtures: a throwaway MLflow store and split folder (helpers live in ``bench.testing``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
