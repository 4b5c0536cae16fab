"""Degenerate predictions said plainly: a fold whose learner gives every test patient one risk is flagged.

Its C-index is 0.5 by construction; the row keeps it, flagged in the table with the folds and, where the learner
knows it, the reason, in the results file, on the page, in MLflow, and in the page made back from the store.
The learners: the fixture package's ``constant_risk`` and coxnet on the fixture's pure-noise features.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from bench.protocol.degenerate import constant_risk, degenerate_reason
from bench.report.degenerate import degenerate_text
from bench.testing import run_cli
from survival_models.coxnet import CoxNet, CoxNetConfig

COXNET = "coxnet chose alpha_max: no feature selected"
CONSTANT = "constant_risk predicts one risk for everyone, by design"
FOLDS = ["r0f0", "r0f1", "r0f2", "r0f3", "r0f4"]


def test_constant_within_a_tolerance_relative_to_the_risks() -> None:
    assert constant_risk(np.zeros(5))
    assert constant_risk(np.array([1e6, 1e6 + 1e-5]))  # float noise at that size
    assert not constant_risk(np.array([0.0, 1e-6, 0.0]))
    assert not constant_risk(np.array([3.0])), "one patient is no ranking to judge"


def test_coxnet_says_why_it_predicts_one_risk() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = np.array([(bool(e), t) for e, t in zip(rng.random(60) < 0.6, rng.exponential(10, 60))],
                 dtype=[("event", bool), ("time", float)])  # fmt: skip
    with pytest.warns(UserWarning, match="all coefficients are zero"):
        null = CoxNet(CoxNetConfig(alpha=1e6)).fit(X, y)
    assert degenerate_reason(null, null.predict(X)) == "coxnet chose alpha=1e+06: no feature selected"
    signal = CoxNet(CoxNetConfig(alpha=1e-3)).fit(X, y)
    assert degenerate_reason(signal, signal.predict(X)) is None, "a ranking is not flagged"
    assert signal.degenerate_reason() == ""


def test_folds_are_grouped_by_reason() -> None:
    assert degenerate_text({"r0f0": COXNET, "r0f2": COXNET, "r0f3": ""}) == f"r0f0, r0f2: {COXNET}; r0f3"


@pytest.fixture(scope="module")
def noise_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    folder = tmp_path_factory.mktemp("degenerate")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    result = run_cli(
        "run", "--dataset", "veterans", "--extractor", "example_noise", "--model", "coxph", "coxnet", "constant_risk",
        "--bootstrap", "20", "--quiet", "--tracking-uri", uri, "--results", "noise.json", cwd=folder,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return folder, uri, result.stdout


def test_the_results_file_and_the_page_flag_the_folds(noise_run: tuple[Path, str, str]) -> None:
    folder, _, stdout = noise_run
    rows = {row["model"]: row for row in json.loads((folder / "noise.json").read_text())["rows"]}
    assert rows["constant_risk"]["degenerate"] == dict.fromkeys(FOLDS, CONSTANT)
    assert rows["coxnet"]["degenerate"] == dict.fromkeys(FOLDS, COXNET), "pure noise: coxnet's null model"
    assert "degenerate" not in rows["coxph"], "rows without the flag carry no key"
    assert rows["constant_risk"]["metrics"]["c_index"]["mean"] == 0.5, "its C of 0.5 stays"
    page = run_cli("leaderboard", "--from", "noise.json", "--print", cwd=folder)
    assert page.returncode == 0, page.stderr
    for text in (page.stdout, stdout):  # the page and bench run's own table
        assert "| constant_risk (constant risk in 5 folds) |" in text
        assert "| coxnet (constant risk in 5 folds) |" in text
        assert f"- example_noise x coxnet: {', '.join(FOLDS)}: {COXNET}" in text
        assert f"- example_noise x constant_risk: {', '.join(FOLDS)}: {CONSTANT}" in text
        assert "| coxph |" in text, "coxph is not flagged"


def test_mlflow_and_the_page_from_the_store_flag_them(noise_run: tuple[Path, str, str]) -> None:
    folder, uri, _ = noise_run
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("veterans")
    runs = client.search_runs([experiment.experiment_id], "tags.`bench.kind` = 'combination'")
    tags = {r.data.tags["bench.model"]: r.data.tags.get("bench.degenerate") for r in runs}
    assert tags == {"coxph": None, "coxnet": f"{', '.join(FOLDS)}: {COXNET}",
                    "constant_risk": f"{', '.join(FOLDS)}: {CONSTANT}"}  # fmt: skip
    page = run_cli("leaderboard", "--dataset", "veterans", "--tracking-uri", uri, "--out", "store.md", cwd=folder)
    assert page.returncode == 0, page.stderr
    assert f"- example_noise x coxnet: {', '.join(FOLDS)}: {COXNET}" in (folder / "store.md").read_text()
