"""Everything checkable is checked before any work, and every error is one line with the documented exit code:
0 ok, 1 a run that failed on good input, 2 bad input or usage, 3 a bug in bench.

Commands run in-process (``bench.cli.main``) on a few studies of the tiny synthetic cohort; none extracts
anything except where the test is about extraction itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from bench import errors
from bench.cli import main
from bench.testing import count_extractions, make_cohort, subset_manifest
from feature_extractors.base import Extractor, PatientRecord

RADIOMICS = "radiomics:feature_classes=firstorder"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_data: Path) -> Path:
    """A working directory with its own splits, cache and data folders; returns it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_SPLITS_DIR", str(tmp_path / "splits"))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BENCH_DATA_DIR", str(synthetic_data))
    return tmp_path


def _source(synthetic_data: Path) -> Path:
    return synthetic_data / "synthetic_mm-tiny-seed0" / "manifest.yaml"


def _cohort(folder: Path, synthetic_data: Path, n: int = 5, cells: dict | None = None, split: bool = True) -> Path:
    """The first ``n`` studies (5: three events, two censored) with some cells replaced; a 2-fold split made."""
    manifest = subset_manifest(_source(synthetic_data), n, folder, folder.name)
    if cells:
        table = pd.read_csv(folder / "patients.csv", dtype=str, keep_default_na=False)
        for (row, column), value in cells.items():
            table.loc[row, column] = str(value)
        table.to_csv(folder / "patients.csv", index=False)
    if split:
        assert main(["splits", "make", "--dataset", str(manifest), "--folds", "2"]) == 0
    return manifest


def _image(synthetic_data: Path, patient: str, name: str) -> Path:
    return synthetic_data / "synthetic_mm-tiny-seed0" / "images" / patient / f"{name}.nii.gz"


def _err(capsys: pytest.CaptureFixture) -> str:
    """stderr of the last command, which must be one line without a traceback."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _run(manifest: Path, *extra: str, extractor: str = "clinical") -> int:
    return main(["run", "--dataset", str(manifest), "--extractor", extractor, "--bootstrap", "0", "--quiet",
                 "--tracking-uri", f"sqlite:///{manifest.parent / 'mlflow.db'}", *extra])  # fmt: skip


# ------------------------------------------------------------------------------------------------ exit codes


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.UsageError("x"), 2),
        (errors.UnknownNameError("model", "nope", ["coxph"]), 2),
        (errors.InputError("x"), 2),
        (errors.DataError("x"), 2),
        (errors.SplitError("x"), 2),
        (errors.WeightsError("x"), 2),
        (errors.PluginLoadError("x"), 2),
        (errors.ExtractionInputError("x"), 2),
        (errors.ExtractionError("x"), 1),
        (errors.ModelError("x"), 1),
        (errors.RowsFailedError([errors.ModelError("x")], 0), 1),
    ],
)
def test_exit_codes_follow_the_documented_rule(error: errors.BenchError, code: int) -> None:
    assert error.exit_code == code


def test_bad_options_exit_2_from_run_and_grid(env: Path, synthetic_data: Path, capsys) -> None:
    manifest = _cohort(env / "five", synthetic_data)
    for extra, said in ((["--bootstrap", "-5"], "--bootstrap"), (["--split", "nosuch"], "no split 'nosuch'"),
                        (["--tune", "-1"], "--tune"), (["--workers", "0"], "--workers"),
                        (["--workers", "-3"], "--workers"),
                        (["--scheduler", "localhost"], "--scheduler must be a Dask scheduler address like tcp://"),
                        (["--scheduler", "tcp://127.0.0.1:9"], "cannot reach the Dask scheduler at tcp://127.0.0.1:9")):  # fmt: skip
        assert _run(manifest, *extra) == 2, extra
        assert said in _err(capsys)
    config, store = env / "grid.yaml", ["--tracking-uri", f"sqlite:///{manifest.parent / 'mlflow.db'}"]
    body = {"dataset": str(manifest), "rows": ["clinical"], "models": ["coxph"], "baseline": {"extractor": "clinical"}}
    config.write_text(yaml.safe_dump(body))
    for extra in (["--bootstrap", "-5"], ["--workers", "0"], ["--weights", "x.pt"]):
        assert main(["grid", "--config", str(config), "--quiet", *store, *extra]) == 2, extra
        _err(capsys)
    for change in ({"split": "nosuch"}, {"tune": {"trials": -1}}, {"bootstrap": -5}, {"scheduler": "8786"}):
        config.write_text(yaml.safe_dump({**body, **change}))
        assert main(["grid", "--config", str(config), "--quiet", *store]) == 2, change
        _err(capsys)


# ------------------------------------------------------------------- bad image files: run and check agree on 2


def _shifted(source: Path, target: Path, mm: float = 5000.0) -> Path:
    image = sitk.ReadImage(str(source))
    image.SetOrigin([v + mm for v in image.GetOrigin()])
    sitk.WriteImage(image, str(target))
    return target


def _bad_file(kind: str, folder: Path, synthetic_data: Path) -> tuple[dict, str]:
    """(the cells to replace, what the error must name) for one kind of bad input file of study MM0002."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "truncated":
        data = _image(synthetic_data, "MM0002", "pet").read_bytes()
        (folder / "pet.nii.gz").write_bytes(data[: len(data) // 2])
        return {(1, "pet"): folder / "pet.nii.gz"}, "truncated"
    if kind == "text":
        (folder / "ct.nii").write_text("patient_id,time\n")
        return {(1, "ct"): folder / "ct.nii"}, "not a NIfTI file"
    if kind == "missing":
        return {(1, "ct"): folder / "nope.nii.gz"}, "does not exist"
    _shifted(_image(synthetic_data, "MM0002", "ct"), folder / "ct.nii.gz")
    return {(1, "ct"): folder / "ct.nii.gz"}, "do not overlap in space"


@pytest.mark.parametrize("kind", ["truncated", "text", "missing", "apart"])
def test_a_bad_image_is_exit_2_from_run_and_check_before_any_work(
    kind: str, env: Path, synthetic_data: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feature_extractors.radiomics import RadiomicsExtractor

    cells, said = _bad_file(kind, env / "files", synthetic_data)
    manifest = _cohort(env / "five", synthetic_data, cells=cells, split=kind != "missing")
    capsys.readouterr()
    assert main(["data", "check", str(manifest), "--quiet"]) == 2
    out = capsys.readouterr().out
    assert "patient 'MM0002'" in out and said in out and str(next(iter(cells.values()))) in out
    calls = count_extractions(monkeypatch, RadiomicsExtractor)
    assert _run(manifest, extractor=RADIOMICS) == 2
    err = _err(capsys)
    assert "patient 'MM0002'" in err and said in err and str(next(iter(cells.values()))) in err
    assert calls == [], "refused before any extraction"


def test_several_bad_files_name_the_first_and_point_at_data_check(env: Path, synthetic_data: Path, capsys) -> None:
    from bench.data.datasets import load_cohort
    from bench.protocol.runner import RunRequest, file_problems, resolve_plan

    cells, _ = _bad_file("text", env / "files", synthetic_data)
    cells[(3, "pet")] = cells[(1, "ct")]
    manifest = _cohort(env / "five", synthetic_data, cells=cells)
    assert _run(manifest, extractor=RADIOMICS) == 2
    err = _err(capsys)
    assert "patient 'MM0002'" in err and f"(1 more; run `bench data check {manifest}` to list them all)" in err
    clinical = resolve_plan(RunRequest(str(manifest), extractors=("clinical",)))
    assert file_problems(clinical, load_cohort(str(manifest))) == [], "a row that reads no image checks none"


def test_an_image_that_fails_during_extraction_is_exit_2_naming_patients_and_file(
    env: Path, synthetic_data: Path, capsys
) -> None:
    # An empty mask has a good header: it is found when the mask is read, and still exit 2 (bad input, not a crash).
    labels = sitk.ReadImage(str(_image(synthetic_data, "MM0001", "labels")))
    empty = env / "empty.nii.gz"
    sitk.WriteImage(sitk.Cast(labels * 0, sitk.sitkUInt8), str(empty))
    manifest = _cohort(env / "five", synthetic_data, cells={(i, "mask_tumor"): empty for i in range(5)})
    assert _run(manifest, extractor=f"{RADIOMICS},roi=tumor") == 2
    err = _err(capsys)
    assert "failed for 5 of 5 patients: MM0001 (tumor mask file" in err and str(empty) in err
    assert "MM0002, MM0003, MM0004, MM0005" in err and "cached" not in err
    assert f"bench data check {manifest}" in err


# ------------------------------------------------------------------------------------------------------ masks


def _mask(synthetic_data: Path, patient: str, target: Path, shift_mm: float = 0.0) -> Path:
    labels = sitk.ReadImage(str(_image(synthetic_data, patient, "labels")))
    mask = sitk.Cast(labels >= 10, sitk.sitkUInt8)
    mask.SetOrigin([v + shift_mm for v in mask.GetOrigin()])
    sitk.WriteImage(mask, str(target))
    return target


def test_a_mask_apart_from_its_image_is_found_by_check_and_refused_by_run(
    env: Path, synthetic_data: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feature_extractors.radiomics import RadiomicsExtractor

    cells = {(i, "mask_tumor"): _mask(synthetic_data, f"MM000{i + 1}", env / f"{i}.nii.gz") for i in range(5)}
    apart = cells[1, "mask_tumor"] = _mask(synthetic_data, "MM0002", env / "apart.nii.gz", shift_mm=5000.0)
    manifest = _cohort(env / "five", synthetic_data, cells=cells)
    capsys.readouterr()
    assert main(["data", "check", str(manifest), "--quiet"]) == 2
    out = capsys.readouterr().out
    assert "patient 'MM0002'" in out and f"tumor mask '{apart}'" in out and "do not overlap" in out
    assert "mask_tumor" in out
    calls = count_extractions(monkeypatch, RadiomicsExtractor)
    assert _run(manifest, extractor=f"{RADIOMICS},roi=tumor") == 2
    err = _err(capsys)
    assert "patient 'MM0002'" in err and f"tumor mask '{apart}'" in err and "do not overlap" in err
    assert calls == []


def test_a_mask_with_no_voxel_on_the_image_grid_is_an_input_error(env: Path, synthetic_data: Path, capsys) -> None:
    from bench.data.imaging.study import Study
    from bench.data.inputs import StudyInputs

    pet = sitk.ReadImage(str(_image(synthetic_data, "MM0002", "pet")))
    array = np.zeros(sitk.GetArrayViewFromImage(pet).shape, np.uint8)
    array[:, :, -2:] = 1  # only its last columns are marked, and they lie beyond the image
    mask = sitk.GetImageFromArray(array)
    mask.CopyInformation(pet)
    mask.SetOrigin(pet.TransformContinuousIndexToPhysicalPoint((pet.GetSize()[0] / 2, 0, 0)))
    sitk.WriteImage(mask, str(env / "outside.nii.gz"))
    inputs = StudyInputs(_image(synthetic_data, "MM0002", "pet"), None, {"tumor": env / "outside.nii.gz"})
    with pytest.raises(errors.InputError, match=r"patient 'MM0002': tumor mask .* has no voxel left on the grid"):
        Study(inputs, "MM0002").roi_mask("tumor")
    manifest = _cohort(env / "five", synthetic_data, cells={(1, "mask_tumor"): env / "outside.nii.gz"}, split=False)
    assert main(["data", "check", str(manifest), "--quiet"]) == 2
    assert "has no voxel left on the grid" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- manifest schema


def _clinical_manifest(folder: Path, header: dict | None = None, rows: list[str] | None = None) -> Path:
    """A manifest without images (the schema is what is checked), as the user might write it."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = rows if rows is not None else [f"P{i},{100 + 50 * i},{i % 2},{50 + i},{'FM'[i % 2]}" for i in range(6)]
    (folder / "patients.csv").write_text("\n".join(["patient_id,time,event,age,sex", *lines]) + "\n")
    body = {"format": 1, "name": folder.name, "table": "patients.csv", "horizons": [100, 200], "tau": 300,
            "columns": {"age": "numeric", "sex": {"kind": "categorical", "categories": ["F", "M"]}}}  # fmt: skip
    body.update(header or {})
    (folder / "manifest.yaml").write_text(yaml.safe_dump({k: v for k, v in body.items() if v is not None}))
    return folder / "manifest.yaml"


@pytest.mark.parametrize(
    ("header", "rows", "said"),
    [
        ({"pet_unit": "bqml"}, None, "unknown key 'pet_unit' (did you mean 'pet_units'?); valid keys: format, name"),
        ({"age": 5}, None, "unknown key 'age'"),
        ({"pet_units": "kbq"}, None, "pet_units 'kbq' is unknown; use suv or bqml"),
        ({"columns": {"sex": {"kind": "categorical", "categries": ["F", "M"]}}}, None,
         "column 'sex' has unknown key 'categries' (did you mean 'categories'?)"),
        ({"columns": ["age", "sex"]}, None, "'columns' must map each clinical column to its kind"),
        ({"columns": {"age": 5}}, None, "column 'age' is declared as 5"),
        (None, ["P0,100,1,50,female", "P1,150,0,51,M"], "holds 'female', not one of its declared categories"),
        (None, [], "no studies in patients.csv"),
    ],
)  # fmt: skip
def test_a_manifest_schema_error_is_one_line_from_check_and_run(
    header: dict | None, rows: list[str] | None, said: str, env: Path, capsys
) -> None:
    manifest = _clinical_manifest(env / "cohort", header, rows)
    assert main(["data", "check", str(manifest), "--quiet"]) == 2
    assert said in capsys.readouterr().out
    assert _run(manifest) == 2
    assert said in _err(capsys)


# ------------------------------------------------------------------------------------------------ output paths


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--dataset", "veterans", "--results", "{dir}"],
        ["run", "--dataset", "veterans", "--output-json", "{file}/out.json"],
        ["grid", "--config", "{config}", "--leaderboard", "{dir}"],
        ["grid", "--config", "{config}", "--leaderboard", "{dir}/page.md"],
        ["leaderboard", "--from", "{missing}", "--out", "{dir}"],
        ["validate-statistics", "--out", "{dir}"],
        ["validate-statistics", "--out", "ok.md", "--output-json", "{file}/x/out.json"],
        ["data", "show", "MM0001", "--dataset", "synthetic_mm_tiny", "--out", "{dir}"],
        ["data", "synth", "--preset", "tiny", "--out", "{file}"],
    ],
)
def test_an_output_path_that_cannot_be_written_stops_before_any_work(command: list[str], env: Path, capsys) -> None:
    (env / "adir").mkdir()
    (env / "adir" / "page.json").mkdir()  # a folder where grid's results file would go
    (env / "afile").write_text("")
    (env / "grid.yaml").write_text(yaml.safe_dump({"dataset": "veterans", "rows": ["clinical"]}))
    paths = {"dir": env / "adir", "file": env / "afile", "config": env / "grid.yaml", "missing": env / "nope.json"}
    argv = [word.format(**paths) for word in command]
    assert main([*argv, "--tracking-uri", f"sqlite:///{env / 'm.db'}"] if command[0] in ("run", "grid") else argv) == 2
    err = _err(capsys)
    assert str(env / ("adir" if "{dir}" in " ".join(command) else "afile")) in err
    assert not (env / "m.db").exists(), "no MLflow store was opened"


def test_an_output_folder_that_is_not_writable_is_refused(env: Path, capsys, monkeypatch) -> None:
    import os

    (env / "locked").mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != env / "locked" and real(path, mode))
    # as root every folder is writable, so the refusal is simulated
    assert main(["validate-statistics", "--out", str(env / "locked" / "new" / "stats.md")]) == 2
    assert f"folder '{env / 'locked'}' is not writable" in _err(capsys)


# ------------------------------------------------------------------------------------------------------ weights


class _NotWeights:
    """A pickled object of a custom class, which ``torch.load(weights_only=True)`` refuses."""

    def __init__(self) -> None:
        self.w = [1.0, 2.0]


def test_a_weights_file_that_is_no_state_dict_is_one_error_before_any_work(env: Path, capsys) -> None:
    import torch

    bad = env / "bad.pt"
    torch.save(_NotWeights(), bad)
    code = main(["run", "--dataset", "synthetic_mm_tiny", "--extractor", "resnet3d", "--weights", str(bad),
                 "--tracking-uri", f"sqlite:///{env / 'm.db'}", "--quiet"])  # fmt: skip
    assert code == 2
    err = _err(capsys)
    assert f"weights file '{bad}' is not a plain state-dict checkpoint" in err and "_NotWeights" in err
    assert "weights_only" not in err and "--weights random" in err
    assert not (env / "m.db").exists()


def test_weights_for_a_run_without_a_weights_extractor_is_a_usage_error(env: Path, capsys) -> None:
    code = main(["run", "--dataset", "veterans", "--extractor", "clinical", "--weights", "x.pt", "--quiet",
                 "--tracking-uri", f"sqlite:///{env / 'm.db'}"])  # fmt: skip
    assert code == 2
    assert "extractor 'clinical' has no weights; drop --weights" in _err(capsys)


# ------------------------------------------------------------------------------------------------------- splits


def test_a_cohort_too_small_for_the_split_is_one_line(env: Path, synthetic_data: Path, capsys) -> None:
    three = _cohort(env / "three", synthetic_data, n=3, split=False)  # 2 events, 1 censored
    for extra in (["--holdout", "0.34"], ["--folds", "5"]):
        assert main(["splits", "make", "--dataset", str(three), *extra]) == 2
        err = _err(capsys)
        assert "dataset 'three'" in err and "3 patients, 2 with an event and 1 censored" in err
        assert "bench splits import" in err
    five = _cohort(env / "five", synthetic_data, split=False)
    csv = env / "folds.csv"
    censored_out = {"MM0001": 1, "MM0002": 0, "MM0003": 0, "MM0004": 0, "MM0005": 1}  # fold 0 trains on censored only
    pd.DataFrame({"patient_id": list(censored_out), "fold": list(censored_out.values())}).to_csv(csv, index=False)
    assert main(["splits", "import", "--dataset", str(five), str(csv)]) == 2
    assert "the training part of fold 0 (2 patients of 'five') has no event" in _err(capsys)


# -------------------------------------------------------------------------------------------------------- cache


def test_a_cache_that_cannot_be_cleared_or_read_is_one_line(env: Path, capsys, monkeypatch) -> None:
    import os

    from bench import cache

    (env / "cache").mkdir()
    (env / "cache" / "features").write_text("")  # a file where the feature folder belongs
    assert main(["cache", "clear"]) == 2
    assert f"cannot clear the cache folder '{env / 'cache' / 'features'}'" in _err(capsys)
    (env / "cache" / "features").unlink()
    (env / "cache" / "masks").mkdir()

    def denied(path, *args, **kwargs):  # as root nothing is read-only, so the refusal is simulated
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cache.shutil, "rmtree", denied)
    assert main(["cache", "clear"]) == 2
    assert f"cannot clear the cache folder '{env / 'cache' / 'masks'}' (Permission denied)" in _err(capsys)
    real = os.scandir
    monkeypatch.setattr(cache.os, "scandir", lambda p=".": denied(p) if Path(p) == env / "cache" else real(p))
    assert main(["cache", "info"]) == 2
    assert f"cannot read the cache folder '{env / 'cache'}' (Permission denied); make it readable" in _err(capsys)


# --------------------------------------------------------------------------------------- extraction failures


class _Flaky(Extractor):
    """Fails for the samples in ``failing`` with the exception given there."""

    name = "flaky"
    failing: ClassVar[dict[str, BaseException]] = {}

    def extract_patient(self, record: PatientRecord) -> dict[str, float]:
        if record.sample_id in self.failing:
            raise self.failing[record.sample_id]
        return {"x": 1.0}

    def cache_key(self, record: PatientRecord) -> str:
        return f"flaky-{record.sample_id}"  # samples without files would share one cache key


def test_the_extraction_failure_says_what_failed_and_only_then_that_the_others_are_cached(
    tmp_path: Path, monkeypatch
) -> None:
    from bench.cache import FeatureCache

    cohort = make_cohort(3)
    cache = FeatureCache(tmp_path / "features")
    bad = {
        s: errors.InputError(f"patient {s!r}: cannot read PET file '/x/{s}.nii': truncated") for s in cohort.sample_ids
    }
    monkeypatch.setattr(_Flaky, "failing", bad)
    with pytest.raises(errors.ExtractionInputError) as every:
        _Flaky().extract(cohort, progress=False, cache=cache)
    message = str(every.value)
    assert every.value.exit_code == 2 and "cached" not in message
    assert message.startswith(
        "extractor 'flaky' failed for 3 of 3 patients: S0000 (cannot read PET file '/x/S0000.nii'"
    )
    assert message.endswith("), S0001, S0002")
    monkeypatch.setattr(_Flaky, "failing", {"S0001": RuntimeError("boom\nmore")})
    with pytest.raises(errors.ExtractionError) as one:
        _Flaky().extract(cohort, progress=False, cache=cache)
    assert one.value.exit_code == 1
    assert (
        str(one.value)
        == "extractor 'flaky' failed for 1 of 3 patients: S0001 (RuntimeError: boom); the others are cached"
    )
    monkeypatch.setattr(_Flaky, "failing", {"S0000": errors.WeightsError("flaky: bad weights"), "S0001": bad["S0001"]})
    with pytest.raises(errors.WeightsError, match="^flaky: bad weights$"):  # about the file, not the patients
        _Flaky().extract(cohort, progress=False, cache=FeatureCache(tmp_path / "empty"))


def test_the_plan_asks_for_the_modules_its_plugins_import_on_first_use() -> None:
    """What `bench` imports before any work, here and on every Dask worker: each plugin's own module, then the modules
    its first fit or extraction would import (a forest's sksurv.ensemble, DeepSurv's torch._dynamo)."""
    from bench.protocol.runner import RunRequest, plan_needs, resolve_plan

    plan = resolve_plan(RunRequest("synthetic_mm_tiny", extractors=("clinical", "radiomics"), models=("rsf", "deepsurv")))
    modules, resources = plan_needs(plan)
    for expected in ("bench.protocol.fitting", "survival_models.rsf", "sksurv.ensemble", "survival_models.deepsurv",
                     "torch._dynamo", "feature_extractors.radiomics", "radiomics.featureextractor"):  # fmt: skip
        assert expected in modules, f"{expected} is not imported before the work"
    assert len(modules) == len(set(modules)) and resources == {}
