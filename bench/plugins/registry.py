"""Plugin registries backed by entry points.

Discovery and loading are two steps (as flake8 does it): listing reads
entry-point metadata only, so ``bench list`` never imports a plugin; loading
imports one plugin on demand and names its distribution when that fails.
Built-in plugins are declared in our own pyproject under the same groups.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
from dataclasses import dataclass
from functools import cache

from bench.errors import PluginLoadError, UnknownNameError, UsageError

EXTRACTORS_GROUP = "prognosis_bench.extractors"
MODELS_GROUP = "prognosis_bench.models"
DATASETS_GROUP = "prognosis_bench.datasets"


@dataclass(frozen=True)
class Entry:
    """One registered plugin, known without importing it."""

    name: str
    value: str  # "module:attribute"
    distribution: str
    version: str
    extras: tuple[str, ...]


class Registry:
    """The plugins of one entry-point group."""

    def __init__(self, group: str, kind: str):
        self.group = group
        self.kind = kind

    def entries(self) -> list[Entry]:
        """All entries, sorted by name; duplicate names are an error."""
        return list(_entries(self.group, self.kind))

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def entry(self, name: str) -> Entry:
        for e in self.entries():
            if e.name == name:
                return e
        raise UnknownNameError(self.kind, name, self.names())

    def load(self, name: str) -> object:
        """Import and return the object registered under ``name``."""
        e = self.entry(name)
        module_name, _, attr = e.value.partition(":")
        try:
            obj: object = importlib.import_module(module_name)
            for part in attr.split(".") if attr else []:
                obj = getattr(obj, part)
        except Exception as exc:  # any failure inside a plugin's import is the plugin's
            hint = (
                f"install it with: pip install '{e.distribution}[{','.join(e.extras)}]'"
                if e.extras
                else f"reinstall or fix the distribution {e.distribution!r}"
            )
            raise PluginLoadError(
                f"{self.kind} {name!r} from distribution {e.distribution!r} "
                f"(entry point {e.value}) failed to load: {type(exc).__name__}: {exc}; {hint}"
            ) from exc
        return obj


@cache
def _entries(group: str, kind: str) -> tuple[Entry, ...]:
    found: dict[str, Entry] = {}
    for dist in md.distributions():
        dist_name = dist.metadata["Name"]
        for ep in dist.entry_points:
            if ep.group != group:
                continue
            entry = Entry(ep.name, ep.value.split("[")[0].strip(), dist_name, dist.version, tuple(ep.extras))
            previous = found.get(ep.name)
            # The same distribution can be visible twice (editable install plus metadata in the tree).
            if previous is not None and previous.distribution != dist_name:
                raise UsageError(
                    f"duplicate {kind} name {ep.name!r}: declared by {previous.distribution!r} "
                    f"({previous.value}) and {dist_name!r} ({entry.value}); uninstall one of them"
                )
            found[ep.name] = entry
    return tuple(sorted(found.values(), key=lambda e: e.name))


EXTRACTORS = Registry(EXTRACTORS_GROUP, "extractor")
MODELS = Registry(MODELS_GROUP, "model")
DATASETS = Registry(DATASETS_GROUP, "dataset")
