"""User cohorts from manifests: loading real PET/CT, and every kind of bad input reported in one pass."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from bench.data.datasets import load_cohort
from bench.errors import InputError
from bench.testing import run_cli

from data_paths import STS
from data_paths import STS_WITH_CT as WITH_CT


def _write_manifest(root: Path, rows: list[dict], columns: dict | None = None) -> Path:
    pd.DataFrame(rows).to_csv(root / "patients.csv", index=False)
    header = {
        "format": 1,
        "name": "sts_test",
        "table": "patients.csv",
        "horizons": [100, 300],
        "tau": 300,
        "columns": columns or {"age": "numeric", "grade": {"kind": "ordinal", "categories": ["1", "2", "3"]}},
    }
    path = root / "manifest.yaml"
    path.write_text(yaml.safe_dump(header))
    return path


def _good_rows() -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {
            "patient_id": pid,
            "pet": str(STS / "nifti" / pid / "PET_image.nii.gz"),
            "ct": str(STS / "nifti" / pid / "CT_image.nii.gz"),
            "mask_tumour": str(STS / "nifti" / pid / "PET_mask.nii.gz"),
            "time": float(rng.integers(50, 500)),
            "event": int(i % 2),
            "age": float(rng.integers(30, 80)),
            "grade": str(i % 3 + 1),
        }
        for i, pid in enumerate(WITH_CT)
    ]


def test_real_pet_ct_manifest_loads_and_checks_clean(tmp_path: Path) -> None:
    path = _write_manifest(tmp_path, _good_rows())
    cohort = load_cohort(str(path))
    assert cohort.name == "sts_test" and cohort.n == 4
    assert cohort.columns["grade"].kind == "ordinal"
    assert cohort.inputs["STS_008"].masks["tumour"].name == "PET_mask.nii.gz"
    result = run_cli("data", "check", str(path), "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok (4 studies, 2 events)" in result.stdout


def test_every_bad_input_is_reported_in_one_pass(tmp_path: Path) -> None:
    rows = _good_rows()
    bad = tmp_path / "bad"
    bad.mkdir()
    # truncated NIfTI
    truncated = bad / "truncated.nii.gz"
    truncated.write_bytes((STS / "nifti" / "STS_008" / "PET_image.nii.gz").read_bytes()[:200])
    # a DICOM folder holding two series
    two_series = bad / "two_series"
    two_series.mkdir()
    for pid in ("STS_001", "STS_002"):
        for f in sorted((STS / "dicom" / pid / "PET").glob("*.dcm"))[:3]:
            shutil.copy(f, two_series / f"{pid}_{f.name}")
    # CT moved 10 m away
    ct = sitk.ReadImage(str(STS / "nifti" / "STS_025" / "CT_image.nii.gz"))
    ct.SetOrigin(tuple(o + 10_000.0 for o in ct.GetOrigin()))
    far = bad / "far_ct.nii.gz"
    sitk.WriteImage(ct, str(far))
    # empty and all-ones masks
    mask = sitk.ReadImage(str(STS / "nifti" / "STS_042" / "PET_mask.nii.gz"))
    empty, full = bad / "empty.nii.gz", bad / "full.nii.gz"
    sitk.WriteImage(mask * 0, str(empty))
    sitk.WriteImage(mask * 0 + 1, str(full))

    rows[0]["pet"] = str(bad / "missing.nii.gz")
    rows[1]["ct"] = str(truncated)
    rows[2]["pet"] = str(two_series)
    rows[2]["ct"] = str(STS / "nifti" / "STS_025" / "CT_image.nii.gz")
    rows[3]["ct"] = str(far)
    rows[3]["mask_tumour"] = str(empty)
    extra = dict(_good_rows()[0], patient_id="STS_042", mask_tumour=str(full))  # duplicate id
    rows.append(extra)
    rows.append(dict(_good_rows()[1], patient_id="NEG", time=-3.0))
    rows.append(dict(_good_rows()[1], patient_id="NOTIME", time=""))
    rows.append(dict(_good_rows()[1], patient_id="EVENT2", event=2))
    path = _write_manifest(tmp_path, rows, {"age": "numeric", "stage": "categorical"})

    result = run_cli("data", "check", str(path), "--quiet")
    assert result.returncode == 2
    out = result.stdout
    assert out.count("missing.nii.gz") == 1, "each problem once"
    expected = [
        ("STS_008", "missing.nii.gz", "does not exist"),
        ("STS_019", "truncated.nii.gz", "damaged or truncated"),
        ("STS_025", "two_series", "series"),
        ("STS_042", "far_ct.nii.gz", "overlap"),
        ("STS_042", "empty.nii.gz", "empty"),
        ("STS_042", "full.nii.gz", "covers every one"),
        ("STS_042", "more than once", "patient id"),
        ("NEG", "time", "negative"),
        ("NOTIME", "time", "missing"),
        ("EVENT2", "event", "not 0 or 1"),
        (None, "'stage'", "missing from the table"),
    ]
    lines = out.strip().splitlines()
    for patient, what, why in expected:
        hits = [line for line in lines if (patient is None or f"'{patient}'" in line) and what in line and why in line]
        assert hits, f"no line about {patient} {what} {why}:\n{out}"

    cache = tmp_path / "cache"
    run = run_cli("run", "--dataset", str(path), "--quiet", env={"BENCH_CACHE_DIR": str(cache)})
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
    assert "bench data check" in run.stderr
    assert not cache.exists() or not any(cache.rglob("*")), "nothing cached for bad input"


def test_a_csv_manifest_takes_horizons_from_its_flags_else_derives_them(tmp_path: Path) -> None:
    rows = pd.DataFrame(_good_rows())
    rows.to_csv(tmp_path / "cohort.csv", index=False)
    derived = load_cohort(str(tmp_path / "cohort.csv")).policy
    events = rows.loc[rows["event"].astype(int) == 1, "time"].astype(float)
    assert derived.derived and derived.horizons == tuple(sorted({float(round(q)) for q in events.quantile([.25, .5, .75])}))
    rows.assign(event=0).to_csv(tmp_path / "censored.csv", index=False)
    with pytest.raises(InputError, match="--horizons and --tau"):  # no event to derive them from
        load_cohort(str(tmp_path / "censored.csv"))
    cohort = load_cohort(str(tmp_path / "cohort.csv"), horizons=(100.0, 200.0), tau=300.0)
    assert cohort.columns["age"].kind == "numeric" and cohort.columns["grade"].kind == "numeric"


def test_a_manifest_says_what_its_endpoint_is(tmp_path: Path) -> None:
    """``endpoint:`` labels the survival figures; "survival" when a manifest does not say; text only."""
    path = _write_manifest(tmp_path, _good_rows())
    assert load_cohort(str(path)).policy.endpoint == "survival"
    header = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**header, "endpoint": "overall survival"}))
    assert load_cohort(str(path)).policy.endpoint == "overall survival"
    path.write_text(yaml.safe_dump({**header, "endpoint": 3}))
    with pytest.raises(InputError, match="endpoint must be text, e.g. 'overall survival', got 3"):
        load_cohort(str(path))


@pytest.mark.parametrize(
    ("dataset", "endpoint"),
    [("gbsg2", "recurrence-free survival"), ("whas500", "overall survival"), ("veterans", "overall survival"),
     ("flchain", "overall survival")],
)  # fmt: skip
def test_built_in_tables_state_what_their_studies_measure(dataset: str, endpoint: str) -> None:
    """As scikit-survival's loaders document them: GBSG2's endpoint is recurrence-free survival, the others' death."""
    assert load_cohort(dataset).policy.endpoint == endpoint
