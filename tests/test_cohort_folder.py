"""A cohort folder carries its splits (``splits:`` in the manifest), and every command takes the manifest's path
where it takes a dataset name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from sksurv.datasets import load_veterans_lung_cancer

from bench.testing import run_cli


def _tabular_cohort(folder: Path, splits: bool = True) -> Path:
    """The veterans' lung cancer trial (scikit-survival's copy) as a tabular manifest without images."""
    X, y = load_veterans_lung_cancer()
    table = X[["Age_in_years", "Karnofsky_score", "Celltype"]].rename(
        columns={"Age_in_years": "age", "Karnofsky_score": "karnofsky", "Celltype": "celltype"}
    )
    table.insert(0, "patient_id", [f"v{i:03d}" for i in range(len(table))])
    table["time"], table["event"] = y["Survival_in_days"], y["Status"].astype(int)
    folder.mkdir(parents=True)
    table.to_csv(folder / "veterans.csv", index=False)
    (folder / "manifest.yaml").write_text(
        "format: 1\nname: vet_folder\ntable: veterans.csv\nhorizons: [30, 90, 180]\ntau: 180\n"
        + ("splits: splits/\n" if splits else "")
        + "columns:\n  age: numeric\n  karnofsky: numeric\n  celltype: categorical\n"
    )
    return folder / "manifest.yaml"


def test_a_moved_cohort_folder_finds_its_splits_from_anywhere(tmp_path: Path) -> None:
    manifest = _tabular_cohort(tmp_path / "cohort")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    made = run_cli("splits", "make", "--dataset", str(manifest), "--name", "cv5", cwd=elsewhere)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "cohort" / "splits" / "vet_folder" / "cv5.json").is_file()
    assert not (elsewhere / "splits").exists(), "nothing written where bench ran"
    shutil.move(tmp_path / "cohort", tmp_path / "moved")
    moved = tmp_path / "moved" / "manifest.yaml"
    third = tmp_path / "third"
    third.mkdir()
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    ran = run_cli("run", "--dataset", str(moved), "--model", "coxph", "--bootstrap", "10", "--tracking-uri", store,
                  "--quiet", cwd=third)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "split cv5" in ran.stdout
    verified = run_cli("splits", "verify", "--dataset", str(moved), cwd=third)
    assert verified.returncode == 0 and str(tmp_path / "moved" / "splits" / "vet_folder" / "cv5.json") in verified.stdout

    # the store's runs, found by the manifest's path as `bench run` was given it
    board = third / "board.md"
    shown = run_cli("leaderboard", "--dataset", str(moved), "--tracking-uri", store, "--out", str(board), cwd=third)
    assert shown.returncode == 0, shown.stderr
    assert "| 1 | clinical | coxph |" in board.read_text()


def test_without_splits_the_lookup_stays_the_working_directorys(tmp_path: Path) -> None:
    manifest = _tabular_cohort(tmp_path / "cohort", splits=False)
    made = run_cli("splits", "make", "--dataset", str(manifest), "--name", "cv5", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "splits" / "vet_folder" / "cv5.json").is_file()


def test_a_manifest_without_horizons_runs_on_horizons_derived_and_frozen_in_its_split(tmp_path: Path) -> None:
    manifest = _tabular_cohort(tmp_path / "cohort")
    manifest.write_text(manifest.read_text().replace("horizons: [30, 90, 180]\ntau: 180\n", ""))
    X, y = load_veterans_lung_cancer()
    times = y["Survival_in_days"][y["Status"]]
    expected = [float(round(float(q))) for q in np.quantile(times, [0.25, 0.5, 0.75])]  # numpy, not our code
    made = run_cli("splits", "make", "--dataset", str(manifest), "--name", "cv5", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    frozen = json.loads((tmp_path / "cohort" / "splits" / "vet_folder" / "cv5.json").read_text())["policy"]
    assert frozen["horizons"] == expected and frozen["tau"] == expected[-1]
    results = tmp_path / "results.json"
    ran = run_cli("run", "--dataset", str(manifest), "--model", "coxph", "--bootstrap", "10", "--tracking-uri",
                  f"sqlite:///{tmp_path / 'runs.db'}", "--results", str(results), "--quiet", cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    policy = json.loads(results.read_text())["protocol"]["policy"]
    assert policy["horizons"] == expected and policy["derived"] is True
    shown = run_cli("leaderboard", "--from", str(results), "--out", str(tmp_path / "b.md"), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    horizons = next(line for line in (tmp_path / "b.md").read_text().splitlines() if line.startswith("| horizons |"))
    assert "derived: the 25, 50 and 75 % quantiles of the cohort's event times" in horizons
    assert ", ".join(f"{h:g}" for h in expected) in horizons
