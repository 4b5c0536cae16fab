"""Check before work that the feature cache can serve a run: writable, or read-only with every entry it needs.

A shared cache is often read-only for its users (``$BENCH_CACHE_READONLY``, or a folder they cannot write). Its
hits are served as from any cache; a run that would have to compute a missing entry fails here, before the first
extraction, naming how many are missing, instead of computing for an hour and failing to write.
"""

from __future__ import annotations

from bench.cache import READ_ONLY_ENV, FeatureCache, read_only_reason
from bench.data.cohort import Cohort
from bench.errors import BadInputError
from bench.plugins.specs import Features, PluginSpec
from feature_extractors.base import patient_records

Plan = list[tuple[Features, list[PluginSpec]]]  # rows as ``bench.protocol.runner.resolve_plan`` gives them


def check_feature_cache(plan: Plan, cohort: Cohort) -> None:
    """Raise one line (exit 2) when the cache can be neither written nor read for every entry of ``plan``."""
    why = read_only_reason()  # "" when a run may write the cache: misses are computed and written as ever
    if not why:
        return
    missing, needed = missing_entries(plan, cohort, FeatureCache.default())
    if missing:
        raise BadInputError(
            f"the feature cache {str(FeatureCache.default().root)!r} is read-only ({why}) and lacks {missing} of the "
            f"{needed} entries this run needs; run it once where the cache can be written, unset ${READ_ONLY_ENV}, "
            "or point $BENCH_CACHE_DIR at a writable folder"
        )


def missing_entries(plan: Plan, cohort: Cohort, cache: FeatureCache) -> tuple[int, int]:
    """(entries absent or damaged, entries needed) for every cached extractor of ``plan`` on every patient."""
    extractors = {p.label: p.cls(p.config) for features, _ in plan for p in features.parts}
    cached = [e for e in extractors.values() if e.cacheable]
    records = patient_records(cohort)
    keys = [e.cache_key(r) for e in cached for r in records]
    return sum(cache.get(key) is None for key in keys), len(keys)
