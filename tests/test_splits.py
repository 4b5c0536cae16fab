"""Frozen splits: stratified, grouped by patient, and verified on every load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.data.datasets import load_cohort
from bench.errors import SplitError
from bench.protocol.splits import import_split, load_split, make_split, save_split, split_path
from bench.testing import make_cohort, run_cli

BUILT_IN = ["gbsg2", "whas500", "veterans", "flchain"]


@pytest.mark.parametrize("dataset", BUILT_IN)
def test_committed_splits_verify_against_their_cohorts(dataset: str) -> None:
    cohort = load_cohort(dataset)
    split = load_split(cohort, cohort.default_split)
    folds = split.folds(cohort)
    assert len(folds) == 5
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested) == list(range(cohort.n)), "every sample is tested exactly once"
    for fold in folds:
        assert not set(fold.train) & set(fold.test)


def test_kfold_is_grouped_by_patient_and_stratified(splits_dir: Path) -> None:
    cohort = make_cohort(n_patients=80, samples_per_patient=3)
    split = make_split(cohort, "cv4", folds=4, repeats=2, seed=3)
    folds = split.folds(cohort)
    assert len(folds) == 8
    event_rate = cohort.event[::3].mean()
    for fold in folds:
        train_patients = set(cohort.patient_ids[fold.train])
        test_patients = set(cohort.patient_ids[fold.test])
        assert not train_patients & test_patients, f"a patient straddles fold {fold.key}"
        assert len(fold.test) % 3 == 0
        fold_rate = cohort.event[fold.test].mean()
        assert abs(fold_rate - event_rate) < 0.08, "folds keep the event rate"
    first, second = folds[:4], folds[4:]
    assert any(set(a.test) != set(b.test) for a, b in zip(first, second)), "repeats reshuffle"


def test_make_is_deterministic_and_seed_sensitive() -> None:
    cohort = make_cohort()
    assert make_split(cohort, seed=1).sha256 == make_split(cohort, seed=1).sha256
    assert make_split(cohort, seed=1).sha256 != make_split(cohort, seed=2).sha256


def test_holdout_split(splits_dir: Path) -> None:
    cohort = make_cohort(n_patients=100)
    split = make_split(cohort, "holdout", holdout=0.25, seed=0)
    (fold,) = split.folds(cohort)
    assert len(fold.test) == 25 and len(fold.train) == 75


def test_round_trip_through_file(splits_dir: Path) -> None:
    cohort = make_cohort()
    split = make_split(cohort, "cv5")
    path = save_split(split)
    assert path == splits_dir / "toy" / "cv5.json"
    loaded = load_split(cohort, "cv5")
    assert loaded.sha256 == split.sha256
    with pytest.raises(SplitError, match="already exists"):
        save_split(split)


def _tamper(path: Path, edit) -> None:
    body = json.loads(path.read_text())
    edit(body)
    path.write_text(json.dumps(body))


def test_tampered_assignment_is_detected(splits_dir: Path) -> None:
    cohort = make_cohort()
    path = save_split(make_split(cohort, "cv5"))

    def move_patient(body):
        pid = next(iter(body["assignments"][0]))
        body["assignments"][0][pid] = (body["assignments"][0][pid] + 1) % 5

    _tamper(path, move_patient)
    with pytest.raises(SplitError, match="modified after it was made"):
        load_split(cohort, "cv5")


def test_patient_listed_twice_is_detected(splits_dir: Path) -> None:
    cohort = make_cohort()
    path = save_split(make_split(cohort, "cv5"))
    text = path.read_text()
    first = text.index('"P000"')
    line = text[first : text.index("\n", first)].rstrip(",")
    path.write_text(text.replace(line, f'{line},\n  "P000": 4', 1))
    with pytest.raises(SplitError, match="'P000' appears twice"):
        load_split(cohort, "cv5")


def test_split_of_another_cohort_is_rejected(splits_dir: Path) -> None:
    cohort = make_cohort(seed=0)
    save_split(make_split(cohort, "cv5"))
    changed = make_cohort(seed=1)  # same ids, other outcomes
    with pytest.raises(SplitError, match="different cohort"):
        load_split(changed, "cv5")


def test_split_file_naming_another_dataset_is_rejected(splits_dir: Path) -> None:
    cohort = make_cohort()
    path = save_split(make_split(cohort, "cv5"))
    other = make_cohort(name="other")
    target = split_path("other", "cv5")
    target.parent.mkdir(parents=True)
    target.write_text(path.read_text())
    with pytest.raises(SplitError, match="made for dataset 'toy'"):
        load_split(other, "cv5")


def test_missing_split_names_the_make_command(splits_dir: Path) -> None:
    with pytest.raises(SplitError, match="bench splits make --dataset toy --name nope"):
        load_split(make_cohort(), "nope")


def test_import_fold_csv(tmp_path: Path, splits_dir: Path) -> None:
    cohort = make_cohort(n_patients=30)
    patients = sorted(set(cohort.patient_ids))
    csv = tmp_path / "published.csv"
    pd.DataFrame({"patient_id": patients, "fold": [i % 3 + 1 for i in range(30)]}).to_csv(csv, index=False)
    split = import_split(cohort, csv, "published")
    assert split.scheme["kind"] == "kfold" and split.n_folds == 3
    folds = split.folds(cohort)
    assert [len(f.test) for f in folds] == [10, 10, 10]


def test_import_rejects_incomplete_csv(tmp_path: Path) -> None:
    cohort = make_cohort(n_patients=30)
    csv = tmp_path / "partial.csv"
    pd.DataFrame({"patient_id": ["P000", "P001"], "split": ["train", "test"]}).to_csv(csv, index=False)
    with pytest.raises(SplitError, match="28 patient"):
        import_split(cohort, csv, "partial")


def test_cli_reports_tampering_in_one_line(splits_dir: Path) -> None:
    path = splits_dir / "veterans" / "cv5.json"
    _tamper(
        path,
        lambda body: body["assignments"][0].update({"veterans-00000": 4 - body["assignments"][0]["veterans-00000"]}),
    )
    result = run_cli("splits", "verify", "--dataset", "veterans")
    assert result.returncode == 2  # a tampered split is bad input
    assert "modified after it was made" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
