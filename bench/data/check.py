"""``bench data check``: every problem of a cohort's manifest and images, found in one pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.data.datasets import load_cohort
from bench.data.manifest import check_images, is_manifest_path, read_manifest


@dataclass
class CheckReport:
    source: str  # what was checked: a manifest path, or a registered dataset's name
    path: Path | None = None  # the manifest read (None for a tabular dataset without images)
    problems: list[str] = field(default_factory=list)
    studies: int = 0
    events: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def check_dataset(
    source: str, horizons: tuple[float, ...] | None = None, tau: float | None = None, progress: bool = True
) -> CheckReport:
    """Read the manifest (of a path, or of a registered imaging dataset) and every image it names."""
    if not is_manifest_path(source):  # a registered dataset: check the manifest it was built from
        cohort = load_cohort(source, horizons, tau)
        if cohort.manifest is None:
            return CheckReport(source, studies=cohort.n, events=cohort.n_events)
        source = str(cohort.manifest)
    manifest = read_manifest(source, horizons, tau)
    problems = [str(p) for p in manifest.problems + check_images(manifest, progress=progress)]
    if manifest.policy is None and not problems:  # a policy refused for a stated reason is not a missing one
        problems.append("no horizons and tau: declare them in a YAML manifest or pass --horizons and --tau")
    events = int(manifest.table["event"].astype(int).sum()) if not problems else 0
    return CheckReport(source, manifest.path, problems, len(manifest.table), events)
