"""The public imaging API for plugins (``PatientRecord.study``, i.e. ``bench.data.imaging.study.open_study``)
and the outside SUV-statistics plugin
(tests/fixtures/bench_suv_plugin) written with it alone: through `bench run`, against SUV statistics computed here
with SimpleITK and numpy on the cohort's files, and the masks it hands out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from bench.cache import FeatureCache
from bench.data.datasets import load_cohort
from bench.data.imaging.study import open_study
from bench.data.inputs import StudyInputs
from bench.errors import UsageError
from bench.plugins.options import build_config
from bench.plugins.registry import EXTRACTORS
from bench.testing import count_extractions
from feature_extractors.base import PatientRecord

TINY = "synthetic_mm-tiny-seed0"  # the folder conftest's synthetic_data generates
THRESHOLD = 2.5  # the plugin's default metabolic threshold (SUV)


def _manifest_table(folder: Path) -> pd.DataFrame:
    """The cohort's table as its manifest names it; image paths made absolute."""
    header = yaml.safe_load((folder / "manifest.yaml").read_text())
    table = pd.read_csv(folder / header["table"], dtype=str).set_index("patient_id")
    for column in ("pet", "ct"):
        table[column] = [folder / path for path in table[column]]
    return table


def _reference(pet_file: Path, inside: np.ndarray, threshold: float = THRESHOLD) -> dict[str, float]:
    """SUV statistics from the PET file read here, inside the boolean [z, y, x] array ``inside``."""
    pet = sitk.ReadImage(str(pet_file), sitk.sitkFloat64)
    suv = sitk.GetArrayFromImage(pet)[inside]
    voxel_ml = float(np.prod(pet.GetSpacing())) / 1000.0
    metabolic = suv[suv >= threshold]
    volume = metabolic.size * voxel_ml
    return {
        "suv_max": suv.max(),
        "suv_mean": suv.mean(),
        "mtv_ml": volume,
        "tlg": metabolic.mean() * volume if metabolic.size else 0.0,
    }


def _record(table: pd.DataFrame, pid: str, masks: dict[str, Path] | None = None) -> PatientRecord:
    inputs = StudyInputs(pet=table.at[pid, "pet"], ct=table.at[pid, "ct"], masks=masks or {})
    return PatientRecord(pid, pid, pd.Series(dtype=object), inputs)


@pytest.fixture
def marrow_mask(synthetic_data: Path, tmp_path: Path) -> tuple[str, Path]:
    """A supplied mask: marrow and focal lesions of the first patient with a focal lesion (its anatomy labels, on
    the PET grid), so that it holds a metabolic volume."""
    folder = synthetic_data / TINY
    labels = yaml.safe_load((folder / "manifest.yaml").read_text())["labels"]
    for pid in _manifest_table(folder).index:
        anatomy = sitk.ReadImage(str(folder / "images" / pid / "labels.nii.gz"))
        values = sitk.GetArrayFromImage(anatomy)
        if (values == labels["focal_lesion"]).any():
            break
    mask = sitk.GetImageFromArray(np.isin(values, [labels["marrow"], labels["focal_lesion"]]).astype(np.uint8))
    mask.CopyInformation(anatomy)
    path = tmp_path / "marrow.nii.gz"
    sitk.WriteImage(mask, str(path))
    return pid, path


def test_suv_stats_runs_through_bench_and_agrees_with_numpy(
    tmp_path: Path, synthetic_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.testing import run_cli

    cache = tmp_path / "cache"
    env = {"BENCH_DATA_DIR": str(synthetic_data), "BENCH_CACHE_DIR": str(cache)}
    result = run_cli(
        "run", "--dataset", "synthetic_mm_tiny", "--extractor", "suv_stats:roi=spine_dilated", "--model", "coxph",
        "--bootstrap", "20", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--quiet",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "| suv_stats[roi=spine_dilated] | coxph |" in result.stdout, result.stdout
    assert list((cache / "masks").glob("*.nii.gz")), "derived masks go to the harness's mask cache"

    # The features the run computed, read back from its cache (nothing is extracted again).
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cohort = load_cohort("synthetic_mm_tiny")
    cls = EXTRACTORS.load("suv_stats")
    calls = count_extractions(monkeypatch, cls)
    block = cls(build_config(cls.Config, {"roi": "spine_dilated"}, "suv_stats")).extract(
        cohort, progress=False, cache=FeatureCache(cache / "features")
    )
    assert calls == [], "the run cached every patient's features"
    assert list(block.frame.columns) == ["suv_max", "suv_mean", "mtv_ml", "tlg"]

    table = _manifest_table(synthetic_data / TINY)
    pid = cohort.sample_ids[0]
    inside = sitk.GetArrayFromImage(_record(table, pid).study("test").roi_mask("spine_dilated")) > 0
    expected = _reference(table.at[pid, "pet"], inside)
    assert expected["mtv_ml"] > 0, "the check must cover a metabolic volume"
    for name, value in expected.items():
        assert block.frame.at[pid, name] == pytest.approx(value, rel=1e-6), name


def test_suv_stats_in_a_supplied_mask_agrees_with_numpy(synthetic_data: Path, marrow_mask: tuple[str, Path]) -> None:
    pid, path = marrow_mask
    table = _manifest_table(synthetic_data / TINY)
    cls = EXTRACTORS.load("suv_stats")
    features = cls(build_config(cls.Config, {"roi": "marrow"}, "suv_stats")).extract_patient(
        _record(table, pid, {"marrow": path})
    )
    inside = sitk.GetArrayFromImage(sitk.ReadImage(str(path))) != 0
    expected = _reference(table.at[pid, "pet"], inside)
    assert expected["mtv_ml"] > 0 and expected["suv_max"] > THRESHOLD
    assert features == pytest.approx(expected, rel=1e-6)


def test_study_gives_images_masks_spacing_and_units(
    synthetic_data: Path, marrow_mask: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    pid, path = marrow_mask
    table = _manifest_table(synthetic_data / TINY)
    study = _record(table, pid, {"marrow": path}).study("test")
    pet_file = sitk.ReadImage(str(table.at[pid, "pet"]))

    assert study.spacing == pytest.approx(pet_file.GetSpacing())
    assert study.voxel_volume_ml == pytest.approx(np.prod(pet_file.GetSpacing()) / 1000)
    assert (study.units("pet"), study.units("ct")) == ("SUV", "HU")
    np.testing.assert_allclose(sitk.GetArrayFromImage(study.image("pet")), sitk.GetArrayFromImage(pet_file))
    assert study.image("ct").GetSize() == pet_file.GetSize(), "CT is brought onto the PET grid"

    spine = sitk.GetArrayFromImage(study.roi_mask("spine")) > 0
    dilated = sitk.GetArrayFromImage(study.roi_mask("spine_dilated")) > 0
    assert spine.any() and not (spine & ~dilated).any(), "spine_dilated contains the spine"
    assert dilated.sum() > spine.sum()

    supplied = study.roi_mask("marrow")
    given = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(supplied), sitk.GetArrayFromImage(given))
    assert supplied.GetOrigin() == pytest.approx(given.GetOrigin())
    assert supplied.GetSpacing() == pytest.approx(given.GetSpacing())


def test_open_study_errors_say_what_is_wrong(synthetic_data: Path) -> None:
    with pytest.raises(UsageError, match="extractor 'suv_stats' needs an imaging cohort"):
        open_study(PatientRecord("S1", "P1", pd.Series(dtype=object)), "suv_stats")
    study = open_study(_record(_manifest_table(synthetic_data / TINY), "MM0001"), "suv_stats")
    with pytest.raises(UsageError, match="unknown modality 'PET'; valid: pet, ct"):
        study.image("PET")


def test_the_readme_example_is_the_plugin(synthetic_data: Path, marrow_mask: tuple[str, Path]) -> None:
    """The README's SUV-statistics example runs as printed and gives the installed plugin's features."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (block,) = [b for b in readme.split("```python\n")[1:] if b.startswith("# my_package/suv_stats.py")]
    namespace: dict = {"__name__": "readme_suv_stats"}
    exec(compile(block.split("```")[0], "README.md", "exec", dont_inherit=True), namespace)  # noqa: S102
    pid, path = marrow_mask
    record = _record(_manifest_table(synthetic_data / TINY), pid, {"marrow": path})
    plugin = EXTRACTORS.load("suv_stats")
    ours = plugin(build_config(plugin.Config, {"roi": "marrow"}, "suv_stats")).extract_patient(record)
    example = namespace["SUVStatsExtractor"](namespace["SUVStatsConfig"](roi="marrow")).extract_patient(record)
    assert example == ours
