"""Resolve a ``--dataset`` value to a cohort: a registered name or the path of a manifest."""

from __future__ import annotations

from bench.data.cohort import Cohort
from bench.errors import BenchError, DataError
from bench.plugins.registry import DATASETS


def load_cohort(name: str, horizons: tuple[float, ...] | None = None, tau: float | None = None,
                outcomes: bool = True) -> Cohort:  # fmt: skip
    """Load a registered dataset, or a user cohort from a manifest path (``.yaml``/``.csv``/folder);
    ``outcomes=False`` accepts a manifest without time and event (their values are then never read)."""
    from bench.data.manifest import is_manifest_path, manifest_cohort, read_manifest

    if is_manifest_path(name):
        return manifest_cohort(read_manifest(name, horizons, tau, outcomes), name, outcomes)
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


def dataset_name(dataset: str) -> str:
    """The name runs, pages and splits file a ``--dataset`` under: a registered dataset's own, a manifest's
    ``name`` (its file's stem for a bare CSV). Reads the manifest's header and table, never its images."""
    from bench.data.manifest import is_manifest_path, read_manifest

    return read_manifest(dataset).name if is_manifest_path(dataset) else dataset
