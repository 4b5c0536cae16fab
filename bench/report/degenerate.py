"""How a row whose learner gave every test patient one risk reads: flagged in the table, its folds and reason below.

The flag is the protocol's (``bench.protocol.degenerate``); the fold's C-index of 0.5 stays in the row's mean,
and the note under the table says so, so a reader never takes it for what the features are worth.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.report.results import Row

HEADER = ("Degenerate predictions (the learner gave every test patient the same risk in these folds: their "
          "C-index is 0.5 by construction and stays in the row's mean):")  # fmt: skip


def degenerate_flag(row: Row) -> str:
    """What the table's model cell adds for a flagged row ("" for the others)."""
    if not row.degenerate:
        return ""
    n = len(row.degenerate)
    return f" (constant risk in {n} fold{'' if n == 1 else 's'})"


def degenerate_text(folds: dict[str, str]) -> str:
    """``r0f1, r0f3: coxnet chose alpha_max: no feature selected; r0f4``: the folds, grouped by their reason."""
    by_reason: dict[str, list[str]] = {}
    for fold, reason in folds.items():
        by_reason.setdefault(reason, []).append(fold)
    return "; ".join(", ".join(keys) + (f": {reason}" if reason else "") for reason, keys in by_reason.items())


def degenerate_lines(rows: Sequence[Row]) -> list[str]:
    """The section under the table: its header and one line per flagged row, in the order given; none without."""
    flagged = [f"- {row.key}: {degenerate_text(row.degenerate)}" for row in rows if row.degenerate]
    return ["", HEADER, "", *flagged] if flagged else []
