"""Cohorts with only CT or only PET (real images from tests/data/ibsi_sts): each image extractor runs on the
modality the cohort has, and asking for the missing one is one clear error before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from bench.data.datasets import load_cohort
from bench.testing import count_extractions, run_cli
from feature_extractors.base import Extractor

from data_paths import STS_NIFTI as STS
from data_paths import STS_WITH_CT as WITH_CT

PET_ONLY = ("STS_001", "STS_002", "STS_003", "STS_004")  # patients without a CT
SMOKE = {  # quick, offline options of each image extractor (weights: an explicit random-init control)
    "radiomics": "feature_classes=firstorder/shape",
    "resnet3d": "weights=random,voxel_mm=4,crop_mm=64/64/64",
    "medsam2_memory": "weights=random,max_slices=2",
}


def _manifest(folder: Path, patients: tuple[str, ...], modality: str) -> Path:
    """A cohort of one modality, with the tumour mask of that modality's grid and invented outcomes."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix = modality.upper()
    lines = [f"patient_id,{modality},mask_tumour,time,event,age"]
    for i, pid in enumerate(patients):
        image, mask = STS / pid / f"{prefix}_image.nii.gz", STS / pid / f"{prefix}_mask.nii.gz"
        lines.append(f"{pid},{image},{mask},{100 + 37 * i},{i % 2},{50 + i}")
    (folder / "patients.csv").write_text("\n".join(lines) + "\n")
    body = {"name": f"sts_{modality}_only", "table": "patients.csv", "horizons": [150, 250], "tau": 300,
            "columns": {"age": "numeric"}}  # fmt: skip
    (folder / "manifest.yaml").write_text(yaml.safe_dump(body))
    return folder / "manifest.yaml"


@pytest.fixture(scope="module")
def ct_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _manifest(tmp_path_factory.mktemp("ct"), WITH_CT, "ct")


@pytest.fixture(scope="module")
def pet_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _manifest(tmp_path_factory.mktemp("pet"), PET_ONLY[:4], "pet")


def _extractor(name: str, options: str) -> Extractor:
    from bench.plugins.registry import EXTRACTORS
    from bench.plugins.specs import resolve

    spec = resolve(EXTRACTORS, [f"{name}:{options}"])[0]
    return spec.cls(spec.config)


@pytest.mark.parametrize("modality", ["ct", "pet"])
@pytest.mark.parametrize("name", sorted(SMOKE))
def test_every_image_extractor_runs_on_the_modality_the_cohort_has(
    name: str, modality: str, ct_only: Path, pet_only: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    cohort = load_cohort(str(ct_only if modality == "ct" else pet_only))
    assert {s.modalities for s in cohort.inputs.values()} == {(modality,)}
    extractor = _extractor(name, f"modality={modality},roi=tumour,{SMOKE[name]}")
    assert all(extractor.missing_inputs(s) == "" for s in cohort.inputs.values())
    block = extractor.extract(cohort, progress=False)
    values = block.sequence if block.sequence is not None else block.frame.to_numpy()
    assert len(block.frame) == cohort.n and np.isfinite(values).all()


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_asking_for_the_missing_modality_is_one_error_before_any_work(
    name: str, ct_only: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.cli import main
    from bench.plugins.registry import EXTRACTORS

    calls = count_extractions(monkeypatch, EXTRACTORS.load(name))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BENCH_SPLITS_DIR", str(tmp_path / "splits"))
    assert main(["splits", "make", "--dataset", str(ct_only), "--folds", "2"]) == 0
    code = main(["run", "--dataset", str(ct_only), "--extractor", f"{name}:modality=pet,roi=tumour,{SMOKE[name]}",
                 "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--quiet"])  # fmt: skip
    assert code == 2 and calls == []
    assert not (tmp_path / "m.db").exists(), "nothing was tracked"


def test_the_missing_modality_message_names_what_to_do(ct_only: Path, tmp_path: Path) -> None:
    made = run_cli("splits", "make", "--dataset", str(ct_only), "--folds", "2", env={"BENCH_SPLITS_DIR": str(tmp_path)})
    assert made.returncode == 0, made.stderr
    result = run_cli("run", "--dataset", str(ct_only), "--extractor", "radiomics:roi=tumour", "--tracking-uri",
                     f"sqlite:///{tmp_path / 'm.db'}", env={"BENCH_SPLITS_DIR": str(tmp_path)})  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "radiomics[roi=tumour]" in lines[0] and "4 of 4 studies" in lines[0]
    assert "no PET image" in lines[0] and "use modality=ct" in lines[0]
    # A computed ROI needs a CT: on a PET-only cohort it is refused up front too.


def test_a_computed_roi_on_a_pet_only_cohort_is_refused_up_front(pet_only: Path, tmp_path: Path) -> None:
    env = {"BENCH_SPLITS_DIR": str(tmp_path)}
    assert run_cli("splits", "make", "--dataset", str(pet_only), "--folds", "2", env=env).returncode == 0
    result = run_cli("run", "--dataset", str(pet_only), "--extractor", "radiomics:roi=skeleton", "--tracking-uri",
                     f"sqlite:///{tmp_path / 'm.db'}", env=env)  # fmt: skip
    assert result.returncode == 2 and "computed from CT and the study has no CT" in result.stderr


def test_data_check_lists_the_grid_rows_that_cannot_run(ct_only: Path, tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "dataset": "x", "rows": ["clinical", "radiomics:modality=ct,roi=tumour", "radiomics:modality=pet,roi=tumour"],
        "models": ["coxph"], "baseline": {"extractor": "clinical"},
    }))  # fmt: skip
    result = run_cli("data", "check", str(ct_only), "--config", str(grid), "--quiet")
    assert result.returncode == 2
    assert "row radiomics[roi=tumour] cannot run" in result.stdout and "no PET image" in result.stdout
    assert "radiomics[modality=ct,roi=tumour] cannot run" not in result.stdout


def test_show_draws_only_the_images_the_study_has(ct_only: Path, tmp_path: Path) -> None:
    out = tmp_path / "show.png"
    result = run_cli("data", "show", "STS_008", "--dataset", str(ct_only), "--out", str(out))
    assert result.returncode == 0, result.stderr
    import matplotlib.image

    height, width = matplotlib.image.imread(out).shape[:2]
    assert width < height * 1.5, "two CT panels, no empty PET panels (four panels would be twice as wide)"


def test_a_pet_only_cohort_runs_end_to_end(
    pet_only: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from bench.cli import main

    monkeypatch.setenv("BENCH_SPLITS_DIR", str(tmp_path / "splits"))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["splits", "make", "--dataset", str(pet_only), "--folds", "2"]) == 0
    code = main(["run", "--dataset", str(pet_only), "--extractor", "radiomics:roi=tumour,feature_classes=firstorder",
                 "--model", "coxnet:alpha=1", "--bootstrap", "10", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                 "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "radiomics[roi=tumour,feature_classes=firstorder]" in capsys.readouterr().out
