"""What a results file keeps of each row's out-of-fold predictions: the first repeat's risk groups and outcomes.

Under repeated cross-validation every patient is a test patient once per repeat; the first repeat counts each
patient once. The page's Kaplan-Meier figure is drawn from these (``bench.report.figures``), the same figure a
row's MLflow run holds (``bench.report.row_figures``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

GROUP_CODES = "012"  # risk groups as written in a results file, one character per test patient


def first_repeat(predictions: pd.DataFrame) -> pd.DataFrame:
    """The out-of-fold predictions of the first repeat, in sample-id order: each test patient once."""
    first = predictions[predictions["repeat"] == predictions["repeat"].min()]
    return first.sort_values("sample_id", kind="stable").reset_index(drop=True)


def risk_group_text(predictions: pd.DataFrame) -> str:
    """The first repeat's risk groups, one character (0 low, 1 intermediate, 2 high) per patient in sample-id order."""
    return "".join(GROUP_CODES[int(g)] for g in first_repeat(predictions)["risk_group"])


def outcomes_of(predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Time and event of the first repeat's test patients, in the order of ``risk_group_text``."""
    first = first_repeat(predictions)
    return first["time"].to_numpy(float), first["event"].to_numpy(bool)
