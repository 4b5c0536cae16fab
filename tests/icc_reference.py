"""The tests' independent ICC reference: pingouin's ``intraclass_corr``, "ICC(A,1)" ("ICC2" before pingouin 0.7)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pingouin


def pingouin_icc(one: np.ndarray) -> tuple[float, float, float]:
    """ICC(A,1) and its 95 % CI of one feature's ratings (targets, versions), every digit (not pingouin's two)."""
    n, k = one.shape
    frame = pd.DataFrame({"target": np.repeat(np.arange(n), k), "version": np.tile(np.arange(k), n),
                          "value": one.ravel()})  # fmt: skip
    saved = dict(pingouin.options)
    pingouin.options.update({"round": None, "round.column.CI95": None})
    try:
        table = pingouin.intraclass_corr(frame, targets="target", raters="version", ratings="value")
    finally:
        pingouin.options.clear()
        pingouin.options.update(saved)
    row = table.set_index("Type").loc["ICC(A,1)"]
    return float(row["ICC"]), float(row["CI95"][0]), float(row["CI95"][1])
