"""Splits are data: made once, written with a fingerprint and a hash, verified on every load.

A split file assigns every *patient* (not sample) of a cohort, per repeat, to the
fold in which it is tested; ``-1`` means "never tested" (the training part of a
holdout split). Train sets are the complement, so a patient can never be in the
train and test part of one fold, and all samples of a patient move together.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.cohort import Cohort
from bench.errors import SplitError, UsageError

FORMAT = 1
TRAIN_ONLY = -1


@dataclass(frozen=True)
class Fold:
    """One train/test partition, as sample indices into the cohort."""

    repeat: int
    index: int
    train: np.ndarray
    test: np.ndarray

    @property
    def key(self) -> str:
        return f"r{self.repeat}f{self.index}"


@dataclass(frozen=True)
class Split:
    dataset: str
    name: str
    scheme: dict
    fingerprint: str
    assignments: tuple[dict[str, int], ...]  # one per repeat: patient id -> test fold
    sha256: str
    # The horizons and tau of a cohort that declares none, derived when the split was made and frozen with it
    policy: dict | None = None

    @property
    def n_folds(self) -> int:
        return max(max(a.values()) for a in self.assignments) + 1

    def content(self) -> dict:
        return {
            "format": FORMAT,
            "dataset": self.dataset,
            "name": self.name,
            "scheme": self.scheme,
            "cohort_fingerprint": self.fingerprint,
            "assignments": [dict(sorted(a.items())) for a in self.assignments],
            **({"policy": self.policy} if self.policy is not None else {}),
        }

    def folds(self, cohort: Cohort) -> list[Fold]:
        """The folds as sample indices of ``cohort`` (which must be the cohort it was verified on)."""
        out = []
        for r, assignment in enumerate(self.assignments):
            fold_of_sample = np.array([assignment[p] for p in cohort.patient_ids])
            for k in range(self.n_folds):
                test = np.flatnonzero(fold_of_sample == k)
                out.append(Fold(r, k, np.flatnonzero(fold_of_sample != k), test))
        return out


def splits_dir(cohort: Cohort | None = None) -> Path:
    """Where a user's split files are read and written: the folder the cohort's manifest names (``splits:``,
    wherever ``bench`` runs from), else ``$BENCH_SPLITS_DIR``, else ``./splits``."""
    if cohort is not None and cohort.splits_dir is not None:
        return cohort.splits_dir
    env = os.environ.get("BENCH_SPLITS_DIR")
    return Path(env) if env else Path.cwd() / "splits"


def builtin_splits_dir() -> Path | None:
    """The built-in datasets' frozen splits, shipped read-only with the package (the repository's ``splits/``)."""
    package = Path(__file__).resolve().parents[1]
    for folder in (package / "_builtin_splits", package.parent / "splits"):  # installed; a source checkout
        if folder.is_dir():
            return folder
    return None


def split_path(dataset: str, name: str, cohort: Cohort | None = None) -> Path:
    """Where ``bench splits make`` writes a split (always the user's folder, never the package)."""
    return splits_dir(cohort) / dataset / f"{name}.json"


def find_split(dataset: str, name: str, cohort: Cohort | None = None) -> Path:
    """The split file to read: the user's folder first, then the built-in copy; the user's path if neither has it."""
    user = split_path(dataset, name, cohort)
    builtin = builtin_splits_dir()
    if not user.exists() and builtin is not None and (builtin / dataset / f"{name}.json").exists():
        return builtin / dataset / f"{name}.json"
    return user


def available_splits(dataset: str, cohort: Cohort | None = None) -> list[str]:
    folders = [splits_dir(cohort) / dataset] + ([builtin / dataset] if (builtin := builtin_splits_dir()) else [])
    return sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.json")})


def make_split(
    cohort: Cohort,
    name: str = "cv5",
    folds: int = 5,
    repeats: int = 1,
    seed: int = 0,
    holdout: float | None = None,
) -> Split:
    """Stratified-by-event, grouped-by-patient k-fold (or holdout) split of ``cohort``."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    patients, events = _patient_table(cohort)
    assignments: list[dict[str, int]] = []
    if repeats < 1:
        raise UsageError(f"--repeats must be at least 1, got {repeats}")
    if holdout is not None:
        if not 0 < holdout < 1:
            raise UsageError(f"--holdout must be a fraction between 0 and 1, got {holdout}")
        _check_holdout_size(cohort.name, events, holdout)
        scheme = {"type": "holdout", "test_fraction": holdout, "repeats": repeats, "seed": seed, "stratify": "event"}
        for r in range(repeats):
            _, test = train_test_split(
                np.arange(len(patients)), test_size=holdout, stratify=events, random_state=seed + r
            )
            fold = np.full(len(patients), TRAIN_ONLY)
            fold[test] = 0
            assignments.append(dict(zip(patients, fold.tolist())))
    else:
        if folds < 2:
            raise UsageError(f"--folds must be at least 2, got {folds}")
        if min(events.sum(), (~events).sum()) < folds:
            most = int(min(events.sum(), (~events).sum()))
            instead = f"use --folds {most} or fewer" if most >= 2 else "add patients"
            raise UsageError(
                f"cannot make {folds} folds of dataset {cohort.name!r} stratified by event: {_counts(events)}, "
                f"and every fold needs at least one event and one censored patient; {instead}, or freeze a split "
                "made elsewhere with `bench splits import`"
            )
        scheme = {"type": "kfold", "folds": folds, "repeats": repeats, "seed": seed, "stratify": "event"}
        for r in range(repeats):
            fold = np.empty(len(patients), dtype=int)
            cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed + r)
            for k, (_, test) in enumerate(cv.split(patients, events)):
                fold[test] = k
            assignments.append(dict(zip(patients, fold.tolist())))
    return _sealed(cohort.name, name, scheme, cohort.fingerprint(), assignments, _frozen_policy(cohort))


MIN_GROUP_PATIENTS = 10  # a test group smaller than this, or with fewer events, gives no usable C-index
MIN_GROUP_EVENTS = 2


def make_group_split(cohort: Cohort, name: str, by: str, test_groups: tuple[str, ...] = ()) -> Split:
    """Splits by a grouping column (``kind: group``, a site): each group once as the test fold (leave one group
    out), or, with ``test_groups``, those groups held out together and the model trained on the others. A
    patient's samples are never in two groups; a test group with too few patients or events is refused."""
    if by not in cohort.groups:
        known = ", ".join(sorted(cohort.groups)) or "none (declare one in the manifest: site: {kind: group})"
        raise UsageError(f"--by {by!r} is not a group column of dataset {cohort.name!r}; its group columns: {known}")
    group_of: dict[str, str] = {}
    for patient, group in zip(cohort.patient_ids, cohort.groups[by]):
        if group_of.setdefault(str(patient), str(group)) != str(group):
            raise SplitError(f"patient {patient!r} has samples in {by} {group_of[str(patient)]!r} and {group!r}; "
                             "a patient must belong to one group")  # fmt: skip
    names = sorted(set(group_of.values()))
    unknown = [g for g in test_groups if g not in names]
    if unknown:
        raise UsageError(f"--test-groups: no {by} {unknown[0]!r} in dataset {cohort.name!r}; its {by}s: {', '.join(names)}")
    tested = list(test_groups) or names
    if len(names) < 2 or len(tested) == len(names) and test_groups:
        raise UsageError(f"a split by {by} needs a group to train on besides the test groups; {by}s: {', '.join(names)}")
    events = dict(zip(map(str, cohort.patient_ids), cohort.event))
    for group in tested:
        members = [p for p, g in group_of.items() if g == group]
        n_events = sum(bool(events[p]) for p in members)
        if len(members) < MIN_GROUP_PATIENTS or n_events < MIN_GROUP_EVENTS:
            raise SplitError(
                f"{by} {group!r} has {len(members)} patients ({n_events} events); a test {by} needs at least "
                f"{MIN_GROUP_PATIENTS} patients and {MIN_GROUP_EVENTS} events: merge it with another or leave it "
                "out of --test-groups"
            )
    if test_groups:
        assignment = {p: 0 if g in test_groups else TRAIN_ONLY for p, g in group_of.items()}
        scheme = {"type": "group", "by": by, "kind": "holdout", "test_groups": sorted(test_groups)}
    else:
        assignment = {p: names.index(g) for p, g in group_of.items()}
        scheme = {"type": "group", "by": by, "kind": "leave-one-out", "test_groups": names}
    _check_training_events(cohort, assignment, f"the split by {by}")
    return _sealed(cohort.name, name, scheme, cohort.fingerprint(), [assignment], _frozen_policy(cohort))


def import_split(cohort: Cohort, csv_path: str | Path, name: str) -> Split:
    """Freeze a split defined elsewhere: a CSV of ``patient_id`` and ``fold`` (int) or ``split`` (train/test)."""
    path = Path(csv_path)
    try:
        table = pd.read_csv(path, dtype=str)
    except (OSError, pd.errors.ParserError) as exc:
        raise SplitError(f"cannot read split CSV {str(path)!r}: {exc}") from exc
    if "patient_id" not in table.columns or not ({"fold", "split"} & set(table.columns)):
        raise SplitError(
            f"{path}: expected columns patient_id and fold (0..k-1) or split (train/test), got {list(table.columns)}"
        )
    dup = table["patient_id"][table["patient_id"].duplicated()]
    if len(dup):
        raise SplitError(f"{path}: patient {dup.iloc[0]!r} is listed twice")
    if "split" in table.columns:
        labels = table["split"].str.strip().str.lower()
        bad = table.loc[~labels.isin(["train", "test"]), "patient_id"]
        if len(bad):
            raise SplitError(
                f"{path}: patient {bad.iloc[0]!r} has split {table.loc[bad.index[0], 'split']!r}; use train or test"
            )
        values = np.where(labels == "test", 0, TRAIN_ONLY)
        scheme = {"type": "imported", "kind": "holdout", "source": path.name}
    else:
        try:
            raw = table["fold"].astype(int)
        except ValueError as exc:
            raise SplitError(f"{path}: fold must be an integer: {exc}") from exc
        levels = sorted(raw.unique())
        values = raw.map({v: i for i, v in enumerate(levels)}).to_numpy()
        scheme = {"type": "imported", "kind": "kfold", "folds": len(levels), "source": path.name}
    assignment = dict(zip(table["patient_id"].str.strip(), (int(v) for v in values)))
    _check_coverage(cohort, assignment, f"{path}")
    _check_training_events(cohort, assignment, str(path))
    return _sealed(cohort.name, name, scheme, cohort.fingerprint(), [assignment], _frozen_policy(cohort))


def save_split(split: Split, overwrite: bool = False, cohort: Cohort | None = None) -> Path:
    """Write atomically (into ``cohort``'s splits folder when its manifest names one); refuse to replace an
    existing split unless asked."""
    path = split_path(split.dataset, split.name, cohort)
    if path.exists() and not overwrite:
        raise SplitError(f"split file {path} already exists; splits are frozen, pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    body = {**split.content(), "sha256": split.sha256}
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def _dataset_argument(cohort: Cohort) -> str:
    """The ``--dataset`` that reaches ``cohort`` again: its registered name, else its manifest's path."""
    from bench.plugins.registry import DATASETS

    if cohort.manifest is None or cohort.name in DATASETS.names():
        return cohort.name
    return str(cohort.manifest)


def load_split(cohort: Cohort, name: str) -> Split:
    """Load ``splits/<dataset>/<name>.json`` and verify it against ``cohort``; a cohort whose policy is derived
    takes the horizons and tau the split froze when it was made."""
    path = find_split(cohort.name, name, cohort)
    if not path.exists():
        available = available_splits(cohort.name, cohort)
        hint = f"available: {', '.join(available)}" if available else "none exist yet"
        raise SplitError(
            f"no split {name!r} for dataset {cohort.name!r} ({path}); {hint}; "
            f"make one with: bench splits make --dataset {_dataset_argument(cohort)} --name {name}"
        )
    try:
        body = json.loads(path.read_text(), object_pairs_hook=_no_duplicate_keys)
    except SplitError as exc:
        raise SplitError(f"split file {path}: {exc}") from exc
    except ValueError as exc:
        raise SplitError(f"split file {path} is not valid JSON: {exc}") from exc
    try:
        split = Split(
            dataset=body["dataset"],
            name=body["name"],
            scheme=body["scheme"],
            fingerprint=body["cohort_fingerprint"],
            assignments=tuple(body["assignments"]),
            sha256=body["sha256"],
            policy=body.get("policy"),
        )
    except (KeyError, TypeError) as exc:
        raise SplitError(f"split file {path} lacks field {exc}; re-create it with bench splits make") from exc
    verify_split(split, cohort, str(path))
    if cohort.policy.derived and split.policy is not None:  # the horizons the split was made with, never moved
        cohort.policy = dataclasses.replace(
            cohort.policy, horizons=tuple(float(h) for h in split.policy["horizons"]), tau=float(split.policy["tau"])
        )
    return split


def verify_split(split: Split, cohort: Cohort, where: str) -> None:
    """Hash, dataset, cohort fingerprint, coverage and fold labels; each mismatch says which."""
    expected = _content_hash(split.content())
    if split.sha256 != expected:
        raise SplitError(
            f"split file {where} was modified after it was made (sha256 {split.sha256[:12]} recorded, "
            f"{expected[:12]} computed); restore it from version control or re-create it"
        )
    if split.dataset != cohort.name:
        raise SplitError(f"split file {where} was made for dataset {split.dataset!r}, not {cohort.name!r}")
    if split.fingerprint != cohort.fingerprint():
        raise SplitError(
            f"split {split.name!r} was made for a different cohort than the current {cohort.name!r} "
            f"(fingerprint of patient ids and outcomes differs); make a new split for this cohort"
        )
    for r, assignment in enumerate(split.assignments):
        _check_coverage(cohort, assignment, f"{where} (repeat {r})")
        labels = set(assignment.values())
        tested = sorted(v for v in labels if v != TRAIN_ONLY)
        if tested != list(range(len(tested))) or not tested or any(not isinstance(v, int) for v in labels):
            raise SplitError(
                f"{where} (repeat {r}): fold labels must be 0..k-1 (and -1 for train-only), got {sorted(labels)}"
            )
        if len(tested) == 1 and TRAIN_ONLY not in labels:
            raise SplitError(f"{where} (repeat {r}): the only fold tests every patient, leaving no training data")


def _check_coverage(cohort: Cohort, assignment: dict[str, int], where: str) -> None:
    patients = set(cohort.patient_ids.tolist())
    missing = sorted(patients - set(assignment))
    extra = sorted(set(assignment) - patients)
    if missing:
        raise SplitError(f"{where}: {len(missing)} patient(s) of {cohort.name!r} have no fold, e.g. {missing[:3]}")
    if extra:
        raise SplitError(f"{where}: {len(extra)} patient(s) are not in {cohort.name!r}, e.g. {extra[:3]}")


def _counts(events: np.ndarray) -> str:
    return f"{len(events)} patients, {int(events.sum())} with an event and {int((~events).sum())} censored"


def _check_holdout_size(dataset: str, events: np.ndarray, holdout: float) -> None:
    """A stratified holdout needs two patients of each outcome, and two in each part (sklearn's rule, said here)."""
    n_test = math.ceil(holdout * len(events))
    n_train = len(events) - n_test
    if min(events.sum(), (~events).sum()) >= 2 and min(n_test, n_train) >= 2:
        return
    raise UsageError(
        f"cannot hold out {holdout:g} of dataset {dataset!r} stratified by event: {_counts(events)} "
        f"({n_test} to test, {n_train} to train); it needs at least 2 events, 2 censored patients and 2 patients "
        "in each part; add patients, change --holdout, or freeze a split made elsewhere with `bench splits import`"
    )


def _check_training_events(cohort: Cohort, assignment: dict[str, int], where: str) -> None:
    """Every fold of an imported split leaves an event to train on (a model cannot be fitted without one)."""
    patients, events = _patient_table(cohort)
    folds = np.array([assignment[p] for p in patients])
    for k in sorted(set(folds.tolist()) - {TRAIN_ONLY}):
        train = folds != k
        if not events[train].any():
            raise SplitError(
                f"{where}: the training part of fold {k} ({int(train.sum())} patients of {cohort.name!r}) has no "
                "event, so no model can be fitted on it; move patients with an event into it"
            )


def _patient_table(cohort: Cohort) -> tuple[np.ndarray, np.ndarray]:
    """Sorted patient ids and whether each had an event (in any of its samples)."""
    frame = pd.DataFrame({"patient": cohort.patient_ids, "event": cohort.event})
    per_patient = frame.groupby("patient", sort=True)["event"].any()
    return per_patient.index.to_numpy(dtype=str), per_patient.to_numpy(dtype=bool)


def _sealed(dataset: str, name: str, scheme: dict, fingerprint: str, assignments: list[dict[str, int]],
            policy: dict | None = None) -> Split:  # fmt: skip
    unsealed = Split(dataset, name, scheme, fingerprint, tuple(assignments), "", policy)
    return Split(dataset, name, scheme, fingerprint, tuple(assignments), _content_hash(unsealed.content()), policy)


def _frozen_policy(cohort: Cohort) -> dict | None:
    """A derived policy's horizons and tau, to freeze in the split file (None for a declared policy)."""
    if not cohort.policy.derived:
        return None
    return {"horizons": list(cohort.policy.horizons), "tau": cohort.policy.tau, "derived": "event-time quartiles"}


def _content_hash(content: dict) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise SplitError(f"key {key!r} appears twice in the split file (a patient assigned twice?)")
        seen[key] = value
    return seen


def leakage_warning(split: Split, cohort: Cohort) -> str | None:
    """One line when test samples have a row identical to a training sample's (every covariate, time and event):
    the same individual on both sides of the split, most likely, as in the DeepSurv paper's WHAS file. None when
    no fold has any."""
    table = cohort.clinical.astype(str).assign(_time=cohort.time.astype(str), _event=cohort.event.astype(int))
    keys = [tuple(row) for row in table.itertuples(index=False)]
    leaking: set[int] = set()
    for fold in split.folds(cohort):
        seen = {keys[i] for i in fold.train}
        leaking.update(int(i) for i in fold.test if keys[i] in seen)
    if not leaking:
        return None
    tested = {int(i) for fold in split.folds(cohort) for i in fold.test}
    rows = len({keys[i] for i in leaking})
    return (f"warning: {len(leaking)} of {len(tested)} test samples of split {split.name!r} ({rows} distinct rows) "
            f"have a row identical to a training sample's (covariates, time and event): the same individuals on "
            f"both sides of the split, most likely; its test results are optimistic")  # fmt: skip
