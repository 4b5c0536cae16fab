"""User cohorts: a manifest (YAML, or a bare CSV table) of PET/CT studies, outcomes and clinical data.

A YAML manifest declares the table, the evaluation policy and the type of every
clinical column; a bare CSV gives only the table (types are inferred, horizons
and tau come from flags). Table columns: ``patient_id``, optional ``sample_id``
(several studies of one patient), ``pet`` and/or ``ct`` (a NIfTI file or a DICOM
series folder; a study may have either or both), optional ``mask_<roi>`` files, ``time``, ``event`` (0/1), then the
clinical columns. Paths resolve relative to the manifest.

Problems are collected, not raised one at a time, so ``bench data check`` can
list them all in one pass; loading a cohort for a run stops at the first.
"""

from __future__ import annotations

import difflib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from bench.data.cohort import Cohort, ColumnSpec, EvaluationPolicy
from bench.data.inputs import StudyInputs
from bench.data.policy import declared_policy, derived_policy
from bench.errors import DataError, InputError

RESERVED = ("patient_id", "sample_id", "pet", "ct", "time", "event")
REQUIRED = ("patient_id", "time", "event")
IMAGES = ("pet", "ct")  # each optional: a study has PET, CT or both (a table with neither is clinical-only)
MASK_PREFIX = "mask_"
# Every key a YAML manifest may have (labels and synthetic: written by bench.data.synthetic, read by nothing here).
MANIFEST_KEYS = ("format", "name", "description", "endpoint", "table", "time_unit", "horizons", "tau", "pet_units",
                 "thresholds", "table_thresholds", "calibration_horizon", "splits", "columns", "truth", "labels",
                 "synthetic")  # fmt: skip
FORMATS = (1,)
COLUMN_KEYS = ("kind", "categories")


@dataclass
class Problem:
    """One thing wrong with a cohort, said so that the user knows where to look."""

    message: str
    patient: str | None = None

    def __str__(self) -> str:
        return f"patient {self.patient!r}: {self.message}" if self.patient else self.message


@dataclass
class Manifest:
    path: Path
    name: str
    table: pd.DataFrame
    columns: dict[str, ColumnSpec]
    policy: EvaluationPolicy | None
    pet_units: str = "suv"
    description: str = ""
    truth: pd.DataFrame | None = None
    problems: list[Problem] = field(default_factory=list)
    table_file: Path | None = None  # the CSV the table was read from (the manifest itself for a bare CSV)
    splits_dir: Path | None = None  # ``splits:``, relative to the manifest: the cohort folder carries its splits

    @property
    def root(self) -> Path:
        return self.path.parent

    def resolve(self, value: str) -> Path:
        p = Path(str(value))
        return p if p.is_absolute() else self.root / p

    def __post_init__(self) -> None:
        self.table_file = self.table_file or self.path

    @property
    def image_columns(self) -> list[str]:
        """The image columns the table has (``pet``, ``ct`` or both; none for a clinical-only table)."""
        return [c for c in IMAGES if c in self.table.columns]

    @property
    def mask_columns(self) -> list[str]:
        return [c for c in self.table.columns if c.startswith(MASK_PREFIX)]


def is_manifest_path(dataset: str) -> bool:
    return dataset.lower().endswith((".csv", ".yaml", ".yml")) or Path(dataset).is_dir()


def read_manifest(path: str | Path, horizons: tuple[float, ...] | None = None, tau: float | None = None,
                  outcomes: bool = True) -> Manifest:  # fmt: skip
    """Parse a manifest and check its table; problems are recorded on the result (nothing is read from images).
    ``outcomes=False``: a cohort of images only (``bench robustness``), whose time and event may be absent."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.yaml"
    if not path.exists():
        raise InputError(f"manifest {str(path)!r} does not exist")
    header: dict = {}
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            header = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InputError(f"manifest {str(path)!r} is not valid YAML: {str(exc).splitlines()[0]}") from exc
        if not isinstance(header, dict) or "table" not in header:
            raise InputError(f"manifest {str(path)!r} must be a mapping with at least a 'table' entry")
        table_path = path.parent / str(header["table"])
    else:
        table_path = path
    try:
        # index_col=False: a row with more fields than the header is an error, never a shifted table.
        with warnings.catch_warnings():  # a row of the wrong width is reported below, by line
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            table = pd.read_csv(table_path, dtype=str, keep_default_na=False, na_values=[""], index_col=False)
    except FileNotFoundError:
        raise InputError(
            f"manifest table {str(table_path)!r} does not exist; fix the manifest's 'table' entry"
        ) from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read manifest table {str(table_path)!r}: {str(exc).splitlines()[0]}") from exc
    table.columns = [c.strip() for c in table.columns]

    problems: list[Problem] = []
    header_names, widths = _layout(table_path)
    for name in sorted({n for n in header_names if header_names.count(n) > 1}):
        problems.append(Problem(f"column {name!r} appears more than once in the header of {table_path.name}"))
    for number, width in widths:
        fields = f"has {width} fields, the header {len(header_names)}"
        problems.append(Problem(f"row {number} of {table_path.name} {fields}"))
    problems += _header_problems(header, path)
    policy, problem = declared_policy(header, horizons, tau)
    problems += [Problem(f"{path.name}: {problem}")] if problem else []
    columns = _columns(header, table, problems, path)
    truth = None
    if header.get("truth"):
        truth_path = path.parent / str(header["truth"])
        if truth_path.exists():
            truth = pd.read_csv(truth_path, dtype={"patient_id": str}).set_index("patient_id")
        else:
            problems.append(Problem(f"truth table {str(truth_path)!r} does not exist"))
    manifest = Manifest(
        path=path,
        name=str(header.get("name") or path.stem),
        table=table,
        columns=columns,
        policy=policy,
        pet_units=str(header.get("pet_units", "suv")).lower(),
        description=str(header.get("description", "")),
        truth=truth,
        problems=problems,
        table_file=table_path,
        splits_dir=(path.parent / str(header["splits"])).resolve() if header.get("splits") else None,
    )
    _check_table(manifest, outcomes)
    if outcomes and manifest.policy is None and not ({"horizons", "tau"} & set(header)) and horizons is None and tau is None \
            and not manifest.problems:  # fmt: skip
        time, event = (pd.to_numeric(manifest.table[c]).to_numpy(float) for c in ("time", "event"))
        try:
            manifest.policy = derived_policy(time, event.astype(bool), header)
        except DataError as exc:
            manifest.problems.append(Problem(f"{path.name}: {exc}"))
    return manifest


def check_images(manifest: Manifest, progress: bool = True) -> list[Problem]:
    """Read every image and mask of the manifest; the problems found, one per bad file."""
    from tqdm.auto import tqdm

    from bench.data.imaging.grid import check_overlap, mask_on
    from bench.data.imaging.io import PET_UNITS, read_ct, read_mask, read_pet

    problems: list[Problem] = []
    if "patient_id" not in manifest.table.columns or not manifest.image_columns:
        return problems
    for _, row in tqdm(list(manifest.table.iterrows()), desc="check images", disable=not progress, leave=False):
        pid = str(row["patient_id"])
        images = {}
        for what, reader in (("pet", read_pet), ("ct", read_ct)):
            if what not in manifest.image_columns or not isinstance(row[what], str):
                continue
            if not manifest.resolve(row[what]).exists():
                continue  # already reported by the table check
            if what == "pet" and manifest.pet_units not in PET_UNITS:
                continue  # reported with the manifest's keys
            try:
                kwargs = {"units": manifest.pet_units} if what == "pet" else {}
                images[what] = reader(manifest.resolve(row[what]), patient=pid, **kwargs)
            except InputError as exc:
                problems.append(Problem(_without_patient(str(exc), pid), pid))
        for col in manifest.mask_columns:
            if isinstance(row[col], str) and row[col] and manifest.resolve(row[col]).exists():
                try:
                    images[col] = read_mask(manifest.resolve(row[col]), patient=pid, roi=col[len(MASK_PREFIX) :])
                except InputError as exc:
                    problems.append(Problem(_without_patient(str(exc), pid), pid))
        if "pet" in images and "ct" in images:
            try:
                pet_file, ct_file = str(manifest.resolve(row["pet"])), str(manifest.resolve(row["ct"]))
                check_overlap(images["pet"], images["ct"], f"PET {pet_file!r}", f"CT {ct_file!r}", patient=pid)
            except InputError as exc:
                problems.append(Problem(_without_patient(str(exc), pid), pid))
        grid = "pet" if _given(row.get("pet")) else "ct"  # the grid a run brings every mask onto
        for col in [c for c in manifest.mask_columns if c in images and grid in images]:
            what, on = (
                f"{_label(col)} {str(manifest.resolve(row[col]))!r}",
                f"{grid.upper()} {str(manifest.resolve(row[grid]))!r}",
            )
            try:
                mask_on(images[col], images[grid], what, on, pid, col)
            except InputError as exc:
                problems.append(Problem(_without_patient(str(exc), pid), pid))
    return problems


def manifest_cohort(manifest: Manifest, source: str, outcomes: bool = True) -> Cohort:
    """The cohort of a manifest whose table has no problems (the first one is raised otherwise); ``outcomes=False``:
    its time and event are never read (all 0), for commands that read images only."""
    if manifest.problems:
        first = manifest.problems[0]
        more = len(manifest.problems) - 1
        suffix = f" ({more} more; run `bench data check {source}` to list them all)" if more else ""
        raise InputError(f"{manifest.path}: {first}{suffix}")
    if manifest.policy is None and outcomes:
        raise InputError(
            f"{manifest.path}: no horizons and tau; declare them in a YAML manifest or pass --horizons and --tau"
        )
    table = manifest.table
    ids = table["sample_id"] if "sample_id" in table.columns else table["patient_id"]
    clinical = pd.DataFrame(index=ids.astype(str).to_numpy())
    groups = _groups(manifest)
    features = {col: spec for col, spec in manifest.columns.items() if spec.kind != "group"}
    for col, spec in features.items():
        # The same parse as the check (which passed): missing cells become NaN / None, imputed in-fold.
        values = [_clinical_value(v, col, spec)[0] for v in table[col]]
        clinical[col] = pd.Series(values, dtype=float if spec.kind == "numeric" else object).to_numpy()
    inputs = {}
    for sid, (_, row) in zip(clinical.index, table.iterrows()):
        masks = {
            c[len(MASK_PREFIX) :]: manifest.resolve(row[c])
            for c in manifest.mask_columns
            if isinstance(row[c], str) and row[c]
        }
        if manifest.image_columns:
            pet, ct = (manifest.resolve(row[c]) if _given(row.get(c)) else None for c in IMAGES)
            inputs[sid] = StudyInputs(pet, ct, masks, manifest.pet_units)
    return Cohort(
        name=manifest.name,
        clinical=clinical,
        time=pd.to_numeric(table["time"]).to_numpy(float) if outcomes else np.zeros(len(table)),
        event=pd.to_numeric(table["event"]).to_numpy(int).astype(bool) if outcomes else np.zeros(len(table), bool),
        columns=features,
        policy=manifest.policy or EvaluationPolicy((1.0,), 1.0),  # outcomes=False: no policy applies
        patient_ids=table["patient_id"].astype(str).to_numpy(),
        description=manifest.description or f"user cohort from {manifest.path.name}",
        source=str(manifest.path),
        inputs=inputs,
        truth=manifest.truth,
        manifest=manifest.path,
        splits_dir=manifest.splits_dir,
        groups=groups,
    )


def _groups(manifest: Manifest) -> dict[str, np.ndarray]:
    """Each grouping column's value per sample (``kind: group``): text, never missing, never a feature."""
    out = {}
    for col in (c for c, spec in manifest.columns.items() if spec.kind == "group"):
        values = manifest.table[col].astype(str).str.strip()
        missing = manifest.table[col].isna() | values.str.lower().isin(MISSING)
        if missing.any():
            patient = manifest.table["patient_id"][missing].iloc[0]
            raise InputError(f"{manifest.path}: patient {patient!r} has no {col!r}; a group column needs a value for "
                             "every patient (fill it in, or drop the column from 'columns')")  # fmt: skip
        out[col] = values.to_numpy()
    return out


def _header_problems(header: dict, path: Path) -> list[Problem]:
    """Unknown keys (a typo is never ignored), an unknown format, PET units that cannot be read."""
    from bench.data.imaging.io import PET_UNITS

    problems = [
        Problem(f"{path.name}: {_unknown_key(key, MANIFEST_KEYS)}") for key in header if key not in MANIFEST_KEYS
    ]
    if "format" in header and header["format"] not in FORMATS:
        problems.append(Problem(f"{path.name}: format {header['format']!r} is unknown; this bench reads format 1"))
    units = str(header.get("pet_units", "suv")).lower()
    if units not in PET_UNITS:
        problems.append(Problem(f"{path.name}: pet_units {header['pet_units']!r} is unknown; use suv or bqml"))
    return problems


def _unknown_key(key, valid: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(key), valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}; valid keys: {', '.join(valid)}"


def _columns(header: dict, table: pd.DataFrame, problems: list[Problem], path: Path) -> dict[str, ColumnSpec]:
    declared = header.get("columns")
    if declared is None:  # a bare table: infer the type of every non-reserved column
        return {
            col: _infer(table[col]) for col in table.columns if col not in RESERVED and not col.startswith(MASK_PREFIX)
        }
    example = "e.g. 'age: numeric' or 'sex: {kind: categorical, categories: [F, M]}'"
    if not isinstance(declared, dict):
        problems.append(Problem(f"{path.name}: 'columns' must map each clinical column to its kind ({example})"))
        return {}
    columns: dict[str, ColumnSpec] = {}
    for col, spec in declared.items():
        col = str(col)
        if col in RESERVED or col.startswith(MASK_PREFIX):
            problems.append(
                Problem(f"{path.name}: {col!r} is a reserved column, not a clinical one; remove it from 'columns'")
            )
            continue
        if isinstance(spec, str):
            spec = {"kind": spec}
        if not isinstance(spec, dict):
            problems.append(Problem(f"{path.name}: column {col!r} is declared as {spec!r}; give its kind ({example})"))
            continue
        unknown = [key for key in spec if key not in COLUMN_KEYS]
        if unknown:
            problems.append(Problem(f"{path.name}: column {col!r} has {_unknown_key(unknown[0], COLUMN_KEYS)}"))
            continue
        kind = spec.get("kind")
        if kind not in ("numeric", "categorical", "ordinal", "group"):
            problems.append(
                Problem(f"{path.name}: column {col!r} has kind {kind!r}; use numeric, categorical, ordinal or group")
            )
            continue
        given = spec.get("categories") or []
        if not isinstance(given, list):
            problems.append(
                Problem(f"{path.name}: categories of column {col!r} must be a list ([F, M]), not {given!r}")
            )
            continue
        categories = tuple(str(c) for c in given)
        if kind in ("numeric", "group") and categories:
            problems.append(
                Problem(
                    f"{path.name}: numeric column {col!r} has categories {list(categories)}; "
                    "declare it categorical or ordinal, or drop the categories"
                )
            )
            continue
        repeated = sorted({c for c in categories if categories.count(c) > 1})
        if repeated:
            problems.append(Problem(f"{path.name}: column {col!r} lists {repeated} more than once in its categories"))
            continue
        if kind == "ordinal" and not categories:
            problems.append(Problem(f"{path.name}: ordinal column {col!r} needs its categories in order"))
            continue
        if col not in table.columns:
            problems.append(Problem(f"clinical column {col!r} declared in {path.name} is missing from the table"))
            continue
        columns[col] = ColumnSpec(kind, categories)
    return columns


# Cells that mean "not recorded" in a clinical column (compared after stripping, ignoring case). They
# become NaN (numeric) or None (categorical, ordinal), imputed in-fold by bench.protocol.preprocessing.
MISSING = ("", "nan", "na", "n/a", "null", "none")
MISSING_HINT = "leave the cell empty / NA for missing"


def _infer(series: pd.Series) -> ColumnSpec:
    """Numeric when most recorded values are numbers (the check then lists the others), else categorical.

    A majority rather than all: one typo ('12,5') in an age column is reported, not
    turned into a categorical column of a hundred levels.
    """
    recorded = [v.strip() for v in series if isinstance(v, str) and v.strip().lower() not in MISSING]
    numbers = sum(_finite(v) is not None for v in recorded)
    if recorded and 2 * numbers > len(recorded):
        return ColumnSpec("numeric")
    return ColumnSpec("categorical", tuple(sorted(set(recorded))))


def _clinical_value(value, col: str, spec: ColumnSpec, inferred: bool = False) -> tuple[float | str | None, str | None]:
    """A clinical cell as the cohort holds it (float for numeric, the level otherwise; NaN / None when missing)
    and what is wrong with it, if anything. The check and the cohort both parse cells here."""
    if _missing(value, spec):
        return (math.nan if spec.kind == "numeric" else None), None
    text = value.strip()
    if spec.kind == "numeric":
        number = _finite(text)
        if number is not None:
            return number, None
        what = "not a finite number" if _number(text) is not None else "not a number"
        hint = f"use a number, or {MISSING_HINT}"
        if inferred:
            hint += f"; its type was inferred, declare it in a YAML manifest's columns if {col!r} is categorical"
        return math.nan, f"clinical column {col!r} holds {value!r}, {what} ({hint})"
    if spec.categories and text not in spec.categories:  # for a bare table, every level seen is declared
        return None, (
            f"clinical column {col!r} holds {value!r}, not one of its declared categories {list(spec.categories)} "
            f"(use one of them, add it to the column's categories in the manifest, or {MISSING_HINT})"
        )
    return text, None


def _missing(value, spec: ColumnSpec) -> bool:
    """An empty cell (read as NaN) or a missing token; a declared level wins over a token ('NA' may be a level)."""
    if not isinstance(value, str):
        return True
    text = value.strip()
    return text.lower() in MISSING and text not in spec.categories


def _finite(text: str) -> float | None:
    """``text`` as a finite number, or None; the spellings a CSV reader accepts (not Python's '1_000')."""
    if "_" in text:
        return None
    number = _number(text)
    return number if number is not None and math.isfinite(number) else None


def _check_table(m: Manifest, outcomes: bool = True) -> None:
    table, problems = m.table, m.problems
    for col in REQUIRED if outcomes else ("patient_id",):
        if col not in table.columns:
            problems.append(Problem(f"column {col!r} is missing from the table {m.table_file.name}" + (
                "; without outcomes only `bench robustness` can use the cohort" if col != "patient_id" else "")))
    if "patient_id" not in table.columns:
        return
    if table.empty:
        problems.append(Problem(f"no studies in {m.table_file.name}: it has a header only; add one row per study"))
        return
    ids = table["sample_id"] if "sample_id" in table.columns else table["patient_id"]
    for dup in sorted(set(ids[ids.duplicated()].astype(str))):
        what = "sample id" if "sample_id" in table.columns else "patient id"
        problems.append(Problem(f"{what} {dup!r} appears more than once in {m.path.name}", dup))
    for number, (_, row) in enumerate(table.iterrows(), start=2):
        if not isinstance(row["patient_id"], str) or not row["patient_id"].strip():
            problems.append(Problem(f"row {number} of {m.table_file.name} has no patient_id; give every study one"))
            continue
        pid = str(row["patient_id"])
        if "time" in table.columns:
            t = _number(row["time"])
            if t is None or not math.isfinite(t):
                problems.append(Problem(f"time is missing or not a number ({row['time']!r}); give the follow-up", pid))
            elif t < 0:
                problems.append(Problem(f"time {row['time']!r} is negative; give the follow-up (>= 0)", pid))
        if "event" in table.columns and str(row["event"]).strip() not in ("0", "1"):
            problems.append(Problem(f"event {row['event']!r} is not 0 or 1", pid))
        if m.image_columns and not any(_given(row[c]) for c in m.image_columns):
            columns = " or ".join(repr(c) for c in m.image_columns)
            problems.append(Problem(f"no image: give a path in column {columns}", pid))
        for what in (*m.image_columns, *m.mask_columns):
            value = row[what]
            if not _given(value):
                continue
            if not m.resolve(value).exists():
                problems.append(
                    Problem(f"{_label(what)} file {str(m.resolve(value))!r} (column {what!r}) does not exist", pid)
                )
        for col, spec in m.columns.items():
            _, problem = _clinical_value(row[col], col, spec, inferred=m.path.suffix.lower() == ".csv")
            if problem:
                problems.append(Problem(problem, pid))
    for col, spec in m.columns.items():  # in-fold imputation needs at least one recorded value
        if all(_missing(v, spec) for v in table[col]):
            problems.append(Problem(f"clinical column {col!r} has no value in any row; fill it in, or drop the column"))


def _layout(table_path: Path) -> tuple[list[str], list[tuple[int, int]]]:
    """The column names as written (pandas renames a repeated one to 'name.1'), and the rows (line number,
    field count) whose number of fields differs from the header's (pandas would drop or shift values)."""
    import csv

    with table_path.open(newline="", encoding="utf-8", errors="replace") as handle:
        rows = csv.reader(handle)
        names = [name.strip() for name in next(rows, [])]
        return names, [(i, len(r)) for i, r in enumerate(rows, start=2) if r and len(r) != len(names)]


def _given(value) -> bool:
    """A path cell that holds something (an empty cell reads as NaN)."""
    return isinstance(value, str) and bool(value.strip())


def _label(column: str) -> str:
    return f"{column[len(MASK_PREFIX) :]} mask" if column.startswith(MASK_PREFIX) else column.upper()


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _without_patient(message: str, patient: str) -> str:
    prefix = f"patient {patient!r}: "
    return message.removeprefix(prefix)
