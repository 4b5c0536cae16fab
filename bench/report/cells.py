"""How a number reads in a page's tables: three decimals, a 95 % CI in brackets, n/a where it is not defined.

One module for both tables of a page (``bench.report.leaderboard``, ``bench.report.calibration_table``), so a
metric reads the same wherever it is shown.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def fmt(x: float) -> str:
    return f"{x:.3f}" if x is not None and math.isfinite(x) else "n/a"


def signed(x: float) -> str:
    """A difference with its sign; one that rounds to 0 reads 0.000 (never -0.000 or +0.000)."""
    text = f"{x:+.3f}"
    return "0.000" if text[1:] == "0.000" else text


def value(m: dict) -> str:
    return fmt(m.get("mean", math.nan))


def with_ci(m: dict, form: Callable[[float], str] = fmt) -> str:
    """The headline mean and its 95 % CI, each written by ``form`` (``signed`` for a difference)."""
    mean = m.get("mean", math.nan)
    if not math.isfinite(mean):
        return "n/a"
    low, high = m.get("ci_low", math.nan), m.get("ci_high", math.nan)
    return f"{form(mean)} [{form(low)}, {form(high)}]" if math.isfinite(low) else form(mean)


def with_se(m: dict) -> str:
    mean, se = m.get("mean", math.nan), m.get("se", math.nan)
    if not math.isfinite(mean):
        return "n/a"
    return f"{fmt(mean)} +- {fmt(se)}" if math.isfinite(se) else fmt(mean)
