"""What the MLflow UI shows of a run: the experiment opens on the runs table, runs compare on short params."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.cli import main


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("view")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    code = main(["run", "--dataset", "gbsg2", "--extractor", "clinical", "--model", "coxph", "rsf:n_estimators=20",
                 "--bootstrap", "50", "--baseline-model", "coxph", "--tracking-uri", uri, "--quiet"])  # fmt: skip
    assert code == 0
    return uri


ROWS = ("coxph", "rsf[n_estimators=20]")  # the store fixture's rows, one child run each


def _children(store: str):
    """The store fixture's child runs (not the second invocation's): exactly one per row, or the test fails here."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("gbsg2")
    runs = client.search_runs([experiment.experiment_id], "tags.`bench.kind` = 'combination' and params.bootstrap = '50'")
    assert sorted(run.data.params["model"] for run in runs) == sorted(ROWS), [r.data.params for r in runs]
    return client, runs


def test_the_experiment_opens_on_the_training_runs_table_and_describes_the_protocol(store: str) -> None:
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(store).get_experiment_by_name("gbsg2")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    note = experiment.tags["mlflow.note.content"]
    assert "gbsg2" in note and "n = 686" in note and "5-fold CV" in note and "1825" in note, note


def test_child_runs_carry_short_features_and_model_params_and_a_note(store: str) -> None:
    _client, children = _children(store)
    by_model = {run.data.params["model"]: run for run in children}
    assert set(by_model) == {"coxph", "rsf[n_estimators=20]"}
    for label, run in by_model.items():
        assert run.data.params["features"] == "clinical"
        note = run.data.tags["mlflow.note.content"]
        shown = re.search(r"C-index (0\.\d{3}) \[95 % CI (0\.\d{3}), (0\.\d{3})\]", note)
        assert shown, note
        metrics = run.data.metrics
        for value, metric in zip(shown.groups(), ("c_index", "c_index_ci_low", "c_index_ci_high")):
            assert value == f"{metrics[metric]:.3f}", (label, metric)
        assert f"model {label}" in note and "B = 50" in note


def test_a_second_invocation_keeps_the_experiment_settings(store: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    assert main(["run", "--dataset", "gbsg2", "--bootstrap", "0", "--tracking-uri", store, "--quiet"]) == 0
    experiment = MlflowClient(store).get_experiment_by_name("gbsg2")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_rows_carry_their_paired_difference_to_the_declared_baseline(store: str) -> None:
    _client, children = _children(store)
    by_model = {run.data.params["model"]: run.data for run in children}
    rsf, coxph = by_model["rsf[n_estimators=20]"], by_model["coxph"]
    assert "c_index_vs_baseline" not in coxph.metrics, "the baseline row is not compared with itself"
    difference = rsf.metrics["c_index_vs_baseline"]
    assert difference == pytest.approx(rsf.metrics["c_index"] - coxph.metrics["c_index"], abs=1e-12)
    assert rsf.metrics["c_index_vs_baseline_ci_low"] <= difference <= rsf.metrics["c_index_vs_baseline_ci_high"]
    assert 0 < rsf.metrics["c_index_vs_baseline_p"] <= 1
    assert (
        f"{difference:+.3f}" in rsf.tags["mlflow.note.content"]
        and "clinical x coxph" in rsf.tags["mlflow.note.content"]
    )




def test_auc_over_time_is_a_metric_history_stepped_by_time(store: str) -> None:
    client, runs = _children(store)
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "td_auc")
        steps = [m.step for m in history]
        assert steps == sorted(steps) and steps[0] == 365 and steps[-1] == 1825, steps  # gbsg2's horizons, in days
        at = {m.step: m.value for m in history}
        for horizon in (365, 1095, 1825):  # the curve passes through the row's td-AUC at each horizon
            assert at[horizon] == pytest.approx(run.data.metrics[f"td_auc_{horizon}"], abs=1e-12)


def test_the_cohort_is_the_runs_evaluation_dataset(store: str) -> None:
    import json

    from bench.data.datasets import load_cohort

    _client, runs = _children(store)
    cohort = load_cohort("gbsg2")
    for run in runs:
        (entry,) = run.inputs.dataset_inputs
        dataset = entry.dataset
        assert dataset.name == "gbsg2" and dataset.digest == run.data.tags["bench.fingerprint"][:16]
        assert {t.key: t.value for t in entry.tags} == {"mlflow.data.context": "evaluation"}
        columns = {c["name"]: c["type"] for c in json.loads(dataset.schema)["mlflow_colspec"]}
        assert set(columns) == set(cohort.columns), "the clinical covariates, and nothing else"
        assert not {"time", "event", "cens", "status"} & set(columns), "outcomes are never features"
        assert json.loads(dataset.profile)["num_rows"] == 686


def test_each_row_logs_its_figures(store: str, tmp_path: Path) -> None:
    client, runs = _children(store)
    for run in runs:
        listed = {Path(f.path).name for f in client.list_artifacts(run.info.run_id, "figures")}
        assert listed == {"kaplan_meier.png", "auc.png", "calibration.png", "brier.png", "decision_curve.png"}, listed
        path = Path(client.download_artifacts(run.info.run_id, "figures/kaplan_meier.png", str(tmp_path)))
        assert path.read_bytes().startswith(b"\x89PNG")
