"""`bench run` end to end: MLflow runs, JSON output, and the generated leaderboard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO, run_cli

MODELS = ["coxph", "coxnet"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def tracking_uri(store: Path) -> str:
    return f"sqlite:///{store / 'mlflow.db'}"


@pytest.fixture(scope="module")
def veterans_run(store: Path, tracking_uri: str) -> dict:
    out = store / "out.json"
    result = run_cli(
        "run",
        "--dataset",
        "veterans",
        "--extractor",
        "clinical",
        "example_noise",
        "--model",
        *MODELS,
        "--bootstrap",
        "200",
        "--tracking-uri",
        tracking_uri,
        "--output-json",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    return {"stdout": result.stdout, "stderr": result.stderr, "json": json.loads(out.read_text())}


def test_one_child_run_per_combination_with_metrics(veterans_run: dict, tracking_uri: str) -> None:
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("veterans")
    runs = client.search_runs([experiment.experiment_id], "tags.`bench.kind` = 'combination'")
    combos = sorted((r.data.tags["bench.extractor"], r.data.tags["bench.model"]) for r in runs)
    assert combos == sorted((e, m) for e in ["clinical", "example_noise"] for m in MODELS)
    parent = veterans_run["json"]["parent_run_id"]
    by_id = {r["run_id"]: r for r in veterans_run["json"]["results"]}
    for run in runs:
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.params["split_sha256"] == veterans_run["json"]["split_sha256"]
        assert run.data.params["policy.tau"] == "365"
        expected = by_id[run.info.run_id]["metrics"]["c_index"]
        assert run.data.metrics["c_index"] == pytest.approx(expected["mean"])
        assert run.data.metrics["c_index_ci_low"] == pytest.approx(expected["ci_low"])
        folds = client.get_metric_history(run.info.run_id, "c_index_fold")
        assert [m.value for m in sorted(folds, key=lambda m: m.step)] == pytest.approx(expected["per_fold"])
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"predictions.csv", "metrics.json", "bootstrap_replicates.csv"} <= artifacts


def test_json_and_terminal_table(veterans_run: dict) -> None:
    results = veterans_run["json"]["results"]
    assert len(results) == 4
    for r in results:
        c = r["metrics"]["c_index"]
        assert len(c["per_fold"]) == 5
        assert c["ci_low"] <= c["mean"] <= c["ci_high"]
        assert set(r["metrics"]) >= {"uno_c", "td_auc_30", "td_auc_90", "td_auc_180", "ibs"}
    assert "| rank | extractor | model |" in veterans_run["stdout"]
    assert "evaluate" in veterans_run["stderr"], "progress bar on the terminal"


def test_leaderboard_is_reproducible_and_checkable(veterans_run: dict, tracking_uri: str, tmp_path: Path) -> None:
    board = tmp_path / "veterans.md"
    first = run_cli("leaderboard", "--dataset", "veterans", "--tracking-uri", tracking_uri, "--out", str(board))
    assert first.returncode == 0, first.stderr
    text = board.read_text()
    assert "| split | `cv5`" in text and "tau | 365 days" in text and "B = 200" in text
    ranked = [line for line in text.splitlines() if line.startswith("| 1 |")]
    assert ranked and "| clinical |" in ranked[0], "clinical covariates beat noise"

    check = run_cli(
        "leaderboard", "--dataset", "veterans", "--tracking-uri", tracking_uri, "--out", str(board), "--check"
    )
    assert check.returncode == 0, check.stdout + check.stderr

    # Same seed, same results, fresh store: the same bytes.
    second_store = f"sqlite:///{tmp_path / 'second.db'}"
    rerun = run_cli(
        "run",
        "--dataset",
        "veterans",
        "--extractor",
        "clinical",
        "example_noise",
        "--model",
        *MODELS,
        "--bootstrap",
        "200",
        "--tracking-uri",
        second_store,
        "--quiet",
    )
    assert rerun.returncode == 0, rerun.stderr
    again = run_cli(
        "leaderboard", "--dataset", "veterans", "--tracking-uri", second_store, "--out", str(board), "--check"
    )
    assert again.returncode == 0, again.stdout

    board.write_text(text.replace("| 1 |", "| 0 |", 1))
    stale = run_cli(
        "leaderboard", "--dataset", "veterans", "--tracking-uri", tracking_uri, "--out", str(board), "--check"
    )
    assert stale.returncode == 1
    assert "-| 0 |" in stale.stdout and "+| 1 |" in stale.stdout


@pytest.mark.slow
def test_committed_gbsg2_leaderboard_is_what_make_demo_generates(tmp_path: Path) -> None:
    """Runs `make gbsg2`'s commands into a fresh store and checks leaderboards/gbsg2.md against them."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    baseline = ["--baseline", "clinical", "--baseline-model", "coxph"]
    demo = run_cli(
        "run", "--dataset", "gbsg2", "--extractor", "clinical", "--model", "all", "--bootstrap", "1000",
        "--seed", "0", "--tracking-uri", store, "--quiet", *baseline,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    check = run_cli(
        "leaderboard", "--dataset", "gbsg2", "--tracking-uri", store,
        "--out", str(REPO / "leaderboards" / "gbsg2.md"), "--check", *baseline,
    )  # fmt: skip
    assert check.returncode == 0, "leaderboards/gbsg2.md is stale; run `make gbsg2`:\n" + check.stdout


def test_paired_difference_of_identical_predictions_is_exactly_zero(tmp_path: Path) -> None:
    """coxph with a higher iteration cap converges to the same fit: same predictions, same replicates."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_cli(
        "run", "--dataset", "veterans", "--extractor", "clinical", "example_noise",
        "--model", "coxph", "coxph:n_iter=101", "--bootstrap", "300", "--tracking-uri", store, "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    board = tmp_path / "veterans.md"
    rendered = run_cli(
        "leaderboard", "--dataset", "veterans", "--tracking-uri", store, "--out", str(board),
        "--baseline", "clinical", "--baseline-model", "coxph",
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    rows = {tuple(c.strip() for c in line.split("|")[2:4]): line.split("|") for line in board.read_text().splitlines()
            if line.startswith("| ") and "coxph" in line}  # fmt: skip
    identical = rows[("clinical", "coxph[n_iter=101]")]
    assert identical[6].strip() == "0.000 [0.000, 0.000]" and identical[7].strip() == "1.000"
    assert rows[("clinical", "coxph")][6].strip() == "baseline"
    noise = rows[("example_noise", "coxph")]
    assert noise[6].strip().startswith("-") and float(noise[7]) < 0.05, "noise is significantly worse than clinical"
