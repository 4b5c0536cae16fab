"""Resolve a ``--dataset`` value to a cohort."""

from __future__ import annotations

from bench.cohort import Cohort
from bench.errors import BenchError, DataError
from bench.registry import DATASETS


def load_cohort(name: str) -> Cohort:
    """Load a registered dataset by name."""
    factory = DATASETS.load(name)
    try:
        cohort = factory()  # type: ignore[operator]
    except BenchError:
        raise
    except Exception as exc:
        raise DataError(f"dataset {name!r} failed to load: {type(exc).__name__}: {exc}") from exc
    if not isinstance(cohort, Cohort):
        raise DataError(f"dataset {name!r} did not return a Cohort (got {type(cohort).__name__})")
    return cohort
