"""Run identity includes the data: two cohorts that differ in one mask never share a run or a page."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from bench.cli import main
from bench.data.datasets import load_cohort
from bench.testing import subset_manifest

N = 24


def _with_masks(source: Path, folder: Path, changed: bool) -> Path:
    """``N`` studies of the tiny cohort, each with a supplied spine mask; ``changed``: one voxel more in MM0001's."""
    manifest = subset_manifest(source, N, folder, "twins")
    table = pd.read_csv(folder / "patients.csv", dtype=str, keep_default_na=False)
    masks = []
    for pid in table["patient_id"]:
        labels = sitk.ReadImage(str(source.parent / "images" / pid / "labels.nii.gz"))
        mask = (sitk.GetArrayFromImage(labels) == 11).astype(np.uint8)  # the marrow
        if changed and pid == table["patient_id"][0]:
            mask[tuple(np.argwhere(mask == 0)[0])] = 1
        image = sitk.GetImageFromArray(mask)
        image.CopyInformation(labels)
        path = folder / f"{pid}_marrow.nii.gz"
        sitk.WriteImage(image, str(path))
        masks.append(path.name)
    table["mask_marrow"] = masks
    table.to_csv(folder / "patients.csv", index=False)
    return manifest


@pytest.fixture
def twins(synthetic_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    source = synthetic_data / "synthetic_mm-tiny-seed0" / "manifest.yaml"
    monkeypatch.setenv("BENCH_SPLITS_DIR", str(tmp_path / "splits"))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return _with_masks(source, tmp_path / "a", False), _with_masks(source, tmp_path / "b", True)


def test_the_content_fingerprint_sees_one_voxel_of_one_mask(twins: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = (load_cohort(str(m)) for m in twins)
    assert a.fingerprint() == b.fingerprint(), "the same outcomes: one split serves both"
    assert a.content_fingerprint() != b.content_fingerprint()
    moved = tmp_path / "moved"
    shutil.copytree(twins[0].parent, moved)
    assert load_cohort(str(moved / "manifest.yaml")).content_fingerprint() == a.content_fingerprint(), (
        "paths are not content: a copied cohort keeps its fingerprint"
    )


def test_twin_cohorts_get_their_own_runs_and_the_store_page_refuses_to_mix_them(
    twins: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    a, b = twins
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["splits", "make", "--dataset", str(a), "--folds", "2"]) == 0
    for manifest in (a, b):
        code = main(["run", "--dataset", str(manifest), "--extractor", "clinical", "--model", "coxph",
                     "--bootstrap", "20", "--tracking-uri", uri, "--quiet"])  # fmt: skip
        assert code == 0
    capsys.readouterr()
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        names = [n for (n,) in db.execute("SELECT name FROM runs WHERE name != 'bench run'")]
    assert len(names) == 2 and names[0] != names[1], names

    fingerprints = [load_cohort(str(m)).content_fingerprint() for m in (a, b)]
    code = main(["leaderboard", "--dataset", "twins", "--tracking-uri", uri, "--out", str(tmp_path / "twins.md")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert all(f[:16] in err for f in fingerprints), err
    assert not (tmp_path / "twins.md").exists() and not (tmp_path / "twins.json").exists()

    code = main(["leaderboard", "--dataset", "twins", "--tracking-uri", uri, "--fingerprint", fingerprints[1][:12],
                 "--out", str(tmp_path / "twins.md")])  # fmt: skip
    assert code == 0
    page = (tmp_path / "twins.md").read_text()
    assert fingerprints[1][:16] in page and fingerprints[0][:16] not in page
    body = json.loads((tmp_path / "twins.json").read_text())
    assert body["protocol"]["fingerprint"] == fingerprints[1]
    assert len(body["rows"]) == 1, body["rows"]  # clinical x coxph of the second cohort, and not of the first
    assert [r["run_name"] for r in body["rows"]] == [n for n in names if n in page]
    assert main(["leaderboard", "--from", str(tmp_path / "twins.json"), "--check"]) == 0, "the page renders from it"
