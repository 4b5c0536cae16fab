"""Real-data agreement with the scikit-survival user guide on GBSG2, through `bench run`.

The guide encodes GBSG2 with tumour grade as an ordinal (I < II < III) and the
other categoricals one-hot, splits with ``train_test_split(test_size=0.25,
random_state=20)``, and reports a test C-index of 0.6745 for its random survival
forest. The same split is imported as a frozen split and run through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import OrdinalEncoder
from sksurv.datasets import load_gbsg2
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.preprocessing import OneHotEncoder

from bench.testing import run_cli

GUIDE_RSF_C_INDEX = 0.6745  # scikit-survival user guide, "Using Random Survival Forests"


@pytest.fixture(scope="module")
def guide_split() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    X, y = load_gbsg2()
    grade = OrdinalEncoder(categories=[["I", "II", "III"]]).fit_transform(X[["tgrade"]].astype(object))
    Xt = OneHotEncoder().fit_transform(X.drop(columns="tgrade"))
    Xt["tgrade"] = grade[:, 0]
    rows = np.arange(len(X))
    train, test = train_test_split(rows, test_size=0.25, random_state=20)
    return Xt, y, train, test


@pytest.fixture
def guide_results(guide_split, tmp_path: Path, splits_dir: Path, tracking_uri: str) -> dict:
    _, _, train, test = guide_split
    csv = tmp_path / "guide.csv"
    ids = [f"gbsg2-{i:05d}" for i in range(len(train) + len(test))]
    labels = np.where(np.isin(np.arange(len(ids)), test), "test", "train")
    pd.DataFrame({"patient_id": ids, "split": labels}).to_csv(csv, index=False)
    imported = run_cli("splits", "import", "--dataset", "gbsg2", str(csv), "--name", "guide")
    assert imported.returncode == 0, imported.stderr
    out = tmp_path / "out.json"
    rsf = "rsf:n_estimators=1000,min_samples_split=10,min_samples_leaf=15,random_state=20,n_jobs=2"
    result = run_cli(
        "run",
        "--dataset",
        "gbsg2",
        "--split",
        "guide",
        "--extractor",
        "clinical",
        "--model",
        "coxph",
        rsf,
        "--bootstrap",
        "0",
        "--tracking-uri",
        tracking_uri,
        "--output-json",
        str(out),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    return {r["model"].split("[")[0]: r for r in json.loads(out.read_text())["results"]}


@pytest.mark.slow
def test_coxph_and_rsf_match_the_guide(guide_split, guide_results: dict) -> None:
    Xt, y, train, test = guide_split
    direct = CoxPHSurvivalAnalysis().fit(Xt.iloc[train], y[train]).score(Xt.iloc[test], y[test])
    (ours,) = guide_results["coxph"]["metrics"]["c_index"]["per_fold"]
    assert ours == pytest.approx(direct, abs=1e-6)

    (forest,) = guide_results["rsf"]["metrics"]["c_index"]["per_fold"]
    assert forest == pytest.approx(GUIDE_RSF_C_INDEX, abs=0.01)
