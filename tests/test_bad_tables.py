"""Bad clinical tables: missing values are accepted and imputed in-fold, anything else is a one-line problem.

Real PET from the IBSI soft-tissue-sarcoma set (``tests/data``, eight studies taken in turn) stands in for the
images (PET is given as both ``pet`` and ``ct``); the outcomes and clinical values are made up here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from bench import cli
from bench.data.datasets import load_cohort
from bench.data.manifest import read_manifest
from bench.errors import InputError
from bench.protocol.preprocessing import BlockPreprocessor
from bench.testing import run_cli

from data_paths import STS_NIFTI, STS_WITH_CT

PATIENTS = [f"STS_{i:03d}" for i in range(1, 25)]
# The real studies behind those 24 rows, taken in turn: the tests read tables, not images, so a few studies do.
STUDIES = [STS_NIFTI / pid for pid in ("STS_001", "STS_002", "STS_003", "STS_004", *STS_WITH_CT)]
COLUMNS = {
    "age": "numeric",
    "sex": {"kind": "categorical", "categories": ["F", "M"]},
    "grade": {"kind": "ordinal", "categories": ["1", "2", "3"]},
}
# Every spelling of "missing", once each, in the numeric column.
AGES = ["61", "nan", "55", "NA", "", "70", "N/A", "48", "null", "66", "None", "NaN"]
AGES += ["52", "74", "59", "63", "45", "68", "57", "71", "50", "66", "62", "58"]
SEXES = "FFMMFMFMMFFMFMFFMMFMMFMF"


def _rows() -> list[dict]:
    rng = np.random.default_rng(1)
    return [
        {
            "patient_id": pid,
            "pet": str(STUDIES[i % len(STUDIES)] / "PET_image.nii.gz"),
            "ct": str(STUDIES[i % len(STUDIES)] / "PET_image.nii.gz"),
            "mask_tumor": str(STUDIES[i % len(STUDIES)] / "PET_mask.nii.gz"),
            "time": int(rng.integers(50, 900)),
            "event": i % 2,
            "age": age,
            "sex": "na" if i == 3 else SEXES[i],
            "grade": "" if i == 5 else str(i % 3 + 1),
        }
        for i, (pid, age) in enumerate(zip(PATIENTS, AGES))
    ]


def _write(root: Path, rows: list[dict], columns: dict | None = COLUMNS) -> Path:
    """The table as CSV and, unless ``columns`` is None (a bare CSV), a YAML manifest declaring ``columns``."""
    root.mkdir(parents=True, exist_ok=True)
    table = root / "patients.csv"
    # Written as text, so that 'NA', 'nan' and '' reach the reader exactly as a user's file holds them.
    pd.DataFrame(rows).astype(str).to_csv(table, index=False)
    if columns is None:
        return table
    header = {"format": 1, "name": "bad_tables", "table": table.name, "horizons": [200, 400], "tau": 600}
    path = root / "manifest.yaml"
    path.write_text(yaml.safe_dump({**header, "columns": columns}))
    return path


def _cli(tmp: Path, *args: str):
    env = {"BENCH_SPLITS_DIR": str(tmp / "splits"), "BENCH_CACHE_DIR": str(tmp / "cache")}
    return run_cli(*args, cwd=tmp, env=env)


def _one_line_error(result) -> str:
    """The command failed with exactly one line on stderr and no traceback; that line."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# ---------------------------------------------------------------- missing values


def test_missing_tokens_become_nan_and_are_imputed_in_fold(tmp_path: Path) -> None:
    cohort = load_cohort(str(_write(tmp_path, _rows())))
    age = cohort.clinical["age"]
    assert age.dtype == float
    assert age.isna().tolist() == [a.strip().lower() in ("", "nan", "na", "n/a", "null", "none") for a in AGES]
    assert cohort.clinical["sex"].iloc[3] is None and cohort.clinical["sex"].iloc[2] == "M"
    assert cohort.clinical["grade"].iloc[5] is None

    pre = BlockPreprocessor(cohort.columns).fit(cohort.clinical)
    features = pre.transform(cohort.clinical)
    assert np.isfinite(features).all()
    recorded = [float(a) for a in AGES if a.strip().lower() not in ("", "nan", "na", "n/a", "null", "none")]
    assert pre.medians_["age"] == pytest.approx(np.median(recorded))
    column = pre.feature_names_.index("age")
    imputed = (np.median(recorded) - pre.means_["age"]) / pre.scales_["age"]
    np.testing.assert_allclose(features[age.isna().to_numpy(), column], imputed)


def test_bare_csv_infers_numeric_through_missing_tokens(tmp_path: Path) -> None:
    manifest = read_manifest(_write(tmp_path, _rows(), columns=None), horizons=(200.0, 400.0), tau=600.0)
    assert not manifest.problems, manifest.problems
    assert manifest.columns["age"].kind == "numeric"
    assert manifest.columns["sex"].kind == "categorical" and manifest.columns["sex"].categories == ("F", "M")


def test_missing_values_pass_check_split_and_run(tmp_path: Path) -> None:
    path = str(_write(tmp_path / "cohort", _rows()))
    check = _cli(tmp_path, "data", "check", path, "--quiet")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ok (24 studies, 12 events)" in check.stdout
    split = _cli(tmp_path, "splits", "make", "--dataset", path, "--folds", "3", "--name", "cv3")
    assert split.returncode == 0, split.stderr
    run = _cli(
        tmp_path,
        *("run", "--dataset", path, "--split", "cv3", "--model", "coxph", "--bootstrap", "20", "--quiet"),
        *("--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"),
    )
    assert run.returncode == 0, run.stderr
    assert "| clinical | coxph |" in run.stdout


# ---------------------------------------------------------------- bad values


@pytest.fixture(scope="module")
def bad_table(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A manifest whose table holds a non-number, a decimal comma, undeclared levels and an empty mask."""
    root = tmp_path_factory.mktemp("bad")
    rows = _rows()
    rows[6]["age"] = "abc"
    rows[2]["age"] = "12,5"
    rows[2]["sex"] = "X"
    rows[4]["grade"] = "IV"
    mask = sitk.ReadImage(rows[7]["mask_tumor"])
    empty = root / "empty_mask.nii.gz"
    sitk.WriteImage(mask * 0, str(empty))
    rows[7]["mask_tumor"] = str(empty)
    return root, _write(root / "cohort", rows)


@pytest.fixture(scope="module")
def bad_check(bad_table: tuple[Path, Path]) -> list[str]:
    root, path = bad_table
    result = _cli(root, "data", "check", str(path), "--quiet")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout.strip().splitlines()


@pytest.mark.parametrize(
    ("patient", "needles"),
    [
        ("STS_007", ["clinical column 'age' holds 'abc', not a number", "leave the cell empty / NA for missing"]),
        ("STS_003", ["clinical column 'age' holds '12,5', not a number"]),
        ("STS_003", ["clinical column 'sex' holds 'X', not one of its declared categories ['F', 'M']"]),
        ("STS_005", ["clinical column 'grade' holds 'IV', not one of its declared categories ['1', '2', '3']"]),
    ],
)
def test_bad_value_is_listed_with_patient_column_and_value(
    bad_check: list[str], patient: str, needles: list[str]
) -> None:
    hits = [line for line in bad_check if f"patient {patient!r}: " in line and all(n in line for n in needles)]
    assert len(hits) == 1, "\n".join(bad_check)


def test_empty_mask_message_names_the_column_and_the_file(bad_check: list[str]) -> None:
    hits = [line for line in bad_check if "empty_mask.nii.gz" in line]
    assert len(hits) == 1, "\n".join(bad_check)
    assert "patient 'STS_008'" in hits[0] and "empty" in hits[0] and "mask_tumor column" in hits[0]


def test_only_the_bad_cells_are_listed(bad_check: list[str]) -> None:
    assert len(bad_check) == 5, "\n".join(bad_check)  # the four values and the mask; missing tokens are fine


@pytest.mark.parametrize("table", ["manifest", "bare csv"])
@pytest.mark.parametrize("command", ["data check", "splits make", "run"])
def test_bad_table_is_one_line_from_every_command(bad_table: tuple[Path, Path], table: str, command: str) -> None:
    root, path = bad_table
    target = str(path) if table == "manifest" else str(path.parent / "patients.csv")
    flags = () if table == "manifest" else ("--horizons", "200,400", "--tau", "600")
    args = {
        "data check": ("data", "check", target, "--quiet"),
        "splits make": ("splits", "make", "--dataset", target, "--folds", "3", "--name", "cv3"),
        "run": ("run", "--dataset", target, "--model", "coxph", "--bootstrap", "20", "--quiet"),
    }[command]
    tracking = ("--tracking-uri", f"sqlite:///{root / 'm.db'}") if command == "run" else ()
    result = _cli(root, *args, *flags, *tracking)
    assert result.returncode == 2
    line = _one_line_error(result)
    if command == "data check":
        assert "5 problem(s)" in line if table == "manifest" else "problem(s)" in line
        assert "patient 'STS_007': clinical column 'age' holds 'abc', not a number" in result.stdout
    else:
        assert line.startswith("bench: error: ") and "bench data check" in line


def test_bare_csv_names_a_non_number_and_says_the_type_was_inferred(tmp_path: Path) -> None:
    rows = _rows()
    rows[6]["age"] = "abc"
    manifest = read_manifest(_write(tmp_path, rows, columns=None), horizons=(200.0, 400.0), tau=600.0)
    assert [str(p) for p in manifest.problems] == [
        (
            "patient 'STS_007': clinical column 'age' holds 'abc', not a number (use a number, or leave the cell "
            "empty / NA for missing; its type was inferred, declare it in a YAML manifest's columns if 'age' is "
            "categorical)"
        )
    ]


def test_infinite_value_is_a_problem(tmp_path: Path) -> None:
    rows = _rows()
    rows[0]["age"] = "inf"
    manifest = read_manifest(_write(tmp_path, rows))
    assert [str(p) for p in manifest.problems] == [
        (
            "patient 'STS_001': clinical column 'age' holds 'inf', not a finite number "
            "(use a number, or leave the cell empty / NA for missing)"
        )
    ]


def test_a_declared_level_wins_over_a_missing_token(tmp_path: Path) -> None:
    columns = {**COLUMNS, "sex": {"kind": "categorical", "categories": ["F", "M", "na"]}}
    cohort = load_cohort(str(_write(tmp_path, _rows(), columns)))
    assert cohort.clinical["sex"].iloc[3] == "na"


def test_column_without_any_value_is_a_problem(tmp_path: Path) -> None:
    rows = [dict(row, age="NA") for row in _rows()]
    manifest = read_manifest(_write(tmp_path, rows))
    assert [str(p) for p in manifest.problems] == [
        "clinical column 'age' has no value in any row; fill it in, or drop the column"
    ]


# ---------------------------------------------------------------- bad declarations


@pytest.mark.parametrize(
    ("columns", "needle"),
    [
        ({"age": 5}, "column 'age' is declared as 5; give its kind"),
        ({"age": "numbers"}, "column 'age' has kind 'numbers'; use numeric, categorical, ordinal or group"),
        ({"sex": {"kind": "categorical", "categories": "F"}}, "categories of column 'sex' must be a list"),
        ({"age": {"kind": "numeric", "categories": ["a"]}}, "numeric column 'age' has categories ['a']"),
        ({"grade": {"kind": "ordinal", "categories": ["1", "1", "2"]}}, "lists ['1'] more than once"),
        ({"grade": {"kind": "ordinal"}}, "ordinal column 'grade' needs its categories in order"),
        ({"time": "numeric"}, "'time' is a reserved column, not a clinical one"),
        ({"mask_tumor": "categorical"}, "'mask_tumor' is a reserved column, not a clinical one"),
        (["age"], "'columns' must map each clinical column to its kind"),
    ],
)
def test_bad_column_declaration_is_a_problem(tmp_path: Path, columns, needle: str) -> None:
    manifest = read_manifest(_write(tmp_path, _rows(), columns))
    assert any(needle in str(p) for p in manifest.problems), manifest.problems


def test_empty_table_file_is_an_input_error(tmp_path: Path) -> None:
    path = _write(tmp_path, _rows())
    (tmp_path / "patients.csv").write_text("")
    with pytest.raises(InputError, match="cannot read manifest table"):
        read_manifest(path)


# ---------------------------------------------------------------- the last resort


def test_an_unexpected_exception_is_one_line_and_exit_3(monkeypatch, capsys) -> None:
    def broken(args):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setitem(cli.COMMANDS, "list", broken)
    assert cli.main(["list", "models"]) == 3
    err = capsys.readouterr().err
    assert err == (
        "bench: error: internal error: ZeroDivisionError: division by zero; "
        "rerun with --debug for the traceback, and report it\n"
    )
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", "list", "models"])


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("patient_id,pet,time,event,age\n,{pet},100,1,50\nP2,{pet},200,0,60\n", "row 2 of t.csv has no patient_id"),
        ("patient_id,pet,time,event,age\nP1,{pet},100,1,50,99\nP2,{pet},200,0,60\n", "row 2 of t.csv has 6 fields"),
        ("patient_id,pet,time,event,age,age\nP1,{pet},100,1,50,5\nP2,{pet},200,0,60,6\n", "column 'age' appears more"),
    ],
    ids=["no-patient-id", "row-too-wide", "repeated-column"],
)
def test_malformed_tables_are_listed_not_misread(tmp_path: Path, table: str, expected: str) -> None:
    pet = STS_NIFTI / "STS_001" / "PET_image.nii.gz"
    path = tmp_path / "t.csv"
    path.write_text(table.format(pet=pet))
    result = run_cli("data", "check", str(path), "--horizons", "50,150", "--tau", "200", "--quiet")
    assert result.returncode == 2 and expected in result.stdout and "Traceback" not in result.stderr
