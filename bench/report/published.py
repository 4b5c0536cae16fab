"""The page's table of published values: each row a grid config gave a paper's C-index, beside ours.

The interval of "ours - published" is our bootstrap 95 % CI of the C-index shifted by the published value (the
published number has no interval of its own here): it contains 0 exactly when our CI contains the published value.
"""

from __future__ import annotations

import math

from bench.report.cells import signed, with_ci
from bench.report.results import Results, Row


def published_lines(results: Results, order: list[Row]) -> list[str]:
    """The section for the rows of ``order`` that carry a published C-index; nothing when none does."""
    rows = [row for row in order if row.published]
    if not rows:
        return []
    lines = [
        "",
        "## Published values",
        "",
        "Each row beside the C-index (Harrell's) its source published on the same test set; `ours - published` "
        "carries our bootstrap 95 % CI shifted by the published value, so it contains 0 when our CI contains the "
        "published value.",
        "",
        "| extractor | model | C-index [95 % CI] | published C-index | ours - published [95 % CI] | inside our CI | "
        "source |",
        "|---|---|---|---:|---|---|---|",
    ]
    for row in rows:
        c = row.metrics.get("c_index", {})
        published = float(row.published["c_index"])
        shifted = {field: c.get(field, math.nan) - published for field in ("mean", "ci_low", "ci_high")}
        low, high = c.get("ci_low", math.nan), c.get("ci_high", math.nan)
        inside = ("yes" if low <= published <= high else "no") if math.isfinite(low) and math.isfinite(high) else "-"
        cells = [row.key.features_label, row.key.model_label, with_ci(c), f"{published:.4f}",
                 with_ci(shifted, signed), inside, row.published.get("source", "-")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines
