"""What made a page: the versions of prognosis-bench, of each plugin's distribution and of the libraries behind
the numbers, recorded in the results file when the rows are computed and stated on the page."""

from __future__ import annotations

from importlib import metadata

from bench.plugins.labels import PluginLabel, RowKey
from bench.plugins.weights_lock import WeightsFile

ALWAYS = ("scikit-survival",)  # every metric is computed with it


def provenance(keys: list[RowKey], weights: dict[str, dict] | None = None) -> dict:
    """The versions behind rows ``keys``: prognosis-bench, each plugin's distribution, scikit-survival, and the
    libraries the plugins' extras require (torch for ``[deep]``, sam2 for ``[medsam2]``, pyradiomics for
    ``[radiomics]``), as installed here; and ``weights``, the weights file (name, sha256, hub commit) of each
    extractor label that loaded one, for the labels of ``keys`` (absent when none did)."""
    from bench.plugins.registry import EXTRACTORS, MODELS

    pairs = [pair for key in keys for pair in [*((EXTRACTORS, part) for part in key.features), (MODELS, key.model)]]
    return _record(pairs, {str(part) for key in keys for part in key.features}, weights)


def extractor_provenance(labels: list[PluginLabel], weights: dict[str, dict] | None = None) -> dict:
    """As ``provenance``, for extractors alone (``bench robustness``, which fits no model)."""
    from bench.plugins.registry import EXTRACTORS

    return _record([(EXTRACTORS, label) for label in labels], {str(label) for label in labels}, weights)


def _record(pairs: list, used: set[str], weights: dict[str, dict] | None) -> dict:
    plugins, libraries = {}, set(ALWAYS)
    for registry, label in pairs:
        entry = registry.entry(label.name)
        plugins[f"{registry.kind} {label.name}"] = f"{entry.distribution} {entry.version}"
        libraries |= _extra_requirements(entry.distribution, entry.extras)
    versions = {name: _version(name) for name in sorted(libraries)}
    record = {
        "prognosis-bench": _version("prognosis-bench"),
        "plugins": dict(sorted(plugins.items())),
        "libraries": {k: v for k, v in versions.items() if v},
    }
    files = {label: file for label, file in sorted((weights or {}).items()) if label in used}
    if files:  # only then: pages of rows without weights files read as they always did
        record["weights"] = files
    return record


def _extra_requirements(distribution: str, extras: tuple[str, ...]) -> set[str]:
    """The names of the distributions that ``distribution``'s ``extras`` require (from its metadata)."""
    from packaging.requirements import Requirement

    names = set()
    for line in metadata.requires(distribution) or []:
        requirement = Requirement(line)
        if requirement.marker is not None and any(requirement.marker.evaluate({"extra": e}) for e in extras):
            names.add(requirement.name)
    return names


def describe(record: dict | None) -> str:
    """The page's one-line statement of it."""
    if not record:
        return "not recorded (results made before prognosis-bench kept versions; regenerate them)"
    own = record.get("prognosis-bench", "?")
    plugins = record.get("plugins", {})
    outside = sorted({v for v in plugins.values() if not v.startswith("prognosis-bench ")})
    libraries = ", ".join(f"{k} {v}" for k, v in sorted(record.get("libraries", {}).items()))
    parts = [f"prognosis-bench {own}"]
    parts += [f"plugins from {', '.join(outside)}"] if outside else []
    parts += [libraries] if libraries else []
    named = ", ".join(f"{k.split(' ', 1)[1]} ({v})" for k, v in plugins.items())
    files = ", ".join(f"{label} {WeightsFile.describe(f)}" for label, f in record.get("weights", {}).items())
    return "; ".join(parts) + (f"; rows' plugins: {named}" if named else "") + (f"; weights: {files}" if files else "")


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""
