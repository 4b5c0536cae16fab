"""``bench robustness``'s work: every extractor of a request, its features under every version of every study (or
every scan of every patient), and each feature's ICC; validated before any work, run on the executor (issue 27)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.data.cohort import Cohort
from bench.data.datasets import load_cohort
from bench.data.imaging.perturb import parse_chain
from bench.errors import InputError, UsageError
from bench.executor import check_scheduler, open_executor
from bench.plugins.labels import FUSION
from bench.plugins.specs import PluginSpec, resolve_features
from bench.protocol.robustness import (
    DEFAULT_PERTURBATION,
    DEFAULT_REPEATS,
    FeatureICC,
    Versions,
    feature_versions,
    retest_versions,
    robustness,
)
from bench.protocol.runner import file_problems, input_problems, plan_needs

@dataclass(frozen=True)
class RobustnessRequest:
    dataset: str
    extractors: tuple[str, ...]
    perturbation: str = DEFAULT_PERTURBATION  # ignored with retest
    repeats: int = DEFAULT_REPEATS  # perturbed versions per study
    seed: int = 0  # the perturbations' seed
    retest: bool = False  # versions are each patient's scans, not perturbations
    workers: int = 1
    scheduler: str | None = None
    weights: str | None = None


@dataclass
class Measured:
    """One extractor's versions and ICCs; ``classes[i]`` is the class of ``iccs[i]`` (None: no classes)."""

    spec: PluginSpec
    versions: Versions
    iccs: list[FeatureICC]
    classes: list[str | None]


def measure(request: RobustnessRequest, progress: bool = False) -> tuple[Cohort, list[Measured]]:
    """Check the request, the cohort and its files, then extract every version; one ``Measured`` per extractor."""
    chain = () if request.retest else parse_chain(request.perturbation)
    if not request.extractors:
        raise UsageError("give at least one extractor (--extractor radiomics:roi=tumour ...)")
    if request.workers < 1:
        raise UsageError(f"--workers must be 1 or more, got {request.workers}")
    if request.scheduler is not None:
        check_scheduler(request.scheduler)
    specs = []
    for text in request.extractors:
        if FUSION in text:
            raise UsageError(f"{text!r} fuses extractors; robustness is measured per extractor: give them apart")
        specs.append(resolve_features(text, request.weights).parts[0])
    if len({s.digest() for s in specs}) < len(specs):
        raise UsageError("the same extractor (with the same options) is given twice")
    cohort = load_cohort(request.dataset, outcomes=False)  # outcomes are never read
    if not cohort.has_images:
        raise UsageError(f"dataset {cohort.name!r} has no images: robustness perturbs studies; give a PET/CT manifest")
    plan = [(resolve_features(text, request.weights), []) for text in request.extractors]
    unusable = input_problems(plan, cohort)
    if unusable:
        raise UsageError(unusable[0] + (f" (and {len(unusable) - 1} more)" if len(unusable) > 1 else ""))
    bad_files = file_problems(plan, cohort)
    if bad_files:
        raise InputError(bad_files[0] + (f" ({len(bad_files) - 1} more; run `bench data check {cohort.manifest}` "
                                         "to list them all)" if len(bad_files) > 1 else ""))  # fmt: skip
    modules, resources = plan_needs(plan)
    measured = []
    with open_executor(request.workers, request.scheduler, announce=progress) as executor:
        executor.check(["bench.protocol.robustness", *modules], resources)
        for spec in specs:
            extractor = spec.cls(spec.config)
            if request.retest:
                versions = retest_versions(extractor, cohort, executor, progress)
            else:
                versions = feature_versions(extractor, cohort, chain, request.repeats, request.seed, executor, progress)
            iccs = robustness(versions)
            measured.append(Measured(spec, versions, iccs, [extractor.feature_class(f.name) for f in iccs]))
    return cohort, measured
