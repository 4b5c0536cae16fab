"""Row identity: the one place that turns plugins into labels and labels into keys.

A leaderboard row is a :class:`RowKey`: the feature side (one extractor, or several
fused by ``+``) and the model, each a :class:`PluginLabel` (registry key, the
options that differ from the plugin's defaults, and marks such as
``random-init`` or ``tune=20``). Runner, grid, tracking and leaderboard all build
keys here and compare keys, never strings; the text form (``radiomics[roi=spine]
x coxnet[tune=20]``) is derived from the key, and parsed back only when a
results file is read, by the inverse of the same function.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from bench.errors import UsageError


class Resolved(Protocol):
    """What a label is made from: a resolved plugin (``bench.plugins.specs.PluginSpec``, which builds on labels)."""

    name: str
    config: Any

RANDOM_INIT = "random-init"  # the mark of an explicit random-initialisation control (--weights random)
TUNE_MARK = "tune"  # the mark of nested tuning: tune=<trials per outer training fold>
# The mark of robust-feature selection: min_icc=<threshold>, the features whose ICC under perturbation, computed on
# each fold's training patients, reaches it (``bench.protocol.robustness``); any per-study extractor takes it.
MIN_ICC = "min_icc"
FUSION = "+"
_LABEL = re.compile(r"^(?P<name>[^\[\]+]+)(?:\[(?P<body>[^\[\]]*)\])?$")


@dataclass(frozen=True)
class PluginLabel:
    """One plugin as rows tell it apart."""

    name: str  # the registry key (= file name = leaderboard label)
    options: tuple[tuple[str, str], ...] = ()  # non-default options as typed on the command line, in field order
    random_init: bool = False  # weights=random: a labelled control, never the real model
    tune: int = 0  # Optuna trials per outer training fold (0: untuned)
    min_icc: float | None = None  # extractors: only features this robust (ICC on the training patients)

    def __str__(self) -> str:
        parts = [f"{k}={v}" for k, v in self.options]
        if self.random_init:
            parts.append(RANDOM_INIT)
        if self.min_icc is not None:
            parts.append(f"{MIN_ICC}={self.min_icc:g}")
        if self.tune:
            parts.append(f"{TUNE_MARK}={self.tune}")
        return f"{self.name}[{','.join(parts)}]" if parts else self.name

    @classmethod
    def of(cls, spec: Resolved, tune: int = 0) -> PluginLabel:
        """The label of a resolved plugin (``weights`` is a mark when random, else not part of the label)."""
        from bench.plugins.options import non_default_options
        from bench.plugins.weights import RANDOM

        changed = non_default_options(spec.config)
        weights = changed.pop("weights", None)
        options = tuple((k, option_text(v)) for k, v in changed.items())
        return cls(spec.name, options, weights == RANDOM, tune, getattr(spec, "min_icc", None))

    @classmethod
    def parse(cls, text: str) -> PluginLabel:
        """The inverse of ``str``: ``coxnet[alpha=0.1,tune=20]`` -> PluginLabel."""
        match = _LABEL.match(text.strip())
        if match is None:
            raise UsageError(f"{text!r} is not a plugin label (NAME or NAME[option=value,...])")
        options: list[tuple[str, str]] = []
        random_init, tune, min_icc = False, 0, None
        for item in filter(None, (match["body"] or "").split(",")):
            key, sep, value = item.partition("=")
            if item == RANDOM_INIT:
                random_init = True
            elif key == TUNE_MARK and sep and value.isdigit():
                tune = int(value)
            elif key == MIN_ICC and sep:
                min_icc = min_icc_value(value, text)
            elif sep:
                options.append((key, value))
            else:
                raise UsageError(f"{text!r}: {item!r} is neither option=value nor a mark ({RANDOM_INIT}, tune=N)")
        return cls(match["name"].strip(), tuple(options), random_init, tune, min_icc)


def min_icc_value(text: str, where: str) -> float:
    """``min_icc``'s value: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise UsageError(f"{where!r}: {MIN_ICC}={text} is not an ICC threshold in (0, 1], e.g. {MIN_ICC}=0.9")
    return value


def features_text(parts: tuple[PluginLabel, ...]) -> str:
    return FUSION.join(str(p) for p in parts)


def parse_features(text: str) -> tuple[PluginLabel, ...]:
    return tuple(PluginLabel.parse(p) for p in text.split(FUSION))


@dataclass(frozen=True)
class RowKey:
    """A leaderboard row: the feature side and the model."""

    features: tuple[PluginLabel, ...]
    model: PluginLabel

    @property
    def features_label(self) -> str:
        return features_text(self.features)

    @property
    def model_label(self) -> str:
        return str(self.model)

    def __str__(self) -> str:
        return f"{self.features_label} x {self.model_label}"

    @classmethod
    def parse(cls, features: str, model: str) -> RowKey:
        return cls(parse_features(features), PluginLabel.parse(model))

    def sort_key(self) -> tuple[str, str]:
        return self.features_label, self.model_label


@dataclass(frozen=True)
class Baseline:
    """The entry every row is compared with: these features with the row's own model, or with a fixed model."""

    features: tuple[PluginLabel, ...] = (PluginLabel("clinical"),)
    model: PluginLabel | None = None
    default: bool = False  # chosen by default because every row has these features (the page says so)

    def key_for(self, row: RowKey) -> RowKey:
        return RowKey(self.features, self.model if self.model is not None else row.model)

    def flags(self) -> str:
        """The command-line flags that select this baseline (empty for the default)."""
        out = "" if self.features == Baseline().features else f" --baseline {features_text(self.features)}"
        return out + (f" --baseline-model {self.model}" if self.model is not None else "")

    def describe(self) -> str:
        model = "the same model" if self.model is None else f"`{self.model}`"
        return f"`{features_text(self.features)}` with {model}"

    def as_json(self) -> dict[str, Any]:
        """Its results-file form; ``default`` only when set, so the files of explicit baselines keep their bytes."""
        out: dict[str, Any] = {"extractor": features_text(self.features)}
        out["model"] = None if self.model is None else str(self.model)
        return {**out, "default": True} if self.default else out

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Baseline:
        model = body.get("model")
        return cls(
            parse_features(body["extractor"]), None if model is None else PluginLabel.parse(model),
            bool(body.get("default", False)),
        )  # fmt: skip


def option_text(value: Any) -> str:
    """An option value as it is typed on the command line (tuples with '/')."""
    if isinstance(value, tuple):
        return "/".join(str(v) for v in value)
    return str(value)
