"""Resolve command-line plugin specs into validated, loaded plugins."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any

from bench.errors import BenchError, UsageError
from bench.plugins.labels import FUSION, MIN_ICC, Baseline, PluginLabel, min_icc_value, parse_features
from bench.plugins.options import build_config, config_to_dict, parse_spec
from bench.plugins.registry import EXTRACTORS, MODELS, Entry, Registry


@dataclass(frozen=True)
class PluginSpec:
    """A plugin with its resolved options: what a combination is made of."""

    name: str
    cls: type
    config: Any
    entry: Entry
    min_icc: float | None = None  # extractors: keep the features this robust under perturbation (on training rows)

    def key(self, tune: int = 0) -> PluginLabel:
        """How rows tell this plugin apart (see ``bench.plugins.labels``)."""
        return PluginLabel.of(self, tune)

    @property
    def label(self) -> str:
        return str(self.key())

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
        out.update({f"{role}.{MIN_ICC}": f"{self.min_icc:g}"} if self.min_icc is not None else {})
        return out

    def digest(self) -> str:
        robust = [self.min_icc] if self.min_icc is not None else []  # a block of its own; the same features cached
        body = json.dumps([self.name, self.version, config_to_dict(self.config), *robust], sort_keys=True, default=str)
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
        min_icc = min_icc_value(raw.pop(MIN_ICC), spec) if registry is EXTRACTORS and MIN_ICC in raw else None
        cls = registry.load(name)
        config_cls = getattr(cls, "Config", None)
        if config_cls is None:
            raise BenchError(f"{registry.kind} {name!r} declares no Config dataclass")
        if weights is not None and "weights" not in raw and "weights" in {f.name for f in fields(config_cls)}:
            raw = {**raw, "weights": weights}
        config = build_config(config_cls, raw, f"{registry.kind} {name!r}")
        resolved.append(PluginSpec(name, cls, config, registry.entry(name), min_icc))
    labels = [p.label for p in resolved]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise UsageError(f"{registry.kind} {duplicates[0]!r} was given twice")
    return resolved


@dataclass(frozen=True)
class Features:
    """The feature side of a row: one extractor, or several fused by ``+``."""

    parts: tuple[PluginSpec, ...]

    def key(self) -> tuple[PluginLabel, ...]:
        return tuple(p.key() for p in self.parts)

    @property
    def label(self) -> str:
        return FUSION.join(p.label for p in self.parts)

    @property
    def name(self) -> str:
        return FUSION.join(p.name for p in self.parts)

    def digest(self) -> str:
        if len(self.parts) == 1:  # a single extractor keeps its own digest (and so its run names)
            return self.parts[0].digest()
        return hashlib.sha256(FUSION.join(p.digest() for p in self.parts).encode()).hexdigest()

    def params(self) -> dict[str, str]:
        if len(self.parts) == 1:
            return self.parts[0].params("extractor")
        out = {"extractor.fusion": self.label}
        for i, part in enumerate(self.parts):
            out.update(part.params(f"extractor{i}"))
        return out


def resolve_features(spec: str, weights: str | None = None) -> Features:
    """``A`` or a fusion ``A+B+C``, every part resolved and checked."""
    parts = spec.split(FUSION)
    if any(not p.strip() for p in parts):
        raise UsageError(f"empty extractor in {spec!r}; join extractors with '+', e.g. radiomics+clinical")
    features = Features(tuple(resolve(EXTRACTORS, parts, weights)))
    return features


def resolve_baseline(extractor: str, model: str | None, weights: str | None = None, tune: int = 0) -> Baseline:
    """The baseline given as specs (``radiomics:roi=spine``, ``coxph``), resolved by the registry into keys.

    Resolving through the same plugins and options as the rows means the baseline matches its row by key,
    whatever the label's text form.
    """
    features = resolve_features(extractor, weights).key()
    return Baseline(features, None if model is None else resolve(MODELS, [model])[0].key(tune))


def baseline_from_text(extractor: str, model: str | None) -> Baseline:
    """A baseline as typed for ``bench leaderboard``: labels as the page shows them, or specs (with ``:``)."""
    if ":" in extractor or (model is not None and ":" in model):
        return resolve_baseline(extractor, model)
    return Baseline(parse_features(extractor), None if model is None else PluginLabel.parse(model))


def resolve_extractors(specs: list[str], weights: str | None = None) -> list[PluginSpec]:
    return resolve(EXTRACTORS, specs, weights)


def resolve_models(specs: list[str]) -> list[PluginSpec]:
    return resolve(MODELS, specs)
