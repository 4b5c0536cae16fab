"""Published values a grid config declares beside its rows: what a paper reported for the same row.

A row of a grid config that names one model may carry ``published: {c_index: 0.8179, source: "..."}``: the
C-index (Harrell's, on the same test set) that a paper reported for that model on that data. The values travel
with the row into the results file, and the page shows each beside ours (``bench.report.published``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bench.errors import UsageError

if TYPE_CHECKING:
    from bench.plugins.labels import RowKey
    from bench.protocol.runner import RunRequest

PUBLISHED_KEYS = {"c_index", "source"}


def parse_published(value: Any, models: tuple[str, ...], where: str) -> dict[str, Any]:
    """A row's ``published:`` mapping, checked: a C-index in (0, 1] and optional source text, for one model."""
    if not isinstance(value, dict) or "c_index" not in value or set(value) - PUBLISHED_KEYS:
        raise UsageError(f"{where}: published must be a mapping like {{c_index: 0.8179, source: 'Author (year)'}}, "
                         f"got {value!r}")  # fmt: skip
    if len(models) != 1:
        raise UsageError(f"{where}: published values belong to one model, but the row names {len(models)}; "
                         "give each model its own row")  # fmt: skip
    c = value["c_index"]
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not (math.isfinite(c) and 0 < c <= 1):
        raise UsageError(f"{where}: published c_index must be a number in (0, 1], got {c!r}")
    return {"c_index": float(c), **({"source": str(value["source"])} if value.get("source") else {})}


def published_keys(request: RunRequest, published: dict[int, dict[str, Any]]) -> dict[RowKey, dict[str, Any]]:
    """Each declared value under the key of its row (config row index -> values), resolved as the runner does."""
    from bench.protocol.runner import resolve_plan, row_key

    out = {}
    for index, values in sorted(published.items()):
        row = request.planned_rows()[index]
        plan = resolve_plan(replace(request, rows=(row,)))
        if len(plan) != 1:  # 'all' expands to every extractor: no one row to hold the value
            raise UsageError(f"rows[{index}]: published values belong to one row; name its extractor, not {row[0]!r}")
        ((features, (model,)),) = plan
        out[row_key(features, model, request.tune)] = values
    return out
