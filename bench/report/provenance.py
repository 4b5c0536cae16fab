"""What made a page: the versions of prognosis-bench, of each plugin's distribution and of the libraries behind
the numbers, recorded in the results file when the rows are computed and stated on the page."""

from __future__ import annotations

import sys
from importlib import metadata

from bench.plugins.labels import RowKey

# Libraries whose version changes numbers: always scikit-survival (every metric); the others where a row used them.
LIBRARIES = ("scikit-survival", "torch", "sam2", "pyradiomics-bhklab")
_MODULES = {"scikit-survival": "sksurv", "torch": "torch", "sam2": "sam2", "pyradiomics-bhklab": "radiomics"}


def provenance(keys: list[RowKey]) -> dict:
    """The versions behind rows ``keys``, computed in this process (a library counts once it has been imported)."""
    from bench.plugins.registry import EXTRACTORS, MODELS

    plugins = {}
    for key in keys:
        for registry, label in [*((EXTRACTORS, part) for part in key.features), (MODELS, key.model)]:
            entry = registry.entry(label.name)
            plugins[f"{registry.kind} {label.name}"] = f"{entry.distribution} {entry.version}"
    libraries = {name: _version(name) for name in LIBRARIES if _MODULES[name] in sys.modules}
    return {
        "prognosis-bench": _version("prognosis-bench"),
        "plugins": dict(sorted(plugins.items())),
        "libraries": {k: v for k, v in libraries.items() if v},
    }


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
    return "; ".join(parts) + (f"; rows' plugins: {named}" if named else "")


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""
