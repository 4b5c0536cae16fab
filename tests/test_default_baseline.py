"""A useful default baseline: when every row shares one extractor, rows are compared with it under coxph.

Without it, a page of one extractor and several learners compares each row with itself ("baseline" on every row).
Explicit options keep their meaning; the page's protocol table says when the baseline was chosen by default.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.plugins.labels import Baseline, PluginLabel
from bench.protocol.baseline import planned_baseline
from bench.protocol.runner import RunRequest
from bench.testing import run_cli

CLINICAL = (PluginLabel("clinical"),)
DEFAULT_NOTE = "(the default: every row has these features;"


def _request(extractors: tuple[str, ...], models: tuple[str, ...]) -> RunRequest:
    return RunRequest(dataset="gbsg2", extractors=extractors, models=models)


def test_one_extractor_is_compared_with_coxph_or_else_the_first_model() -> None:
    assert planned_baseline(_request(("clinical",), ("rsf", "coxph", "coxnet")), None, None) == Baseline(
        CLINICAL, PluginLabel("coxph"), default=True
    )
    assert planned_baseline(_request(("clinical",), ("rsf", "coxnet")), None, None) == Baseline(
        CLINICAL, PluginLabel("rsf"), default=True
    )
    noise = planned_baseline(_request(("example_noise",), ("coxnet", "coxph")), None, None)
    assert noise == Baseline((PluginLabel("example_noise"),), PluginLabel("coxph"), default=True)


def test_explicit_options_and_mixed_extractors_keep_their_meaning() -> None:
    explicit = planned_baseline(_request(("clinical",), ("coxph", "coxnet")), "clinical", "coxnet")
    assert explicit == Baseline(CLINICAL, PluginLabel("coxnet"))
    mixed = planned_baseline(_request(("clinical", "example_noise"), ("coxph", "coxnet")), None, None)
    assert mixed == Baseline(CLINICAL, None), "rows of different features: each compared with clinical, same model"
    assert "default" not in Baseline(CLINICAL, PluginLabel("coxph")).as_json(), "explicit baselines keep their bytes"
    assert Baseline.from_json(Baseline(CLINICAL, PluginLabel("coxph"), default=True).as_json()).default


def _compared_with_coxph(results_file: Path) -> None:
    body = json.loads(results_file.read_text())
    assert body["baseline"] == {"extractor": "clinical", "model": "coxph", "default": True}
    page = run_cli("leaderboard", "--from", str(results_file), "--print", cwd=results_file.parent)
    assert page.returncode == 0, page.stderr
    assert f"| baseline | `clinical` with `coxph` {DEFAULT_NOTE}" in page.stdout
    rows = [line for line in page.stdout.splitlines() if line.startswith("| ") and "`clinical-" in line]
    versus = {line.split("|")[3].strip(): line.split("|")[6].strip() for line in rows}
    assert versus.pop("coxph") == "baseline"
    assert sorted(versus) == ["coxnet", "rsf"] and all(v[0] in "+-0" for v in versus.values()), versus


def test_the_all_clinical_run_on_gbsg2_compares_every_learner_with_coxph(tmp_path: Path) -> None:
    result = run_cli(
        "run", "--dataset", "gbsg2", "--model", "coxph", "rsf", "coxnet", "--bootstrap", "20", "--quiet",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--results", "gbsg2.json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    _compared_with_coxph(tmp_path / "gbsg2.json")
    assert "--baseline" not in json.loads((tmp_path / "gbsg2.json").read_text())["source"]


def test_the_all_clinical_grid_on_gbsg2_compares_every_learner_with_coxph(tmp_path: Path) -> None:
    config = tmp_path / "gbsg2.yaml"
    config.write_text(
        "dataset: gbsg2\nbootstrap: 20\nmodels: [rsf, coxph, coxnet]\nrows: [clinical]\n"
        f"leaderboard: {tmp_path / 'gbsg2.md'}\ntracking_uri: sqlite:///{tmp_path / 'mlflow.db'}\n"
    )
    result = run_cli("grid", "--config", str(config), "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _compared_with_coxph(tmp_path / "gbsg2.json")
