"""Public clinical-only cohorts bundled in scikit-survival.

They check the learners and metrics on real data. Each declares its evaluation
horizons and tau once (in days, the unit of its time column), and its endpoint as scikit-survival's
loader documents it (gbsg2: recurrence-free survival; the others: death, i.e. overall survival).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from bench.data.cohort import Cohort, ColumnSpec, EvaluationPolicy


def _tabular(
    name: str,
    loader: Callable[[], tuple[pd.DataFrame, np.ndarray]],
    policy: EvaluationPolicy,
    ordinal: dict[str, tuple[str, ...]] | None = None,
    drop: tuple[str, ...] = (),
    description: str = "",
    source: str = "",
) -> Cohort:
    X, y = loader()
    event_field, time_field = y.dtype.names
    X = X.drop(columns=list(drop)).reset_index(drop=True)
    X.index = [f"{name}-{i:05d}" for i in range(len(X))]
    ordinal = ordinal or {}
    columns: dict[str, ColumnSpec] = {}
    for col in X.columns:
        if col in ordinal:
            columns[col] = ColumnSpec("ordinal", ordinal[col])
        elif isinstance(X[col].dtype, pd.CategoricalDtype):
            columns[col] = ColumnSpec("categorical", tuple(map(str, X[col].cat.categories)))
        else:
            columns[col] = ColumnSpec("numeric")
    for col, spec in columns.items():
        if spec.kind != "numeric":
            X[col] = X[col].astype(object).where(X[col].notna(), None)
            X[col] = X[col].map(lambda v: None if v is None else str(v))
    return Cohort(
        name=name,
        clinical=X,
        time=y[time_field],
        event=y[event_field],
        columns=columns,
        policy=policy,
        description=description,
        source=source,
    )


def gbsg2() -> Cohort:
    from sksurv.datasets import load_gbsg2

    return _tabular(
        "gbsg2",
        load_gbsg2,
        EvaluationPolicy(horizons=(365.0, 1095.0, 1825.0), tau=1825.0, endpoint="recurrence-free survival"),
        ordinal={"tgrade": ("I", "II", "III")},
        description="German Breast Cancer Study Group 2: 686 patients, recurrence-free survival",
        source="Schumacher et al., J Clin Oncol 12(10):2086 (1994); via scikit-survival",
    )


def whas500() -> Cohort:
    from sksurv.datasets import load_whas500

    return _tabular(
        "whas500",
        load_whas500,
        EvaluationPolicy(horizons=(365.0, 730.0, 1460.0), tau=1460.0, endpoint="overall survival"),
        description="Worcester Heart Attack Study: 500 patients, survival after myocardial infarction",
        source="Hosmer, Lemeshow and May, Applied Survival Analysis (2008); via scikit-survival",
    )


def veterans() -> Cohort:
    from sksurv.datasets import load_veterans_lung_cancer

    return _tabular(
        "veterans",
        load_veterans_lung_cancer,
        EvaluationPolicy(horizons=(30.0, 90.0, 180.0), tau=365.0, endpoint="overall survival"),
        description="Veterans' Administration lung cancer trial: 137 patients, overall survival",
        source="Kalbfleisch and Prentice (1980); via scikit-survival",
    )


def flchain() -> Cohort:
    from sksurv.datasets import load_flchain

    return _tabular(
        "flchain",
        load_flchain,
        EvaluationPolicy(horizons=(1825.0, 2920.0, 3650.0), tau=3650.0, endpoint="overall survival"),
        ordinal={"flc.grp": tuple(str(i) for i in range(1, 11))},
        # `chapter` is the cause of death: known only after the event, so it would leak the outcome.
        drop=("chapter",),
        description="Serum free light chain study: 7874 subjects, overall survival",
        source="Dispenzieri et al., Mayo Clin Proc 87(6):517 (2012); via scikit-survival",
    )
