"""The four cohorts of the DeepSurv paper, with the paper's own train/test split (the frozen split ``paper``).

Katzman et al., "DeepSurv: personalized treatment recommender system using a Cox proportional hazards deep
neural network", BMC Med Res Methodol 18:24 (2018). The HDF5 files come from the paper's repository at a fixed
commit (MIT licence); each holds ``train`` and ``test`` groups of ``x`` (n x d float32), ``t`` and ``e``.
A file is read from ``$BENCH_DATA_DIR/deepsurv_2018/`` when it is there, else from pooch's cache, else
downloaded into that cache; wherever it comes from, its sha256 must be the one below, so a page always
describes the same bytes.

The files store no covariate names. The names below follow the paper's lists where the value ranges settle
the column (a 0..9 count is the number of comorbidities, 31.7-41.7 is a temperature); a column they do not
settle keeps its position name ``x<j>``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.cohort import Cohort, ColumnSpec, EvaluationPolicy
from bench.errors import DataError

COMMIT = "41eed003e5b892c81e7855e400861fa7a2d9da4f"
# The repository keeps one folder per data set under experiments/data/ (whas/, support/, metabric/, gbsg/), the
# layout pycox's DeepSurv loaders download from; checked against the repository from memory, not over the network.
URL = f"https://raw.githubusercontent.com/jaredleekatzman/DeepSurv/{COMMIT}/experiments/data"
FOLDER = "deepsurv_2018"  # under $BENCH_DATA_DIR, and in pooch's cache
SOURCE = ("Katzman et al., BMC Med Res Methodol 18:24 (2018); HDF5 files of github.com/jaredleekatzman/DeepSurv "
          f"at {COMMIT[:12]} (MIT)")  # fmt: skip


@dataclass(frozen=True)
class PaperCohort:
    """One of the paper's files: where it is, what it must hash to, and how its columns and outcome read."""

    name: str  # the registered dataset
    folder: str  # sub-folder of experiments/data/ in the paper's repository
    file: str
    sha256: str
    columns: tuple[str, ...]  # covariate names in the file's column order
    policy: EvaluationPolicy
    description: str

    @property
    def url(self) -> str:
        return f"{URL}/{self.folder}/{self.file}"


COHORTS = {
    c.name: c
    for c in (
        PaperCohort(
            "deepsurv_whas", "whas", "whas_train_test.h5",
            "2ed86f073fdbe34be10f7e485eeaf67b61004521390c46b9a18aa9b82d5e8f9c",
            # The paper names age, sex, BMI, heart-failure complications (CHF) and order of MI (MIORD): age and
            # BMI are the two continuous columns, sex the binary one at 42 %; x0, x4 and x5 are binary (17, 33 and
            # 33 %) and the ranges do not tell CHF, MIORD and the sixth column apart.
            ("x0", "age", "sex", "bmi", "x4", "x5"),
            # Event times' quartiles are 110, 505 and 1219 days; the test part is followed up to 1993 days.
            EvaluationPolicy(horizons=(180.0, 365.0, 1095.0), tau=1095.0, endpoint="overall survival"),
            "Worcester Heart Attack Study as the DeepSurv paper used it: survival after myocardial infarction; "
            "train and test repeat individuals, so the split leaks",
        ),
        PaperCohort(
            "deepsurv_support", "support", "support_train_test.h5",
            "e398f49930e4efc4ecd675a72ac547f0d1ae25ccf13f6a1024cded12ea88a83e",
            # The paper's fourteen, in the file's order as the ranges show it: num_comorbidities has ten levels
            # (0-9) and race six, so the file swaps them against the paper's list; sodium (110-181) comes before
            # the white blood cell count (0-200, mean 12) and creatinine (0.1-21.5).
            ("age", "sex", "num_comorbidities", "race", "diabetes", "dementia", "cancer", "mean_bp", "heart_rate",
             "resp_rate", "temperature", "sodium", "wbc", "creatinine"),  # fmt: skip
            # Event times' quartiles are 14, 56 and 249 days; follow-up reaches 2029 days.
            EvaluationPolicy(horizons=(30.0, 180.0, 730.0), tau=730.0, endpoint="survival"),
            "Study to Understand Prognoses Preferences Outcomes and Risks of Treatment: seriously ill "
            "hospitalised adults, survival",
        ),
        PaperCohort(
            "deepsurv_metabric", "metabric", "metabric_IHC4_clinical_train_test.h5",
            "e959131973c906c7e8b1e662c81160914768156a6da145a9bfed9b9ee8bf3e72",
            # x0-x3 are the four IHC4 gene expressions (MKI67, EGFR, PGR, ERBB2 in the paper), whose order the
            # ranges do not settle; then four treatments/markers whose rates match METABRIC's (hormone therapy
            # 62 %, radiotherapy 60 %, chemotherapy 21 %, ER-positive 76 %) and the age at diagnosis.
            ("x0", "x1", "x2", "x3", "hormone_therapy", "radiotherapy", "chemotherapy", "er_positive", "age"),
            # Event times' quartiles are 42, 84 and 143 months; follow-up reaches 337 months.
            EvaluationPolicy(horizons=(36.0, 60.0, 120.0), tau=120.0, time_unit="months", endpoint="overall survival"),
            "Molecular Taxonomy of Breast Cancer International Consortium: IHC4 genes and clinical covariates, "
            "overall survival",
        ),
        PaperCohort(
            "rotterdam_gbsg", "gbsg", "gbsg_cancer_train_test.h5",
            "bd455f4395322a8b23040c15cedbef00ad51a447d02c95f1f1d686a6b196484b",
            # Hormone therapy (26 %), menopausal status (59 %), age, positive nodes (1-51) and the progesterone
            # (to 5004 fmol/l, Rotterdam's maximum) and oestrogen receptors; x1 (0, 1, 2) is the tumour size class
            # or the grade, which the ranges do not settle.
            ("hormone_therapy", "x1", "menopause", "age", "positive_nodes", "progesterone", "estrogen"),
            # Event times' quartiles are 13, 25 and 42 months; the GBSG test part is followed up to 87 months.
            EvaluationPolicy(horizons=(12.0, 36.0, 60.0), tau=60.0, time_unit="months",
                             endpoint="recurrence-free survival"),  # fmt: skip
            "Rotterdam tumour bank (train) and German Breast Cancer Study Group trial (test): an external "
            "validation, recurrence-free survival",
        ),
    )
}


def data_folder() -> Path:
    """Where a user may put the files by hand: ``$BENCH_DATA_DIR/deepsurv_2018`` (the project's data setting)."""
    from bench.data.synthetic.datasets import data_dir  # the one owner of $BENCH_DATA_DIR

    return data_dir() / FOLDER


def fetch(cohort: PaperCohort) -> Path:
    """The checked file: from the data folder, else pooch's cache, else downloaded there (sha256 checked)."""
    local = data_folder() / cohort.file
    if local.is_file():
        found = hashlib.sha256(local.read_bytes()).hexdigest()
        if found != cohort.sha256:
            raise DataError(f"{local} has sha256 {found[:16]}..., not {cohort.sha256[:16]}... of the DeepSurv "
                            f"paper's file; delete it or replace it with {cohort.url}")  # fmt: skip
        return local
    import pooch

    try:
        return Path(pooch.retrieve(cohort.url, known_hash=f"sha256:{cohort.sha256}", fname=cohort.file,
                                   path=pooch.os_cache("prognosis-bench") / FOLDER, progressbar=False))  # fmt: skip
    except Exception as exc:  # no network, a changed file upstream: both end here, said in one line
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot fetch {cohort.url} ({reason}); download it by hand into {data_folder()}") from None


def read(cohort: PaperCohort) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Covariates, time, event and whether each row is in the file's test part (train rows first)."""
    import h5py

    path = fetch(cohort)
    parts = []
    with h5py.File(path, "r") as h5:
        for part in ("train", "test"):
            group = h5[part]
            x = np.asarray(group["x"], dtype=float)
            if x.shape[1] != len(cohort.columns):
                raise DataError(f"{path}: {part}/x has {x.shape[1]} columns, expected {len(cohort.columns)}")
            parts.append((part, x, np.asarray(group["t"], dtype=float), np.asarray(group["e"]).astype(bool)))
    index = [f"{cohort.name}-{part}-{i:05d}" for part, x, _, _ in parts for i in range(len(x))]
    clinical = pd.DataFrame(np.concatenate([x for _, x, _, _ in parts]), index=index, columns=list(cohort.columns))
    time = np.concatenate([t for _, _, t, _ in parts])
    event = np.concatenate([e for _, _, _, e in parts])
    test = np.concatenate([np.full(len(x), part == "test") for part, x, _, _ in parts])
    return clinical, time, event, test


def load(name: str) -> Cohort:
    """One of the paper's cohorts as a ``Cohort`` whose default split is the paper's (``splits/<name>/paper.json``)."""
    cohort = COHORTS[name]
    clinical, time, event, _ = read(cohort)
    return Cohort(
        name=name,
        clinical=clinical,
        time=time,
        event=event,
        columns={col: ColumnSpec("numeric") for col in clinical.columns},
        policy=cohort.policy,
        default_split="paper",
        description=cohort.description,
        source=SOURCE,
    )


def deepsurv_whas() -> Cohort:
    return load("deepsurv_whas")


def deepsurv_support() -> Cohort:
    return load("deepsurv_support")


def deepsurv_metabric() -> Cohort:
    return load("deepsurv_metabric")


def rotterdam_gbsg() -> Cohort:
    return load("rotterdam_gbsg")
