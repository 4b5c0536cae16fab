"""The cohort: who the patients are, what they had, and when they progressed.

A cohort is the only thing every stage sees. Samples are rows; ``patient_id``
groups several samples of one patient so that splits never separate them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from bench.data.inputs import StudyInputs
from bench.errors import DataError

ColumnKind = Literal["numeric", "categorical", "ordinal", "group"]  # group: a site or centre, never a feature


@dataclass(frozen=True)
class ColumnSpec:
    """How a covariate is typed; encoding itself happens in-fold."""

    kind: ColumnKind
    categories: tuple[str, ...] = ()  # level order for ordinal, known levels for categorical


DEFAULT_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 11))  # 0.05 to 0.50 by 0.05


@dataclass(frozen=True)
class EvaluationPolicy:
    """Declared once per dataset and applied to every fold, replicate and model."""

    horizons: tuple[float, ...]  # time points of the cumulative/dynamic AUC
    tau: float  # truncation time of Uno's C
    time_unit: str = "days"
    ibs_points: int = 50  # the integrated Brier score spans [horizons[0], horizons[-1]]
    # What time and event measure ("overall survival", "progression-free survival"): the y-axis of survival figures
    endpoint: str = "survival"
    # Threshold probabilities of the decision curves (net benefit at each horizon), and the two the page's
    # calibration table shows
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    table_thresholds: tuple[float, float] = (0.1, 0.2)
    calibration_horizon: float | None = None  # the page's calibration table; None: the middle horizon
    derived: bool = False  # horizons and tau derived from the event times (``derived_policy``), not declared

    def __post_init__(self) -> None:
        if not self.horizons or list(self.horizons) != sorted(self.horizons) or self.horizons[0] <= 0:
            raise DataError(f"horizons must be positive and increasing, got {self.horizons}")
        if self.tau <= 0:
            raise DataError(f"tau must be positive, got {self.tau}")
        if not isinstance(self.endpoint, str) or not self.endpoint.strip():
            raise DataError(f"the endpoint must be text such as 'overall survival', got {self.endpoint!r}")
        if not self.thresholds or any(not 0 < p < 1 for p in self.thresholds) or list(self.thresholds) != sorted(
            set(self.thresholds)
        ):
            raise DataError(f"thresholds must be increasing probabilities in (0, 1), got {self.thresholds}")
        if len(self.table_thresholds) != 2 or not set(self.table_thresholds) <= set(self.thresholds):
            raise DataError(f"table_thresholds must be two of the thresholds {self.thresholds}, "
                            f"got {self.table_thresholds}")  # fmt: skip
        if self.calibration_horizon is not None and self.calibration_horizon not in self.horizons:
            raise DataError(f"calibration_horizon must be one of the horizons {self.horizons}, "
                            f"got {self.calibration_horizon}")  # fmt: skip

    def declared(self, header: dict) -> EvaluationPolicy:
        """This policy with a manifest's optional ``thresholds``, ``table_thresholds`` and ``calibration_horizon``."""
        changes: dict = {}
        for key in ("thresholds", "table_thresholds"):
            value = header.get(key)
            if value is None:
                continue
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise DataError(f"{key} must be a list of probabilities, e.g. [0.1, 0.2], got {value!r}")
            try:
                changes[key] = tuple(float(p) for p in value)
            except (TypeError, ValueError):
                raise DataError(f"{key} must be a list of probabilities, e.g. [0.1, 0.2], got {value!r}") from None
        if header.get("calibration_horizon") is not None:
            try:
                changes["calibration_horizon"] = float(header["calibration_horizon"])
            except (TypeError, ValueError):
                raise DataError(f"calibration_horizon must be one of the horizons, got "
                                f"{header['calibration_horizon']!r}") from None  # fmt: skip
        return dataclasses.replace(self, **changes) if changes else self

    @property
    def calibration_at(self) -> float:
        """The horizon of the page's calibration table: the declared one, or the middle horizon."""
        if self.calibration_horizon is not None:
            return self.calibration_horizon
        return self.horizons[(len(self.horizons) - 1) // 2]

    @property
    def ibs_times(self) -> np.ndarray:
        lo, hi = self.horizons[0], self.horizons[-1]
        return np.linspace(lo, hi, self.ibs_points) if hi > lo else np.array([lo])

    def as_params(self) -> dict[str, str]:
        return {
            "horizons": ",".join(_fmt(h) for h in self.horizons),
            "tau": _fmt(self.tau),
            "time_unit": self.time_unit,
            "ibs_range": f"{_fmt(self.horizons[0])}-{_fmt(self.horizons[-1])}",
            "thresholds": ",".join(_fmt(p) for p in self.thresholds),
            "table_thresholds": ",".join(_fmt(p) for p in self.table_thresholds),
            "calibration_horizon": _fmt(self.calibration_at),
            **({"derived": "event-time quartiles"} if self.derived else {}),
        }


@dataclass
class Cohort:
    """Outcomes and clinical covariates of one dataset, one row per sample."""

    name: str
    clinical: pd.DataFrame  # index: sample id (str)
    time: np.ndarray
    event: np.ndarray
    columns: dict[str, ColumnSpec]
    policy: EvaluationPolicy
    patient_ids: np.ndarray | None = None  # defaults to the sample ids
    default_split: str = "cv5"
    description: str = ""
    source: str = ""
    inputs: Mapping[str, StudyInputs] = field(default_factory=dict)  # sample id -> images, for imaging cohorts
    truth: pd.DataFrame | None = None  # synthetic cohorts: true risk per patient (tests, oracle row; never a feature)
    manifest: Path | None = None  # the manifest a user cohort was read from
    splits_dir: Path | None = None  # where its splits live when its manifest says (``splits:``); else ./splits
    # Grouping columns (``kind: group``, a site or centre): column -> each sample's group; never a model feature
    groups: Mapping[str, np.ndarray] = field(default_factory=dict)
    _content: str | None = field(default=None, init=False, repr=False, compare=False)  # content_fingerprint()

    def __post_init__(self) -> None:
        self.time = np.asarray(self.time, dtype=float)
        self.event = np.asarray(self.event, dtype=bool)
        self.clinical.index = self.clinical.index.astype(str)
        if self.patient_ids is None:
            self.patient_ids = self.clinical.index.to_numpy()
        self.patient_ids = np.asarray(self.patient_ids, dtype=str)
        n = len(self.clinical)
        if not (len(self.time) == len(self.event) == len(self.patient_ids) == n):
            raise DataError(f"cohort {self.name!r}: clinical, time, event and patient ids differ in length")
        if self.clinical.index.has_duplicates:
            dup = self.clinical.index[self.clinical.index.duplicated()][0]
            raise DataError(f"cohort {self.name!r}: sample id {dup!r} appears twice")
        bad = np.flatnonzero(~np.isfinite(self.time) | (self.time < 0))
        if bad.size:
            sid = self.sample_ids[bad[0]]
            raise DataError(f"cohort {self.name!r}: sample {sid!r} has invalid time {self.time[bad[0]]!r}")
        missing = set(self.columns) - set(self.clinical.columns)
        if missing:
            raise DataError(f"cohort {self.name!r}: declared columns missing from the table: {sorted(missing)}")

    @property
    def has_images(self) -> bool:
        return bool(self.inputs)

    @property
    def sample_ids(self) -> np.ndarray:
        return self.clinical.index.to_numpy()

    @property
    def n(self) -> int:
        return len(self.clinical)

    @property
    def n_events(self) -> int:
        return int(self.event.sum())

    @property
    def y(self) -> np.ndarray:
        """Outcomes as scikit-survival's structured (event, time) array."""
        return structured_y(self.event, self.time)

    def subset(self, index: np.ndarray | list[int]) -> Cohort:
        """The cohort restricted to the samples at ``index`` (same name, policy and inputs)."""
        idx = np.asarray(index)
        return Cohort(
            name=self.name,
            clinical=self.clinical.iloc[idx].copy(),
            time=self.time[idx],
            event=self.event[idx],
            columns=self.columns,
            policy=self.policy,
            patient_ids=self.patient_ids[idx],
            default_split=self.default_split,
            description=self.description,
            source=self.source,
            inputs=self.inputs,
            truth=self.truth,
            manifest=self.manifest,
            splits_dir=self.splits_dir,
            groups={name: values[idx] for name, values in self.groups.items()},
        )

    def fingerprint(self) -> str:
        """sha256 over the sorted (patient, sample, time, event) rows: what a split depends on."""
        rows = sorted(
            f"{p}\t{s}\t{t!r}\t{int(e)}"
            for p, s, t, e in zip(self.patient_ids, self.sample_ids, self.time.tolist(), self.event)
        )
        return hashlib.sha256("\n".join(rows).encode()).hexdigest()

    def content_fingerprint(self) -> str:
        """sha256 over everything a result is computed from: outcomes, clinical values and their types, and
        the bytes of every image and mask (not their paths: a moved cohort keeps its fingerprint).

        Part of every run's identity, so two cohorts that differ in one mask never share a run name and
        one leaderboard never mixes them. Each file is read once per process (``bench.cache.file_digest``).
        """
        if self._content is None:
            from bench.cache import file_digest

            digest = hashlib.sha256(self.fingerprint().encode())
            digest.update(self.clinical.to_csv(lineterminator="\n").encode())
            digest.update(repr(sorted((c, s.kind, s.categories) for c, s in self.columns.items())).encode())
            for sid in sorted(self.inputs):
                study = self.inputs[sid]
                files = [(m, getattr(study, m)) for m in study.modalities]
                files += [(f"mask_{roi}", study.masks[roi]) for roi in sorted(study.masks)]
                digest.update(f"\n{sid}\t{study.pet_units}".encode())
                for role, path in files:
                    digest.update(f"\t{role}:{file_digest(path)}".encode())
            self._content = digest.hexdigest()
        return self._content


def structured_y(event: np.ndarray, time: np.ndarray) -> np.ndarray:
    y = np.empty(len(time), dtype=[("event", bool), ("time", float)])
    y["event"] = event
    y["time"] = time
    return y


def _fmt(x: float) -> str:
    return f"{x:g}"
