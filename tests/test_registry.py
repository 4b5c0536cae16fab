"""Entry-point registries and the CLI's handling of bad names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import UnknownNameError
from bench.plugins.registry import DATASETS, EXTRACTORS, MODELS
from bench.testing import run_cli


def _fake_distribution(root: Path, entry_points: str) -> dict[str, str]:
    """A distribution visible to importlib.metadata through PYTHONPATH, as pip would leave it."""
    info = root / "fakeplug-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    return {"PYTHONPATH": str(root)}


def test_built_ins_are_registered_through_entry_points() -> None:
    built_in = [e.name for e in MODELS.entries() if e.distribution == "prognosis-bench"]
    assert built_in == ["coxnet", "coxph", "deepsurv", "gbsa", "rsf"]
    assert "miscalibrated_cox" in MODELS.names(), "an outside package's learner too (tests/fixtures)"
    fixture = [e.name for e in MODELS.entries() if e.distribution == "bench-example-plugin"]
    assert fixture == ["constant_risk", "miscalibrated_cox"], "the fixture package's learners"
    assert {"gbsg2", "whas500", "veterans", "flchain"} <= set(DATASETS.names())
    assert {"clinical", "radiomics", "resnet3d", "medsam2_memory"} <= set(EXTRACTORS.names())
    assert MODELS.entry("rsf").distribution == "prognosis-bench"


def test_listing_imports_no_plugin() -> None:
    code = (
        "import sys; from bench.cli import main\n"
        "for what in ('extractors', 'models', 'datasets'): main(['list', what])\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in "
        "('survival_models', 'feature_extractors', 'sksurv', 'bench_example_plugin', 'mlflow')]\n"
        "print('LOADED', loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "rsf" in out and "gbsg2" in out
    assert "LOADED []" in out


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(UnknownNameError) as info:
        MODELS.load("cox")
    assert "unknown model 'cox'" in str(info.value)
    assert "valid models: constant_risk, coxnet, coxph, deepsurv, gbsa, miscalibrated_cox, rsf" in str(info.value)


@pytest.mark.parametrize(
    "args, listed",
    [
        (["--dataset", "nope"], "gbsg2"),
        (["--dataset", "veterans", "--extractor", "nope"], "clinical"),
        (["--dataset", "veterans", "--model", "nope"], "coxph"),
        (["--dataset", "veterans", "--model", "rsf:n_trees=3"], "n_estimators"),
    ],
)
def test_cli_bad_names_exit_2_without_traceback(args: list[str], listed: str, tracking_uri: str) -> None:
    result = run_cli("run", *args, "--tracking-uri", tracking_uri)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error:")
    assert listed in lines[0]


def test_duplicate_plugin_names_are_an_error(tmp_path: Path) -> None:
    env = _fake_distribution(tmp_path, "[prognosis_bench.models]\ncoxph = fakeplug_models:CoxPH\n")
    result = run_cli("list", "models", env=env)
    assert result.returncode == 2
    assert "duplicate model name 'coxph'" in result.stderr
    assert "fakeplug" in result.stderr and "prognosis-bench" in result.stderr


def test_broken_plugin_names_its_distribution_and_extra(tmp_path: Path, tracking_uri: str) -> None:
    env = _fake_distribution(
        tmp_path, "[prognosis_bench.extractors]\nbroken = fakeplug_missing.module:Extractor [imaging]\n"
    )
    listed = run_cli("list", "extractors", env=env)
    assert listed.returncode == 0 and "broken" in listed.stdout, "listing works without importing"
    result = run_cli("run", "--dataset", "veterans", "--extractor", "broken", "--tracking-uri", tracking_uri, env=env)
    assert result.returncode == 2  # a plugin that cannot be imported: fix the install, exit 2
    assert "distribution 'fakeplug'" in result.stderr
    assert "pip install 'fakeplug[imaging]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_outside_plugin_package_is_listed_and_runs(tmp_path: Path, tracking_uri: str) -> None:
    """tests/fixtures/bench_example_plugin is installed by `make install` as a separate distribution."""
    listed = run_cli("list", "extractors")
    assert "example_noise" in listed.stdout, "install it with: pip install -e tests/fixtures/bench_example_plugin"
    assert "bench-example-plugin" in listed.stdout
    out = tmp_path / "out.json"
    result = run_cli(
        "run",
        "--dataset",
        "veterans",
        "--extractor",
        "example_noise:n_features=3",
        "--model",
        "coxph",
        "--bootstrap",
        "50",
        "--tracking-uri",
        tracking_uri,
        "--output-json",
        str(out),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(out.read_text())["results"]
    assert entry["extractor"] == "example_noise[n_features=3]"
    c = entry["metrics"]["c_index"]
    assert 0.3 < c["mean"] < 0.7, "noise features carry no signal"
    assert c["ci_low"] < c["mean"] < c["ci_high"]
