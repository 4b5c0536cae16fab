"""The baseline a run or grid compares every row with: the options as given, or a useful default.

Explicit options always win. When every row has the same features and no baseline model is named,
comparing each row with itself says nothing; the default is then those features with ``coxph``
(the field's reference learner) or, where the plan has no ``coxph`` row, its first model. Such a
baseline is marked ``default`` so the page's protocol table says how it was chosen.
"""

from __future__ import annotations

from bench.plugins.labels import Baseline, RowKey
from bench.plugins.specs import resolve_baseline, resolve_models
from bench.protocol.runner import RunRequest, resolve_plan, row_key

DEFAULT_EXTRACTOR = "clinical"  # the baseline features when the rows differ in theirs and none is named
DEFAULT_MODEL = "coxph"  # the baseline learner when every row shares one extractor and none is named


def planned_baseline(request: RunRequest, extractor: str | None, model: str | None) -> Baseline:
    """The baseline of ``request``'s rows from ``--baseline``/``--baseline-model`` (or a grid's ``baseline:``).

    ``extractor`` None: the rows' one feature set when they share one, else ``clinical``. ``model`` None:
    the row's own model, unless every row has the baseline's features (see the module docstring).
    """
    keys = [row_key(f, m, request.tune) for f, models in resolve_plan(request) for m in models]
    shared = {key.features for key in keys}
    if extractor is None and len(shared) == 1:
        features = next(iter(shared))
        chosen = None if model is None else resolve_models([model])[0].key(request.tune)
        baseline = Baseline(features, chosen)
    else:
        baseline = resolve_baseline(extractor or DEFAULT_EXTRACTOR, model, request.weights, request.tune)
    if baseline.model is not None or shared != {baseline.features}:
        return baseline
    return Baseline(baseline.features, _default_model(keys).model, default=True)


def _default_model(keys: list[RowKey]) -> RowKey:
    """The plan's first ``coxph`` row, else its first row."""
    return next((key for key in keys if key.model.name == DEFAULT_MODEL), keys[0])
