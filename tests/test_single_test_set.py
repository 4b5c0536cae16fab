"""A one-fold split (a holdout) has no SE across folds: the page and the terminal table say so instead of a bare number."""

from __future__ import annotations

from pathlib import Path

from bench.report.leaderboard import SINGLE_TEST_SET, single_test_set
from bench.testing import run_cli


def test_a_holdout_page_and_table_say_single_test_set(tmp_path: Path) -> None:
    made = run_cli("splits", "make", "--dataset", "gbsg2", "--name", "holdout", "--holdout", "0.3", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    result = run_cli(
        "run", "--dataset", "gbsg2", "--split", "holdout", "--model", "coxph", "--bootstrap", "50", "--quiet",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--results", "holdout.json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (row,) = [line for line in result.stdout.splitlines() if "`clinical-coxph-" in line]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    c_index = cells[3].split(" [")[0]
    assert cells[4] == f"{c_index} ({SINGLE_TEST_SET})", "the SE cell is never a bare number"
    page = run_cli("leaderboard", "--from", "holdout.json", "--print", cwd=tmp_path)
    assert page.returncode == 0, page.stderr
    assert f"| headline | the test set's C-index; {SINGLE_TEST_SET} |" in page.stdout
    assert f"{c_index} ({SINGLE_TEST_SET})" in page.stdout
    assert "standard error across folds" not in page.stdout


def test_which_schemes_test_on_one_fold() -> None:
    assert single_test_set({"type": "holdout", "test_fraction": 0.3, "repeats": 1, "seed": 0})
    assert single_test_set({"type": "imported", "kind": "holdout", "source": "split.csv"})
    assert not single_test_set({"type": "holdout", "test_fraction": 0.3, "repeats": 3, "seed": 0}), "3 folds: an SE"
    assert not single_test_set({"type": "kfold", "folds": 5, "repeats": 1, "seed": 0})
    assert not single_test_set({"type": "imported", "kind": "kfold", "folds": 5, "source": "split.csv"})
    assert single_test_set({"type": "group", "by": "site", "kind": "holdout", "test_groups": ["B", "C"]})
    assert not single_test_set({"type": "group", "by": "site", "kind": "leave-one-out", "test_groups": ["A", "B"]})
