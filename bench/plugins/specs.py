"""Resolve command-line plugin specs into validated, loaded plugins."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any

from bench.errors import BenchError, UsageError
from bench.plugins.options import build_config, config_to_dict, non_default_options, parse_spec
from bench.plugins.registry import EXTRACTORS, MODELS, Entry, Registry
from bench.features.weights import RANDOM, RANDOM_LABEL


@dataclass(frozen=True)
class PluginSpec:
    """A plugin with its resolved options: what a combination is made of."""

    name: str
    cls: type
    config: Any
    entry: Entry

    @property
    def label(self) -> str:
        """The registry key, plus the options that differ from the defaults."""
        changed = non_default_options(self.config)
        weights = changed.pop("weights", None)
        parts = [f"{k}={_option_text(v)}" for k, v in changed.items()]
        if weights == RANDOM:  # a path to real weights is the normal case and stays out of the label
            parts.append(RANDOM_LABEL)
        return f"{self.name}[{','.join(parts)}]" if parts else self.name

    @property
    def version(self) -> str:
        return str(getattr(self.cls, "version", "?"))

    def params(self, role: str) -> dict[str, str]:
        out = {
            f"{role}.name": self.name,
            f"{role}.version": self.version,
            f"{role}.distribution": f"{self.entry.distribution}=={self.entry.version}",
        }
        out.update({f"{role}.config.{k}": json.dumps(v) for k, v in config_to_dict(self.config).items()})
        return out

    def digest(self) -> str:
        body = json.dumps([self.name, self.version, config_to_dict(self.config)], sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()


def resolve(registry: Registry, specs: list[str], weights: str | None = None) -> list[PluginSpec]:
    """Expand ``all``, load each plugin and validate its options before any work starts.

    ``weights`` (the ``--weights`` flag) fills the ``weights`` option of every plugin
    that has one and was not given it explicitly.
    """
    expanded: list[str] = []
    for spec in specs:
        expanded.extend(registry.names() if spec.strip() == "all" else [spec])
    resolved = []
    for spec in expanded:
        name, raw = parse_spec(spec)
        cls = registry.load(name)
        config_cls = getattr(cls, "Config", None)
        if config_cls is None:
            raise BenchError(f"{registry.kind} {name!r} declares no Config dataclass")
        if weights is not None and "weights" not in raw and "weights" in {f.name for f in fields(config_cls)}:
            raw = {**raw, "weights": weights}
        config = build_config(config_cls, raw, f"{registry.kind} {name!r}")
        resolved.append(PluginSpec(name, cls, config, registry.entry(name)))
    labels = [p.label for p in resolved]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise UsageError(f"{registry.kind} {duplicates[0]!r} was given twice")
    return resolved


def resolve_extractors(specs: list[str], weights: str | None = None) -> list[PluginSpec]:
    return resolve(EXTRACTORS, specs, weights)


def resolve_models(specs: list[str]) -> list[PluginSpec]:
    return resolve(MODELS, specs)


def _option_text(value: Any) -> str:
    """An option value as it is typed on the command line (tuples with '/')."""
    if isinstance(value, tuple):
        return "/".join(str(v) for v in value)
    return str(value)
