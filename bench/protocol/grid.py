"""``bench grid --config FILE.yaml``: a whole benchmark protocol from one config file.

The config names the dataset and split, the extractors with their options, the
rows (an extractor or a ``+`` fusion of several, each with the models to fit),
tuning, bootstrap, the baseline and where the leaderboard goes. Every name and
option is checked before any work starts; unknown keys are errors, not ignored.

    dataset: synthetic_mm          # a registered dataset or a manifest path
    split: cv5                     # optional: the dataset's default
    seed: 0
    bootstrap: 1000
    weights: random                # optional: checkpoint path, or random (labelled [random-init])
    workers: 2                     # a local Dask cluster of 2 processes (extraction and fits)
    scheduler: tcp://head:8786     # optional: an existing Dask cluster instead (see docs/scaling.md)
    tune: {trials: 0, inner_folds: 3, storage: null}
    extractors:                    # short names for extractor specs, used in rows
      pet: medsam2_memory:modality=pet,roi=spine_dilated
    models: [coxnet, rsf, deepsurv]   # for rows that do not name their own
    rows:
      - clinical
      - pet+clinical
      - {features: pet, models: [deepsurv]}
      - {features: clinical, models: [coxph], published: {c_index: 0.8179, source: "Author (year), Table 2"}}
    baseline: {extractor: clinical, model: coxph}   # optional: see bench.protocol.baseline for the default
    leaderboard: leaderboards/synthetic_mm.md   # results go beside it as .json

A row of one model may declare the C-index a paper published for it (``published:``,
``bench.protocol.published``): the page shows it beside ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.data.imaging.perturb import parse_chain
from bench.errors import UsageError
from bench.plugins.labels import MIN_ICC
from bench.plugins.options import parse_spec
from bench.plugins.registry import EXTRACTORS
from bench.protocol.robustness import DEFAULT_PERTURBATION, DEFAULT_REPEATS
from feature_extractors.base import Extractor
from bench.plugins.labels import Baseline, RowKey, features_text
from bench.protocol.baseline import planned_baseline
from bench.protocol.published import parse_published, published_keys
from bench.protocol.runner import RowSink, RunOutcome, RunRequest, input_problems, resolve_plan, row_key, run

TOP_KEYS = {
    "dataset", "split", "seed", "bootstrap", "weights", "workers", "scheduler", "tune", "extractors", "models", "rows",
    "baseline", "leaderboard", "tracking_uri", "description", "robustness",
}  # fmt: skip
TUNE_KEYS = {"trials", "inner_folds", "storage"}
ROBUSTNESS_KEYS = {"perturb", "repeats", "extractors"}


@dataclass(frozen=True)
class RobustnessBlock:
    """A config's ``robustness:``: the perturbation of its ``min_icc`` rows, and the extractors whose robustness
    page the grid writes beside its leaderboard (default: every per-study extractor of its rows)."""

    perturb: str
    repeats: int
    extractors: tuple[str, ...]


@dataclass
class GridConfig:
    path: Path
    request: RunRequest
    baseline_extractor: str | None = None  # None: the rows' one extractor, else clinical (bench.protocol.baseline)
    baseline_model: str | None = None
    leaderboard: Path | None = None
    description: str = ""
    aliases: dict[str, str] = field(default_factory=dict)
    published: dict[int, dict[str, Any]] = field(default_factory=dict)  # row index -> a paper's values for it
    robustness: RobustnessBlock | None = None


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> GridConfig:
    """Read and check a grid config; ``overrides`` (from the command line) replace top-level keys."""
    try:
        body = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"no config file {path}; see configs/ for examples") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(body, dict):
        raise UsageError(f"{path} must be a YAML mapping of {', '.join(sorted(TOP_KEYS))}")
    body.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = sorted(set(body) - TOP_KEYS)
    if unknown:
        raise UsageError(f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(TOP_KEYS))}")
    for key in ("dataset", "rows"):
        if key not in body:
            raise UsageError(f"{path}: {key!r} is required")

    aliases = _mapping(body.get("extractors", {}), f"{path}: extractors")
    default_models = _names(body.get("models", ["coxph"]), f"{path}: models")
    rows = []
    published = {}
    for i, item in enumerate(_list(body["rows"], f"{path}: rows")):
        where = f"{path}: rows[{i}]"
        if isinstance(item, str):
            features, models = item, default_models
        elif isinstance(item, dict) and set(item) <= {"features", "models", "published"} and "features" in item:
            features, models = str(item["features"]), _names(item.get("models", default_models), where)
            if "published" in item:
                published[i] = parse_published(item["published"], tuple(models), where)
        else:
            raise UsageError(f"{where} must be a string or {{features: ..., models: [...]}}, got {item!r}")
        parts = [aliases.get(p.strip(), p.strip()) for p in features.split("+")]
        rows.append(("+".join(parts), tuple(models)))

    tune = _mapping(body.get("tune") or {}, f"{path}: tune")
    bad = sorted(set(tune) - TUNE_KEYS)
    if bad:
        raise UsageError(f"{path}: unknown tune key {bad[0]!r}; valid: {', '.join(sorted(TUNE_KEYS))}")
    robustness = _robustness(body, rows, aliases, path)
    baseline = _mapping(body.get("baseline") or {}, f"{path}: baseline")
    baseline_extractor = None if baseline.get("extractor") is None else str(baseline["extractor"])
    request = RunRequest(
        dataset=str(body["dataset"]),
        split=body.get("split"),
        bootstrap=_int(body.get("bootstrap", 1000), f"{path}: bootstrap"),
        seed=_int(body.get("seed", 0), f"{path}: seed"),
        tracking_uri=body.get("tracking_uri"),
        workers=_int(body.get("workers", 1), f"{path}: workers"),
        scheduler=None if body.get("scheduler") is None else str(body["scheduler"]),
        weights=None if body.get("weights") is None else str(body["weights"]),
        weights_required=(overrides or {}).get("weights") is not None,
        tune=_int(tune.get("trials", 0), f"{path}: tune.trials"),
        tune_inner_folds=_int(tune.get("inner_folds", 3), f"{path}: tune.inner_folds"),
        optuna_storage=tune.get("storage"),
        rows=tuple(rows),
        **({"robust_perturbation": robustness.perturb, "robust_repeats": robustness.repeats} if robustness else {}),
    )
    leaderboard = body.get("leaderboard")
    return GridConfig(
        Path(path),
        request,
        None if baseline_extractor is None else aliases.get(baseline_extractor, baseline_extractor),
        baseline.get("model"),
        Path(leaderboard) if leaderboard else None,
        str(body.get("description", "")),
        aliases,
        published,
        robustness,
    )


def _robustness(body: dict, rows: list[tuple[str, tuple[str, ...]]], aliases: dict,
                path: Path) -> RobustnessBlock | None:  # fmt: skip
    if body.get("robustness") is None:
        return None
    block = _mapping(body["robustness"], f"{path}: robustness")
    bad = sorted(set(block) - ROBUSTNESS_KEYS)
    if bad:
        raise UsageError(f"{path}: unknown robustness key {bad[0]!r}; valid: {', '.join(sorted(ROBUSTNESS_KEYS))}")
    perturb = str(block.get("perturb", DEFAULT_PERTURBATION))
    parse_chain(perturb)  # a bad chain fails now
    if "extractors" in block:
        extractors = [aliases.get(e, e) for e in _names(block["extractors"], f"{path}: robustness.extractors")]
    else:  # every extractor of the rows that reads studies one by one, without its min_icc mark
        specs = [parse_spec(p) for features, _ in rows for p in features.split("+")]
        texts = [name + "".join(f"{':' if i == 0 else ','}{k}={v}"
                                for i, (k, v) in enumerate((k, v) for k, v in options.items() if k != MIN_ICC))
                 for name, options in specs]  # fmt: skip
        extractors = [t for t in dict.fromkeys(texts)
                      if EXTRACTORS.load(parse_spec(t)[0]).extract_patient is not Extractor.extract_patient]  # fmt: skip
    return RobustnessBlock(perturb, _int(block.get("repeats", DEFAULT_REPEATS), f"{path}: robustness.repeats"),
                           tuple(extractors))  # fmt: skip


def check_plan(config: GridConfig) -> list[tuple[str, list[str]]]:
    """Resolve every row (plugins load, options validate) and the baseline row; nothing is computed."""
    plan = resolve_plan(config.request)
    keys = {row_key(features, model, config.request.tune) for features, models in plan for model in models}
    baseline = grid_baseline(config)
    if not any(key.features == baseline.features for key in keys):
        extractor = features_text(baseline.features)
        raise UsageError(f"{config.path}: baseline extractor {extractor!r} is not one of the rows")
    if baseline.model is not None and RowKey(baseline.features, baseline.model) not in keys:
        raise UsageError(f"{config.path}: no row {baseline.describe()} to compare with; add it to rows")
    return [(features.label, [m.label for m in models]) for features, models in plan]


def run_grid(config: GridConfig, sinks: Sequence[RowSink] = ()) -> RunOutcome:
    """Check the plan and the baseline row, then run every row, handing each to ``sinks`` (see ``runner.run``)."""
    check_plan(config)
    return run(config.request, baseline=grid_baseline(config), sinks=sinks)


def grid_published(config: GridConfig) -> dict[RowKey, dict[str, Any]]:
    """The config's published values under the keys of their rows (empty when it declares none)."""
    return published_keys(config.request, config.published)


def grid_baseline(config: GridConfig) -> Baseline:
    """The config's baseline, resolved into row keys as the rows are (same weights, same tuning), or its default."""
    return planned_baseline(config.request, config.baseline_extractor, config.baseline_model)


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be a mapping, got {value!r}")
    return {str(k): v for k, v in value.items()}


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list) or not value:
        raise UsageError(f"{where} must be a non-empty list, got {value!r}")
    return value


def _names(value: Any, where: str) -> list[str]:
    items = [value] if isinstance(value, str) else _list(value, where)
    return [str(v) for v in items]


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{where} must be an integer, got {value!r}")
    return value


def unrunnable_rows(path: Path, dataset: str, horizons=None, tau=None) -> list[str]:
    """The rows of the grid config at ``path`` that cannot run on ``dataset``, and why (nothing is computed)."""
    from bench.data.datasets import load_cohort

    request = load_config(path, {"dataset": dataset}).request
    request = RunRequest(**{**request.__dict__, "horizons": horizons, "tau": tau})
    cohort = load_cohort(dataset, horizons, tau)
    out = []
    for features, models in resolve_plan(request):
        problems = input_problems([(features, models)], cohort)
        if problems:
            out.append(f"grid {path}: row {features.label} cannot run: {problems[0]}")
    return out
